//! Helpers for the integration tests: nodes on ephemeral loopback ports,
//! and a raw WebSocket peer written from the seed spec alone (it never
//! sends `hello` and answers submits with `seq: 0`).

pub mod bench_args;
pub mod nats_node;
pub mod nats_server;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use packetflow::{Node, NodeConfig, Reactor, ReactorConfig, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node named `name`, listening on an ephemeral loopback port.
pub async fn node(name: &str, config: NodeConfig) -> (Node, SocketAddr) {
    let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
    node_with(reactor, config).await
}

/// Puts `reactor` on an ephemeral loopback port.
pub async fn node_with(reactor: Reactor, config: NodeConfig) -> (Node, SocketAddr) {
    let node = Node::new(reactor, config);
    let addr = node.listen("127.0.0.1:0").await.expect("listen on loopback");
    (node, addr)
}

/// The WebSocket URL of a node.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/packetflow/v1")
}

/// Registers `df:upper` (uppercase a string) on `reactor`.
pub fn register_upper(reactor: &Reactor) {
    reactor
        .register_sync("df", "upper", |data, _| {
            Ok(Value::String(data.as_str().unwrap_or_default().to_uppercase()))
        })
        .unwrap();
}

/// A peer written from the seed spec alone: raw frames, no `hello`.
pub struct RawPeer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawPeer {
    /// Connects speaking JSON (no subprotocol header, like the seed).
    pub async fn connect(url: &str) -> RawPeer {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        RawPeer { ws }
    }

    /// Connects presenting `token` as `Authorization: Bearer` on the
    /// upgrade (and never sending `hello`, like a seed client).
    pub async fn connect_with_token(url: &str, token: &str) -> RawPeer {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("connect");
        RawPeer { ws }
    }

    /// Connects asking for MessagePack.
    pub async fn connect_msgpack(url: &str) -> RawPeer {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("packetflow.v1.msgpack"));
        let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("connect");
        assert_eq!(response.headers()["sec-websocket-protocol"], "packetflow.v1.msgpack");
        RawPeer { ws }
    }

    /// Sends a raw WebSocket message.
    pub async fn send(&mut self, message: WsMessage) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(WsMessage::Text(text.into().into())).await;
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next frame that is not a heartbeat, decoded (JSON text or
    /// MessagePack binary); `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            let value: Value = match frame {
                Some(Ok(WsMessage::Text(t))) => serde_json::from_str(&t).expect("JSON frame"),
                Some(Ok(WsMessage::Binary(b))) => {
                    rmp_serde::from_slice::<Value>(&b).expect("MessagePack frame")
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            };
            if value["type"] != "heartbeat" {
                return Some(value);
            }
        }
    }

    /// Like [`recv`](Self::recv), failing the test if the connection closed.
    pub async fn recv_open(&mut self) -> Value {
        self.recv().await.expect("the connection stayed open")
    }

    /// Waits for the close frame; returns its code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        self.frames_until_close().await.1
    }

    /// Waits for the close frame; returns its code and reason.
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("closed in time") {
                Some(Ok(WsMessage::Close(frame))) => {
                    return frame.map(|f: CloseFrame| (f.code.into(), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Every JSON frame (heartbeats aside) until the close frame, and the
    /// close code.
    pub async fn frames_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("closed in time") {
                Some(Ok(WsMessage::Close(frame))) => {
                    return (frames, frame.map(|f: CloseFrame| f.code.into()))
                }
                Some(Ok(WsMessage::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    if v["type"] != "heartbeat" {
                        frames.push(v);
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A directory under the system's temporary directory, unique to this
/// process and call, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("packetflow-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    /// Writes `text` to `name` inside it; returns the file's path.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A seed-style submit frame.
pub fn submit_frame(seq: u64, id: &str, group: &str, element: &str, data: Value) -> Value {
    serde_json::json!({"type": "submit", "seq": seq, "payload": {
        "version": "1.0", "id": id, "group": group, "element": element, "data": data, "priority": 5}})
}

/// A node in a child process (the `fault-node` binary of this crate, whose
/// path a test gets from `env!("CARGO_BIN_EXE_fault-node")`). Killed when
/// dropped; it also exits by itself when this process goes away (its
/// stdin closes).
pub struct ChildNode {
    child: std::process::Child,
    /// The first line it printed: `listening ws://...` or `ready`.
    pub first_line: String,
}

impl ChildNode {
    /// Starts `binary` with `args` and waits (bounded) for its first line.
    pub fn start(binary: &str, args: &[&str]) -> ChildNode {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().expect("a piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {} // keep the pipe drained
        });
        let first_line = match rx.recv_timeout(WAIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{binary} {args:?} printed no first line: {other:?}")
            }
        };
        ChildNode { child, first_line }
    }

    /// The WebSocket URL a hub printed.
    pub fn url(&self) -> String {
        let url = self.first_line.strip_prefix("listening ").expect("a hub's first line");
        url.to_owned()
    }

    /// The `HOST:PORT` a hub listens on.
    pub fn addr(&self) -> String {
        let url = self.url();
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        rest.split('/').next().unwrap_or_default().to_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// Kills it with SIGKILL (no chance to close anything cleanly) and
    /// reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on `addr` (`HOST:PORT`): the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect for HTTP");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("an HTTP answer in time")
        .expect("read the answer");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Waits (bounded by [`WAIT`]) until `check` holds, looking again every few
/// milliseconds; fails naming `what`.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
