//! The Cerbos policy decision point the tests run: npm `@cerbos/cerbos-linux-x64` pinned by
//! `tests/cerbos/package-lock.json`, installed with `npm ci` into the cache folder
//! (`$PALISADE_CACHE_DIR`, else `~/.cache/palisade`), once, under a file lock. [`compile`] runs
//! `cerbos compile` on the repository's `policies/` (their policy tests included); [`Pdp`]
//! starts a server on free loopback ports, in plaintext, TLS or mutual TLS.
//!
//! This file is compiled into xtask and, through `#[path]`, into test suites.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The cache folder shared by xtask and the tests.
fn cache_root() -> PathBuf {
    if let Ok(dir) = std::env::var("PALISADE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join("palisade")
}

/// The workspace root, found from the manifest of whichever crate includes this file.
fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("tests/cerbos/package-lock.json").exists() {
        if !dir.pop() {
            break;
        }
    }
    dir
}

/// The repository's policies (and their Cerbos policy tests).
pub(crate) fn policies_dir() -> PathBuf {
    workspace_root().join("policies")
}

/// Installs the PDP (if its lock file changed or it is missing) and returns the binary, with
/// the install lock held.
fn install_locked() -> Result<(PathBuf, std::fs::File), String> {
    let src = workspace_root().join("tests/cerbos");
    let dir = cache_root().join("cerbos");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".install.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    for file in ["package.json", "package-lock.json", ".npmrc"] {
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
    let binary = dir.join("node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64");
    if !binary.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("npm ci: {e}"))?;
        if !status.success() || !binary.exists() {
            return Err(format!("npm ci failed in {}", dir.display()));
        }
    }
    Ok((binary, lock))
}

/// Installs the PDP and returns its binary.
pub(crate) fn install() -> Result<PathBuf, String> {
    install_locked().map(|(binary, _lock)| binary)
}

/// Runs `cerbos compile` on the policies: fails when a policy does not compile or one of
/// their tests fails. Answers the tool's report.
pub(crate) fn compile() -> Result<String, String> {
    let binary = install()?;
    let output = Command::new(&binary)
        .arg("compile")
        .arg(policies_dir())
        .output()
        .map_err(|e| format!("cerbos compile: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(report)
    } else {
        Err(format!(
            "cerbos compile failed ({}):\n{report}",
            output.status
        ))
    }
}

/// How the PDP serves.
#[derive(Clone, Debug, Default)]
pub(crate) enum Transport {
    /// Plaintext (on loopback only).
    #[default]
    Plaintext,
    /// TLS with this certificate and key (PEM files).
    Tls { cert: PathBuf, key: PathBuf },
    /// TLS asking clients for a certificate issued by `client_ca`.
    MutualTls {
        cert: PathBuf,
        key: PathBuf,
        client_ca: PathBuf,
    },
    /// Plaintext gRPC on a Unix socket at this path (HTTP stays on loopback TCP).
    Unix { socket: PathBuf },
}

/// A running PDP; stopped on drop.
#[derive(Debug)]
pub(crate) struct Pdp {
    child: Option<Child>,
    /// The gRPC Unix socket, when serving on one.
    socket: Option<PathBuf>,
    binary: PathBuf,
    config: PathBuf,
    /// The gRPC address (127.0.0.1).
    pub(crate) grpc: SocketAddr,
    /// The HTTP address (127.0.0.1).
    pub(crate) http: SocketAddr,
}

/// A port free at the time of asking (Cerbos cannot listen on port 0).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl Pdp {
    /// Starts a PDP on the repository's policies over `transport`, and waits until it accepts
    /// connections. A start that fails (a port taken in between, say) is retried, up to three
    /// times.
    pub(crate) fn start(transport: &Transport) -> Result<Pdp, String> {
        let binary = install()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(&binary, transport) {
                Ok(pdp) => return Ok(pdp),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(binary: &Path, transport: &Transport) -> Result<Pdp, String> {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let grpc_listen = match transport {
            Transport::Unix { socket } => format!("unix:{}", socket.display()),
            _ => grpc.to_string(),
        };
        let tls = match transport {
            Transport::Plaintext | Transport::Unix { .. } => String::new(),
            Transport::Tls { cert, key } => format!(
                "  tls:\n    cert: {:?}\n    key: {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
            Transport::MutualTls {
                cert,
                key,
                client_ca,
            } => format!(
                "  tls:\n    cert: {:?}\n    key: {:?}\n    caCert: {:?}\n",
                cert.display().to_string(),
                key.display().to_string(),
                client_ca.display().to_string()
            ),
        };
        let config = format!(
            "server:\n  httpListenAddr: \"{http}\"\n  grpcListenAddr: \"{grpc_listen}\"\n{tls}\
             storage:\n  driver: disk\n  disk:\n    directory: {:?}\n    watchForChanges: false\n",
            policies_dir().display().to_string()
        );
        let path = std::env::temp_dir().join(format!(
            "palisade-cerbos-{}-{}.yaml",
            std::process::id(),
            grpc.port()
        ));
        std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
        let mut pdp = Pdp {
            socket: match transport {
                Transport::Unix { socket } => Some(socket.clone()),
                _ => None,
            },
            child: None,
            binary: binary.to_owned(),
            config: path,
            grpc,
            http,
        };
        pdp.spawn()?;
        Ok(pdp)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.binary)
            .arg("server")
            .arg(format!("--config={}", self.config.display()))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cerbos server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut log);
                }
                return Err(format!("cerbos server exited ({status}):\n{log}"));
            }
            let up = |a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(200));
            let grpc_up = match &self.socket {
                Some(socket) => std::os::unix::net::UnixStream::connect(socket).is_ok(),
                None => up(self.grpc).is_ok(),
            };
            if grpc_up && up(self.http).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cerbos server did not listen within 30 s".to_owned());
            }
            // Polling a child process's start-up; no clock is being tested.
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the PDP (an outage); [`Pdp::restart`] brings it back on the same ports.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the PDP again on the same ports and configuration.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Pdp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.config);
    }
}
