//! Handler invocations: the core calls a registered handler, the NIF sends
//! `{handler_id, data, %PacketFlow.Context{}}` to the dispatcher process,
//! and the Elixir handler answers through [`reply_ok`] or [`reply_error`].
//!
//! The context's `token` is an [`Invocation`] resource holding the channel
//! back to the waiting core task. If the handler's process dies without
//! answering, the last reference to the token goes with it and dropping the
//! channel answers the packet PF500, so nothing waits for a dead process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use packetflow::{Context, Handler, HandlerResult, PfError, Value};
use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Reference, Resource, ResourceArc, Term};
use tokio::sync::oneshot;

use crate::outbox::{Item, Outbox};
use crate::{atoms, convert, runtime, terms};

static LIVE: AtomicU64 = AtomicU64::new(0);

/// One handler call waiting for its answer.
pub struct Invocation {
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    ctx: Context,
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
    fn answer(&self, outcome: HandlerResult) {
        if let Some(tx) = self.reply.lock().take() {
            // The receiver is gone when the packet already timed out.
            let _ = tx.send(outcome);
        }
    }
}

/// A handler call on its way to the dispatcher.
pub struct Call {
    handler_id: u64,
    data: Value,
    token: ResourceArc<Invocation>,
}

impl Item for Call {
    fn encode<'a>(self, env: Env<'a>) -> Term<'a> {
        let ctx = &self.token.ctx;
        let metadata = match ctx.metadata() {
            Some(m) => convert::to_term(env, &Value::Object(m.clone())),
            None => atoms::nil().encode(env),
        };
        let keys = [
            atoms::struct_().encode(env),
            atoms::packet_id().encode(env),
            atoms::metadata().encode(env),
            atoms::token().encode(env),
        ];
        let values = [
            atoms::context_module().encode(env),
            ctx.packet_id().as_str().encode(env),
            metadata,
            self.token.encode(env),
        ];
        let context = Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys");
        (self.handler_id, convert::to_term(env, &self.data), context).encode(env)
    }
}

/// The core handler of one registered Elixir function: it forwards each
/// call to the dispatcher and waits for the answer.
pub fn handler(handler_id: u64, calls: Arc<Outbox<Call>>) -> Handler {
    Handler::from_async(move |data, ctx| {
        let (tx, rx) = oneshot::channel();
        LIVE.fetch_add(1, Ordering::Relaxed);
        let token = ResourceArc::new(Invocation { reply: Mutex::new(Some(tx)), ctx });
        calls.push(Call { handler_id, data, token });
        async move { rx.await.unwrap_or_else(|_| Err(abandoned())) }
    })
}

/// What a handler's answer becomes when its process ended without one.
pub fn abandoned() -> PfError {
    PfError::failed("the handler's process ended without answering")
}

/// Answers an invocation with the handler's value. A value that cannot
/// cross as JSON answers PF500 naming its type and path instead.
#[rustler::nif]
fn reply_ok(token: ResourceArc<Invocation>, value: Term) -> rustler::Atom {
    let outcome = convert::to_value(value)
        .map_err(|bad| PfError::failed(bad.describe("the handler's result")));
    token.answer(outcome);
    atoms::ok()
}

/// Answers an invocation with a handler failure (PF500) and `message`.
#[rustler::nif]
fn reply_failed(token: ResourceArc<Invocation>, message: String) -> rustler::Atom {
    token.answer(Err(PfError::failed(message)));
    atoms::ok()
}

/// Answers an invocation with an error the handler chose, code included
/// (passing on the error of a child call, for instance).
#[rustler::nif]
fn reply_error(token: ResourceArc<Invocation>, code: String, message: String) -> rustler::Atom {
    token.answer(Err(PfError { code, message }));
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

/// Starts a child call on behalf of the packet; the calling process later
/// receives `{ref, {:ok, data} | {:error, %PacketFlow.Error{}}}`.
/// Returns `:ok`, or `{:badarg, message}` when `data` cannot cross.
#[rustler::nif]
fn context_call<'a>(
    env: Env<'a>,
    token: ResourceArc<Invocation>,
    group: String,
    element: String,
    data: Term<'a>,
    reference: Reference<'a>,
) -> Term<'a> {
    let data = match convert::to_value(data) {
        Ok(v) => v,
        Err(bad) => return (atoms::badarg(), bad.describe("data")).encode(env),
    };
    let caller: LocalPid = env.pid();
    let mut owned = OwnedEnv::new();
    let reference = owned.save(reference);
    let ctx = token.ctx.clone();
    runtime::handle().spawn(async move {
        let outcome = ctx.call(&group, &element, data).await;
        let _ = owned.send_and_clear(&caller, |env| {
            let answer = match &outcome {
                Ok(v) => (atoms::ok(), convert::to_term(env, v)).encode(env),
                Err(e) => (atoms::error(), terms::error(env, e)).encode(env),
            };
            (reference.load(env), answer).encode(env)
        });
    });
    atoms::ok().encode(env)
}

/// Invocations not yet dropped (for tests of resource cleanup).
#[rustler::nif]
fn live_invocations() -> u64 {
    LIVE.load(Ordering::Relaxed)
}
