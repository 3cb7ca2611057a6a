//! Waiting without holding a mailbox, on one node or across a mesh:
//! `cf:gate` waits for a signal, `co:sync` for the other parties of a
//! barrier, `rm:lock` for a lock and `rm:alloc` for units of a resource.
//!
//! The state (who waits on a signal, who arrived at a barrier, who queues
//! for a lock or a resource) is in the actor that owns the name
//! (`pf.signal`, `pf.barrier`, `pf.lock`, `pf.resource`), on one node by
//! placement. Its turns only record and hand out waiters; none of them
//! waits. The waiting is done by a *waiter*: a short-lived actor of type
//! `pf.waiter` (a fresh id per waiting call, placed like any actor) whose
//! one `wait` turn registers it with the owner, then waits on a channel
//! in its node's memory until released or until its time is up. The
//! element's handler asks the waiter and awaits the turn's answer: the
//! answer is the notification, and it travels back to the caller whatever
//! the path (a hub, a direct link).
//!
//! Whoever fires the signal (or completes the barrier, or frees the lock)
//! gets the waiters from the owner's turn and sends each a `release` naming the waiting
//! turn in `pf.turns`. That makes the release *reentrant*
//! (docs/protocol.md, "Actors", Turns): it runs at once beside the turn it
//! ends, on whichever node owns the waiter, instead of queueing behind it.
//! The release fills the channel; the `wait` turn ends and stops its actor
//! (nothing of it is kept). A waiter whose turn fails or is dropped (its
//! caller cancelled) stops itself too.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use crate::actor::{ActorContext, ActorRef, ActorType, Op, Reply, TurnInput, TurnOutput, META_TURNS};
use crate::error::{ErrorCode, PfError};
use crate::reactor::{Context, Reactor};

/// The actor type of waiting calls (a fresh id per call).
pub(super) const WAITER_TYPE: &str = "pf.waiter";

/// A wait ends this long (at most) before its message's deadline, so that
/// its turn commits, and its answer reaches the caller, in time.
const MAX_GRACE: Duration = Duration::from_millis(20);

/// Now, in Unix ms (what an owner's `expires_at` is counted in: the
/// owner's clock alone decides).
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The channels of the waiters whose `wait` turn runs in this process, by
/// waiter id (a UUID: one table serves every reactor in the process).
static WAITING: LazyLock<Mutex<HashMap<String, oneshot::Sender<Value>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Asks `op` of `actor` as a call of `ctx`'s packet (its deadline, trace
/// and chain). `within`: the id of the running turn of `actor` this
/// message belongs to, added to `pf.turns`, so that it runs beside that
/// turn instead of waiting for it.
pub(super) async fn ask(
    ctx: &Context,
    actor: &ActorRef,
    op: Op,
    data: Value,
    within: Option<&str>,
) -> Result<Value, PfError> {
    let mut packet = ctx.child(actor.packet(op, data), None)?;
    if let Some(turn) = within {
        let meta = packet.metadata.get_or_insert_with(Map::new);
        let turns = meta.entry(META_TURNS).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(turns) = turns {
            turns.push(Value::String(turn.to_owned()));
        }
    }
    Box::pin(ctx.reactor.submit(packet)).await.outcome
}

/// Sends `message` to `actor`, creating it (with the state `{}`) first if
/// it does not exist: owners are created on first use and stop themselves
/// once empty, so that an unused name costs no record.
pub(super) async fn send_creating(ctx: &Context, actor: &ActorRef, message: Value) -> Result<Value, PfError> {
    // Three rounds: the actor may stop (emptied by another caller) between
    // this caller's create and its send.
    for _ in 0..3 {
        match ask(ctx, actor, Op::Send, message.clone(), None).await {
            Err(e) if e.is(ErrorCode::NotFound) => {}
            answer => return answer,
        }
        match ask(ctx, actor, Op::Create, json!({}), None).await {
            Ok(_) => {}
            Err(e) if e.is(ErrorCode::DuplicateId) => {}
            Err(e) => return Err(e),
        }
    }
    ask(ctx, actor, Op::Send, message, None).await
}

/// What a parked call got.
pub(super) enum Waited {
    /// Released with this payload; `others`: the waiters this call must
    /// release in turn (the barrier it completed), as `{waiter, turn}`.
    Released { payload: Value, others: Vec<Value> },
    /// Its time was up first.
    TimedOut,
}

/// Parks a call of `ctx`: asks a new waiter to `wait` on `on` (a signal
/// `{"signal": name}`, a barrier `{"barrier": name, "parties": n}`, a lock
/// `{"lock": name, "lock_ttl_ms"}` or a resource `{"resource": name,
/// "amount", "lease_ttl_ms"}`), for at most `timeout_ms` (and never past
/// the packet's deadline).
pub(super) async fn park(
    ctx: &Context,
    mut on: Map<String, Value>,
    timeout_ms: Option<u64>,
) -> Result<Waited, PfError> {
    let waiter = ActorRef::generate(WAITER_TYPE)?;
    on.insert("type".into(), json!("wait"));
    if let Some(ms) = timeout_ms {
        on.insert("timeout_ms".into(), json!(ms));
    }
    let answer = ask(ctx, &waiter, Op::Send, Value::Object(on), None).await?;
    if answer["released"] != json!(true) {
        return Ok(Waited::TimedOut);
    }
    let others = answer.get("others").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(Waited::Released { payload: answer.get("payload").cloned().unwrap_or(Value::Null), others })
}

/// Releases `waiter` (an entry `{waiter, turn}` an owner handed out) with
/// `payload`; whether it was still waiting.
pub(super) async fn release(ctx: &Context, entry: &Value, payload: &Value) -> bool {
    let (Some(id), Some(turn)) = (entry["waiter"].as_str(), entry["turn"].as_str()) else { return false };
    let Ok(waiter) = ActorRef::new(WAITER_TYPE, id) else { return false };
    let message = json!({"type": "release", "payload": payload});
    let answer = ask(ctx, &waiter, Op::Send, message, Some(turn)).await;
    answer.is_ok_and(|a| a["released"] == json!(true))
}

/// [`release`] sent by `reactor` itself rather than by a packet's handler
/// (a lock's expiry, a hand-over outliving the call that began it), with
/// at most `timeout_ms` for its answer.
pub(super) async fn release_from(reactor: &Reactor, entry: &Value, payload: &Value, timeout_ms: u64) -> bool {
    let (Some(id), Some(turn)) = (entry["waiter"].as_str(), entry["turn"].as_str()) else { return false };
    let Ok(waiter) = ActorRef::new(WAITER_TYPE, id) else { return false };
    let message = json!({"type": "release", "payload": payload});
    let mut packet = waiter.packet(Op::Send, message).with_timeout_ms(timeout_ms);
    packet.metadata.get_or_insert_with(Map::new).insert(META_TURNS.into(), json!([turn]));
    let answer = Box::pin(reactor.submit(packet)).await.outcome;
    answer.is_ok_and(|a| a["released"] == json!(true))
}

/// The `pf.waiter` type: `wait` (one per actor) and `release`.
pub(super) fn waiter_type() -> ActorType {
    ActorType::from_async(|input: TurnInput| async move {
        match input.message_type.as_str() {
            "wait" => wait(input).await,
            _ => Ok(released(input)),
        }
    })
    .with_initial_state(Value::Null)
    .with_message_types(["wait", "release"])
}

/// The `wait` turn: registers with the owner named by the message, then
/// waits for a release or for its time -> `{released, payload?, others?}`,
/// and stops its actor. An owner may grant the wait at once (a free lock:
/// `{granted: payload}`), and nobody releases it then.
async fn wait(input: TurnInput) -> Result<TurnOutput, PfError> {
    let TurnInput { message, state, ctx, .. } = input;
    let me = ctx.actor().id().to_owned();
    let turn = ctx.packet_id().to_string();
    let now = Instant::now();
    let grace = MAX_GRACE.min(ctx.remaining() / 10);
    let mut until = ctx.deadline().checked_sub(grace).unwrap_or(now);
    if let Some(ms) = message.get("timeout_ms").and_then(Value::as_u64) {
        until = until.min(now + Duration::from_millis(ms));
    }
    let (tx, mut rx) = oneshot::channel();
    WAITING.lock().insert(me.clone(), tx);
    let parked = Parked { ctx: &ctx, armed: true };
    let ttl_ms = until.saturating_duration_since(now).as_millis() as u64;
    let entry = json!({"waiter": me, "turn": turn, "ttl_ms": ttl_ms});
    let answer = register(&ctx, &message, entry).await?;
    let done = if answer["complete"] == json!(true) {
        // This call completed a barrier: nobody releases it.
        json!({"released": true, "payload": {"arrived": answer["arrived"]}, "others": answer["others"]})
    } else if let Some(payload) = answer.get("granted") {
        json!({"released": true, "payload": payload})
    } else {
        let waited = tokio::select! {
            biased;
            payload = &mut rx => Some(payload.ok()),
            _ = tokio::time::sleep_until(until) => None,
        };
        let released = waited.unwrap_or_else(|| {
            // Withdrawn under the table's lock, which a release holds while
            // it sends: no release finds this wait from now on, and one that
            // found it before has sent its payload, and was told it was
            // taken. It is: a grant (a lock's) is never lost this way.
            let mut waiting = WAITING.lock();
            waiting.remove(&me);
            rx.try_recv().ok()
        });
        match released {
            Some(payload) => json!({"released": true, "payload": payload}),
            None => json!({"released": false}),
        }
    };
    parked.end();
    Ok(TurnOutput { reply: Reply::Stop(done), state })
}

/// Registers the waiter `entry` with the owner the `wait` message names.
async fn register(ctx: &ActorContext, message: &Value, entry: Value) -> Result<Value, PfError> {
    let mut entry = entry;
    if let Some(name) = message.get("signal").and_then(Value::as_str) {
        entry["type"] = json!("wait");
        let owner = ActorRef::new(super::ed::SIGNAL_TYPE, name)?;
        return send_creating(ctx, &owner, entry).await;
    }
    if let Some(name) = message.get("barrier").and_then(Value::as_str) {
        entry["type"] = json!("arrive");
        entry["parties"] = message.get("parties").cloned().unwrap_or(Value::Null);
        let owner = ActorRef::new(super::co::BARRIER_TYPE, name)?;
        return ctx.send(&owner, entry).await;
    }
    if let Some(name) = message.get("lock").and_then(Value::as_str) {
        entry["type"] = json!("wait");
        entry["lock_ttl_ms"] = message.get("lock_ttl_ms").cloned().unwrap_or(Value::Null);
        return ctx.send(&ActorRef::new(super::rm::LOCK_TYPE, name)?, entry).await;
    }
    if let Some(name) = message.get("resource").and_then(Value::as_str) {
        entry["type"] = json!("wait");
        entry["amount"] = message.get("amount").cloned().unwrap_or(Value::Null);
        entry["lease_ttl_ms"] = message.get("lease_ttl_ms").cloned().unwrap_or(Value::Null);
        return ctx.send(&ActorRef::new(super::rm::RESOURCE_TYPE, name)?, entry).await;
    }
    Err(PfError::new(ErrorCode::BadRequest, "a wait names a signal, a barrier, a lock or a resource"))
}

/// The `release` turn: fills the waiting turn's channel -> `{released}`.
/// A waiter that is not waiting here (its wait ended, or this release
/// brought a new one into being) stops.
fn released(input: TurnInput) -> TurnOutput {
    let TurnInput { message, state, ctx, .. } = input;
    let payload = message.get("payload").cloned().unwrap_or(Value::Null);
    let sent = {
        // Sent under the lock: see the end of `wait`.
        let mut waiting = WAITING.lock();
        waiting.remove(ctx.actor().id()).map(|tx| tx.send(payload).is_ok())
    };
    let reply = match sent {
        Some(sent) => Reply::Value(json!({"released": sent})),
        None => Reply::Stop(json!({"released": false})),
    };
    TurnOutput { reply, state }
}

/// A running `wait` turn's channel. Its turn ends by stopping its actor;
/// one that fails instead, or is dropped (its caller gone), has its actor
/// stopped after it, so nothing of a waiter stays either way.
struct Parked<'a> {
    ctx: &'a ActorContext,
    armed: bool,
}

impl Parked<'_> {
    /// The turn ends normally (it stops its actor itself).
    fn end(mut self) {
        self.armed = false;
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let actor = self.ctx.actor();
        WAITING.lock().remove(actor.id());
        if self.armed {
            let _ = self.ctx.reactor.actors().tell_packet(actor, actor.packet(Op::Stop, Value::Null));
        }
    }
}
