//! Bounded concurrency with a bounded, priority-ordered wait queue.
//!
//! A packet that finds a free slot takes it with one short lock and runs at
//! once in its submitter's task. Otherwise it waits in a heap ordered by
//! priority (10 first), then by arrival (FIFO within a priority). A finishing
//! packet hands its slot straight to the best waiter, so the order holds even
//! when many packets finish at once.
//!
//! A wait that is given up (its packet cancelled, or past its deadline)
//! leaves its entry in the heap, to be skipped when it comes up: it is
//! counted as abandoned at once, so [`Scheduler::queued`] reports only the
//! packets that still wait, and swept out once abandoned entries are the
//! majority, so memory follows the waiting packets too.
//!
//! Both bounds may change while packets run ([`Scheduler::set_max_running`],
//! [`Scheduler::set_max_queued`]): the reactor's own (`max_inflight`,
//! `max_queue`, `mc:tune`) and a key's (`mc:scale`, one scheduler per
//! limited key). A raised limit hands the new slots to waiters at once; a
//! lowered one lets what runs finish and hands out no slot until fewer run
//! than the new limit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::packet::Priority;

struct Waiter {
    priority: Priority,
    arrival: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then earlier arrival first.
        self.priority.cmp(&other.priority).then_with(|| other.arrival.cmp(&self.arrival))
    }
}

struct State {
    max_running: usize,
    max_queued: usize,
    running: usize,
    arrivals: u64,
    queue: BinaryHeap<Waiter>,
    /// Entries of `queue` whose wait was given up (closed receivers).
    abandoned: usize,
}

impl State {
    fn sweep(&mut self) {
        self.queue.retain(|w| !w.wake.is_closed());
        self.abandoned = 0;
    }
}

pub(crate) struct Scheduler {
    state: Mutex<State>,
}

/// Why a packet could not get a slot.
pub(crate) enum Refused {
    /// The wait queue is full (PF429).
    QueueFull,
}

/// A run slot as `acquire` hands it out: held at once, or a place in the
/// wait queue.
pub(crate) enum RunSlot {
    /// A slot was free.
    Now(Permit),
    /// Wait for the slot on this receiver (and give it back via `Waiting`'s
    /// drop if the wait is abandoned).
    Later(Waiting),
}

/// A held slot; dropping it hands the slot to the next waiter.
pub(crate) struct Permit {
    scheduler: Arc<Scheduler>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.scheduler.release();
    }
}

/// A place in the wait queue.
pub(crate) struct Waiting {
    scheduler: Arc<Scheduler>,
    wake: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// Waits for the slot. Cancel-safe: dropping the future (deadline,
    /// shutdown) leaves the slot accounting correct through `Drop`.
    pub(crate) async fn granted(mut self) -> Permit {
        let rx = self.wake.as_mut().expect("granted is called once");
        // The sender lives in the queue until it is woken or purged; a
        // purge only happens to closed receivers, so this always resolves.
        let _ = rx.await;
        self.wake = None;
        Permit { scheduler: self.scheduler.clone() }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.wake.take() {
            // Under the lock, so that `release` never sees the receiver
            // closed before it was counted as abandoned.
            let mut state = self.scheduler.state.lock();
            rx.close();
            // The slot may have been handed over just before the wait was
            // abandoned: pass it on rather than lose it.
            if rx.try_recv().is_ok() {
                self.scheduler.release_locked(&mut state);
                return;
            }
            state.abandoned += 1;
            if state.abandoned > 64 && state.abandoned * 2 > state.queue.len() {
                state.sweep();
            }
        }
    }
}

impl Scheduler {
    pub(crate) fn new(max_running: usize, max_queued: usize) -> Scheduler {
        Scheduler {
            state: Mutex::new(State {
                max_running: max_running.max(1),
                max_queued,
                running: 0,
                arrivals: 0,
                queue: BinaryHeap::new(),
                abandoned: 0,
            }),
        }
    }

    pub(crate) fn acquire(self: &Arc<Self>, priority: Priority) -> Result<RunSlot, Refused> {
        let mut state = self.state.lock();
        if state.running < state.max_running && state.queue.is_empty() {
            state.running += 1;
            return Ok(RunSlot::Now(Permit { scheduler: self.clone() }));
        }
        if state.queue.len() >= state.max_queued {
            // Waiters that gave up are only removed lazily; purge them
            // before refusing, so that abandoned waits never cause a PF429.
            state.sweep();
            if state.queue.len() >= state.max_queued {
                return Err(Refused::QueueFull);
            }
        }
        let (wake, rx) = oneshot::channel();
        let arrival = state.arrivals;
        state.arrivals += 1;
        state.queue.push(Waiter { priority, arrival, wake });
        Ok(RunSlot::Later(Waiting { scheduler: self.clone(), wake: Some(rx) }))
    }

    fn release(&self) {
        self.release_locked(&mut self.state.lock());
    }

    fn release_locked(&self, state: &mut State) {
        // Over a lowered limit: the slot is given up, not handed on.
        if state.running > state.max_running {
            state.running -= 1;
            return;
        }
        while let Some(next) = state.queue.pop() {
            if next.wake.send(()).is_ok() {
                return; // the slot moves to `next`; `running` is unchanged
            }
            state.abandoned -= 1;
        }
        state.running -= 1;
    }

    /// Packets waiting for a slot (not those that gave up).
    pub(crate) fn queued(&self) -> usize {
        let state = self.state.lock();
        state.queue.len() - state.abandoned
    }

    /// How many may run at once.
    pub(crate) fn max_running(&self) -> usize {
        self.state.lock().max_running
    }

    /// How many may wait.
    pub(crate) fn max_queued(&self) -> usize {
        self.state.lock().max_queued
    }

    /// Lets `max` run at once (at least 1) from now on; returns the limit
    /// it replaces. Slots a raised limit frees go to the best waiters now.
    pub(crate) fn set_max_running(&self, max: usize) -> usize {
        let mut state = self.state.lock();
        let previous = std::mem::replace(&mut state.max_running, max.max(1));
        while state.running < state.max_running {
            let Some(next) = state.queue.pop() else { break };
            if next.wake.send(()).is_ok() {
                state.running += 1;
            } else {
                state.abandoned -= 1;
            }
        }
        previous
    }

    /// Lets `max` wait from now on; those waiting beyond it keep their
    /// place. Returns the limit it replaces.
    pub(crate) fn set_max_queued(&self, max: usize) -> usize {
        std::mem::replace(&mut self.state.lock().max_queued, max)
    }

    /// Lets every waiter run now, whatever the limit: for a key whose
    /// limit was lifted (its packets no longer come here).
    pub(crate) fn release_all(&self) {
        self.set_max_running(usize::MAX);
    }
}
