//! Where core futures run: on the thread that wakes them.
//!
//! A submit is a core future. Handing every one to Tokio would cost two
//! cross-thread wake-ups per packet (BEAM → Tokio for the submit, and again
//! for the handler's answer), the most expensive step on a small machine.
//! Instead a submit is a [`Job`]: a future with a waker that polls it where
//! it is woken.
//!
//! - Inside one of this library's NIFs (submit, a handler's reply, a child
//!   call) an [`inline`] scope is active: a job woken there is polled before
//!   the NIF returns, and what it produces (a handler invocation, a result)
//!   is sent with the calling process's environment, `enif_send` between
//!   processes, no other thread involved. Polling never blocks: a core
//!   future only takes short locks and registers timers.
//! - Anywhere else (an answer read from the network or a deadline timer
//!   firing on the Tokio thread, a resource destructor) the job waits in
//!   its reactor's pool queue, and the pool's dispatcher polls it from a
//!   scheduler ([`Pool::poll_anywhere`]): one wake-up for every job woken
//!   meanwhile, each output sent between processes. Should the dispatcher
//!   be gone, the job is polled on the Tokio thread and its output leaves
//!   from there (`enif_send` with no caller environment).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use rustler::sys::enif_send;
use rustler::{Env, LocalPid, OwnedEnv, Term};

use crate::invocation::Call;
use crate::pool::Pool;
use crate::runtime;

/// Where a job's output goes, depending on where it finished.
pub trait Deliver<T>: Send + Sync + 'static {
    /// Finished inside a NIF: send with that process's environment.
    fn inline(&self, env: Env, value: T);
    /// Finished on the Tokio thread (the reactor's dispatcher is gone).
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
    /// The pool whose dispatcher polls the job when it is woken outside
    /// any NIF.
    home: Arc<Pool>,
    /// Always polled by the dispatcher, even when woken inside a NIF.
    lazy: bool,
}

/// Polls of one job in a row (each after a wake-up that came during the
/// previous one) before it goes back to the queue: bounds the time one
/// NIF spends on a busy job. A lazy job is polled once.
const REPOLLS: usize = 16;

/// A scheduled job, type-erased.
pub trait Runnable: Send + Sync {
    /// Polls inside an inline scope of the NIF whose environment is `env`.
    fn run_inline(self: Arc<Self>, env: Env);
    /// Polls outside the schedulers.
    fn run_later(self: Arc<Self>);
    /// Queues the job for its pool's dispatcher.
    fn defer(self: Arc<Self>);
    /// Whether the job is always left to the dispatcher.
    fn lazy(&self) -> bool;
}

impl<T: Send + 'static, D: Deliver<T>> Job<T, D> {
    /// Polls `future` once, now (inside an inline scope). Returns its
    /// output if it is already done; otherwise the job is delivered to
    /// `deliver` when it finishes. `home`: the pool of the reactor the job
    /// belongs to.
    pub fn start(
        future: impl Future<Output = T> + Send + 'static,
        deliver: D,
        home: &Arc<Pool>,
    ) -> Option<T> {
        debug_assert!(inline::active(), "jobs start inside an inline scope");
        let job = Arc::new(Job {
            state: AtomicU8::new(SCHEDULED),
            future: Mutex::new(Some(Box::pin(future))),
            deliver,
            home: Arc::clone(home),
            lazy: false,
        });
        job.poll_once()
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
        // dispatcher has its own messages to handle in between.
        let polls = if self.lazy { 1 } else { REPOLLS };
        for _ in 0..polls {
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
        // Still woken after all those polls: the rest is for the dispatcher.
        drop(slot);
        self.state.store(SCHEDULED, Ordering::Release);
        self.home.poll_anywhere(Arc::clone(self) as Arc<dyn Runnable>);
        None
    }
}

/// A job whose output nobody waits for.
struct Detached;

impl Deliver<()> for Detached {
    fn inline(&self, _env: Env, _value: ()) {}
    fn later(&self, _value: ()) {}
}

/// Runs `future` as a job of `home`'s reactor, always polled by its
/// dispatcher: whatever wakes it in the meantime (the network, handlers'
/// answers) is handled in one poll. A node's connections run this way (see
/// `ReactorRes::node`): their reads, handler calls and writes happen on the
/// schedulers, in batches.
pub fn spawn(future: impl Future<Output = ()> + Send + 'static, home: &Arc<Pool>) {
    let job = Arc::new(Job {
        state: AtomicU8::new(SCHEDULED),
        future: Mutex::new(Some(Box::pin(future))),
        deliver: Detached,
        home: Arc::clone(home),
        lazy: true,
    });
    job.defer();
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
        home.poll_anywhere(self);
    }

    fn lazy(&self) -> bool {
        self.lazy
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

thread_local! {
    /// A message environment per scheduler thread, reused for every send.
    static MESSAGE_ENV: RefCell<Option<OwnedEnv>> = const { RefCell::new(None) };
}

/// Sends a message from inside a NIF whose environment is `caller`,
/// building it in a process-independent environment that `enif_send`
/// hands over whole to the receiver. Building it in the caller's heap
/// instead would copy it, and would leave references to resources there
/// until the caller's next garbage collection (keeping an abandoned
/// invocation alive).
pub fn send_from(caller: Env, to: &LocalPid, build: impl for<'m> FnOnce(Env<'m>) -> Term<'m>) -> bool {
    MESSAGE_ENV.with(|slot| {
        let mut slot = slot.borrow_mut();
        let owned = slot.get_or_insert_with(OwnedEnv::new);
        let sent = owned.run(|env| {
            let message = build(env);
            // SAFETY: `caller` is the environment of the running NIF's
            // process, `env` a process-independent one holding `message`.
            unsafe { enif_send(caller.as_c_arg(), to.as_c_arg(), env.as_c_arg(), message.as_c_arg()) == 1 }
        });
        // A successful send invalidates the environment; a failed one
        // leaves the message in it. Either way it is cleared for reuse.
        owned.clear();
        sent
    })
}

/// The inline scope: what a NIF collects while it runs and sends before it
/// returns.
pub mod inline {
    use super::*;

    struct Scope {
        woken: Vec<Arc<dyn Runnable>>,
        calls: Vec<(Arc<Pool>, Call)>,
        /// Pools whose dispatcher is to be woken (`:pf_route`).
        wake: Vec<Arc<Pool>>,
    }

    thread_local! {
        static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
    }

    /// Whether an inline scope is active on this thread.
    pub fn active() -> bool {
        SCOPE.with(|s| s.borrow().is_some())
    }

    pub(crate) fn schedule(job: Arc<dyn Runnable>) {
        if job.lazy() {
            return job.defer();
        }
        let job = SCOPE.with(|s| match s.borrow_mut().as_mut() {
            Some(scope) => {
                scope.woken.push(job);
                None
            }
            None => Some(job),
        });
        if let Some(job) = job {
            job.defer();
        }
    }

    /// Wakes `pool`'s dispatcher with this NIF's environment when it ends;
    /// `false` when no scope is active.
    pub fn wake_dispatcher(pool: &Arc<Pool>) -> bool {
        SCOPE.with(|s| match s.borrow_mut().as_mut() {
            Some(scope) => {
                scope.wake.push(Arc::clone(pool));
                true
            }
            None => false,
        })
    }

    /// Queues a handler invocation to leave with this NIF's environment;
    /// gives it back when no scope is active.
    pub fn push_call(pool: &Arc<Pool>, call: Call) -> Result<(), Call> {
        SCOPE.with(|s| match s.borrow_mut().as_mut() {
            Some(scope) => {
                scope.calls.push((Arc::clone(pool), call));
                Ok(())
            }
            None => Err(call),
        })
    }

    /// Ends the scope even if the NIF panicked: jobs still scheduled and
    /// calls go to their pools' dispatchers (a lost job would never answer).
    struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(scope) = SCOPE.with(|s| s.borrow_mut().take()) {
                scope.woken.into_iter().for_each(Runnable::defer);
                for (pool, call) in scope.calls {
                    pool.route_anywhere(vec![call]);
                }
                for pool in scope.wake {
                    pool.wake_dispatcher_soon();
                }
            }
        }
    }

    /// Runs `body` in an inline scope of the NIF whose environment is
    /// `env`, then polls every job it woke and sends what they produced.
    pub fn run<'a, R>(env: Env<'a>, body: impl FnOnce() -> R) -> R {
        // NIFs never nest, so a scope is never already active here.
        SCOPE.with(|s| {
            *s.borrow_mut() = Some(Scope { woken: Vec::new(), calls: Vec::new(), wake: Vec::new() })
        });
        let guard = Guard;
        // Core futures create Tokio timers, which need the runtime's context.
        let _runtime = runtime::handle().enter();
        let out = body();
        loop {
            let next = SCOPE.with(|s| {
                let mut s = s.borrow_mut();
                let scope = s.as_mut().expect("scope is active");
                if let Some(job) = scope.woken.pop() {
                    return Some(Err(job));
                }
                if scope.calls.is_empty() {
                    None
                } else {
                    Some(Ok(std::mem::take(&mut scope.calls)))
                }
            });
            match next {
                None => break,
                Some(Err(job)) => job.run_inline(env),
                Some(Ok(calls)) => send_calls(env, calls),
            }
        }
        let wake =
            SCOPE.with(|s| std::mem::take(&mut s.borrow_mut().as_mut().expect("scope is active").wake));
        for pool in wake {
            pool.wake_dispatcher_from(env);
        }
        drop(guard);
        out
    }

    /// Sends invocations to their pools' workers (there is normally one
    /// pool).
    fn send_calls(env: Env, mut calls: Vec<(Arc<Pool>, Call)>) {
        while !calls.is_empty() {
            let pool = Arc::clone(&calls[0].0);
            let (mine, rest): (Vec<_>, Vec<_>) = calls.into_iter().partition(|(p, _)| Arc::ptr_eq(p, &pool));
            calls = rest;
            pool.route_inline(env, mine.into_iter().map(|(_, call)| call));
        }
    }
}
