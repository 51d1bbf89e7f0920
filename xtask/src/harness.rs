//! Starts the demo binary and waits until it listens, without sleeping: the demo prints its
//! bound addresses on stderr and the harness reads them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Host names the demo is reached under (resolved to 127.0.0.1 by the tour's client).
pub(crate) const PUBLIC_HOST: &str = "api.palisade.test";
/// The demo's admin host name.
pub(crate) const ADMIN_HOST: &str = "admin.palisade.test";
/// The one allowed CORS origin.
pub(crate) const ALLOWED_ORIGIN: &str = "https://app.palisade.test";

/// A running demo; killed on drop.
#[derive(Debug)]
pub(crate) struct Demo {
    child: Child,
    pub(crate) https: SocketAddr,
    pub(crate) http: SocketAddr,
    /// The Prometheus scrape endpoint's listener.
    pub(crate) metrics: Option<SocketAddr>,
    /// Lines logged before the demo listened (not drained yet).
    early: std::sync::Mutex<Vec<String>>,
    logs: mpsc::Receiver<String>,
}

impl Demo {
    /// Starts `binary` with `envs` and waits (at most 60 s) for its "listening on" line.
    pub(crate) fn start(binary: &Path, envs: &[(&str, String)]) -> Result<Demo, String> {
        let mut child = Command::new(binary)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some((https, http)) = parse_listening(&line) {
                        return Ok(Demo {
                            child,
                            https,
                            http,
                            metrics: parse_metrics(&line),
                            early: std::sync::Mutex::new(seen),
                            logs: rx,
                        });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    return Err(format!("the demo did not start:\n{}", seen.join("\n")));
                }
            }
        }
    }

    /// Log lines printed so far.
    pub(crate) fn drain_logs(&self) -> Vec<String> {
        let mut early = self
            .early
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lines = std::mem::take(&mut *early);
        lines.extend(self.logs.try_iter());
        lines
    }

    /// Stops the demo and answers every line it logged, up to the end of its output (so that
    /// nothing still in the pipe is missed).
    pub(crate) fn stop_and_drain(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut lines = self.drain_logs();
        // The reader thread ends at EOF, closing the channel.
        while let Ok(line) = self.logs.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        lines
    }

    /// Waits for the demo to exit (after Ctrl-C in `--serve` mode).
    pub(crate) fn wait(mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary` with `envs` to completion, expecting it to refuse to start; returns its exit
/// status and stderr.
pub(crate) fn run_to_exit(
    binary: &Path,
    envs: &[(&str, String)],
) -> Result<(ExitStatus, String), String> {
    let out = Command::new(binary)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .env("PALISADE_DEMO_HTTPS_ADDR", "127.0.0.1:0")
        .env("PALISADE_DEMO_HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.split("listening on https://").nth(1)?;
    let (https, rest) = rest.split_once(" and http://")?;
    let http = rest.split_whitespace().next()?;
    Some((https.parse().ok()?, http.parse().ok()?))
}

/// The metrics listener named in the demo's "listening on" line.
fn parse_metrics(line: &str) -> Option<SocketAddr> {
    let rest = line.split("metrics on http://").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

/// The settings the tour runs the demo with (ports chosen by the kernel).
pub(crate) fn demo_env(
    pki: &crate::pki::TestPki,
    profile: &str,
    issuer: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("PALISADE_DEMO_OIDC_ISSUER", issuer.to_owned()),
        ("PALISADE_PROFILE", profile.to_owned()),
        ("PALISADE_DEMO_HTTPS_ADDR", "127.0.0.1:0".to_owned()),
        ("PALISADE_DEMO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("PALISADE_DEMO_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PALISADE_DEMO_TLS_CERT",
            pki.cert_path.display().to_string(),
        ),
        ("PALISADE_DEMO_TLS_KEY", pki.key_path.display().to_string()),
        ("ADMIN_HOSTNAME", ADMIN_HOST.to_owned()),
        ("PALISADE_DEMO_PUBLIC_HOST", PUBLIC_HOST.to_owned()),
        ("LOCAL_AUTH_ENABLED", "true".to_owned()),
        // A throwaway key ring for refresh-token hashing (test material only).
        (
            "PALISADE_DEMO_SESSION_KEYS",
            "tour 1 dG91ci1vbmx5LXNlc3Npb24ta2V5LW5vdC1hLXNlY3JldCE=".to_owned(),
        ),
        // A throwaway ring sealing access-key secrets (test material only).
        (
            "FIELD_ENCRYPTION_KEYS",
            "tour-fields 1 dG91ci1vbmx5LWZpZWxkLWtleS1ub3QtYS1zZWNyZXQhIQ==".to_owned(),
        ),
        ("PALISADE_DEMO_CORS_ORIGINS", ALLOWED_ORIGIN.to_owned()),
        // The audit log (a fresh file per demo) and its signing ring (test material only).
        (
            "PALISADE_DEMO_AUDIT_LOG",
            fresh_audit_log().display().to_string(),
        ),
        ("AUDIT_SIGNING_KEY", TOUR_AUDIT_KEY.to_owned()),
        // A throwaway ring signing impersonation credentials (test material only).
        (
            "PALISADE_DEMO_IMPERSONATION_KEYS",
            "tour-imp 1 dG91ci1vbmx5LWltcGVyc29uYXRpb24ta2V5LW5vdC1zZWNyZXQ=".to_owned(),
        ),
        // A proxy range the tour's client (127.0.0.1) is not in: its forwarded headers must be
        // ignored by the trust check, not merely because no proxy is configured.
        ("PALISADE_DEMO_TRUSTED_PROXIES", "10.0.0.0/8".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// The audit ring the tour's demos sign with (test material only).
pub(crate) const TOUR_AUDIT_KEY: &str =
    "tour-audit 1 dG91ci1vbmx5LWF1ZGl0LWtleS1ub3QtYS1zZWNyZXQhISE=";

/// A path for a new audit log, unique to this process and call.
fn fresh_audit_log() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "palisade-demo-audit-{}-{n}-{nanos}.jsonl",
        std::process::id()
    ))
}

/// A demo's audit log, its keys, and the `palisade-audit` command line that verifies it.
#[derive(Clone, Debug)]
pub(crate) struct AuditLog {
    pub(crate) path: PathBuf,
    pub(crate) keys: String,
    pub(crate) cli: PathBuf,
}

impl AuditLog {
    /// The log named in `env` (see [`demo_env`]), verified with the `palisade-audit` binary
    /// in `profile_dir` (for example `target/debug`).
    pub(crate) fn of(env: &[(&str, String)], profile_dir: &Path) -> Option<AuditLog> {
        let find = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        Some(AuditLog {
            path: find("PALISADE_DEMO_AUDIT_LOG")?.into(),
            keys: find("AUDIT_SIGNING_KEY")?,
            cli: profile_dir.join(format!("palisade-audit{}", std::env::consts::EXE_SUFFIX)),
        })
    }
}

/// Settings pointing the demo at a Cerbos PDP serving TLS with the test certificate.
pub(crate) fn cerbos_env(
    pki: &crate::pki::TestPki,
    pdp: &crate::cerbos::Pdp,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "PALISADE_DEMO_CERBOS_URL",
            format!("https://localhost:{}", pdp.grpc.port()),
        ),
        ("PALISADE_DEMO_CERBOS_CA", pki.ca_path.display().to_string()),
    ]
}

/// Settings for a second demo that sits behind a proxy: the tour's client (127.0.0.1) plays
/// the trusted proxy. The admin allowlist is 192.0.2.0/24 *and the proxy itself*, a common
/// setup (the load balancer sits in the office range): a request whose forwarded client
/// cannot be determined must then not be mistaken for one from the proxy.
pub(crate) fn proxied_demo_env(
    pki: &crate::pki::TestPki,
    issuer: &str,
) -> Vec<(&'static str, String)> {
    let mut env = demo_env(pki, "production", issuer);
    for (k, v) in env.iter_mut() {
        if *k == "PALISADE_DEMO_TRUSTED_PROXIES" {
            *v = "127.0.0.1/32".to_owned();
        }
    }
    env.push((
        "PALISADE_DEMO_ADMIN_ALLOW",
        "192.0.2.0/24,127.0.0.1/32".to_owned(),
    ));
    env
}

/// Settings for a development demo whose clock the tour moves (for expiry rows).
pub(crate) fn clocked_demo_env(
    pki: &crate::pki::TestPki,
    issuer: &str,
) -> Vec<(&'static str, String)> {
    let mut env = demo_env(pki, "development", issuer);
    env.push(("PALISADE_DEMO_TEST_CLOCK", "true".to_owned()));
    // Stand-in for email (refused in production): answers carry the tokens.
    env.push(("PALISADE_DEMO_MAIL_OUTBOX", "true".to_owned()));
    env
}

/// The demo binary inside `target_dir` (built by `cargo build --example hardened_api`).
pub(crate) fn demo_binary(target_dir: &Path) -> PathBuf {
    target_dir
        .join("debug")
        .join("examples")
        .join(format!("hardened_api{}", std::env::consts::EXE_SUFFIX))
}

/// The tour's first row: a deliberately weak production configuration must not start.
/// The secrets among `secrets` (tokens, key material from `env`'s key rings, passwords)
/// that appear in `logs`: a JWT counts as leaked when its signature does.
pub(crate) fn leaks(logs: &[String], env: &[(&str, String)], secrets: &[String]) -> Vec<String> {
    let mut needles: Vec<String> = Vec::new();
    for secret in secrets {
        let parts: Vec<&str> = secret.split('.').collect();
        match parts.as_slice() {
            [_, _, signature] if signature.len() >= 16 => needles.push((*signature).to_owned()),
            _ => needles.push(secret.clone()),
        }
    }
    // Key rings: `<id> <version> <base64 material> [...]` per line.
    for (name, value) in env {
        if name.ends_with("_KEYS") || name.ends_with("_KEY") {
            for line in value.lines() {
                if let Some(material) = line.split_whitespace().nth(2) {
                    needles.push(material.to_owned());
                }
            }
        }
    }
    needles
        .into_iter()
        .filter(|n| n.len() >= 8)
        .filter(|n| logs.iter().any(|line| line.contains(n.as_str())))
        .map(|n| format!("{}…", n.chars().take(6).collect::<String>()))
        .collect()
}

/// A deliberately weak production configuration (localhost admin host, HTTP and localhost
/// CORS origins, every proxy trusted, missing keys and audit log).
pub(crate) fn weak_env(pki: &crate::pki::TestPki) -> Vec<(&'static str, String)> {
    vec![
        ("PALISADE_PROFILE", "production".to_owned()),
        ("ADMIN_HOSTNAME", "localhost".to_owned()),
        (
            "PALISADE_DEMO_CORS_ORIGINS",
            "http://localhost:3000,http://app.example.com".to_owned(),
        ),
        (
            "PALISADE_DEMO_TLS_CERT",
            pki.cert_path.display().to_string(),
        ),
        ("PALISADE_DEMO_TLS_KEY", pki.key_path.display().to_string()),
        ("PALISADE_DEMO_TRUSTED_PROXIES", "0.0.0.0/0".to_owned()),
        (
            "PALISADE_DEMO_SESSION_KEYS",
            "tour 1 dG91ci1vbmx5LXNlc3Npb24ta2V5LW5vdC1hLXNlY3JldCE=".to_owned(),
        ),
        // Eight bytes: too short to be a key.
        (
            "PALISADE_DEMO_IMPERSONATION_KEYS",
            "short 1 c2hvcnRrZXk=".to_owned(),
        ),
    ]
}

/// Runs `binary --posture[=json]` with `envs`: its exit status and standard output.
pub(crate) fn posture(
    binary: &Path,
    envs: &[(&str, String)],
    json: bool,
) -> Result<(ExitStatus, String), String> {
    let out = Command::new(binary)
        .arg(if json { "--posture=json" } else { "--posture" })
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

pub(crate) fn refusal_row(binary: &Path, pki: &crate::pki::TestPki) -> crate::tour::Row {
    let envs = weak_env(pki);
    let attack = "start production with a weak config";
    match run_to_exit(binary, &envs) {
        Ok((status, stderr)) => {
            let codes = [
                "field-crypto-ephemeral-key",
                "cors-localhost-origin",
                "cors-http-origin",
                "admin-host-not-a-name",
                "proxy-trusts-everyone",
                "audit-log-missing",
                "audit-signing-key-missing",
            ];
            let listed = codes.iter().all(|c| stderr.contains(c));
            crate::tour::Row::new(
                attack,
                "refused, every finding listed",
                format!(
                    "exit {:?}, {} findings",
                    status.code(),
                    stderr.matches("\n  [").count()
                ),
                !status.success() && listed,
            )
        }
        Err(e) => crate::tour::Row::new(attack, "refused", e, false),
    }
}
