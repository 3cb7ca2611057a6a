//! Which packet ids are in flight (PF409), which recently finished and how,
//! and who waits for them (dependencies, PF424).

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::packet::PacketId;

/// How a dependency ended, as seen by the packets that wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Default)]
struct Entry {
    /// True while a packet with this id runs; false when the entry only
    /// holds waiters for an id not submitted yet.
    running: bool,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

struct Table {
    entries: HashMap<PacketId, Entry>,
    finished: HashMap<PacketId, Outcome>,
    finished_order: VecDeque<PacketId>,
}

pub(crate) struct Inflight {
    table: Mutex<Table>,
    /// How many finished ids are remembered for late dependents.
    memory: usize,
}

/// Where a dependency stands when a dependent asks.
pub(crate) enum DependencyState {
    Done(Outcome),
    Pending(oneshot::Receiver<Outcome>),
}

impl Inflight {
    pub(crate) fn new(memory: usize) -> Inflight {
        Inflight {
            table: Mutex::new(Table {
                entries: HashMap::default(),
                finished: HashMap::default(),
                finished_order: VecDeque::new(),
            }),
            memory,
        }
    }

    /// Marks `id` as running; `None` if it already is (PF409).
    pub(crate) fn begin(self: &Arc<Self>, id: &PacketId) -> Option<InflightGuard> {
        let mut t = self.table.lock();
        let entry = t.entries.entry(id.clone()).or_default();
        if entry.running {
            return None;
        }
        entry.running = true;
        // A new run of a finished id: its dependents wait for this run.
        t.finished.remove(id);
        Some(InflightGuard { table: self.clone(), id: id.clone(), outcome: Outcome::Failed })
    }

    /// The state of a dependency, registering a waiter when it is not done.
    pub(crate) fn watch(&self, id: &PacketId) -> DependencyState {
        let mut t = self.table.lock();
        if let Some(outcome) = t.finished.get(id) {
            return DependencyState::Done(*outcome);
        }
        let (tx, rx) = oneshot::channel();
        let entry = t.entries.entry(id.clone()).or_default();
        // Waiters of abandoned dependents are dropped here so an id that
        // never arrives cannot collect senders without bound.
        entry.waiters.retain(|w| !w.is_closed());
        entry.waiters.push(tx);
        DependencyState::Pending(rx)
    }

    /// Removes the waiting-only entry of `id` if nobody waits on it any more.
    pub(crate) fn forget_waiter(&self, id: &PacketId) {
        let mut t = self.table.lock();
        if let Some(entry) = t.entries.get_mut(id) {
            entry.waiters.retain(|w| !w.is_closed());
            if !entry.running && entry.waiters.is_empty() {
                t.entries.remove(id);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.lock().entries.values().filter(|e| e.running).count()
    }

    /// Entries of any kind (running or only awaited), for leak checks.
    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.table.lock().entries.len()
    }

    fn finish(&self, id: &PacketId, outcome: Outcome) {
        let mut t = self.table.lock();
        if let Some(entry) = t.entries.remove(id) {
            for w in entry.waiters {
                let _ = w.send(outcome);
            }
        }
        if self.memory == 0 {
            return;
        }
        if t.finished.insert(id.clone(), outcome).is_none() {
            t.finished_order.push_back(id.clone());
            if t.finished_order.len() > self.memory {
                if let Some(old) = t.finished_order.pop_front() {
                    t.finished.remove(&old);
                }
            }
        }
    }
}

/// Marks an id as running until dropped; the drop publishes the outcome to
/// dependents (a guard dropped without `succeed` counts as a failure, which
/// covers cancellation and panics).
pub(crate) struct InflightGuard {
    table: Arc<Inflight>,
    id: PacketId,
    outcome: Outcome,
}

impl InflightGuard {
    pub(crate) fn succeed(&mut self) {
        self.outcome = Outcome::Succeeded;
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.table.finish(&self.id, self.outcome);
    }
}
