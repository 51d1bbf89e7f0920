//! A three-node Redis Cluster of real `redis-server` processes for tests.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running cluster: its nodes' URLs.
#[derive(Debug)]
pub struct Cluster {
    /// `redis://127.0.0.1:<port>` of each node.
    pub urls: Vec<String>,
    _nodes: Mutex<Vec<Child>>,
    _dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("a bound address")
        .port()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() >= deadline {
            return Err(format!("Redis Cluster: {what} timed out"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A synchronous connection that gives up quickly (a port taken by something else must
/// not hang the tests).
fn connect(url: &str) -> ::redis::RedisResult<::redis::Connection> {
    let timeout = Duration::from_millis(500);
    let conn = ::redis::Client::open(url)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    Ok(conn)
}

fn start() -> Result<Cluster, String> {
    let dir = std::env::temp_dir().join(format!("palisade-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (port, bus) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join(format!("node-{port}.log")))
            .map_err(|e| e.to_string())?;
        let script = format!(
            "redis-server --bind 127.0.0.1 --port {port} --cluster-enabled yes \
             --cluster-port {bus} --cluster-config-file nodes-{port}.conf --dir '{dir}' \
             --save '' --appendonly no --protected-mode no & NODE=$!; read _; kill $NODE; \
             wait $NODE; rm -f '{dir}/nodes-{port}.conf' '{dir}/node-{port}.log'; \
             rmdir '{dir}' 2>/dev/null",
            dir = dir.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        nodes.push(child);
        urls.push(format!("redis://127.0.0.1:{port}"));
    }
    for url in &urls {
        wait_for("node start", || {
            connect(url)
                .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })
        .map_err(|why| {
            let port = url.rsplit(':').next().unwrap_or_default();
            let log =
                std::fs::read_to_string(dir.join(format!("node-{port}.log"))).unwrap_or_default();
            format!("{why}; {url} logged:\n{log}")
        })?;
    }
    let addresses: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !created.success() {
        return Err("redis-cli --cluster create failed".to_owned());
    }
    for url in &urls {
        wait_for("cluster_state:ok", || {
            connect(url)
                .and_then(|mut c| ::redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })?;
    }
    Ok(Cluster {
        urls,
        _nodes: Mutex::new(nodes),
        _dir: dir,
    })
}

/// The cluster, started on first use. A failed start is remembered, so every later test
/// fails at once with the same reason instead of starting nodes again. (Statics are not
/// dropped: the nodes stop when the test process's end closes their stdin.)
pub fn get() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => panic!("{why}"),
    }
}
