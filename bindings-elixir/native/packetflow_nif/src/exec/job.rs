//! A job: a future polled by whoever wakes it (see the module docs of
//! [`crate::exec`]), and where its output goes.
//!
//! Its state, and who moves it:
//!
//! ```text
//!              wake: queued in the running NIF's scope, else with its home
//!   IDLE ───────────────────────────────────────────────────▶ SCHEDULED
//!    ▲                                                           │ polled
//!    │ Pending                                                   ▼
//!    └─────────────────────────────────────────────────────── RUNNING ── Ready ──▶ DONE
//!                                                              │   ▲
//!                                            woken while polled ▼   │ Pending: polled again
//!                                                           NOTIFIED   (after 16 polls in a row:
//!                                                                       SCHEDULED, with its home)
//! ```
//!
//! A job starts SCHEDULED and is polled at once (inside the NIF that made
//! it), or, when lazy, by its home.
//!
//! A job may be withdrawn ([`Withdraw`]: the process waiting for a submit
//! ended): it is woken, and its next poll drops the future instead of
//! polling it (DONE, nothing delivered). Dropping a core future is how
//! its work is cancelled, so this happens where polls happen: inside a NIF
//! or in its home's process, never in the destructor that asked for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use rustler::Env;

use super::home::Home;
use super::{inline, Runnable};

/// Where a job's output goes, depending on where it finished.
pub trait Deliver<T>: Send + Sync + 'static {
    /// Finished inside a NIF: send with that process's environment.
    fn inline(&self, env: Env, value: T);
    /// Finished on the Tokio thread (its home's process is gone).
    fn later(&self, value: T);
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// A future polled by whoever wakes it (see the module docs).
pub struct Job<T, D> {
    state: AtomicU8,
    future: Mutex<Option<BoxFuture<T>>>,
    deliver: D,
    /// The process that polls the job when it is woken outside any NIF.
    home: Arc<Home>,
    /// Always polled by its home, even when woken inside a NIF.
    lazy: bool,
    /// Nobody wants the output any more ([`Withdraw`]): the future is
    /// dropped at the next poll instead of polled.
    withdrawn: AtomicBool,
}

/// A job that may not have finished, for whoever may give up on its output.
pub trait Withdraw: Send + Sync {
    /// Nobody wants the output any more: the future is dropped where the
    /// job is polled next (inside a NIF, or by its home), and nothing is
    /// delivered. Dropping a core future is how its work is cancelled.
    fn withdraw(self: Arc<Self>);
}

/// Polls of one job in a row (each after a wake-up that came during the
/// previous one) before it goes back to the queue: bounds the time one
/// NIF spends on a busy job. A lazy job is polled once.
const REPOLLS: usize = 16;

impl<T: Send + 'static, D: Deliver<T>> Job<T, D> {
    /// Polls `future` once, now (inside an inline scope). Returns its
    /// output if it is already done; otherwise the job is delivered to
    /// `deliver` when it finishes. `home`: the process that polls it when
    /// it is woken outside any NIF.
    pub fn start(
        future: impl Future<Output = T> + Send + 'static,
        deliver: D,
        home: &Arc<Home>,
    ) -> Option<T> {
        Self::launch(future, deliver, home).ok()
    }

    /// [`start`](Self::start), giving back the job when it is not done, for
    /// whoever may [`Withdraw`] it.
    pub fn launch(
        future: impl Future<Output = T> + Send + 'static,
        deliver: D,
        home: &Arc<Home>,
    ) -> Result<T, Arc<Self>> {
        debug_assert!(inline::active(), "jobs start inside an inline scope");
        let job = Arc::new(Job {
            state: AtomicU8::new(SCHEDULED),
            future: Mutex::new(Some(Box::pin(future))),
            deliver,
            home: Arc::clone(home),
            lazy: false,
            withdrawn: AtomicBool::new(false),
        });
        job.poll_once().ok_or(job)
    }

    /// Polls until the future is pending with no wake-up missed, or done.
    fn poll_once(self: &Arc<Self>) -> Option<T> {
        if self.state.compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return None;
        }
        let waker = Waker::from(Arc::clone(self));
        let mut cx = Context::from_waker(&waker);
        let mut slot = self.future.lock();
        // A lazy job woken while it ran goes back to the queue at once: its
        // home has its own messages to handle in between.
        let polls = if self.lazy { 1 } else { REPOLLS };
        for _ in 0..polls {
            if self.withdrawn.load(Ordering::Acquire) {
                // Dropped outside the lock: what the drop wakes may be
                // polled (it is not this job: DONE ignores wake-ups).
                let abandoned = slot.take();
                self.state.store(DONE, Ordering::Release);
                drop(slot);
                drop(abandoned);
                return None;
            }
            let Some(future) = slot.as_mut() else {
                self.state.store(DONE, Ordering::Release);
                return None;
            };
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(value) => {
                    *slot = None;
                    self.state.store(DONE, Ordering::Release);
                    return Some(value);
                }
                Poll::Pending => {
                    // A wake-up that came while polling set NOTIFIED: poll
                    // again rather than lose it.
                    match self.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return None,
                        Err(_) => self.state.store(RUNNING, Ordering::Release),
                    }
                }
            }
        }
        // Still woken after all those polls: the rest is for its home.
        drop(slot);
        self.state.store(SCHEDULED, Ordering::Release);
        self.home.defer(Arc::clone(self) as Arc<dyn Runnable>);
        None
    }
}

/// A job whose output nobody waits for.
struct Detached;

impl Deliver<()> for Detached {
    fn inline(&self, _env: Env, _value: ()) {}
    fn later(&self, _value: ()) {}
}

/// Runs `future` as a job always polled by `home`'s process: whatever
/// wakes it in the meantime (the network, handlers' answers) is handled in
/// one poll. A node's connections run this way (see `ReactorRes::node`):
/// their reads, handler calls and writes happen on the schedulers, in
/// batches.
pub fn spawn(future: impl Future<Output = ()> + Send + 'static, home: &Arc<Home>) {
    let job = Arc::new(Job {
        state: AtomicU8::new(SCHEDULED),
        future: Mutex::new(Some(Box::pin(future))),
        deliver: Detached,
        home: Arc::clone(home),
        lazy: true,
        withdrawn: AtomicBool::new(false),
    });
    job.defer();
}

/// Runs `future` as a job polled where it is woken, starting with the
/// running NIF (before it returns), or with `home`'s process when called
/// outside any NIF of this library. An actor's mailbox runs this way (see
/// `crate::actor`): the reply of a turn, a NIF in the worker that ran it,
/// commits it and starts the next turn right there.
pub fn start_detached(future: impl Future<Output = ()> + Send + 'static, home: &Arc<Home>) {
    let job = Arc::new(Job {
        state: AtomicU8::new(SCHEDULED),
        future: Mutex::new(Some(Box::pin(future))),
        deliver: Detached,
        home: Arc::clone(home),
        lazy: false,
        withdrawn: AtomicBool::new(false),
    });
    inline::schedule(job);
}

impl<T: Send + 'static, D: Deliver<T>> Runnable for Job<T, D> {
    fn run_inline(self: Arc<Self>, env: Env) {
        if let Some(value) = self.poll_once() {
            self.deliver.inline(env, value);
        }
    }

    fn run_later(self: Arc<Self>) {
        if let Some(value) = self.poll_once() {
            self.deliver.later(value);
        }
    }

    fn defer(self: Arc<Self>) {
        let home = Arc::clone(&self.home);
        home.defer(self);
    }

    fn lazy(&self) -> bool {
        self.lazy
    }
}

impl<T: Send + 'static, D: Deliver<T>> Withdraw for Job<T, D> {
    fn withdraw(self: Arc<Self>) {
        self.withdrawn.store(true, Ordering::Release);
        // Polled where it is woken: at once inside a NIF, else by its home.
        self.wake_by_ref();
    }
}

impl<T: Send + 'static, D: Deliver<T>> Wake for Job<T, D> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return, // already scheduled, notified or done
            };
            match self.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == SCHEDULED => return inline::schedule(Arc::clone(self) as Arc<dyn Runnable>),
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }
}
