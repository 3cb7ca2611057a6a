//! What a running handler (or actor turn) asks of its packet through
//! `%PacketFlow.Context{}`: the time left, the trace id, and child calls
//! and actor messages made on its behalf.

use std::future::Future;

use packetflow::reactor::late_call_error;
use packetflow::{ActorRef, PfError, Value};
use rustler::{Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};

use crate::exec::{inline, send_from, Deliver, Job};
use crate::invocation::Invocation;
use crate::{actor, atoms, convert, packet, terms};

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

/// The packet's priority (1-10), which its calls inherit.
#[rustler::nif]
fn context_priority(token: ResourceArc<Invocation>) -> u8 {
    token.context().priority().get()
}

/// Whether the packet ended without this call's answer (cancelled, past
/// its deadline, its reactor stopped): true once the worker was sent
/// `{:packetflow_cancelled, packet_id}`.
#[rustler::nif]
fn context_cancelled(token: ResourceArc<Invocation>) -> bool {
    token.cancelled()
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
/// `priority` and `timeout_ms` (each `nil` for this packet's own) are the
/// child's; the core judges them as a packet's, after the key (PF400
/// naming the field).
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
    priority: Term<'a>,
    timeout_ms: Term<'a>,
    tag: u64,
) -> Term<'a> {
    let data = match convert::to_value(data) {
        Ok(v) => v,
        Err(bad) => return (atoms::badarg(), bad.describe("data")).encode(env),
    };
    let options = match packet::call_options(Some((&group, &element)), priority, timeout_ms) {
        Ok(options) => options,
        Err(e) => return answered_at_once(env, Err(e)),
    };
    if token.answered() {
        return answered_at_once(env, Err(late_call_error(&group, &element)));
    }
    let ctx = token.context().clone();
    child(env, &token, tag, async move { ctx.call_with(&group, &element, data, options).await })
}

/// Sends `message` to actor `actor_type`/`actor_id` on behalf of the packet
/// and waits for the turn's answer, as [`context_call`] does for a handler
/// (same answers and options; a turn that sends carries its reentrancy
/// chain).
#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn context_send<'a>(
    env: Env<'a>,
    token: ResourceArc<Invocation>,
    actor_type: &str,
    actor_id: &str,
    message: Term<'a>,
    priority: Term<'a>,
    timeout_ms: Term<'a>,
    tag: u64,
) -> Term<'a> {
    let message = match convert::to_value(message) {
        Ok(v) => v,
        Err(bad) => return (atoms::badarg(), bad.describe("message")).encode(env),
    };
    let started = ActorRef::new(actor_type, actor_id)
        .and_then(|actor| Ok((actor, packet::call_options(None, priority, timeout_ms)?)));
    let (actor, options) = match started {
        Ok(started) => started,
        Err(e) => return answered_at_once(env, Err(e)),
    };
    if token.answered() {
        return answered_at_once(env, Err(late_call_error("rm", actor.element().as_str())));
    }
    let ctx = token.context().clone();
    child(env, &token, tag, async move { ctx.send_with(&actor, message, options).await })
}

/// Sends `message` to actor `actor_type`/`actor_id` on behalf of the packet
/// without waiting for its turn: `:ok` once it holds its place in the
/// mailbox, `{:error, %PacketFlow.Error{}}` for what the core refuses at
/// once (a late tell is PF503, as a late call), or `{:badarg, message}`.
/// `priority` and `timeout_ms` as for [`context_call`].
#[rustler::nif]
fn context_tell<'a>(
    env: Env<'a>,
    token: ResourceArc<Invocation>,
    actor_type: &str,
    actor_id: &str,
    message: Term<'a>,
    priority: Term<'a>,
    timeout_ms: Term<'a>,
) -> Term<'a> {
    let message = match convert::to_value(message) {
        Ok(v) => v,
        Err(bad) => return (atoms::badarg(), bad.describe("message")).encode(env),
    };
    let told = inline::run(env, || {
        let actor = ActorRef::new(actor_type, actor_id)?;
        let options = packet::call_options(None, priority, timeout_ms)?;
        if token.answered() {
            return Err(late_call_error("rm", actor.element().as_str()));
        }
        token.context().tell_with(&actor, message, options)
    });
    actor::ok_or_error(env, told)
}

/// `{:ok, answer}`: a child answered without starting.
fn answered_at_once<'a>(env: Env<'a>, outcome: Result<Value, PfError>) -> Term<'a> {
    (atoms::ok(), terms::outcome(env, &outcome)).encode(env)
}

/// Starts `child` (a call or a message of the packet whose token is
/// `token`): `{:ok, answer}` when it is answered at once, else `:pending`
/// and `{:pf_child, tag, answer}` to the calling process later.
fn child<'a>(
    env: Env<'a>,
    token: &Invocation,
    tag: u64,
    child: impl Future<Output = Result<Value, PfError>> + Send + 'static,
) -> Term<'a> {
    let deliver = ChildAnswer { caller: env.pid(), tag };
    inline::run(env, || match Job::start(child, deliver, token.home()) {
        Some(outcome) => answered_at_once(env, outcome),
        None => atoms::pending().encode(env),
    })
}
