//! One WebSocket connection, driven by one task that owns the whole socket.
//!
//! The task reads frames, runs submits, and writes answers, all without a
//! hand-off to another task: answers produced while reading a burst of
//! frames go out together with one flush (or, to a peer that announced
//! `batch`, as one array frame), and nothing waits to fill a batch, so an
//! idle connection adds no latency. Answers of work that runs on (a
//! binding's handlers) go out as soon as [`WRITE_EARLY_AT`] wait, so that
//! a pipelining peer works on them while the rest of its burst runs here.
//! Frames from other tasks (forwarded submits, hellos) arrive through the
//! peer's outbox.
//!
//! Reading and writing are polled side by side, so a peer that stops
//! reading never stops this node from reading (two nodes writing to each
//! other with full buffers would otherwise deadlock). What bounds memory is
//! backpressure: while more answers wait to be written than the connection
//! may have in flight, the task stops reading, and TCP slows the peer down.
//!
//! An idle connection holds little: once nothing is in flight or waiting to
//! be written, its WebSocket parks (tungstenite's buffers are dropped, see
//! `link`), and the queues it filled while busy give their memory back.
//! Tables it needs only when busy (running submits, relayed packets) are
//! made at their first use.
//!
//! On a listener with auth, a connection is admitted once: at the upgrade
//! (a valid `Authorization: Bearer`) or by its first frame, which must then
//! be a `hello` with a valid token. Until then it is not in the peer table
//! (nothing is routed to it, nothing it sends is served). After that each
//! submit costs one check of the token's compiled submit patterns, skipped
//! for a token allowed `*`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::auth::{AuthTable, Grant};
use super::dashboard::recorder::Key;
use super::dashboard::{self, ServedBy};
use super::direct::LinkSide;
use super::forward::RelayOutcome;
use super::link::Link;
use super::liveness;
use super::mailbox::{mailbox, Inbox, Mailbox};
use super::node::NodeInner;
use super::peers::{Peer, RelayAnswer, Reply};
use super::rate_limit::RateLimit;
use super::relay_deadlines::RelayDeadlines;
use crate::error::{ErrorCode, PfError};
use crate::packet::PacketId;
use crate::reactor::{Immediate, Origin};
use crate::result::PacketResult;
use crate::wire::{
    Codec, Decoded, FrameError, Hello, Message, MessageKind, Outgoing, WireFrame, FEATURE_BATCH,
};

/// Close codes this node sends.
pub(crate) const CLOSE_AWAY: u16 = 1001;
pub(crate) const CLOSE_POLICY: u16 = 1008;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Most frames read back to back before the answers are written.
const READ_BURST: usize = 256;
/// Answers of running work written as soon as this many wait, rather
/// than at the end of the turn: a peer that sent a burst then works on the
/// first answers while this side computes the rest, instead of the two
/// taking turns.
const WRITE_EARLY_AT: usize = 32;
/// The most bytes one batch frame holds. Larger batches save no more
/// system calls worth having, and the peer reads none of a frame's
/// messages before all of it arrived.
const BATCH_BYTES: usize = 64 * 1024;
/// The frame limit of a peer that did not say its own (the protocol's).
const DEFAULT_PEER_FRAME_BYTES: u64 = 1 << 20;
/// Turns of [`Connection::poll`] (each reads up to [`READ_BURST`] frames and
/// writes what is ready) before it yields.
const POLL_TURNS: usize = 4;
/// How long a connection's WebSocket stays open after its last frame: a
/// peer that keeps talking keeps tungstenite's buffers (nothing is paid per
/// frame), one that falls silent gives them back (see `link`).
const PARK_AFTER: Duration = Duration::from_millis(50);
/// How long a stopping node waits for its work in flight to be answered.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What the dialer learns when the connection is ready (or refused).
pub(crate) type Ready = oneshot::Sender<Result<(), PfError>>;

/// A running local submit: its `seq`, the bytes charged for it, its key and
/// who serves it (for the dashboard), its result.
type Running =
    FuturesUnordered<futures::future::BoxFuture<'static, (u64, usize, Key, ServedBy, PacketResult)>>;

/// The auth check of a connection's upgrade: whether it is let in, or
/// must still show a token in its first frame.
pub(crate) enum AuthVerdict {
    /// No auth on this listener, or a connection this node dialed.
    Open,
    /// A valid token came with the upgrade.
    Granted(Arc<Grant>),
    /// Auth is on and no token came with the upgrade: the first frame must
    /// be a `hello` carrying one.
    AwaitHello(Arc<AuthTable>),
    /// The upgrade carried a token that is not valid: PF401, close 1008.
    Refused(&'static str),
}

/// How to run a connection.
pub(crate) struct Setup {
    pub(crate) codec: Codec,
    /// The remote address, or the URL dialed.
    pub(crate) remote: String,
    /// Send `hello` first (dialing a PacketFlow node).
    pub(crate) send_hello: bool,
    pub(crate) ready: Option<Ready>,
    pub(crate) verdict: AuthVerdict,
    /// Token to put in the first `hello`.
    pub(crate) token: Option<String>,
    /// How long the peer has to send `hello` before it is taken for a
    /// seed peer (zero: it is one, a dialed node that did not answer with
    /// the node header); `None` for a dialed PacketFlow node.
    pub(crate) seed_grace: Option<Duration>,
    /// This node's end of the connection, when it is a TCP socket.
    pub(crate) local: Option<std::net::SocketAddr>,
    /// The connection is TLS.
    pub(crate) secure: bool,
    /// Set for a direct link (see `direct`): which end this node is.
    pub(crate) link: Option<LinkSide>,
}

/// A connection over `ws`, to be run (polled as a future) until it ends:
/// it is ready once everything the peer held has been answered PF503.
///
/// The connection is the future itself, rather than an `async fn`'s state
/// around it, so that the task running it is no larger than what it holds.
pub(crate) fn start<S>(node: Arc<NodeInner>, ws: Link<S>, setup: Setup) -> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Setup { codec, remote, send_hello, ready, verdict, token, seed_grace, local, secure, link } = setup;
    let (outbox, outbox_rx) = mailbox();
    let mut peer = Peer::new(node.next_conn_id(), remote, codec, outbox);
    peer.set_link_facts(local, secure, link.is_some());
    let peer = Arc::new(peer);
    peer.set_hello_token(token);
    let (awaiting, refused) = match verdict {
        AuthVerdict::Open => (None, None),
        AuthVerdict::Granted(grant) => {
            peer.set_grant(grant);
            (None, None)
        }
        AuthVerdict::AwaitHello(table) => (Some(table), None),
        AuthVerdict::Refused(why) => (None, Some(why)),
    };
    // A node we dial that speaks hello becomes a route with its hello, not
    // before: until then it would look like a seed peer (a default route),
    // and a dial it refuses must leave no route behind.
    let listed_on_hello = awaiting.is_none() && refused.is_none() && send_hello;
    let listed_now = awaiting.is_none() && refused.is_none() && !send_hello;
    if listed_now {
        node.peers.write().insert(peer.clone());
    }
    // A PacketFlow dialer sends hello first: a peer that has not by the end
    // of the grace period is a seed peer, whose reactor may send nothing
    // for a while (the seed's first heartbeat comes after 30 s). Other
    // peers are then told of the default route through this node without
    // waiting for its first frame. (A connection still to show its token
    // is not a peer yet; its token comes in a hello.)
    let mut seed_deadline = None;
    match seed_grace.filter(|_| listed_now) {
        Some(grace) if !grace.is_zero() => seed_deadline = Some(Box::pin(tokio::time::sleep(grace))),
        Some(_) if peer.note_seed() => node.announce_to_all(),
        _ => {}
    }
    if send_hello {
        // Dialing a PacketFlow node: announce ourselves first; it answers
        // with its own hello (seed peers are never sent one).
        node.announce_to(&peer, true);
    }
    let interval = node.config.heartbeat_interval;
    peer.liveness.set_interval(interval);
    peer.liveness.heard(Instant::now());
    let stopping_node = node.clone();
    let submit_rules = peer.grant().filter(|g| g.submit.is_some()).cloned();
    let bars_mc = peer.grant().is_some_and(|g| !g.may_reach_mc());
    let rate = node
        .config
        .max_submits_per_sec
        .filter(|r| *r > 0)
        .map(|r| Box::new(RateLimit::new(r, Instant::now())));
    let awaiting = awaiting.map(|table| {
        Box::new(Awaiting { table, deadline: Box::pin(tokio::time::sleep(node.config.handshake_timeout)) })
    });
    let mut conn = Connection {
        node,
        peer,
        ws,
        codec,
        outbox: outbox_rx,
        running: None,
        out: Vec::new(),
        needs_flush: false,
        closing: None,
        close_sent: false,
        close_deadline: None,
        ready: ready.map(Box::new),
        bad_in_a_row: 0,
        heartbeat: heartbeat_ticker(interval),
        busy_noted: false,
        silent_ticks: 0,
        stalled_since: None,
        stopping: Box::pin(async move { stopping_node.stopping().await }),
        stop_grace: None,
        awaiting,
        submit_rules,
        bars_mc,
        rate,
        charged: 0,
        listed_on_hello,
        relay: None,
        hello_seen: false,
        seed_deadline,
        last_frame: Instant::now(),
        quiet: None,
        finished: false,
        late_cancels: None,
        link: link.map(Box::new),
    };
    if let Some(why) = refused {
        conn.refuse(0, None, why);
    }
    conn
}

/// Beats every `period`, the first beat one period from now.
fn heartbeat_ticker(period: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + period, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// A running connection (see [`start`]).
pub(crate) struct Connection<S> {
    node: Arc<NodeInner>,
    peer: Arc<Peer>,
    ws: Link<S>,
    codec: Codec,
    outbox: Inbox<Outgoing>,
    /// Local submits still running (the ones that did not finish at once);
    /// made at the first, dropped when the connection goes idle.
    running: Option<Box<Running>>,
    /// Messages to write, in order.
    out: Vec<Outgoing>,
    /// Frames were handed to the socket and not flushed yet.
    needs_flush: bool,
    /// Set once this side decided to close: the code and reason to send
    /// after `out` is written.
    closing: Option<Box<(u16, String)>>,
    close_sent: bool,
    /// Set once this side decided to close: past it the socket is dropped
    /// even if the close frame (or what was queued before it) could not be
    /// written, so a peer that stopped reading cannot hold the connection
    /// and its buffers forever.
    close_deadline: Option<Pin<Box<Sleep>>>,
    /// Boxed, as the other fields of a connection's first moments or of
    /// rare events: an idle connection's task stays small.
    ready: Option<Box<Ready>>,
    bad_in_a_row: u32,
    /// Sends heartbeats and, on the same beat, checks the peer's liveness.
    heartbeat: Interval,
    /// This read burst already told the busy-poller that work arrived.
    busy_noted: bool,
    silent_ticks: u32,
    /// Since when reading is paused because the peer does not read.
    stalled_since: Option<Instant>,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set when the node stops: work in flight gets this long to answer.
    stop_grace: Option<Pin<Box<Sleep>>>,
    /// Set until a connection to a listener with auth shows a valid token.
    awaiting: Option<Box<Awaiting>>,
    /// A dialed node that speaks hello: it enters the peer table with its
    /// first hello.
    listed_on_hello: bool,
    /// The token's grant when it restricts submits (`None`: anything goes,
    /// and the check is skipped).
    submit_rules: Option<Arc<Grant>>,
    /// The token does not grant `mc:*`: each submit is marked so that
    /// the calls made on its behalf cannot reach `mc:*` (`pf.no_mc`).
    bars_mc: bool,
    rate: Option<Box<RateLimit>>,
    /// Bytes of this connection's running submits counted in the node's
    /// queued bytes (returned as they finish, or when the connection ends).
    charged: usize,
    /// The packets relayed for this connection and not answered yet;
    /// made at the first, dropped when the connection goes idle.
    relay: Option<Box<Relaying>>,
    /// The peer sent a `hello` (it is a node, never a seed peer).
    hello_seen: bool,
    /// When a peer that has sent nothing is taken for a seed peer (unset
    /// once it sent a frame, or when it cannot be one).
    seed_deadline: Option<Pin<Box<Sleep>>>,
    /// When the last frame was read (see [`PARK_AFTER`]).
    last_frame: Instant,
    /// Set while the WebSocket is open and idle: when to look again whether
    /// it may park.
    quiet: Option<Pin<Box<Sleep>>>,
    /// The connection ended and its peer was let go.
    finished: bool,
    /// Cancels that found nothing in flight from this connection while the
    /// submit they withdraw may still be about to start (read in the same
    /// burst, its future not yet polled): tried again once after the
    /// running submits are polled.
    #[allow(clippy::box_collection)] // 8 bytes in the connection, not 24
    late_cancels: Option<Box<Vec<PacketId>>>,
    /// Set for a direct link: which end this node is.
    link: Option<Box<LinkSide>>,
}

/// A connection to a listener with auth that has not shown a valid token.
struct Awaiting {
    table: Arc<AuthTable>,
    /// When it is refused for saying nothing.
    deadline: Pin<Box<Sleep>>,
}

/// The packets a connection relayed to peers: the way back for their
/// answers (the mailbox given to those peers, and the connection's side)
/// and their deadlines.
struct Relaying {
    to: Mailbox<RelayAnswer>,
    inbox: Inbox<RelayAnswer>,
    /// Answers being handled (kept to reuse its memory while busy).
    scratch: Vec<RelayAnswer>,
    deadlines: RelayDeadlines,
}

impl Relaying {
    fn new() -> Box<Relaying> {
        let (to, inbox) = mailbox();
        Box::new(Relaying { to, inbox, scratch: Vec::new(), deadlines: RelayDeadlines::default() })
    }
}

impl<S> Connection<S> {
    /// The connection's peer.
    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// Gives back the bytes still charged to the node's queued bytes, and
    /// lets go of the packets relayed for it and not answered: nobody waits
    /// for them any more (see `Peer::orphan`).
    fn let_go(&mut self) {
        if self.charged > 0 {
            self.node.queued_bytes.fetch_sub(self.charged, std::sync::atomic::Ordering::Relaxed);
            self.charged = 0;
        }
        if let Some(relay) = self.relay.take() {
            let withdrawn = relay.deadlines.orphan_all();
            for _ in 0..withdrawn {
                self.node.reactor.count_forward_cancelled();
            }
        }
    }
}

impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        self.let_go();
    }
}

/// A connection with what it keeps until it ends (its place among the
/// node's connections, say), as one future.
pub(crate) struct Holding<S, G> {
    conn: Connection<S>,
    _kept: G,
}

impl<S> Connection<S> {
    /// This connection, keeping `kept` until it ends.
    pub(crate) fn keeping<G>(self, kept: G) -> Holding<S, G> {
        Holding { conn: self, _kept: kept }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, G: Unpin> Future for Holding<S, G> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.conn).poll(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Connection<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let conn = self.get_mut();
        if conn.finished {
            return Poll::Ready(());
        }
        if conn.drive(cx).is_pending() {
            return Poll::Pending;
        }
        conn.finish();
        Poll::Ready(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The connection is over: the socket closes, and everything the peer
    /// held is answered PF503.
    fn finish(&mut self) {
        self.finished = true;
        self.ws.close();
        self.let_go();
        let (node, peer) = (&self.node, &self.peer);
        // What the peer held ends with its connection.
        node.holds.closed(peer.id, &node.reactor);
        if peer.is_direct_link() {
            // Out of use before its packets are answered PF503: one sent
            // again at once goes through the hub.
            node.direct.link_gone(peer);
        }
        let removed = node.peers.write().remove(peer.id);
        let why = format!("peer {} went away", peer.remote);
        peer.fail_all(|packet_id| PacketResult::error(packet_id, ErrorCode::Unavailable, why.clone(), 0));
        match removed {
            Some(p) if p.hello().is_some() => {
                node.routes_changed();
                node.announce_to_all();
            }
            // A seed peer leaving may withdraw this node's default route,
            // and the keys served on NATS for it.
            Some(p) if p.is_proven_seed() => {
                node.announce_to_all();
                if p.serves_some_key() {
                    node.bridged_keys_changed();
                }
            }
            Some(p) if p.serves_some_key() => node.bridged_keys_changed(),
            _ => {}
        }
    }

    /// Drives the connection; ready when it is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..POLL_TURNS {
            let mut progress = false;
            if self.closing.is_none() {
                progress |= self.poll_stop(cx);
            }
            progress |= self.poll_running(cx);
            if self.late_cancels.is_some() {
                self.retry_cancels();
                progress = true;
            }
            progress |= self.poll_relayed(cx);
            progress |= self.poll_outbox(cx);
            if self.closing.is_none() && self.stop_grace.is_none() {
                match self.poll_read(cx) {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            progress |= self.poll_timers(cx);
            if self.awaiting.is_some() {
                progress |= self.poll_auth_deadline(cx);
            }
            if self.seed_deadline.is_some() {
                progress |= self.poll_seed_deadline(cx);
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) if self.close_sent => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                _ => {}
            }
            if self.close_deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(());
            }
            if !progress {
                if !self.try_park(cx) {
                    return Poll::Pending;
                }
                self.release_idle_memory();
                // Parked: the socket itself must now wake this task.
                match self.poll_read(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        // Still busy: let others run first (an executor outside Tokio has no
        // budget of its own to stop a flood of frames).
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Parks the WebSocket if the connection is idle and its last frame
    /// came [`PARK_AFTER`] ago (else a timer looks again then); true when
    /// it did.
    fn try_park(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ws.may_park() || !self.is_idle() {
            return false;
        }
        let due = self.last_frame + PARK_AFTER;
        match &mut self.quiet {
            Some(timer) => {
                if timer.as_mut().poll(cx).is_pending() {
                    return false; // armed: it wakes this task when it fires
                }
                if timer.deadline() < due {
                    // Frames came since it was set: look again later.
                    timer.as_mut().reset(due);
                    let _ = timer.as_mut().poll(cx);
                    return false;
                }
            }
            None if Instant::now() < due => {
                let mut timer = Box::pin(tokio::time::sleep_until(due));
                let _ = timer.as_mut().poll(cx);
                self.quiet = Some(timer);
                return false;
            }
            None => {}
        }
        if !self.ws.park(cx) {
            return false;
        }
        self.quiet = None;
        true
    }

    /// Nothing in flight, nothing to write, nothing read and not handled:
    /// the WebSocket may park.
    fn is_idle(&self) -> bool {
        self.closing.is_none()
            && !self.close_sent
            && self.stop_grace.is_none()
            && self.stalled_since.is_none()
            && self.out.is_empty()
            && !self.needs_flush
            && self.running.as_ref().is_none_or(|r| r.is_empty())
            && self.relayed_open() == 0
    }

    /// Relayed packets not answered yet.
    fn relayed_open(&self) -> usize {
        self.relay.as_ref().map_or(0, |r| r.deadlines.open())
    }

    /// Gives back what the connection held only while busy (relayed
    /// packets' entries included: with none unanswered, all are stale).
    fn release_idle_memory(&mut self) {
        self.out = Vec::new();
        self.outbox.release_memory();
        self.running = None;
        self.relay = None;
        self.peer.release_idle_memory();
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
        let none_running = self.running.as_ref().is_none_or(|r| r.is_empty());
        if (none_running && self.relayed_open() == 0) || grace_over {
            self.close(CLOSE_AWAY, "node stopping");
            return true;
        }
        false
    }

    fn poll_running(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        // Nothing to poll when none runs (polling would only register the
        // waker again); a future pushed later is polled on the next turn of
        // the loop.
        while let Some(running) = self.running.as_mut().filter(|r| !r.is_empty()) {
            let Poll::Ready(Some((seq, size, key, served_by, result))) =
                Pin::new(&mut **running).poll_next(cx)
            else {
                break;
            };
            self.release(size);
            self.answer(seq, &key, served_by, result);
            progress = true;
            if self.out.len() >= WRITE_EARLY_AT {
                // The peer starts on these while the rest run here. A
                // write error is seen again by the turn's own write.
                let _ = self.poll_write(cx);
            }
        }
        progress
    }

    /// Answers of relayed packets, and the ones whose deadline passed.
    fn poll_relayed(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let Some(relay) = self.relay.as_mut() else { return false };
        let mut answers = std::mem::take(&mut relay.scratch);
        let arrived = relay.inbox.poll_drain(cx, &mut answers).is_ready();
        let expired = relay.deadlines.expired(cx);
        if arrived {
            progress = true;
            relay.deadlines.answered(answers.len());
            for RelayAnswer { seq, size, result, start, key, served_by } in answers.drain(..) {
                self.release(size);
                let micros = start.elapsed().as_micros() as u64;
                self.node.dashboard.recorder.routed(&key, micros, !result.is_success());
                self.answer(seq, &key, ServedBy::Peer(served_by), result);
            }
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.scratch = answers;
        }
        for expiry in expired {
            progress = true;
            // Still pending: the peer did not answer in time. (Otherwise its
            // answer is on its way through the relay channel.)
            let Some((packet_id, Reply::Relay(return_address))) = expiry.peer.abandon_submit(expiry.seq)
            else {
                continue;
            };
            // Past its deadline, it is not left running on the peer.
            expiry.peer.send_cancel(expiry.seq, &packet_id);
            if let Some(relay) = self.relay.as_mut() {
                relay.deadlines.answered(1);
            }
            self.release(return_address.size);
            self.node.deadline_passed(&expiry.peer, return_address.start);
            let message = format!("no answer from peer {} before the deadline", expiry.peer.remote);
            let elapsed = return_address.start.elapsed();
            let result =
                PacketResult::error(packet_id, ErrorCode::Timeout, message, elapsed.as_millis() as u64);
            let key = &return_address.key;
            self.node.dashboard.recorder.routed(key, elapsed.as_micros() as u64, true);
            self.answer(return_address.seq, key, ServedBy::Peer(return_address.served_by), result);
        }
        progress
    }

    /// A connection that never showed a token is refused once the
    /// handshake time is over.
    fn poll_auth_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let fired = self.awaiting.as_mut().is_some_and(|a| a.deadline.as_mut().poll(cx).is_ready());
        if fired {
            self.awaiting = None;
            let ms = self.node.config.handshake_timeout.as_millis();
            self.refuse(0, None, &format!("no token was presented within {ms} ms"));
        }
        fired
    }

    /// A peer that sent nothing, not even `hello`, within the grace period
    /// is a seed peer: other peers may now route through this node what
    /// nobody announced.
    fn poll_seed_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let fired = self.seed_deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if fired {
            self.seed_deadline = None;
            if !self.hello_seen && self.peer.note_seed() {
                self.node.announce_to_all();
            }
        }
        fired
    }

    /// Answers PF401 and closes with 1008 (PROTOCOL.md: missing or wrong
    /// credentials). The message never contains the token.
    fn refuse(&mut self, seq: u64, packet_id: Option<PacketId>, why: &str) {
        self.awaiting = None;
        let error = PfError::new(ErrorCode::Unauthorized, why);
        self.queue(Message::Error { seq, error, packet_id });
        self.close(CLOSE_POLICY, "PF401 unauthorized");
    }

    /// Counts `size` bytes against the node's queued-bytes limit; false
    /// (nothing counted) when that would pass the limit.
    fn charge(&mut self, size: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let limit = self.node.config.max_queued_bytes;
        let total = self.node.queued_bytes.fetch_add(size, Relaxed) + size;
        if total > limit {
            self.node.queued_bytes.fetch_sub(size, Relaxed);
            return false;
        }
        self.charged += size;
        true
    }

    fn release(&mut self, size: usize) {
        if size > 0 {
            self.charged -= size;
            self.node.queued_bytes.fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Answers the peer's submit `seq`, recorded for the dashboard: an
    /// answer hop (within the hop budget) and, when it failed, the failure.
    fn answer(&mut self, seq: u64, key: &Key, served_by: ServedBy, result: PacketResult) {
        self.node.holds.note_answer(self.peer.id, seq, key, &result);
        let recorder = &self.node.dashboard.recorder;
        recorder.answered(key, &result.packet_id, &result.outcome, result.duration_ms, served_by);
        if let Err(e) = &result.outcome {
            let from = || dashboard::peer_label(&self.peer);
            let served = || {
                dashboard::recorder::served_by(served_by, &|id| dashboard::connection_name(&self.node, id))
            };
            recorder.failed(key, &result.packet_id, e, result.duration_ms, from, served);
        }
        self.queue(Message::Result { seq, result });
    }

    /// Queues `message` for writing.
    fn queue(&mut self, message: Message) {
        self.out.push(Outgoing::Message(message));
    }

    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> bool {
        let drained = self.outbox.poll_drain(cx, &mut self.out).is_ready();
        // A close asked by another task comes with a frame that wakes us.
        if drained && self.closing.is_none() && !self.close_sent && self.peer.close_asked() {
            self.close(CLOSE_AWAY, "link closed");
        }
        drained
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
        self.busy_noted = false;
        for _ in 0..READ_BURST {
            match self.ws.poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if !read_any && self.peer.liveness.heard(now) {
                        // Suspect no more: its keys may come back to it.
                        self.node.routes_changed();
                    }
                    read_any = true;
                    self.last_frame = now;
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
        // While reading is paused (the peer does not read our answers),
        // its frames wait unread: silence then proves nothing.
        if self.stalled_since.is_none() && self.closing.is_none() {
            self.silent_ticks += 1;
        }
        if self.silent_ticks >= 3 && self.closing.is_none() {
            self.node.declare_dead(&self.peer);
            self.close(CLOSE_AWAY, "no frame for 3 heartbeat intervals");
        } else if self.closing.is_none() {
            self.queue(Message::Heartbeat { seq: 0, timestamp: epoch_ms() });
        }
        true
    }

    /// Writes what is queued (then the close frame, once closing) and
    /// flushes. Ready(Ok) when everything went out, Pending while the
    /// socket is full, Ready(Err) when it is broken.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        if !self.out.is_empty() {
            let batch_cap =
                self.peer.hello().and_then(|h| h.has_feature(FEATURE_BATCH).then(|| batch_cap(&h)));
            let mut sent = 0;
            while sent < self.out.len() {
                if self.ws.poll_ready(cx)?.is_pending() {
                    break;
                }
                let rest = &self.out[sent..];
                let (frame, taken) = match batch_cap {
                    Some(cap) if rest.len() > 1 => self.codec.batch_frame_outgoing(rest, cap),
                    _ => (self.codec.frame_outgoing(&rest[0]), 1),
                };
                self.ws.start_send(cx, to_ws(frame))?;
                sent += taken;
            }
            self.out.drain(..sent);
            self.needs_flush = true;
        }
        if self.out.is_empty() && !self.close_sent {
            if let Some(closing) = self.closing.take() {
                let (code, reason) = *closing;
                if self.ws.poll_ready(cx)?.is_pending() {
                    self.closing = Some(Box::new((code, reason)));
                    return Poll::Pending;
                }
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                self.ws.start_send(cx, WsMessage::Close(Some(frame)))?;
                self.close_sent = true;
                self.needs_flush = true;
            }
        }
        if self.needs_flush {
            if self.ws.poll_flush(cx)?.is_pending() {
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
            self.closing = Some(Box::new((code, reason.into())));
        }
        if self.close_deadline.is_none() {
            let grace = self.node.config.handshake_timeout;
            self.close_deadline = Some(Box::pin(tokio::time::sleep(grace)));
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
        let (decoded, len) = match &frame {
            WsMessage::Text(text) => (Codec::decode_text(text.as_str()), text.len()),
            WsMessage::Binary(bytes) => (Codec::MsgPack.decode(bytes), bytes.len()),
            WsMessage::Close(_) => return false,
            _ => return true, // ping/pong: liveness only (tungstenite answers pings)
        };
        // Each message of a batch is counted its share of the frame.
        let size = match &decoded {
            Decoded::Single(_) => len,
            Decoded::Batch(all) => len / all.len().max(1),
        };
        for item in decoded {
            match item {
                Ok(message) => {
                    self.bad_in_a_row = 0;
                    self.on_message(message, now, size);
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
            self.queue(e.to_message());
        }
    }

    fn on_message(&mut self, message: Message, now: Instant, size: usize) {
        if self.closing.is_some() {
            // Refused or closing: what follows in the burst is not served.
            return;
        }
        // Work arrived: keep polling for more (a heartbeat is not work, and
        // must not set an idle node spinning once a second).
        if !self.busy_noted && !matches!(message, Message::Heartbeat { .. }) {
            self.busy_noted = true;
            if let Some(busy) = &self.node.busy_poll {
                busy.frames_arrived();
            }
        }
        if self.awaiting.is_some() && !self.admit(&message) {
            return;
        }
        // A peer that sent hello is not a seed peer: no need to ask again.
        if message.kind() == MessageKind::Hello {
            self.hello_seen = true;
            self.seed_deadline = None;
        } else if !self.hello_seen && self.peer.note_seed() {
            // A seed peer just showed itself: other peers may now route
            // what nobody announced through this node.
            self.seed_deadline = None;
            self.node.announce_to_all();
        }
        match message {
            Message::Submit { seq, packet } => {
                self.node.dashboard.recorder.arrived(&packet, self.peer.id, now);
                // Copied now: the packet is gone by the time it is answered.
                let key = (packet.group, packet.element.clone());
                // PROTOCOL.md: PF403 when the token may not submit the key.
                // Checked where the submit entered this node; a hub then
                // forwards it like any other packet.
                if let Some(grant) = &self.submit_rules {
                    if !grant.may_submit(packet.group, packet.element.as_str()) {
                        let message = format!(
                            "token {:?} may not submit {}:{}",
                            grant.name,
                            packet.group,
                            packet.element.as_str()
                        );
                        let result = PacketResult::error(packet.id, ErrorCode::Forbidden, message, 0);
                        self.answer(seq, &key, ServedBy::ThisNode, result);
                        return;
                    }
                }
                if let Some(rate) = &mut self.rate {
                    if !rate.allow(now) {
                        let per_sec = rate.per_sec();
                        let message =
                            format!("rate limit: this connection may submit {per_sec} packets per second");
                        let result = PacketResult::error(packet.id, ErrorCode::Overloaded, message, 0);
                        self.answer(seq, &key, ServedBy::ThisNode, result);
                        return;
                    }
                }
                let limit = self.node.config.max_inflight_per_conn;
                let running = self.running.as_ref().map_or(0, |r| r.len());
                if running + self.relayed_open() + self.out.len() >= limit {
                    let message =
                        format!("this connection has {limit} packets in flight or unsent; retry later");
                    let result = PacketResult::error(packet.id, ErrorCode::Overloaded, message, 0);
                    self.answer(seq, &key, ServedBy::ThisNode, result);
                    return;
                }
                if !self.peer.is_direct_link() {
                    // A lock or lease granted to it ends with this connection.
                    self.node.holds.note_submit(self.peer.id, seq, &packet);
                }
                let deadline = now + Duration::from_millis(self.node.reactor.timeout_of(&packet));
                let origin = Origin(self.peer.id);
                // A token without mc:*: what this node runs for the packet
                // is told so; a packet that may go on (to a peer, an actor,
                // a queue) carries the mark (docs/protocol.md, "Authentication").
                let bar_mc = self.bars_mc;
                let (mut packet, elsewhere, route) =
                    match self.node.reactor.try_submit(packet, now, deadline, Some(origin), bar_mc) {
                        Immediate::Done(result) => {
                            self.answer(seq, &key, ServedBy::ThisNode, result);
                            return;
                        }
                        Immediate::Elsewhere(packet) => (packet, true, None),
                        Immediate::Routed(packet, route) => (packet, false, Some(route)),
                        Immediate::Later(packet) => (packet, false, None),
                    };
                if bar_mc && route.is_none() {
                    packet.bar_mc();
                }
                // Held until answered (running here or forwarded):
                // counted against the node's queued bytes.
                if !self.charge(size) {
                    let limit = self.node.config.max_queued_bytes;
                    let message = format!(
                        "this node holds its limit of {limit} bytes of packets in flight; retry later"
                    );
                    let result = PacketResult::error(packet.id, ErrorCode::Overloaded, message, 0);
                    self.answer(seq, &key, ServedBy::ThisNode, result);
                    return;
                }
                let packet = if elsewhere {
                    let relay = self.relay.get_or_insert_with(Relaying::new);
                    match self.node.relay(packet, deadline, origin, seq, size, &relay.to) {
                        RelayOutcome::Sent { peer, seq } => {
                            relay.deadlines.push(deadline, peer, seq);
                            return;
                        }
                        RelayOutcome::Answered(result) => {
                            self.release(size);
                            self.answer(seq, &key, ServedBy::ThisNode, result);
                            return;
                        }
                        RelayOutcome::Declined(packet) => packet,
                    }
                } else {
                    packet
                };
                let reactor = self.node.reactor.clone();
                // A packet with no local handler goes where the reactor's
                // router sends it (a seed peer, a default route).
                let served_by = if elsewhere { ServedBy::DefaultRoute } else { ServedBy::ThisNode };
                self.running.get_or_insert_with(|| Box::new(FuturesUnordered::new())).push(Box::pin(
                    async move {
                        let result = match route {
                            Some(route) => {
                                reactor.run_routed(*packet, &route, now, deadline, Some(origin), bar_mc).await
                            }
                            None => reactor.submit_waiting(*packet, now, deadline, Some(origin)).await,
                        };
                        (seq, size, key, served_by, result)
                    },
                ));
            }
            Message::Result { seq, result } => {
                self.peer.complete_result(seq, result);
            }
            Message::Error { seq, error, packet_id } => self.on_error_frame(seq, error, packet_id),
            Message::Hello { seq, mut hello } => {
                self.check_serve(seq, &mut hello);
                self.agree_heartbeat(hello.heartbeat_ms);
                let first = self.peer.hello().is_none();
                {
                    let mut peers = self.node.peers.write();
                    if std::mem::take(&mut self.listed_on_hello) {
                        peers.insert(self.peer.clone());
                    }
                    peers.set_hello(self.peer.id, *hello);
                }
                if let Some(side) = &self.link {
                    if let Err(why) = self.node.direct.link_hello(&self.peer, side) {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(PfError::new(ErrorCode::Unavailable, why)));
                        }
                        self.close(CLOSE_POLICY, "direct link refused");
                        return;
                    }
                }
                self.node.routes_changed();
                // Answer a peer's first hello with ours, then tell every
                // other peer about the routes this one brings.
                self.node.announce_to(&self.peer, first);
                self.node.announce_to_all();
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            Message::Heartbeat { .. } => {}
            Message::Cancel { packet_id, .. } => {
                // Only what this connection submitted; a cancel that finds
                // nothing (answered already, or never sent) is ignored.
                if !self.node.reactor.cancel_from(&packet_id, Origin(self.peer.id)) {
                    self.late_cancels.get_or_insert_with(Box::default).push(packet_id);
                }
            }
        }
    }

    /// Tries again the cancels of [`late_cancels`](Self::late_cancels),
    /// once: the submits read before them have begun by now.
    fn retry_cancels(&mut self) {
        for packet_id in self.late_cancels.take().into_iter().flat_map(|ids| *ids) {
            self.node.reactor.cancel_from(&packet_id, Origin(self.peer.id));
        }
    }

    /// Beats at the interval this node and the peer agree on (the larger
    /// of their offers), when both offer one; else the seed's rule stays.
    fn agree_heartbeat(&mut self, offered_ms: u64) {
        let ours = self.node.config.peer_heartbeat_interval;
        let Some(interval) = liveness::agreed_interval(ours, offered_ms) else { return };
        if interval != self.peer.liveness.interval() {
            self.peer.liveness.set_interval(interval);
            self.heartbeat = heartbeat_ticker(interval);
            self.silent_ticks = 0;
        }
    }

    /// Lets the connection in if `message` is a `hello` with a valid
    /// token; refuses it otherwise. True when admitted.
    fn admit(&mut self, message: &Message) -> bool {
        let Some(Awaiting { table, .. }) = self.awaiting.take().map(|a| *a) else { return true };
        let why = match message {
            Message::Hello { hello, .. } => match hello.token.as_deref().map(|t| table.check(t)) {
                Some(Some(grant)) => {
                    if grant.submit.is_some() {
                        self.submit_rules = Some(grant.clone());
                    }
                    self.bars_mc = !grant.may_reach_mc();
                    self.peer.set_grant(grant);
                    self.node.peers.write().insert(self.peer.clone());
                    return true;
                }
                Some(None) => "the token presented is not valid",
                None => "this node requires a token: none was presented (hello.token or Authorization: Bearer)",
            },
            _ => "this node requires a token: the first frame must be a hello with a token, or the upgrade must carry Authorization: Bearer",
        };
        let (seq, packet_id) = match message {
            Message::Submit { seq, packet } => (*seq, Some(packet.id.clone())),
            other => (other.seq(), None),
        };
        self.refuse(seq, packet_id, why);
        false
    }

    /// Drops from `hello` the keys the peer's token may not serve and
    /// answers them PF403, naming them (the rest of the hello stands).
    fn check_serve(&mut self, seq: u64, hello: &mut crate::wire::Hello) {
        let Some(grant) = self.peer.grant().filter(|g| g.serve.is_some()).cloned() else { return };
        let mut denied = Vec::new();
        hello.handlers.retain(|(group, element)| {
            let allowed = grant.may_serve(*group, element.as_str());
            if !allowed {
                denied.push(format!("{group}:{}", element.as_str()));
            }
            allowed
        });
        if denied.is_empty() {
            return;
        }
        const SHOWN: usize = 20;
        let mut keys = denied.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if denied.len() > SHOWN {
            keys.push_str(&format!(" and {} more", denied.len() - SHOWN));
        }
        let message =
            format!("token {:?} may not serve {keys}; those handlers are not announced", grant.name);
        self.queue(Message::Error {
            seq,
            error: PfError::new(ErrorCode::Forbidden, message),
            packet_id: None,
        });
    }

    fn on_error_frame(&mut self, seq: u64, error: PfError, packet_id: Option<PacketId>) {
        // A node refusing our token: the dial fails with its PF401.
        if error.is(ErrorCode::Unauthorized) {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(error.clone()));
                // The dial failed: this side ends the connection too.
                self.close(CLOSE_POLICY, "refused by the peer");
            }
        }
        let id = packet_id.or_else(|| self.peer.pending_id(seq));
        if let Some(id) = id {
            let result = PacketResult::failure(id.clone(), error, 0);
            self.peer.complete(seq, Some(&id), result);
        }
    }
}

/// The most bytes a batch frame to the peer of `hello` may hold: within
/// its frame limit (as its `hello` says, else the protocol's default).
fn batch_cap(hello: &Hello) -> usize {
    let limit = if hello.max_frame_bytes > 0 { hello.max_frame_bytes } else { DEFAULT_PEER_FRAME_BYTES };
    BATCH_BYTES.min(usize::try_from(limit).unwrap_or(usize::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection is one Tokio task: a cell aligned to 128 bytes that
    /// holds 88 bytes of Tokio's besides the future and its state. A
    /// connection of at most 408 bytes (with what it keeps) takes 512;
    /// one byte more takes 640, a quarter more per idle connection
    /// (`cli/tests/idle_connections.rs`). Fields a connection rarely
    /// needs are boxed to stay within it.
    #[test]
    fn an_accepted_connection_fits_a_task_of_512_bytes() {
        use super::super::{http::Replay, listener::Slot, node::LiveConnection, socket::Socket};
        type Accepted = Holding<Replay<Socket>, (LiveConnection, Slot)>;
        let size = std::mem::size_of::<Accepted>();
        assert!(size <= 408, "an accepted connection takes {size} bytes");
    }
}
