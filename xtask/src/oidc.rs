//! Runs the test OpenID provider (`tests/oidc/provider.mjs`, npm `oidc-provider` pinned by its
//! lock file). The package is installed with `npm ci` into the cache folder
//! (`$PALISADE_CACHE_DIR`, else `~/.cache/palisade`), once, under a file lock, so that test
//! binaries running at the same time never install over each other.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The cache folder shared by xtask and the tests.
pub(crate) fn cache_root() -> PathBuf {
    if let Ok(dir) = std::env::var("PALISADE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join("palisade")
}

/// The repository's `tests/oidc` folder.
fn source_dir() -> PathBuf {
    // This file is xtask/src/oidc.rs; it is also compiled into tests elsewhere via #[path], so
    // find the workspace root from the manifest of whichever crate includes it.
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("tests/oidc/provider.mjs").exists() {
        if !dir.pop() {
            break;
        }
    }
    dir.join("tests/oidc")
}

/// Installs the provider (if its lock file changed or it is missing) and returns its folder.
pub(crate) fn install() -> Result<PathBuf, String> {
    install_locked().map(|(dir, _lock)| dir)
}

/// Like [`install`], returning the held install lock too.
fn install_locked() -> Result<(PathBuf, std::fs::File), String> {
    let src = source_dir();
    let dir = cache_root().join("oidc-provider");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".install.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    for file in [
        "package.json",
        "package-lock.json",
        ".npmrc",
        "provider.mjs",
    ] {
        let from = src.join(file);
        let to = dir.join(file);
        let new = std::fs::read(&from).map_err(|e| format!("read {}: {e}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() != Some(&new[..]) {
            std::fs::write(&to, &new).map_err(|e| format!("write {}: {e}", to.display()))?;
            if file == "package-lock.json" {
                let _ = std::fs::remove_dir_all(dir.join("node_modules"));
            }
        }
    }
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("npm ci: {e}"))?;
        if !status.success() {
            return Err(format!("npm ci failed in {}", dir.display()));
        }
    }
    Ok((dir, lock))
}

/// A running provider; stopped on drop.
#[derive(Debug)]
pub(crate) struct Provider {
    child: Child,
    pub(crate) issuer: String,
    pub(crate) port: u16,
}

/// Options for one provider run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// Port on 127.0.0.1 (0: any free port).
    pub(crate) port: u16,
    /// Private JWKS file (generated there if missing).
    pub(crate) keys_file: Option<PathBuf>,
    /// Kid suffix for generated keys.
    pub(crate) key_generation: u32,
    /// Personas file (default: the built-in personas).
    pub(crate) clients_file: Option<PathBuf>,
}

impl Provider {
    /// Starts the provider and waits for its ready line. Starts are serialized across threads
    /// and processes (under the install lock), and a start that shows no sign of life within
    /// 30 s is killed and retried, up to three times.
    pub(crate) fn start(options: &Options) -> Result<Provider, String> {
        let (dir, _lock) = install_locked()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(&dir, options) {
                Ok(provider) => return Ok(provider),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(dir: &Path, options: &Options) -> Result<Provider, String> {
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("provider.mjs"))
            .arg("--port")
            .arg(options.port.to_string())
            .arg("--exit-on-stdin-close")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(keys) = &options.keys_file {
            cmd.arg("--keys-file").arg(keys);
        }
        if options.key_generation > 0 {
            cmd.arg("--key-generation")
                .arg(options.key_generation.to_string());
        }
        if let Some(clients) = &options.clients_file {
            cmd.arg("--clients-file").arg(clients);
        }
        let mut child = cmd.spawn().map_err(|e| format!("node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock()
                    && lines.len() < 200
                {
                    lines.push(line);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("oidc-provider ready issuer=") {
                        let (issuer, port) = rest.split_once(" port=").ok_or("bad ready line")?;
                        let port = port.trim().parse().map_err(|_| "bad port")?;
                        return Ok(Provider {
                            child,
                            issuer: issuer.to_owned(),
                            port,
                        });
                    }
                }
                Err(e) => {
                    let alive = matches!(child.try_wait(), Ok(None));
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = errors.lock().map(|l| l.join("\n")).unwrap_or_default();
                    return Err(format!(
                        "the OIDC provider did not start ({e:?}, alive: {alive}):\n{log}"
                    ));
                }
            }
        }
    }

    /// The token endpoint.
    pub(crate) fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer)
    }

    /// An access token for persona `client` (client-credentials grant).
    pub(crate) async fn token(&self, client: &str) -> Result<String, String> {
        // reqwest is built without a bundled crypto provider: install ours (idempotent).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let response = reqwest::Client::new()
            .post(self.token_endpoint())
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json_or_text().await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token for {client} ({status}): {body}"))
    }

    /// Stops the provider (an outage).
    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait JsonOrText {
    async fn json_or_text(self) -> Result<serde_json::Value, String>;
}

impl JsonOrText for reqwest::Response {
    async fn json_or_text(self) -> Result<serde_json::Value, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|_| String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Writes a keys file holding the keys of `first` then `second` (both private JWKS files), so
/// that `first`'s keys sign and both verify: a provider mid-rotation.
pub(crate) fn merge_keys(first: &Path, second: &Path, out: &Path) -> Result<(), String> {
    let read = |p: &Path| -> Result<Vec<serde_json::Value>, String> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        Ok(v["keys"].as_array().cloned().unwrap_or_default())
    };
    let mut keys = read(first)?;
    keys.extend(read(second)?);
    std::fs::write(out, serde_json::json!({ "keys": keys }).to_string()).map_err(|e| e.to_string())
}
