//! Ctrl-C during `packetflow submit` cancels the packet: a peer that takes
//! cancels gets a `cancel` frame for it before the connection closes, and
//! the command prints its PF499 result and exits with 130.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_packetflow");
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// What the peer saw of the one connection it served.
enum Seen {
    /// The submit of `df:wait` arrived (it is never answered).
    Submit(Value),
    /// Every frame that came after it, until the connection closed.
    After(Vec<Value>),
}

/// A PacketFlow peer made of raw frames: it answers the CLI's `hello` with
/// one announcing `df:wait` and the feature `cancel`, then reports what
/// comes.
async fn peer_taking_cancels() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The callback's type is tungstenite's (an `ErrorResponse` error).
        #[allow(clippy::result_large_err)]
        let speaks_hello = |_: &Request, mut response: Response| {
            response.headers_mut().insert("x-packetflow-node", "raw".parse().unwrap());
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, speaks_hello).await.unwrap();
        let hello = json!({"type": "hello", "seq": 0, "payload": {
            "node_id": "raw", "name": "raw", "runtime": "test", "protocol": "1.0",
            "handlers": ["df:wait"], "features": ["cancel"], "max_inflight": 16}});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap();
        let mut after: Option<Vec<Value>> = None;
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            match (&mut after, value["type"].as_str()) {
                (_, Some("hello" | "heartbeat")) => {}
                (None, Some("submit")) => {
                    let _ = seen.send(Seen::Submit(value));
                    after = Some(Vec::new());
                }
                (Some(frames), _) => frames.push(value),
                (None, _) => {}
            }
        }
        let _ = seen.send(Seen::After(after.unwrap_or_default()));
    });
    (format!("ws://{addr}/packetflow/v1"), events)
}

async fn next(events: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, events.recv()).await.expect("the peer reports in time").expect("peer alive")
}

#[test]
fn ctrl_c_during_submit_cancels_the_packet_on_the_peer() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (url, mut events) = peer_taking_cancels().await;
        let child = Command::new(BIN)
            .args(["submit", "--url", &url, "--timeout-ms", "60000", "df", "wait", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run packetflow submit");
        let Seen::Submit(submit) = next(&mut events).await else { panic!("the submit comes first") };
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
        let out = tokio::time::timeout(WAIT, out).await.expect("the command exits").unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout).expect("the result is printed");
        assert_eq!(result["status"], "error");
        assert_eq!(result["error"]["code"], "PF499");
        assert_eq!(result["packet_id"], submit["payload"]["id"]);
        // The peer was told before the connection closed.
        let Seen::After(frames) = next(&mut events).await else { panic!("one submit only") };
        let cancel = json!({"type": "cancel", "seq": submit["seq"],
                            "payload": {"packet_id": submit["payload"]["id"]}});
        assert_eq!(frames, vec![cancel]);
    });
}
