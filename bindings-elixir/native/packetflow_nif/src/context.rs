//! What a running handler asks of its packet through `%PacketFlow.Context{}`:
//! the time left, the trace id, and child calls made on its behalf.

use packetflow::reactor::late_call_error;
use packetflow::{PfError, Value};
use rustler::{Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};

use crate::exec::{inline, send_from, Deliver, Job};
use crate::invocation::Invocation;
use crate::{atoms, convert, terms};

/// Milliseconds left before the packet's deadline.
#[rustler::nif]
fn context_remaining_ms(token: ResourceArc<Invocation>) -> u64 {
    token.context().remaining().as_millis() as u64
}

/// The trace id the packet shares with its child calls.
#[rustler::nif]
fn context_trace_id(token: ResourceArc<Invocation>) -> String {
    token.context().trace_id().to_owned()
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
///
/// A call after the handler answered is the core's late call (PF503), even
/// before the core has seen that answer (it may still be on its way to a
/// connection polled by the dispatcher).
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
    if token.answered() {
        let late = late_call_error(&group, &element);
        return (atoms::ok(), (atoms::error(), terms::error(env, &late))).encode(env);
    }
    let ctx = token.context().clone();
    let deliver = ChildAnswer { caller: env.pid(), tag };
    let call = async move { ctx.call(&group, &element, data).await };
    inline::run(env, || match Job::start(call, deliver, token.home()) {
        Some(Ok(v)) => (atoms::ok(), (atoms::ok(), convert::to_term(env, &v))).encode(env),
        Some(Err(e)) => (atoms::ok(), (atoms::error(), terms::error(env, &e))).encode(env),
        None => atoms::pending().encode(env),
    })
}
