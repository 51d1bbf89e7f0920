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
/// failing only if `PALISADE_REQUIRE_ADVISORIES` is set, and checking for yanked crates
/// against the crates.io index instead, which fails the run when yanked or unreachable),
/// and writes the SBOMs, one per crate and one merged.
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
        // cargo deny's yanked check runs with the advisories: done here from the registry.
        let checked = yanked(root)?;
        eprintln!("xtask: {checked} crates.io dependencies checked: none is yanked");
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
    // Only this run's files: an earlier run's SBOM of a crate since renamed would linger.
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir)?;
    }
    std::fs::create_dir_all(&out_dir)?;
    let mut written = Vec::new();
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
        let path = out_dir.join(format!("{name}.cdx.json"));
        std::fs::rename(&file, &path)?;
        written.push(path);
    }
    let members = member_dirs(root)?.len();
    if written.len() != members {
        return Err(format!(
            "cargo cyclonedx wrote {} SBOMs for {members} crates",
            written.len()
        )
        .into());
    }
    let merged = merge_sboms(&written, &out_dir.join(WORKSPACE_SBOM))?;
    eprintln!(
        "xtask: {} CycloneDX SBOMs in {}, merged into {} ({} components)",
        written.len(),
        out_dir.display(),
        WORKSPACE_SBOM,
        merged
    );
    Ok(())
}

/// The merged SBOM's file name, in `target/sbom/`.
const WORKSPACE_SBOM: &str = "palisade-workspace.cdx.json";

/// Merges the per-crate SBOMs `files` into one for the workspace, written to `out`: the
/// facade crate (`palisade`) as the subject, every other crate and every dependency once as
/// a component (by `bom-ref`; a crate's own entry, with its targets, over the plain entry
/// other SBOMs list it by), and every crate's dependency edges. Answers the number of
/// components.
fn merge_sboms(files: &[PathBuf], out: &Path) -> Result<usize> {
    use std::collections::{BTreeMap, BTreeSet};

    let mut boms = Vec::new();
    for path in files {
        boms.push(serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(path)?,
        )?);
    }
    let subject = boms
        .iter()
        .position(|b| b["metadata"]["component"]["name"] == "palisade")
        .ok_or("no SBOM of the palisade crate to merge into")?;
    let mut merged = boms[subject].clone();
    let subject_ref = merged["metadata"]["component"]["bom-ref"].clone();
    let mut components: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // First each crate's own entry (it carries the crate's targets as nested components),
    // then what the SBOMs list, where not there yet.
    for bom in &boms {
        let own = &bom["metadata"]["component"];
        let r = own["bom-ref"]
            .as_str()
            .ok_or("an SBOM subject without a bom-ref")?;
        if own["bom-ref"] != subject_ref {
            components.insert(r.to_owned(), own.clone());
        }
    }
    for bom in &boms {
        for component in bom["components"].as_array().into_iter().flatten() {
            let r = component["bom-ref"]
                .as_str()
                .ok_or("an SBOM component without a bom-ref")?;
            if component["bom-ref"] != subject_ref {
                components
                    .entry(r.to_owned())
                    .or_insert_with(|| component.clone());
            }
        }
        for dependency in bom["dependencies"].as_array().into_iter().flatten() {
            let Some(r) = dependency["ref"].as_str() else {
                return Err("an SBOM dependency without a ref".into());
            };
            let on = dependency["dependsOn"].as_array().into_iter().flatten();
            edges
                .entry(r.to_owned())
                .or_default()
                .extend(on.filter_map(|d| d.as_str().map(str::to_owned)));
        }
    }
    let count = components.len();
    merged["components"] = components.into_values().collect();
    merged["dependencies"] = edges
        .into_iter()
        .map(|(r, on)| serde_json::json!({ "ref": r, "dependsOn": on }))
        .collect();
    // A new document: its own serial number (a random UUID, version 4).
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| "no randomness")?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    merged["serialNumber"] = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
    .into();
    merged["version"] = 1.into();
    std::fs::write(out, serde_json::to_string_pretty(&merged)?)?;
    Ok(count)
}

/// The `source` of crates.io packages in `cargo metadata`.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// The crates.io index the registry serves (sparse protocol).
const INDEX: &str = "https://index.crates.io";

/// Fails when a crates.io dependency of the resolved graph (all features) is yanked, or
/// when the registry's index cannot say; answers how many were checked.
fn yanked(root: &Path) -> Result<usize> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .output()?;
    if !out.status.success() {
        return Err(format!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut locked: Vec<(String, String)> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["source"] == CRATES_IO)
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                p["version"].as_str()?.to_owned(),
            ))
        })
        .collect();
    locked.sort();
    locked.dedup();
    if locked.is_empty() {
        return Err("cargo metadata listed no crates.io dependency".into());
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let problems = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        // A few requests at a time, over one connection pool.
        for batch in locked.chunks(16) {
            let mut set = tokio::task::JoinSet::new();
            for (name, version) in batch.iter().cloned() {
                let client = client.clone();
                set.spawn(async move {
                    let state = index_state(&client, &name, &version).await;
                    (name, version, state)
                });
            }
            while let Some(joined) = set.join_next().await {
                let (name, version, state) = joined.map_err(|e| e.to_string())?;
                match state {
                    Ok(false) => {}
                    Ok(true) => problems.push(format!("{name} {version} is yanked")),
                    Err(e) => problems.push(format!("{name} {version}: {e}")),
                }
            }
        }
        Ok::<_, String>(problems)
    })?;
    if !problems.is_empty() {
        return Err(format!("yanked check: {problems:#?}").into());
    }
    Ok(locked.len())
}

/// Whether `version` of `name` is yanked, from its sparse-index file.
async fn index_state(
    client: &reqwest::Client,
    name: &str,
    version: &str,
) -> std::result::Result<bool, String> {
    let url = format!("{INDEX}/{}", index_path(name));
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if entry["vers"] == version {
            return entry["yanked"]
                .as_bool()
                .ok_or_else(|| format!("{url}: no yanked flag for {version}"));
        }
    }
    Err(format!("{url}: version {version} not in the index"))
}

/// The sparse-index path of a crate: `1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd...`.
fn index_path(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.len() {
        0..=2 => format!("{}/{name}", name.len()),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_the_sparse_layout() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Tokio"), "to/ki/tokio");
        assert_eq!(index_path("serde_json"), "se/rd/serde_json");
    }

    #[test]
    fn sboms_merge_into_one_workspace_document() {
        let dir = std::env::temp_dir().join(format!("palisade-sbom-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bom = |name: &str, deps: &[&str]| {
            serde_json::json!({
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "serialNumber": "urn:uuid:00000000-0000-4000-8000-000000000000",
                "version": 1,
                "metadata": { "component": { "name": name, "bom-ref": format!("path+{name}") } },
                "components": deps.iter().map(|d| serde_json::json!({ "name": d, "bom-ref": format!("registry+{d}") })).collect::<Vec<_>>(),
                "dependencies": [
                    { "ref": format!("path+{name}"), "dependsOn": deps.iter().map(|d| format!("registry+{d}")).collect::<Vec<_>>() }
                ]
            })
        };
        let mut files = Vec::new();
        for (name, deps) in [
            ("palisade", &["http", "tower"][..]),
            ("palisade-core", &["http", "subtle"][..]),
            ("xtask", &["reqwest"][..]),
        ] {
            let mut doc = bom(name, deps);
            if name == "palisade" {
                // The facade lists palisade-core by a plain entry; core's own SBOM has more.
                doc["components"].as_array_mut().expect("components").push(
                    serde_json::json!({ "name": "palisade-core", "bom-ref": "path+palisade-core" }),
                );
            } else {
                doc["metadata"]["component"]["components"] = serde_json::json!([{ "name": format!("{name} (lib)"), "bom-ref": format!("path+{name}#lib") }]);
            }
            let path = dir.join(format!("{name}.cdx.json"));
            std::fs::write(&path, doc.to_string()).expect("write");
            files.push(path);
        }
        // A stale file beside them is not merged.
        std::fs::write(
            dir.join("gone.cdx.json"),
            bom("gone", &["evil"]).to_string(),
        )
        .expect("write");
        let out = dir.join(WORKSPACE_SBOM);
        let count = merge_sboms(&files, &out).expect("merged");
        let merged: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
        let core = merged["components"]
            .as_array()
            .expect("components")
            .iter()
            .find(|c| c["name"] == "palisade-core")
            .expect("core");
        assert!(
            core["components"].is_array(),
            "core's own entry kept: {core}"
        );
        // http once; the other crates as components; the subject not among them.
        let names: Vec<&str> = merged["components"]
            .as_array()
            .expect("components")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(count, 6, "{names:?}");
        for name in [
            "http",
            "tower",
            "subtle",
            "reqwest",
            "palisade-core",
            "xtask",
        ] {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
        }
        assert!(!names.contains(&"gone") && !names.contains(&"evil"));
        assert_eq!(merged["metadata"]["component"]["name"], "palisade");
        assert_eq!(merged["dependencies"].as_array().map(Vec::len), Some(3));
        assert_ne!(
            merged["serialNumber"],
            "urn:uuid:00000000-0000-4000-8000-000000000000"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
