//! Actors: an actor type registered from Elixir, and the NIFs of
//! `PacketFlow.Actors`.
//!
//! An Elixir actor type is a core [`ActorType::from_async`]: the core keeps
//! the mailbox, runs one turn at a time, commits or rolls back the state,
//! and remembers recent turns. A turn is an [`invocation`] like a handler
//! call, with the turn's message type, message, state and address as its
//! input: a worker of the reactor's pool runs the module's
//! `handle_message`, then answers through [`reply_turn`] with the reply and
//! the new state. What the core refuses (a bad id or type, a missing
//! actor, a message without a `type`) it answers itself; nothing is
//! checked here.
//!
//! Create, send and stop are asked with the options given in Elixir
//! through the core's `Actors::ask_with` (which judges them and decides
//! whether the message travels as a packet, docs/protocol.md "Actors"), on
//! the caller's behalf as `reactor_submit` submits; a tell is a packet built
//! with [`ActorRef::packet_from`].

use std::sync::Arc;

use packetflow::actor::{Op, Reply, TurnInput, TurnOutput};
use packetflow::{ActorRef, ActorType, PfError, Value};
use rustler::{Atom, Encoder, Env, ResourceArc, Term};

use crate::exec::{self, inline, Job};
use crate::invocation::{self, Answer, Input, Invocation, Registration};
use crate::pool::Pool;
use crate::reactor::{self, ReactorRes, Submitter, ToCaller};
use crate::{atoms, convert, packet, terms};

/// The core actor type of one registration of an Elixir module (handler id
/// `handler_id`, which the dispatcher maps to the module): each turn is a
/// call to a worker of `pool`.
///
/// The task that works through an actor's mailbox is a job of the reactor
/// (`exec`), not a Tokio task: polled where it is woken, it runs inside the
/// NIF by which a worker answers a turn, which so commits the turn, answers
/// its sender and hands the next turn to the same worker, all on the
/// scheduler; on the runtime's thread each turn would cost two cross-thread
/// wake-ups (bench/elixir/RESULTS.md, "Actors").
fn actor_type(handler_id: u64, pool: &Arc<Pool>) -> ActorType {
    let registration = Registration::new(handler_id, pool);
    let home = Arc::clone(pool.home());
    let turns = ActorType::from_async(move |turn: TurnInput| {
        let TurnInput { message_type, message, state, ctx } = turn;
        let input = Input::Turn { message_type, message, state, actor: ctx.actor().clone() };
        let answer = invocation::invoke(&registration, ctx.context().clone(), input);
        async move {
            match answer.await? {
                Answer::Turn(output) => Ok(output),
                Answer::Value(_) => Err(invocation::mismatched()),
            }
        }
    });
    turns.with_spawner(move |mailbox| exec::start_detached(mailbox, &home))
}

/// Registers actor type `name`, whose turns run the module the dispatcher
/// knows as `handler_id`. `initial` is `{:ok, state}` for a type whose
/// actors start on their first message (virtual actors) or `:error`;
/// `message_types`, when not `nil`, the only message types the core lets
/// through (it refuses others with PF400 naming these).
///
/// Returns `:ok`, `{:error, %PacketFlow.Error{}}` (PF400 for a bad name), or
/// `{:badarg, message}` when the initial state is not a JSON value.
#[rustler::nif]
fn actor_register<'a>(
    env: Env<'a>,
    r: ResourceArc<ReactorRes>,
    name: String,
    handler_id: u64,
    initial: Term<'a>,
    message_types: Option<Vec<String>>,
) -> Term<'a> {
    let initial = match initial.decode::<(Atom, Term)>() {
        Ok((_, state)) => match convert::to_value(state) {
            Ok(state) => Some(state),
            Err(bad) => return (atoms::badarg(), bad.describe("initial_state")).encode(env),
        },
        Err(_) => None,
    };
    let mut spec = actor_type(handler_id, r.pool());
    if let Some(state) = initial {
        spec = spec.with_initial_state(state);
    }
    if let Some(types) = message_types {
        spec = spec.with_message_types(types);
    }
    // In an inline scope, so that a registration dropped here (refused, or
    // a replaced type with nothing left in flight) is forgotten with this
    // NIF's environment.
    inline::run(env, || match r.reactor().actors().register(&name, spec) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), terms::error(env, &e)).encode(env),
    })
}

/// The actor `actor_type`/`actor_id`; a fresh id when `actor_id` is `nil`.
fn address(actor_type: &str, actor_id: Option<&str>) -> Result<ActorRef, PfError> {
    match actor_id {
        Some(id) => ActorRef::new(actor_type, id),
        None => ActorRef::generate(actor_type),
    }
}

fn op_of(op: Atom) -> Option<Op> {
    if op == atoms::create() {
        Some(Op::Create)
    } else if op == atoms::send() {
        Some(Op::Send)
    } else if op == atoms::stop() {
        Some(Op::Stop)
    } else {
        None
    }
}

/// Asks `op` (`:create`, `:send` or `:stop`) of actor
/// `actor_type`/`actor_id` (a fresh id for a create whose id is `nil`) on
/// behalf of the calling process. `fields` holds the message's `:data` (the
/// message, or the initial state) and the options `:id`, `:priority`,
/// `:timeout_ms` and `:metadata`. Answers `{:done, outcome}` at once or
/// `{:pending, timeout_ms}` and later `{:pf_result, tag, outcome}`, where
/// `outcome` is `{:ok, data}` or `{:error, %PacketFlow.Error{}}` (PF400 at
/// once for an address or option the core refuses). `submitter` is the
/// caller's [`Submitter`]: if the caller ends while it waits, the message
/// is cancelled.
#[rustler::nif]
// The arguments are those of the Elixir call.
#[allow(clippy::too_many_arguments)]
fn actor_submit<'a>(
    env: Env<'a>,
    reactor: Term<'a>,
    op: Atom,
    actor_type: &str,
    actor_id: Option<&str>,
    fields: Term<'a>,
    tag: Term<'a>,
    submitter: Term<'a>,
) -> Term<'a> {
    let Some(op) = op_of(op) else {
        return (atoms::badarg(), "the actor operation must be :create, :send or :stop").encode(env);
    };
    let (parts, _) = match packet::parts(fields) {
        Ok(parts) => parts,
        Err(message) => return (atoms::badarg(), message).encode(env),
    };
    let Some((reactor, pool)) = reactor::find(reactor) else {
        return atoms::noproc().encode(env);
    };
    let ask =
        match address(actor_type, actor_id).and_then(|actor| reactor.actors().ask_with(&actor, op, parts)) {
            Ok(ask) => ask,
            Err(e) => return (atoms::done(), terms::outcome(env, &Err(e))).encode(env),
        };
    let timeout_ms = ask.timeout_ms();
    let deliver = ToCaller::new(env, tag, terms::outcome);
    inline::run(env, || match Job::launch(ask, deliver, pool.home()) {
        Ok(outcome) => (atoms::done(), terms::outcome(env, &outcome)).encode(env),
        Err(job) => {
            Submitter::waits_for(submitter, &job);
            (atoms::pending(), timeout_ms).encode(env)
        }
    })
}

/// Sends a message to actor `actor_type`/`actor_id` without waiting for
/// its turn; `fields` as for [`actor_submit`]. Returns `:ok` once the
/// message holds its place in the actor's mailbox, `{:error,
/// %PacketFlow.Error{}}` for what the core refuses at once, `{:badarg,
/// message}` or `:noproc`.
#[rustler::nif]
fn actor_tell<'a>(
    env: Env<'a>,
    reactor: Term<'a>,
    actor_type: &str,
    actor_id: &str,
    fields: Term<'a>,
) -> Term<'a> {
    let (parts, _) = match packet::parts(fields) {
        Ok(parts) => parts,
        Err(message) => return (atoms::badarg(), message).encode(env),
    };
    let Some((reactor, _pool)) = reactor::find(reactor) else {
        return atoms::noproc().encode(env);
    };
    let told = inline::run(env, || {
        let actor = ActorRef::new(actor_type, actor_id)?;
        let packet = actor.packet_from(Op::Send, parts)?;
        reactor.actors().tell_packet(&actor, packet)
    });
    ok_or_error(env, told)
}

/// `:ok` or `{:error, %PacketFlow.Error{}}`.
pub fn ok_or_error<'a>(env: Env<'a>, outcome: Result<(), PfError>) -> Term<'a> {
    match outcome {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), terms::error(env, &e)).encode(env),
    }
}

fn ids_answer<'a>(env: Env<'a>, ids: &Result<Vec<String>, PfError>) -> Term<'a> {
    match ids {
        Ok(ids) => (atoms::ok(), ids).encode(env),
        Err(e) => (atoms::error(), terms::error(env, e)).encode(env),
    }
}

fn count_answer<'a>(env: Env<'a>, count: &Result<usize, PfError>) -> Term<'a> {
    match count {
        Ok(n) => (atoms::ok(), *n).encode(env),
        Err(e) => (atoms::error(), terms::error(env, e)).encode(env),
    }
}

/// Lists (`:list`) or counts (`:count`) the actors of `actor_type` the
/// reactor hosts, for the calling process: `{:done, answer}`, or
/// `:pending` when `{:pf_result, tag, answer}` will follow (the store is
/// read); `answer` is `{:ok, ids | count}` or `{:error, %PacketFlow.Error{}}`.
/// `:noproc` when `reactor` is not a running reactor's pid.
#[rustler::nif]
fn actor_query<'a>(
    env: Env<'a>,
    reactor: Term<'a>,
    what: Atom,
    actor_type: String,
    tag: Term<'a>,
) -> Term<'a> {
    let Some((reactor, pool)) = reactor::find(reactor) else {
        return atoms::noproc().encode(env);
    };
    let actors = reactor.actors();
    inline::run(env, || {
        if what == atoms::count() {
            let count = async move { actors.count(&actor_type).await };
            let deliver = ToCaller::new(env, tag, count_answer);
            match Job::start(count, deliver, pool.home()) {
                Some(answer) => (atoms::done(), count_answer(env, &answer)).encode(env),
                None => atoms::pending().encode(env),
            }
        } else {
            let list = async move { actors.list(&actor_type).await };
            let deliver = ToCaller::new(env, tag, ids_answer);
            match Job::start(list, deliver, pool.home()) {
                Some(answer) => (atoms::done(), ids_answer(env, &answer)).encode(env),
                None => atoms::pending().encode(env),
            }
        }
    })
}

/// Answers a turn with the reply and the actor's new state (`stop`: the
/// reply, then the actor is deleted; its state is not used). A reply or
/// state that cannot cross as JSON answers PF500 naming its type and path,
/// and the actor keeps the state it had. `idle`: the caller is a pool
/// worker ready for its next call.
#[rustler::nif]
fn reply_turn<'a>(
    env: Env<'a>,
    token: ResourceArc<Invocation>,
    reply: Term<'a>,
    state: Term<'a>,
    stop: bool,
    idle: bool,
) -> Atom {
    let output = convert::to_value(reply)
        .map_err(|bad| PfError::failed(bad.describe("the turn's reply")))
        .and_then(|reply| {
            if stop {
                return Ok(TurnOutput { reply: Reply::Stop(reply), state: Value::Null });
            }
            let state = convert::to_value(state)
                .map_err(|bad| PfError::failed(bad.describe("the actor's new state")))?;
            Ok(TurnOutput { reply: Reply::Value(reply), state })
        });
    token.answer(env, idle, output.map(Answer::Turn));
    atoms::ok()
}
