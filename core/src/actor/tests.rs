//! The actor promises, each against a real reactor (and a real redb file
//! for durability).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Duration;

use super::*;
use crate::packet::{Element, Field, Group, Packet, PacketId, PacketParts, Priority};
use crate::reactor::{late_call_error, CallOptions, ReactorConfig};

/// The seed's counter: `increment` adds `by` (default 1), `get_value`
/// reads, `fail` raises after changing the state, `panic` panics.
fn counter(state_key: &'static str) -> ActorType {
    ActorType::new(move |kind: &str, message: &Value, state: &mut Value, _: &ActorContext| match kind {
        "increment" => {
            let by = message.get("by").and_then(Value::as_i64).unwrap_or(1);
            let value = state[state_key].as_i64().unwrap_or(0) + by;
            state[state_key] = json!(value);
            Ok(Reply::Value(json!({"value": value})))
        }
        "get_value" => Ok(Reply::Value(json!({"value": state[state_key]}))),
        "fail" => {
            state[state_key] = json!(-1000);
            Err(PfError::failed("refused"))
        }
        "panic" => {
            state[state_key] = json!(-2000);
            panic!("counter broke")
        }
        "done" => Ok(Reply::Stop(json!("bye"))),
        other => Err(PfError::failed(format!("unknown message {other}"))),
    })
}

fn reactor_with_counter() -> (Reactor, Actors) {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.register("counter", counter("value")).unwrap();
    (reactor, actors)
}

async fn value_of(actors: &Actors, actor: &ActorRef) -> Value {
    actors.send(actor, json!({"type": "get_value"})).await.unwrap()["value"].clone()
}

#[tokio::test]
async fn the_seed_counter_counts() {
    let (_r, actors) = reactor_with_counter();
    let counter = actors.create("counter", None, json!({"value": 0})).await.unwrap();
    assert_eq!(counter.id().len(), 36, "a generated id is a UUID");
    assert_eq!(actors.send(&counter, json!({"type": "increment"})).await.unwrap(), json!({"value": 1}));
    actors.send(&counter, json!({"type": "increment", "by": 4})).await.unwrap();
    assert_eq!(value_of(&actors, &counter).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_senders_end_at_a_thousand() {
    let (_r, actors) = reactor_with_counter();
    let counter = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
    let sends: Vec<_> = (0..1000)
        .map(|_| {
            let (actors, counter) = (actors.clone(), counter.clone());
            tokio::spawn(async move { actors.send(&counter, json!({"type": "increment"})).await })
        })
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    for send in sends {
        seen.push(send.await.unwrap().unwrap()["value"].as_i64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=1000).collect::<Vec<_>>(), "every turn saw the one before it");
    assert_eq!(value_of(&actors, &counter).await, 1000);
}

#[tokio::test]
async fn a_failing_or_panicking_turn_leaves_the_state_as_it_was() {
    let (_r, actors) = reactor_with_counter();
    let counter = actors.create("counter", Some("c"), json!({"value": 7})).await.unwrap();
    let failed = actors.send(&counter, json!({"type": "fail"})).await.unwrap_err();
    assert_eq!((failed.kind(), failed.message.as_str()), (Some(ErrorCode::HandlerFailed), "refused"));
    let panicked = actors.send(&counter, json!({"type": "panic"})).await.unwrap_err();
    assert_eq!(panicked.message, "handler panicked: counter broke");
    assert_eq!(value_of(&actors, &counter).await, 7);
}

#[tokio::test]
async fn an_async_turn_past_its_deadline_answers_pf408_and_changes_nothing() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    actors
        .register(
            "slow",
            ActorType::from_async(move |input: TurnInput| {
                let gate = held.clone();
                async move {
                    let mut state = input.state;
                    state["n"] = json!(state["n"].as_i64().unwrap_or(0) + 1);
                    if input.message_type == "wait" {
                        let _ = gate.acquire().await;
                    }
                    Ok(TurnOutput { reply: Reply::Value(state["n"].clone()), state })
                }
            }),
        )
        .unwrap();
    let slow = actors.create("slow", Some("s"), json!({"n": 0})).await.unwrap();
    let late = reactor.submit(slow.packet(Op::Send, json!({"type": "wait"})).with_timeout_ms(30)).await;
    assert_eq!(late.err().unwrap().kind(), Some(ErrorCode::Timeout));
    gate.add_permits(1);
    assert_eq!(actors.send(&slow, json!({"type": "read"})).await.unwrap(), 1, "the late turn did not commit");
}

/// Sets its flag when dropped: a turn's future was dropped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_turn_run_by_the_mailbox_is_dropped_uncommitted_when_its_sender_stops_waiting() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let gate = Arc::new(Semaphore::new(0));
    let (started, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (held, seen, gone) = (gate.clone(), started.clone(), dropped.clone());
    actors
        .register(
            "slow",
            ActorType::from_async(move |input: TurnInput| {
                let (gate, started, dropped) = (held.clone(), seen.clone(), gone.clone());
                async move {
                    let mut state = input.state;
                    match input.message_type.as_str() {
                        "first" => gate.acquire().await.unwrap().forget(),
                        "change" => {
                            state["n"] = json!(99);
                            let _flag = DropFlag(dropped);
                            started.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        }
                        _ => {}
                    }
                    Ok(TurnOutput { reply: Reply::Value(state["n"].clone()), state })
                }
            }),
        )
        .unwrap();
    let slow = actors.create("slow", Some("s"), json!({"n": 0})).await.unwrap();
    // Each "change" waits in the mailbox behind a "first" holding the
    // actor, so the mailbox loop runs it: cancelled by id, then given up by
    // an API sender (its future dropped).
    for round in 1..=2 {
        let first = tokio::spawn({
            let (actors, slow) = (actors.clone(), slow.clone());
            async move { actors.send(&slow, json!({"type": "first"})).await }
        });
        wait_until(|| reactor.in_flight() == 1).await;
        let change = tokio::spawn({
            let (reactor, actors, slow) = (reactor.clone(), actors.clone(), slow.clone());
            async move {
                if round == 1 {
                    let mut packet = slow.packet(Op::Send, json!({"type": "change"}));
                    packet.id = PacketId::new("change-1").unwrap();
                    reactor.submit(packet).await.outcome
                } else {
                    actors.send(&slow, json!({"type": "change"})).await
                }
            }
        });
        wait_until(|| reactor.in_flight() == 2).await;
        gate.add_permits(1);
        first.await.unwrap().unwrap();
        wait_until(|| started.load(Ordering::SeqCst) == round).await;
        if round == 1 {
            assert!(reactor.cancel(&PacketId::new("change-1").unwrap()));
            assert_eq!(change.await.unwrap().unwrap_err().kind(), Some(ErrorCode::Cancelled));
        } else {
            change.abort();
            assert!(change.await.unwrap_err().is_cancelled());
        }
        wait_until(|| dropped.load(Ordering::SeqCst) == round).await;
        let read = actors.send(&slow, json!({"type": "read"})).await.unwrap();
        assert_eq!(read, json!(0), "the dropped turn did not commit (round {round})");
        wait_until(|| reactor.in_flight() == 0).await;
    }
}

#[tokio::test]
async fn a_repeated_packet_is_applied_once() {
    let (reactor, actors) = reactor_with_counter();
    let counter = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
    let packet = counter.packet(Op::Send, json!({"type": "increment"}));
    let first = reactor.submit(packet.clone()).await;
    let again = reactor.submit(packet.clone()).await;
    assert_eq!(first.outcome.unwrap(), json!({"value": 1}));
    assert_eq!(again.outcome.unwrap(), json!({"value": 1}), "answered from memory");
    assert_eq!(value_of(&actors, &counter).await, 1);
}

#[tokio::test]
async fn a_repeat_arriving_while_the_first_runs_gets_the_first_ones_answer() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let gate = Arc::new(Semaphore::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (held, counted) = (gate.clone(), runs.clone());
    actors
        .register(
            "once",
            ActorType::from_async(move |input: TurnInput| {
                let (gate, runs) = (held.clone(), counted.clone());
                async move {
                    let _ = gate.acquire().await;
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(TurnOutput { reply: Reply::Value(json!(n)), state: input.state })
                }
            }),
        )
        .unwrap();
    let once = actors.create("once", Some("o"), Value::Null).await.unwrap();
    let packet = once.packet(Op::Send, json!({"type": "go"}));
    let first = tokio::spawn({
        let (reactor, packet) = (reactor.clone(), packet.clone());
        async move { reactor.submit(packet).await }
    });
    // The first copy is in flight once the reactor knows its id.
    wait_until(|| reactor.in_flight() == 1).await;
    let repeat = tokio::spawn({
        let (reactor, packet) = (reactor.clone(), packet.clone());
        async move { reactor.submit(packet).await }
    });
    tokio::task::yield_now().await;
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().outcome.unwrap(), 1);
    assert_eq!(repeat.await.unwrap().outcome.unwrap(), 1, "the repeat shares the first answer");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unknown_id_is_pf404_unless_the_type_declares_an_initial_state() {
    let (_r, actors) = reactor_with_counter();
    let ghost = ActorRef::new("counter", "nobody").unwrap();
    let err = actors.send(&ghost, json!({"type": "get_value"})).await.unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("PF404", "no actor counter/nobody: create it first")
    );
    assert_eq!(actors.count("counter").await.unwrap(), 0, "a failed lookup leaves nothing behind");
    actors.register("tally", counter("n").with_initial_state(json!({"n": 100}))).unwrap();
    let tally = ActorRef::new("tally", "t1").unwrap();
    assert_eq!(actors.send(&tally, json!({"type": "increment"})).await.unwrap(), json!({"value": 101}));
    // A virtual type's actors can still be created with a state of their own.
    actors.create("tally", Some("t2"), json!({"n": 5})).await.unwrap();
    let t2 = ActorRef::new("tally", "t2").unwrap();
    assert_eq!(actors.send(&t2, json!({"type": "increment"})).await.unwrap(), json!({"value": 6}));
    assert_eq!(actors.create("tally", Some("t1"), json!({})).await.unwrap_err().code, "PF409");
}

#[tokio::test]
async fn creating_an_existing_actor_is_pf409_and_a_repeated_create_is_not() {
    let (reactor, actors) = reactor_with_counter();
    let create = ActorRef::new("counter", "c").unwrap().packet(Op::Create, json!({"value": 1}));
    assert!(reactor.submit(create.clone()).await.is_success());
    let repeat = reactor.submit(create).await;
    assert_eq!(repeat.outcome.unwrap(), json!({"type": "counter", "id": "c"}));
    let err = actors.create("counter", Some("c"), json!({"value": 2})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.message.as_str()), ("PF409", "actor counter/c already exists"));
}

#[tokio::test]
async fn bad_messages_name_the_field() {
    let (reactor, actors) = reactor_with_counter();
    actors.register("strict", counter("v").with_message_types(["increment", "get_value"])).unwrap();
    let strict = actors.create("strict", Some("s"), json!({})).await.unwrap();
    let err = actors.send(&strict, json!({"type": "explode"})).await.unwrap_err();
    assert_eq!(
        err.message,
        "data.type \"explode\" is not a message of actor type strict; it takes get_value, increment"
    );
    let err = actors.send(&strict, json!("increment")).await.unwrap_err();
    assert_eq!(err.message, "data must be an object with a \"type\" naming the message, got \"increment\"");
    let mut packet = strict.packet(Op::Send, json!({"type": "increment"}));
    packet.metadata.as_mut().unwrap().insert(META_ACTOR_ID.into(), json!(""));
    let err = reactor.submit(packet).await.err().unwrap().clone();
    assert_eq!(err.message, "metadata[\"pf.actor_id\"] must be a string of 1-128 bytes, got 0 bytes");
}

#[tokio::test]
async fn stop_deletes_the_actor_after_what_was_queued_before_it() {
    let (_r, actors) = reactor_with_counter();
    let counter = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
    actors.tell(&counter, json!({"type": "increment"})).unwrap();
    actors.stop(&counter).await.unwrap();
    assert_eq!(actors.send(&counter, json!({"type": "get_value"})).await.unwrap_err().code, "PF404");
    assert_eq!(actors.stop(&counter).await.unwrap_err().code, "PF404");
    // A behaviour may stop its actor too.
    let other = actors.create("counter", Some("d"), json!({"value": 0})).await.unwrap();
    assert_eq!(actors.send(&other, json!({"type": "done"})).await.unwrap(), "bye");
    assert!(actors.list("counter").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_from_one_sender_keep_their_order() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors
        .register_fn("log", |kind, message, state, _| {
            if kind == "append" {
                state.as_array_mut().unwrap().push(message["n"].clone());
            }
            Ok(Reply::Value(state.clone()))
        })
        .unwrap();
    let log = actors.create("log", Some("l"), json!([])).await.unwrap();
    for n in 0..200 {
        actors.tell(&log, json!({"type": "append", "n": n})).unwrap();
    }
    // An ask sent after the tells runs after them.
    let state = actors.send(&log, json!({"type": "read"})).await.unwrap();
    assert_eq!(state, json!((0..200).collect::<Vec<_>>()));
    let missing = ActorRef::new("log", "nobody").unwrap();
    actors.tell(&missing, json!({"type": "append", "n": 0})).unwrap();
    wait_until(|| actors.stats()[0].tells_failed == 1).await;
}

/// An actor type whose state is the list of the `tag`s of its messages in
/// the order their turns ran; a `block` message holds its turn until
/// `gate` gives a permit.
fn ordered_log(gate: Arc<Semaphore>) -> ActorType {
    ActorType::from_async(move |input: TurnInput| {
        let gate = gate.clone();
        async move {
            let mut state = input.state;
            if input.message_type == "block" {
                let _ = gate.acquire().await;
            } else {
                state.as_array_mut().unwrap().push(input.message["tag"].clone());
            }
            Ok(TurnOutput { reply: Reply::Value(Value::Null), state })
        }
    })
}

#[tokio::test]
async fn the_mailbox_serves_higher_priorities_first() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let gate = Arc::new(Semaphore::new(0));
    actors.register("ordered", ordered_log(gate.clone())).unwrap();
    let ordered = actors.create("ordered", Some("o"), json!([])).await.unwrap();
    let blocker = tokio::spawn({
        let (actors, ordered) = (actors.clone(), ordered.clone());
        async move { actors.send(&ordered, json!({"type": "block"})).await }
    });
    wait_until(|| reactor.in_flight() == 1).await;
    let mut sends = Vec::new();
    for (tag, priority) in [("low-1", 1), ("high-1", 9), ("low-2", 1), ("high-2", 9), ("mid", 5)] {
        let packet = ordered
            .packet(Op::Send, json!({"type": "log", "tag": tag}))
            .with_priority(Priority::new(priority).unwrap());
        let reactor = reactor.clone();
        sends.push(tokio::spawn(async move { reactor.submit(packet).await }));
        let queued = sends.len() + 1;
        wait_until(|| reactor_in_flight(&actors) == queued).await;
    }
    gate.add_permits(1);
    blocker.await.unwrap().unwrap();
    for send in sends {
        assert!(send.await.unwrap().is_success());
    }
    let host = actors.reactor.actor_host("ordered").unwrap();
    assert_eq!(host.cell_state("o").unwrap(), json!(["high-1", "high-2", "mid", "low-1", "low-2"]));
}

/// A handler's `tell_with` and `send_with` give their message a priority of
/// its own (its place in the mailbox) and a shorter timeout; a bad option
/// is PF400 naming it, and nothing is sent.
#[tokio::test]
async fn a_handlers_messages_take_their_own_priority_and_timeout() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let gate = Arc::new(Semaphore::new(0));
    actors.register("ordered", ordered_log(gate.clone())).unwrap();
    let ordered = actors.create("ordered", Some("o"), json!([])).await.unwrap();
    let target = ordered.clone();
    reactor
        .register("df", "fan", move |data: Value, ctx| {
            let ordered = target.clone();
            async move {
                for (tag, priority) in [("low", 1), ("high", 9), ("inherited", 0)] {
                    let message = json!({"type": "log", "tag": tag});
                    let priority = (priority > 0).then(|| Field::Int(priority.into()));
                    let options = CallOptions::from_fields(priority.as_ref(), None)?;
                    ctx.tell_with(&ordered, message, options)?;
                }
                let bad = CallOptions::from_fields(Some(&Field::Int(11)), None).unwrap_err();
                assert_eq!(bad.message, "priority must be an integer 1-10, got 11");
                // Behind the blocked turn, a send that may wait 50 ms ends
                // at its own deadline, long before the packet's.
                let short = CallOptions::from_fields(None, Some(&Field::Int(50)))?;
                let late = ctx.send_with(&ordered, json!({"type": "log", "tag": "late"}), short).await;
                Ok(json!({"late": late.unwrap_err().code.as_str(), "data": data}))
            }
        })
        .unwrap();
    let blocker = tokio::spawn({
        let (actors, ordered) = (actors.clone(), ordered.clone());
        async move { actors.send(&ordered, json!({"type": "block"})).await }
    });
    wait_until(|| reactor.in_flight() == 1).await;
    let fan = Packet::new(Group::DataFlow, Element::new("fan").unwrap(), json!(1));
    let answer = reactor.submit(fan).await;
    assert_eq!(answer.outcome.unwrap(), json!({"late": "PF408", "data": 1}));
    gate.add_permits(1);
    blocker.await.unwrap().unwrap();
    wait_until(|| reactor.in_flight() == 0).await;
    let host = actors.reactor.actor_host("ordered").unwrap();
    assert_eq!(host.cell_state("o").unwrap(), json!(["high", "inherited", "low"]));
}

fn reactor_in_flight(actors: &Actors) -> usize {
    actors.reactor.in_flight()
}

#[tokio::test]
async fn a_reentrant_message_reads_but_may_not_change_the_state() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    // `a` asks `b`, which messages `a` back while a's turn waits on it.
    actors
        .register(
            "a",
            ActorType::from_async(|input: TurnInput| async move {
                match input.message_type.as_str() {
                    "get" => Ok(TurnOutput { reply: Reply::Value(input.state.clone()), state: input.state }),
                    "bump" => {
                        let state = json!(input.state.as_i64().unwrap() + 1);
                        Ok(TurnOutput { reply: Reply::Value(state.clone()), state })
                    }
                    _ => {
                        let b = ActorRef::new("b", "b").unwrap();
                        let via_b = input.ctx.send(&b, json!({"type": input.message["then"]})).await?;
                        Ok(TurnOutput { reply: Reply::Value(via_b), state: json!(10) })
                    }
                }
            }),
        )
        .unwrap();
    actors
        .register(
            "b",
            ActorType::from_async(|input: TurnInput| async move {
                let a = ActorRef::new("a", "a").unwrap();
                let back = input.ctx.send(&a, json!({"type": input.message_type})).await?;
                Ok(TurnOutput { reply: Reply::Value(back), state: input.state })
            }),
        )
        .unwrap();
    let a = actors.create("a", Some("a"), json!(1)).await.unwrap();
    actors.create("b", Some("b"), Value::Null).await.unwrap();
    let read = actors.send(&a, json!({"type": "ask_b", "then": "get"})).await.unwrap();
    assert_eq!(read, 1, "the nested read saw the committed state, without deadlock");
    assert_eq!(actors.send(&a, json!({"type": "get"})).await.unwrap(), 10, "the outer turn committed");
    let err = actors.send(&a, json!({"type": "ask_b", "then": "bump"})).await.unwrap_err();
    assert_eq!(err.code, "PF409");
    assert!(
        err.message.starts_with("a reentrant message may read a/a's state but not change"),
        "{}",
        err.message
    );
    assert_eq!(
        actors.send(&a, json!({"type": "get"})).await.unwrap(),
        10,
        "the failed chain changed nothing"
    );
}

/// What the `probe` actor of the test below saw of its turn.
#[derive(Default)]
struct Probed {
    /// The id of the turn waiting at the gate, once it read it.
    waiting_id: Option<PacketId>,
    /// The context of the last turn, kept past its end.
    last: Option<ActorContext>,
}

#[tokio::test]
async fn an_api_messages_turn_reads_a_made_id_that_calls_carry_and_that_ends_with_it() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    reactor
        .register_sync("df", "echo", |_, ctx| {
            let turns = ctx.metadata().and_then(|m| m.get(META_TURNS)).cloned();
            Ok(json!({"trace": ctx.trace_id(), "turns": turns}))
        })
        .unwrap();
    let probed = Arc::new(std::sync::Mutex::new(Probed::default()));
    let gate = Arc::new(Semaphore::new(0));
    let (seen, held) = (probed.clone(), gate.clone());
    let probe = ActorType::from_async(move |input: TurnInput| {
        let (seen, gate) = (seen.clone(), held.clone());
        async move {
            let id = input.ctx.packet_id().clone();
            let echoed = input.ctx.call("df", "echo", Value::Null).await?;
            if input.message_type == "wait" {
                seen.lock().unwrap().waiting_id = Some(id.clone());
                gate.acquire().await.unwrap().forget();
            }
            seen.lock().unwrap().last = Some(input.ctx.clone());
            Ok(TurnOutput {
                reply: Reply::Value(json!({"id": id.as_str(), "echoed": echoed})),
                state: input.state,
            })
        }
    });
    actors.register("probe", probe).unwrap();
    let p = actors.create("probe", Some("p"), Value::Null).await.unwrap();

    let first = actors.send(&p, json!({"type": "read"})).await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 4, "a made id is a UUID v4: {id}");
    assert_eq!(first["echoed"], json!({"trace": id, "turns": [id]}), "calls carry it as a packet's");
    let second = actors.send(&p, json!({"type": "read"})).await.unwrap();
    assert_ne!(second["id"], first["id"], "each message has its own");
    let late = probed.lock().unwrap().last.clone().unwrap();
    let err = late.call("df", "echo", Value::Null).await.unwrap_err();
    assert_eq!(err, late_call_error("df", "echo"), "a turn's context cannot call once it ended");
    assert_eq!(reactor.stats().in_flight, 0, "nothing left in flight");

    // While the turn runs, its id is in flight: a packet reusing it is PF409
    // at a handler, and joins the turn at the actor (as a packet's would).
    let waiting = tokio::spawn({
        let (actors, p) = (actors.clone(), p.clone());
        async move { actors.send(&p, json!({"type": "wait"})).await }
    });
    wait_until(|| probed.lock().unwrap().waiting_id.is_some()).await;
    let id = probed.lock().unwrap().waiting_id.clone().unwrap();
    assert_eq!(reactor.stats().in_flight, 1, "counted once");
    let reused = Packet::new(
        crate::packet::Group::DataFlow,
        crate::packet::Element::new("echo").unwrap(),
        Value::Null,
    );
    let reused = reactor.submit(Packet { id: id.clone(), ..reused }).await;
    assert_eq!(reused.outcome.unwrap_err().code, "PF409");
    let repeat = tokio::spawn({
        let packet = Packet { id: id.clone(), ..p.packet(Op::Send, json!({"type": "wait"})) };
        let reactor = reactor.clone();
        async move { reactor.submit(packet).await }
    });
    tokio::task::yield_now().await;
    gate.add_permits(1);
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(repeat.await.unwrap().outcome.unwrap(), answer, "the repeat shares the turn's answer");
    assert_eq!(reactor.stats().in_flight, 0);
}

#[tokio::test]
async fn idle_actors_are_passivated_and_come_back_on_their_next_message() {
    let config =
        ReactorConfig { actor_passivate_after: Duration::from_millis(20), ..ReactorConfig::default() };
    let reactor = Reactor::new(config);
    let actors = reactor.actors();
    actors.register("counter", counter("value")).unwrap();
    let c = actors.create("counter", Some("c"), json!({"value": 41})).await.unwrap();
    actors.send(&c, json!({"type": "increment"})).await.unwrap();
    // The sweep runs on its own; wait for it to have taken the actor out.
    wait_until(|| actors.stats()[0].passivated == 1).await;
    let stats = &actors.stats()[0];
    assert_eq!((stats.active, stats.passivations), (0, 1));
    assert_eq!(actors.list("counter").await.unwrap(), vec!["c"], "a passivated actor is still listed");
    assert_eq!(value_of(&actors, &c).await, 42, "reactivated with its state");
    assert_eq!(actors.stats()[0].active, 1);
}

#[tokio::test]
async fn durable_state_and_remembered_turns_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let repeat;
    {
        let reactor = Reactor::default();
        let actors = reactor.actors();
        actors.set_store(Arc::new(FileStore::open(&path).unwrap())).unwrap();
        actors.register("counter", counter("value")).unwrap();
        let c = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
        repeat = c.packet(Op::Send, json!({"type": "increment", "by": 5}));
        assert_eq!(reactor.submit(repeat.clone()).await.outcome.unwrap(), json!({"value": 5}));
        actors.send(&c, json!({"type": "fail"})).await.unwrap_err();
        // A store in use cannot be opened twice.
        assert!(FileStore::open(&path).unwrap_err().message.starts_with("cannot open the actor store"));
    }
    // The writer thread lets go of the file once every handle is dropped.
    let store = wait_for_store(&path).await;
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.set_store(Arc::new(store)).unwrap();
    actors.register("counter", counter("value")).unwrap();
    assert_eq!(actors.stats()[0].passivated, 1, "stored actors count as passivated");
    let c = ActorRef::new("counter", "c").unwrap();
    assert_eq!(
        reactor.submit(repeat).await.outcome.unwrap(),
        json!({"value": 5}),
        "the repeat is remembered"
    );
    assert_eq!(value_of(&actors, &c).await, 5);
    assert!(actors.set_store(Arc::new(MemoryStore::new())).is_err(), "no store change once types exist");
}

#[tokio::test]
async fn a_file_store_is_closed_when_its_last_clone_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let actor = ActorRef::new("counter", "c").unwrap();
    for round in 0..20 {
        // Opened again at once, each round: the drop below closed the file.
        let store = FileStore::open(&path).unwrap();
        let stored = store.load(&actor).await.unwrap().map(|r| r.state);
        assert_eq!(stored, (round > 0).then(|| json!({"round": round - 1})));
        let record = Record { state: json!({"round": round}), recent: Vec::new() };
        let copy = store.clone();
        copy.save(&actor, &record).await.unwrap();
        drop(store);
        assert!(FileStore::open(&path).is_err(), "a clone keeps the file open");
        drop(copy);
    }
}

async fn wait_for_store(path: &std::path::Path) -> FileStore {
    for _ in 0..500 {
        if let Ok(store) = FileStore::open(path) {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the store file stayed locked");
}

/// Polls `condition` (cheap, in-memory) until it holds, for at most 5 s.
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..5000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not met within 5 s");
}

#[test]
fn packet_ids_of_turns_are_plain_packet_ids() {
    assert!(PacketId::new("turn-1").is_ok());
}

#[tokio::test]
async fn a_types_spawner_runs_its_mailboxes() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    let spawned = Arc::new(AtomicUsize::new(0));
    let counted = spawned.clone();
    // The first turn waits until every send is in flight, so that the
    // sends behind it queue and a drain task works through them.
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let spec = ActorType::from_async(move |input: TurnInput| {
        let gate = held.clone();
        async move {
            let mut state = input.state;
            if state["value"] == 0 {
                let _ = gate.acquire().await;
            }
            state["value"] = json!(state["value"].as_i64().unwrap_or(0) + 1);
            Ok(TurnOutput { reply: Reply::Value(state.clone()), state })
        }
    })
    .with_spawner(move |mailbox| {
        counted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(mailbox);
    });
    actors.register("counter", spec).unwrap();
    let counter = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
    let opener = tokio::spawn({
        let reactor = reactor.clone();
        async move {
            wait_until(|| reactor.in_flight() == 50).await;
            gate.add_permits(1);
        }
    });
    let sends = (0..50).map(|_| actors.send(&counter, json!({"type": "increment"})));
    futures::future::join_all(sends).await.into_iter().for_each(|r| drop(r.unwrap()));
    opener.await.unwrap();
    let after = actors.send(&counter, json!({"type": "increment"})).await.unwrap();
    assert_eq!(after, json!({"value": 51}), "one turn at a time, none lost");
    assert!(spawned.load(Ordering::SeqCst) >= 1, "the queued sends' mailbox ran through it");
}

/// A type whose one method answers what its turn sees: the metadata and
/// the packet id.
fn introspective() -> ActorType {
    ActorType::new(|_: &str, _: &Value, _: &mut Value, ctx: &ActorContext| {
        let metadata = ctx.metadata().map_or(Value::Null, |m| Value::Object(m.clone()));
        Ok(Reply::Value(json!({"metadata": metadata})))
    })
    .with_initial_state(Value::Null)
}

#[tokio::test]
async fn ask_with_judges_options_now_and_every_path_shows_a_turn_the_same_metadata() {
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.register("probe", introspective()).unwrap();
    let actor = ActorRef::new("probe", "p1").unwrap();
    let message = || Some(json!({"type": "look"}));
    // Nothing but the message: the direct way.
    let parts = PacketParts { data: message(), ..PacketParts::default() };
    assert!(parts.only_data());
    let seen = actors.ask_with(&actor, Op::Send, parts).unwrap().await.unwrap();
    assert_eq!(seen, json!({"metadata": null}));
    // With a packet id and metadata: a packet, whose addressing keys the
    // turn does not see.
    let parts = PacketParts {
        id: Some("ask-1".into()),
        data: message(),
        metadata: Some(json!({"note": "n"})),
        ..PacketParts::default()
    };
    assert!(!parts.only_data());
    let seen = actors.ask_with(&actor, Op::Send, parts).unwrap().await.unwrap();
    assert_eq!(seen, json!({"metadata": {"note": "n"}}));
    // A plain packet from a peer's frame: the same.
    let packet = actor.packet(Op::Send, json!({"type": "look"}));
    assert!(packet.meta(address::META_ACTOR_ID).is_some());
    assert_eq!(reactor.call(packet).await.unwrap(), json!({"metadata": null}));
    // An option the rules refuse: PF400 naming the field, before anything runs.
    let parts = PacketParts { priority: Some(42i64.into()), data: message(), ..PacketParts::default() };
    let err = actors.ask_with(&actor, Op::Send, parts).err().expect("refused");
    assert_eq!(err.code, "PF400");
    assert!(err.message.contains("priority"), "{}", err.message);
    // Null options count as absent.
    let parts = PacketParts { priority: Some(Field::Null), data: message(), ..PacketParts::default() };
    assert!(parts.only_data());
}

/// A store other nodes write too, as far as one reactor can tell: records
/// in memory, a write that can be made to fail once (another activation
/// wrote first), and a count of claims and releases.
#[derive(Default)]
struct SharedFake {
    records: parking_lot::Mutex<std::collections::HashMap<String, Record>>,
    fail_next_save: std::sync::atomic::AtomicBool,
    claims: AtomicUsize,
    releases: AtomicUsize,
}

impl ActorStore for SharedFake {
    fn durable(&self) -> bool {
        true
    }
    fn shared(&self) -> bool {
        true
    }
    fn load(&self, actor: &ActorRef) -> futures::future::BoxFuture<'static, Result<Option<Record>, PfError>> {
        let found = self.records.lock().get(&actor.to_string()).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
    fn save(
        &self,
        actor: &ActorRef,
        record: &Record,
    ) -> futures::future::BoxFuture<'static, Result<(), PfError>> {
        if self.fail_next_save.swap(false, Ordering::SeqCst) {
            let e = PfError::new(crate::error::ErrorCode::Unavailable, "another activation wrote it");
            return Box::pin(std::future::ready(Err(e)));
        }
        self.records.lock().insert(actor.to_string(), record.clone());
        Box::pin(std::future::ready(Ok(())))
    }
    fn remove(&self, actor: &ActorRef) -> futures::future::BoxFuture<'static, Result<bool, PfError>> {
        let removed = self.records.lock().remove(&actor.to_string()).is_some();
        Box::pin(std::future::ready(Ok(removed)))
    }
    fn ids(&self, _: &str) -> futures::future::BoxFuture<'static, Result<Vec<String>, PfError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    fn claim(&self, _: &ActorRef) -> futures::future::BoxFuture<'static, Result<Claimed, PfError>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(Claimed::Here)))
    }
    fn release(&self, _: &ActorRef) -> futures::future::BoxFuture<'static, ()> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(()))
    }
}

#[tokio::test]
async fn a_shared_store_claims_each_activation_and_a_failed_write_reads_the_actor_again() {
    // Long enough for the steps before the last to run with the actor in
    // memory, short enough to wait for its passivation.
    let config =
        ReactorConfig { actor_passivate_after: Duration::from_millis(400), ..ReactorConfig::default() };
    let reactor = Reactor::new(config);
    let actors = reactor.actors();
    let store = Arc::new(SharedFake::default());
    actors.set_store(store.clone()).unwrap();
    actors.register("counter", counter("value")).unwrap();
    let c = actors.create("counter", Some("c"), json!({"value": 0})).await.unwrap();
    assert_eq!(store.claims.load(Ordering::SeqCst), 1, "claimed before it came into memory");
    assert_eq!(actors.send(&c, json!({"type": "increment"})).await.unwrap(), json!({"value": 1}));

    // Another activation wrote 10 meanwhile: this one's write fails, the
    // turn is not applied, and the actor leaves memory.
    store.records.lock().get_mut("counter/c").unwrap().state = json!({"value": 10});
    store.fail_next_save.store(true, Ordering::SeqCst);
    let e = actors.send(&c, json!({"type": "increment"})).await.unwrap_err();
    assert!(e.is(crate::error::ErrorCode::Unavailable), "{e:?}");
    assert!(actors.active_ids("counter").is_empty(), "a copy that failed to write stays in memory");
    // The next message claims and reads it again: it goes on from 10.
    assert_eq!(actors.send(&c, json!({"type": "increment"})).await.unwrap(), json!({"value": 11}));
    assert_eq!(store.claims.load(Ordering::SeqCst), 2);

    // Leaving memory gives the claim up.
    wait_until(|| actors.stats()[0].passivations == 1).await;
    wait_until(|| store.releases.load(Ordering::SeqCst) == 1).await;
}
