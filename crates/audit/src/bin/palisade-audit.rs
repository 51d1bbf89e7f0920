//! `palisade-audit verify`: verifies an audit log and exits non-zero on any finding.
//!
//! ```text
//! palisade-audit verify --file LOG.jsonl [--checkpoint CHECKPOINT.json] [--keys KEYRING]
//! palisade-audit verify --postgres URL [--table NAME] [--checkpoint ...] [--keys ...]
//! ```
//!
//! (`--postgres` needs the `postgres` feature; the URL's transport is checked under
//! `PALISADE_PROFILE`, production by default.)
//!
//! Keys come from `--keys` (a key-ring file) or the `AUDIT_SIGNING_KEY` environment variable.
//! Exit status: 0 verified, 1 a finding (printed), 2 a usage or input error.

use std::process::ExitCode;

use palisade_audit::{AUDIT_SIGNING_KEY, Checkpoint, JsonlSink, KeyRing, Verifier};

const USAGE: &str = "usage: palisade-audit verify (--file LOG.jsonl | --postgres URL [--table NAME]) [--checkpoint CHECKPOINT.json] [--keys KEYRING]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("palisade-audit: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("verify") {
        return Err(USAGE.to_owned());
    }
    let (mut file, mut checkpoint, mut keys) = (None, None, None);
    let (mut postgres, mut table) = (None, "palisade_audit_log".to_owned());
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--file" => file = Some(value),
            "--checkpoint" => checkpoint = Some(value),
            "--keys" => keys = Some(value),
            "--postgres" => postgres = Some(value),
            "--table" => table = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let ring = match keys {
        Some(path) => KeyRing::from_file(&path),
        None => KeyRing::from_env(AUDIT_SIGNING_KEY),
    }
    .map_err(|e| format!("audit keys: {e}"))?;
    let checkpoint: Option<Checkpoint> = match checkpoint {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?)
        }
        None => None,
    };
    if checkpoint.is_none() {
        eprintln!(
            "palisade-audit: note: no --checkpoint: records cut from the end of the log cannot be detected"
        );
    }
    let verifier = Verifier::new(ring.clone());
    let report = match (file, postgres) {
        (Some(file), None) => {
            if !std::path::Path::new(&file).is_file() {
                return Err(format!("{file}: no such log file"));
            }
            let records =
                JsonlSink::records_of(std::path::Path::new(&file)).map_err(|e| e.to_string())?;
            verifier.verify(records, checkpoint.as_ref())
        }
        (None, Some(url)) => from_postgres(&url, &table, &ring, checkpoint.as_ref())?,
        _ => return Err(USAGE.to_owned()),
    };
    match report.finding {
        None => {
            println!("ok: {} records verified", report.records);
            Ok(ExitCode::SUCCESS)
        }
        Some(finding) => {
            println!(
                "FAILED at record {}: {:?} ({} records verified before it)",
                finding.line, finding.kind, report.records
            );
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(feature = "postgres")]
fn from_postgres(
    url: &str,
    table: &str,
    ring: &KeyRing,
    checkpoint: Option<&Checkpoint>,
) -> Result<palisade_audit::Report, String> {
    let profile = palisade_core::Profile::from_env_or(palisade_core::Profile::Production)
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let sink = palisade_audit::PostgresSink::open_existing(url, profile, table, ring.clone())
            .await
            .map_err(|e| e.to_string())?;
        sink.verify(&Verifier::new(ring.clone()), checkpoint)
            .await
            .map_err(|e| e.to_string())
    })
}

#[cfg(not(feature = "postgres"))]
fn from_postgres(
    _url: &str,
    _table: &str,
    _ring: &KeyRing,
    _checkpoint: Option<&Checkpoint>,
) -> Result<palisade_audit::Report, String> {
    Err("this build has no PostgreSQL support (feature `postgres`)".to_owned())
}
