//! Developer commands for Palisade (the `cargo xtask` pattern).
//!
//! - `cargo xtask demo [--serve]`: build and start the demo service, run the attack tour and
//!   print its table; exit non-zero if any row fails. `--serve` leaves the demo running.
//! - `cargo xtask test`: everything CI checks: formatting, clippy with `-D warnings`, all tests
//!   and doc tests, `cargo deny` (licences, bans, sources, advisories) and CycloneDX SBOMs into
//!   `target/sbom/`, and the security scans of the running demo.
//! - `cargo xtask bench`: run the criterion benches and print medians and ratios against the
//!   bare service measured in the same run.
//! - `cargo xtask fuzz [seconds]`: run every cargo-fuzz target for `seconds` (default 60) each.
//! - `cargo xtask posture [--json] [--weak]`: the posture report of the demo's production
//!   configuration (the tour's; `--weak`, a deliberately weak one), as text or JSON: every
//!   finding with its id, severity and fix. Exits non-zero when the configuration is refused.
//! - `cargo xtask supply`: only `cargo deny` and the SBOMs.
//! - `cargo xtask scan`: only the scans: MDN HTTP Observatory and Google's CSP Evaluator
//!   against the demo on 127.0.0.1:443 and :80 (needs root for those ports).

#[allow(dead_code)] // shared with the test suites, which use all of it
mod cerbos;
mod harness;
#[allow(dead_code)] // shared with the test suites, which use all of it
mod oidc;
mod pki;
mod scan;
mod supply;
mod tour;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(args.iter().any(|a| a == "--serve")),
        Some("test") => test(),
        Some("scan") => scan::run(&workspace_root(), &cache_dir()),
        Some("bench") => bench(),
        Some("fuzz") => fuzz(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60)),
        Some("supply") => {
            target_dir().and_then(|target| supply::run(&workspace_root(), &cache_dir(), &target))
        }
        Some("posture") => posture(
            args.iter().any(|a| a == "--json"),
            args.iter().any(|a| a == "--weak"),
        ),
        _ => {
            eprintln!(
                "usage: cargo xtask <demo [--serve] | test | posture [--json] [--weak] | supply | scan | bench | fuzz [seconds]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where installed tools (npm packages) and generated test PKI live, outside the clone so
/// that fresh clones stay warm.
pub(crate) fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PALISADE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| workspace_root().join(".cache"));
    base.join("palisade")
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}").into())
    }
}

pub(crate) fn target_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        });
    }
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata gave no target directory".into())
}

pub(crate) fn build_demo() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--quiet",
        "--example",
        "hardened_api",
        "--features",
        "authz-cerbos,impersonation",
    ]))?;
    // The tour checks the demo's audit log with the verifier's command line.
    run(cargo().args([
        "build",
        "--quiet",
        "-p",
        "palisade-audit",
        "--bin",
        "palisade-audit",
    ]))?;
    Ok(harness::demo_binary(&target_dir()?))
}

/// Starts the test OpenID provider and fetches a token for every persona the tour uses.
pub(crate) fn start_provider(
    runtime: &tokio::runtime::Runtime,
) -> Result<(oidc::Provider, tour::Tokens)> {
    let provider = oidc::Provider::start(&oidc::Options::default())?;
    let mut tokens = tour::Tokens::new();
    for persona in tour::PERSONAS {
        let token = runtime.block_on(provider.token(persona))?;
        tokens.insert(persona.to_owned(), token);
    }
    Ok((provider, tokens))
}

/// The test CA and the demo's certificate (for its host names), in the cache folder.
fn demo_pki() -> Result<pki::TestPki> {
    pki::generate(
        &cache_dir().join("pki"),
        &[
            harness::PUBLIC_HOST,
            harness::ADMIN_HOST,
            "localhost",
            "127.0.0.1",
        ],
    )
}

fn demo(serve: bool) -> Result<()> {
    let binary = build_demo()?;
    let pki = demo_pki()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (provider, tokens) = start_provider(&runtime)?;
    let mut rows = vec![harness::refusal_row(&binary, &pki)];
    // The PDP serves TLS with the demo's test certificate; the demo verifies it with the CA.
    let pdp = cerbos::Pdp::start(&cerbos::Transport::Tls {
        cert: pki.cert_path.clone(),
        key: pki.key_path.clone(),
    })?;
    let mut env = harness::demo_env(&pki, "production", &provider.issuer);
    env.extend(harness::cerbos_env(&pki, &pdp));
    let demo = harness::Demo::start(&binary, &env)?;
    let target = tour::Target {
        https: demo.https,
        http: demo.http,
        ca_pem: pki.ca_pem.clone(),
        tokens: tokens.clone(),
        pdp: Some(std::sync::Arc::new(std::sync::Mutex::new(pdp))),
        audit: harness::AuditLog::of(&env, &target_dir()?.join("debug")),
        metrics: demo.metrics,
    };
    rows.extend(runtime.block_on(tour::run(&target)));
    // No secret the tour used may appear in the demo's logs.
    let logs = demo.drain_logs();
    let mut secrets = tour::secrets_seen();
    secrets.extend(tokens.values().cloned());
    let leaked = harness::leaks(&logs, &env, &secrets);
    rows.push(tour::Row::new(
        "find a token, key or secret in the demo's logs",
        &format!("none of {} secrets in {} lines", secrets.len(), logs.len()),
        if leaked.is_empty() {
            "none".to_owned()
        } else {
            format!("leaked: {leaked:?}")
        },
        leaked.is_empty(),
    ));
    let proxied =
        harness::Demo::start(&binary, &harness::proxied_demo_env(&pki, &provider.issuer))?;
    let behind = tour::Target {
        https: proxied.https,
        http: proxied.http,
        ca_pem: pki.ca_pem.clone(),
        tokens,
        pdp: None,
        audit: None,
        metrics: None,
    };
    rows.extend(runtime.block_on(tour::run_behind_proxy(&behind)));
    drop(proxied);
    let mut clocked_env = harness::clocked_demo_env(&pki, &provider.issuer);
    clocked_env.push(("RUST_LOG", "debug".to_owned()));
    let clocked = harness::Demo::start(&binary, &clocked_env)?;
    let timed = tour::Target {
        https: clocked.https,
        http: clocked.http,
        ca_pem: pki.ca_pem.clone(),
        tokens: tour::Tokens::new(),
        pdp: None,
        audit: None,
        metrics: None,
    };
    rows.extend(runtime.block_on(tour::run_with_clock(&timed)));
    // That demo handled passwords and single-use tokens: none may be in its logs.
    let clocked_logs = clocked.stop_and_drain();
    let leaked = harness::leaks(&clocked_logs, &clocked_env, &tour::secrets_seen());
    rows.push(tour::Row::new(
        "find a password or single-use token in the logs (local accounts)",
        &format!("none, in {} lines", clocked_logs.len()),
        if leaked.is_empty() {
            "none".to_owned()
        } else {
            format!("leaked: {leaked:?}")
        },
        leaked.is_empty(),
    ));
    let passed = tour::print(&rows);
    if !passed {
        for line in logs.iter().cloned().chain(demo.drain_logs()) {
            eprintln!("demo: {line}");
        }
    }
    if serve {
        println!(
            "\nThe demo keeps running (Ctrl-C stops it):\n  https://{}/  (names {} and {} resolve there; trust {})\n  http://{}/   (redirects only)\n  OpenID provider: {} (token endpoint {})",
            demo.https,
            harness::PUBLIC_HOST,
            harness::ADMIN_HOST,
            pki.ca_path.display(),
            demo.http,
            provider.issuer,
            provider.token_endpoint(),
        );
        demo.wait()?;
    }
    drop(provider);
    if passed {
        Ok(())
    } else {
        Err("some attack-tour rows failed".into())
    }
}

/// Prints the demo's posture report (see the module docs).
fn posture(json: bool, weak: bool) -> Result<()> {
    let binary = build_demo()?;
    let pki = demo_pki()?;
    // The strong configuration trusts the test OpenID provider, which must answer discovery.
    let provider = (!weak)
        .then(|| oidc::Provider::start(&oidc::Options::default()))
        .transpose()?;
    let env = match &provider {
        Some(p) => harness::demo_env(&pki, "production", &p.issuer),
        None => harness::weak_env(&pki),
    };
    let (status, out) = harness::posture(&binary, &env, json)?;
    println!("{}", out.trim_end());
    if status.success() {
        Ok(())
    } else {
        Err("the configuration is refused in production".into())
    }
}

fn test() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The repository's Cerbos policies compile and pass their own policy tests (the PDP
    // comes from npm, pinned), before any Rust test uses them.
    let report = cerbos::compile().map_err(|e| format!("policies: {e}"))?;
    eprintln!("xtask: cerbos compile policies/:\n{}", report.trim_end());
    // Builds the examples too, which the demo integration test starts.
    run(cargo().args(["test", "--workspace", "--all-features"]))?;
    // Licences, bans, sources and advisories (deny.toml), and the SBOMs into target/sbom.
    supply::run(&workspace_root(), &cache_dir(), &target_dir()?)?;
    if std::env::var_os("PALISADE_SKIP_SCAN").is_some() {
        eprintln!(
            "xtask: PALISADE_SKIP_SCAN is set: skipping the Observatory and CSP Evaluator scans"
        );
        return Ok(());
    }
    scan::run(&workspace_root(), &cache_dir())
}

fn bench() -> Result<()> {
    run(cargo().args([
        "bench",
        "--all-features",
        "--bench",
        "headers",
        "--bench",
        "authn",
        "--bench",
        "sessions",
        "--bench",
        "aksk",
        "--bench",
        "authz",
    ]))?;
    let dir = target_dir()?.join("criterion");
    let median = |name: &str| -> Result<f64> {
        let text = std::fs::read_to_string(
            dir.join(name.replace('/', "_"))
                .join("new")
                .join("estimates.json"),
        )?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v["median"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("no median for {name}").into())
    };
    println!("\n{:<36} {:>12} {:>10}", "bench", "median", "ratio");
    let bare = median("headers/bare")?;
    for name in [
        "bare",
        "security_headers",
        "security_headers_api_policy",
        "full_stack",
    ] {
        let m = median(&format!("headers/{name}"))?;
        println!(
            "{:<36} {:>9.0} ns {:>9.2}x  (vs headers/bare)",
            format!("headers/{name}"),
            m,
            m / bare
        );
    }
    for alg in ["rs256", "es256", "eddsa"] {
        let bare = median(&format!("authn/{alg}/bare"))?;
        for step in ["bare", "verify", "layer"] {
            let m = median(&format!("authn/{alg}/{step}"))?;
            println!(
                "{:<36} {:>9.0} ns {:>9.3}x  (vs authn/{alg}/bare)",
                format!("authn/{alg}/{step}"),
                m,
                m / bare
            );
        }
    }
    for case in ["get", "post_1k", "post_64k"] {
        let floor = median(&format!("aksk/{case}/floor"))?;
        let verify = median(&format!("aksk/{case}/verify"))?;
        let aws = median(&format!("aksk/{case}/aws_sigv4_sign"))?;
        println!(
            "{:<36} {:>9.0} ns {:>9.2}x  (vs floor {:.0} ns; aws-sigv4 signing is {:.1}x slower)",
            format!("aksk/{case}/verify"),
            verify,
            verify / floor,
            floor,
            aws / verify
        );
    }
    let sha = median("aksk/post_64k/sha256")?;
    let big = median("aksk/post_64k/verify")?;
    println!(
        "{:<36} {:>9.2}x  (64 KiB throughput vs raw SHA-256)",
        "aksk/post_64k/throughput",
        sha / big
    );
    for name in [
        "signing_key/cache_hit",
        "signing_key/derive",
        "nonce/memory",
        "nonce/redis",
    ] {
        let m = median(&format!("aksk/{name}"))?;
        println!("{:<36} {:>9.0} ns", format!("aksk/{name}"), m);
    }
    let hit = median("authz/cache_hit")?;
    let miss = median("authz/miss_through_authorizer")?;
    let bare = median("authz/bare_generated_client")?;
    println!(
        "{:<36} {:>9.0} ns  (a PDP call over loopback: {:.0} ns, {:.0}x slower)",
        "authz/cache_hit",
        hit,
        bare,
        bare / hit
    );
    println!(
        "{:<36} {:>9.0} ns {:>9.3}x  (vs the bare generated client)",
        "authz/miss_through_authorizer",
        miss,
        miss / bare
    );
    let refuse = median("authn/unknown_kid/refuse")?;
    println!("{:<36} {:>9.0} ns", "authn/unknown_kid/refuse", refuse);
    let flood = median("authn/kid_flood/10000")?;
    println!(
        "{:<36} {:>9.1} ms  (10,000 unknown kids, JWKS over HTTP)",
        "authn/kid_flood/10000",
        flood / 1e6
    );
    Ok(())
}

fn fuzz(seconds: u64) -> Result<()> {
    let dir = workspace_root().join("fuzz");
    for target in ["token", "jwks", "forwarded", "sigv4"] {
        // cargo-fuzz passes unstable flags to rustc; the stable toolchain accepts them with
        // RUSTC_BOOTSTRAP (this is a test harness, not shipped code).
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .args([
                    "fuzz",
                    "run",
                    target,
                    "--",
                    &format!("-max_total_time={seconds}"),
                ]),
        )?;
    }
    Ok(())
}
