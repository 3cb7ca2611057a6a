//! Real `nats-server` processes on loopback ports for the NATS tests: one
//! server, or a cluster whose servers route to each other, with JetStream
//! on when asked (its store in a directory of its own, removed with it).
//! Each is killed when its handle is dropped.
//!
//! The binary is `NATS_SERVER_BIN` when set, else `nats-server` on the
//! `PATH` (or in `/usr/sbin`, where Debian's package puts it). Without one
//! the tests fail, saying how to get it: `make test-rust` installs it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a server has to start accepting (and a cluster to form).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two looks at a starting server.
const POLL: Duration = Duration::from_millis(20);

/// The `nats-server` binary to run; panics with how to install it.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "NATS_SERVER_BIN={} is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    for dir in dirs {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "nats-server not found on the PATH or in /usr/sbin: the NATS tests need a real server. \
         Install it (`apt-get install nats-server`, as `make test-rust` does) or set NATS_SERVER_BIN"
    );
}

/// A free loopback port (bound, read and released: the server binds it
/// next), never one handed out before in this process: the tests run at
/// once, and two servers given one port would fail in ways that look like
/// something else.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    // Bounded: the system hands out ports in a range of thousands.
    for _ in 0..1000 {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port left that was not handed out already");
}

/// One running `nats-server`.
pub struct NatsServer {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    /// Monitoring (HTTP) port.
    pub monitor_port: u16,
    /// Route port, in a cluster.
    pub cluster_port: Option<u16>,
    /// Its server name.
    pub name: String,
    /// JetStream's store directory, when JetStream is on.
    store_dir: Option<PathBuf>,
}

impl NatsServer {
    /// One server, not clustered.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(&[]).await
    }

    /// One server, not clustered, with more command-line options (auth,
    /// TLS).
    pub async fn start_with(options: &[&str]) -> NatsServer {
        let mut server = NatsServer::spawn_with("pf-single", None, &[], options);
        server.wait_accepting().await;
        server
    }

    /// A cluster of `n` servers, each routing to all the others; returns
    /// once every server has a route to every other one.
    pub async fn cluster(n: usize) -> Vec<NatsServer> {
        NatsServer::cluster_of(n, false).await
    }

    /// One server with JetStream on, not clustered; returns once
    /// JetStream answers.
    pub async fn start_jetstream() -> NatsServer {
        let mut server = NatsServer::spawn_jetstream("pf-single", None, &[]);
        server.wait_accepting().await;
        server.wait_jetstream(false).await;
        server
    }

    /// [`cluster`](Self::cluster) with JetStream on in every server;
    /// returns once the servers elected JetStream's leader too.
    pub async fn jetstream_cluster(n: usize) -> Vec<NatsServer> {
        NatsServer::cluster_of(n, true).await
    }

    async fn cluster_of(n: usize, jetstream: bool) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let mut servers: Vec<NatsServer> = (0..n)
            .map(|i| {
                let others: Vec<String> =
                    routes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone()).collect();
                let name = format!("pf-{i}");
                if jetstream {
                    NatsServer::spawn_jetstream(&name, Some(cluster_ports[i]), &others)
                } else {
                    NatsServer::spawn(&name, Some(cluster_ports[i]), &others)
                }
            })
            .collect();
        for server in &mut servers {
            server.wait_accepting().await;
            server.wait_routes(n as u64 - 1).await;
        }
        if jetstream {
            for server in &mut servers {
                server.wait_jetstream(true).await;
            }
        }
        servers
    }

    fn spawn(name: &str, cluster_port: Option<u16>, routes: &[String]) -> NatsServer {
        NatsServer::spawn_with(name, cluster_port, routes, &[])
    }

    /// A server with JetStream on, its store in a fresh directory.
    fn spawn_jetstream(name: &str, cluster_port: Option<u16>, routes: &[String]) -> NatsServer {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pf-jetstream-{}-{made}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make a JetStream store directory");
        let store = dir.to_string_lossy().into_owned();
        let mut server = NatsServer::spawn_with(name, cluster_port, routes, &["-js", "-sd", &store]);
        server.store_dir = Some(dir);
        server
    }
    fn spawn_with(name: &str, cluster_port: Option<u16>, routes: &[String], options: &[&str]) -> NatsServer {
        let (port, monitor_port) = (free_port(), free_port());
        let mut command = Command::new(binary());
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor_port.to_string()])
            .args(["-n", name])
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cluster_port) = cluster_port {
            command.args([
                "--cluster_name",
                "pf-test",
                "--cluster",
                &format!("nats://127.0.0.1:{cluster_port}"),
            ]);
            if !routes.is_empty() {
                command.args(["--routes", &routes.join(",")]);
            }
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        NatsServer {
            child: Some(child),
            port,
            monitor_port,
            cluster_port,
            name: name.to_owned(),
            store_dir: None,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_accepting(&mut self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let until = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).await.is_err() {
            self.assert_running();
            assert!(Instant::now() < until, "nats-server {} did not accept on {addr} in time", self.name);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the monitoring endpoint shows at least `routes` routes.
    async fn wait_routes(&mut self, routes: u64) {
        let until = Instant::now() + START_TIMEOUT;
        loop {
            let body = self.monitor("/routez").await.unwrap_or_default();
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if doc["num_routes"].as_u64().is_some_and(|n| n >= routes) {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < until,
                "nats-server {} has no {routes} routes in time: {body}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until JetStream answers on the monitoring endpoint: enabled,
    /// and, in a cluster, with a leader of its meta group elected.
    async fn wait_jetstream(&mut self, clustered: bool) {
        let until = Instant::now() + START_TIMEOUT;
        loop {
            let body = self.monitor("/jsz").await.unwrap_or_default();
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let enabled = doc["config"]["store_dir"].is_string() || doc["memory"].is_u64();
            let led = doc["meta_cluster"]["leader"].as_str().is_some_and(|l| !l.is_empty());
            if enabled && (!clustered || led) {
                return;
            }
            self.assert_running();
            assert!(Instant::now() < until, "nats-server {} has no JetStream in time: {body}", self.name);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics, saying so, when the server has exited (a port taken
    /// meanwhile, a bad flag).
    fn assert_running(&mut self) {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            panic!("nats-server {} exited while starting: {status}", self.name);
        }
    }

    /// The body of `GET path` on the monitoring port.
    pub async fn monitor(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        tokio::time::timeout(START_TIMEOUT, stream.read_to_string(&mut response)).await.ok()?.ok()?;
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.store_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
