//! One WebSocket connection: a reader task that decodes frames and runs
//! submits, and a writer task that owns the socket's write half.
//!
//! Why two tasks: a writer blocked on a peer that does not read must never
//! stop this node from reading (two nodes writing to each other with full
//! buffers would otherwise deadlock). The writer coalesces: it takes every
//! queued message at once and writes them with one flush (or, to a peer
//! that announced `batch`, as one array frame). It never waits to fill a
//! batch, so an idle connection adds no latency.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use futures_util::stream::{SplitSink, SplitStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::peers::{Outgoing, Peer};
use super::NodeInner;
use crate::error::{ErrorCode, PfError};
use crate::packet::PacketId;
use crate::reactor::Origin;
use crate::result::PacketResult;
use crate::wire::{Codec, FrameError, Message, MessageKind, WireFrame, FEATURE_BATCH};

/// Close codes this node sends.
pub(crate) const CLOSE_AWAY: u16 = 1001;
pub(crate) const CLOSE_POLICY: u16 = 1008;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Most outbox items taken for one write.
const WRITE_BATCH: usize = 64;
/// Most frames read back to back before the answers are handed over.
const READ_BURST: usize = 256;

/// What the dialer learns when the connection is ready.
pub(crate) type Ready = oneshot::Sender<()>;

/// Runs a connection until it ends; returns when both tasks are done and
/// everything the peer held has been answered PF503.
pub(crate) async fn run<S>(
    node: Arc<NodeInner>,
    ws: WebSocketStream<S>,
    codec: Codec,
    remote: String,
    send_hello: bool,
    ready: Option<Ready>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (outbox, outbox_rx) = mpsc::unbounded_channel();
    let id = node.next_conn_id();
    let peer = Arc::new(Peer::new(id, remote, outbox));
    node.peers.write().insert(peer.clone());
    if send_hello {
        // Dialing a PacketFlow node: announce ourselves first; it answers
        // with its own hello (seed peers are never sent one).
        node.announce_to(&peer, true);
    }
    let (sink, stream) = ws.split();
    let writer = tokio::spawn(write_loop(node.clone(), sink, outbox_rx, codec, peer.clone()));
    let mut reader = Reader { node: node.clone(), peer: peer.clone(), bad_in_a_row: 0, ready, answers: Vec::new(), now: Instant::now() };
    reader.read_loop(stream).await;

    let removed = node.peers.write().remove(id);
    let why = format!("peer {} went away", peer.remote);
    peer.fail_all(|packet_id| PacketResult::error(packet_id, ErrorCode::Unavailable, why.clone(), 0));
    if removed.is_some_and(|p| p.hello().is_some()) {
        node.routes_changed();
        node.announce_to_all();
    }
    // The writer ends once every sender is gone; this one was the last
    // besides in-flight forwarders, which fail fast on a closed outbox.
    let _ = peer.outbox.send(Outgoing::Close(CLOSE_AWAY, "connection ended".into()));
    drop(peer);
    let _ = writer.await;
}

struct Reader {
    node: Arc<NodeInner>,
    peer: Arc<Peer>,
    bad_in_a_row: u32,
    ready: Option<Ready>,
    /// Answers produced since the last hand-off to the writer.
    answers: Vec<Message>,
    /// When the current burst of frames was read: the start of every
    /// packet in it (one clock read per burst, not per packet).
    now: Instant,
}

type Running = FuturesUnordered<futures::future::BoxFuture<'static, (u64, PacketResult)>>;

impl Reader {
    async fn read_loop<S>(&mut self, mut stream: SplitStream<WebSocketStream<S>>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut running: Running = FuturesUnordered::new();
        let interval = self.node.config.heartbeat_interval;
        let mut liveness = tokio::time::interval_at(Instant::now() + interval, interval);
        liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut silent_ticks = 0u32;
        let node = self.node.clone();
        let mut stopping = std::pin::pin!(node.stopping());
        loop {
            if !self.wait_for_writer(stopping.as_mut()).await {
                break;
            }
            tokio::select! {
                biased;
                Some((seq, result)) = running.next(), if !running.is_empty() => {
                    self.answers.push(Message::Result { seq, result });
                }
                frame = stream.next() => {
                    silent_ticks = 0;
                    self.now = Instant::now();
                    if !self.on_read(frame, &mut running) {
                        break;
                    }
                    // Take every frame already received before answering, so
                    // the answers leave together (one write, or one batch).
                    for _ in 0..READ_BURST {
                        match stream.next().now_or_never() {
                            Some(frame) => {
                                if !self.on_read(frame, &mut running) {
                                    self.flush_answers();
                                    return;
                                }
                            }
                            None => break,
                        }
                    }
                }
                _ = liveness.tick() => {
                    silent_ticks += 1;
                    if silent_ticks >= 3 {
                        self.close(CLOSE_AWAY, "no frame for 3 heartbeat intervals");
                        break;
                    }
                }
                _ = &mut stopping => {
                    // The reactor is stopped first, so what still runs here
                    // resolves to PF503 at once: send those answers, then close.
                    let answered = async {
                        while let Some((seq, result)) = running.next().await {
                            self.answers.push(Message::Result { seq, result });
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
                    self.close(CLOSE_AWAY, "node stopping");
                    break;
                }
            }
            while let Some(Some((seq, result))) = running.next().now_or_never() {
                self.answers.push(Message::Result { seq, result });
            }
            self.flush_answers();
        }
        self.flush_answers();
        // Local work for this peer still running: answer it where possible
        // (the writer may already be gone; the reactor bounds the rest).
        drop(running);
    }

    /// Backpressure: while more answers wait to be written than the
    /// connection may have in flight, stop reading (TCP then slows the
    /// peer down). A peer that reads nothing for the handshake timeout is
    /// closed; false then.
    async fn wait_for_writer(&mut self, mut stopping: std::pin::Pin<&mut impl std::future::Future<Output = ()>>) -> bool {
        let limit = self.node.config.max_inflight_per_conn;
        while self.peer.backlog() > limit {
            let drained = self.peer.drained.notified();
            if self.peer.backlog() <= limit {
                break;
            }
            tokio::select! {
                _ = drained => {}
                _ = &mut stopping => return false,
                _ = tokio::time::sleep(self.node.config.handshake_timeout) => {
                    self.close(CLOSE_POLICY, "peer is not reading its answers");
                    return false;
                }
            }
        }
        true
    }

    /// Handles what the stream yielded; false when the connection ends.
    fn on_read(&mut self, frame: Option<Result<WsMessage, tungstenite::Error>>, running: &mut Running) -> bool {
        match frame {
            Some(Ok(frame)) => self.on_frame(frame, running),
            Some(Err(e)) => {
                self.on_read_error(e);
                false
            }
            None => false,
        }
    }

    /// Hands the answers gathered so far to the writer in one message.
    fn flush_answers(&mut self) {
        if !self.answers.is_empty() {
            self.peer.send_all(std::mem::take(&mut self.answers));
        }
    }

    /// Asks the writer to close, after the answers gathered so far.
    fn close(&mut self, code: u16, reason: &str) {
        self.flush_answers();
        let _ = self.peer.outbox.send(Outgoing::Close(code, reason.into()));
    }

    fn on_read_error(&mut self, e: tungstenite::Error) {
        match e {
            tungstenite::Error::Capacity(_) => {
                let limit = self.node.config.max_frame_bytes;
                self.close(CLOSE_TOO_BIG, &format!("frame larger than {limit} bytes (PF413)"));
            }
            tungstenite::Error::Utf8(_) => self.close(CLOSE_POLICY, "text frame is not UTF-8"),
            _ => {}
        }
    }

    /// Handles one frame; false when the connection must end.
    fn on_frame(&mut self, frame: WsMessage, running: &mut Running) -> bool {
        let decoded = match &frame {
            WsMessage::Text(text) => Codec::Json.decode(text.as_bytes()),
            WsMessage::Binary(bytes) => Codec::MsgPack.decode(bytes),
            WsMessage::Close(_) => return false,
            _ => return true, // ping/pong: liveness only (tungstenite answers pings)
        };
        for item in decoded {
            match item {
                Ok(message) => {
                    self.bad_in_a_row = 0;
                    self.on_message(message, running);
                }
                Err(e) => {
                    self.bad_in_a_row += 1;
                    self.on_rejected(e);
                    if self.bad_in_a_row >= self.node.config.max_bad_frames {
                        self.close(CLOSE_POLICY, "too many malformed frames in a row");
                        return false;
                    }
                }
            }
        }
        true
    }

    fn on_rejected(&mut self, e: FrameError) {
        // A broken answer to one of our submits ends that submit now
        // rather than at its deadline.
        if matches!(e.kind, Some(MessageKind::Result | MessageKind::Error)) {
            if let Some(id) = &e.packet_id {
                let message = format!("peer {} sent an invalid answer: {}", self.peer.remote, e.error.message);
                let result = PacketResult::error(id.clone(), ErrorCode::HandlerFailed, message, 0);
                self.peer.complete(e.seq, Some(id), result);
            }
        }
        // Never answer an answer with an error about itself: two nodes could
        // otherwise bounce error frames forever.
        if e.kind != Some(MessageKind::Error) {
            self.answers.push(e.to_message());
        }
    }

    fn on_message(&mut self, message: Message, running: &mut Running) {
        match message {
            Message::Submit { seq, packet } => {
                let limit = self.node.config.max_inflight_per_conn;
                if running.len() + self.peer.backlog() + self.answers.len() >= limit {
                    let message = format!(
                        "this connection has {limit} packets in flight or unsent; retry later"
                    );
                    let result = PacketResult::error(packet.id, ErrorCode::Overloaded, message, 0);
                    self.answers.push(Message::Result { seq, result });
                    return;
                }
                let start = self.now;
                let deadline = start + Duration::from_millis(packet.timeout_ms());
                match self.node.reactor.submit_now(*packet, start, deadline) {
                    Ok(result) => self.answers.push(Message::Result { seq, result }),
                    Err(packet) => {
                        let reactor = self.node.reactor.clone();
                        let origin = Some(Origin(self.peer.id));
                        running.push(Box::pin(async move {
                            (seq, reactor.submit_from(packet, start, deadline, origin).await)
                        }));
                    }
                }
            }
            Message::Result { seq, result } => {
                let id = result.packet_id.clone();
                self.peer.complete(seq, Some(&id), result);
            }
            Message::Error { seq, error, packet_id } => self.on_error_frame(seq, error, packet_id),
            Message::Hello { hello, .. } => {
                let first = self.peer.hello().is_none();
                self.node.peers.write().set_hello(self.peer.id, *hello);
                self.node.routes_changed();
                // Answer a peer's first hello with ours, then tell every
                // other peer about the routes this one brings.
                self.node.announce_to(&self.peer, first);
                self.node.announce_to_all();
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(());
                }
            }
            Message::Heartbeat { .. } => {}
        }
    }

    fn on_error_frame(&self, seq: u64, error: PfError, packet_id: Option<PacketId>) {
        let id = packet_id.or_else(|| self.peer.pending_id(seq));
        if let Some(id) = id {
            let result = PacketResult::failure(id.clone(), error, 0);
            self.peer.complete(seq, Some(&id), result);
        }
    }
}

async fn write_loop<S>(
    node: Arc<NodeInner>,
    mut sink: SplitSink<WebSocketStream<S>, WsMessage>,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    codec: Codec,
    peer: Arc<Peer>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let interval = node.config.heartbeat_interval;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut queue: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH);
    let mut frames: Vec<Message> = Vec::with_capacity(WRITE_BATCH);
    drop(node);
    'outer: loop {
        tokio::select! {
            biased;
            n = outbox.recv_many(&mut queue, WRITE_BATCH) => if n == 0 { break },
            _ = heartbeat.tick() => {
                frames.push(Message::Heartbeat { seq: 0, timestamp: epoch_ms() });
            }
        }
        let mut close = None;
        let from_outbox = frames.len();
        for item in queue.drain(..) {
            match item {
                Outgoing::Frame(m) => frames.push(m),
                Outgoing::Frames(mut ms) => frames.append(&mut ms),
                Outgoing::Close(code, reason) => {
                    close = Some((code, reason));
                    break;
                }
            }
        }
        // Heartbeats are made here, not queued: only queued frames count.
        peer.taken(frames.len() - from_outbox);
        let batch = peer.hello().is_some_and(|h| h.has_feature(FEATURE_BATCH));
        if write_frames(&mut sink, codec, &mut frames, batch).await.is_err() {
            break;
        }
        peer.drained.notify_waiters();
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            break 'outer;
        }
    }
    let _ = sink.close().await;
}

/// Writes every message in `frames` (emptying it) with a single flush.
async fn write_frames<S>(
    sink: &mut SplitSink<WebSocketStream<S>, WsMessage>,
    codec: Codec,
    frames: &mut Vec<Message>,
    batch: bool,
) -> Result<(), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    if batch && frames.len() > 1 {
        sink.feed(to_ws(codec.batch_frame(frames))).await?;
    } else {
        for m in frames.iter() {
            sink.feed(to_ws(codec.frame(m))).await?;
        }
    }
    frames.clear();
    sink.flush().await
}

fn to_ws(frame: WireFrame) -> WsMessage {
    match frame {
        WireFrame::Text(text) => WsMessage::Text(text.into()),
        WireFrame::Binary(bytes) => WsMessage::Binary(bytes.into()),
    }
}

pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
