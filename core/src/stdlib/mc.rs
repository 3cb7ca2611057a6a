//! `mc`: meta-control, elements that change the running system. `spawn`
//! creates an actor (wherever placement puts it); `scale` and `tune` change
//! the node that runs them: a key's concurrency limit, a runtime setting.
//! What they change lives in the reactor ([`Reactor::set_concurrency_limit`],
//! [`Reactor::tune`]); these handlers only read their input and call it.
//!
//! With auth on, a token reaches them only by naming `mc` (`mc:*`,
//! `mc:tune`), and the calls made for a packet whose token does not grant
//! `mc:*` cannot reach them (docs/protocol.md, "Authentication").

use serde_json::{json, Value};

use super::args::Args;
use super::step::kind;
use super::waiter::ask;
use crate::actor::address::{MAX_ID_LEN, MAX_TYPE_LEN};
use crate::actor::{ActorRef, Op};
use crate::error::PfError;
use crate::packet::{Element, Group};
use crate::reactor::{Handler, Setting, MAX_CONCURRENCY};

/// The prefix of the actor types the standard elements keep their state
/// in: `mc:spawn` does not make those.
const RESERVED_TYPE_PREFIX: &str = "pf.";

/// `mc:spawn` `{type, id?, state?}` -> `{actor: {type, id}}`: creates the
/// actor as a create packet (`rm:actor.<type>`, `pf.actor_op: "create"`)
/// would, on the node placement picks, with `state` (default `null`) as
/// its state and `id` (default: a fresh UUID v4). PF409 when it exists,
/// PF001 when no node hosts the type.
pub(super) fn spawn() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("mc:spawn", &data)?;
        let actor_type = args.text("type", MAX_TYPE_LEN)?;
        crate::actor::address::check_type(actor_type).map_err(|_| {
            args.bad(
                "type",
                format!("must be 1-{MAX_TYPE_LEN} characters of [A-Za-z0-9_.-], got {actor_type:?}"),
            )
        })?;
        if actor_type.starts_with(RESERVED_TYPE_PREFIX) {
            return Err(args.bad(
                "type",
                format!("{actor_type:?} is reserved: types starting with {RESERVED_TYPE_PREFIX:?} hold the standard elements' state"),
            ));
        }
        let actor = match args.get("id") {
            Some(_) => ActorRef::new(actor_type, args.text("id", MAX_ID_LEN)?)?,
            None => ActorRef::generate(actor_type)?,
        };
        let state = args.get("state").cloned().unwrap_or(Value::Null);
        let created = ask(&ctx, &actor, Op::Create, state, None)
            .await
            .map_err(|e| PfError { code: e.code, message: format!("mc:spawn: {}", e.message) })?;
        Ok(json!({"actor": {"type": created["type"], "id": created["id"]}}))
    })
}

/// `mc:scale` `{target: "group:element", max_concurrency}` -> `{previous}`:
/// from now on at most `max_concurrency` packets of `target` run at once
/// on this node, the others waiting their turn (by priority, within their
/// deadline); 0 lifts the limit. `previous`: the limit it replaces, `null`
/// for none.
pub(super) fn scale() -> Handler {
    Handler::from_sync(|data, ctx| {
        let args = Args::of("mc:scale", &data)?;
        let target = args.text("target", 3 + 64)?;
        let (group, element) = target
            .split_once(':')
            .ok_or_else(|| args.bad("target", format!("must be group:element, got {target:?}")))?;
        let group =
            Group::parse(group).map_err(|e| args.bad("target", format!("{target:?}: {}", e.message)))?;
        Element::new(element).map_err(|e| args.bad("target", format!("{target:?}: {}", e.message)))?;
        let limit = match args.get("max_concurrency") {
            None => {
                return Err(args
                    .bad("max_concurrency", format!("is required (1-{MAX_CONCURRENCY}; 0 lifts the limit)")))
            }
            Some(v) => v.as_u64().filter(|n| *n <= MAX_CONCURRENCY).ok_or_else(|| {
                args.bad("max_concurrency", format!("must be an integer 0-{MAX_CONCURRENCY}, got {v}"))
            })?,
        };
        let limit = (limit > 0).then_some(limit as usize);
        let previous = ctx
            .reactor
            .set_concurrency_limit(group, element, limit)
            .map_err(|e| args.bad("target", e.message))?;
        Ok(json!({"previous": previous}))
    })
}

/// `mc:tune` `{setting, value}` -> `{previous}`: sets a runtime setting
/// of this node ([`Setting`]) within its bounds.
pub(super) fn tune() -> Handler {
    Handler::from_sync(|data, ctx| {
        let args = Args::of("mc:tune", &data)?;
        let known = || Setting::ALL.map(Setting::name).join(", ");
        let name = args.text("setting", 64).map_err(|e| match args.get("setting") {
            None => args.bad("setting", format!("is required (one of {})", known())),
            Some(_) => e,
        })?;
        let setting = Setting::parse(name)
            .ok_or_else(|| args.bad("setting", format!("must be one of {}, got {name:?}", known())))?;
        let (min, max) = setting.bounds();
        let out_of_bounds =
            |got: &Value| args.bad("value", format!("must be {min}-{max} for {name}, got {got}"));
        let value = match args.get("value") {
            None => return Err(args.bad("value", format!("is required ({min}-{max} for {name})"))),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                Some(_) => return Err(out_of_bounds(v)),
                None if v.as_i64().is_some() => return Err(out_of_bounds(v)),
                None => {
                    let got = if v.is_number() { v.to_string() } else { kind(v).to_owned() };
                    return Err(
                        args.bad("value", format!("must be an integer ({min}-{max} for {name}), got {got}"))
                    );
                }
            },
        };
        // In bounds: what may still fail is a setting this node lacks.
        let previous = ctx.reactor.tune(setting, value).map_err(|e| args.bad("setting", e.message))?;
        Ok(json!({"previous": previous}))
    })
}
