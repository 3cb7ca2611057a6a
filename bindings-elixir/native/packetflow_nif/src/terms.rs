//! The Elixir structs the NIF hands out: `%PacketFlow.Error{}`,
//! `%PacketFlow.Result{}` and the stats map.

use packetflow::net::NatsStats;
use packetflow::reactor::ReactorStats;
use packetflow::{ErrorCode, PacketResult, PfError, Value};
use rustler::{Atom, Encoder, Env, Term};

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
/// [%{group, element, ...}], actors: [%{actor_type, active, ...}], nats:
/// nil | %{state, server, rtt_us, ...}}`.
pub fn stats<'a>(env: Env<'a>, s: &ReactorStats, nats: Option<&NatsStats>) -> Term<'a> {
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
    rustler::term_map!(env, {
        atoms::name() => s.name.as_str(),
        atoms::in_flight() => s.in_flight as u64,
        atoms::queued() => s.queued as u64,
        atoms::unrouted() => s.unrouted,
        atoms::forwards_cancelled() => s.forwards_cancelled,
        atoms::handlers() => handlers,
        atoms::actors() => actors,
        atoms::nats() => nats.map(|n| nats_stats(env, n)),
    })
}

/// The node's connection to NATS, keys as in `/health`'s `nats` member;
/// the state an atom (`:connected`, `:disconnected`, `:connecting`).
fn nats_stats<'a>(env: Env<'a>, n: &NatsStats) -> Term<'a> {
    let state = Atom::from_str(env, n.state).expect("an atom of a few letters");
    let keys = [
        atoms::state(),
        atoms::server(),
        atoms::server_name(),
        atoms::server_version(),
        atoms::max_payload(),
        atoms::rtt_us(),
        atoms::namespace(),
        atoms::served_keys(),
        atoms::reconnects(),
        atoms::last_event(),
        atoms::requests_sent(),
        atoms::requests_served(),
        atoms::no_responders(),
        atoms::timed_out(),
        atoms::lost(),
        atoms::too_large(),
    ]
    .map(|key| key.encode(env));
    let values = [
        state.encode(env),
        n.server.encode(env),
        n.server_name.encode(env),
        n.server_version.encode(env),
        (n.max_payload as u64).encode(env),
        n.rtt_us.encode(env),
        n.namespace.encode(env),
        (n.served_keys as u64).encode(env),
        n.reconnects.encode(env),
        n.last_event.encode(env),
        n.requests_sent.encode(env),
        n.requests_served.encode(env),
        n.no_responders.encode(env),
        n.timed_out.encode(env),
        n.lost.encode(env),
        n.too_large.encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}

/// The core's error codes, each with its one-line description:
/// `[{"PF001", "no handler ..."}, ...]`, for `PacketFlow.Error`'s table.
#[rustler::nif]
fn error_codes() -> Vec<(&'static str, &'static str)> {
    ErrorCode::ALL.iter().map(|c| (c.as_str(), c.description())).collect()
}
