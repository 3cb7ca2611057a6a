//! The inline scope: what a NIF collects while it runs and sends before it
//! returns, with its own environment.
//!
//! Jobs woken inside the scope are polled before the NIF returns. Layers
//! above keep their own outgoing work in thread-locals (handler calls to
//! send, processes to wake) and register an [`Outbox`] once per batch: the
//! scope empties it with the NIF's environment when no job is left to poll,
//! or hands it to [`Outbox::abandon`] if the NIF panicked.

use std::cell::RefCell;
use std::sync::Arc;

use rustler::sys::{enif_send, ErlNifEnv};
use rustler::{Env, LocalPid, OwnedEnv, Term};

use super::Runnable;
use crate::runtime;

/// Outgoing work a layer above keeps for the running NIF.
pub struct Outbox {
    /// Sends everything kept so far, with the NIF's environment. It may
    /// wake jobs or register outboxes again; the scope runs them too.
    pub send: fn(Env),
    /// The NIF panicked: hands everything kept to where it goes without a
    /// caller environment.
    pub abandon: fn(),
}

struct Scope {
    /// The running NIF's environment, for [`send_now`].
    env: *mut ErlNifEnv,
    woken: Vec<Arc<dyn Runnable>>,
    outboxes: Vec<&'static Outbox>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Whether an inline scope is active on this thread.
pub fn active() -> bool {
    SCOPE.with(|s| s.borrow().is_some())
}

/// A job was woken: polled before the NIF returns when a scope is active,
/// otherwise (and always for lazy work) queued with its home.
pub(super) fn schedule(job: Arc<dyn Runnable>) {
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

/// Has `outbox` emptied before the NIF returns; `false` when no scope is
/// active (the caller sends some other way). Register it when the first
/// item goes into an empty outbox: each registration runs it once.
pub fn at_end(outbox: &'static Outbox) -> bool {
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) => {
            scope.outboxes.push(outbox);
            true
        }
        None => false,
    })
}

/// Ends the scope even if the NIF panicked: jobs still scheduled go to
/// their homes and outboxes are abandoned (lost work would never answer).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(scope) = SCOPE.with(|s| s.borrow_mut().take()) {
            scope.woken.into_iter().for_each(Runnable::defer);
            for outbox in scope.outboxes {
                (outbox.abandon)();
            }
        }
    }
}

enum Next {
    Poll(Arc<dyn Runnable>),
    Send(&'static Outbox),
}

/// Runs `body` in an inline scope of the NIF whose environment is `env`,
/// then polls every job it woke and empties every outbox registered.
pub fn run<'a, R>(env: Env<'a>, body: impl FnOnce() -> R) -> R {
    // NIFs never nest, so a scope is never already active here.
    let scope = Scope { env: env.as_c_arg(), woken: Vec::new(), outboxes: Vec::new() };
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
    let guard = Guard;
    // Core futures create Tokio timers, which need the runtime's context.
    let _runtime = runtime::handle().enter();
    let out = body();
    loop {
        // Jobs first: what they produce lands in the outboxes, which then
        // leave in as few messages as possible.
        let next = SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            let scope = s.as_mut().expect("scope is active");
            match scope.woken.pop() {
                Some(job) => Some(Next::Poll(job)),
                None => scope.outboxes.pop().map(Next::Send),
            }
        });
        match next {
            None => break,
            Some(Next::Poll(job)) => job.run_inline(env),
            Some(Next::Send(outbox)) => (outbox.send)(env),
        }
    }
    drop(guard);
    out
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
/// invocation alive). `false` if `to` is gone.
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

/// Sends a message at once from wherever this runs, for work that must
/// reach its receiver before something else happens (a handler's
/// cancellation notice, before its worker can answer): with the running
/// NIF's environment inside an inline scope, without one on a thread the
/// BEAM does not own. `None` when neither is possible (a scheduler thread
/// outside any NIF of this library: a resource destructor); the caller
/// sends some other way. Otherwise whether `to` was alive.
pub fn send_now(to: &LocalPid, build: impl for<'m> FnOnce(Env<'m>) -> Term<'m>) -> Option<bool> {
    if let Some(raw) = SCOPE.with(|s| s.borrow().as_ref().map(|scope| scope.env)) {
        let marker = ();
        // SAFETY: the scope lives inside the NIF call whose environment
        // this is, on this thread: it is valid until that call returns.
        let caller = unsafe { Env::new(&marker, raw) };
        return Some(send_from(caller, to, build));
    }
    if rustler::thread::is_scheduler_thread() {
        return None;
    }
    Some(OwnedEnv::new().send_and_clear(to, build).is_ok())
}
