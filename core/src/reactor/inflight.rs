//! Which packet ids are in flight (PF409), which recently finished and how,
//! and who waits for them (dependencies, PF424).
//!
//! Every packet passes through here twice, so the table is built for that:
//! an id is hashed once (the guard keeps the hash), packets in flight live in
//! a table keyed by that hash and compared by id, and finished outcomes are
//! remembered by hash alone (no string, no reference count) in a ring of
//! `memory` entries, oldest forgotten first. Two ids of one hash among the
//! last `memory` finished ones (odds about `memory / 2^64`) would share an
//! outcome.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::packet::PacketId;

/// How a dependency ended, as seen by the packets that wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
}

struct Entry {
    id: PacketId,
    hash: u64,
    /// True while a packet with this id runs; false while the entry only
    /// holds waiters for an id not submitted yet.
    running: bool,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

struct Table {
    live: HashTable<Entry>,
    running: usize,
    finished: HashTable<(u64, Outcome)>,
    /// Hashes of finished ids, oldest first.
    finished_order: VecDeque<u64>,
}

pub(crate) struct Inflight {
    table: Mutex<Table>,
    hasher: foldhash::fast::RandomState,
    /// How many finished ids are remembered for late dependents.
    memory: usize,
}

/// Where a dependency stands when a dependent asks.
pub(crate) enum DependencyState {
    Done(Outcome),
    Pending(oneshot::Receiver<Outcome>),
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
                finished_order: VecDeque::new(),
            }),
            hasher: foldhash::fast::RandomState::default(),
            memory,
        }
    }

    fn hash(&self, id: &PacketId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    /// Marks `id` as running; `None` if it already is (PF409).
    pub(crate) fn begin(self: &Arc<Self>, id: &PacketId) -> Option<InflightGuard> {
        let hash = self.hash(id);
        let mut t = self.table.lock();
        match t.live_mut(hash, id) {
            Some(entry) if entry.running => return None,
            Some(entry) => entry.running = true,
            None => {
                let entry = Entry { id: id.clone(), hash, running: true, waiters: Vec::new() };
                t.live.insert_unique(hash, entry, |e| e.hash);
            }
        }
        t.running += 1;
        drop(t);
        Some(InflightGuard { table: self.clone(), id: id.clone(), hash, outcome: Outcome::Failed })
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
        if let Some((_, outcome)) = t.finished.find(hash, |(h, _)| *h == hash) {
            return DependencyState::Done(*outcome);
        }
        let entry = Entry { id: id.clone(), hash, running: false, waiters: vec![tx] };
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

    /// Packets running now.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().running
    }

    /// Entries of ids running or awaited, for leak checks.
    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.table.lock().live.len()
    }

    fn finish(&self, hash: u64, id: &PacketId, outcome: Outcome) {
        let mut t = self.table.lock();
        let Some(entry) = t.remove_live(hash, id) else { return };
        t.running -= 1;
        if self.memory > 0 {
            match t.finished.find_mut(hash, |(h, _)| *h == hash) {
                Some(remembered) => remembered.1 = outcome,
                None => {
                    t.finished.insert_unique(hash, (hash, outcome), |(h, _)| *h);
                    t.finished_order.push_back(hash);
                    if t.finished_order.len() > self.memory {
                        let oldest = t.finished_order.pop_front().expect("longer than memory");
                        if let Ok(found) = t.finished.find_entry(oldest, |(h, _)| *h == oldest) {
                            found.remove();
                        }
                    }
                }
            }
        }
        drop(t);
        for w in entry.waiters {
            let _ = w.send(outcome);
        }
    }
}

/// Marks an id as running until dropped; the drop publishes the outcome to
/// dependents (a guard dropped without `succeed` counts as a failure, which
/// covers cancellation and panics).
pub(crate) struct InflightGuard {
    table: Arc<Inflight>,
    id: PacketId,
    hash: u64,
    outcome: Outcome,
}

impl InflightGuard {
    pub(crate) fn succeed(&mut self) {
        self.outcome = Outcome::Succeeded;
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.table.finish(self.hash, &self.id, self.outcome);
    }
}
