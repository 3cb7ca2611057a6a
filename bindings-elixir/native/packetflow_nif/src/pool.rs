//! The worker pool of one reactor: which Elixir processes are idle and may
//! take the next call. It knows processes and messages; what a call holds
//! and how it is answered is [`crate::invocation`]'s.
//!
//! A worker is a long-lived process started by the reactor's dispatcher.
//! It answers a call through a reply NIF, which puts it back on the idle
//! stack before the answer wakes the core, so the call that answer lets
//! start (the next queued packet) can go to the same warm process.
//!
//! A call goes to the most recently idle worker ([`WorkerCall::message`]),
//! and only to an idle one: a slow handler never holds up another call.
//! When none is idle, calls go to the dispatcher as `{:pf_calls, [call,
//! ...]}` ([`WorkerCall::spilled`]), which starts a worker for each; those
//! join the stack once they have answered.
//!
//! ```text
//!   the dispatcher starts it with a call
//!                 │
//!                 ▼          reply NIF: pushed
//!               BUSY ─────────────────────────────▶ IDLE, on the stack
//!                 ▲                                   │        │
//!                 └──── popped, sent {:pf_call, …} ───┘        │ still idle at the next trim
//!                                                              ▼
//!                                            off the stack, told :pf_retire: ends
//! ```
//!
//! The dispatcher is also the pool's [`Home`]: the process that runs what
//! is woken off the schedulers (`:pf_route`, [`pool_route`]).
//!
//! The pool shrinks without a timer per worker: every few seconds the
//! dispatcher takes off the stack the workers that stayed idle since the
//! last time ([`pool_trim`]) and tells them to end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, Resource, ResourceArc, Term};

use crate::atoms;
use crate::exec::{send_from, Home};

/// A call on its way to a worker, kept whole until it was sent, so that a
/// send to a worker that is gone can be retried elsewhere.
pub trait WorkerCall {
    /// The message an idle worker receives.
    fn message<'a>(&self, env: Env<'a>) -> Term<'a>;
    /// The call as an item of `{:pf_calls, [...]}` to the dispatcher.
    fn spilled<'a>(&self, env: Env<'a>) -> Term<'a>;
    /// The call is in `worker`'s mailbox (one the dispatcher starts
    /// instead makes itself known by its first NIF).
    fn sent_to(&self, _worker: &LocalPid) {}
}

/// Idle workers, most recent last, and the dispatcher that starts more.
pub struct Pool {
    /// The dispatcher.
    home: Arc<Home>,
    /// Idle workers, each with the trim round it became idle in.
    idle: Mutex<Vec<(LocalPid, u64)>>,
    round: AtomicU64,
}

impl Pool {
    /// A pool whose dispatcher is `home`'s process.
    pub fn new(home: Arc<Home>) -> Arc<Pool> {
        Arc::new(Pool { home, idle: Mutex::new(Vec::new()), round: AtomicU64::new(0) })
    }

    /// The dispatcher, as the home of this reactor's jobs.
    pub fn home(&self) -> &Arc<Home> {
        &self.home
    }

    /// The most recently idle worker, taken off the stack.
    fn pop(&self) -> Option<LocalPid> {
        self.idle.lock().pop().map(|(pid, _)| pid)
    }

    /// `worker` takes calls again.
    pub fn push(&self, worker: LocalPid) {
        let round = self.round.load(Ordering::Relaxed);
        self.idle.lock().push((worker, round));
    }

    /// Sends each call to an idle worker, from inside a NIF whose
    /// environment is `env`; what finds none goes to the dispatcher in one
    /// message. A worker that is already gone (killed while idle, not yet
    /// forgotten) is skipped.
    pub fn route<C: WorkerCall>(&self, env: Env, calls: impl IntoIterator<Item = C>) {
        let mut spill = Vec::new();
        for call in calls {
            let mut sent = false;
            while let Some(worker) = self.pop() {
                if send_from(env, &worker, |menv| call.message(menv)) {
                    call.sent_to(&worker);
                    sent = true;
                    break;
                }
            }
            if !sent {
                spill.push(call);
            }
        }
        if !spill.is_empty() {
            // A dispatcher that is gone takes its calls with it: they are
            // dropped here (what that means is the caller's).
            send_from(env, self.home.process(), |menv| {
                let items: Vec<Term> = spill.iter().map(|call| call.spilled(menv)).collect();
                (atoms::pf_calls(), items).encode(menv)
            });
        }
    }

    /// Takes off the idle stack the workers that have been idle since the
    /// previous call, and returns them. Starts a new round.
    fn trim(&self) -> Vec<LocalPid> {
        let mut idle = self.idle.lock();
        let round = self.round.fetch_add(1, Ordering::Relaxed);
        // The longest idle are at the bottom of the stack.
        let stale = idle.iter().take_while(|(_, r)| *r < round).count();
        idle.drain(..stale).map(|(pid, _)| pid).collect()
    }

    /// Forgets a worker that ended; `true` if it was idle.
    fn forget(&self, worker: LocalPid) -> bool {
        let mut idle = self.idle.lock();
        match idle.iter().position(|(p, _)| *p == worker) {
            Some(i) => {
                idle.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The pool as the dispatcher and its workers hold it.
pub struct PoolRes(pub Arc<Pool>);

#[rustler::resource_impl]
impl Resource for PoolRes {}

impl Drop for PoolRes {
    /// The dispatcher and its workers are gone. A `:pf_route` sent just
    /// before the dispatcher ended went with its mailbox: what it was for
    /// runs on the runtime's thread.
    fn drop(&mut self) {
        self.0.home.gone();
    }
}

impl std::panic::RefUnwindSafe for PoolRes {}

/// A pool whose dispatcher is the calling process.
#[rustler::nif]
fn pool_new(env: Env) -> ResourceArc<PoolRes> {
    ResourceArc::new(PoolRes(Pool::new(Home::new(env.pid()))))
}

/// Runs what waits for the dispatcher (called by it on `:pf_route`): polls
/// the jobs woken off the schedulers, sending what they produce from here,
/// and routes the calls made there.
#[rustler::nif]
fn pool_route(env: Env, pool: ResourceArc<PoolRes>) -> rustler::Atom {
    pool.0.home.run_queued(env);
    atoms::ok()
}

/// Takes off the idle stack the workers that have been idle since the
/// previous trim, and returns them (no call can reach them any more: the
/// caller tells them to end). Starts a new round.
#[rustler::nif]
fn pool_trim(pool: ResourceArc<PoolRes>) -> Vec<LocalPid> {
    pool.0.trim()
}

/// Forgets a worker that ended; `true` if it was idle.
#[rustler::nif]
fn pool_forget(pool: ResourceArc<PoolRes>, worker: LocalPid) -> bool {
    pool.0.forget(worker)
}

/// How many workers are idle (for tests).
#[rustler::nif]
fn pool_idle(pool: ResourceArc<PoolRes>) -> usize {
    pool.0.idle.lock().len()
}
