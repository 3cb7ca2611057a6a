//! `co`: collective calls. `gather` and `vote` run all their calls at
//! once; `gather` cancels what it no longer needs. `sync` is a barrier
//! (its state in a `pf.barrier` actor, its waiting as in
//! [`waiter`](super::waiter)); `broadcast` calls every node serving a key.

use std::task::Poll;

use futures::future::{join_all, BoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};
use tokio::time::{Duration, Instant};

use super::args::{error_value, Args, MAX_ITEMS};
use super::ed::{address, live, waiting_entry, MAX_NAME_LEN};
use super::waiter::{park, release, Waited};
use crate::actor::{ActorContext, ActorType, Reply};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Packet, MAX_ELEMENT_LEN};
use crate::reactor::{Call, CallOptions, Handler};

/// `co:gather` `{calls, min?}`: runs every call at once; once `min` of
/// them succeeded (default: all), the rest are cancelled -> the results
/// in input order, each `{"ok": true, "value"}`, `{"ok": false, "error":
/// {code, message}}` or `{"ok": false, "cancelled": true}`. When so many
/// failed that `min` cannot be reached: PF424 naming them.
pub(super) fn gather() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:gather", &data)?;
        let calls = args.steps("calls")?;
        let min = args.int_in("min", 1, MAX_ITEMS)?.map_or(calls.len(), |m| m as usize);
        if min > calls.len() {
            return Err(
                args.bad("min", format!("must be at most the number of calls ({}), got {min}", calls.len()))
            );
        }
        let mut gathered = Gathered::new(calls.len(), min);
        {
            // Every call starts, in turn: one a local sync handler answers
            // at once is recorded there (no future made for it).
            let mut running = FuturesUnordered::new();
            for (i, step) in calls.iter().enumerate() {
                match step.start(&ctx, Value::Null) {
                    Call::Answered(answer) => gathered.record(i, answer)?,
                    Call::Pending(call) => running.push(async move { (i, call.answer().await) }),
                }
            }
            while !gathered.enough() {
                let Some((i, answer)) = running.next().await else { break };
                gathered.record(i, answer)?;
            }
            // Calls not yet polled get their first poll, so that every call
            // started; what still runs is cancelled as `running` is dropped.
            while let Poll::Ready(Some((i, answer))) = futures::poll!(running.next()) {
                gathered.record(i, answer)?;
            }
        }
        let results = gathered.results;
        let results: Vec<Value> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| json!({"ok": false, "cancelled": true})))
            .collect();
        Ok(Value::Array(results))
    })
}

/// The answers of a `co:gather` so far.
struct Gathered {
    /// Per call, in input order: its entry once it answered.
    results: Vec<Option<Value>>,
    min: usize,
    succeeded: usize,
    failed: Vec<String>,
}

impl Gathered {
    fn new(calls: usize, min: usize) -> Gathered {
        Gathered { results: vec![None; calls], min, succeeded: 0, failed: Vec::new() }
    }

    /// Whether `min` calls succeeded.
    fn enough(&self) -> bool {
        self.succeeded >= self.min
    }

    /// Records call `i`'s answer; PF424 once too many failed for `min`
    /// to succeed.
    fn record(&mut self, i: usize, answer: Result<Value, PfError>) -> Result<(), PfError> {
        self.results[i] = Some(match answer {
            Ok(value) => {
                self.succeeded += 1;
                succeeded_entry(value)
            }
            Err(e) => {
                self.failed.push(format!("calls[{i}] {}: {}", e.code, e.message));
                json!({"ok": false, "error": error_value(&e)})
            }
        });
        let calls = self.results.len();
        if calls - self.failed.len() < self.min {
            let why = format!(
                "co:gather: {} of {calls} calls failed, so {} cannot succeed: {}",
                self.failed.len(),
                self.min,
                self.failed.join("; ")
            );
            return Err(PfError::new(ErrorCode::DependencyFailed, why));
        }
        Ok(())
    }
}

/// `{"ok": true, "value": value}`, built into a map of its size: a gather
/// makes one per call.
fn succeeded_entry(value: Value) -> Value {
    let mut entry = Map::with_capacity(2);
    entry.insert("ok".into(), Value::Bool(true));
    entry.insert("value".into(), value);
    Value::Object(entry)
}

/// `co:vote` `{voters, quorum?}`: runs every voter at once, with the same
/// `input` (default `null`); the answer given by at least `quorum` voters
/// (`"majority"`, the default: more than half of them, or a number), by
/// JSON equality -> `{decision, tally: [{value, votes}], responded}`.
/// No quorum: PF409 with the tally. A poll, not consensus: nothing is
/// recorded, and a voter that fails does not vote.
pub(super) fn vote() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:vote", &data)?;
        let voters = args.steps("voters")?;
        let quorum = match args.get("quorum") {
            None => voters.len() / 2 + 1,
            Some(Value::String(s)) if s == "majority" => voters.len() / 2 + 1,
            Some(v) => match v.as_u64() {
                Some(k) if k >= 1 && k as usize <= voters.len() => k as usize,
                _ => {
                    return Err(args.bad(
                        "quorum",
                        format!("must be \"majority\" or an integer 1-{}, got {v}", voters.len()),
                    ))
                }
            },
        };
        let input = args.get("input").cloned().unwrap_or(Value::Null);
        let answers: Vec<Result<Value, PfError>> =
            futures::future::join_all(voters.iter().map(|v| v.run(&ctx, input.clone()))).await;
        let mut tally: Vec<(Value, u64)> = Vec::new();
        let mut responded = 0u64;
        for value in answers.into_iter().flatten() {
            responded += 1;
            match tally.iter_mut().find(|(v, _)| *v == value) {
                Some((_, votes)) => *votes += 1,
                None => tally.push((value, 1)),
            }
        }
        tally.sort_by_key(|(_, votes)| std::cmp::Reverse(*votes));
        let shown: Vec<Value> =
            tally.iter().map(|(value, votes)| json!({"value": value, "votes": votes})).collect();
        match tally.first() {
            Some((decision, votes)) if *votes as usize >= quorum => {
                Ok(json!({"decision": decision, "tally": shown, "responded": responded}))
            }
            _ => Err(PfError::new(
                ErrorCode::DuplicateId,
                format!(
                    "co:vote: no answer reached the quorum of {quorum} ({responded} of {} voters responded; tally {})",
                    voters.len(),
                    Value::Array(shown)
                ),
            )),
        }
    })
}

/// The actor type of barriers (id: the barrier's name).
pub(super) const BARRIER_TYPE: &str = "pf.barrier";

/// `co:sync` `{barrier, parties}`: waits until `parties` calls (1-10,000,
/// from anywhere in the mesh) arrived at `barrier` -> `{arrived}` (=
/// `parties`), to each of them at once. The barrier then starts over: a
/// call arriving after that waits for the next `parties`. A call whose
/// deadline passes first is answered PF408 and its arrival withdrawn (the
/// barrier's owner drops it once its deadline is past, when the next call
/// arrives: it no longer counts). All calls of one round must name the
/// same `parties` (PF409 otherwise).
pub(super) fn sync() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:sync", &data)?;
        let name = args.text("barrier", MAX_NAME_LEN)?;
        let parties = args
            .int_in("parties", 1, MAX_ITEMS)?
            .ok_or_else(|| args.bad("parties", format!("is required (1-{MAX_ITEMS})")))?;
        if parties == 1 {
            return Ok(json!({"arrived": 1}));
        }
        let mut on = Map::new();
        on.insert("barrier".into(), json!(name));
        on.insert("parties".into(), json!(parties));
        match park(&ctx, on, None).await? {
            Waited::Released { payload, others } => {
                // The last to arrive lets the others go.
                join_all(others.iter().map(|w| release(&ctx, w, &payload))).await;
                Ok(payload)
            }
            Waited::TimedOut => Err(PfError::new(
                ErrorCode::Timeout,
                format!("co:sync: barrier {name:?} did not gather its {parties} parties before the deadline"),
            )),
        }
    })
}

/// The `pf.barrier` type: `arrive` -> `{complete: false, arrived}`, or,
/// for the last of the parties, `{complete: true, arrived, others}` (the
/// waiters to release), which stops the actor: the next round starts
/// afresh. Arrivals whose wait is over are dropped first.
pub(super) fn barrier_type() -> ActorType {
    ActorType::new(|_: &str, message: &Value, state: &mut Value, ctx: &ActorContext| {
        let mut arrived = live(state.get("arrived"));
        let parties = message["parties"].as_u64().unwrap_or(0);
        match state.get("parties").and_then(Value::as_u64) {
            Some(expected) if expected != parties && !arrived.is_empty() => {
                return Err(PfError::new(
                    ErrorCode::DuplicateId,
                    format!(
                        "co:sync: barrier {:?} is gathering {expected} parties, this call names {parties}",
                        ctx.actor().id()
                    ),
                ))
            }
            _ => {}
        }
        if arrived.len() as u64 + 1 >= parties {
            let others: Vec<Value> = arrived.iter().map(address).collect();
            return Ok(Reply::Stop(json!({"complete": true, "arrived": parties, "others": others})));
        }
        arrived.push(waiting_entry(message));
        let count = arrived.len();
        *state = json!({"parties": parties, "arrived": arrived});
        Ok(Reply::Value(json!({"complete": false, "arrived": count})))
    })
    .with_initial_state(json!({}))
    .with_message_types(["arrive"])
}

/// `co:broadcast` `{to: "group:element", data?}`: one call of `to` with
/// `data` on every node serving it: this node when a handler of that key
/// is registered here, and each peer that announced it (a peer announces
/// its own handlers and those it routes to: a hub's answer comes from
/// one node behind it) -> `{results: {node_id: {"ok": true, "value"} or
/// {"ok": false, "error": {code, message}}}}`, each node by its id (this
/// node's, without a network, is the reactor's name). PF001 when no node
/// serves the key.
pub(super) fn broadcast() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("co:broadcast", &data)?;
        let to = args.text("to", 3 + MAX_ELEMENT_LEN)?;
        let key = to.split_once(':').and_then(|(g, e)| Some((Group::parse(g).ok()?, Element::new(e).ok()?)));
        let Some((group, element)) = key else {
            return Err(args.bad("to", format!("must be \"group:element\" naming a valid key, got {to:?}")));
        };
        let payload = args.get("data").cloned().unwrap_or(Value::Null);
        let forwarder = ctx.reactor.forwarder();
        let here =
            forwarder.as_ref().and_then(|f| f.node_id()).unwrap_or_else(|| ctx.reactor.config().name.clone());
        let peers = forwarder.as_ref().map(|f| f.announcers(group, element.as_str())).unwrap_or_default();
        let local = ctx.reactor.has_handler(group, element.as_str());
        if !local && peers.is_empty() {
            return Err(PfError::new(
                ErrorCode::NoHandler,
                format!("co:broadcast: no node serves {to} (no handler here, and no peer announced one)"),
            ));
        }
        let mut calls: Vec<BoxFuture<'_, (String, Result<Value, PfError>)>> = Vec::new();
        if local {
            let (ctx, payload, here, element) = (&ctx, payload.clone(), here.clone(), &element);
            calls.push(Box::pin(async move {
                let options = CallOptions::default();
                (here, ctx.call_with(group.as_str(), element.as_str(), payload, options).await)
            }));
        }
        for node_id in peers.into_iter().filter(|id| *id != here) {
            let packet = Packet::new(group, element.clone(), payload.clone());
            let child = ctx.child(packet, None)?;
            let deadline = Instant::now() + Duration::from_millis(child.timeout_ms());
            let sent = forwarder.as_ref().and_then(|f| f.forward_to_peer(&node_id, child, deadline));
            calls.push(Box::pin(async move {
                let answer = match sent {
                    Some(answer) => answer.await.outcome,
                    None => Err(PfError::new(ErrorCode::Unavailable, format!("peer {node_id} went away"))),
                };
                (node_id, answer)
            }));
        }
        let mut results = Map::new();
        for (node_id, answer) in join_all(calls).await {
            let result = match answer {
                Ok(value) => json!({"ok": true, "value": value}),
                Err(e) => json!({"ok": false, "error": error_value(&e)}),
            };
            results.insert(node_id, result);
        }
        Ok(json!({"results": results}))
    })
}
