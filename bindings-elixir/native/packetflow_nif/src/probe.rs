//! NIFs that let the tests drive the lower layers alone (`test/layers_test.exs`):
//! [`crate::exec`] with a future of their own instead of a submit, and
//! [`crate::pool`] with plain terms instead of handler calls. Nothing in
//! the package calls them.

use std::sync::Arc;

use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};
use tokio::sync::oneshot;

use crate::exec::{inline, send_from, Deliver, Home, Job};
use crate::pool::{PoolRes, WorkerCall};
use crate::{atoms, runtime};

/// A home whose process is the one that made it.
pub struct HomeRes(Arc<Home>);

#[rustler::resource_impl]
impl Resource for HomeRes {}

// A NIF that panics is turned into an exception by rustler; parking_lot
// locks do not poison, so the state stays consistent.
impl std::panic::RefUnwindSafe for HomeRes {}

impl Drop for HomeRes {
    fn drop(&mut self) {
        self.0.gone();
    }
}

/// A home whose process is the caller: it receives `:pf_route` and then
/// calls [`probe_home_run`].
#[rustler::nif]
fn probe_home(env: Env) -> ResourceArc<HomeRes> {
    ResourceArc::new(HomeRes(Home::new(env.pid())))
}

/// Runs what waits in `home`'s queue.
#[rustler::nif]
fn probe_home_run(env: Env, home: ResourceArc<HomeRes>) -> rustler::Atom {
    home.0.run_queued(env);
    atoms::ok()
}

/// Completes a probe job.
pub struct Trigger(Mutex<Option<oneshot::Sender<u64>>>);

#[rustler::resource_impl]
impl Resource for Trigger {}

impl std::panic::RefUnwindSafe for Trigger {}

/// Sends `{:pf_probe, tag, value}` to the process that made the job.
struct ToMaker {
    maker: LocalPid,
    tag: u64,
}

impl Deliver<u64> for ToMaker {
    fn inline(&self, env: Env, value: u64) {
        send_from(env, &self.maker, |m| (atoms::pf_probe(), self.tag, value).encode(m));
    }

    fn later(&self, value: u64) {
        let _ =
            OwnedEnv::new().send_and_clear(&self.maker, |m| (atoms::pf_probe(), self.tag, value).encode(m));
    }
}

/// A job of `home` that waits for its trigger and then delivers the value
/// it was given to the caller, as `{:pf_probe, tag, value}`.
#[rustler::nif]
fn probe_job(env: Env, home: ResourceArc<HomeRes>, tag: u64) -> ResourceArc<Trigger> {
    let (tx, rx) = oneshot::channel();
    let future = async move { rx.await.unwrap_or(0) };
    let started = inline::run(env, || Job::start(future, ToMaker { maker: env.pid(), tag }, &home.0));
    debug_assert!(started.is_none(), "a probe job waits for its trigger");
    ResourceArc::new(Trigger(Mutex::new(Some(tx))))
}

/// A job whose first poll is woken from another thread before it returns
/// Pending, and whose second poll answers `value`: `{:done, value}` when
/// the executor polled it again at once, as it must, `:pending` when the
/// wake-up was lost.
#[rustler::nif]
fn probe_job_woken_while_polled<'a>(env: Env<'a>, home: ResourceArc<HomeRes>, value: u64) -> Term<'a> {
    let mut polls = 0;
    let future = std::future::poll_fn(move |cx| {
        polls += 1;
        if polls > 1 {
            return std::task::Poll::Ready(value);
        }
        let waker = cx.waker().clone();
        // Joined before this poll returns: the wake-up lands while it runs.
        let _ = std::thread::spawn(move || waker.wake()).join();
        std::task::Poll::Pending
    });
    let deliver = ToMaker { maker: env.pid(), tag: 0 };
    match inline::run(env, || Job::start(future, deliver, &home.0)) {
        Some(v) => (atoms::done(), v).encode(env),
        None => atoms::pending().encode(env),
    }
}

fn fire(trigger: &Trigger, value: u64) {
    if let Some(tx) = trigger.0.lock().take() {
        let _ = tx.send(value);
    }
}

/// Completes the jobs from inside this NIF: they are polled and deliver
/// before it returns.
#[rustler::nif]
fn probe_fire(env: Env, triggers: Vec<ResourceArc<Trigger>>, value: u64) -> rustler::Atom {
    inline::run(env, || triggers.iter().for_each(|t| fire(t, value)));
    atoms::ok()
}

/// Completes the jobs from one task of the runtime, off the schedulers,
/// then sends `{:pf_probe, :fired}` to the caller.
#[rustler::nif]
fn probe_fire_later(env: Env, triggers: Vec<ResourceArc<Trigger>>, value: u64) -> rustler::Atom {
    let caller = env.pid();
    runtime::handle().spawn(async move {
        triggers.iter().for_each(|t| fire(t, value));
        let _ = OwnedEnv::new().send_and_clear(&caller, |m| (atoms::pf_probe(), atoms::fired()).encode(m));
    });
    atoms::ok()
}

/// A plain term as a worker call: `{:pf_probe, term}` to a worker, the term
/// itself in `{:pf_calls, [...]}`.
struct TermCall<'a>(Term<'a>);

impl WorkerCall for TermCall<'_> {
    fn message<'b>(&self, env: Env<'b>) -> Term<'b> {
        (atoms::pf_probe(), self.0.in_env(env)).encode(env)
    }

    fn spilled<'b>(&self, env: Env<'b>) -> Term<'b> {
        self.0.in_env(env)
    }
}

/// Routes each of `terms` through the pool, as handler calls are.
#[rustler::nif]
fn probe_pool_route<'a>(env: Env<'a>, pool: ResourceArc<PoolRes>, terms: Vec<Term<'a>>) -> rustler::Atom {
    pool.0.route(env, terms.into_iter().map(TermCall));
    atoms::ok()
}

/// The calling process takes calls from the pool from now on.
#[rustler::nif]
fn probe_pool_push(env: Env, pool: ResourceArc<PoolRes>) -> rustler::Atom {
    pool.0.push(env.pid());
    atoms::ok()
}
