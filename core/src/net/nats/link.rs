//! A node's connection to NATS ([`NatsLink`]): the service and its
//! endpoints (one per handler key, kept in step with the reactor, and one
//! per key its WebSocket peers serve that it bridges), the requests this
//! node sends and their cancels, and what `/health` shows of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_nats::connection::State;
use async_nats::service::endpoint;
use async_nats::{Client, Event, RequestErrorKind, Subscriber};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::service::{self, Registry};
use super::{headers, subject, QUEUE_GROUP};
use crate::error::{ErrorCode, PfError};
use crate::net::node::NodeInner;
use crate::packet::{Element, Group, Packet, PacketId, MAX_TIMEOUT_MS, META_HOPS};
use crate::reactor::{Immediate, Origin, Reactor};
use crate::result::PacketResult;
use crate::wire::{Codec, Decoded, Message};

/// How often the round trip to the server is measured for `/health`.
const RTT_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on draining the connection when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How the message of a PF001 for no responders ends: nobody subscribes
/// the subject (for a member's subject: the member left).
pub(crate) const NO_RESPONDERS: &str = "(no responders)";

/// What the client's event callback reports, as the requests and
/// `/health` need it.
#[derive(Default)]
pub(crate) struct Events {
    /// Bumped at every loss of the connection: requests in flight then are
    /// answered PF503 at once (their answers cannot come any more).
    losses: watch::Sender<u64>,
    /// The last event, for `/health`.
    last: Mutex<Option<String>>,
    /// Connections made after a loss.
    reconnects: AtomicU64,
}

impl Events {
    pub(crate) fn record(&self, event: Event) {
        match event {
            Event::Disconnected | Event::Closed => self.losses.send_modify(|n| *n += 1),
            Event::Connected => {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        *self.last.lock() = Some(event.to_string());
    }
}

/// Requests and answers, for `/health`.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    no_responders: AtomicU64,
    timed_out: AtomicU64,
    lost: AtomicU64,
    too_large: AtomicU64,
    served: AtomicU64,
    /// Cancels published for requests this node stopped waiting for.
    cancels_sent: AtomicU64,
    /// Cancels heard that stopped a request this node served.
    cancels_applied: AtomicU64,
}

/// A key's endpoint: its task serves it until `stop` is cancelled.
struct Served {
    subject: String,
    stop: CancellationToken,
}

/// The node's connection to NATS.
pub(crate) struct NatsLink {
    pub(super) client: Client,
    pub(super) namespace: String,
    /// The subjects of the keys this node asks, built once each.
    key_subjects: subject::KeySubjects,
    /// The connection number of NATS among the node's connections: a
    /// packet that came from NATS is never sent back there.
    pub(crate) origin: Origin,
    events: Arc<Events>,
    reactor: Reactor,
    /// The node, for the keys its peers serve (bridged on NATS).
    node: Weak<NodeInner>,
    /// Woken when those keys may have changed in a way no watch shows (a
    /// seed peer served a new key, or left).
    keys_changed: Arc<tokio::sync::Notify>,
    max_hops: u64,
    /// Where this node publishes the cancels of its requests
    /// (`<namespace>.cancel.<node id>`), sent with each one.
    cancel_subject: String,
    /// Requests being served here that their requester may cancel: the
    /// packet id and the cancel subject its request named.
    cancellable: Mutex<HashMap<PacketId, String>>,
    /// The ADR-32 service's endpoints and counters.
    registry: Arc<Registry>,
    /// The keys served, each an endpoint; the lock serialises syncs.
    endpoints: tokio::sync::Mutex<HashMap<(Group, Element), Served>>,
    served_keys: AtomicUsize,
    /// Of `served_keys`, those served for peers, not by the reactor.
    bridged_keys: AtomicUsize,
    rtt_us: AtomicU64,
    /// The server's `max_payload`, read again after each reconnect (the
    /// server's info is a copy under a lock: too dear for every packet).
    max_payload: AtomicUsize,
    /// `events.reconnects` when `max_payload` was read.
    max_payload_of: AtomicU64,
    counters: Counters,
    pub(super) closed: CancellationToken,
    /// The members of the cluster, when the node joined with `membership`
    /// (see `membership`).
    pub(crate) cluster: std::sync::OnceLock<Arc<super::membership::Cluster>>,
}

impl NatsLink {
    /// Registers the node's service on `client`, subscribes the reactor's
    /// handler keys (returning once the server has them) and keeps them in
    /// step from then on.
    pub(crate) async fn start(
        node: &Arc<NodeInner>,
        client: Client,
        events: Arc<Events>,
        namespace: String,
    ) -> Result<Arc<NatsLink>, PfError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            PfError::new(ErrorCode::Unavailable, format!("NATS: cannot {what}: {e}"))
        };
        let metadata = HashMap::from([
            ("node_id".to_owned(), node.node_id.clone()),
            ("namespace".to_owned(), namespace.clone()),
            ("runtime".to_owned(), node.config.runtime.clone()),
        ]);
        let registry = Arc::new(Registry::new(node.node_id.clone(), metadata));
        let verbs = registry.subscribe(&client).await.map_err(|e| unavailable("register the service", &e))?;
        let cancels = client
            .subscribe(subject::cancel_wildcard(&namespace))
            .await
            .map_err(|e| unavailable("subscribe to cancels", &e))?;
        // Watched from before the first sync, so no change falls between.
        let changes = node.reactor.watch_handlers();
        let routes = node.watch_routes();
        let link = Arc::new(NatsLink {
            client,
            cancel_subject: subject::cancel_subject(&namespace, &node.node_id),
            key_subjects: subject::KeySubjects::new(&namespace),
            namespace,
            origin: Origin(node.next_conn_id()),
            events,
            reactor: node.reactor.clone(),
            node: Arc::downgrade(node),
            keys_changed: Arc::new(tokio::sync::Notify::new()),
            max_hops: node.config.max_hops,
            cancellable: Mutex::new(HashMap::new()),
            registry,
            endpoints: tokio::sync::Mutex::new(HashMap::new()),
            served_keys: AtomicUsize::new(0),
            bridged_keys: AtomicUsize::new(0),
            rtt_us: AtomicU64::new(0),
            max_payload: AtomicUsize::new(0),
            max_payload_of: AtomicU64::new(u64::MAX),
            counters: Counters::default(),
            closed: CancellationToken::new(),
            cluster: std::sync::OnceLock::new(),
        });
        link.sync().await?;
        let started = Instant::now();
        link.client.flush().await.map_err(|e| unavailable("subscribe", &e))?;
        link.rtt_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let kick = link.keys_changed.clone();
        tokio::spawn(keep_in_step(Arc::downgrade(&link), changes, routes, kick, link.closed.clone()));
        tokio::spawn(hear_cancels(Arc::downgrade(&link), cancels, link.closed.clone()));
        let closed = link.closed.clone();
        tokio::spawn(service::answer_verbs(link.registry.clone(), link.client.clone(), verbs, closed));
        tokio::spawn(measure_rtt(Arc::downgrade(&link), link.closed.clone()));
        Ok(link)
    }

    /// The keys of this node's WebSocket peers that it serves on NATS
    /// may have changed: [`sync`](Self::sync) soon, from the task that
    /// keeps the endpoints in step.
    pub(crate) fn keys_changed(&self) {
        self.keys_changed.notify_one();
    }

    /// Makes the endpoints match the keys this node serves: the reactor's
    /// handler keys, and those it bridges for its WebSocket peers (see
    /// `PeerTable::bridged_keys`). An endpoint for each new key, none for
    /// a key no longer served.
    async fn sync(self: &Arc<Self>) -> Result<(), PfError> {
        let mut served = self.endpoints.lock().await;
        if self.closed.is_cancelled() {
            return Ok(());
        }
        let mut wanted: BTreeSet<(Group, Element)> = self.reactor.handler_keys().into_iter().collect();
        let own = wanted.len();
        if let Some(node) = self.node.upgrade() {
            wanted.extend(node.peers.read().bridged_keys());
        }
        self.bridged_keys.store(wanted.len() - own, Ordering::Relaxed);
        let before = served.len();
        let mut changed = false;
        served.retain(|key, endpoint| {
            let keep = wanted.contains(key);
            if !keep {
                self.registry.remove(&endpoint.subject);
                endpoint.stop.cancel();
            }
            keep
        });
        changed |= served.len() != before;
        for (group, element) in wanted {
            if served.contains_key(&(group, element.clone())) {
                continue;
            }
            let subject = subject::key_subject(&self.namespace, group, element.as_str());
            let subscriber =
                self.client.queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned()).await.map_err(|e| {
                    PfError::new(ErrorCode::Unavailable, format!("NATS: cannot subscribe {subject}: {e}"))
                })?;
            self.registry.add(endpoint::Info {
                name: subject::endpoint_name(group, element.as_str()),
                subject: subject.clone(),
                queue_group: QUEUE_GROUP.to_owned(),
                metadata: HashMap::from([("key".to_owned(), format!("{group}:{element}"))]),
            });
            let stop = self.closed.child_token();
            tokio::spawn(serve(Arc::downgrade(self), subscriber, subject.clone(), stop.clone()));
            served.insert((group, element), Served { subject, stop });
            changed = true;
        }
        self.served_keys.store(served.len(), Ordering::Relaxed);
        drop(served);
        // New SUBs reach the server now, not at the next write.
        if changed {
            let _ = tokio::time::timeout(RTT_INTERVAL, self.client.flush()).await;
        }
        Ok(())
    }

    /// Answers one request for a key this node serves: its packet runs
    /// through the reactor as a WebSocket submit does (its deadline from
    /// `Pf-Deadline-Ms`), and the answer is a `result` frame (an `error`
    /// frame for a body that is not one valid submit). What a local sync
    /// handler answers at once is sent from here, as a connection does;
    /// a packet that has to wait is given back as [`Waiting`], for
    /// [`serve`] to run beside the next requests (so that a slow handler
    /// holds up no other request).
    async fn answer(self: &Arc<Self>, message: async_nats::Message, subject: &Arc<str>) -> Option<Waiting> {
        let Some(reply_to) = message.reply.clone() else {
            return None; // published, not requested: nobody to answer
        };
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let (packet, cancel_subject) = match decode_request(&message, &self.namespace) {
            Ok(request) => request,
            Err(rejection) => {
                self.reply(reply_to, rejection, start, subject).await;
                return None;
            }
        };
        let deadline = start + Duration::from_millis(packet.timeout_ms());
        // Judged once, from NATS as its origin: what waits goes on from
        // this judgement (its route looked up already), not from a second.
        let first = match self.reactor.try_submit(packet, start, deadline, Some(self.origin), false) {
            Immediate::Done(result) => {
                self.reply(reply_to, Message::Result { seq: 0, result }, start, subject).await;
                return None;
            }
            first => first,
        };
        let id = match &first {
            Immediate::Elsewhere(p) | Immediate::Later(p) | Immediate::Routed(p, _) => &p.id,
            Immediate::Done(_) => unreachable!("answered above"),
        };
        // Listed before it runs; a cancel heard before its request was
        // read finds nothing and is ignored (the packet then runs on to its
        // deadline).
        let cancellable = cancel_subject.and_then(|s| Cancellable::note(self, id, s.to_owned()));
        Some(Waiting { first, reply_to, start, deadline, cancellable })
    }

    /// Runs a request that waits, and sends its answer.
    async fn run_waiting(self: Arc<Self>, waiting: Waiting, subject: Arc<str>) {
        let Waiting { first, reply_to, start, deadline, cancellable } = waiting;
        let result = self.reactor.resume(first, start, deadline, Some(self.origin)).await;
        drop(cancellable);
        self.reply(reply_to, Message::Result { seq: 0, result }, start, &subject).await;
    }

    /// Sends `reply` to a request on `subject` that came at `start`: a
    /// PF413 result instead when it would exceed the server's
    /// `max_payload`; counted for the service's statistics.
    async fn reply(&self, reply_to: async_nats::Subject, reply: Message, start: Instant, subject: &str) {
        let mut body = Codec::Json.encode_to_vec(&reply);
        let max = self.max_payload();
        if body.len() > max {
            if let Message::Result { result, .. } = &reply {
                let message = format!(
                    "the answer takes {} bytes, over the NATS server's max_payload of {max}",
                    body.len()
                );
                let too_large = PacketResult::error(
                    result.packet_id.clone(),
                    ErrorCode::TooLarge,
                    message,
                    result.duration_ms,
                );
                body = Codec::Json.encode_to_vec(&Message::Result { seq: 0, result: too_large });
            }
        }
        let failed = match &reply {
            Message::Result { result, .. } => result.err().cloned(),
            Message::Error { error, .. } => Some(error.clone()),
            _ => None,
        };
        self.registry.record(subject, start.elapsed(), failed.as_ref());
        // A lost connection loses the answer; the requester is answered
        // PF503 or PF408 on its side.
        let _ = self.client.publish(reply_to, body.into()).await;
    }

    /// Sends `packet` as a NATS request to whichever node serves its key,
    /// as one more hop with what is left of `deadline`, and returns its
    /// answer. Never waits past the deadline; errors (docs/protocol.md,
    /// "NATS"): PF001 no responders, PF408 timeout, PF503 the connection
    /// is down or lost before the answer, PF413 a request over the
    /// server's `max_payload` (not sent), PF508 past the hop limit.
    pub(crate) async fn request(self: Arc<Self>, packet: Packet, deadline: Instant) -> PacketResult {
        let subject = self.key_subjects.get(packet.group, packet.element.as_str());
        self.request_on(subject, packet, deadline).await
    }

    /// [`request`](Self::request) on `subject`: a key's, or one member's
    /// (docs/protocol.md, "Actors and route keys over NATS"). No responders
    /// is PF001 with a message ending in [`NO_RESPONDERS`].
    pub(crate) async fn request_on(
        self: Arc<Self>,
        subject: async_nats::Subject,
        mut packet: Packet,
        deadline: Instant,
    ) -> PacketResult {
        let start = Instant::now();
        let id = packet.id.clone();
        let fail = |code: ErrorCode, message: String| {
            PacketResult::error(id.clone(), code, message, since_ms(start))
        };
        let hops = packet.meta(META_HOPS).and_then(Value::as_u64).unwrap_or(0) + 1;
        if hops > self.max_hops {
            let limit = self.max_hops;
            return fail(
                ErrorCode::LoopDetected,
                format!("routing loop: the packet exceeded the hop limit of {limit}"),
            );
        }
        let remaining_ms = (deadline.saturating_duration_since(start).as_millis() as u64).min(MAX_TIMEOUT_MS);
        if remaining_ms == 0 {
            return fail(ErrorCode::Timeout, "no time left to send the packet over NATS".into());
        }
        packet.timeout_ms = Some(remaining_ms);
        let (mut header_map, mut header_bytes) = match headers::for_request(&packet, remaining_ms, hops) {
            Ok(h) => h,
            Err(e) => return PacketResult::failure(id, e, since_ms(start)),
        };
        header_bytes += headers::add_cancel_subject(&mut header_map, &self.cancel_subject);
        // `pf.hops` is written into the body, not into the packet's map.
        let body = Codec::json_forward(&packet, hops);
        drop(packet);
        let max = self.max_payload();
        if body.len() + header_bytes > max {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            let size = body.len() + header_bytes;
            return fail(
                ErrorCode::TooLarge,
                format!(
                    "the packet's NATS request takes {size} bytes, over the server's max_payload of {max}"
                ),
            );
        }
        // Watched before the state is read: a loss after this is seen.
        let mut losses = self.events.losses.subscribe();
        losses.borrow_and_update();
        if self.client.connection_state() != State::Connected {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            return fail(ErrorCode::Unavailable, "the connection to NATS is down".into());
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        // Until answered, dropping this (the packet cancelled, its caller
        // gone, its deadline passed) tells the serving node to stop.
        let mut outstanding = Outstanding { link: &self, packet_id: &id, settled: false };
        let request = async_nats::Request::new()
            .headers(header_map)
            .payload(body.into())
            // The deadline below bounds the wait: no second timer.
            .timeout(None);
        let sent = self.client.send_request(subject.clone(), request);
        let answered = tokio::select! {
            answered = tokio::time::timeout_at(deadline, sent) => answered,
            _ = losses.changed() => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                return fail(ErrorCode::Unavailable, "the connection to NATS was lost before the answer".into());
            }
        };
        match answered {
            Ok(Ok(message)) => {
                outstanding.settled = true;
                read_answer(&message.payload, &id, start)
            }
            Ok(Err(e)) => match e.kind() {
                RequestErrorKind::NoResponders => {
                    outstanding.settled = true;
                    self.counters.no_responders.fetch_add(1, Ordering::Relaxed);
                    fail(ErrorCode::NoHandler, format!("no handler for {subject} on NATS {NO_RESPONDERS}"))
                }
                RequestErrorKind::TimedOut => {
                    self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    fail(ErrorCode::Timeout, format!("no answer on NATS for {subject} before the deadline"))
                }
                RequestErrorKind::Other => {
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                    fail(ErrorCode::Unavailable, format!("NATS request on {subject} failed: {e}"))
                }
            },
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                fail(ErrorCode::Timeout, format!("no answer on NATS for {subject} before the deadline"))
            }
        }
    }

    /// The current server's `max_payload`.
    fn max_payload(&self) -> usize {
        let reconnects = self.events.reconnects.load(Ordering::Acquire);
        if self.max_payload_of.load(Ordering::Acquire) != reconnects {
            self.max_payload.store(self.client.server_info().max_payload, Ordering::Release);
            self.max_payload_of.store(reconnects, Ordering::Release);
        }
        self.max_payload.load(Ordering::Acquire)
    }

    /// What the reactor's `stats()` shows of the connection.
    pub(crate) fn stats(&self) -> crate::reactor::NatsStats {
        let info = self.client.server_info();
        crate::reactor::NatsStats {
            state: self.state().to_owned(),
            server: format!("{}:{}", info.host, info.port),
            rtt_us: self.rtt_us.load(Ordering::Relaxed),
            served_keys: self.served_keys.load(Ordering::Relaxed) as u64,
            bridged_keys: self.bridged_keys.load(Ordering::Relaxed) as u64,
            requests_sent: self.counters.sent.load(Ordering::Relaxed),
            requests_served: self.counters.served.load(Ordering::Relaxed),
            members: self.cluster.get().map(|cluster| cluster.member_ids()),
        }
    }

    fn state(&self) -> &'static str {
        match self.client.connection_state() {
            State::Connected => "connected",
            State::Disconnected => "disconnected",
            State::Pending => "connecting",
        }
    }

    /// The `nats` member of `/health`.
    pub(crate) fn health(&self) -> Value {
        let info = self.client.server_info();
        let state = self.state();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "state": state,
            "server": format!("{}:{}", info.host, info.port),
            "server_name": info.server_name,
            "server_version": info.version,
            "max_payload": info.max_payload,
            "rtt_us": self.rtt_us.load(Ordering::Relaxed),
            "namespace": self.namespace,
            "served_keys": self.served_keys.load(Ordering::Relaxed),
            "reconnects": self.events.reconnects.load(Ordering::Relaxed),
            "last_event": self.events.last.lock().clone(),
            "bridged_keys": self.bridged_keys.load(Ordering::Relaxed),
            "requests_sent": count(&self.counters.sent),
            "requests_served": count(&self.counters.served),
            "no_responders": count(&self.counters.no_responders),
            "timed_out": count(&self.counters.timed_out),
            "lost": count(&self.counters.lost),
            "too_large": count(&self.counters.too_large),
            "cancels_sent": count(&self.counters.cancels_sent),
            "cancels_applied": count(&self.counters.cancels_applied),
            "membership": self.cluster.get().map(|c| c.health()),
        })
    }

    /// The connection's families of `/metrics` (Prometheus text format).
    pub(crate) fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let family = crate::net::metrics::family;
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connected = u8::from(self.client.connection_state() == State::Connected);
        family(out, "packetflow_nats_connected", "gauge", "1 while the connection to NATS is up.");
        let _ = writeln!(out, "packetflow_nats_connected {connected}");
        family(out, "packetflow_nats_rtt_seconds", "gauge", "Last round trip to the NATS server.");
        let _ =
            writeln!(out, "packetflow_nats_rtt_seconds {}", self.rtt_us.load(Ordering::Relaxed) as f64 / 1e6);
        family(out, "packetflow_nats_reconnects_total", "counter", "Connections to NATS made after a loss.");
        let _ = writeln!(
            out,
            "packetflow_nats_reconnects_total {}",
            self.events.reconnects.load(Ordering::Relaxed)
        );
        family(out, "packetflow_nats_requests_sent_total", "counter", "Packets sent as NATS requests.");
        let _ = writeln!(out, "packetflow_nats_requests_sent_total {}", count(&self.counters.sent));
        family(out, "packetflow_nats_requests_served_total", "counter", "NATS requests this node answered.");
        let _ = writeln!(out, "packetflow_nats_requests_served_total {}", count(&self.counters.served));
        family(out, "packetflow_nats_cancels_sent_total", "counter", "Cancels published for NATS requests.");
        let _ = writeln!(out, "packetflow_nats_cancels_sent_total {}", count(&self.counters.cancels_sent));
        family(
            out,
            "packetflow_nats_cancels_applied_total",
            "counter",
            "Cancels heard on NATS that stopped a packet served here.",
        );
        let _ =
            writeln!(out, "packetflow_nats_cancels_applied_total {}", count(&self.counters.cancels_applied));
        family(
            out,
            "packetflow_nats_request_failures_total",
            "counter",
            "Packets for NATS answered with an error of the transport, by reason.",
        );
        for (reason, counter) in [
            ("no_responders", &self.counters.no_responders),
            ("timed_out", &self.counters.timed_out),
            ("lost", &self.counters.lost),
            ("too_large", &self.counters.too_large),
        ] {
            let _ = writeln!(
                out,
                "packetflow_nats_request_failures_total{{reason=\"{reason}\"}} {}",
                count(counter)
            );
        }
    }

    /// Leaves NATS: the endpoints and the service stop, requests still
    /// waiting are answered PF503, and the connection is drained (bounded).
    pub(crate) async fn close(&self) {
        if let Some(cluster) = self.cluster.get() {
            // Gone from every member's view at once, not after the TTL.
            cluster.leave().await;
        }
        self.closed.cancel();
        self.endpoints.lock().await.clear();
        self.events.losses.send_modify(|n| *n += 1);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.client.drain()).await;
    }
}

impl Drop for NatsLink {
    /// A node dropped without being stopped: its tasks end too (they hold
    /// the subscriptions, and with them the connection).
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// A request read that cannot be answered at once (its handler is not a
/// local sync one, or it has dependencies, or it is routed on).
struct Waiting {
    /// What the reactor made of it so far.
    first: Immediate<Packet>,
    reply_to: async_nats::Subject,
    start: Instant,
    deadline: Instant,
    cancellable: Option<Cancellable>,
}

/// Serves one key's endpoint until `stop` (see [`NatsLink::answer`]).
/// The requests that wait run here, beside the reading, not as a task
/// each: a burst of requests for a handler on another thread (a
/// binding's) is read, handed over and answered by this one task, with
/// no spawn and no wake-up of another worker per request. Stopped, the
/// subscription is drained: the requests it still holds are answered
/// (PF001 once the key is gone), for at most [`DRAIN_TIMEOUT`]; then the
/// task ends once the requests still running are answered (each by its
/// deadline at the latest). (`async-nats` closes a drained subscription
/// once the UNSUB is written, not once the server confirms it: a request
/// routed here in between is dropped by the client, and its requester
/// answered PF408 at its deadline; docs/protocol.md, "NATS".)
pub(super) async fn serve(
    link: Weak<NatsLink>,
    mut subscriber: Subscriber,
    subject: String,
    stop: CancellationToken,
) {
    let subject: Arc<str> = subject.into();
    let mut running = FuturesUnordered::new();
    let drained = loop {
        let message = tokio::select! {
            // Answers first: they free what their requests hold.
            biased;
            Some(()) = running.next(), if !running.is_empty() => continue,
            _ = stop.cancelled() => break true,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break false, // the connection is closed
            },
        };
        let Some(link) = link.upgrade() else { break false };
        if let Some(waiting) = link.answer(message, &subject).await {
            running.push(link.run_waiting(waiting, subject.clone()));
        }
    };
    if drained && subscriber.drain().await.is_ok() {
        let until = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let message = tokio::select! {
                biased;
                Some(()) = running.next(), if !running.is_empty() => continue,
                message = tokio::time::timeout_at(until, subscriber.next()) => match message {
                    Ok(Some(message)) => message,
                    _ => break,
                },
            };
            let Some(link) = link.upgrade() else { break };
            if let Some(waiting) = link.answer(message, &subject).await {
                running.push(link.run_waiting(waiting, subject.clone()));
            }
        }
    }
    while running.next().await.is_some() {}
}

/// Syncs the endpoints whenever the keys served may have changed: the
/// reactor's handlers, the routes peers announced, what seed peers were
/// seen to serve.
async fn keep_in_step(
    link: Weak<NatsLink>,
    mut changes: watch::Receiver<u64>,
    mut routes: watch::Receiver<u64>,
    kick: Arc<tokio::sync::Notify>,
    closed: CancellationToken,
) {
    loop {
        // Changes that come while a sync runs are seen at the next turn
        // (a watch stays changed, a notify keeps its permit): bursts of
        // them cost one sync.
        tokio::select! {
            _ = closed.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            changed = routes.changed() => if changed.is_err() { return },
            _ = kick.notified() => {}
        }
        let Some(link) = link.upgrade() else { return };
        // A failed subscribe is tried again at the next change; the keys
        // already served stay served.
        let _ = link.sync().await;
    }
}

/// Hears the cancels published on `<namespace>.cancel.*`, until `closed`:
/// each is a `cancel` frame of the base protocol (JSON), and stops the
/// packet it names when this node serves it for a request that named the
/// subject it came on. Anything else is ignored (nobody waits for an
/// answer to a publish).
async fn hear_cancels(link: Weak<NatsLink>, mut subscriber: Subscriber, closed: CancellationToken) {
    loop {
        let message = tokio::select! {
            _ = closed.cancelled() => return,
            message = subscriber.next() => message,
        };
        let (Some(message), Some(link)) = (message, link.upgrade()) else { return };
        let Decoded::Single(Ok(Message::Cancel { packet_id, .. })) = decode_json(&message.payload) else {
            continue;
        };
        let named =
            link.cancellable.lock().get(&packet_id).is_some_and(|s| s.as_str() == message.subject.as_str());
        if named && link.reactor.cancel_from(&packet_id, link.origin) {
            link.counters.cancels_applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request served here that its requester may cancel, listed in
/// `cancellable` until dropped (its packet answered).
struct Cancellable {
    link: Weak<NatsLink>,
    packet_id: PacketId,
}

impl Cancellable {
    /// Lists `id`, cancellable on `subject`; `None` when a packet with
    /// that id is listed already (this one is then answered PF409).
    fn note(link: &Arc<NatsLink>, id: &PacketId, subject: String) -> Option<Cancellable> {
        use std::collections::hash_map::Entry;
        match link.cancellable.lock().entry(id.clone()) {
            Entry::Occupied(_) => None,
            Entry::Vacant(entry) => {
                entry.insert(subject);
                Some(Cancellable { link: Arc::downgrade(link), packet_id: id.clone() })
            }
        }
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        if let Some(link) = self.link.upgrade() {
            link.cancellable.lock().remove(&self.packet_id);
        }
    }
}

/// A request this node sent, until its answer came: dropped before, the
/// serving node is told to stop, with a `cancel` frame published on this
/// node's cancel subject (docs/protocol.md, "NATS", "Cancellation").
struct Outstanding<'a> {
    link: &'a Arc<NatsLink>,
    packet_id: &'a PacketId,
    settled: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.settled || self.link.closed.is_cancelled() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.link.counters.cancels_sent.fetch_add(1, Ordering::Relaxed);
        let frame = Message::Cancel { seq: 0, packet_id: self.packet_id.clone() };
        let body = Codec::Json.encode_to_vec(&frame);
        let (client, subject) = (self.link.client.clone(), self.link.cancel_subject.clone());
        // Publishing waits for room in the client's queue: not in `drop`.
        runtime.spawn(async move {
            let _ = client.publish(subject, body.into()).await;
        });
    }
}

/// Measures the round trip to the server (a PING and its PONG) every
/// [`RTT_INTERVAL`], for `/health`.
async fn measure_rtt(link: Weak<NatsLink>, closed: CancellationToken) {
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(RTT_INTERVAL) => {}
        }
        let Some(link) = link.upgrade() else { return };
        let started = Instant::now();
        if tokio::time::timeout(RTT_INTERVAL, link.client.flush()).await.is_ok_and(|r| r.is_ok()) {
            link.rtt_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

/// Decodes the JSON frame a message holds. Its UTF-8 is checked once,
/// whole, then read as text: serde_json reading bytes checks each string
/// on its own, which costs a NATS round trip some 2,500 instructions
/// over its two frames. A body that is not UTF-8 is decoded as bytes, for
/// the error that names it.
fn decode_json(body: &[u8]) -> Decoded {
    match std::str::from_utf8(body) {
        Ok(text) => Codec::decode_text(text),
        Err(_) => Codec::Json.decode(body),
    }
}

/// The packet of a request and the subject its cancel would come on: its
/// body must be one `submit` frame (JSON), its headers are applied over
/// it. Otherwise the `error` frame that answers it (PF400 naming the field
/// or header).
fn decode_request<'m>(
    message: &'m async_nats::Message,
    namespace: &str,
) -> Result<(Packet, Option<&'m str>), Message> {
    let reject = |error: PfError, packet_id: Option<PacketId>| Message::Error { seq: 0, error, packet_id };
    let bad = |text: &str| PfError::new(ErrorCode::BadRequest, text.to_owned());
    match decode_json(&message.payload) {
        Decoded::Single(Ok(Message::Submit { packet, .. })) => {
            let mut packet = *packet;
            let read = headers::RequestHeaders::read(message.headers.as_ref());
            let cancel = read
                .apply(&mut packet)
                .and_then(|()| packet.validate())
                .and_then(|()| read.cancel_subject(namespace));
            match cancel {
                Ok(cancel) => Ok((packet, cancel)),
                Err(e) => Err(reject(e, Some(packet.id))),
            }
        }
        Decoded::Single(Ok(other)) => Err(reject(
            bad(&format!("a NATS request must hold a submit frame, got {}", other.kind().as_str())),
            None,
        )),
        Decoded::Single(Err(frame_error)) => Err(frame_error.to_message()),
        Decoded::Batch(_) => Err(reject(bad("a NATS request must hold one submit frame, not a batch"), None)),
    }
}

/// The result an answer's body holds (a `result` frame, or the `error`
/// frame of a rejected request); PF500 for a body that is neither, from a
/// responder that is not a PacketFlow node.
fn read_answer(body: &[u8], id: &PacketId, start: Instant) -> PacketResult {
    match decode_json(body) {
        Decoded::Single(Ok(Message::Result { result, .. })) => result,
        Decoded::Single(Ok(Message::Error { error, .. })) => {
            PacketResult::failure(id.clone(), error, since_ms(start))
        }
        _ => PacketResult::error(
            id.clone(),
            ErrorCode::HandlerFailed,
            "the NATS responder's answer is not a PacketFlow result frame",
            since_ms(start),
        ),
    }
}

fn since_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_decode_as_the_codec_decodes_them() {
        let packet = Packet::build("df", "echo", json!({"s": "é ✓", "n": [1, 2.5, null]})).unwrap();
        let submit = Codec::json_forward(&packet, 1);
        let not_utf8 =
            [b"{\"type\":\"submit\",\"seq\":0,\"payload\":\"".as_slice(), &[0xff, 0xfe], b"\"}"].concat();
        for body in [submit.as_slice(), b"[1]", b"{", b"null", &not_utf8] {
            assert_eq!(format!("{:?}", decode_json(body)), format!("{:?}", Codec::Json.decode(body)));
        }
    }

    #[test]
    fn answers_are_read_from_result_and_error_frames() {
        let id = PacketId::new("p1").unwrap();
        let start = Instant::now();
        let ok = Codec::Json.encode_to_vec(&Message::Result {
            seq: 0,
            result: PacketResult::success(id.clone(), json!({"x": 1}), 3),
        });
        assert_eq!(read_answer(&ok, &id, start).outcome, Ok(json!({"x": 1})));
        let rejected = Codec::Json.encode_to_vec(&Message::Error {
            seq: 0,
            error: PfError::new(ErrorCode::BadRequest, "priority must be an integer 1-10, got 11"),
            packet_id: None,
        });
        assert!(read_answer(&rejected, &id, start).err().unwrap().is(ErrorCode::BadRequest));
        let foreign = read_answer(b"hello", &id, start);
        assert!(foreign.err().unwrap().is(ErrorCode::HandlerFailed));
        assert_eq!(foreign.packet_id, id);
    }
}
