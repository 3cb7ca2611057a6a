//! The locks and leases held by a connection's peer: what `rm:lock` and
//! `rm:alloc` granted to submits that entered this node through it, given
//! back when the connection closes (docs/protocol.md, "Holds end with
//! their holder's connection").
//!
//! A connection notes the `rm` submits its peer makes itself (that came
//! at most one hop: from the program that made them, not relayed by
//! another node, whose own entry node notes them) and reads their answers
//! as it writes them: whichever node served the element, the answer passes
//! here. An unlock or a free that succeeds ends the hold. When the
//! connection closes, each hold left is given back with an ordinary
//! submit (`rm:lock` `{unlock, token}`, `rm:free` `{lease_id}`) from this
//! node, which is harmless for a hold that ended meanwhile: a token that
//! no longer holds its lock unlocks nothing. Direct links are left out:
//! they come and go as routes get busy or idle, and the hub path of the
//! same packets does not see them.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::Value;

use super::dashboard::recorder::Key;
use super::peers::ConnId;
use crate::packet::{Group, Packet, PacketId, META_HOPS};
use crate::reactor::Reactor;
use crate::result::PacketResult;
use crate::stdlib::rm::{Asked, Hold};

/// Most holds one connection keeps: past it, new ones end at their TTL
/// only (after the expired ones are dropped).
const MAX_HOLDS: usize = 10_000;

/// The holds of every connection of a node, by connection: kept by the
/// node rather than in each connection, which costs an idle connection
/// nothing (only `rm` submits and their answers take the lock).
#[derive(Default)]
pub(crate) struct NodeHolds {
    by_connection: Mutex<HashMap<ConnId, Holds>>,
}

impl NodeHolds {
    /// Notes submit `seq` that came in on connection `conn`, if it asks
    /// for a lock or a lease or gives one back, and came straight from its
    /// submitter.
    pub(crate) fn note_submit(&self, conn: ConnId, seq: u64, packet: &Packet) {
        if !is_watched(packet.group, packet.element.as_str()) {
            return;
        }
        let hops = packet.meta(META_HOPS).and_then(Value::as_u64).unwrap_or(0);
        if hops > 1 {
            return;
        }
        let Some(asked) = Asked::read(packet.element.as_str(), &packet.data) else { return };
        let mut all = self.by_connection.lock();
        let holds = all.entry(conn).or_default();
        if holds.asked.len() < MAX_HOLDS {
            holds.asked.insert((seq, packet.id.clone()), asked);
        }
    }

    /// Reads the answer to submit `seq` of connection `conn` (to `key`),
    /// as it is written to the connection.
    pub(crate) fn note_answer(&self, conn: ConnId, seq: u64, key: &Key, result: &PacketResult) {
        if !is_watched(key.0, key.1.as_str()) {
            return;
        }
        let mut all = self.by_connection.lock();
        let Some(holds) = all.get_mut(&conn) else { return };
        holds.note_answer(seq, result);
        if holds.is_empty() {
            all.remove(&conn);
        }
    }

    /// Connection `conn` closed: gives back what its peer held.
    pub(crate) fn closed(&self, conn: ConnId, reactor: &Reactor) {
        let holds = self.by_connection.lock().remove(&conn);
        if let Some(holds) = holds {
            holds.give_back(reactor);
        }
    }
}

/// Whether `group:element` is one whose submits may take or give back a
/// hold.
fn is_watched(group: Group, element: &str) -> bool {
    group == Group::ResourceMgmt && matches!(element, "lock" | "alloc" | "free")
}

/// One connection's holds, and its `rm` submits not answered yet.
#[derive(Default)]
pub(crate) struct Holds {
    asked: HashMap<(u64, PacketId), Asked>,
    /// Each hold, with when it expires (Unix ms, its owner's clock).
    held: HashMap<Hold, u64>,
}

impl Holds {
    /// Reads the answer to submit `seq`: a lock or a lease granted is
    /// kept, one given back is let go.
    pub(crate) fn note_answer(&mut self, seq: u64, result: &PacketResult) {
        let Some(asked) = self.asked.remove(&(seq, result.packet_id.clone())) else { return };
        let Ok(answer) = &result.outcome else { return };
        if let Some(hold) = asked.gives_back() {
            self.held.remove(&hold);
            return;
        }
        let Some((hold, expires_at)) = asked.granted(answer) else { return };
        let count = self.held.len();
        if count >= MAX_HOLDS || (count >= 64 && count.is_power_of_two()) {
            // Holds that ended at their TTL are dropped now and then, so
            // that a long connection does not keep them all.
            let now = crate::net::conn::epoch_ms();
            self.held.retain(|_, at| *at > now);
            if self.held.len() >= MAX_HOLDS {
                return;
            }
        }
        self.held.insert(hold, expires_at);
    }

    /// Nothing held or asked: the table may go.
    pub(crate) fn is_empty(&self) -> bool {
        self.asked.is_empty() && self.held.is_empty()
    }

    /// The connection closed: gives back every hold not over yet, each by
    /// a submit of `reactor` (in a task: nobody waits for them).
    pub(crate) fn give_back(self, reactor: &Reactor) {
        let now = crate::net::conn::epoch_ms();
        let left: Vec<Hold> = self.held.into_iter().filter(|(_, at)| *at > now).map(|(h, _)| h).collect();
        if left.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let reactor = reactor.clone();
        runtime.spawn(async move {
            let all = left.iter().map(|hold| reactor.submit(hold.give_back()));
            futures::future::join_all(all).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn submit(element: &str, data: Value, hops: Option<u64>) -> Packet {
        let packet = Packet::build("rm", element, data).unwrap();
        match hops {
            Some(h) => packet.with_metadata([(META_HOPS.to_owned(), json!(h))].into_iter().collect()),
            None => packet,
        }
    }

    fn answered(holds: &NodeHolds, seq: u64, packet: &Packet, answer: Result<Value, crate::PfError>) {
        let result = PacketResult { packet_id: packet.id.clone(), outcome: answer, duration_ms: 0 };
        holds.note_answer(CONN, seq, &(packet.group, packet.element.clone()), &result);
    }

    const CONN: ConnId = 7;

    /// The holds of connection `CONN`.
    fn held(holds: &NodeHolds) -> Vec<Hold> {
        let all = holds.by_connection.lock();
        let mut held: Vec<Hold> =
            all.get(&CONN).map(|h| h.held.keys().cloned().collect()).unwrap_or_default();
        held.sort_by_key(|h| format!("{h:?}"));
        held
    }

    #[test]
    fn grants_are_kept_until_given_back() {
        let holds = NodeHolds::default();
        let far = crate::net::conn::epoch_ms() + 60_000;
        let lock = submit("lock", json!({"name": "db", "ttl_ms": 60_000}), None);
        let alloc = submit("alloc", json!({"resource": "gpu", "ttl_ms": 60_000}), Some(1));
        holds.note_submit(CONN, 1, &lock);
        holds.note_submit(CONN, 2, &alloc);
        answered(&holds, 1, &lock, Ok(json!({"acquired": true, "token": 7, "expires_at": far})));
        answered(&holds, 2, &alloc, Ok(json!({"lease_id": "1.ab@gpu", "expires_at": far})));
        let lock_hold = Hold::Lock { name: "db".into(), token: 7 };
        let lease_hold = Hold::Lease { lease_id: "1.ab@gpu".into() };
        assert_eq!(held(&holds), vec![lease_hold.clone(), lock_hold.clone()]);
        assert_eq!(lock_hold.give_back().data, json!({"unlock": "db", "token": 7}));
        assert_eq!(lease_hold.give_back().data, json!({"lease_id": "1.ab@gpu"}));

        // An unlock under another token lets nothing go; the right one does.
        let wrong = submit("lock", json!({"unlock": "db", "token": 6}), None);
        let unlock = submit("lock", json!({"unlock": "db", "token": 7}), None);
        let free = submit("free", json!({"lease_id": "1.ab@gpu"}), None);
        for (seq, packet) in [(3, &wrong), (4, &unlock), (5, &free)] {
            holds.note_submit(CONN, seq, packet);
        }
        answered(&holds, 3, &wrong, Ok(json!({"released": false})));
        assert_eq!(held(&holds).len(), 2);
        answered(&holds, 4, &unlock, Ok(json!({"released": true})));
        answered(&holds, 5, &free, Ok(json!({"freed": true})));
        // Nothing held: the connection's entry is gone.
        assert!(holds.by_connection.lock().is_empty());
    }

    #[test]
    fn relayed_refused_and_ungranted_submits_hold_nothing() {
        let holds = NodeHolds::default();
        // Relayed by another node (two hops): its entry node keeps it.
        holds.note_submit(CONN, 1, &submit("lock", json!({"name": "db", "ttl_ms": 5}), Some(2)));
        // Other keys, and input the element refuses.
        holds.note_submit(CONN, 2, &submit("actor.pf.lock", json!({"type": "acquire"}), None));
        holds.note_submit(CONN, 3, &submit("lock", json!({"ttl_ms": 5}), None));
        assert!(holds.by_connection.lock().is_empty());
        let far = crate::net::conn::epoch_ms() + 60_000;
        let lock = submit("lock", json!({"name": "db", "ttl_ms": 5}), None);
        let alloc = submit("alloc", json!({"resource": "gpu", "ttl_ms": 5}), None);
        holds.note_submit(CONN, 4, &lock);
        holds.note_submit(CONN, 5, &alloc);
        answered(&holds, 4, &lock, Ok(json!({"acquired": false, "token": null, "expires_at": null})));
        answered(&holds, 5, &alloc, Err(crate::PfError::new(crate::ErrorCode::Timeout, "late")));
        assert!(holds.by_connection.lock().is_empty());
        // An answer to a submit that was never noted.
        answered(&holds, 6, &lock, Ok(json!({"acquired": true, "token": 1, "expires_at": far})));
        assert!(held(&holds).is_empty());
    }

    #[test]
    fn holds_past_their_ttl_are_dropped_now_and_then() {
        let holds = NodeHolds::default();
        let (past, far) = (1, crate::net::conn::epoch_ms() + 60_000);
        for n in 0..65u64 {
            let lock = submit("lock", json!({"name": format!("l{n}"), "ttl_ms": 5}), None);
            holds.note_submit(CONN, n, &lock);
            // The first 64 ended long ago; the 65th finds 64 and drops them.
            let expires_at = if n < 64 { past } else { far };
            answered(
                &holds,
                n,
                &lock,
                Ok(json!({"acquired": true, "token": n + 1, "expires_at": expires_at})),
            );
        }
        assert_eq!(held(&holds), vec![Hold::Lock { name: "l64".into(), token: 65 }]);
    }
}
