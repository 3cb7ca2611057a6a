//! `rm`: resources held for a while. `lock` is a lock with fencing
//! tokens; `alloc` and `free` lease units of a counted resource (a
//! semaphore).
//!
//! Their state is in actors of reserved types, one owner per name across a
//! mesh (by placement), kept with the node's actor store:
//!
//! - `pf.lock`, one per lock name: the last fencing token handed out
//!   (`fence`, which is the holder's while the lock is held), when the
//!   hold ends, and the calls waiting for it, first come first served. It
//!   stays while the store keeps it, free or not: its fence is what keeps
//!   a token from ever being handed out twice, across a restart on a
//!   durable store too. (A token is also at least the owner's clock in ms
//!   times 1,000, for an owner that starts without the state.)
//! - `pf.resource`, one per resource name: its capacity, its leases, the
//!   calls waiting for units, and the lease counter (kept for the same
//!   reason).
//!
//! Each turn of an owner is short and never waits. A call that must wait
//! parks a waiter ([`waiter`](super::waiter)) which queues with the owner.
//! Only a turn that ends a hold (an unlock, a free, an expiry) grants the
//! lock or units to queued calls; it hands the grants to whoever sent it,
//! which releases their waiters ([`hand_over`]). A grant whose waiter
//! stopped waiting (its time was up at that moment) is given back, and goes
//! to the next in line.
//!
//! A hold ends at its TTL. Nobody needs to call for that: an expired hold
//! no longer counts at the owner's next turn, and an owner with calls
//! queued arms an alarm on its node for when the hold in their way
//! expires, whose `expire` turn hands the lock or the units on.
//!
//! A hold also ends when the connection of its holder closes: the node
//! the holder's packet entered through notes what was granted over that
//! connection and gives it back then ([`Asked`], [`Hold`], `net::holds`).

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Weak};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use super::args::{Args, MAX_ITEMS};
use super::ed::{address, live, MAX_NAME_LEN};
use super::waiter::{ask, now_ms, park, release_from, Waited};
use crate::actor::{ActorContext, ActorRef, ActorType, Op, Reply};
use crate::error::{ErrorCode, PfError};
use crate::reactor::{Context, Handler, Reactor, ReactorInner};

/// The actor type of locks (id: the lock's name).
pub(crate) const LOCK_TYPE: &str = "pf.lock";
/// The actor type of counted resources (id: the resource's name).
pub(crate) const RESOURCE_TYPE: &str = "pf.resource";

/// Longest hold (`ttl_ms`) and longest `wait_ms`: a day.
const MAX_TTL_MS: u64 = 86_400_000;
/// The floor of a lock's next token: this many per ms of the owner's
/// clock (the tokens stay below 2^53, exact in every binding, until the
/// year 2255).
const TOKENS_PER_MS: u64 = 1_000;
/// Largest capacity of a resource, and largest amount of one lease.
const MAX_CAPACITY: u64 = 1_000_000_000;
/// Most calls queued for one name, and most leases out on one resource:
/// each is kept in one actor's state, which each turn copies.
const MAX_ENTRIES: usize = MAX_ITEMS as usize;
/// How long a hand-over waits for a waiter's answer.
const HAND_OVER_TIMEOUT_MS: u64 = 5_000;

/// `rm:lock` `{name, ttl_ms, wait_ms?}` -> `{acquired: true, token,
/// expires_at}`: the lock `name`, held until `expires_at` (Unix ms, the
/// owner's clock) unless unlocked first, under a fencing `token` larger
/// than any given before for that name. Held by another: waits up to
/// `wait_ms` (default 0: tries once; never past the packet's deadline),
/// first come first served, then answers `{acquired: false, token: null,
/// expires_at: null}`.
///
/// `{unlock: name, token}` -> `{released}`: `true` when `token` held it;
/// `false` when the lock is free (the hold expired, or was released
/// already). PF409 when another token holds it now, or `token` was never
/// given.
pub(super) fn lock() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("rm:lock", &data)?;
        if args.get("unlock").is_some() {
            let name = args.text("unlock", MAX_NAME_LEN)?;
            if let Some(other) = ["name", "ttl_ms", "wait_ms"].into_iter().find(|f| args.get(f).is_some()) {
                return Err(args.bad("unlock", format!("is given with token alone (with no {other})")));
            }
            let token = args
                .int_in("token", 1, u64::MAX)?
                .ok_or_else(|| args.bad("token", "is required with unlock (the token rm:lock gave)"))?;
            let owner = ActorRef::new(LOCK_TYPE, name)?;
            let answer = to_owner(&ctx, &owner, json!({"type": "unlock", "token": token})).await?;
            return Ok(handing_over(&ctx.reactor, owner, answer));
        }
        let name = args.text("name", MAX_NAME_LEN)?;
        let ttl_ms = required_ttl(&args)?;
        let wait_ms = args.int_in("wait_ms", 0, MAX_TTL_MS)?.unwrap_or(0);
        if args.get("token").is_some() {
            return Err(args.bad("token", "is given only with unlock"));
        }
        let owner = ActorRef::new(LOCK_TYPE, name)?;
        let answer = to_owner(&ctx, &owner, json!({"type": "acquire", "ttl_ms": ttl_ms})).await?;
        if answer["acquired"] == json!(true) || wait_ms == 0 {
            return Ok(answer);
        }
        let mut on = Map::new();
        on.insert("lock".into(), json!(name));
        on.insert("lock_ttl_ms".into(), json!(ttl_ms));
        // Boxed: the uncontended call's future stays small.
        match Box::pin(park(&ctx, on, Some(wait_ms))).await? {
            Waited::Released { payload, .. } => Ok(payload),
            Waited::TimedOut => Ok(not_acquired()),
        }
    })
}

/// Asks `message` of `owner` for the call of `ctx`, within its deadline:
/// on a reactor without a network, handed to the owner's host directly
/// (no packet is built: the path of an uncontended lock in process);
/// otherwise as a child packet of the call, which reaches the owner's
/// node.
async fn to_owner(ctx: &Context, owner: &ActorRef, message: Value) -> Result<Value, PfError> {
    if ctx.reactor.has_forwarder() {
        return ask(ctx, owner, Op::Send, message, None).await;
    }
    if ctx.remaining().is_zero() {
        return Err(PfError::new(ErrorCode::Timeout, format!("no time left to ask {owner}")));
    }
    ctx.reactor.actors().ask_until(owner, Op::Send, message, Some(ctx.deadline())).await
}

fn not_acquired() -> Value {
    json!({"acquired": false, "token": null, "expires_at": null})
}

fn required_ttl(args: &Args<'_>) -> Result<u64, PfError> {
    args.int_in("ttl_ms", 1, MAX_TTL_MS)?
        .ok_or_else(|| args.bad("ttl_ms", format!("is required (1-{MAX_TTL_MS})")))
}

/// `rm:alloc` `{resource, amount?, capacity?, ttl_ms}` -> `{lease_id,
/// expires_at}`: a lease of `amount` units (default 1) of `resource`,
/// held until `expires_at` (Unix ms, the owner's clock) unless freed
/// first. Not enough units free: waits, first come first served, until
/// the packet's deadline (PF408). `capacity` is set by the first alloc
/// naming the resource: later ones omit it or name the same (PF409).
pub(super) fn alloc() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("rm:alloc", &data)?;
        let resource = args.text("resource", MAX_NAME_LEN)?;
        let amount = args.int_in("amount", 1, MAX_CAPACITY)?.unwrap_or(1);
        let capacity = args.int_in("capacity", 1, MAX_CAPACITY)?;
        let ttl_ms = required_ttl(&args)?;
        if let Some(capacity) = capacity.filter(|c| amount > *c) {
            return Err(args.bad("amount", format!("must be at most capacity ({capacity}), got {amount}")));
        }
        let owner = ActorRef::new(RESOURCE_TYPE, resource)?;
        let message = json!({"type": "alloc", "amount": amount, "capacity": capacity, "ttl_ms": ttl_ms});
        let answer = to_owner(&ctx, &owner, message).await?;
        if answer["lease_id"].is_string() {
            return Ok(answer);
        }
        let mut on = Map::new();
        on.insert("resource".into(), json!(resource));
        on.insert("amount".into(), json!(amount));
        on.insert("lease_ttl_ms".into(), json!(ttl_ms));
        match Box::pin(park(&ctx, on, None)).await? {
            Waited::Released { payload, .. } => Ok(payload),
            Waited::TimedOut => Err(PfError::new(
                ErrorCode::Timeout,
                format!(
                    "rm:alloc: {amount} of resource {resource:?} did not come free before the deadline \
                     ({} of {} in use when it asked)",
                    answer["used"], answer["capacity"]
                ),
            )),
        }
    })
}

/// `rm:free` `{lease_id}` -> `{freed}`: ends the lease (`false`: it had
/// ended already, expired or freed, or is not known).
pub(super) fn free() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("rm:free", &data)?;
        let lease_id = args.text("lease_id", MAX_LEASE_ID_LEN)?;
        let Some(lease) = LeaseId::parse(lease_id) else {
            return Err(args.bad("lease_id", format!("is not a lease id rm:alloc gave, got {lease_id:?}")));
        };
        let owner = ActorRef::new(RESOURCE_TYPE, lease.resource)?;
        let message = json!({"type": "free", "lease": lease.number, "epoch": lease.epoch});
        let answer = to_owner(&ctx, &owner, message).await?;
        Ok(handing_over(&ctx.reactor, owner, answer))
    })
}

/// Longest lease id: a resource name and what comes before it.
const MAX_LEASE_ID_LEN: usize = MAX_NAME_LEN + 40;

/// A lease id, `<number>.<epoch>@<resource>`: the lease's number within
/// its resource, the resource's epoch (made with its state: a lease of a
/// resource whose state was lost is never taken for a new one), and the
/// resource, so that `rm:free` finds its owner.
struct LeaseId<'a> {
    number: u64,
    epoch: &'a str,
    resource: &'a str,
}

impl<'a> LeaseId<'a> {
    /// Reads `id`; `None` when it is not a lease id.
    fn parse(id: &'a str) -> Option<LeaseId<'a>> {
        let (head, resource) = id.split_once('@')?;
        let (number, epoch) = head.split_once('.')?;
        let number = number.parse().ok()?;
        let valid = !epoch.is_empty() && (1..=MAX_NAME_LEN).contains(&resource.len());
        valid.then_some(LeaseId { number, epoch, resource })
    }
}

/// The grants an owner's answer hands out (`[{waiter, turn, payload,
/// give_back}]`).
fn grants_of(answer: &Value) -> VecDeque<Value> {
    answer.get("grants").and_then(Value::as_array).into_iter().flatten().cloned().collect()
}

/// `answer`, an owner's answer to an unlock or a free, without its
/// `grants` (`{released}`, `{freed}`), which are handed over meanwhile.
fn handing_over(reactor: &Reactor, owner: ActorRef, mut answer: Value) -> Value {
    if let Some(Value::Array(grants)) = answer.as_object_mut().and_then(|a| a.remove("grants")) {
        hand_over_later(reactor, owner, grants.into());
    }
    answer
}

/// [`hand_over`] in a task of its own: the call that ended the hold is
/// answered without waiting for it, and its caller's going away does not
/// cut it short.
fn hand_over_later(reactor: &Reactor, owner: ActorRef, grants: VecDeque<Value>) {
    if grants.is_empty() || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let reactor = reactor.clone();
    tokio::spawn(async move { hand_over(&reactor, &owner, grants).await });
}

/// Releases the waiter of each grant with its payload. A waiter that is
/// no longer waiting cannot take it: the grant goes back to `owner` (its
/// `give_back` message), whose answer may grant the next in line.
async fn hand_over(reactor: &Reactor, owner: &ActorRef, mut grants: VecDeque<Value>) {
    // Each round ends a grant; a queue holds at most MAX_ENTRIES calls.
    for _ in 0..=2 * MAX_ENTRIES {
        let Some(grant) = grants.pop_front() else { return };
        if release_from(reactor, &grant, &grant["payload"], HAND_OVER_TIMEOUT_MS).await {
            continue;
        }
        if let Ok(answer) = reactor.actors().send(owner, grant["give_back"].clone()).await {
            grants.extend(grants_of(&answer));
        }
    }
}

// --- pf.lock ---

/// The `pf.lock` type. State: `{fence, held_until?, queue?: [{waiter,
/// turn, expires_at, lock_ttl_ms}]}`: the holder is always the last token
/// given (`fence`), until `held_until` (Unix ms); `{fence}` alone is a free
/// lock. Messages:
/// `acquire` (try once), `wait` (a waiter queues, or takes a free lock at
/// once), `unlock`, `expire` (its alarm went off).
pub(super) fn lock_type() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, ctx: &ActorContext| {
        let now = now_ms();
        let name = ctx.actor().id();
        own_shape(state);
        let answer = match kind {
            "acquire" => lock_acquire(state, message, now),
            "wait" => lock_wait(state, message, now, name)?,
            "unlock" => lock_unlock(state, message, now, name)?,
            _ => json!({"grants": pass_lock(state, now)}),
        };
        if state.get("queue").is_some() {
            // Calls wait: wake up when the hold in their way ends.
            let at = live_holder(state, now).map_or(now, |(_, expires_at)| expires_at);
            alarm(&ctx.reactor, LOCK_TYPE, name, at);
        }
        Ok(Reply::Value(answer))
    })
    .with_initial_state(json!({}))
    .with_message_types(["acquire", "wait", "unlock", "expire"])
}

/// Makes `state` an object: an owner made by a peer's `create` with some
/// other state starts afresh (its fields are written by name).
fn own_shape(state: &mut Value) {
    if !state.is_object() {
        *state = json!({});
    }
}

/// The holder's `(token, expires_at)`, unless its hold is over.
fn live_holder(state: &Value, now: u64) -> Option<(u64, u64)> {
    let expires_at = state.get("held_until")?.as_u64()?;
    (expires_at > now).then(|| (state["fence"].as_u64().unwrap_or(0), expires_at))
}

/// Ends the hold (the fence stays).
fn end_hold(state: &mut Value) {
    if let Some(map) = state.as_object_mut() {
        map.remove("held_until");
    }
}

/// Makes a new holder for `ttl_ms`, under the next token ->
/// `{acquired: true, token, expires_at}`.
///
/// The next token is one more than the last, and at least the owner's
/// clock in ms times [`TOKENS_PER_MS`]: an owner that starts without the
/// lock's state (its owner moved to a node with a store of its own, or a
/// memory store restarted) still gives tokens above those given before,
/// unless the clocks went back or more than 1,000 locks a ms were taken.
fn take_lock(state: &mut Value, ttl_ms: u64, now: u64) -> Value {
    let next = state["fence"].as_u64().unwrap_or(0) + 1;
    let token = next.max(now.saturating_mul(TOKENS_PER_MS));
    let expires_at = now + ttl_ms;
    state["fence"] = json!(token);
    state["held_until"] = json!(expires_at);
    json!({"acquired": true, "token": token, "expires_at": expires_at})
}

/// Sets the queue (dropped when empty: an idle lock's state is small).
fn set_queue(state: &mut Value, queue: Vec<Value>) {
    if queue.is_empty() {
        if let Some(map) = state.as_object_mut() {
            map.remove("queue");
        }
    } else {
        state["queue"] = Value::Array(queue);
    }
}

fn lock_acquire(state: &mut Value, message: &Value, now: u64) -> Value {
    let queued = state.get("queue").is_some() && {
        let queue = live(state.get("queue"));
        let waiting = !queue.is_empty();
        set_queue(state, queue);
        waiting
    };
    if !queued && live_holder(state, now).is_none() {
        take_lock(state, message["ttl_ms"].as_u64().unwrap_or(1), now)
    } else {
        not_acquired()
    }
}

fn lock_wait(state: &mut Value, message: &Value, now: u64, name: &str) -> Result<Value, PfError> {
    let mut queue = live(state.get("queue"));
    let ttl_ms = message["lock_ttl_ms"].as_u64().unwrap_or(1);
    if live_holder(state, now).is_none() && queue.is_empty() {
        return Ok(json!({"granted": take_lock(state, ttl_ms, now)}));
    }
    if queue.len() >= MAX_ENTRIES {
        return Err(PfError::new(
            ErrorCode::Overloaded,
            format!("rm:lock: {MAX_ENTRIES} calls wait for lock {name:?} already"),
        ));
    }
    let mut entry = queued_entry(message, now);
    entry["lock_ttl_ms"] = json!(ttl_ms);
    queue.push(entry);
    let position = queue.len();
    set_queue(state, queue);
    Ok(json!({"queued": position}))
}

/// A waiter as a queue keeps it: its address, and when its wait ends (the
/// owner's clock).
fn queued_entry(message: &Value, now: u64) -> Value {
    let ttl_ms = message["ttl_ms"].as_u64().unwrap_or(0);
    json!({"waiter": message["waiter"], "turn": message["turn"], "expires_at": now + ttl_ms})
}

fn lock_unlock(state: &mut Value, message: &Value, now: u64, name: &str) -> Result<Value, PfError> {
    let token = message["token"].as_u64().unwrap_or(0);
    let fence = state["fence"].as_u64().unwrap_or(0);
    let held_until = state.get("held_until").and_then(Value::as_u64);
    let released = match held_until {
        Some(expires_at) if token == fence => {
            end_hold(state);
            expires_at > now
        }
        _ => {
            if token > fence {
                return Err(PfError::new(
                    ErrorCode::DuplicateId,
                    format!(
                        "rm:lock: token {token} was never given for lock {name:?} (the last was {fence})"
                    ),
                ));
            }
            if let Some((current, _)) = live_holder(state, now) {
                return Err(PfError::new(
                    ErrorCode::DuplicateId,
                    format!(
                        "rm:lock: token {token} no longer holds lock {name:?}: its hold ended, and token \
                         {current} holds it now"
                    ),
                ));
            }
            false
        }
    };
    Ok(with_grants(json!({"released": released}), pass_lock(state, now)))
}

/// Grants a free lock to the first call still waiting -> the grants
/// (none or one).
fn pass_lock(state: &mut Value, now: u64) -> Vec<Value> {
    if state.get("queue").is_none() || live_holder(state, now).is_some() {
        return Vec::new();
    }
    let mut queue = live(state.get("queue"));
    if queue.is_empty() {
        set_queue(state, queue);
        return Vec::new();
    }
    let next = queue.remove(0);
    set_queue(state, queue);
    let payload = take_lock(state, next["lock_ttl_ms"].as_u64().unwrap_or(1), now);
    vec![grant(&next, payload.clone(), json!({"type": "unlock", "token": payload["token"]}))]
}

/// `answer` with `grants` added, if there are any.
fn with_grants(mut answer: Value, grants: Vec<Value>) -> Value {
    if !grants.is_empty() {
        answer["grants"] = Value::Array(grants);
    }
    answer
}

/// A grant to hand over: the waiter to release with `payload`, and what
/// gives it back if that waiter no longer waits.
fn grant(entry: &Value, payload: Value, give_back: Value) -> Value {
    let mut grant = address(entry);
    grant["payload"] = payload;
    grant["give_back"] = give_back;
    grant
}

// --- pf.resource ---

/// The `pf.resource` type. State: `{capacity, epoch, next, leases:
/// {number: {amount, expires_at}}, queue?: [{waiter, turn, expires_at,
/// amount, lease_ttl_ms}]}`; `{}` before its first alloc. Messages:
/// `alloc` (try once), `wait`, `free`, `expire`.
pub(super) fn resource_type() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, ctx: &ActorContext| {
        let now = now_ms();
        let name = ctx.actor().id();
        own_shape(state);
        if state.get("capacity").is_none() && kind != "alloc" {
            // No such resource: this message brought an empty one in,
            // which goes again.
            let answer = if kind == "free" { json!({"freed": false}) } else { json!({"grants": []}) };
            return Ok(Reply::Stop(answer));
        }
        let answer = match kind {
            "alloc" => resource_alloc(state, message, now, name)?,
            "wait" => resource_wait(state, message, now, name)?,
            "free" => resource_free(state, message, now, name),
            _ => json!({"grants": pass_units(state, now, name)}),
        };
        if state.get("queue").is_some() {
            // Calls wait: wake up when the first lease in their way ends,
            // or the first call's wait does (the calls behind it may fit).
            let leases = state["leases"].as_object();
            let first = leases.into_iter().flatten().filter_map(|(_, l)| l["expires_at"].as_u64()).min();
            let head = state["queue"][0]["expires_at"].as_u64();
            let at = first.into_iter().chain(head).min().unwrap_or(now).max(now);
            alarm(&ctx.reactor, RESOURCE_TYPE, name, at);
        }
        Ok(Reply::Value(answer))
    })
    .with_initial_state(json!({}))
    .with_message_types(["alloc", "wait", "free", "expire"])
}

/// The leases of `state` whose time is not up (the others are dropped),
/// and the units they hold.
fn live_leases(state: &mut Value, now: u64) -> (Map<String, Value>, u64) {
    let mut leases = match state.get_mut("leases").map(Value::take) {
        Some(Value::Object(leases)) => leases,
        _ => Map::new(),
    };
    leases.retain(|_, l| l["expires_at"].as_u64().is_some_and(|at| at > now));
    let used = leases.values().filter_map(|l| l["amount"].as_u64()).sum();
    (leases, used)
}

/// Sets (or checks) the capacity of a resource: PF400 when its first
/// alloc names none, PF409 when an alloc names another.
fn settle_capacity(state: &mut Value, message: &Value, name: &str) -> Result<u64, PfError> {
    let given = message["capacity"].as_u64();
    match (state["capacity"].as_u64(), given) {
        (Some(capacity), None) => Ok(capacity),
        (Some(capacity), Some(given)) if given == capacity => Ok(capacity),
        (Some(capacity), Some(given)) => Err(PfError::new(
            ErrorCode::DuplicateId,
            format!(
                "rm:alloc: capacity {given} is not resource {name:?}'s: its first alloc set it to {capacity}"
            ),
        )),
        (None, Some(given)) => {
            let epoch = crate::packet::PacketId::random();
            *state = json!({"capacity": given, "epoch": &epoch.as_str()[..8], "next": 0, "leases": {}});
            Ok(given)
        }
        (None, None) => Err(PfError::new(
            ErrorCode::BadRequest,
            format!(
                "rm:alloc: capacity is required: resource {name:?} has none yet (its first alloc sets it)"
            ),
        )),
    }
}

/// Makes a lease of `amount` for `ttl_ms` -> `{lease_id, expires_at}`,
/// and its number.
fn new_lease(
    state: &mut Value,
    leases: &mut Map<String, Value>,
    amount: u64,
    ttl_ms: u64,
    now: u64,
    name: &str,
) -> (Value, u64) {
    let number = state["next"].as_u64().unwrap_or(0) + 1;
    state["next"] = json!(number);
    let expires_at = now + ttl_ms;
    leases.insert(number.to_string(), json!({"amount": amount, "expires_at": expires_at}));
    let epoch = state["epoch"].as_str().unwrap_or_default();
    (json!({"lease_id": format!("{number}.{epoch}@{name}"), "expires_at": expires_at}), number)
}

fn too_many_leases(name: &str) -> PfError {
    PfError::new(
        ErrorCode::Overloaded,
        format!("rm:alloc: resource {name:?} has {MAX_ENTRIES} leases out already; free some first"),
    )
}

fn resource_alloc(state: &mut Value, message: &Value, now: u64, name: &str) -> Result<Value, PfError> {
    let capacity = settle_capacity(state, message, name)?;
    let amount = message["amount"].as_u64().unwrap_or(1);
    if amount > capacity {
        return Err(PfError::new(
            ErrorCode::BadRequest,
            format!(
                "rm:alloc: amount must be at most resource {name:?}'s capacity ({capacity}), got {amount}"
            ),
        ));
    }
    let (mut leases, used) = live_leases(state, now);
    let queue = live(state.get("queue"));
    let fits = queue.is_empty() && used + amount <= capacity;
    if fits && leases.len() >= MAX_ENTRIES {
        return Err(too_many_leases(name));
    }
    set_queue(state, queue);
    let answer = if fits {
        let ttl_ms = message["ttl_ms"].as_u64().unwrap_or(1);
        new_lease(state, &mut leases, amount, ttl_ms, now, name).0
    } else {
        json!({"leased": false, "used": used, "capacity": capacity})
    };
    state["leases"] = Value::Object(leases);
    Ok(answer)
}

fn resource_wait(state: &mut Value, message: &Value, now: u64, name: &str) -> Result<Value, PfError> {
    let capacity = state["capacity"].as_u64().unwrap_or(0);
    let amount = message["amount"].as_u64().unwrap_or(1);
    let ttl_ms = message["lease_ttl_ms"].as_u64().unwrap_or(1);
    let (mut leases, used) = live_leases(state, now);
    let mut queue = live(state.get("queue"));
    if queue.is_empty() && used + amount <= capacity {
        if leases.len() >= MAX_ENTRIES {
            return Err(too_many_leases(name));
        }
        let (payload, _) = new_lease(state, &mut leases, amount, ttl_ms, now, name);
        state["leases"] = Value::Object(leases);
        return Ok(json!({"granted": payload}));
    }
    if queue.len() >= MAX_ENTRIES {
        return Err(PfError::new(
            ErrorCode::Overloaded,
            format!("rm:alloc: {MAX_ENTRIES} calls wait for resource {name:?} already"),
        ));
    }
    let mut entry = queued_entry(message, now);
    entry["amount"] = json!(amount);
    entry["lease_ttl_ms"] = json!(ttl_ms);
    queue.push(entry);
    let position = queue.len();
    set_queue(state, queue);
    state["leases"] = Value::Object(leases);
    Ok(json!({"queued": position}))
}

fn resource_free(state: &mut Value, message: &Value, now: u64, name: &str) -> Value {
    let (mut leases, _) = live_leases(state, now);
    let same_epoch = message["epoch"].as_str().is_some_and(|e| Some(e) == state["epoch"].as_str());
    let number = message["lease"].as_u64().map(|n| n.to_string()).unwrap_or_default();
    let freed = same_epoch && leases.remove(&number).is_some();
    state["leases"] = Value::Object(leases);
    with_grants(json!({"freed": freed}), pass_units(state, now, name))
}

/// Leases units to the calls waiting first, as long as the first of them
/// fits (a large request is not passed over by smaller ones) -> the
/// grants.
fn pass_units(state: &mut Value, now: u64, name: &str) -> Vec<Value> {
    let capacity = state["capacity"].as_u64().unwrap_or(0);
    let (mut leases, mut used) = live_leases(state, now);
    let mut queue: VecDeque<Value> = live(state.get("queue")).into();
    let mut grants = Vec::new();
    while let Some(next) = queue.front() {
        let amount = next["amount"].as_u64().unwrap_or(1);
        if used + amount > capacity || leases.len() >= MAX_ENTRIES {
            break;
        }
        let next = queue.pop_front().expect("the front exists");
        let ttl_ms = next["lease_ttl_ms"].as_u64().unwrap_or(1);
        let (payload, number) = new_lease(state, &mut leases, amount, ttl_ms, now, name);
        used += amount;
        let epoch = state["epoch"].clone();
        grants.push(grant(&next, payload, json!({"type": "free", "lease": number, "epoch": epoch})));
    }
    state["leases"] = Value::Object(leases);
    set_queue(state, queue.into());
    grants
}

// --- alarms ---

/// An alarm: (the reactor, as an address; the owner's type; its id).
type AlarmKey = (usize, &'static str, String);

/// The alarms armed in this process: the time each is for (Unix ms) and
/// what disarms it. One per owner at most: arming again replaces it.
static ALARMS: LazyLock<Mutex<HashMap<AlarmKey, (u64, CancellationToken)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Arms, on `reactor`, the alarm of owner `id` for `at` (Unix ms), unless
/// it is armed for that time already: when it goes off, it sends the owner
/// `expire` and hands over what that grants.
fn alarm(reactor: &Reactor, actor_type: &'static str, id: &str, at: u64) {
    // Turns run inside the reactor's runtime; nothing can be armed elsewhere.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let key = (reactor.downgrade().as_ptr() as usize, actor_type, id.to_owned());
    let token = CancellationToken::new();
    {
        let mut alarms = ALARMS.lock();
        if alarms.get(&key).is_some_and(|(when, _)| *when == at) {
            return;
        }
        if let Some((_, old)) = alarms.insert(key.clone(), (at, token.clone())) {
            old.cancel();
        }
    }
    runtime.spawn(ring(reactor.downgrade(), key, at, token));
}

async fn ring(reactor: Weak<ReactorInner>, key: AlarmKey, at: u64, token: CancellationToken) {
    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
    tokio::select! {
        _ = token.cancelled() => return,
        _ = tokio::time::sleep(wait) => {}
    }
    {
        let mut alarms = ALARMS.lock();
        if alarms.get(&key).is_some_and(|(when, _)| *when == at) {
            alarms.remove(&key);
        }
    }
    let Some(reactor) = reactor.upgrade().map(Reactor::from_inner) else { return };
    if reactor.is_stopped() {
        return;
    }
    let Ok(owner) = ActorRef::new(key.1, &key.2) else { return };
    let Ok(answer) = reactor.actors().send(&owner, json!({"type": "expire"})).await else { return };
    hand_over(&reactor, &owner, grants_of(&answer)).await;
}

// --- holds a connection gives back ---

/// What a submit of `rm:lock`, `rm:alloc` or `rm:free` asks, read by the
/// node it entered through so that it can give back, when the submitter's
/// connection closes, what was granted to it (`net::holds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Asked {
    /// `rm:lock` `{name, ...}`: a lock.
    Lock { name: String },
    /// `rm:lock` `{unlock, token}`: its holder gives it back.
    Unlock { name: String, token: u64 },
    /// `rm:alloc`: a lease.
    Alloc,
    /// `rm:free` `{lease_id}`: its holder gives it back.
    Free { lease_id: String },
}

impl Asked {
    /// What `data`, a submit of `rm:<element>`, asks; `None` for anything
    /// else (another element, or input the element refuses).
    pub(crate) fn read(element: &str, data: &Value) -> Option<Asked> {
        let text = |field: &str| data.get(field).and_then(Value::as_str).map(str::to_owned);
        match element {
            "lock" => match text("unlock") {
                Some(name) => Some(Asked::Unlock { name, token: data.get("token")?.as_u64()? }),
                None => Some(Asked::Lock { name: text("name")? }),
            },
            "alloc" => Some(Asked::Alloc),
            "free" => Some(Asked::Free { lease_id: text("lease_id")? }),
            _ => None,
        }
    }

    /// The hold `answer`, this submit's successful answer, grants.
    pub(crate) fn granted(self, answer: &Value) -> Option<(Hold, u64)> {
        let expires_at = answer.get("expires_at").and_then(Value::as_u64)?;
        match self {
            Asked::Lock { name } if answer["acquired"] == json!(true) => {
                Some((Hold::Lock { name, token: answer.get("token")?.as_u64()? }, expires_at))
            }
            Asked::Alloc => {
                let lease_id = answer.get("lease_id")?.as_str()?;
                Some((Hold::Lease { lease_id: lease_id.to_owned() }, expires_at))
            }
            _ => None,
        }
    }

    /// The hold this submit gives back, if it does.
    pub(crate) fn gives_back(&self) -> Option<Hold> {
        match self {
            Asked::Unlock { name, token } => Some(Hold::Lock { name: name.clone(), token: *token }),
            Asked::Free { lease_id } => Some(Hold::Lease { lease_id: lease_id.clone() }),
            _ => None,
        }
    }
}

/// A lock or a lease granted to a submitter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Hold {
    /// Lock `name` under `token`.
    Lock { name: String, token: u64 },
    /// A lease of `rm:alloc`.
    Lease { lease_id: String },
}

impl Hold {
    /// The packet that gives it back: `rm:lock` `{unlock, token}` or
    /// `rm:free` `{lease_id}`. Either is harmless once the hold ended (a
    /// token that no longer holds its lock unlocks nothing).
    pub(crate) fn give_back(&self) -> crate::packet::Packet {
        use crate::packet::{Element, Group, Packet};
        let (element, data) = match self {
            Hold::Lock { name, token } => ("lock", json!({"unlock": name, "token": token})),
            Hold::Lease { lease_id } => ("free", json!({"lease_id": lease_id})),
        };
        let element = Element::new(element).expect("rm element names are valid");
        Packet::new(Group::ResourceMgmt, element, data)
    }
}
