//! One WebSocket connection, driven by one task that owns the whole socket.
//!
//! The task reads frames, runs submits, and writes answers, all without a
//! hand-off to another task: answers produced while reading a burst of
//! frames go out together with one flush (or, to a peer that announced
//! `batch`, as one array frame), and nothing waits to fill a batch, so an
//! idle connection adds no latency. Frames from other tasks (forwarded
//! submits, hellos) arrive through the peer's outbox.
//!
//! Reading and writing are polled side by side, so a peer that stops
//! reading never stops this node from reading (two nodes writing to each
//! other with full buffers would otherwise deadlock). What bounds memory is
//! backpressure: while more answers wait to be written than the connection
//! may have in flight, the task stops reading, and TCP slows the peer down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::peers::Peer;
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

/// Most frames read back to back before the answers are written.
const READ_BURST: usize = 256;
/// How long a stopping node waits for its work in flight to be answered.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What the dialer learns when the connection is ready.
pub(crate) type Ready = oneshot::Sender<()>;

type Running = FuturesUnordered<futures::future::BoxFuture<'static, (u64, PacketResult)>>;

/// Runs a connection until it ends; returns once everything the peer held
/// has been answered PF503.
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
    let peer = Arc::new(Peer::new(node.next_conn_id(), remote, outbox));
    node.peers.write().insert(peer.clone());
    if send_hello {
        // Dialing a PacketFlow node: announce ourselves first; it answers
        // with its own hello (seed peers are never sent one).
        node.announce_to(&peer, true);
    }
    let interval = node.config.heartbeat_interval;
    let ticker = |period| {
        let mut t = tokio::time::interval_at(Instant::now() + period, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    };
    let stopping_node = node.clone();
    let mut conn = Connection {
        node: node.clone(),
        peer: peer.clone(),
        ws,
        codec,
        outbox: outbox_rx,
        running: FuturesUnordered::new(),
        out: Vec::new(),
        needs_flush: false,
        closing: None,
        close_sent: false,
        ready,
        bad_in_a_row: 0,
        heartbeat: ticker(interval),
        silent_ticks: 0,
        stalled_since: None,
        stopping: Box::pin(async move { stopping_node.stopping().await }),
        stop_grace: None,
    };
    std::future::poll_fn(|cx| conn.poll(cx)).await;
    drop(conn);

    let removed = node.peers.write().remove(peer.id);
    let why = format!("peer {} went away", peer.remote);
    peer.fail_all(|packet_id| PacketResult::error(packet_id, ErrorCode::Unavailable, why.clone(), 0));
    match removed {
        Some(p) if p.hello().is_some() => {
            node.routes_changed();
            node.announce_to_all();
        }
        // A seed peer leaving may withdraw this node's default route.
        Some(p) if p.is_proven_seed() => node.announce_to_all(),
        _ => {}
    }
}

struct Connection<S> {
    node: Arc<NodeInner>,
    peer: Arc<Peer>,
    ws: WebSocketStream<S>,
    codec: Codec,
    outbox: mpsc::UnboundedReceiver<Message>,
    /// Local submits still running (the ones that did not finish at once).
    running: Running,
    /// Messages to write, in order.
    out: Vec<Message>,
    /// Frames were handed to the socket and not flushed yet.
    needs_flush: bool,
    /// Set once this side decided to close: the code and reason to send
    /// after `out` is written.
    closing: Option<(u16, String)>,
    close_sent: bool,
    ready: Option<Ready>,
    bad_in_a_row: u32,
    /// Sends heartbeats and, on the same beat, checks the peer's liveness.
    heartbeat: Interval,
    silent_ticks: u32,
    /// Since when reading is paused because the peer does not read.
    stalled_since: Option<Instant>,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set when the node stops: work in flight gets this long to answer.
    stop_grace: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Drives the connection; ready when it is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            if self.closing.is_none() {
                progress |= self.poll_stop(cx);
            }
            progress |= self.poll_running(cx);
            progress |= self.poll_outbox(cx);
            if self.closing.is_none() && self.stop_grace.is_none() {
                match self.poll_read(cx) {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            progress |= self.poll_timers(cx);
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) if self.close_sent => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                _ => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// The node is stopping: stop reading, let running work answer (it is
    /// PF503 by now, the reactor stops first), then close with 1001.
    fn poll_stop(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop_grace.is_none() {
            if self.stopping.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.stop_grace = Some(Box::pin(tokio::time::sleep(STOP_GRACE)));
        }
        let grace_over = self.stop_grace.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
        if self.running.is_empty() || grace_over {
            self.close(CLOSE_AWAY, "node stopping");
            return true;
        }
        false
    }

    fn poll_running(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some((seq, result))) = Pin::new(&mut self.running).poll_next(cx) {
            self.out.push(Message::Result { seq, result });
            progress = true;
        }
        progress
    }

    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(item) = self.outbox.poll_recv(cx) {
            progress = true;
            match item {
                Some(m) => self.out.push(m),
                // The peer table holds a sender while the connection lives.
                None => break,
            }
        }
        progress
    }

    /// Reads a burst of frames. Ready(true) when something was read,
    /// Ready(false) when the connection is over, Pending otherwise
    /// (including while paused for backpressure).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let limit = self.node.config.max_inflight_per_conn;
        if self.out.len() > limit {
            // The peer does not read as fast as it sends: stop reading until
            // the writer catches up (its flush wakes this task).
            self.stalled_since.get_or_insert_with(Instant::now);
            return Poll::Pending;
        }
        self.stalled_since = None;
        let now = Instant::now();
        let mut read_any = false;
        for _ in 0..READ_BURST {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    read_any = true;
                    self.silent_ticks = 0;
                    if !self.on_frame(frame, now) || self.closing.is_some() {
                        return Poll::Ready(true);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.on_read_error(e);
                    // Try to say why (1009, 1008); the socket may be gone.
                    return Poll::Ready(self.closing.is_some());
                }
                Poll::Ready(None) => return Poll::Ready(false),
                Poll::Pending => break,
            }
        }
        if read_any {
            Poll::Ready(true)
        } else {
            Poll::Pending
        }
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        if self.heartbeat.poll_tick(cx).is_pending() {
            return false;
        }
        if let Some(since) = self.stalled_since {
            if since.elapsed() >= self.node.config.handshake_timeout {
                self.close(CLOSE_POLICY, "peer is not reading its answers");
                return true;
            }
        }
        self.silent_ticks += 1;
        if self.silent_ticks >= 3 {
            self.close(CLOSE_AWAY, "no frame for 3 heartbeat intervals");
        } else if self.closing.is_none() {
            self.out.push(Message::Heartbeat { seq: 0, timestamp: epoch_ms() });
        }
        true
    }

    /// Writes what is queued (then the close frame, once closing) and
    /// flushes. Ready(Ok) when everything went out, Pending while the
    /// socket is full, Ready(Err) when it is broken.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        if !self.out.is_empty() {
            let batch = self.peer.hello().is_some_and(|h| h.has_feature(FEATURE_BATCH));
            if batch && self.out.len() > 1 {
                if Pin::new(&mut self.ws).poll_ready(cx)?.is_pending() {
                    return Poll::Pending;
                }
                let frame = to_ws(self.codec.batch_frame(&self.out));
                Pin::new(&mut self.ws).start_send(frame)?;
                self.out.clear();
            } else {
                let mut sent = 0;
                for m in &self.out {
                    if Pin::new(&mut self.ws).poll_ready(cx)?.is_pending() {
                        break;
                    }
                    Pin::new(&mut self.ws).start_send(to_ws(self.codec.frame(m)))?;
                    sent += 1;
                }
                self.out.drain(..sent);
            }
            self.needs_flush = true;
        }
        if self.out.is_empty() && !self.close_sent {
            if let Some((code, reason)) = self.closing.take() {
                if Pin::new(&mut self.ws).poll_ready(cx)?.is_pending() {
                    self.closing = Some((code, reason));
                    return Poll::Pending;
                }
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                Pin::new(&mut self.ws).start_send(WsMessage::Close(Some(frame)))?;
                self.close_sent = true;
                self.needs_flush = true;
            }
        }
        if self.needs_flush {
            if Pin::new(&mut self.ws).poll_flush(cx)?.is_pending() {
                return Poll::Pending;
            }
            self.needs_flush = false;
        }
        if self.out.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Decides to close after what is queued; reading stops.
    fn close(&mut self, code: u16, reason: &str) {
        if self.closing.is_none() && !self.close_sent {
            self.closing = Some((code, reason.into()));
        }
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
    fn on_frame(&mut self, frame: WsMessage, now: Instant) -> bool {
        let decoded = match &frame {
            WsMessage::Text(text) => Codec::decode_text(text.as_str()),
            WsMessage::Binary(bytes) => Codec::MsgPack.decode(bytes),
            WsMessage::Close(_) => return false,
            _ => return true, // ping/pong: liveness only (tungstenite answers pings)
        };
        for item in decoded {
            match item {
                Ok(message) => {
                    self.bad_in_a_row = 0;
                    self.on_message(message, now);
                }
                Err(e) => {
                    self.bad_in_a_row += 1;
                    self.on_rejected(e);
                    if self.bad_in_a_row >= self.node.config.max_bad_frames {
                        self.close(CLOSE_POLICY, "too many malformed frames in a row");
                        return true;
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
                let message =
                    format!("peer {} sent an invalid answer: {}", self.peer.remote, e.error.message);
                let result = PacketResult::error(id.clone(), ErrorCode::HandlerFailed, message, 0);
                self.peer.complete(e.seq, Some(id), result);
            }
        }
        // Never answer an answer with an error about itself: two nodes could
        // otherwise bounce error frames forever.
        if e.kind != Some(MessageKind::Error) {
            self.out.push(e.to_message());
        }
    }

    fn on_message(&mut self, message: Message, now: Instant) {
        if message.kind() != MessageKind::Hello && self.peer.note_frame_without_hello() {
            // A seed peer just showed itself: other peers may now route
            // what nobody announced through this node.
            self.node.announce_to_all();
        }
        match message {
            Message::Submit { seq, packet } => {
                let limit = self.node.config.max_inflight_per_conn;
                if self.running.len() + self.out.len() >= limit {
                    let message =
                        format!("this connection has {limit} packets in flight or unsent; retry later");
                    let result = PacketResult::error(packet.id, ErrorCode::Overloaded, message, 0);
                    self.out.push(Message::Result { seq, result });
                    return;
                }
                let deadline = now + Duration::from_millis(packet.timeout_ms());
                match self.node.reactor.submit_now(*packet, now, deadline) {
                    Ok(result) => self.out.push(Message::Result { seq, result }),
                    Err(packet) => {
                        let reactor = self.node.reactor.clone();
                        let origin = Some(Origin(self.peer.id));
                        self.running.push(Box::pin(async move {
                            (seq, reactor.submit_from(packet, now, deadline, origin).await)
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
