//! Core futures that no Python code awaits, driven where Python runs: on an
//! event loop's thread (from its inbox) or on a handler thread (from the
//! pool's queue). The core hands the binding such work when the work's own
//! steps call into Python: an actor's mailbox loop, whose every turn is a
//! Python call. Polled on the thread that makes those calls, a turn that
//! answers lets the loop go on to the next message at once, instead of
//! waking a Tokio worker that would hand the next turn back to Python.
//!
//! Polling never blocks. On a handler thread it only queues a turn's call
//! for the pool; on a loop it starts a turn's task, whose first step runs at
//! once, as for any call that [`invoke`](crate::invoke) makes on the loop's
//! thread while serving it. If the place cannot take the work any more
//! (its loop closed, the pool stopped), the future moves to the runtime,
//! which drives it to its end: what it owes an answer to is answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Wake, Waker};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::bridge::{self, Bridge, Item, LoopJob};
use crate::pool::{NextCall, Pool, PoolJob};
use crate::runtime;

/// Where a detached future is polled.
pub(crate) enum Place {
    /// On the loop's thread, from its inbox.
    Loop(Arc<Bridge>),
    /// On a handler thread, from the pool's queue.
    Pool(Arc<Pool>),
}

/// Drives `work` to its end at `place`. Its first poll is made at once when
/// the calling thread is serving that loop right now (a submit's inline
/// poll, a drain): a message for an idle actor then runs its turn inside
/// the `send` that brought it, as a handler's first step runs inside
/// `submit`.
pub(crate) fn spawn(place: Place, work: BoxFuture<'static, ()>) {
    let task = Arc::new(Detached {
        place,
        scheduled: AtomicBool::new(true),
        orphaned: AtomicBool::new(false),
        work: Mutex::new(Some(work)),
    });
    match &task.place {
        Place::Loop(bridge) if bridge::is_active(bridge) => task.poll(),
        _ => task.schedule(),
    }
}

struct Detached {
    place: Place,
    /// A poll is queued (set before queueing it, cleared before polling).
    scheduled: AtomicBool,
    /// The place can no longer drive the work (its loop closed, the pool
    /// stopped): whoever holds the work next hands it to the runtime.
    orphaned: AtomicBool,
    work: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Detached {
    /// Queues a poll at its place.
    fn schedule(self: &Arc<Self>) {
        match &self.place {
            Place::Loop(bridge) => bridge.push(Item::Job(Box::new(PollStep(self.clone())))),
            Place::Pool(pool) => pool.push(Box::new(PollStep(self.clone()))),
        }
    }

    /// Polls once; the runtime's context is entered for its timers. Two
    /// polls never overlap, so the lock below is never waited for: a loop's
    /// work is polled by that loop's thread alone, and the pool's by handler
    /// threads holding the GIL through a poll (which only queues calls).
    fn poll(self: &Arc<Self>) {
        self.scheduled.store(false, Ordering::Release);
        let Ok(rt) = runtime::runtime() else { return self.move_to_runtime() };
        if !self.orphaned.load(Ordering::SeqCst) {
            let _runtime = rt.enter();
            let mut work = self.work.lock();
            let Some(future) = work.as_mut() else { return };
            let waker = Waker::from(self.clone());
            if future.as_mut().poll(&mut TaskContext::from_waker(&waker)).is_ready() {
                *work = None;
                return;
            }
        }
        // A wake during the poll may have found the place gone.
        if self.orphaned.load(Ordering::SeqCst) {
            self.hand_over();
        }
    }

    /// The place is gone: the runtime drives the work from here on, handed
    /// over now or by the poll running at this moment when it ends.
    fn move_to_runtime(&self) {
        self.orphaned.store(true, Ordering::SeqCst);
        self.hand_over();
    }

    fn hand_over(&self) {
        let Some(mut slot) = self.work.try_lock() else { return };
        let Some(work) = slot.take() else { return };
        drop(slot);
        if let Ok(rt) = runtime::runtime() {
            rt.spawn(work);
        }
    }
}

impl Wake for Detached {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.schedule();
        }
    }
}

/// One queued poll of a detached future.
struct PollStep(Arc<Detached>);

impl LoopJob for PollStep {
    fn run(self: Box<Self>, _py: Python<'_>, _bridge: &Arc<Bridge>) {
        self.0.poll();
    }

    fn loop_closed(self: Box<Self>) {
        self.0.move_to_runtime();
    }
}

impl PoolJob for PollStep {
    fn abandoned(&self) -> bool {
        false
    }

    fn start<'py>(&mut self, _py: Python<'py>) -> Option<NextCall<'py>> {
        self.0.poll();
        None
    }

    fn finish(self: Box<Self>, _py: Python<'_>, _outcome: PyResult<Bound<'_, PyAny>>) {}

    fn refuse(self: Box<Self>) {
        self.0.move_to_runtime();
    }
}
