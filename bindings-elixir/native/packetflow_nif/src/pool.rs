//! The handler worker pool of one reactor: which Elixir processes are idle
//! and may take the next handler call.
//!
//! A worker is a long-lived process started by the reactor's dispatcher.
//! It answers a call through a reply NIF, which puts it back on the idle
//! stack before the answer wakes the core, so the call that answer lets
//! start (the next queued packet) can go to the same warm process.
//!
//! A call goes to the most recently idle worker, as
//! `{:pf_call, handler_id, data, packet_id, metadata, token}`, and only to an
//! idle one: a slow handler never holds up another call. When none is idle,
//! calls go to the dispatcher as `{:pf_calls, [call, ...]}`, which starts a
//! worker for each; those join the stack once they have answered.
//!
//! Calls made off the schedulers (on the library's network and timer
//! thread) wait in a queue, and the dispatcher is woken once for all of
//! them (`:pf_route`): it routes them from a scheduler ([`pool_route`]).
//! Sending each one to its worker from that thread would cost a
//! cross-thread wake-up per call. Submits and child calls of this reactor
//! that are woken there (a deadline, a connection closing) take the same
//! way: the dispatcher polls them and sends their results from its
//! scheduler, where a message between processes wakes no thread. So do
//! the reactor's network connections, from wherever they are woken
//! (`exec::spawn`): the dispatcher reads, dispatches and writes for them.
//!
//! The pool shrinks without a timer per worker: every few seconds the
//! dispatcher takes off the stack the workers that stayed idle since the
//! last time ([`pool_trim`]) and tells them to end.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};

use crate::exec::{inline, send_from, Runnable};
use crate::invocation::Call;
use crate::{atoms, runtime};

/// Idle workers, most recent last, and the dispatcher that starts more.
pub struct Pool {
    dispatcher: LocalPid,
    /// Idle workers, each with the trim round it became idle in.
    idle: Mutex<Vec<(LocalPid, u64)>>,
    round: AtomicU64,
    /// Work from off the schedulers, for the dispatcher.
    queue: Mutex<Deferred>,
}

/// What waits for the dispatcher's next `:pf_route`.
#[derive(Default)]
struct Deferred {
    /// Handler calls to route to workers.
    calls: Vec<Call>,
    /// Jobs woken off the schedulers, to poll.
    jobs: Vec<Arc<dyn Runnable>>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.jobs.is_empty()
    }
}

impl Pool {
    /// The most recently idle worker, taken off the stack.
    fn pop(&self) -> Option<LocalPid> {
        self.idle.lock().pop().map(|(pid, _)| pid)
    }

    /// `worker` takes calls again.
    pub fn push(&self, worker: LocalPid) {
        let round = self.round.load(Ordering::Relaxed);
        self.idle.lock().push((worker, round));
    }

    /// Sends `calls` from inside a NIF whose environment is `env`.
    pub fn route_inline(&self, env: Env, calls: impl IntoIterator<Item = Call>) {
        self.route(calls, |to, build| send_from(env, to, build));
    }

    /// Queues `calls` for the dispatcher. Runs anywhere but inside a NIF,
    /// where [`route_inline`](Self::route_inline) is used.
    pub fn route_anywhere(self: &Arc<Self>, calls: Vec<Call>) {
        self.defer(|queue| queue.calls.extend(calls));
    }

    /// Queues a job woken outside any NIF, for the dispatcher to poll.
    pub fn poll_anywhere(self: &Arc<Self>, job: Arc<dyn Runnable>) {
        self.defer(|queue| queue.jobs.push(job));
    }

    /// Adds to the queue, waking the dispatcher when it was empty
    /// (otherwise a wake-up is already on its way).
    fn defer(self: &Arc<Self>, add: impl FnOnce(&mut Deferred)) {
        let first = {
            let mut queue = self.queue.lock();
            let first = queue.is_empty();
            add(&mut queue);
            first
        };
        if !first {
            return;
        }
        if !rustler::thread::is_scheduler_thread() {
            self.wake_dispatcher();
        } else if !inline::wake_dispatcher(self) {
            // Only a NIF's own environment can send from a scheduler.
            self.wake_dispatcher_soon();
        }
    }

    /// Wakes the dispatcher from a thread of the runtime.
    pub fn wake_dispatcher_soon(self: &Arc<Self>) {
        let pool = Arc::clone(self);
        runtime::handle().spawn(async move { pool.wake_dispatcher() });
    }

    /// Wakes the dispatcher from inside a NIF whose environment is `env`.
    pub fn wake_dispatcher_from(&self, env: Env) {
        if !send_from(env, &self.dispatcher, |m| atoms::pf_route().encode(m)) {
            self.dispatcher_gone();
        }
    }

    fn wake_dispatcher(&self) {
        let woken = THREAD_ENV.with(|slot| {
            let mut slot = slot.borrow_mut();
            let owned = slot.get_or_insert_with(OwnedEnv::new);
            owned.send_and_clear(&self.dispatcher, |env| atoms::pf_route().encode(env)).is_ok()
        });
        if !woken {
            self.dispatcher_gone();
        }
    }

    /// The dispatcher is gone (its reactor stopped). Its calls are dropped,
    /// each answering PF500 as its token is freed; its jobs still run, in a
    /// task of the runtime (never nested in the poll that woke them), so
    /// that every submitter hears back.
    fn dispatcher_gone(&self) {
        let deferred = std::mem::take(&mut *self.queue.lock());
        if !deferred.jobs.is_empty() {
            runtime::handle().spawn(async move { deferred.jobs.into_iter().for_each(Runnable::run_later) });
        }
    }

    /// Each call to an idle worker; what finds none, to the dispatcher in
    /// one message. A worker that is already gone (killed while idle, not
    /// yet forgotten) is skipped.
    fn route<S>(&self, calls: impl IntoIterator<Item = Call>, mut send: S)
    where
        S: FnMut(&LocalPid, &mut dyn for<'m> FnMut(Env<'m>) -> Term<'m>) -> bool,
    {
        let mut spill = Vec::new();
        for call in calls {
            let mut sent = false;
            while let Some(worker) = self.pop() {
                if send(&worker, &mut |menv| call.message(menv)) {
                    sent = true;
                    break;
                }
            }
            if !sent {
                spill.push(call);
            }
        }
        if !spill.is_empty() {
            // A dispatcher that is gone takes its calls with it; each then
            // answers PF500 when its token is freed.
            send(&self.dispatcher, &mut |menv| {
                let items: Vec<Term> = spill.iter().map(|call| call.terms(menv).encode(menv)).collect();
                (atoms::pf_calls(), items).encode(menv)
            });
        }
    }
}

thread_local! {
    /// A message environment per runtime thread, reused for every send.
    static THREAD_ENV: RefCell<Option<OwnedEnv>> = const { RefCell::new(None) };
}

/// The pool as the dispatcher and its workers hold it.
pub struct PoolRes(pub Arc<Pool>);

#[rustler::resource_impl]
impl Resource for PoolRes {}

impl Drop for PoolRes {
    /// The dispatcher and its workers are gone. A `:pf_route` sent just
    /// before the dispatcher ended went with its mailbox: what it was for
    /// runs on the runtime's thread (later work finds the dispatcher gone
    /// when waking it, and does the same).
    fn drop(&mut self) {
        self.0.dispatcher_gone();
    }
}

impl std::panic::RefUnwindSafe for PoolRes {}

/// A pool whose dispatcher is the calling process.
#[rustler::nif]
fn pool_new(env: Env) -> ResourceArc<PoolRes> {
    ResourceArc::new(PoolRes(Arc::new(Pool {
        dispatcher: env.pid(),
        idle: Mutex::new(Vec::new()),
        round: AtomicU64::new(0),
        queue: Mutex::new(Deferred::default()),
    })))
}

/// Does what waits in the queue (called by the dispatcher on
/// `:pf_route`): polls the woken jobs, sending what they produce from here,
/// and routes the calls, each to an idle worker, the rest back to the
/// dispatcher as `{:pf_calls, calls}`.
#[rustler::nif]
fn pool_route(env: Env, pool: ResourceArc<PoolRes>) -> rustler::Atom {
    let Deferred { calls, jobs } = std::mem::take(&mut *pool.0.queue.lock());
    if !jobs.is_empty() {
        inline::run(env, || jobs.into_iter().for_each(|job| job.run_inline(env)));
    }
    if !calls.is_empty() {
        pool.0.route_inline(env, calls);
    }
    atoms::ok()
}

/// Takes off the idle stack the workers that have been idle since the
/// previous trim, and returns them (no call can reach them any more: the
/// caller tells them to end). Starts a new round.
#[rustler::nif]
fn pool_trim(pool: ResourceArc<PoolRes>) -> Vec<LocalPid> {
    let pool = &pool.0;
    let mut idle = pool.idle.lock();
    let round = pool.round.fetch_add(1, Ordering::Relaxed);
    // The longest idle are at the bottom of the stack.
    let stale = idle.iter().take_while(|(_, r)| *r < round).count();
    idle.drain(..stale).map(|(pid, _)| pid).collect()
}

/// Forgets a worker that ended; `true` if it was idle.
#[rustler::nif]
fn pool_forget(pool: ResourceArc<PoolRes>, worker: LocalPid) -> bool {
    forget(&pool.0, worker)
}

fn forget(pool: &Pool, worker: LocalPid) -> bool {
    let mut idle = pool.idle.lock();
    match idle.iter().position(|(p, _)| *p == worker) {
        Some(i) => {
            idle.remove(i);
            true
        }
        None => false,
    }
}

/// How many workers are idle (for tests).
#[rustler::nif]
fn pool_idle(pool: ResourceArc<PoolRes>) -> usize {
    pool.0.idle.lock().len()
}
