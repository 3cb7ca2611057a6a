//! What a node remembers for its dashboard about the packets it saw, with
//! bounded memory and next to no cost on the packet path:
//!
//! - **Failures**: the last [`FAILURES_KEPT`] failed packets (key, code,
//!   message, duration, which connection submitted it, who served it), and
//!   a counter per PF code. Every failure is counted; failures are the slow
//!   path already (an error was built, a message formatted), but so that a
//!   flood of refusals (PF429 under overload) costs no more than before,
//!   at most [`FAILURES_PER_SECOND`] are recorded in detail each second.
//! - **Hops**: a ring of the last [`HOPS_KEPT`] hop events (a packet arrived
//!   from a connection, was sent to a peer, was answered), for the trace
//!   view. Recording one costs a lock and a few copies, so at most
//!   [`HOPS_PER_SECOND`] events are recorded per second (the budget is
//!   refilled by the dashboard's sampler each second): a node at rest or
//!   under light traffic records every hop; under load, the first events of
//!   each second, and every other packet pays one relaxed atomic load.
//! - **Routed keys**: a latency histogram per `group:element` this node
//!   forwarded to a peer (the reactor keeps those of its own handlers), for
//!   at most [`ROUTED_KEYS_KEPT`] keys.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::HashMap;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Packet, PacketId, META_TRACE_ID};
use crate::reactor::{HandlerStats, Stats};

/// Failed packets remembered.
pub(crate) const FAILURES_KEPT: usize = 100;
/// Hop events remembered (about 100 bytes each).
pub(crate) const HOPS_KEPT: usize = 2048;
/// Hop events recorded per second at most.
pub(crate) const HOPS_PER_SECOND: u32 = 1000;
/// Failures recorded in detail (with their answer hop) per second at most.
pub(crate) const FAILURES_PER_SECOND: u32 = 200;
/// Forwarded keys with a histogram; packets for further keys are not counted.
pub(crate) const ROUTED_KEYS_KEPT: usize = 256;
/// Longest error message kept for a failure, in bytes.
const MESSAGE_KEPT: usize = 512;

/// A packet's `group:element`.
pub(crate) type Key = (Group, Element);

/// Who answered a packet, as a failure or an answer hop names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServedBy {
    /// A handler of this node, or this node itself (a refusal, PF001).
    ThisNode,
    /// The peer on this connection.
    Peer(u64),
    /// Whatever peer the reactor's router chose (a seed peer, a default
    /// route): the connection is not known where the answer is recorded.
    DefaultRoute,
}

/// One failed packet.
struct Failure {
    at_ms: u64,
    key: Key,
    packet_id: PacketId,
    code: String,
    message: String,
    duration_ms: u64,
    /// Who submitted it and who served it, named when it failed (a peer
    /// may be gone by the time someone looks).
    from: String,
    served_by: String,
}

/// What happened to a packet at this node.
#[derive(Debug, Clone, Copy)]
enum HopEvent {
    Arrived { from: u64 },
    Sent { to: u64 },
    Answered { served_by: ServedBy, code: Option<&'static str>, duration_ms: u64 },
}

struct Hop {
    at_ms: u64,
    packet_id: PacketId,
    /// The packet's `pf.trace_id`, when it has one (else it starts its own
    /// trace, named by its id). Answer hops carry none: they are matched by
    /// packet id.
    trace_id: Option<Box<str>>,
    key: Key,
    event: HopEvent,
}

/// The dashboard's record of failures, hops and forwarded keys.
pub(crate) struct Recorder {
    failures: Mutex<VecDeque<Failure>>,
    /// One counter per code of [`ErrorCode::ALL`], then one for codes
    /// outside the table.
    by_code: [AtomicU64; ErrorCode::ALL.len() + 1],
    hops: Mutex<VecDeque<Hop>>,
    hop_budget: AtomicU32,
    failure_budget: AtomicU32,
    /// Read on every forwarded answer, replaced whole when a key is added.
    routed: ArcSwap<HashMap<Key, Arc<Stats>>>,
    adding_routed: Mutex<()>,
    /// Wall clock of `epoch`, to stamp records without a system call each.
    epoch: Instant,
    epoch_ms: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            failures: Mutex::new(VecDeque::new()),
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            hops: Mutex::new(VecDeque::new()),
            hop_budget: AtomicU32::new(HOPS_PER_SECOND),
            failure_budget: AtomicU32::new(FAILURES_PER_SECOND),
            routed: ArcSwap::default(),
            adding_routed: Mutex::new(()),
            epoch: Instant::now(),
            epoch_ms: super::super::conn::epoch_ms(),
        }
    }
}

/// Takes one from `budget`; false when it is spent (then one relaxed load
/// is all it costs).
#[inline]
fn take(budget: &AtomicU32) -> bool {
    budget.load(Relaxed) > 0 && budget.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
}

fn code_index(code: &str) -> usize {
    ErrorCode::ALL.iter().position(|c| c.as_str() == code).unwrap_or(ErrorCode::ALL.len())
}

fn key_text(key: &Key) -> String {
    format!("{}:{}", key.0, key.1)
}

fn trace_of(packet: &Packet) -> Option<Box<str>> {
    packet.meta(META_TRACE_ID).and_then(Value::as_str).map(Into::into)
}

impl Recorder {
    /// Wall-clock ms since the Unix epoch of `at`.
    fn wall_ms(&self, at: Instant) -> u64 {
        self.epoch_ms + at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A failed packet, submitted by `from` and served by `served_by` (as a
    /// person reads them: a peer's name, language and address, or `this
    /// node`; made only when the failure is recorded in detail).
    pub(crate) fn failed(
        &self,
        key: &Key,
        packet_id: &PacketId,
        error: &PfError,
        duration_ms: u64,
        from: impl FnOnce() -> String,
        served_by: impl FnOnce() -> String,
    ) {
        self.by_code[code_index(&error.code)].fetch_add(1, Relaxed);
        if !take(&self.failure_budget) {
            return;
        }
        let mut message = error.message.clone();
        if message.len() > MESSAGE_KEPT {
            let mut end = MESSAGE_KEPT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let failure = Failure {
            at_ms: self.wall_ms(Instant::now()),
            key: key.clone(),
            packet_id: packet_id.clone(),
            code: error.code.clone(),
            message,
            duration_ms,
            from: from(),
            served_by: served_by(),
        };
        let mut failures = self.failures.lock();
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back(failure);
    }

    /// Takes one hop event from this second's budget; false when spent.
    #[inline]
    fn take_hop_budget(&self) -> bool {
        take(&self.hop_budget)
    }

    /// Gives the budgets back for the next second (the sampler's tick).
    pub(crate) fn refill_budgets(&self) {
        self.hop_budget.store(HOPS_PER_SECOND, Relaxed);
        self.failure_budget.store(FAILURES_PER_SECOND, Relaxed);
    }

    fn hop(&self, hop: Hop) {
        let mut hops = self.hops.lock();
        if hops.len() == HOPS_KEPT {
            hops.pop_front();
        }
        hops.push_back(hop);
    }

    /// `packet` arrived on connection `from`.
    #[inline]
    pub(crate) fn arrived(&self, packet: &Packet, from: u64, now: Instant) {
        if self.take_hop_budget() {
            self.hop(Hop {
                at_ms: self.wall_ms(now),
                packet_id: packet.id.clone(),
                trace_id: trace_of(packet),
                key: (packet.group, packet.element.clone()),
                event: HopEvent::Arrived { from },
            });
        }
    }

    /// `packet` was sent to the peer on connection `to`.
    #[inline]
    pub(crate) fn sent(&self, packet: &Packet, to: u64, now: Instant) {
        if self.take_hop_budget() {
            self.hop(Hop {
                at_ms: self.wall_ms(now),
                packet_id: packet.id.clone(),
                trace_id: trace_of(packet),
                key: (packet.group, packet.element.clone()),
                event: HopEvent::Sent { to },
            });
        }
    }

    /// The packet `packet_id` (of `key`) was answered. A failure's answer
    /// is recorded within the failures' budget instead of the hops'.
    #[inline]
    pub(crate) fn answered(
        &self,
        key: &Key,
        packet_id: &PacketId,
        outcome: &Result<Value, PfError>,
        duration_ms: u64,
        served_by: ServedBy,
    ) {
        let within_budget = match outcome {
            Ok(_) => self.take_hop_budget(),
            Err(_) => self.failure_budget.load(Relaxed) > 0,
        };
        if within_budget {
            let code = outcome.as_ref().err().map(|e| {
                ErrorCode::ALL.iter().find(|c| c.as_str() == e.code).map_or("PF???", |c| c.as_str())
            });
            self.hop(Hop {
                at_ms: self.wall_ms(Instant::now()),
                packet_id: packet_id.clone(),
                trace_id: None,
                key: key.clone(),
                event: HopEvent::Answered { served_by, code, duration_ms },
            });
        }
    }

    /// Counts an answer of a packet this node forwarded for `key`.
    #[inline]
    pub(crate) fn routed(&self, key: &Key, micros: u64, failed: bool) {
        if let Some(stats) = self.routed.load().get(key) {
            stats.record(micros, failed);
            return;
        }
        self.add_routed(key, micros, failed);
    }

    #[cold]
    fn add_routed(&self, key: &Key, micros: u64, failed: bool) {
        let _adding = self.adding_routed.lock();
        let current = self.routed.load_full();
        if let Some(stats) = current.get(key) {
            stats.record(micros, failed);
            return;
        }
        if current.len() >= ROUTED_KEYS_KEPT {
            return;
        }
        let stats = Arc::new(Stats::new());
        stats.record(micros, failed);
        let mut next = HashMap::clone(&current);
        next.insert(key.clone(), stats);
        self.routed.store(Arc::new(next));
    }

    /// Snapshots of the forwarded keys' counters, by key.
    pub(crate) fn routed_stats(&self) -> Vec<HandlerStats> {
        let mut all: Vec<HandlerStats> =
            self.routed.load().iter().map(|((g, e), s)| s.snapshot(*g, e)).collect();
        all.sort_by(|a, b| (a.group, &a.element).cmp(&(b.group, &b.element)));
        all
    }

    /// Failures by PF code (codes never seen are left out).
    pub(crate) fn errors_by_code(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (i, counter) in self.by_code.iter().enumerate() {
            let n = counter.load(Relaxed);
            if n > 0 {
                let code = ErrorCode::ALL.get(i).map_or("other", |c| c.as_str());
                out.insert(code.into(), n.into());
            }
        }
        Value::Object(out)
    }

    /// The last `n` failures, newest first.
    pub(crate) fn failures(&self, n: usize) -> Value {
        let failures = self.failures.lock();
        let list: Vec<Value> = failures
            .iter()
            .rev()
            .take(n)
            .map(|f| {
                json!({
                    "at_ms": f.at_ms,
                    "key": key_text(&f.key),
                    "packet_id": f.packet_id.as_str(),
                    "code": f.code,
                    "message": f.message,
                    "duration_ms": f.duration_ms,
                    "from": f.from,
                    "served_by": f.served_by,
                })
            })
            .collect();
        Value::Array(list)
    }

    /// Every recorded hop of the trace `trace_id` (packets whose
    /// `pf.trace_id` it is, or the packet of that id, which started it),
    /// oldest first, with this node's failures of those packets.
    pub(crate) fn trace(&self, trace_id: &str, name: &dyn Fn(u64) -> String) -> Value {
        let hops = self.hops.lock();
        let mut packets: Vec<&PacketId> = Vec::new();
        for hop in hops.iter() {
            let in_trace =
                hop.trace_id.as_deref().map_or(hop.packet_id.as_str() == trace_id, |t| t == trace_id);
            if in_trace && !packets.contains(&&hop.packet_id) {
                packets.push(&hop.packet_id);
            }
        }
        let failures = self.failures.lock();
        for f in failures.iter() {
            if f.packet_id.as_str() == trace_id && !packets.contains(&&f.packet_id) {
                packets.push(&f.packet_id);
            }
        }
        let mut list: Vec<Value> = hops
            .iter()
            .filter(|h| packets.contains(&&h.packet_id))
            .map(|h| {
                let mut hop = json!({
                    "at_ms": h.at_ms,
                    "packet_id": h.packet_id.as_str(),
                    "key": key_text(&h.key),
                });
                let fields = hop.as_object_mut().expect("an object");
                match h.event {
                    HopEvent::Arrived { from } => {
                        fields.insert("event".into(), "arrived".into());
                        fields.insert("from".into(), name(from).into());
                    }
                    HopEvent::Sent { to } => {
                        fields.insert("event".into(), "sent".into());
                        fields.insert("to".into(), name(to).into());
                    }
                    HopEvent::Answered { served_by: by, code, duration_ms } => {
                        fields.insert("event".into(), "answered".into());
                        fields.insert("served_by".into(), served_by(by, name).into());
                        fields.insert("code".into(), code.into());
                        fields.insert("duration_ms".into(), duration_ms.into());
                    }
                }
                hop
            })
            .collect();
        // A failed packet whose hops were past the hop budget, or are gone
        // from the ring: its failure says when it arrived, from whom, and
        // how it was answered.
        for f in failures.iter().filter(|f| packets.contains(&&f.packet_id)) {
            let seen = |wanted: fn(&HopEvent) -> bool| {
                hops.iter().any(|h| h.packet_id == f.packet_id && wanted(&h.event))
            };
            let (id, key) = (f.packet_id.as_str(), key_text(&f.key));
            if !seen(|e| matches!(e, HopEvent::Arrived { .. } | HopEvent::Sent { .. })) {
                let at_ms = f.at_ms.saturating_sub(f.duration_ms);
                list.push(
                    json!({"at_ms": at_ms, "packet_id": id, "key": key, "event": "arrived", "from": f.from}),
                );
            }
            if !seen(|e| matches!(e, HopEvent::Answered { .. })) {
                list.push(json!({"at_ms": f.at_ms, "packet_id": id, "key": key, "event": "answered",
                    "served_by": f.served_by, "code": f.code, "duration_ms": f.duration_ms}));
            }
        }
        // In time order; within a millisecond, in the order hops happen.
        let rank = |h: &Value| match h["event"].as_str() {
            Some("arrived") => 0,
            Some("sent") => 1,
            _ => 2,
        };
        list.sort_by_key(|h| (h["at_ms"].as_u64(), rank(h)));
        let failed: Vec<Value> = failures
            .iter()
            .filter(|f| packets.contains(&&f.packet_id))
            .map(|f| json!({"packet_id": f.packet_id.as_str(), "code": f.code, "message": f.message}))
            .collect();
        json!({"trace_id": trace_id, "hops": list, "failures": failed})
    }
}

/// How `by` reads, with connections named by `name`.
pub(crate) fn served_by(by: ServedBy, name: &dyn Fn(u64) -> String) -> String {
    match by {
        ServedBy::ThisNode => "this node".into(),
        ServedBy::Peer(id) => name(id),
        ServedBy::DefaultRoute => "a peer on the default route".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    fn key(e: &str) -> Key {
        (Group::DataFlow, Element::new(e).unwrap())
    }

    fn names(id: u64) -> String {
        format!("conn{id}")
    }

    #[test]
    fn failures_are_bounded_newest_first_and_counted_by_code() {
        let r = Recorder::default();
        for i in 0..FAILURES_KEPT + 5 {
            let id = PacketId::new(&format!("p{i}")).unwrap();
            let e = PfError::new(ErrorCode::HandlerFailed, format!("boom {i}"));
            r.refill_budgets();
            r.failed(&key("x"), &id, &e, 3, || "conn7".into(), || "conn9".into());
        }
        r.failed(
            &key("y"),
            &PacketId::new("late").unwrap(),
            &PfError::new(ErrorCode::Timeout, "late"),
            30,
            || "this node".into(),
            || "this node".into(),
        );
        assert_eq!(r.failures.lock().len(), FAILURES_KEPT);
        let list = r.failures(3);
        assert_eq!(list[0]["code"], "PF408");
        assert_eq!(list[0]["from"], "this node");
        assert_eq!(list[1]["message"], format!("boom {}", FAILURES_KEPT + 4));
        assert_eq!(list[1]["from"], "conn7");
        assert_eq!(list[1]["served_by"], "conn9");
        assert_eq!(r.errors_by_code(), json!({"PF500": FAILURES_KEPT + 5, "PF408": 1}));
    }

    #[test]
    fn a_flood_of_failures_is_counted_but_recorded_within_its_budget() {
        let r = Recorder::default();
        let e = PfError::new(ErrorCode::Overloaded, "full");
        let mut named = 0;
        for i in 0..FAILURES_PER_SECOND + 50 {
            let id = PacketId::new(&format!("p{i}")).unwrap();
            r.failed(
                &key("x"),
                &id,
                &e,
                0,
                || {
                    named += 1;
                    "c".into()
                },
                || "s".into(),
            );
        }
        assert_eq!(r.errors_by_code(), json!({"PF429": FAILURES_PER_SECOND + 50}));
        assert_eq!(r.failures.lock().len(), FAILURES_KEPT);
        assert_eq!(named, FAILURES_PER_SECOND, "labels are made only for recorded failures");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let r = Recorder::default();
        let e = PfError::new(ErrorCode::HandlerFailed, "é".repeat(MESSAGE_KEPT));
        r.failed(&key("x"), &PacketId::new("p").unwrap(), &e, 0, || "a".into(), || "b".into());
        let message = r.failures(1)[0]["message"].as_str().unwrap().to_owned();
        assert!(message.len() <= MESSAGE_KEPT + '…'.len_utf8() && message.ends_with('…'));
    }

    #[test]
    fn hops_stop_when_the_budget_is_spent_and_start_again_when_refilled() {
        let r = Recorder::default();
        let packet = Packet::build("df", "x", json!(1)).unwrap();
        for _ in 0..HOPS_PER_SECOND + 10 {
            r.arrived(&packet, 1, Instant::now());
        }
        assert_eq!(r.hops.lock().len(), HOPS_PER_SECOND as usize);
        r.refill_budgets();
        for _ in 0..HOPS_KEPT {
            r.refill_budgets();
            r.sent(&packet, 2, Instant::now());
        }
        assert_eq!(r.hops.lock().len(), HOPS_KEPT, "the ring keeps its bound");
    }

    #[test]
    fn a_trace_gathers_the_hops_of_its_packets_and_their_failures() {
        let r = Recorder::default();
        let root = Packet::build("df", "a", json!(1)).unwrap();
        let mut meta = serde_json::Map::new();
        meta.insert(META_TRACE_ID.into(), root.id.as_str().into());
        let child = Packet::build("df", "b", json!(2)).unwrap().with_metadata(meta);
        let other = Packet::build("df", "c", json!(3)).unwrap();
        r.arrived(&root, 1, Instant::now());
        r.arrived(&other, 1, Instant::now());
        r.sent(&child, 2, Instant::now());
        let e = PfError::new(ErrorCode::HandlerFailed, "child failed");
        r.answered(&key("b"), &child.id, &Err(e.clone()), 4, ServedBy::Peer(2));
        r.failed(&key("b"), &child.id, &e, 4, || "this node".into(), || "conn2".into());
        let trace = r.trace(root.id.as_str(), &names);
        let events: Vec<&str> =
            trace["hops"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["arrived", "sent", "answered"]);
        assert_eq!(trace["hops"][1]["to"], "conn2");
        assert_eq!(trace["hops"][2]["code"], "PF500");
        assert_eq!(trace["failures"][0]["message"], "child failed");
        assert_eq!(r.trace("nothing-like-it", &names)["hops"], json!([]));
    }

    #[test]
    fn a_failure_past_the_hop_budget_still_has_its_trace() {
        let r = Recorder::default();
        let busy = Packet::build("df", "busy", json!(1)).unwrap();
        for _ in 0..HOPS_PER_SECOND {
            r.arrived(&busy, 1, Instant::now());
        }
        let failing = Packet::build("df", "b", json!(2)).unwrap();
        r.arrived(&failing, 1, Instant::now());
        let e = PfError::new(ErrorCode::HandlerFailed, "late failure");
        r.failed(&key("b"), &failing.id, &e, 7, || "conn1".into(), || "conn2".into());
        let trace = r.trace(failing.id.as_str(), &names);
        let hops = trace["hops"].as_array().unwrap();
        assert_eq!(hops.len(), 2, "{trace}");
        assert_eq!((hops[0]["event"].as_str(), hops[0]["from"].as_str()), (Some("arrived"), Some("conn1")));
        assert_eq!((hops[1]["event"].as_str(), hops[1]["code"].as_str()), (Some("answered"), Some("PF500")));
        assert_eq!(hops[1]["served_by"], "conn2");
        assert!(hops[0]["at_ms"].as_u64() <= hops[1]["at_ms"].as_u64());
    }

    #[test]
    fn routed_keys_are_counted_up_to_the_bound() {
        let r = Recorder::default();
        r.routed(&key("a"), 100, false);
        r.routed(&key("a"), 200, true);
        let stats = r.routed_stats();
        assert_eq!((stats[0].count, stats[0].errors), (2, 1));
        for i in 0..ROUTED_KEYS_KEPT + 3 {
            r.routed(&key(&format!("k{i}")), 1, false);
        }
        assert_eq!(r.routed_stats().len(), ROUTED_KEYS_KEPT);
    }
}
