//! `cf:gate`, `ed:signal`, `ed:react`, `ed:timer`, `co:sync` and
//! `co:broadcast` on one reactor (across nodes: tests/tests/stdlib.rs).

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::test_support::{failure, ok, reopen, run, step, Seen, WAIT};
use super::*;
use crate::actor::{ActorStore, FileStore};
use crate::packet::Packet;

/// A reactor with every standard element, `df:seen` (records its data),
/// `df:fail` (PF500) and `df:whoami` (answers "here").
fn reactor() -> (Reactor, Seen) {
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::all());
    let seen = Seen::default();
    seen.register(&r);
    r.register_sync("df", "fail", |_, _| Err(PfError::new(ErrorCode::HandlerFailed, "boom"))).unwrap();
    r.register_sync("df", "whoami", |_, _| Ok(json!("here"))).unwrap();
    (r, seen)
}

/// Fires `name` until it has opened `gates` gates in all (a gate registers
/// with the signal's owner some time after it is submitted, and each
/// signal takes the gates waiting at that moment) -> the gates opened.
async fn fire_to(r: &Reactor, name: &str, payload: Value, gates: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut opened = 0;
    loop {
        let answer = ok(r, "ed:signal", json!({"name": name, "payload": payload})).await;
        assert_eq!(answer["failed"], json!([]), "{answer}");
        opened += answer["delivered"].as_u64().unwrap();
        if opened >= gates {
            return opened;
        }
        assert!(Instant::now() < deadline, "signal {name} opened {opened} gates, not {gates}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until no actor of `actor_type` is in memory.
async fn until_none(r: &Reactor, actor_type: &str) {
    let deadline = Instant::now() + WAIT;
    while !r.actors().active_ids(actor_type).is_empty() {
        assert!(Instant::now() < deadline, "{actor_type} left: {:?}", r.actors().active_ids(actor_type));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_field() {
    let (r, seen) = reactor();
    let long = "x".repeat(129);
    let cases = [
        ("cf:gate", json!({}), "cf:gate: signal is required"),
        ("cf:gate", json!({"signal": 3}), "cf:gate: signal must be a string, got a number"),
        (
            "cf:gate",
            json!({"signal": "a*"}),
            "cf:gate: signal must not hold '*' (only an ed:react pattern may), got \"a*\"",
        ),
        (
            "cf:gate",
            json!({"signal": "a", "timeout_ms": 0}),
            "cf:gate: timeout_ms must be an integer 1-86400000, got 0",
        ),
        ("ed:signal", json!([]), "ed:signal: data must be an object, got an array"),
        ("ed:signal", json!({"payload": 1}), "ed:signal: name is required"),
        (
            "ed:signal",
            json!({"name": long}),
            "ed:signal: name must be a string of 1-128 bytes, got 129 bytes",
        ),
        ("ed:react", json!({"do": step("seen")}), "ed:react: on is required"),
        (
            "ed:react",
            json!({"on": "a*b", "do": step("seen")}),
            "ed:react: on may hold '*' only at its end, got \"a*b\"",
        ),
        ("ed:react", json!({"on": "a"}), "ed:react: do is required"),
        ("ed:react", json!({"on": "a", "do": {"group": "df"}}), "ed:react: do.element is required"),
        ("ed:react", json!({"cancel": 7}), "ed:react: cancel must be a string, got a number"),
        ("ed:react", json!({"cancel": "s", "on": "a"}), "ed:react: cancel is given alone (with no on)"),
        ("ed:timer", json!({"do": step("seen")}), "ed:timer: after_ms every_ms or at is required"),
        ("ed:timer", json!({"after_ms": 10}), "ed:timer: do is required"),
        (
            "ed:timer",
            json!({"after_ms": -1, "do": step("seen")}),
            "ed:timer: after_ms must be an integer 0-31536000000, got -1",
        ),
        (
            "ed:timer",
            json!({"every_ms": 5, "do": step("seen")}),
            "ed:timer: every_ms must be an integer 10-31536000000, got 5",
        ),
        (
            "ed:timer",
            json!({"after_ms": 5, "at": "2030-01-01T00:00:00Z", "do": step("seen")}),
            "ed:timer: after_ms and at cannot both be given",
        ),
        (
            "ed:timer",
            json!({"at": 5, "do": step("seen")}),
            "ed:timer: at must be an RFC 3339 time, got a number",
        ),
        (
            "ed:timer",
            json!({"at": "2999-01-01T00:00:00Z", "do": step("seen")}),
            "ed:timer: at must be at most a year from now, got 32472144000000 ms since 1970",
        ),
        (
            "ed:timer",
            json!({"after_ms": 5, "times": 2, "do": step("seen")}),
            "ed:timer: times above 1 needs every_ms",
        ),
        (
            "ed:timer",
            json!({"every_ms": 50, "times": 0, "do": step("seen")}),
            "ed:timer: times must be an integer 1-4294967295, got 0",
        ),
        (
            "ed:timer",
            json!({"cancel": "t", "do": step("seen")}),
            "ed:timer: cancel is given alone (with no do)",
        ),
        ("co:sync", json!({"parties": 2}), "co:sync: barrier is required"),
        ("co:sync", json!({"barrier": "b"}), "co:sync: parties is required (1-10000)"),
        (
            "co:sync",
            json!({"barrier": "b", "parties": 0}),
            "co:sync: parties must be an integer 1-10000, got 0",
        ),
        ("co:broadcast", json!({"data": 1}), "co:broadcast: to is required"),
        (
            "co:broadcast",
            json!({"to": "whoami"}),
            "co:broadcast: to must be \"group:element\" naming a valid key, got \"whoami\"",
        ),
        (
            "co:broadcast",
            json!({"to": "zz:whoami"}),
            "co:broadcast: to must be \"group:element\" naming a valid key, got \"zz:whoami\"",
        ),
    ];
    for (key, data, expected) in cases {
        let res = run(&r, key, data.clone()).await;
        assert_eq!(failure(&res), ("PF400".to_string(), expected.to_string()), "{key} {data}");
    }
    let res = run(&r, "ed:timer", json!({"at": "tomorrow", "do": step("seen")})).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF400");
    assert!(message
        .starts_with("ed:timer: at must be an RFC 3339 time as 2030-01-02T03:04:05Z, got \"tomorrow\""));
    assert_eq!(seen.count(), 0, "nothing ran for a bad input");
    for actor_type in ["pf.waiter", "pf.signal", "pf.react", "pf.timer", "pf.barrier"] {
        assert!(r.actors().active_ids(actor_type).is_empty(), "no {actor_type} for a bad input");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_opens_the_gates_waiting_on_its_name_with_its_payload() {
    let (r, _) = reactor();
    let gates: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { run(&r, "cf:gate", json!({"signal": "ready"})).await })
        })
        .collect();
    let other = {
        let r = r.clone();
        tokio::spawn(async move { run(&r, "cf:gate", json!({"signal": "other", "timeout_ms": 5000})).await })
    };
    assert_eq!(fire_to(&r, "ready", json!({"go": true}), 2).await, 2);
    for gate in gates {
        let result = tokio::time::timeout(WAIT, gate).await.unwrap().unwrap();
        assert_eq!(result.outcome, Ok(json!({"go": true})));
    }
    // The signal took its waiters: firing again opens nothing; the gate on
    // another name still waits.
    assert_eq!(ok(&r, "ed:signal", json!({"name": "ready"})).await["delivered"], 0);
    assert!(!other.is_finished());
    fire_to(&r, "other", Value::Null, 1).await;
    let result = tokio::time::timeout(WAIT, other).await.unwrap().unwrap();
    assert_eq!(result.outcome, Ok(Value::Null));
    // Nothing of the waits stays: waiters and signal owners stopped.
    until_none(&r, "pf.waiter").await;
    until_none(&r, "pf.signal").await;
}

#[tokio::test]
async fn a_gate_answers_pf408_at_its_timeout_or_its_packets_deadline() {
    let (r, _) = reactor();
    let started = Instant::now();
    let res = run(&r, "cf:gate", json!({"signal": "never", "timeout_ms": 150})).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF408");
    assert!(message.starts_with("cf:gate: signal \"never\" did not fire within 1"), "{message}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(140) && waited < Duration::from_secs(3), "{waited:?}");

    let mut packet = Packet::build("cf", "gate", json!({"signal": "never", "timeout_ms": 60_000})).unwrap();
    packet.timeout_ms = Some(200);
    let started = Instant::now();
    let res = r.submit(packet).await;
    assert_eq!(failure(&res).0, "PF408");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(3), "{waited:?}");
    until_none(&r, "pf.waiter").await;
    // The gates that timed out are not released by a later signal.
    assert_eq!(ok(&r, "ed:signal", json!({"name": "never"})).await["delivered"], 0);
    until_none(&r, "pf.signal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_gate_leaves_no_waiter() {
    let (r, _) = reactor();
    let packet = Packet::build("cf", "gate", json!({"signal": "s"})).unwrap();
    let id = packet.id.clone();
    let gate = {
        let r = r.clone();
        tokio::spawn(async move { r.submit(packet).await })
    };
    let deadline = Instant::now() + WAIT;
    while r.actors().active_ids("pf.signal").is_empty() {
        assert!(Instant::now() < deadline, "the gate never registered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(r.cancel(&id));
    let result = tokio::time::timeout(WAIT, gate).await.unwrap().unwrap();
    assert_eq!(failure(&result).0, "PF499");
    until_none(&r, "pf.waiter").await;
}

#[tokio::test]
async fn react_calls_its_step_for_each_matching_signal_until_cancelled() {
    let (r, seen) = reactor();
    let all_orders = ok(&r, "ed:react", json!({"on": "orders.*", "do": step("seen")})).await;
    let new_orders = ok(&r, "ed:react", json!({"on": "orders.new", "do": step("seen")})).await;
    let failing = ok(&r, "ed:react", json!({"on": "alerts", "do": step("fail")})).await;
    let all_orders = all_orders["subscription_id"].as_str().unwrap().to_owned();
    let answer = ok(&r, "ed:signal", json!({"name": "orders.new", "payload": 7})).await;
    assert_eq!(answer, json!({"delivered": 2, "failed": []}));
    assert_eq!(seen.all(), vec![json!({"name": "orders.new", "payload": 7}); 2]);
    let answer = ok(&r, "ed:signal", json!({"name": "orders.old"})).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(ok(&r, "ed:signal", json!({"name": "order"})).await["delivered"], 0);
    assert_eq!(seen.count(), 3);
    // A reaction that fails is reported, by its subscription.
    let answer = ok(&r, "ed:signal", json!({"name": "alerts"})).await;
    assert_eq!(
        answer,
        json!({"delivered": 0, "failed": [{
            "code": "PF500",
            "message": "ed:react do (df:fail) failed: boom",
            "subscription_id": failing["subscription_id"],
        }]})
    );
    // Cancelled: no more calls.
    assert_eq!(ok(&r, "ed:react", json!({"cancel": all_orders})).await, json!({"cancelled": true}));
    assert_eq!(ok(&r, "ed:react", json!({"cancel": all_orders})).await, json!({"cancelled": false}));
    assert_eq!(ok(&r, "ed:signal", json!({"name": "orders.new"})).await["delivered"], 1);
    assert_eq!(ok(&r, "ed:signal", json!({"name": "orders.old"})).await["delivered"], 0);
    assert_eq!(seen.count(), 4);
    // The last cancel stops the subscriptions' actor; a cancel then finds none.
    for id in [&new_orders["subscription_id"], &failing["subscription_id"]] {
        assert_eq!(ok(&r, "ed:react", json!({"cancel": id})).await, json!({"cancelled": true}));
    }
    until_none(&r, "pf.react").await;
    assert_eq!(ok(&r, "ed:react", json!({"cancel": "gone"})).await, json!({"cancelled": false}));
    // A catch-all pattern.
    ok(&r, "ed:react", json!({"on": "*", "do": step("seen")})).await;
    assert_eq!(ok(&r, "ed:signal", json!({"name": "anything"})).await["delivered"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_its_times_and_then_stops() {
    let (r, seen) = reactor();
    let started = Instant::now();
    let answer = ok(&r, "ed:timer", json!({"every_ms": 20, "times": 3, "do": step("seen")})).await;
    let timer_id = answer["timer_id"].as_str().unwrap().to_owned();
    seen.until(3).await;
    assert!(started.elapsed() >= Duration::from_millis(55), "{:?}", started.elapsed());
    let calls = seen.all();
    let fired: Vec<Value> = calls.iter().map(|c| c["fired"].clone()).collect();
    assert_eq!(fired, vec![json!(1), json!(2), json!(3)]);
    assert!(calls.iter().all(|c| c["timer_id"] == json!(timer_id)));
    // Spent: its actor stopped, so a cancel finds nothing.
    until_none(&r, "pf.timer").await;
    assert_eq!(ok(&r, "ed:timer", json!({"cancel": timer_id})).await, json!({"cancelled": false}));

    // Once, after after_ms, with the step's own data; and at a time
    // already past: at once.
    let once = json!({"after_ms": 30, "do": {"group": "df", "element": "seen", "data": "once"}});
    ok(&r, "ed:timer", once).await;
    seen.until(4).await;
    let at =
        json!({"at": "2001-02-03T04:05:06+02:00", "do": {"group": "df", "element": "seen", "data": "at"}});
    ok(&r, "ed:timer", at).await;
    seen.until(5).await;
    assert_eq!(seen.all()[3..], [json!("once"), json!("at")]);
    until_none(&r, "pf.timer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_timer_fires_no_more() {
    let (r, seen) = reactor();
    let answer = ok(&r, "ed:timer", json!({"every_ms": 20, "do": step("seen")})).await;
    seen.until(2).await;
    let cancelled = ok(&r, "ed:timer", json!({"cancel": answer["timer_id"]})).await;
    assert_eq!(cancelled, json!({"cancelled": true}));
    let at_cancel = seen.count();
    until_none(&r, "pf.timer").await;
    // Five periods on, no more calls (one already under way may land).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.count() <= at_cancel + 1, "{} calls after the cancel at {at_cancel}", seen.count());
    // A timer cancelled before it fires never does.
    let answer = ok(&r, "ed:timer", json!({"after_ms": 50, "do": step("seen")})).await;
    let before = seen.count();
    assert_eq!(ok(&r, "ed:timer", json!({"cancel": answer["timer_id"]})).await, json!({"cancelled": true}));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(seen.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_survives_a_restart_with_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let seen = Seen::default();
    {
        let r = Reactor::default();
        let store: Arc<dyn ActorStore> = Arc::new(FileStore::open(&path).unwrap());
        r.actors().set_store(store).unwrap();
        r.enable_stdlib(&StdlibPatterns::parse("ed:timer").unwrap());
        seen.register(&r);
        let answer = ok(&r, "ed:timer", json!({"after_ms": 300, "do": step("seen")})).await;
        assert!(answer["timer_id"].is_string());
        r.stop();
    }
    // The first reactor is gone before its timer was due; the second one,
    // on the same store, re-arms it.
    let r = Reactor::default();
    r.actors().set_store(Arc::new(reopen(&path).await)).unwrap();
    seen.register(&r);
    r.enable_stdlib(&StdlibPatterns::parse("ed:timer").unwrap());
    seen.until(1).await;
    assert_eq!(seen.count(), 1);
    until_none(&r, "pf.timer").await;
    assert_eq!(r.actors().count("pf.timer").await.unwrap(), 0, "a spent timer leaves the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_and_barriers_work_the_same_over_a_durable_store() {
    // Turns then run in tasks of their own and stopping an actor writes:
    // the release still reaches the waiting turn, which stops its actor.
    let dir = tempfile::tempdir().unwrap();
    let r = Reactor::default();
    r.actors().set_store(Arc::new(FileStore::open(dir.path().join("actors.redb")).unwrap())).unwrap();
    r.enable_stdlib(&StdlibPatterns::parse("cf:gate,ed:signal,co:sync").unwrap());
    let gate = {
        let r = r.clone();
        tokio::spawn(async move { run(&r, "cf:gate", json!({"signal": "s"})).await })
    };
    fire_to(&r, "s", json!(1), 1).await;
    assert_eq!(tokio::time::timeout(WAIT, gate).await.unwrap().unwrap().outcome, Ok(json!(1)));
    let parties: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { run(&r, "co:sync", json!({"barrier": "b", "parties": 2})).await })
        })
        .collect();
    for party in parties {
        let result = tokio::time::timeout(WAIT, party).await.unwrap().unwrap();
        assert_eq!(result.outcome, Ok(json!({"arrived": 2})));
    }
    until_none(&r, "pf.waiter").await;
    for actor_type in ["pf.waiter", "pf.signal", "pf.barrier"] {
        assert_eq!(r.actors().count(actor_type).await.unwrap(), 0, "no {actor_type} left in the store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_lets_its_parties_go_together() {
    let (r, _) = reactor();
    let parties: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { run(&r, "co:sync", json!({"barrier": "b", "parties": 3})).await })
        })
        .collect();
    for party in parties {
        let result = tokio::time::timeout(WAIT, party).await.unwrap().unwrap();
        assert_eq!(result.outcome, Ok(json!({"arrived": 3})));
    }
    until_none(&r, "pf.barrier").await;
    until_none(&r, "pf.waiter").await;
    // One party needs nobody.
    assert_eq!(ok(&r, "co:sync", json!({"barrier": "b", "parties": 1})).await, json!({"arrived": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_times_out_no_longer_counts_and_parties_must_agree() {
    let (r, _) = reactor();
    let mut packet = Packet::build("co", "sync", json!({"barrier": "b", "parties": 2})).unwrap();
    packet.timeout_ms = Some(150);
    let res = r.submit(packet).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF408");
    assert_eq!(message, "co:sync: barrier \"b\" did not gather its 2 parties before the deadline");
    // Had the late party counted, the next one would pass alone and the
    // one after would wait for a partner that never comes.
    let first = {
        let r = r.clone();
        tokio::spawn(async move { run(&r, "co:sync", json!({"barrier": "b", "parties": 2})).await })
    };
    let deadline = Instant::now() + WAIT;
    let barrier = r.actor_host("pf.barrier").unwrap();
    while ed::live(barrier.cell_state("b").as_ref().and_then(|s| s.get("arrived"))).is_empty() {
        assert!(Instant::now() < deadline && !first.is_finished(), "the first party passed alone");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A party naming another count is refused while a round gathers.
    let res = run(&r, "co:sync", json!({"barrier": "b", "parties": 3})).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF409");
    assert_eq!(message, "co:sync: barrier \"b\" is gathering 2 parties, this call names 3");
    let second = ok(&r, "co:sync", json!({"barrier": "b", "parties": 2})).await;
    assert_eq!(second, json!({"arrived": 2}));
    let first = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(first.outcome, Ok(json!({"arrived": 2})));
    until_none(&r, "pf.waiter").await;
}

#[tokio::test]
async fn broadcast_on_one_reactor_calls_this_node() {
    let (r, _) = reactor();
    let answer = ok(&r, "co:broadcast", json!({"to": "df:whoami", "data": 1})).await;
    assert_eq!(answer, json!({"results": {"packetflow": {"ok": true, "value": "here"}}}));
    let answer = ok(&r, "co:broadcast", json!({"to": "df:fail"})).await;
    assert_eq!(
        answer,
        json!({"results": {"packetflow": {"ok": false, "error": {"code": "PF500", "message": "boom"}}}})
    );
    let res = run(&r, "co:broadcast", json!({"to": "df:nobody"})).await;
    assert_eq!(
        failure(&res),
        (
            "PF001".to_string(),
            "co:broadcast: no node serves df:nobody (no handler here, and no peer announced one)".to_string()
        )
    );
}
