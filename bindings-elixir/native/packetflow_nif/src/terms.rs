//! The Elixir structs the NIF hands out: `%PacketFlow.Error{}`,
//! `%PacketFlow.Result{}` and the stats map.

use packetflow::reactor::ReactorStats;
use packetflow::{ErrorCode, PacketResult, PfError, Value};
use rustler::{Encoder, Env, Term};

use crate::{atoms, convert};

/// The one place a core [`PfError`] becomes its Elixir form,
/// `%PacketFlow.Error{code: "PF500", message: "..."}`.
pub fn error<'a>(env: Env<'a>, e: &PfError) -> Term<'a> {
    let keys = [
        atoms::struct_().encode(env),
        atoms::exception().encode(env),
        atoms::code().encode(env),
        atoms::message().encode(env),
    ];
    let values = [
        atoms::error_module().encode(env),
        true.encode(env),
        e.code.as_str().encode(env),
        e.message.as_str().encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}

/// `{:ok, value}` or `{:error, %PacketFlow.Error{}}`.
pub fn outcome<'a>(env: Env<'a>, outcome: &Result<Value, PfError>) -> Term<'a> {
    match outcome {
        Ok(v) => (atoms::ok(), convert::to_term(env, v)).encode(env),
        Err(e) => (atoms::error(), error(env, e)).encode(env),
    }
}

/// `%PacketFlow.Result{packet_id, status, data, error, duration_ms}`.
pub fn result<'a>(env: Env<'a>, r: &PacketResult) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let (status, data, err) = match &r.outcome {
        Ok(v) => (atoms::success(), convert::to_term(env, v), nil),
        Err(e) => (atoms::error(), nil, error(env, e)),
    };
    let keys = [
        atoms::struct_().encode(env),
        atoms::packet_id().encode(env),
        atoms::status().encode(env),
        atoms::data().encode(env),
        atoms::error().encode(env),
        atoms::duration_ms().encode(env),
    ];
    let values = [
        atoms::result_module().encode(env),
        r.packet_id.as_str().encode(env),
        status.encode(env),
        data,
        err,
        r.duration_ms.encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}

/// `%{name, in_flight, queued, unrouted, forwards_cancelled, handlers:
/// [%{group, element, ...}], actors: [%{actor_type, active, ...}],
/// routed: %{local, websocket, nats}, nats: %{state, server, ...} | nil}`.
pub fn stats<'a>(env: Env<'a>, s: &ReactorStats) -> Term<'a> {
    let handlers: Vec<Term<'a>> = s
        .handlers
        .iter()
        .map(|h| {
            rustler::term_map!(env, {
                atoms::group() => h.group.as_str(),
                atoms::element() => h.element.as_str(),
                atoms::count() => h.count,
                atoms::errors() => h.errors,
                atoms::cancelled() => h.cancelled,
                atoms::sum_us() => h.sum_us,
                atoms::p50_us() => h.p50_us,
                atoms::p99_us() => h.p99_us,
            })
        })
        .collect();
    let actors: Vec<Term<'a>> = s
        .actors
        .iter()
        .map(|a| {
            rustler::term_map!(env, {
                atoms::actor_type() => a.actor_type.as_str(),
                atoms::active() => a.active,
                atoms::passivated() => a.passivated,
                atoms::activations() => a.activations,
                atoms::passivations() => a.passivations,
                atoms::tells_failed() => a.tells_failed,
            })
        })
        .collect();
    let routed = rustler::term_map!(env, {
        atoms::local() => s.routed.local,
        atoms::websocket() => s.routed.websocket,
        atoms::nats() => s.routed.nats,
    });
    let nats: Option<Term<'a>> = s.nats.as_ref().map(|n| {
        rustler::term_map!(env, {
            atoms::state() => n.state.as_str(),
            atoms::server() => n.server.as_str(),
            atoms::rtt_us() => n.rtt_us,
            atoms::served_keys() => n.served_keys,
            atoms::bridged_keys() => n.bridged_keys,
            atoms::requests_sent() => n.requests_sent,
            atoms::requests_served() => n.requests_served,
            atoms::members() => n.members.clone(),
        })
    });
    rustler::term_map!(env, {
        atoms::routed() => routed,
        atoms::nats() => nats,
        atoms::name() => s.name.as_str(),
        atoms::in_flight() => s.in_flight as u64,
        atoms::queued() => s.queued as u64,
        atoms::unrouted() => s.unrouted,
        atoms::forwards_cancelled() => s.forwards_cancelled,
        atoms::handlers() => handlers,
        atoms::actors() => actors,
    })
}

/// The core's error codes, each with its one-line description:
/// `[{"PF001", "no handler ..."}, ...]`, for `PacketFlow.Error`'s table.
#[rustler::nif]
fn error_codes() -> Vec<(&'static str, &'static str)> {
    ErrorCode::ALL.iter().map(|c| (c.as_str(), c.description())).collect()
}
