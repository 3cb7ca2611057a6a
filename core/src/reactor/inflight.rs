//! Which packet ids are in flight (PF409), which recently finished and how,
//! and who waits for them (dependencies, PF424).
//!
//! One map holds all three, so a packet costs one lookup to start and one
//! to finish; finished ids are forgotten oldest first past `memory`.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::packet::PacketId;

/// How a dependency ended, as seen by the packets that wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
}

enum State {
    /// A packet with this id runs now.
    Running,
    /// It finished (and is remembered for late dependents).
    Finished(Outcome),
    /// Not seen yet; dependents wait for it.
    Awaited,
}

struct Entry {
    state: State,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

struct Table {
    entries: HashMap<PacketId, Entry>,
    /// Finished ids, oldest first, for forgetting them.
    finished: VecDeque<PacketId>,
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
        Inflight { table: Mutex::new(Table { entries: HashMap::default(), finished: VecDeque::new() }), memory }
    }

    /// Marks `id` as running; `None` if it already is (PF409). A new run of
    /// a finished id replaces what was remembered of it.
    pub(crate) fn begin(self: &Arc<Self>, id: &PacketId) -> Option<InflightGuard> {
        let mut t = self.table.lock();
        match t.entries.get_mut(id) {
            Some(Entry { state: State::Running, .. }) => return None,
            Some(entry) => entry.state = State::Running,
            None => {
                t.entries.insert(id.clone(), Entry { state: State::Running, waiters: Vec::new() });
            }
        }
        Some(InflightGuard { table: self.clone(), id: id.clone(), outcome: Outcome::Failed })
    }

    /// The state of a dependency, registering a waiter when it is not done.
    pub(crate) fn watch(&self, id: &PacketId) -> DependencyState {
        let mut t = self.table.lock();
        let entry = t
            .entries
            .entry(id.clone())
            .or_insert_with(|| Entry { state: State::Awaited, waiters: Vec::new() });
        if let State::Finished(outcome) = entry.state {
            return DependencyState::Done(outcome);
        }
        // Waiters of abandoned dependents are dropped here so an id that
        // never arrives cannot collect senders without bound.
        entry.waiters.retain(|w| !w.is_closed());
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        DependencyState::Pending(rx)
    }

    /// Removes the waiting-only entry of `id` if nobody waits on it any more.
    pub(crate) fn forget_waiter(&self, id: &PacketId) {
        let mut t = self.table.lock();
        if let Some(entry) = t.entries.get_mut(id) {
            entry.waiters.retain(|w| !w.is_closed());
            if matches!(entry.state, State::Awaited) && entry.waiters.is_empty() {
                t.entries.remove(id);
            }
        }
    }

    /// Packets running now.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().entries.values().filter(|e| matches!(e.state, State::Running)).count()
    }

    /// Entries of any kind that are not just remembered outcomes, for leak checks.
    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.table.lock().entries.values().filter(|e| !matches!(e.state, State::Finished(_))).count()
    }

    fn finish(&self, id: &PacketId, outcome: Outcome) {
        let mut t = self.table.lock();
        let Some(entry) = t.entries.get_mut(id) else { return };
        entry.state = State::Finished(outcome);
        for w in entry.waiters.drain(..) {
            let _ = w.send(outcome);
        }
        if self.memory == 0 {
            t.entries.remove(id);
            return;
        }
        t.finished.push_back(id.clone());
        if t.finished.len() > self.memory {
            let oldest = t.finished.pop_front().expect("longer than memory");
            // The id may run again or be awaited by now: forget only an outcome.
            if matches!(t.entries.get(&oldest), Some(Entry { state: State::Finished(_), .. })) {
                t.entries.remove(&oldest);
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
