//! Supply chain: `cargo deny` (licences, bans, sources and advisories, `deny.toml`) and a
//! CycloneDX SBOM per workspace crate (`cargo cyclonedx`) into `target/sbom/`. Both tools come
//! from crates.io, pinned, installed into the cache folder on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

const DENY: (&str, &str) = ("cargo-deny", "0.20.2");
const CYCLONEDX: (&str, &str) = ("cargo-cyclonedx", "0.5.9");

/// The tool's binary, installed (`cargo install --locked`) into `cache/tools` when missing.
fn tool(cache: &Path, (name, version): (&str, &str)) -> Result<PathBuf> {
    let root = cache.join("tools");
    let binary = root
        .join("bin")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // A cargo subcommand's binary takes its own name first.
    let installed = Command::new(&binary)
        .args([name.trim_start_matches("cargo-"), "--version"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(version));
    if !installed {
        crate::run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["install", "--locked", "--quiet", "--root"])
                .arg(&root)
                .arg(format!("{name}@{version}"))
                // Its own build folder: the workspace's stays as it is.
                .env("CARGO_TARGET_DIR", cache.join("tools-target")),
        )?;
    }
    Ok(binary)
}

/// Runs the licence, ban and source checks (failing on any finding), the advisory check
/// (failing on a known-vulnerable dependency; when the RustSec database cannot be fetched,
/// failing only if `PALISADE_REQUIRE_ADVISORIES` is set), and writes the SBOMs.
pub(crate) fn run(root: &Path, cache: &Path, target: &Path) -> Result<()> {
    let deny = tool(cache, DENY)?;
    crate::run(Command::new(&deny).current_dir(root).args([
        "deny",
        "--all-features",
        "check",
        "licenses",
        "bans",
        "sources",
    ]))?;
    eprintln!("xtask: running cargo deny check advisories");
    let out = Command::new(&deny)
        .current_dir(root)
        .args(["deny", "--all-features", "check", "advisories"])
        .output()?;
    let report = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let unreachable = report.contains("failed to fetch advisory database");
        if !unreachable || std::env::var_os("PALISADE_REQUIRE_ADVISORIES").is_some() {
            eprintln!("{report}");
            return Err("cargo deny: advisories".into());
        }
        eprintln!(
            "xtask: WARNING: the RustSec advisory database could not be fetched (github.com is unreachable): advisories were NOT checked"
        );
    }
    let cdx = tool(cache, CYCLONEDX)?;
    crate::run(Command::new(&cdx).current_dir(root).args([
        "cyclonedx",
        "--all-features",
        "--format",
        "json",
        "--spec-version",
        "1.5",
        "--override-filename",
        "palisade-sbom",
        "--quiet",
    ]))?;
    // One file per workspace crate, written next to its manifest: gathered into target/sbom.
    let out_dir = target.join("sbom");
    std::fs::create_dir_all(&out_dir)?;
    let mut written = 0;
    for manifest_dir in member_dirs(root)? {
        let file = manifest_dir.join("palisade-sbom.json");
        if !file.exists() {
            continue;
        }
        let bom: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let name = bom["metadata"]["component"]["name"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let components = bom["components"].as_array().map_or(0, Vec::len);
        if bom["bomFormat"] != "CycloneDX" || components == 0 {
            return Err(format!("{}: not a CycloneDX SBOM with components", file.display()).into());
        }
        std::fs::rename(&file, out_dir.join(format!("{name}.cdx.json")))?;
        written += 1;
    }
    let members = member_dirs(root)?.len();
    if written != members {
        return Err(format!("cargo cyclonedx wrote {written} SBOMs for {members} crates").into());
    }
    eprintln!("xtask: {written} CycloneDX SBOMs in {}", out_dir.display());
    Ok(())
}

/// The workspace members' directories (from `cargo metadata`).
fn member_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(meta["packages"]
        .as_array()
        .map(|packages| {
            packages
                .iter()
                .filter_map(|p| p["manifest_path"].as_str())
                .filter_map(|m| Path::new(m).parent().map(Path::to_path_buf))
                .collect()
        })
        .unwrap_or_default())
}
