//! `palisade-audit verify`: verifies an audit log and exits non-zero on any finding.
//!
//! ```text
//! palisade-audit verify --file LOG.jsonl [--checkpoint CHECKPOINT.json] [--keys KEYRING]
//! ```
//!
//! Keys come from `--keys` (a key-ring file) or the `AUDIT_SIGNING_KEY` environment variable.
//! Exit status: 0 verified, 1 a finding (printed), 2 a usage or input error.

use std::process::ExitCode;

use palisade_audit::{AUDIT_SIGNING_KEY, Checkpoint, JsonlSink, KeyRing, Verifier};

const USAGE: &str =
    "usage: palisade-audit verify --file LOG.jsonl [--checkpoint CHECKPOINT.json] [--keys KEYRING]";

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
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--file" => file = Some(value),
            "--checkpoint" => checkpoint = Some(value),
            "--keys" => keys = Some(value),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let file = file.ok_or_else(|| USAGE.to_owned())?;
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
    if !std::path::Path::new(&file).is_file() {
        return Err(format!("{file}: no such log file"));
    }
    let records = JsonlSink::records_of(std::path::Path::new(&file)).map_err(|e| e.to_string())?;
    let report = Verifier::new(ring).verify(records, checkpoint.as_ref());
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
