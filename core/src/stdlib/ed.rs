//! `ed`: events. `signal` fires a name to the `cf:gate`s waiting on it and
//! to the `react` subscriptions matching it; `timer` calls a step later,
//! once or every so often. (`ed:watch` is in [`watch`](super::watch),
//! beside `rm:cache`.)
//!
//! Their state is in actors of reserved types, one owner per name across a
//! mesh (by placement), kept with the node's actor store:
//!
//! - `pf.signal`, one per signal name: the gates waiting on it (see
//!   [`waiter`](super::waiter)). Created by the first gate, stopped when a
//!   signal takes its waiters: a name nobody waits on costs nothing.
//! - `pf.react`, one (`subscriptions`): every subscription, so that one
//!   turn finds all those matching a name, patterns included.
//! - `pf.timer`, one per timer: its step, its next fire time (Unix ms) and
//!   what is left of it. The owner arms a Tokio timer for it; with a
//!   durable store a node re-arms, when it enables `ed:timer`, the timers
//!   it has stored, so a timer survives a restart.

use std::collections::HashMap;
use std::sync::{LazyLock, Weak};

use futures::future::join_all;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use super::args::{error_value, Args, MAX_ITEMS};
use super::step::{kind, Step};
use super::waiter::{self, ask, now_ms, send_creating};
use crate::actor::{ActorContext, ActorRef, ActorType, Op, Reply};
use crate::error::{ErrorCode, PfError};
use crate::packet::Packet;
use crate::reactor::{Handler, Reactor, ReactorInner};

/// The actor type of signal names (id: the name).
pub(super) const SIGNAL_TYPE: &str = "pf.signal";
/// The actor type of the subscriptions (one actor, [`SUBSCRIPTIONS`]).
pub(super) const REACT_TYPE: &str = "pf.react";
/// The actor type of timers (id: the timer's id).
pub(super) const TIMER_TYPE: &str = "pf.timer";
/// The one `pf.react` actor.
const SUBSCRIPTIONS: &str = "subscriptions";

/// Longest signal name or pattern, in bytes: an actor id.
pub(super) const MAX_NAME_LEN: usize = crate::actor::address::MAX_ID_LEN;
/// Most gates waiting on one name, and most subscriptions in a mesh: each
/// is kept in one actor's state, which each turn copies.
const MAX_ENTRIES: usize = MAX_ITEMS as usize;
/// Longest wait before a timer fires (`after_ms`, `every_ms`, `at` from
/// now): a year.
const MAX_DELAY_MS: u64 = 365 * 86_400_000;
/// Shortest `every_ms`.
const MIN_EVERY_MS: u64 = 10;

/// A signal name: 1-128 bytes, without `*` (which only patterns hold).
pub(super) fn signal_name<'a>(args: &Args<'a>, field: &str) -> Result<&'a str, PfError> {
    let name = args.text(field, MAX_NAME_LEN)?;
    if name.contains('*') {
        return Err(
            args.bad(field, format!("must not hold '*' (only an ed:react pattern may), got {name:?}"))
        );
    }
    Ok(name)
}

/// Whether the subscription pattern `pattern` (a name, or a prefix ending
/// in `*`) matches the signal `name`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// An entry of a waiting list, as an owner keeps it: the waiter, its
/// turn, when it stops counting (the owner's clock).
pub(super) fn waiting_entry(message: &Value) -> Value {
    let ttl_ms = message["ttl_ms"].as_u64().unwrap_or(0);
    json!({"waiter": message["waiter"], "turn": message["turn"], "expires_at": now_ms() + ttl_ms})
}

/// The entries of `list` whose wait is not over.
pub(super) fn live(list: Option<&Value>) -> Vec<Value> {
    let now = now_ms();
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|w| w["expires_at"].as_u64().is_some_and(|at| at > now))
        .cloned()
        .collect()
}

/// What a waiter is told (`{waiter, turn}`).
pub(super) fn address(entry: &Value) -> Value {
    json!({"waiter": entry["waiter"], "turn": entry["turn"]})
}

/// `ed:signal` `{name, payload?}`: releases the gates waiting on `name`
/// (they answer `payload`, default `null`) and calls the `do` step of
/// every subscription matching it with `{name, payload}` -> `{delivered,
/// failed: [{subscription_id, code, message}]}`: the gates released and
/// the reactions that answered, and the reactions that failed.
pub(super) fn signal() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("ed:signal", &data)?;
        let name = signal_name(&args, "name")?;
        let payload = args.get("payload").cloned().unwrap_or(Value::Null);
        let owner = ActorRef::new(SIGNAL_TYPE, name)?;
        let subscriptions = ActorRef::new(REACT_TYPE, SUBSCRIPTIONS)?;
        let (fired, matched) = futures::join!(
            ask(&ctx, &owner, Op::Send, json!({"type": "fire"}), None),
            ask(&ctx, &subscriptions, Op::Send, json!({"type": "match", "name": name}), None),
        );
        let absent_is_empty = |answer: Result<Value, PfError>| match answer {
            Err(e) if e.is(ErrorCode::NotFound) => Ok(Value::Null),
            other => other,
        };
        let (fired, matched) = (absent_is_empty(fired)?, absent_is_empty(matched)?);
        let waiters = fired["waiters"].as_array().cloned().unwrap_or_default();
        // Each with whether it was made by a packet that may not reach mc:*.
        let reactions: Vec<(String, Step, bool)> = matched
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let step = Step::parse(&s["do"], "do").ok()?;
                Some((s["id"].as_str()?.to_owned(), step, s["no_mc"] == json!(true)))
            })
            .collect();
        let signal = json!({"name": name, "payload": payload});
        let (released, reacted) = futures::join!(
            join_all(waiters.iter().map(|w| waiter::release(&ctx, w, &payload))),
            join_all(reactions.iter().map(|(_, step, bar_mc)| step.run_barring(
                &ctx,
                signal.clone(),
                *bar_mc
            ))),
        );
        let mut delivered = released.iter().filter(|r| **r).count();
        let mut failed = Vec::new();
        for ((id, step, _), answer) in reactions.iter().zip(reacted) {
            match answer {
                Ok(_) => delivered += 1,
                Err(e) => {
                    let e = step.failed("ed:react do", e);
                    let mut entry = error_value(&e);
                    entry["subscription_id"] = json!(id);
                    failed.push(entry);
                }
            }
        }
        Ok(json!({"delivered": delivered, "failed": failed}))
    })
}

/// The `pf.signal` type: `wait` (a gate's waiter registers) and `fire`
/// (hands out the waiters and stops the actor; one just made, `{}`, by a
/// gate whose registration comes next, stays).
pub(super) fn signal_type() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, _: &ActorContext| {
        let mut waiting = live(state.get("waiters"));
        if kind == "fire" {
            if state.get("waiters").is_none() {
                // Made a moment ago by a gate about to register: it stays.
                return Ok(Reply::Value(json!({"waiters": []})));
            }
            let waiters: Vec<Value> = waiting.iter().map(address).collect();
            return Ok(Reply::Stop(json!({"waiters": waiters})));
        }
        if waiting.len() >= MAX_ENTRIES {
            return Err(PfError::new(
                ErrorCode::Overloaded,
                format!("cf:gate: {MAX_ENTRIES} gates wait on this signal already"),
            ));
        }
        waiting.push(waiting_entry(message));
        let count = waiting.len();
        *state = json!({"waiters": waiting});
        Ok(Reply::Value(json!({"waiting": count})))
    })
    .with_message_types(["wait", "fire"])
}

/// `ed:react` `{on, do}` -> `{subscription_id}`: from now on, every
/// `ed:signal` whose name `on` matches (the name, or a prefix ending in
/// `*`; `*` alone matches all) calls `do` with `{name, payload}`.
/// `{cancel: subscription_id}` -> `{cancelled}` (false: no such
/// subscription).
pub(super) fn react() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("ed:react", &data)?;
        let subscriptions = ActorRef::new(REACT_TYPE, SUBSCRIPTIONS)?;
        if args.get("cancel").is_some() {
            let id = args.text("cancel", MAX_NAME_LEN)?;
            if let Some(other) = ["on", "do"].into_iter().find(|f| args.get(f).is_some()) {
                return Err(args.bad("cancel", format!("is given alone (with no {other})")));
            }
            let cancelled =
                ask(&ctx, &subscriptions, Op::Send, json!({"type": "cancel", "id": id}), None).await;
            return match cancelled {
                Err(e) if e.is(ErrorCode::NotFound) => Ok(json!({"cancelled": false})),
                other => other,
            };
        }
        let on = args.text("on", MAX_NAME_LEN)?;
        if on.trim_end_matches('*').contains('*') {
            return Err(args.bad("on", format!("may hold '*' only at its end, got {on:?}")));
        }
        let step = args.step("do")?;
        step.reachable_from(&ctx, "ed:react: do")?;
        let id = crate::packet::PacketId::random().to_string();
        let message = json!({"type": "subscribe", "id": id, "on": on, "do": step.to_value()});
        send_creating(&ctx, &subscriptions, message).await?;
        Ok(json!({"subscription_id": id}))
    })
}

/// The `pf.react` type: `subscribe`, `cancel` (stops the actor once it
/// removed the last subscription) and `match` (the subscriptions of a name, as `{id,
/// do, no_mc?}`). A subscription made by a packet that may not reach
/// `mc:*` keeps `no_mc: true`, and so do its reactions.
pub(super) fn react_type() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, ctx: &ActorContext| {
        let subs = state.get("subs").and_then(Value::as_object).cloned().unwrap_or_default();
        match kind {
            "match" => {
                let name = message["name"].as_str().unwrap_or_default();
                let matched: Vec<Value> = subs
                    .iter()
                    .filter(|(_, s)| s["on"].as_str().is_some_and(|on| matches(on, name)))
                    .map(|(id, s)| json!({"id": id, "do": s["do"], "no_mc": s["no_mc"]}))
                    .collect();
                Ok(Reply::Value(Value::Array(matched)))
            }
            "cancel" => {
                let mut subs = subs;
                let cancelled = subs.remove(message["id"].as_str().unwrap_or_default()).is_some();
                if cancelled && subs.is_empty() {
                    return Ok(Reply::Stop(json!({"cancelled": cancelled})));
                }
                *state = json!({"subs": subs});
                Ok(Reply::Value(json!({"cancelled": cancelled})))
            }
            _ => {
                let mut subs = subs;
                if subs.len() >= MAX_ENTRIES {
                    return Err(PfError::new(
                        ErrorCode::Overloaded,
                        format!("ed:react: there are {MAX_ENTRIES} subscriptions already; cancel some first"),
                    ));
                }
                let id = message["id"].as_str().unwrap_or_default().to_owned();
                let mut sub = json!({"on": message["on"], "do": message["do"]});
                if ctx.bars_mc() {
                    sub["no_mc"] = json!(true);
                }
                subs.insert(id, sub);
                *state = json!({"subs": subs});
                Ok(Reply::Value(Value::Null))
            }
        }
    })
    .with_message_types(["subscribe", "cancel", "match"])
}

/// `ed:timer` `{after_ms | every_ms | at, do, times?}` -> `{timer_id}`:
/// calls `do` (with its own data, else `{timer_id, fired}`) once
/// `after_ms` from now or `at` (RFC 3339; a time past fires at once), or
/// every `every_ms` (the first after `after_ms` or at `at` when given,
/// else after `every_ms`), `times` times in all (default: once, or for
/// ever with `every_ms`). `{cancel: timer_id}` -> `{cancelled}`.
pub(super) fn timer() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("ed:timer", &data)?;
        if args.get("cancel").is_some() {
            let id = args.text("cancel", MAX_NAME_LEN)?;
            if let Some(other) =
                ["do", "after_ms", "every_ms", "at", "times"].into_iter().find(|f| args.get(f).is_some())
            {
                return Err(args.bad("cancel", format!("is given alone (with no {other})")));
            }
            let timer = ActorRef::new(TIMER_TYPE, id)?;
            return ask(&ctx, &timer, Op::Send, json!({"type": "cancel"}), None).await;
        }
        let after_ms = args.int_in("after_ms", 0, MAX_DELAY_MS)?;
        let every_ms = args.int_in("every_ms", MIN_EVERY_MS, MAX_DELAY_MS)?;
        let at_ms = match args.get("at") {
            None => None,
            Some(Value::String(text)) => Some(rfc3339_ms(text).map_err(|why| args.bad("at", why))?),
            Some(other) => {
                return Err(args.bad("at", format!("must be an RFC 3339 time, got {}", kind(other))))
            }
        };
        if after_ms.is_some() && at_ms.is_some() {
            return Err(args.bad("after_ms", "and at cannot both be given"));
        }
        if after_ms.is_none() && every_ms.is_none() && at_ms.is_none() {
            return Err(args.bad("after_ms", "every_ms or at is required"));
        }
        if let Some(at) = at_ms.filter(|at| at.saturating_sub(now_ms()) > MAX_DELAY_MS) {
            return Err(args.bad("at", format!("must be at most a year from now, got {at} ms since 1970")));
        }
        let times = args.int_in("times", 1, u64::from(u32::MAX))?;
        if times.is_some_and(|t| t > 1) && every_ms.is_none() {
            return Err(args.bad("times", "above 1 needs every_ms"));
        }
        let step = args.step("do")?;
        step.reachable_from(&ctx, "ed:timer: do")?;
        let timer = ActorRef::generate(TIMER_TYPE)?;
        let mut start = Map::new();
        start.insert("type".into(), json!("start"));
        start.insert("do".into(), step.to_value());
        match at_ms {
            Some(at) => start.insert("at_ms".into(), json!(at)),
            None => start.insert("in_ms".into(), json!(after_ms.or(every_ms))),
        };
        start.insert("every_ms".into(), json!(every_ms));
        start.insert("times".into(), json!(times.or(every_ms.is_none().then_some(1))));
        ask(&ctx, &timer, Op::Send, Value::Object(start), None).await?;
        Ok(json!({"timer_id": timer.id()}))
    })
}

/// An RFC 3339 time (`2030-01-02T03:04:05Z`, `...+02:00`) in Unix ms; the
/// reason otherwise.
fn rfc3339_ms(text: &str) -> Result<u64, String> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("must be an RFC 3339 time as 2030-01-02T03:04:05Z, got {text:?} ({e})"))?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("must be after 1970, got {text:?}"))
}

/// The `pf.timer` type. Its state: `{do, next_at, every_ms, times (left,
/// null: for ever), fired, no_mc?}` (`no_mc: true`: started by a packet
/// that may not reach `mc:*`, and so may not its step); `null` for no
/// timer (a cancelled or spent one stops). Messages: `start`, `due` (its armed timer went off: fire if it
/// is the one expected), `cancel`, and `arm` (re-arm after a restart).
pub(super) fn timer_type() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, ctx: &ActorContext| {
        let id = ctx.actor().id();
        if state.is_null() && kind != "start" {
            // No such timer (cancelled, spent, or never made): this message
            // brought an empty one in, which goes again.
            let answer = if kind == "cancel" { json!({"cancelled": false}) } else { json!({"fire": false}) };
            return Ok(Reply::Stop(answer));
        }
        let next_at = state["next_at"].as_u64().unwrap_or(0);
        match kind {
            "start" => {
                if !state.is_null() {
                    return Err(PfError::new(ErrorCode::DuplicateId, format!("timer {id} exists")));
                }
                let next_at = message["at_ms"]
                    .as_u64()
                    .unwrap_or_else(|| now_ms() + message["in_ms"].as_u64().unwrap_or(0));
                *state = json!({
                    "do": message["do"], "next_at": next_at, "every_ms": message["every_ms"],
                    "times": message["times"], "fired": 0,
                });
                if ctx.bars_mc() {
                    state["no_mc"] = json!(true);
                }
                arm(&ctx.reactor, id, next_at);
                Ok(Reply::Value(json!({"timer_id": id, "next_at": next_at})))
            }
            "cancel" => {
                disarm(&ctx.reactor, id);
                Ok(Reply::Stop(json!({"cancelled": true})))
            }
            "arm" => {
                arm(&ctx.reactor, id, next_at);
                Ok(Reply::Value(Value::Null))
            }
            _ => {
                if message["at"].as_u64() != Some(next_at) {
                    // A timer armed for an earlier time, or on another node.
                    return Ok(Reply::Value(json!({"fire": false})));
                }
                let fired = state["fired"].as_u64().unwrap_or(0) + 1;
                let times = state["times"].as_u64().map(|t| t.saturating_sub(1));
                let answer =
                    json!({"fire": true, "do": state["do"], "fired": fired, "no_mc": state["no_mc"]});
                match state["every_ms"].as_u64() {
                    Some(every) if times != Some(0) => {
                        // Ticks missed while no node ran the timer are not
                        // made up: the next one is the first still ahead.
                        let now = now_ms();
                        let behind = now.saturating_sub(next_at) / every;
                        let next = next_at + (behind + 1) * every;
                        state["next_at"] = json!(next);
                        state["fired"] = json!(fired);
                        state["times"] = json!(times);
                        arm(&ctx.reactor, id, next);
                        Ok(Reply::Value(answer))
                    }
                    _ => Ok(Reply::Stop(answer)),
                }
            }
        }
    })
    .with_initial_state(Value::Null)
    .with_message_types(["start", "due", "cancel", "arm"])
}

/// A timer armed on a reactor: (the reactor, as an address, and the timer's id).
type ArmedKey = (usize, String);

/// The timers armed in this process: the time each is armed for (Unix
/// ms) and what disarms it.
static ARMED: LazyLock<Mutex<HashMap<ArmedKey, (u64, CancellationToken)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn reactor_key(reactor: &Reactor) -> usize {
    reactor.downgrade().as_ptr() as usize
}

/// Arms the timer `id` on this node for `at` (Unix ms), unless it is
/// armed for that time already: when it goes off, it asks the timer's
/// actor (wherever it lives by then) whether to fire, and calls the step.
fn arm(reactor: &Reactor, id: &str, at: u64) {
    // Turns run inside the reactor's runtime; nothing can be armed elsewhere.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let key = (reactor_key(reactor), id.to_owned());
    let token = CancellationToken::new();
    {
        let mut armed = ARMED.lock();
        if armed.get(&key).is_some_and(|(when, _)| *when == at) {
            return;
        }
        if let Some((_, old)) = armed.insert(key.clone(), (at, token.clone())) {
            old.cancel();
        }
    }
    runtime.spawn(go_off(reactor.downgrade(), key, at, token));
}

/// Disarms the timer `id` on this node.
fn disarm(reactor: &Reactor, id: &str) {
    if let Some((_, token)) = ARMED.lock().remove(&(reactor_key(reactor), id.to_owned())) {
        token.cancel();
    }
}

/// A timer armed for `at`: waits (unless disarmed), asks its actor
/// whether to fire (the actor decides, once, and re-arms a repeating
/// timer), then calls its step as a new packet of this node.
async fn go_off(reactor: Weak<ReactorInner>, key: ArmedKey, at: u64, token: CancellationToken) {
    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
    tokio::select! {
        _ = token.cancelled() => return,
        _ = tokio::time::sleep(wait) => {}
    }
    {
        let mut armed = ARMED.lock();
        if armed.get(&key).is_some_and(|(when, _)| *when == at) {
            armed.remove(&key);
        }
    }
    let Some(reactor) = reactor.upgrade().map(Reactor::from_inner) else { return };
    if reactor.is_stopped() {
        return;
    }
    let Ok(timer) = ActorRef::new(TIMER_TYPE, &key.1) else { return };
    let Ok(answer) = reactor.actors().send(&timer, json!({"type": "due", "at": at})).await else { return };
    if answer["fire"] != json!(true) {
        return;
    }
    let Ok(step) = Step::parse(&answer["do"], "do") else { return };
    let data = step.data.clone().unwrap_or_else(|| json!({"timer_id": key.1, "fired": answer["fired"]}));
    let mut packet = Packet::new(step.group, step.element.clone(), data);
    if let Some(timeout_ms) = step.timeout_ms {
        packet = packet.with_timeout_ms(timeout_ms);
    }
    if let Some(priority) = step.priority {
        packet = packet.with_priority(priority);
    }
    if answer["no_mc"] == json!(true) {
        // Started by a packet that could not reach mc:*: neither can its
        // step, nor what the step calls.
        if step.group == crate::packet::Group::MetaCompute {
            return;
        }
        packet.bar_mc();
    }
    // A failed call is the step's own business: the timer goes on.
    let _ = Box::pin(reactor.submit(packet)).await;
}

/// Re-arms, on `reactor`, every timer in its actor store: each is sent
/// `arm`, which its owner (this node, or the one placement names) obeys.
pub(super) fn rearm_stored_timers(reactor: &Reactor) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let reactor = reactor.clone();
    tokio::spawn(async move {
        let actors = reactor.actors();
        let Ok(ids) = actors.list(TIMER_TYPE).await else { return };
        for id in ids {
            if let Ok(timer) = ActorRef::new(TIMER_TYPE, &id) {
                let _ = actors.send(&timer, json!({"type": "arm"})).await;
            }
        }
    });
}
