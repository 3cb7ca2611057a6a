//! Core futures that no Python code awaits, driven where Python runs: on an
//! event loop's thread (from its inbox) or on a handler thread (from the
//! pool's queue). The core hands the binding such work when the work's own
//! steps call into Python: an actor's mailbox loop, whose every turn is a
//! Python call, and a network connection run on a loop (see
//! [`sockets`](crate::sockets)), whose frames reach handlers of that loop.
//! Polled on the thread that makes those calls, a turn that answers lets
//! the loop go on to the next message at once, instead of waking a Tokio
//! worker that would hand the next turn back to Python.
//!
//! Polling never blocks. On a handler thread it only queues a turn's call
//! for the pool; on a loop it starts a turn's task, whose first step runs at
//! once, as for any call that [`invoke`](crate::invoke) makes on the loop's
//! thread while serving it. If the place cannot take the work any more
//! (its loop closed, the pool stopped), the future moves to the runtime,
//! which drives it to its end: what it owes an answer to is answered.
//!
//! ```text
//!            wake: queued at its place (or polled at once, inside a
//!            readiness callback of its loop: bridge::socket_ready)
//!   IDLE ───────────────────────────────────────────────▶ SCHEDULED
//!    ▲                                                        │ polled
//!    │ Pending                                                ▼
//!    └────────────────────────────────────────────────── RUNNING ── Ready ──▶ DONE
//!                                                          │   ▲
//!                                      woken while polled  ▼   │ Pending: polled again at once
//!                                                       NOTIFIED  (after POLLS_IN_A_ROW:
//!                                                                  SCHEDULED, queued)
//! ```
//!
//! A wake while the future is being polled (its own poll answering a
//! handler inline, a frame read that completes a submit) costs no trip
//! through the inbox: the poll that is running goes round once more.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Wake, Waker};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::bridge::{self, ActiveGuard, Bridge, Item, LoopJob};
use crate::pool::{NextCall, Pool, PoolJob};
use crate::runtime;

/// Where a detached future is polled.
pub(crate) enum Place {
    /// On the loop's thread, from its inbox.
    Loop(Arc<Bridge>),
    /// On a handler thread, from the pool's queue.
    Pool(Arc<Pool>),
}

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// Polls in a row of a future woken while it was polled, before it goes
/// back to the end of its place's queue (so that one busy future does not
/// hold its place's thread).
const POLLS_IN_A_ROW: usize = 16;

/// Drives `work` to its end at `place`. Its first poll is made at once when
/// the calling thread is serving that loop right now (a submit's inline
/// poll, a drain): a message for an idle actor then runs its turn inside
/// the `send` that brought it, as a handler's first step runs inside
/// `submit`.
pub(crate) fn spawn(place: Place, work: BoxFuture<'static, ()>) {
    Detached::new(place, work).start();
}

/// A future driven at its place (see the module docs).
pub(crate) struct Detached {
    place: Place,
    /// IDLE, SCHEDULED, RUNNING, NOTIFIED or DONE (see the module docs).
    state: AtomicU8,
    /// The place can no longer drive the work (its loop closed, the pool
    /// stopped): whoever holds the work next hands it to the runtime.
    orphaned: AtomicBool,
    work: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Detached {
    /// The work, not polled yet: [`start`](Self::start) makes its first poll.
    pub(crate) fn new(place: Place, work: BoxFuture<'static, ()>) -> Arc<Detached> {
        Arc::new(Detached {
            place,
            state: AtomicU8::new(SCHEDULED),
            orphaned: AtomicBool::new(false),
            work: Mutex::new(Some(work)),
        })
    }

    /// Makes the first poll: at once when the calling thread serves the
    /// work's loop right now, else queued at its place.
    pub(crate) fn start(self: &Arc<Self>) {
        match &self.place {
            Place::Loop(bridge) if bridge::is_active(bridge) => self.poll(),
            _ => self.schedule(),
        }
    }

    /// Queues a poll at its place.
    fn schedule(self: &Arc<Self>) {
        match &self.place {
            Place::Loop(bridge) => bridge.push(Item::Job(Box::new(PollStep(self.clone())))),
            Place::Pool(pool) => pool.push(Box::new(PollStep(self.clone()))),
        }
    }

    /// Polls (the state is SCHEDULED: this caller alone polls), again at
    /// once while it is woken meanwhile; the runtime's context is entered
    /// for its timers. Two polls never overlap, so the lock below is never
    /// waited for: a loop's work is polled by that loop's thread alone, and
    /// the pool's by handler threads holding the GIL through a poll (which
    /// only queues calls).
    fn poll(self: &Arc<Self>) {
        self.state.store(RUNNING, Ordering::Release);
        let Ok(rt) = runtime::runtime() else { return self.move_to_runtime() };
        if !self.orphaned.load(Ordering::SeqCst) {
            let _runtime = rt.enter();
            let mut work = self.work.lock();
            let Some(future) = work.as_mut() else {
                self.state.store(DONE, Ordering::Release);
                return;
            };
            let waker = Waker::from(self.clone());
            let mut cx = TaskContext::from_waker(&waker);
            let mut polls = 0;
            loop {
                if future.as_mut().poll(&mut cx).is_ready() {
                    *work = None;
                    self.state.store(DONE, Ordering::Release);
                    return;
                }
                polls += 1;
                match self.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    // NOTIFIED: woken while polled.
                    Err(_) if polls < POLLS_IN_A_ROW => self.state.store(RUNNING, Ordering::Release),
                    Err(_) => {
                        self.state.store(SCHEDULED, Ordering::Release);
                        drop(work);
                        self.schedule();
                        break;
                    }
                }
            }
        }
        // A wake during the poll may have found the place gone.
        if self.orphaned.load(Ordering::SeqCst) {
            self.hand_over();
        }
    }

    /// The place is gone (or gives the work up): the runtime drives the
    /// work from here on, handed over now or by the poll running at this
    /// moment when it ends.
    pub(crate) fn move_to_runtime(&self) {
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
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                // SCHEDULED, NOTIFIED: a poll is on its way; DONE.
                _ => return,
            };
            match self.state.compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == NOTIFIED => return,
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        match &self.place {
            Place::Loop(bridge) if bridge.may_poll_woken_here() => {
                let _active = ActiveGuard::enter(bridge);
                self.poll();
            }
            _ => self.schedule(),
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
