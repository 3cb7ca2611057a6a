//! `mc:migrate`: moves an actor to another node hosting its type, between
//! its turns, with its state, its remembered turns and the messages
//! waiting for it (docs/stdlib.md). The element checks its input
//! and the target as this node sees the mesh, then asks the actor to move
//! (op `migrate`, an actor message like any other); the node holding the
//! actor does the move (`crate::actor::migration`, docs/protocol.md,
//! "Migration").

use serde_json::{json, Map, Value};

use super::args::Args;
use super::step::kind;
use super::waiter::ask;
use crate::actor::address::{check_type, MAX_ID_LEN, MAX_NODE_ID_LEN};
use crate::actor::{ActorRef, Op};
use crate::error::{ErrorCode, PfError};
use crate::reactor::{Context, Handler};

/// The element's key, as its errors name it.
const KEY: &str = "mc:migrate";

/// The actor types of the standard library itself: their owners keep
/// timers and waiting calls in the memory of the node they are on.
const RESERVED_PREFIX: &str = "pf.";

/// `mc:migrate` `{actor: {type, id}, to}` -> `{from, to}`: the node the
/// actor was on and the node it is on now (the same one when it was there
/// already). PF404 when `to` is not a node this one knows, or does not
/// host the type, or the actor does not exist.
pub(super) fn migrate() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of(KEY, &data)?;
        let actor = actor_of(&args)?;
        let to = args.text("to", MAX_NODE_ID_LEN)?;
        check_target(&ctx, &actor, to)?;
        ask(&ctx, &actor, Op::Migrate, json!({"to": to}), None).await
    })
}

/// The actor named by `actor: {type, id}`.
fn actor_of(args: &Args<'_>) -> Result<ActorRef, PfError> {
    let value = args.required("actor")?;
    let Value::Object(fields) = value else {
        return Err(args.bad("actor", format!("must be an object {{type, id}}, got {}", kind(value))));
    };
    let actor_type = text_in(args, fields, "type", crate::actor::address::MAX_TYPE_LEN)?;
    if check_type(actor_type).is_err() {
        return Err(args.bad(
            "actor.type",
            format!("must be an actor type, 1-58 characters of [A-Za-z0-9_.-], got {actor_type:?}"),
        ));
    }
    if actor_type.starts_with(RESERVED_PREFIX) {
        return Err(args.bad(
            "actor.type",
            format!(
                "{actor_type:?} is the standard library's own (pf.*): its actors stay on the node \
                 placement gives them"
            ),
        ));
    }
    let id = text_in(args, fields, "id", MAX_ID_LEN)?;
    ActorRef::new(actor_type, id)
}

/// The string `actor.<field>` of 1-`max_len` bytes.
fn text_in<'a>(
    args: &Args<'_>,
    fields: &'a Map<String, Value>,
    field: &str,
    max_len: usize,
) -> Result<&'a str, PfError> {
    let name = format!("actor.{field}");
    match fields.get(field) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len => Ok(s),
        Some(Value::String(s)) => {
            Err(args.bad(&name, format!("must be a string of 1-{max_len} bytes, got {} bytes", s.len())))
        }
        None | Some(Value::Null) => Err(args.bad(&name, "is required")),
        Some(other) => Err(args.bad(&name, format!("must be a string, got {}", kind(other)))),
    }
}

/// PF404 unless `to` hosts the actor's type, as this node sees the mesh
/// (the node holding the actor checks again with its own view).
fn check_target(ctx: &Context, actor: &ActorRef, to: &str) -> Result<(), PfError> {
    let forwarder = ctx.reactor.forwarder();
    let hosts = match &forwarder {
        Some(f) => f.actor_host_ids(actor.actor_type()),
        // Without a network, the one node there is is this reactor.
        None => {
            let own = ctx.reactor.actor_host(actor.actor_type()).map(|_| ctx.reactor.config().name.clone());
            own.into_iter().collect()
        }
    };
    if hosts.iter().any(|h| h == to) {
        return Ok(());
    }
    let not_found = |message: String| PfError::new(ErrorCode::NotFound, format!("{KEY}: {message}"));
    if hosts.is_empty() {
        return Err(not_found(format!(
            "actor.type: no node this one reaches hosts actor type {}",
            actor.actor_type()
        )));
    }
    let known = forwarder.as_ref().is_some_and(|f| f.knows_node(to));
    let hosts = hosts.join(", ");
    Err(not_found(if known {
        format!("to: node {to:?} does not host actor type {} (its hosts: {hosts})", actor.actor_type())
    } else {
        format!("to: no node {to:?} is known here (the hosts of actor type {}: {hosts})", actor.actor_type())
    }))
}
