//! Handler invocations: the core calls a registered handler, the NIF sends
//! `{:pf_call, handler_id, data, packet_id, metadata, token}` to an idle
//! worker of the reactor's [`Pool`] (or to its dispatcher, which starts
//! one); the worker runs the Elixir handler and answers through
//! `reply_ok`, `reply_failed` or `reply_error`.
//!
//! The context's `token` is an [`Invocation`] resource holding the channel
//! back to the waiting core task. If the handler's process dies without
//! answering, the last reference to the token goes with it and dropping the
//! channel answers the packet PF500, so nothing waits for a dead process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use packetflow::{Context, Handler, HandlerResult, PfError, Value};
use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};
use tokio::sync::oneshot;

use crate::exec::{inline, send_from, Deliver, Job};
use crate::pool::Pool;
use crate::{atoms, convert, terms};

static LIVE: AtomicU64 = AtomicU64::new(0);

/// One handler call waiting for its answer.
pub struct Invocation {
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    ctx: Context,
    /// Where the worker that answers goes back to.
    pool: Arc<Pool>,
}

#[rustler::resource_impl]
impl Resource for Invocation {}

// A NIF that panics is turned into an exception by rustler; the state here
// stays consistent across such a panic (parking_lot locks do not poison).
impl std::panic::RefUnwindSafe for Invocation {}

impl Drop for Invocation {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Invocation {
    /// Answers the call. When `idle`, the calling process is a pool worker
    /// that takes calls again from now on.
    fn answer(&self, env: Env, idle: bool, outcome: HandlerResult) {
        if idle {
            self.pool.push(env.pid());
        }
        inline::run(env, || self.answer_now(outcome));
    }

    fn answer_now(&self, outcome: HandlerResult) {
        if let Some(tx) = self.reply.lock().take() {
            // The receiver is gone when the packet already timed out.
            let _ = tx.send(outcome);
        }
    }
}

/// A handler call on its way to a worker.
pub struct Call {
    handler_id: u64,
    data: Value,
    token: ResourceArc<Invocation>,
}

impl Call {
    /// `{:pf_call, handler_id, data, packet_id, metadata, token}`, as a
    /// worker receives it.
    pub fn message<'a>(&self, env: Env<'a>) -> Term<'a> {
        let (id, data, packet_id, metadata, token) = self.terms(env);
        (atoms::pf_call(), id, data, packet_id, metadata, token).encode(env)
    }

    /// `(handler_id, data, packet_id, metadata, token)`; the worker makes
    /// the `%PacketFlow.Context{}` from them. The call stays whole, so a
    /// send that failed can be retried elsewhere.
    pub fn terms<'a>(&self, env: Env<'a>) -> (u64, Term<'a>, Term<'a>, Term<'a>, Term<'a>) {
        let ctx = &self.token.ctx;
        let metadata = match ctx.metadata() {
            Some(m) => convert::object_to_term(env, m),
            None => atoms::nil().encode(env),
        };
        let packet_id = ctx.packet_id().as_str().encode(env);
        (self.handler_id, convert::to_term(env, &self.data), packet_id, metadata, self.token.encode(env))
    }
}

/// The core handler of one registered Elixir function: it hands each call
/// to the reactor's worker pool and waits for the answer.
pub fn handler(handler_id: u64, pool: Arc<Pool>) -> Handler {
    Handler::from_async(move |data, ctx| {
        let (tx, rx) = oneshot::channel();
        LIVE.fetch_add(1, Ordering::Relaxed);
        let token =
            ResourceArc::new(Invocation { reply: Mutex::new(Some(tx)), ctx, pool: Arc::clone(&pool) });
        if let Err(call) = inline::push_call(&pool, Call { handler_id, data, token }) {
            pool.route_anywhere(vec![call]);
        }
        async move { rx.await.unwrap_or_else(|_| Err(abandoned())) }
    })
}

/// What a handler's answer becomes when its process ended without one.
pub fn abandoned() -> PfError {
    PfError::failed("the handler's process ended without answering")
}

/// Answers an invocation with the handler's value. A value that cannot
/// cross as JSON answers PF500 naming its type and path instead. `idle`:
/// the caller is a pool worker ready for its next call.
#[rustler::nif]
fn reply_ok<'a>(env: Env<'a>, token: ResourceArc<Invocation>, value: Term<'a>, idle: bool) -> rustler::Atom {
    let outcome =
        convert::to_value(value).map_err(|bad| PfError::failed(bad.describe("the handler's result")));
    token.answer(env, idle, outcome);
    atoms::ok()
}

/// Answers an invocation with a handler failure (PF500) and `message`.
#[rustler::nif]
fn reply_failed(env: Env, token: ResourceArc<Invocation>, message: String, idle: bool) -> rustler::Atom {
    token.answer(env, idle, Err(PfError::failed(message)));
    atoms::ok()
}

/// Answers an invocation with an error the handler chose, code included
/// (passing on the error of a child call, for instance).
#[rustler::nif]
fn reply_error(
    env: Env,
    token: ResourceArc<Invocation>,
    code: String,
    message: String,
    idle: bool,
) -> rustler::Atom {
    token.answer(env, idle, Err(PfError { code, message }));
    atoms::ok()
}

/// Milliseconds left before the packet's deadline.
#[rustler::nif]
fn context_remaining_ms(token: ResourceArc<Invocation>) -> u64 {
    token.ctx.remaining().as_millis() as u64
}

/// The trace id the packet shares with its child calls.
#[rustler::nif]
fn context_trace_id(token: ResourceArc<Invocation>) -> String {
    token.ctx.trace_id().to_owned()
}

/// Where a child call's answer goes: `{:pf_child, tag, answer}` to the
/// handler process that made it.
struct ChildAnswer {
    caller: LocalPid,
    tag: u64,
}

impl ChildAnswer {
    fn message<'a>(&self, env: Env<'a>, outcome: &Result<Value, PfError>) -> Term<'a> {
        let answer = match outcome {
            Ok(v) => (atoms::ok(), convert::to_term(env, v)).encode(env),
            Err(e) => (atoms::error(), terms::error(env, e)).encode(env),
        };
        (atoms::pf_child(), self.tag, answer).encode(env)
    }
}

impl Deliver<Result<Value, PfError>> for ChildAnswer {
    fn inline(&self, env: Env, outcome: Result<Value, PfError>) {
        send_from(env, &self.caller, |menv| self.message(menv, &outcome));
    }

    fn later(&self, outcome: Result<Value, PfError>) {
        let _ = OwnedEnv::new().send_and_clear(&self.caller, |env| self.message(env, &outcome));
    }
}

/// Starts a child call on behalf of the packet. Returns `{:ok, answer}` when
/// it is answered at once, `:pending` when the calling process will receive
/// `{:pf_child, tag, answer}`, or `{:badarg, message}` when `data` cannot
/// cross; `answer` is `{:ok, data}` or `{:error, %PacketFlow.Error{}}`.
#[rustler::nif]
fn context_call<'a>(
    env: Env<'a>,
    token: ResourceArc<Invocation>,
    group: String,
    element: String,
    data: Term<'a>,
    tag: u64,
) -> Term<'a> {
    let data = match convert::to_value(data) {
        Ok(v) => v,
        Err(bad) => return (atoms::badarg(), bad.describe("data")).encode(env),
    };
    let ctx = token.ctx.clone();
    let deliver = ChildAnswer { caller: env.pid(), tag };
    let call = async move { ctx.call(&group, &element, data).await };
    inline::run(env, || match Job::start(call, deliver, &token.pool) {
        Some(Ok(v)) => (atoms::ok(), (atoms::ok(), convert::to_term(env, &v))).encode(env),
        Some(Err(e)) => (atoms::ok(), (atoms::error(), terms::error(env, &e))).encode(env),
        None => atoms::pending().encode(env),
    })
}

/// Invocations not yet dropped (for tests of resource cleanup).
#[rustler::nif]
fn live_invocations() -> u64 {
    LIVE.load(Ordering::Relaxed)
}
