//! Independent scans of the running demo: MDN HTTP Observatory (grade and every test) and
//! Google's CSP Evaluator (its default checks on the served policy).
//!
//! Both come from the npm registry, pinned, installed into the cache folder. The Observatory's
//! install script downloads Mozilla's intermediate-CA bundle and its maintenance script the
//! Chromium HSTS preload list; neither host is reachable here, so the package is installed with
//! `--ignore-scripts`, run without its wrapper (whose only job is to point Node at that bundle;
//! we point Node at the test CA instead) and given an empty preload map: the demo's hosts are
//! not preloaded, which is what an empty map says.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, harness, pki};

const OBSERVATORY: &str = "@mdn/mdn-http-observatory@1.4.8";
const CSP_EVALUATOR: &str = "csp_evaluator@1.1.8";

const CSP_EVAL_SCRIPT: &str = r#"
const ev = require("csp_evaluator/dist/evaluator.js");
const { CspParser } = require("csp_evaluator/dist/parser.js");
const parsed = new CspParser(process.argv[2]).csp;
const out = (checks) => new ev.CspEvaluator(parsed).evaluate(checks)
  .map(f => ({ severity: f.severity, directive: f.directive, description: f.description }));
console.log(JSON.stringify({ default: out(undefined), strict: out([...ev.DEFAULT_CHECKS, ...ev.STRICTCSP_CHECKS]) }));
"#;

/// Severity value of INFO in csp_evaluator (lower numbers are worse).
const CSP_INFO: u64 = 60;

fn install(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("npm-scan");
    let obs = dir.join("node_modules/@mdn/mdn-http-observatory");
    let eval = dir.join("node_modules/csp_evaluator");
    if !obs.join("package.json").exists() || !eval.join("package.json").exists() {
        std::fs::create_dir_all(&dir)?;
        if !dir.join("package.json").exists() {
            std::fs::write(
                dir.join("package.json"),
                "{\"name\":\"palisade-scan\",\"private\":true}\n",
            )?;
        }
        crate::run(Command::new("npm").current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            OBSERVATORY,
            CSP_EVALUATOR,
        ]))?;
    }
    let preload = obs.join("conf/hsts-preload.json");
    if !preload.exists() {
        std::fs::write(&preload, "{}\n")?;
    }
    std::fs::write(dir.join("csp_eval.cjs"), CSP_EVAL_SCRIPT)?;
    Ok(dir)
}

/// Runs both scans against the demo on 127.0.0.1:443 (HTTPS) and :80 (redirect).
pub(crate) fn run(_root: &Path, cache: &Path) -> Result<()> {
    let npm = install(cache)?;
    let binary = crate::build_demo()?;
    let pki = pki::generate(&cache.join("pki-scan"), &["localhost", "127.0.0.1"])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (provider, _) = crate::start_provider(&runtime)?;
    let mut env = harness::demo_env(&pki, "production", &provider.issuer);
    for (k, v) in env.iter_mut() {
        match *k {
            "PALISADE_DEMO_HTTPS_ADDR" => *v = "127.0.0.1:443".into(),
            "PALISADE_DEMO_HTTP_ADDR" => *v = "127.0.0.1:80".into(),
            "PALISADE_DEMO_PUBLIC_HOST" => *v = "localhost".into(),
            _ => {}
        }
    }
    let demo = harness::Demo::start(&binary, &env).map_err(|e| {
        format!(
            "{e}\n(the scans need ports 443 and 80 on 127.0.0.1, free, and the right to bind them)"
        )
    })?;

    let out = Command::new("node")
        .arg(npm.join("node_modules/@mdn/mdn-http-observatory/src/scan.js"))
        .arg("localhost")
        .env("NODE_EXTRA_CA_CERTS", &pki.ca_path)
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "observatory output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let scan = &report["scan"];
    let grade = scan["grade"].as_str().unwrap_or("?").to_owned();
    let score = scan["score"].as_i64().unwrap_or(0);
    let failed = scan["testsFailed"].as_i64().unwrap_or(-1);
    let passed = scan["testsPassed"].as_i64().unwrap_or(0);
    println!(
        "MDN HTTP Observatory ({OBSERVATORY}) on https://localhost/: grade {grade}, score {score}, {passed} passed, {failed} failed"
    );
    if let Some(tests) = report["tests"].as_object() {
        for (name, test) in tests {
            println!(
                "  {:<32} {:<5} {}",
                name,
                test["pass"].as_bool().unwrap_or(false),
                test["result"].as_str().unwrap_or("")
            );
        }
    }
    let mut problems = Vec::new();
    if grade != "A+" || failed != 0 {
        problems.push(format!(
            "observatory: grade {grade} with {failed} failed tests (want A+ and 0): {}",
            report["error"]
        ));
    }

    let csp = scan["responseHeaders"]["content-security-policy"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = Command::new("node")
        .current_dir(&npm)
        .arg(npm.join("csp_eval.cjs"))
        .arg(&csp)
        .output()?;
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "csp_evaluator output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let default = findings["default"].as_array().cloned().unwrap_or_default();
    let above_info: Vec<_> = default
        .iter()
        .filter(|f| f["severity"].as_u64().unwrap_or(0) < CSP_INFO)
        .collect();
    println!(
        "CSP Evaluator ({CSP_EVALUATOR}) default checks: {} findings, {} above INFO",
        default.len(),
        above_info.len()
    );
    for f in findings["strict"].as_array().into_iter().flatten() {
        println!(
            "  strict-CSP check (informational): severity {} {}: {}",
            f["severity"], f["directive"], f["description"]
        );
    }
    if csp.is_empty() {
        problems.push("no CSP header in the observatory's response".into());
    }
    if !above_info.is_empty() {
        problems.push(format!("csp_evaluator findings above INFO: {above_info:?}"));
    }

    // Each response carries its own nonce.
    let nonces = nonces_of_two_responses(&pki.ca_pem)?;
    let observed = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or("")
        .to_owned();
    println!(
        "nonces of three responses: {observed}, {}, {}",
        nonces.0, nonces.1
    );
    if observed.is_empty() || nonces.0 == nonces.1 || nonces.0 == observed || nonces.1 == observed {
        problems.push("responses share a CSP nonce".into());
    }
    drop(demo);
    drop(provider);
    if problems.is_empty() {
        println!("scans: all passed");
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn nonces_of_two_responses(ca_pem: &str) -> Result<(String, String)> {
    let target = crate::tour::Target {
        https: "127.0.0.1:443".parse()?,
        http: "127.0.0.1:80".parse()?,
        ca_pem: ca_pem.to_owned(),
        tokens: Default::default(),
        pdp: None,
        audit: None,
        metrics: None,
    };
    let client = crate::tour::client(&target)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut out = Vec::new();
        for _ in 0..2 {
            let res = client.get("https://localhost/").send().await?;
            let csp = res
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            out.push(
                csp.split("'nonce-")
                    .nth(1)
                    .and_then(|r| r.split('\'').next())
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        Ok((out[0].clone(), out[1].clone()))
    })
}
