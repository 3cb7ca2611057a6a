//! Which packet ids are in flight (PF409), which recently finished and how,
//! and who waits for them (dependencies, PF424).
//!
//! Every packet passes through here twice, so the table is built for that:
//! an id is hashed once (the guard keeps the hash), packets in flight live in
//! a table keyed by that hash and compared by id, and finished outcomes are
//! remembered by hash alone (no string, no reference count) for the last
//! `memory` ids that finished, oldest forgotten first. Two ids of one hash
//! among the last `memory` finished ones (odds about `memory / 2^64`) would
//! share an outcome. Forgetting is done in bulk (a sequential sweep once the
//! table holds twice `memory`), not by looking up the oldest entry at each
//! finish: that entry is long out of the CPU's caches, and that lookup was
//! the costliest step of a packet here. The sweep moves the remembered
//! half into a second table kept for the purpose (the two swap roles), so
//! that no erased slots are left for a later insert to clean up.
//!
//! The table is also where a packet is cancelled ([`Inflight::cancel`]):
//! its entry holds its cancellation signal, made only when something needs
//! it (a submitter that waits, a handler that asks, a cancel), so a packet
//! nobody cancels or watches costs nothing more. The signal fires when the
//! packet is cancelled, and when it ends in any way: work its handler left
//! running beside it is no longer wanted then.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::packet::PacketId;

/// How a dependency ended, as seen by the packets that wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    /// Cancelled, or abandoned by its submitter (a failure to dependents).
    Cancelled,
}

/// How a packet in flight is answered, which decides how it is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// By a future of this node (a local run, or a forward that awaits the
    /// peer's answer): the future sees the signal.
    Awaited,
    /// Relayed by a connection without a future: the node's forwarder
    /// cancels it ([`Cancel::Relayed`]).
    Relayed,
    /// The id of an actor API message's turn, marked once read: it is not
    /// a packet anyone submitted, and cannot be cancelled by id.
    Marked,
}

struct Entry {
    id: PacketId,
    hash: u64,
    /// True while a packet with this id runs; false while the entry only
    /// holds waiters for an id not submitted yet.
    running: bool,
    kind: Kind,
    /// The connection the packet came in on (0: submitted in this process):
    /// a peer may cancel only what it submitted.
    origin: u64,
    waiters: Vec<oneshot::Sender<Outcome>>,
    /// The packet's cancellation signal, once something needed it; fired
    /// when the packet is cancelled or ends.
    signal: Option<CancellationToken>,
}

impl Entry {
    fn cancelled(&self) -> bool {
        self.signal.as_ref().is_some_and(CancellationToken::is_cancelled)
    }
}

/// What [`Inflight::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// No such packet in flight (from that origin): nothing was done.
    NotInFlight,
    /// Cancelled (now, or by an earlier call): whatever answers it
    /// answers PF499.
    Cancelled,
    /// A relayed packet, cancelled now for the first time: the forwarder
    /// must withdraw it from its peer and answer it.
    Relayed,
}

struct Table {
    live: HashTable<Entry>,
    running: usize,
    finished: HashTable<Finished>,
    /// An empty table with the capacity of `finished`, swapped in at the
    /// next sweep.
    spare: HashTable<Finished>,
    /// How many ids were added to `finished` so far (the last one's `at`).
    finishes: u64,
}

pub(crate) struct Inflight {
    table: Mutex<Table>,
    /// Messages sent through the actor API and not answered yet: they have
    /// no packet id in the table (see [`Inflight::count_ask`]), but are in
    /// flight all the same.
    asks: AtomicUsize,
    hasher: foldhash::fast::RandomState,
    /// How many finished ids are remembered for late dependents.
    memory: usize,
}

/// Where a dependency stands when a dependent asks.
pub(crate) enum DependencyState {
    Done(Outcome),
    Pending(oneshot::Receiver<Outcome>),
}

/// A finished id's outcome, by hash.
struct Finished {
    hash: u64,
    outcome: Outcome,
    /// Its number among the ids added to `finished` (1, 2, ...): it is
    /// remembered while it is one of the last `memory`.
    at: u64,
}

impl Table {
    fn live_mut(&mut self, hash: u64, id: &PacketId) -> Option<&mut Entry> {
        self.live.find_mut(hash, |e| e.id == *id)
    }

    fn remove_live(&mut self, hash: u64, id: &PacketId) -> Option<Entry> {
        self.live.find_entry(hash, |e| e.id == *id).ok().map(|found| found.remove().0)
    }
}

impl Inflight {
    pub(crate) fn new(memory: usize) -> Inflight {
        Inflight {
            table: Mutex::new(Table {
                live: HashTable::new(),
                running: 0,
                finished: HashTable::new(),
                spare: HashTable::new(),
                finishes: 0,
            }),
            asks: AtomicUsize::new(0),
            hasher: foldhash::fast::RandomState::default(),
            memory,
        }
    }

    fn hash(&self, id: &PacketId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    /// Marks `id` as running, answered by a future of this node, for a
    /// packet that came in on connection `origin` (0: this process);
    /// `None` if it already is (PF409). Its guard dropped before it is
    /// [`end`](InflightGuard::end)ed means the future was dropped: the
    /// packet was abandoned, a cancellation to its dependents.
    pub(crate) fn begin(self: &Arc<Self>, id: &PacketId, origin: u64) -> Option<InflightGuard> {
        self.begin_as(id, Kind::Awaited, origin)
    }

    /// [`begin`](Self::begin) for a packet a connection relays to a peer
    /// without a future.
    pub(crate) fn begin_relayed(self: &Arc<Self>, id: &PacketId, origin: u64) -> Option<InflightGuard> {
        self.begin_as(id, Kind::Relayed, origin)
    }

    /// Marks `id` as running without counting it in [`len`](Self::len):
    /// the id of an API message's turn, read by the turn (the message is
    /// counted by [`count_ask`](Self::count_ask) already).
    pub(crate) fn mark(self: &Arc<Self>, id: &PacketId) -> Option<InflightGuard> {
        self.begin_as(id, Kind::Marked, 0)
    }

    /// Counts a message sent through the actor API as in flight until the
    /// returned guard is dropped. Its id is made only if its turn reads it
    /// (then [`mark`](Self::mark)ed): nobody else knows it, so nothing can
    /// depend on it or repeat it before.
    pub(crate) fn count_ask(&self) -> AskCount<'_> {
        self.asks.fetch_add(1, Relaxed);
        AskCount(self)
    }

    #[inline]
    fn begin_as(self: &Arc<Self>, id: &PacketId, kind: Kind, origin: u64) -> Option<InflightGuard> {
        let hash = self.hash(id);
        let counted = !matches!(kind, Kind::Marked);
        let mut t = self.table.lock();
        match t.live_mut(hash, id) {
            Some(entry) if entry.running => return None,
            Some(entry) => {
                entry.running = true;
                entry.kind = kind;
                entry.origin = origin;
            }
            None => {
                let entry = Entry {
                    id: id.clone(),
                    hash,
                    running: true,
                    kind,
                    origin,
                    waiters: Vec::new(),
                    signal: None,
                };
                t.live.insert_unique(hash, entry, |e| e.hash);
            }
        }
        t.running += usize::from(counted);
        drop(t);
        // Until told otherwise: a future dropped before its packet's answer
        // abandoned it; a relay or a mark dropped early failed.
        let outcome = if matches!(kind, Kind::Awaited) { Outcome::Cancelled } else { Outcome::Failed };
        Some(InflightGuard { table: self.clone(), id: id.clone(), hash, outcome, counted, ended: false })
    }

    /// Cancels the packet `id` if it is in flight and came in on `origin`
    /// (any origin when `None`): its signal fires, and whatever answers it
    /// answers PF499 ([`InflightGuard::end`]). Idempotent.
    pub(crate) fn cancel(&self, id: &PacketId, origin: Option<u64>) -> Cancel {
        let hash = self.hash(id);
        let mut t = self.table.lock();
        let Some(entry) = t.live_mut(hash, id) else { return Cancel::NotInFlight };
        if !entry.running || matches!(entry.kind, Kind::Marked) || origin.is_some_and(|o| o != entry.origin) {
            return Cancel::NotInFlight;
        }
        let first = !entry.cancelled();
        let kind = entry.kind;
        let signal = entry.signal.get_or_insert_with(CancellationToken::new).clone();
        drop(t);
        // Outside the lock: firing wakes (and may run) what waits on it.
        signal.cancel();
        match kind {
            Kind::Relayed if first => Cancel::Relayed,
            _ => Cancel::Cancelled,
        }
    }

    /// The cancellation signal of the packet `id` while it runs (made now
    /// if nobody asked before); `None` once it is over.
    pub(crate) fn signal(&self, id: &PacketId) -> Option<CancellationToken> {
        self.signal_of(self.hash(id), id)
    }

    /// Whether the packet `id` was cancelled or is over (nothing made).
    pub(crate) fn is_cancelled(&self, id: &PacketId) -> bool {
        let hash = self.hash(id);
        let mut t = self.table.lock();
        t.live_mut(hash, id).filter(|e| e.running).is_none_or(|e| e.cancelled())
    }

    fn signal_of(&self, hash: u64, id: &PacketId) -> Option<CancellationToken> {
        let mut t = self.table.lock();
        let entry = t.live_mut(hash, id).filter(|e| e.running)?;
        Some(entry.signal.get_or_insert_with(CancellationToken::new).clone())
    }

    /// Whether the packet `id` ended cancelled, as far as the finished ids
    /// remembered tell.
    pub(crate) fn ended_cancelled(&self, id: &PacketId) -> bool {
        let hash = self.hash(id);
        let t = self.table.lock();
        let remembered_since = t.finishes.saturating_sub(self.memory as u64);
        t.finished
            .find(hash, |f| f.hash == hash)
            .is_some_and(|f| f.at > remembered_since && f.outcome == Outcome::Cancelled)
    }

    /// Whether a packet with `id` is running (its answer not given yet).
    pub(crate) fn is_running(&self, id: &PacketId) -> bool {
        let hash = self.hash(id);
        self.table.lock().live_mut(hash, id).is_some_and(|e| e.running)
    }

    /// The state of a dependency, registering a waiter when it is not done.
    pub(crate) fn watch(&self, id: &PacketId) -> DependencyState {
        let hash = self.hash(id);
        let mut t = self.table.lock();
        let (tx, rx) = oneshot::channel();
        if let Some(entry) = t.live_mut(hash, id) {
            // Waiters of abandoned dependents are dropped here so an id that
            // never arrives cannot collect senders without bound.
            entry.waiters.retain(|w| !w.is_closed());
            entry.waiters.push(tx);
            return DependencyState::Pending(rx);
        }
        let remembered_since = t.finishes.saturating_sub(self.memory as u64);
        if let Some(f) = t.finished.find(hash, |f| f.hash == hash).filter(|f| f.at > remembered_since) {
            return DependencyState::Done(f.outcome);
        }
        let entry = Entry {
            id: id.clone(),
            hash,
            running: false,
            kind: Kind::Awaited,
            origin: 0,
            waiters: vec![tx],
            signal: None,
        };
        t.live.insert_unique(hash, entry, |e| e.hash);
        DependencyState::Pending(rx)
    }

    /// Removes the waiting-only entry of `id` if nobody waits on it any more.
    pub(crate) fn forget_waiter(&self, id: &PacketId) {
        let hash = self.hash(id);
        let mut t = self.table.lock();
        let Some(entry) = t.live_mut(hash, id) else { return };
        entry.waiters.retain(|w| !w.is_closed());
        if !entry.running && entry.waiters.is_empty() {
            t.remove_live(hash, id);
        }
    }

    /// Packets running now, and API messages not answered yet.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().running + self.asks.load(Relaxed)
    }

    /// Entries of ids running or awaited, for leak checks.
    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.table.lock().live.len()
    }

    /// Ends the packet `id`; returns whether it was cancelled (its outcome
    /// then is [`Outcome::Cancelled`], whatever `outcome` said).
    fn finish(&self, hash: u64, id: &PacketId, outcome: Outcome, counted: bool) -> bool {
        let mut t = self.table.lock();
        let Some(entry) = t.remove_live(hash, id) else { return false };
        t.running -= usize::from(counted);
        let cancelled = entry.cancelled();
        let outcome = if cancelled { Outcome::Cancelled } else { outcome };
        if self.memory > 0 {
            let memory = self.memory as u64;
            let Table { finished, spare, finishes, .. } = &mut *t;
            let remembered_since = finishes.saturating_sub(memory);
            match finished.find_mut(hash, |f| f.hash == hash) {
                // Finished again while remembered: the new outcome, kept as
                // long as the first one would have been.
                Some(f) if f.at > remembered_since => f.outcome = outcome,
                // Forgotten already (not swept yet): remembered anew.
                Some(f) => {
                    *finishes += 1;
                    *f = Finished { hash, outcome, at: *finishes };
                }
                None => {
                    *finishes += 1;
                    let at = *finishes;
                    finished.insert_unique(hash, Finished { hash, outcome, at }, |f| f.hash);
                    if finished.len() >= 2 * self.memory {
                        // The remembered half is moved into the spare table
                        // rather than the rest erased in place: erased slots
                        // stay as tombstones until an insert pays for an
                        // in-place rehash of the whole table.
                        spare.reserve(self.memory, |f| f.hash);
                        for f in finished.drain().filter(|f| f.at + memory > at) {
                            spare.insert_unique(f.hash, f, |f| f.hash);
                        }
                        std::mem::swap(finished, spare);
                    }
                }
            }
        }
        drop(t);
        for w in entry.waiters {
            let _ = w.send(outcome);
        }
        // The packet is over: what still watches it stops.
        if let Some(signal) = entry.signal {
            signal.cancel();
        }
        cancelled
    }
}

/// Marks an id as running until [`end`](Self::end)ed or dropped; either
/// publishes the outcome to dependents. A guard dropped without `succeed`
/// counts as a failure (a relay's or a mark's, which covers panics) or as a
/// cancellation (one of [`Inflight::begin`]: its future was dropped; see
/// also [`abandon`](Self::abandon)).
pub(crate) struct InflightGuard {
    table: Arc<Inflight>,
    id: PacketId,
    hash: u64,
    outcome: Outcome,
    /// Counted in [`Inflight::len`] (not a [`mark`](Inflight::mark)).
    counted: bool,
    /// [`end`](Self::end) ran: nothing left for the drop.
    ended: bool,
}

impl InflightGuard {
    pub(crate) fn succeed(&mut self) {
        self.outcome = Outcome::Succeeded;
    }

    /// The packet's submitter stopped waiting: dependents see a
    /// cancellation.
    pub(crate) fn abandon(&mut self) {
        self.outcome = Outcome::Cancelled;
    }

    /// The packet's cancellation signal (made now if nobody asked before).
    pub(crate) fn signal(&self) -> CancellationToken {
        self.table.signal_of(self.hash, &self.id).unwrap_or_else(|| {
            // Not reachable while the guard lives; a fired signal is the
            // safe answer for a packet that is over.
            let over = CancellationToken::new();
            over.cancel();
            over
        })
    }

    /// The answer of this packet cancelled (PF499).
    pub(crate) fn cancelled(&self) -> crate::error::PfError {
        super::cancelled_error(&self.id)
    }

    /// Ends the packet now with its answer, succeeded or failed; returns
    /// whether it was cancelled first (its answer must then be PF499).
    pub(crate) fn end(&mut self, succeeded: bool) -> bool {
        debug_assert!(!self.ended, "a packet ends once");
        self.ended = true;
        let outcome = if succeeded { Outcome::Succeeded } else { Outcome::Failed };
        self.table.finish(self.hash, &self.id, outcome, self.counted)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.table.finish(self.hash, &self.id, self.outcome, self.counted);
        }
    }
}

/// An API message counted in flight (see [`Inflight::count_ask`]).
pub(crate) struct AskCount<'a>(&'a Inflight);

impl Drop for AskCount<'_> {
    fn drop(&mut self) {
        self.0.asks.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(table: &Arc<Inflight>, id: &str, ok: bool) {
        let mut guard = table.begin(&PacketId::new(id).unwrap(), 0).expect("not in flight");
        assert!(!guard.end(ok), "not cancelled");
    }

    fn remembered(table: &Inflight, id: &str) -> Option<Outcome> {
        let id = PacketId::new(id).unwrap();
        let outcome = match table.watch(&id) {
            DependencyState::Done(outcome) => Some(outcome),
            DependencyState::Pending(_) => None,
        };
        // The waiter registered by `watch` is gone by now.
        table.forget_waiter(&id);
        outcome
    }

    #[test]
    fn remembers_exactly_the_last_memory_finished_ids() {
        let table = Arc::new(Inflight::new(4));
        // Enough finishes to sweep the table several times.
        for i in 0..50 {
            finish(&table, &format!("p{i}"), i % 2 == 0);
            for j in 0..=i {
                let expected =
                    (j + 4 > i).then_some(if j % 2 == 0 { Outcome::Succeeded } else { Outcome::Failed });
                assert_eq!(remembered(&table, &format!("p{j}")), expected, "p{j} after p{i}");
            }
            assert!(table.table.lock().finished.len() < 8, "swept");
        }
        assert_eq!(table.entry_count(), 0, "no waiter left behind");
    }

    #[test]
    fn an_id_finished_again_keeps_its_place_or_is_remembered_anew() {
        let table = Arc::new(Inflight::new(2));
        finish(&table, "a", true);
        finish(&table, "b", true);
        // Still remembered: the new outcome, in its old place.
        finish(&table, "a", false);
        assert_eq!(remembered(&table, "a"), Some(Outcome::Failed));
        finish(&table, "c", true);
        assert_eq!(remembered(&table, "a"), None, "a is older than b and c");
        // Forgotten (but not swept yet): remembered anew.
        finish(&table, "a", true);
        assert_eq!(remembered(&table, "a"), Some(Outcome::Succeeded));
        assert_eq!(remembered(&table, "c"), Some(Outcome::Succeeded));
        assert_eq!(remembered(&table, "b"), None);
    }

    #[test]
    fn a_dropped_or_cancelled_packet_is_remembered_as_cancelled() {
        let table = Arc::new(Inflight::new(4));
        let id = |s: &str| PacketId::new(s).unwrap();
        // A future dropped before its answer: abandoned.
        drop(table.begin(&id("dropped"), 0).unwrap());
        assert_eq!(remembered(&table, "dropped"), Some(Outcome::Cancelled));
        // Cancelled, then answered with success all the same: cancelled.
        let mut guard = table.begin(&id("cancelled"), 3).unwrap();
        assert_eq!(table.cancel(&id("cancelled"), Some(4)), Cancel::NotInFlight, "another origin's");
        assert_eq!(table.cancel(&id("cancelled"), Some(3)), Cancel::Cancelled);
        assert!(guard.signal().is_cancelled());
        assert!(guard.end(true));
        assert_eq!(remembered(&table, "cancelled"), Some(Outcome::Cancelled));
        assert_eq!(table.cancel(&id("cancelled"), None), Cancel::NotInFlight, "over");
        // A relay is the forwarder's to withdraw, once; a mark cannot be cancelled.
        let relay = table.begin_relayed(&id("relay"), 1).unwrap();
        assert_eq!(table.cancel(&id("relay"), None), Cancel::Relayed);
        assert_eq!(table.cancel(&id("relay"), None), Cancel::Cancelled, "idempotent");
        drop(relay);
        let mark = table.mark(&id("mark")).unwrap();
        assert_eq!(table.cancel(&id("mark"), None), Cancel::NotInFlight);
        drop(mark);
        // A signal fetched while a packet runs fires when it ends.
        let mut guard = table.begin(&id("watched"), 0).unwrap();
        let signal = table.signal(&id("watched")).unwrap();
        assert!(!signal.is_cancelled());
        assert!(!guard.end(true));
        assert!(signal.is_cancelled());
        assert!(table.signal(&id("watched")).is_none());
        assert_eq!(table.entry_count(), 0);
    }

    #[test]
    fn memory_zero_remembers_nothing() {
        let table = Arc::new(Inflight::new(0));
        finish(&table, "a", true);
        assert_eq!(remembered(&table, "a"), None);
    }
}
