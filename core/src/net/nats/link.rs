//! A node's connection to NATS ([`NatsLink`]): the service and its
//! endpoints (one per handler key, kept in step with the reactor), the
//! requests this node sends, and what `/health` shows of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_nats::connection::State;
use async_nats::service::endpoint;
use async_nats::{Client, Event, RequestErrorKind, Subscriber};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::service::{self, Registry};
use super::{headers, subject, NatsStats, QUEUE_GROUP};
use crate::error::{ErrorCode, PfError};
use crate::net::node::NodeInner;
use crate::packet::{Element, Group, Packet, PacketId, MAX_TIMEOUT_MS, META_HOPS};
use crate::reactor::{Origin, Reactor};
use crate::result::PacketResult;
use crate::wire::{Codec, Decoded, Message};

/// How often the round trip to the server is measured for `/health`.
const RTT_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on draining the connection when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

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
}

/// A key's endpoint: its task serves it until `stop` is cancelled.
struct Served {
    subject: String,
    stop: CancellationToken,
}

/// The node's connection to NATS.
pub(crate) struct NatsLink {
    client: Client,
    namespace: String,
    /// The connection number of NATS among the node's connections: a
    /// packet that came from NATS is never sent back there.
    pub(crate) origin: Origin,
    events: Arc<Events>,
    reactor: Reactor,
    max_hops: u64,
    /// The ADR-32 service's endpoints and counters.
    registry: Arc<Registry>,
    /// The keys served, each an endpoint; the lock serialises syncs.
    endpoints: tokio::sync::Mutex<HashMap<(Group, Element), Served>>,
    served_keys: AtomicUsize,
    rtt_us: AtomicU64,
    /// The server's `max_payload`, read again after each reconnect (the
    /// server's info is a copy under a lock: too dear for every packet).
    max_payload: AtomicUsize,
    /// `events.reconnects` when `max_payload` was read.
    max_payload_of: AtomicU64,
    counters: Counters,
    closed: CancellationToken,
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
        // Watched from before the first sync, so no change falls between.
        let changes = node.reactor.watch_handlers();
        let link = Arc::new(NatsLink {
            client,
            namespace,
            origin: Origin(node.next_conn_id()),
            events,
            reactor: node.reactor.clone(),
            max_hops: node.config.max_hops,
            registry,
            endpoints: tokio::sync::Mutex::new(HashMap::new()),
            served_keys: AtomicUsize::new(0),
            rtt_us: AtomicU64::new(0),
            max_payload: AtomicUsize::new(0),
            max_payload_of: AtomicU64::new(u64::MAX),
            counters: Counters::default(),
            closed: CancellationToken::new(),
        });
        link.sync().await?;
        let started = Instant::now();
        link.client.flush().await.map_err(|e| unavailable("subscribe", &e))?;
        link.rtt_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tokio::spawn(keep_in_step(Arc::downgrade(&link), changes, link.closed.clone()));
        let closed = link.closed.clone();
        tokio::spawn(service::answer_verbs(link.registry.clone(), link.client.clone(), verbs, closed));
        tokio::spawn(measure_rtt(Arc::downgrade(&link), link.closed.clone()));
        Ok(link)
    }

    /// Makes the endpoints match the reactor's handler keys: an endpoint
    /// for each new key, none for a key no longer served.
    async fn sync(self: &Arc<Self>) -> Result<(), PfError> {
        let mut served = self.endpoints.lock().await;
        if self.closed.is_cancelled() {
            return Ok(());
        }
        let wanted: BTreeSet<(Group, Element)> = self.reactor.handler_keys().into_iter().collect();
        served.retain(|key, endpoint| {
            let keep = wanted.contains(key);
            if !keep {
                self.registry.remove(&endpoint.subject);
                endpoint.stop.cancel();
            }
            keep
        });
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
        }
        self.served_keys.store(served.len(), Ordering::Relaxed);
        drop(served);
        // New SUBs reach the server now, not at the next write.
        let _ = tokio::time::timeout(RTT_INTERVAL, self.client.flush()).await;
        Ok(())
    }

    /// Answers one request for a key this node serves: its packet runs
    /// through the reactor as a WebSocket submit does (its deadline from
    /// `Pf-Deadline-Ms`), and the answer is a `result` frame (an `error`
    /// frame for a body that is not one valid submit). What a local sync
    /// handler answers at once is sent from here, as a connection does;
    /// anything that waits runs on a task of its own, so that a slow
    /// handler holds up no other request.
    async fn answer(self: &Arc<Self>, message: async_nats::Message, subject: &Arc<str>) {
        let Some(reply_to) = message.reply.clone() else {
            return; // published, not requested: nobody to answer
        };
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let packet = match decode_request(&message) {
            Ok(packet) => packet,
            Err(rejection) => return self.reply(reply_to, rejection, start, subject).await,
        };
        let deadline = start + Duration::from_millis(packet.timeout_ms());
        match self.reactor.submit_now(packet, start, deadline) {
            Ok(result) => self.reply(reply_to, Message::Result { seq: 0, result }, start, subject).await,
            Err(packet) => {
                let (link, subject) = (self.clone(), subject.clone());
                tokio::spawn(async move {
                    let result = link.reactor.submit_from(packet, start, deadline, Some(link.origin)).await;
                    link.reply(reply_to, Message::Result { seq: 0, result }, start, &subject).await;
                });
            }
        }
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
    pub(crate) async fn request(self: Arc<Self>, mut packet: Packet, deadline: Instant) -> PacketResult {
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
        packet.metadata.get_or_insert_with(Default::default).insert(META_HOPS.to_owned(), hops.into());
        let (header_map, header_bytes) = match headers::for_request(&packet, remaining_ms, hops) {
            Ok(h) => h,
            Err(e) => return PacketResult::failure(id, e, since_ms(start)),
        };
        let subject = subject::key_subject(&self.namespace, packet.group, packet.element.as_str());
        let body = Codec::Json.encode_to_vec(&Message::Submit { seq: 0, packet: Box::new(packet) });
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
        let request = async_nats::Request::new()
            .headers(header_map)
            .payload(body.into())
            .timeout(Some(Duration::from_millis(remaining_ms)));
        let sent = self.client.send_request(subject.clone(), request);
        let answered = tokio::select! {
            answered = tokio::time::timeout_at(deadline, sent) => answered,
            _ = losses.changed() => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                return fail(ErrorCode::Unavailable, "the connection to NATS was lost before the answer".into());
            }
        };
        match answered {
            Ok(Ok(message)) => read_answer(&message.payload, &id, start),
            Ok(Err(e)) => match e.kind() {
                RequestErrorKind::NoResponders => {
                    self.counters.no_responders.fetch_add(1, Ordering::Relaxed);
                    fail(ErrorCode::NoHandler, format!("no handler for {subject} on NATS (no responders)"))
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

    /// The connection's state and counters ([`NatsStats`]).
    pub(crate) fn stats(&self) -> NatsStats {
        let info = self.client.server_info();
        let state = match self.client.connection_state() {
            State::Connected => "connected",
            State::Disconnected => "disconnected",
            State::Pending => "connecting",
        };
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatsStats {
            state,
            server: format!("{}:{}", info.host, info.port),
            server_name: info.server_name.clone(),
            server_version: info.version.clone(),
            max_payload: info.max_payload,
            rtt_us: self.rtt_us.load(Ordering::Relaxed),
            namespace: self.namespace.clone(),
            served_keys: self.served_keys.load(Ordering::Relaxed),
            reconnects: self.events.reconnects.load(Ordering::Relaxed),
            last_event: self.events.last.lock().clone(),
            requests_sent: count(&self.counters.sent),
            requests_served: count(&self.counters.served),
            no_responders: count(&self.counters.no_responders),
            timed_out: count(&self.counters.timed_out),
            lost: count(&self.counters.lost),
            too_large: count(&self.counters.too_large),
        }
    }

    /// The `nats` member of `/health`: [`stats`](Self::stats) as JSON.
    pub(crate) fn health(&self) -> Value {
        let s = self.stats();
        json!({
            "state": s.state,
            "server": s.server,
            "server_name": s.server_name,
            "server_version": s.server_version,
            "max_payload": s.max_payload,
            "rtt_us": s.rtt_us,
            "namespace": s.namespace,
            "served_keys": s.served_keys,
            "reconnects": s.reconnects,
            "last_event": s.last_event,
            "requests_sent": s.requests_sent,
            "requests_served": s.requests_served,
            "no_responders": s.no_responders,
            "timed_out": s.timed_out,
            "lost": s.lost,
            "too_large": s.too_large,
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

/// Serves one key's endpoint until `stop` (see [`NatsLink::answer`]).
/// Stopped, the subscription is drained: the requests the server sent
/// before it saw the UNSUB are still answered (PF001 once the key is gone)
/// rather than dropped, for at most [`DRAIN_TIMEOUT`].
async fn serve(link: Weak<NatsLink>, mut subscriber: Subscriber, subject: String, stop: CancellationToken) {
    let subject: Arc<str> = subject.into();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = subscriber.next() => message,
        };
        let (Some(message), Some(link)) = (message, link.upgrade()) else { return };
        link.answer(message, &subject).await;
    }
    if subscriber.drain().await.is_err() {
        return;
    }
    let until = Instant::now() + DRAIN_TIMEOUT;
    while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
        let Some(link) = link.upgrade() else { return };
        link.answer(message, &subject).await;
    }
}

/// Syncs the endpoints whenever the reactor's handlers change.
async fn keep_in_step(link: Weak<NatsLink>, mut changes: watch::Receiver<u64>, closed: CancellationToken) {
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let Some(link) = link.upgrade() else { return };
        // A failed subscribe is tried again at the next change; the keys
        // already served stay served.
        let _ = link.sync().await;
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

/// The packet of a request: its body must be one `submit` frame (JSON),
/// its headers are applied over it. Otherwise the `error` frame that
/// answers it (PF400 naming the field or header).
fn decode_request(message: &async_nats::Message) -> Result<Packet, Message> {
    let reject = |error: PfError, packet_id: Option<PacketId>| Message::Error { seq: 0, error, packet_id };
    let bad = |text: &str| PfError::new(ErrorCode::BadRequest, text.to_owned());
    match Codec::Json.decode(&message.payload) {
        Decoded::Single(Ok(Message::Submit { packet, .. })) => {
            let mut packet = *packet;
            match headers::apply(message.headers.as_ref(), &mut packet).and_then(|()| packet.validate()) {
                Ok(()) => Ok(packet),
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
    match Codec::Json.decode(body) {
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
