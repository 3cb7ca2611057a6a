//! The properties the fuzz targets check. The same file is compiled into
//! the regression test `tests/tests/fuzz_regressions.rs`, which replays the
//! checked-in seeds and crashers under `cargo test --release`.
//!
//! Input conventions (kept simple so that libFuzzer's mutations and a
//! dictionary work well, and so that seeds can be written by hand):
//! - `decode_json`, `decode_msgpack`: the bytes of one WebSocket frame.
//! - `decode_batch`, `node_session`: several frames separated by
//!   [`FRAME_SEPARATOR`] (`\n--\n`, which no valid JSON document contains);
//!   `node_session` reads a flags byte first (see [`SessionFlags`]).

#![allow(dead_code)] // each user calls only some of these

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use futures_util::{SinkExt, StreamExt};
use packetflow::net::ListenOptions;
use packetflow::wire::{Decoded, MessageKind, WireFrame};
use packetflow::{Codec, Message, Node, NodeConfig, Reactor, ReactorConfig, TokenSpec, Value};
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Separates frames in the multi-frame inputs.
pub const FRAME_SEPARATOR: &[u8] = b"\n--\n";

/// Most frames one input may hold (the rest is ignored).
const MAX_FRAMES: usize = 256;

/// Splits a multi-frame input into its frames.
pub fn split_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while frames.len() < MAX_FRAMES {
        match rest.windows(FRAME_SEPARATOR.len()).position(|w| w == FRAME_SEPARATOR) {
            Some(at) => {
                frames.push(&rest[..at]);
                rest = &rest[at + FRAME_SEPARATOR.len()..];
            }
            None => {
                frames.push(rest);
                break;
            }
        }
    }
    frames
}

fn items(decoded: Decoded) -> Vec<Result<Message, packetflow::wire::FrameError>> {
    decoded.into_iter().collect()
}

/// One message encoded alone by `codec` decodes to itself.
fn assert_round_trip(codec: Codec, message: &Message) {
    let again = codec.encode_to_vec(message);
    let back = items(codec.decode(&again));
    assert_eq!(back, vec![Ok(message.clone())], "{codec:?} round trip of {message:?}");
}

/// Any bytes through one codec's frame decoder: never a panic, whatever
/// decodes survives a re-encode in both codecs (a hub re-encodes what it
/// forwards between a JSON and a MessagePack peer), and for JSON the text
/// path (`decode_text`, used for WebSocket text frames) agrees with the
/// bytes path.
pub fn decode(codec: Codec, bytes: &[u8]) {
    let decoded = items(codec.decode(bytes));
    if codec == Codec::Json {
        if let Ok(text) = std::str::from_utf8(bytes) {
            assert_eq!(items(Codec::decode_text(text)), decoded, "decode_text and decode disagree");
        }
    }
    for message in decoded.iter().flatten() {
        assert_round_trip(Codec::Json, message);
        assert_round_trip(Codec::MsgPack, message);
    }
}

/// Several frames, each decoded by both codecs; every message that decoded
/// is then sent as one batch in each codec: the batch decodes to the same
/// messages in the same order, and the frame form holds the same bytes as
/// `encode_batch`.
pub fn batch(bytes: &[u8]) {
    let mut messages = Vec::new();
    for frame in split_frames(bytes) {
        for codec in [Codec::Json, Codec::MsgPack] {
            messages.extend(codec.decode(frame).into_iter().flatten());
        }
    }
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut encoded = Vec::new();
        codec.encode_batch(&messages, &mut encoded);
        match codec.batch_frame(&messages) {
            WireFrame::Text(text) => assert_eq!(text.as_bytes(), &encoded[..]),
            WireFrame::Binary(binary) => assert_eq!(binary, encoded),
        }
        let Decoded::Batch(back) = codec.decode(&encoded) else {
            panic!("{codec:?}: a batch of {} decoded as a single frame", messages.len())
        };
        let expected: Vec<_> = messages.iter().cloned().map(Ok).collect();
        assert_eq!(back, expected, "{codec:?} batch round trip");
    }
}

/// The token every session's listener knows, allowed anything.
pub const GOOD_TOKEN: &str = "fuzz-good-token-0123456789";
/// A token allowed to submit `df:echo` only and to serve `df:*`.
pub const NARROW_TOKEN: &str = "fuzz-narrow-token-0123456789";
/// A token the listener does not know.
pub const WRONG_TOKEN: &str = "fuzz-wrong-token-0123456789";

/// The first byte of a `node_session` input.
#[derive(Debug, Clone, Copy)]
pub struct SessionFlags(pub u8);

impl SessionFlags {
    /// Bit 0: the client asks for MessagePack.
    pub fn msgpack(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: the listener requires a token.
    pub fn auth(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bits 2-3: the token in the upgrade's `Authorization` header: none,
    /// good, narrow, wrong.
    pub fn header_token(self) -> Option<&'static str> {
        match (self.0 >> 2) & 3 {
            0 => None,
            1 => Some(GOOD_TOKEN),
            2 => Some(NARROW_TOKEN),
            _ => Some(WRONG_TOKEN),
        }
    }
    /// Bit 4: tight limits (submits per second, in flight per connection,
    /// queued bytes, reactor queue).
    pub fn tight(self) -> bool {
        self.0 & 16 != 0
    }
    /// Bit 5: raw mode: the rest of the input goes to the node as raw
    /// bytes (an HTTP request head and whatever follows), not as frames
    /// after a proper upgrade.
    pub fn raw(self) -> bool {
        self.0 & 32 != 0
    }
}

/// Close code of a node that closes for policy (bad frames, PF401).
const CLOSE_POLICY: u16 = 1008;
/// How many bad frames in a row the session's node tolerates.
const MAX_BAD_FRAMES: u32 = 8;
/// Longest a session may take in (paused, auto-advancing) virtual time:
/// past the longest packet timeout (a day), so that every submit must have
/// been answered by then.
const SESSION_LIMIT: Duration = Duration::from_secs(2 * 86_400);

/// An answer frame as the client saw it: `type`, `seq`, packet id.
type Answer = (String, u64, Option<String>);

/// What the client can tell, from its own frames, about the answers due.
#[derive(Debug, Default)]
struct Expected {
    /// Answers that must come (submits admitted, frames rejected), each
    /// exactly once.
    required: Vec<Answer>,
    /// Answers that may come (PF403 naming keys of a hello the token may
    /// not serve; PF401 when no token came before the handshake time).
    optional: Vec<Answer>,
    /// Every answer any frame could get, for a session the node closed.
    possible: Vec<Answer>,
    /// The node must close the connection (policy, 1008).
    closes: bool,
    /// The node may close it (auth deadline).
    may_close: bool,
}

/// Predicts the answers from the frames the client sends, as the node
/// reads them: one answer per submit and per rejected frame, the
/// connection closed at the eighth bad frame in a row or when auth fails.
fn expect(flags: SessionFlags, frames: &[WsMessage]) -> Expected {
    let mut expected = Expected::default();
    let mut awaiting = false;
    let mut granted = !flags.auth();
    if flags.auth() {
        match flags.header_token() {
            None => awaiting = true,
            Some(WRONG_TOKEN) => {
                expected.required.push(("error".into(), 0, None));
                expected.closes = true;
            }
            Some(_) => granted = true,
        }
    }
    let restricted_serve = |token: Option<&str>| token == Some(NARROW_TOKEN) || token == Some(GOOD_TOKEN);
    let mut serve_restricted = flags.auth() && restricted_serve(flags.header_token());
    let mut bad_in_a_row = 0;
    let mut closing = expected.closes;
    for frame in frames {
        let decoded = match frame {
            WsMessage::Text(text) => Codec::decode_text(text.as_str()),
            WsMessage::Binary(bytes) => Codec::MsgPack.decode(bytes),
            _ => continue,
        };
        for item in decoded {
            let answer = match &item {
                Ok(Message::Submit { seq, packet }) => {
                    Some(("result".to_owned(), *seq, Some(packet.id.as_str().to_owned())))
                }
                Ok(_) => None,
                Err(e) if e.kind != Some(MessageKind::Error) => {
                    Some(("error".to_owned(), e.seq, e.packet_id.as_ref().map(|id| id.as_str().to_owned())))
                }
                Err(_) => None,
            };
            if let Some(a) = &answer {
                expected.possible.push(a.clone());
            }
            // PF401 answers carry the frame's seq and the submit's id.
            if let Ok(m) = &item {
                let id = match m {
                    Message::Submit { packet, .. } => Some(packet.id.as_str().to_owned()),
                    _ => None,
                };
                expected.possible.push(("error".into(), m.seq(), id));
            }
            if closing {
                continue;
            }
            match item {
                Ok(message) => {
                    bad_in_a_row = 0;
                    if awaiting {
                        awaiting = false;
                        let token = match &message {
                            Message::Hello { hello, .. } => hello.token.as_deref(),
                            _ => None,
                        };
                        if token == Some(GOOD_TOKEN) || token == Some(NARROW_TOKEN) {
                            granted = true;
                            serve_restricted = true;
                        } else {
                            let id = match &message {
                                Message::Submit { packet, .. } => Some(packet.id.as_str().to_owned()),
                                _ => None,
                            };
                            expected.required.push(("error".into(), message.seq(), id));
                            expected.closes = true;
                            closing = true;
                            continue;
                        }
                    }
                    debug_assert!(granted);
                    if let Message::Hello { seq, .. } = &message {
                        if serve_restricted {
                            expected.optional.push(("error".into(), *seq, None));
                        }
                    }
                    if let Some(a) = answer {
                        expected.required.push(a);
                    }
                }
                Err(_) => {
                    bad_in_a_row += 1;
                    if let Some(a) = answer {
                        expected.required.push(a);
                    }
                    if bad_in_a_row >= MAX_BAD_FRAMES {
                        expected.closes = true;
                        closing = true;
                    }
                }
            }
        }
        if closing {
            break;
        }
    }
    if awaiting && !expected.closes {
        // Nothing admitted the connection: the node may refuse it once its
        // handshake time is over.
        expected.optional.push(("error".into(), 0, None));
        expected.may_close = true;
    }
    let extra: Vec<Answer> = expected.optional.clone();
    expected.possible.extend(extra);
    expected.possible.extend(expected.required.iter().cloned());
    expected
}

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Panics anywhere (a task of the node included, which Tokio would
/// otherwise catch) are remembered; the previous hook still runs (under
/// libFuzzer it aborts, which is how the fuzzer sees a crash).
fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// The node a session talks to: handlers that answer at once, yield,
/// sleep, fail and call other handlers.
fn session_node(flags: SessionFlags) -> Node {
    let tight = flags.tight();
    let reactor = Reactor::new(ReactorConfig {
        name: "fuzz".into(),
        max_inflight: if tight { 2 } else { 64 },
        max_queue: if tight { 4 } else { 1024 },
        finished_memory: 64,
        ..ReactorConfig::default()
    });
    reactor.register_sync("df", "echo", |data, _| Ok(data)).unwrap();
    reactor
        .register_sync("df", "fail", |data, _| {
            Err(packetflow::PfError::failed(format!("failed with {data}")))
        })
        .unwrap();
    reactor
        .register("df", "yield", |data, _| async move {
            tokio::task::yield_now().await;
            Ok(data)
        })
        .unwrap();
    reactor
        .register("df", "sleep", |data: Value, _| async move {
            let ms = data.as_u64().unwrap_or(1).min(86_400_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(data)
        })
        .unwrap();
    reactor
        .register("df", "call", |data: Value, ctx| async move {
            // {"g": group, "e": element, "d": data}: a child call, which a
            // node routes like any packet (to a peer when no handler here).
            let group = data["g"].as_str().unwrap_or("df").to_owned();
            let element = data["e"].as_str().unwrap_or("echo").to_owned();
            ctx.call(&group, &element, data["d"].clone()).await
        })
        .unwrap();
    let config = NodeConfig {
        // Longer than any session: the client never needs to heartbeat.
        heartbeat_interval: Duration::from_secs(7 * 86_400),
        max_frame_bytes: 1 << 20,
        max_inflight_per_conn: if tight { 4 } else { 256 },
        max_submits_per_sec: tight.then_some(20),
        max_queued_bytes: if tight { 2048 } else { 1 << 20 },
        max_bad_frames: MAX_BAD_FRAMES,
        ..NodeConfig::default()
    };
    Node::new(reactor, config)
}

fn listen_options(flags: SessionFlags) -> ListenOptions {
    if !flags.auth() {
        return ListenOptions::default();
    }
    ListenOptions {
        tokens: vec![
            TokenSpec::new("good", GOOD_TOKEN, &["*"], &["df:*", "co:*"]),
            TokenSpec::new("narrow", NARROW_TOKEN, &["df:echo"], &["df:*"]),
        ],
        ..ListenOptions::default()
    }
}

/// The frames the client sends: UTF-8 as text, anything else as binary.
fn client_frames(bytes: &[u8]) -> Vec<WsMessage> {
    split_frames(bytes)
        .into_iter()
        .map(|frame| match std::str::from_utf8(frame) {
            Ok(text) => WsMessage::Text(text.to_owned().into()),
            Err(_) => WsMessage::Binary(frame.to_vec().into()),
        })
        .collect()
}

/// Parses one frame the node sent; the node must only send well-formed
/// JSON or MessagePack.
fn answers_in(frame: &WsMessage, into: &mut Vec<Answer>) {
    let value: Value = match frame {
        WsMessage::Text(text) => serde_json::from_str(text.as_str())
            .unwrap_or_else(|e| panic!("the node sent a text frame that is not JSON ({e}): {text:?}")),
        WsMessage::Binary(bytes) => rmp_serde::from_slice(bytes)
            .unwrap_or_else(|e| panic!("the node sent a binary frame that is not MessagePack ({e})")),
        _ => return,
    };
    let messages = match value {
        Value::Array(all) => all,
        one => vec![one],
    };
    for m in messages {
        let kind = m["type"].as_str().unwrap_or_else(|| panic!("a frame without a type: {m}"));
        let seq = m["seq"].as_u64().unwrap_or_else(|| panic!("a frame without a seq: {m}"));
        let id = m["payload"]["packet_id"].as_str().map(str::to_owned);
        match kind {
            "result" => {
                let status = m["payload"]["status"].as_str();
                assert!(matches!(status, Some("success" | "error")), "a result without a status: {m}");
                assert!(id.is_some(), "a result without a packet id: {m}");
                into.push((kind.into(), seq, id));
            }
            "error" => {
                let code = m["payload"]["code"].as_str().unwrap_or_default();
                assert!(code.starts_with("PF") && code.len() == 5, "an error without a code: {m}");
                into.push((kind.into(), seq, id));
            }
            "hello" | "heartbeat" | "submit" => {}
            other => panic!("the node sent a frame of unknown type {other:?}: {m}"),
        }
    }
}

fn count(answers: &[Answer]) -> HashMap<&Answer, usize> {
    let mut counts = HashMap::new();
    for a in answers {
        *counts.entry(a).or_default() += 1;
    }
    counts
}

/// A whole WebSocket session with a real [`Node`] over an in-memory stream,
/// in virtual time: the upgrade, the frames of the input, then a close.
///
/// Checks: no panic; the node only sends well-formed frames; every submit
/// admitted gets exactly one `result` with its `seq` and id, every rejected
/// frame (but an `error`) exactly one `error`, and nothing else is
/// answered; the node closes the connection exactly when the frames call
/// for it (eight bad frames in a row, failed auth); the session ends; and
/// afterwards nothing is left in flight, queued or counted.
pub fn node_session(bytes: &[u8]) {
    watch_panics();
    PANICKED.store(false, Ordering::SeqCst);
    let Some((&flags, rest)) = bytes.split_first() else { return };
    let flags = SessionFlags(flags);
    if flags.raw() {
        return raw_session(flags, rest);
    }
    let frames = client_frames(rest);
    let expected = expect(flags, &frames);
    let runtime = paused_runtime();
    runtime.block_on(async move {
        let node = session_node(flags);
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = node.serve_stream(server_io, listen_options(flags));
        let client = run_client(flags, client_io, frames, &expected);
        let (served, (answers, closed_by_node)) = tokio::join!(server, client);
        served.expect("serve_stream");
        if std::env::var_os("PACKETFLOW_FUZZ_VERBOSE").is_some() {
            eprintln!("expected {expected:#?}\nanswers {answers:?}\nclosed by the node: {closed_by_node:?}");
        }
        check_answers(&expected, &answers, closed_by_node);
        stop_clean(&node).await;
        let stats = node.reactor().stats();
        assert_eq!((stats.in_flight, stats.queued), (0, 0), "work left behind: {stats:?}");
    });
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked during the session");
}

/// Raw bytes to a node's port (HTTP endpoints, malformed heads and
/// upgrades, frames without masking...): no panic, the session ends once
/// the client stops sending (bounded in virtual time), and nothing is left
/// counted afterwards.
fn raw_session(flags: SessionFlags, bytes: &[u8]) {
    let runtime = paused_runtime();
    runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let node = session_node(flags);
        let (mut client, server_io) = tokio::io::duplex(64 * 1024);
        let server = node.serve_stream(server_io, listen_options(flags));
        let client = async move {
            // Write and read side by side: the node may answer (and close)
            // before it read everything.
            let (mut read, mut write) = tokio::io::split(&mut client);
            let writing = async {
                let _ = write.write_all(bytes).await;
                let _ = write.shutdown().await;
            };
            let reading = async {
                let mut sink = Vec::new();
                let _ = read.read_to_end(&mut sink).await;
                if std::env::var_os("PACKETFLOW_FUZZ_VERBOSE").is_some() {
                    eprintln!("raw answer: {:?}", String::from_utf8_lossy(&sink[..sink.len().min(400)]));
                }
            };
            tokio::join!(writing, reading);
        };
        let session = async { tokio::join!(server, client).0 };
        tokio::time::timeout(SESSION_LIMIT, session)
            .await
            .expect("a raw session ends once the client stops sending")
            .expect("serve_stream");
        stop_clean(&node).await;
    });
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked during the session");
}

/// A runtime on virtual time: a session's timers (handshake, heartbeat,
/// deadlines) elapse as soon as everything is idle, so a run stays fast.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime")
}

/// After a session: nothing of the connection is left counted, then the
/// node stops.
async fn stop_clean(node: &Node) {
    let health = node.health();
    assert_eq!(health["connections"], 0, "the connection is still counted: {health}");
    assert_eq!(health["queued_bytes"], 0, "bytes still counted as queued: {health}");
    assert_eq!(node.peer_count(), 0, "the peer is still in the table");
    node.stop().await;
}

/// The client side: upgrade, send every frame while reading answers, close
/// once every required answer came, read until the stream ends. Returns
/// the answers and the close code when the node closed first.
async fn run_client(
    flags: SessionFlags,
    io: tokio::io::DuplexStream,
    frames: Vec<WsMessage>,
    expected: &Expected,
) -> (Vec<Answer>, Option<u16>) {
    let mut request = "ws://fuzz.invalid/packetflow/v1".into_client_request().unwrap();
    if flags.msgpack() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("packetflow.v1.msgpack"));
    }
    if let Some(token) = flags.header_token() {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        request.headers_mut().insert("authorization", value);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, io).await.expect("the upgrade succeeds");
    let (mut sink, mut stream) = ws.split();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = async move {
        for frame in frames {
            if sink.send(frame).await.is_err() {
                return;
            }
        }
        if close_rx.await.is_ok() {
            let _ = sink.send(WsMessage::Close(None)).await;
        }
    };
    let reader = async move {
        let deadline = Instant::now() + SESSION_LIMIT;
        let mut answers = Vec::new();
        let mut outstanding =
            count(&expected.required).into_iter().map(|(a, n)| (a.clone(), n)).collect::<HashMap<_, _>>();
        let mut close_tx = Some(close_tx);
        let mut closed_by_node = None;
        loop {
            // When the frames call for the node to close, the client waits
            // for it; otherwise it closes once every answer came.
            if outstanding.is_empty() && !expected.closes {
                if let Some(tx) = close_tx.take() {
                    let _ = tx.send(());
                }
            }
            let next = tokio::time::timeout_at(deadline, stream.next()).await.unwrap_or_else(|_| {
                panic!("no end after {SESSION_LIMIT:?}: still waiting for {outstanding:?}; got {answers:?}")
            });
            match next {
                // The client closes without a code (its close comes back
                // the same): a close with a code is the node's own.
                Some(Ok(WsMessage::Close(Some(frame)))) => closed_by_node = Some(u16::from(frame.code)),
                Some(Ok(WsMessage::Close(None))) => {}
                Some(Ok(frame)) => {
                    let before = answers.len();
                    answers_in(&frame, &mut answers);
                    for a in &answers[before..] {
                        if let Some(n) = outstanding.get_mut(a) {
                            *n -= 1;
                            if *n == 0 {
                                outstanding.remove(a);
                            }
                        }
                    }
                }
                Some(Err(_)) | None => {
                    if close_tx.is_some() && closed_by_node.is_none() {
                        closed_by_node = Some(1006); // dropped without a close frame
                    }
                    break;
                }
            }
        }
        (answers, closed_by_node)
    };
    let ((), result) = tokio::join!(writer, reader);
    result
}

fn check_answers(expected: &Expected, answers: &[Answer], closed_by_node: Option<u16>) {
    let got = count(answers);
    match closed_by_node {
        Some(code) => {
            assert!(
                expected.closes || expected.may_close,
                "the node closed ({code}) though no frame called for it; expected {expected:?}, got {answers:?}"
            );
            assert_eq!(code, CLOSE_POLICY, "close code");
            // Closed: answers still running are dropped with the
            // connection, so only "nothing unexpected, nothing twice".
            let possible = count(&expected.possible);
            for (a, n) in &got {
                let allowed = possible.get(a).copied().unwrap_or(0);
                assert!(*n <= allowed, "{a:?} answered {n} times, at most {allowed} possible: {expected:?}");
            }
        }
        None => {
            assert!(!expected.closes, "the node did not close as expected: {expected:?}, got {answers:?}");
            let required = count(&expected.required);
            let optional = count(&expected.optional);
            for (a, n) in &required {
                let g = got.get(a).copied().unwrap_or(0);
                assert!(g >= *n, "{a:?} answered {g} times, {n} required; got {answers:?}");
            }
            for (a, n) in &got {
                let allowed = required.get(a).copied().unwrap_or(0) + optional.get(a).copied().unwrap_or(0);
                assert!(*n <= allowed, "{a:?} answered {n} times, at most {allowed} allowed; {expected:?}");
            }
        }
    }
}
