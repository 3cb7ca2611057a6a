//! `rm:lock`, `rm:alloc` and `rm:free` on one reactor (across nodes, and
//! a holder's connection closing: tests/tests/stdlib.rs).

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::rm::{LOCK_TYPE, RESOURCE_TYPE};
use super::test_support::{failure, joined, ok, reopen, run, run_within, spawn_run, WAIT};
use super::*;
use crate::actor::FileStore;

fn reactor() -> Reactor {
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::parse("rm:lock,rm:alloc,rm:free").unwrap());
    r
}

/// The state of owner `id` of `actor_type`, as in memory now.
fn owner_state(r: &Reactor, actor_type: &str, id: &str) -> Value {
    r.actor_host(actor_type).and_then(|h| h.cell_state(id)).unwrap_or(Value::Null)
}

/// Waits until `n` calls queue with owner `id` of `actor_type` (a waiting
/// call queues a moment after it is submitted).
async fn until_queued(r: &Reactor, actor_type: &str, id: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = owner_state(r, actor_type, id);
        if state["queue"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} calls never queued for {id}: {state}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn token(answer: &Value) -> u64 {
    assert_eq!(answer["acquired"], json!(true), "{answer}");
    answer["token"].as_u64().unwrap_or_else(|| panic!("no token in {answer}"))
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_field() {
    let r = reactor();
    let long = "x".repeat(129);
    let cases = [
        ("rm:lock", json!([]), "rm:lock: data must be an object, got an array"),
        ("rm:lock", json!({"ttl_ms": 100}), "rm:lock: name is required"),
        ("rm:lock", json!({"name": 1, "ttl_ms": 100}), "rm:lock: name must be a string, got a number"),
        (
            "rm:lock",
            json!({"name": long, "ttl_ms": 100}),
            "rm:lock: name must be a string of 1-128 bytes, got 129 bytes",
        ),
        ("rm:lock", json!({"name": "a"}), "rm:lock: ttl_ms is required (1-86400000)"),
        (
            "rm:lock",
            json!({"name": "a", "ttl_ms": 0}),
            "rm:lock: ttl_ms must be an integer 1-86400000, got 0",
        ),
        (
            "rm:lock",
            json!({"name": "a", "ttl_ms": 86_400_001}),
            "rm:lock: ttl_ms must be an integer 1-86400000, got 86400001",
        ),
        (
            "rm:lock",
            json!({"name": "a", "ttl_ms": 10, "wait_ms": -1}),
            "rm:lock: wait_ms must be an integer 0-86400000, got -1",
        ),
        (
            "rm:lock",
            json!({"name": "a", "ttl_ms": 10, "wait_ms": 1.5}),
            "rm:lock: wait_ms must be an integer 0-86400000, got 1.5",
        ),
        (
            "rm:lock",
            json!({"name": "a", "ttl_ms": 10, "token": 3}),
            "rm:lock: token is given only with unlock",
        ),
        ("rm:lock", json!({"unlock": 3, "token": 1}), "rm:lock: unlock must be a string, got a number"),
        (
            "rm:lock",
            json!({"unlock": "a"}),
            "rm:lock: token is required with unlock (the token rm:lock gave)",
        ),
        (
            "rm:lock",
            json!({"unlock": "a", "token": 0}),
            "rm:lock: token must be an integer 1-18446744073709551615, got 0",
        ),
        (
            "rm:lock",
            json!({"unlock": "a", "token": "1"}),
            "rm:lock: token must be an integer 1-18446744073709551615, got \"1\"",
        ),
        (
            "rm:lock",
            json!({"unlock": "a", "token": 1, "ttl_ms": 5}),
            "rm:lock: unlock is given with token alone (with no ttl_ms)",
        ),
        ("rm:alloc", json!("gpu"), "rm:alloc: data must be an object, got a string"),
        ("rm:alloc", json!({"ttl_ms": 10}), "rm:alloc: resource is required"),
        (
            "rm:alloc",
            json!({"resource": "", "ttl_ms": 10}),
            "rm:alloc: resource must be a string of 1-128 bytes, got 0 bytes",
        ),
        ("rm:alloc", json!({"resource": "gpu"}), "rm:alloc: ttl_ms is required (1-86400000)"),
        (
            "rm:alloc",
            json!({"resource": "gpu", "ttl_ms": 10, "amount": 0}),
            "rm:alloc: amount must be an integer 1-1000000000, got 0",
        ),
        (
            "rm:alloc",
            json!({"resource": "gpu", "ttl_ms": 10, "capacity": -2}),
            "rm:alloc: capacity must be an integer 1-1000000000, got -2",
        ),
        (
            "rm:alloc",
            json!({"resource": "gpu", "ttl_ms": 10, "capacity": 2, "amount": 3}),
            "rm:alloc: amount must be at most capacity (2), got 3",
        ),
        ("rm:free", json!(null), "rm:free: data must be an object, got null"),
        ("rm:free", json!({}), "rm:free: lease_id is required"),
        ("rm:free", json!({"lease_id": 7}), "rm:free: lease_id must be a string, got a number"),
        (
            "rm:free",
            json!({"lease_id": "gpu"}),
            "rm:free: lease_id is not a lease id rm:alloc gave, got \"gpu\"",
        ),
        (
            "rm:free",
            json!({"lease_id": "x.ab@gpu"}),
            "rm:free: lease_id is not a lease id rm:alloc gave, got \"x.ab@gpu\"",
        ),
        (
            "rm:free",
            json!({"lease_id": "1.@gpu"}),
            "rm:free: lease_id is not a lease id rm:alloc gave, got \"1.@gpu\"",
        ),
        (
            "rm:free",
            json!({"lease_id": "1.ab@"}),
            "rm:free: lease_id is not a lease id rm:alloc gave, got \"1.ab@\"",
        ),
    ];
    for (key, data, message) in cases {
        let result = run(&r, key, data.clone()).await;
        assert_eq!(failure(&result), ("PF400".into(), message.into()), "{key} {data}");
    }
    // Nothing was made: input is checked before any owner is asked.
    assert!(r.actors().active_ids(LOCK_TYPE).is_empty());
    assert!(r.actors().active_ids(RESOURCE_TYPE).is_empty());
}

#[tokio::test]
async fn a_lock_goes_to_one_caller_at_a_time_under_ever_larger_tokens() {
    let r = reactor();
    let first = ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await;
    let t1 = token(&first);
    assert!(first["expires_at"].as_u64().unwrap() > super::waiter::now_ms() + 50_000, "{first}");
    // Held: a second caller that tries once does not get it.
    let second = ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await;
    assert_eq!(second, json!({"acquired": false, "token": null, "expires_at": null}));
    // Tokens start at the owner's clock in ms times 1,000: above those of
    // a lock whose state was lost.
    let floor = super::waiter::now_ms() * 1000;
    assert!(t1 <= floor && t1 > floor - 60_000_000, "token {t1}, clock {floor}");
    // Another name is another lock.
    let other = ok(&r, "rm:lock", json!({"name": "cache", "ttl_ms": 1000})).await;
    assert!(token(&other) >= t1);
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "db", "token": t1})).await, json!({"released": true}));
    let mut last = t1;
    for _ in 0..3 {
        let next = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await);
        assert!(next > last, "token {next} after {last}");
        ok(&r, "rm:lock", json!({"unlock": "db", "token": next})).await;
        last = next;
    }
    // The fence stays with the free lock: tokens are never handed out twice.
    assert_eq!(owner_state(&r, LOCK_TYPE, "db"), json!({"fence": last}));
    // A lock whose state is lost (here: deleted) starts again above the
    // tokens it gave, from the owner's clock, once a ms has passed.
    r.actors().stop(&crate::actor::ActorRef::new(LOCK_TYPE, "db").unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 10})).await) > last);
}

#[tokio::test]
async fn unlocking_is_idempotent_and_a_wrong_token_is_pf409() {
    let r = reactor();
    let t1 = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await);
    // A token never given for this lock.
    let never = run(&r, "rm:lock", json!({"unlock": "db", "token": t1 + 5})).await;
    assert_eq!(
        failure(&never),
        (
            "PF409".into(),
            format!("rm:lock: token {} was never given for lock \"db\" (the last was {t1})", t1 + 5)
        )
    );
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "db", "token": t1})).await, json!({"released": true}));
    // Again: the lock is free, nothing to release.
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "db", "token": t1})).await, json!({"released": false}));
    // A lock nobody ever took.
    let unknown = run(&r, "rm:lock", json!({"unlock": "nobody", "token": 1})).await;
    assert_eq!(failure(&unknown).0, "PF409");
    // A stale token while another holds the lock.
    let t2 = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await);
    let stale = run(&r, "rm:lock", json!({"unlock": "db", "token": t1})).await;
    assert_eq!(
        failure(&stale),
        (
            "PF409".into(),
            format!("rm:lock: token {t1} no longer holds lock \"db\": its hold ended, and token {t2} holds it now")
        )
    );
    // The refused unlock left the holder in place.
    assert_eq!(ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 10})).await["acquired"], json!(false));
}

#[tokio::test]
async fn a_hold_ends_at_its_ttl_without_anyone_calling() {
    let r = reactor();
    let t1 = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 150})).await);
    // A waiting caller gets it once the hold expires: no unlock comes.
    let started = Instant::now();
    let waiting = spawn_run(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000, "wait_ms": 20_000}));
    let got = joined(waiting).await.outcome.unwrap();
    let t2 = token(&got);
    assert!(t2 > t1, "{t2} after {t1}");
    assert!(started.elapsed() < Duration::from_secs(5), "handed over after {:?}", started.elapsed());
    // The expired holder's unlock comes too late: another holds it.
    let late = run(&r, "rm:lock", json!({"unlock": "db", "token": t1})).await;
    assert_eq!(failure(&late).0, "PF409");
    ok(&r, "rm:lock", json!({"unlock": "db", "token": t2})).await;

    // With nobody waiting, an expired hold simply no longer counts, and
    // its unlock is a no-op.
    let t3 = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 1})).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "db", "token": t3})).await, json!({"released": false}));
    let t4 = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 1})).await);
    assert!(t4 > t3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 1000})).await) > t4);
}

#[tokio::test]
async fn waiting_callers_get_the_lock_in_the_order_they_came() {
    let r = reactor();
    let t1 = token(&ok(&r, "rm:lock", json!({"name": "q", "ttl_ms": 60_000})).await);
    let mut waiting = Vec::new();
    for n in 1..=3 {
        waiting.push(spawn_run(&r, "rm:lock", json!({"name": "q", "ttl_ms": 60_000, "wait_ms": 20_000})));
        until_queued(&r, LOCK_TYPE, "q", n).await;
    }
    // A caller trying once does not jump the queue.
    assert_eq!(ok(&r, "rm:lock", json!({"name": "q", "ttl_ms": 10})).await["acquired"], json!(false));
    // Each caller, in turn, gets the next token: the first to come, first.
    let mut holder = t1;
    for (n, call) in waiting.into_iter().enumerate() {
        ok(&r, "rm:lock", json!({"unlock": "q", "token": holder})).await;
        let got = joined(call).await.outcome.unwrap();
        let next = token(&got);
        assert!(next > holder, "caller {n} got {got} after {holder}");
        holder = next;
        // The ones after it still wait.
        let state = owner_state(&r, LOCK_TYPE, "q");
        assert_eq!(state["queue"].as_array().map_or(0, Vec::len), 2 - n, "{state}");
    }
    ok(&r, "rm:lock", json!({"unlock": "q", "token": holder})).await;
    assert_eq!(owner_state(&r, LOCK_TYPE, "q"), json!({"fence": holder}));
}

#[tokio::test]
async fn a_wait_ends_at_wait_ms_or_before_the_deadline_without_the_lock() {
    let r = reactor();
    token(&ok(&r, "rm:lock", json!({"name": "busy", "ttl_ms": 60_000})).await);
    let started = Instant::now();
    let gave_up = ok(&r, "rm:lock", json!({"name": "busy", "ttl_ms": 100, "wait_ms": 150})).await;
    assert_eq!(gave_up, json!({"acquired": false, "token": null, "expires_at": null}));
    assert!(started.elapsed() >= Duration::from_millis(140), "gave up after {:?}", started.elapsed());
    // wait_ms past the packet's deadline: the element answers before it
    // (past it, the reactor would have answered PF408).
    let bounded =
        run_within(&r, "rm:lock", json!({"name": "busy", "ttl_ms": 100, "wait_ms": 60_000}), 300).await;
    assert_eq!(bounded.outcome, Ok(json!({"acquired": false, "token": null, "expires_at": null})));
    // No waiter is left behind, and the queue empties as their time ends.
    let deadline = Instant::now() + WAIT;
    while !r.actors().active_ids(super::waiter::WAITER_TYPE).is_empty() {
        assert!(Instant::now() < deadline, "waiters left");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_grant_its_waiter_cannot_take_goes_to_the_next() {
    let r = reactor();
    let t1 = token(&ok(&r, "rm:lock", json!({"name": "g", "ttl_ms": 60_000})).await);
    // Two calls queue; the first one is cancelled (its caller goes).
    let first = spawn_run(&r, "rm:lock", json!({"name": "g", "ttl_ms": 60_000, "wait_ms": 20_000}));
    until_queued(&r, LOCK_TYPE, "g", 1).await;
    let second = spawn_run(&r, "rm:lock", json!({"name": "g", "ttl_ms": 60_000, "wait_ms": 20_000}));
    until_queued(&r, LOCK_TYPE, "g", 2).await;
    first.abort();
    let _ = first.await;
    ok(&r, "rm:lock", json!({"unlock": "g", "token": t1})).await;
    // The first one's grant came back; the second got the next token.
    let got = joined(second).await.outcome.unwrap();
    let t3 = token(&got);
    assert!(t3 > t1 + 1, "{got}");
    // The given-back grant is not the holder's: unlocking under it is PF409.
    assert_eq!(failure(&run(&r, "rm:lock", json!({"unlock": "g", "token": t3 - 1})).await).0, "PF409");
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "g", "token": t3})).await, json!({"released": true}));
}

#[tokio::test]
async fn a_full_queue_is_pf429() {
    let r = reactor();
    let entry = json!({"waiter": "w", "turn": "t", "expires_at": u64::MAX, "lock_ttl_ms": 1});
    let state = json!({
        "fence": 1,
        "held_until": u64::MAX,
        "queue": vec![entry; 10_000],
    });
    r.actors().create(LOCK_TYPE, Some("full"), state).await.unwrap();
    let result = run(&r, "rm:lock", json!({"name": "full", "ttl_ms": 10, "wait_ms": 1000})).await;
    assert_eq!(
        failure(&result),
        ("PF429".into(), "rm:lock: 10000 calls wait for lock \"full\" already".into())
    );
}

#[tokio::test]
async fn the_fence_survives_a_restart_on_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let last = {
        let r = Reactor::default();
        r.actors().set_store(Arc::new(FileStore::open(&path).unwrap())).unwrap();
        r.enable_stdlib(&StdlibPatterns::parse("rm:lock").unwrap());
        let mut last = 0;
        for _ in 0..3 {
            last = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await);
            ok(&r, "rm:lock", json!({"unlock": "db", "token": last})).await;
        }
        // Held when the node stops: still held after it comes back.
        let held = token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await);
        assert!(held > last);
        r.stop();
        held
    };
    let r = Reactor::default();
    r.actors().set_store(Arc::new(reopen(&path).await)).unwrap();
    r.enable_stdlib(&StdlibPatterns::parse("rm:lock").unwrap());
    assert_eq!(ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 10})).await["acquired"], json!(false));
    assert_eq!(ok(&r, "rm:lock", json!({"unlock": "db", "token": last})).await, json!({"released": true}));
    assert!(token(&ok(&r, "rm:lock", json!({"name": "db", "ttl_ms": 10})).await) > last);
}

fn lease(answer: &Value) -> String {
    assert!(answer["expires_at"].is_u64(), "{answer}");
    answer["lease_id"].as_str().unwrap_or_else(|| panic!("no lease in {answer}")).to_owned()
}

#[tokio::test]
async fn alloc_leases_units_up_to_the_capacity_and_free_gives_them_back() {
    let r = reactor();
    let a = lease(&ok(&r, "rm:alloc", json!({"resource": "gpu", "capacity": 3, "ttl_ms": 60_000})).await);
    assert!(a.ends_with("@gpu"), "{a}");
    // Later allocs may omit the capacity, or name the same.
    let b = lease(&ok(&r, "rm:alloc", json!({"resource": "gpu", "amount": 2, "ttl_ms": 60_000})).await);
    assert_ne!(a, b);
    // Full: a third waits until units come free.
    let waiting = spawn_run(&r, "rm:alloc", json!({"resource": "gpu", "capacity": 3, "ttl_ms": 60_000}));
    until_queued(&r, RESOURCE_TYPE, "gpu", 1).await;
    assert_eq!(ok(&r, "rm:free", json!({"lease_id": a})).await, json!({"freed": true}));
    let c = lease(&joined(waiting).await.outcome.unwrap());
    // Freeing again, or a lease of a resource nobody named, frees nothing.
    assert_eq!(ok(&r, "rm:free", json!({"lease_id": a})).await, json!({"freed": false}));
    assert_eq!(ok(&r, "rm:free", json!({"lease_id": "1.abcd@nothing"})).await, json!({"freed": false}));
    assert!(r.actors().active_ids(RESOURCE_TYPE).iter().all(|id| id != "nothing"));
    // A lease id of another epoch (a resource whose state was lost).
    let (number, rest) = b.split_once('.').unwrap();
    let other_epoch = format!("{number}.zzzzzzzz{}", &rest[rest.find('@').unwrap()..]);
    assert_eq!(ok(&r, "rm:free", json!({"lease_id": other_epoch})).await, json!({"freed": false}));
    for id in [b, c] {
        assert_eq!(ok(&r, "rm:free", json!({"lease_id": id})).await, json!({"freed": true}));
    }
    let state = owner_state(&r, RESOURCE_TYPE, "gpu");
    assert_eq!((state["capacity"].clone(), state["leases"].clone()), (json!(3), json!({})), "{state}");
}

#[tokio::test]
async fn alloc_errors_name_the_capacity() {
    let r = reactor();
    let first = run(&r, "rm:alloc", json!({"resource": "gpu", "ttl_ms": 10})).await;
    assert_eq!(
        failure(&first),
        (
            "PF400".into(),
            "rm:alloc: capacity is required: resource \"gpu\" has none yet (its first alloc sets it)".into()
        )
    );
    lease(&ok(&r, "rm:alloc", json!({"resource": "gpu", "capacity": 2, "ttl_ms": 10})).await);
    let other = run(&r, "rm:alloc", json!({"resource": "gpu", "capacity": 4, "ttl_ms": 10})).await;
    assert_eq!(
        failure(&other),
        (
            "PF409".into(),
            "rm:alloc: capacity 4 is not resource \"gpu\"'s: its first alloc set it to 2".into()
        )
    );
    let too_much = run(&r, "rm:alloc", json!({"resource": "gpu", "amount": 3, "ttl_ms": 10})).await;
    assert_eq!(
        failure(&too_much),
        ("PF400".into(), "rm:alloc: amount must be at most resource \"gpu\"'s capacity (2), got 3".into())
    );
}

#[tokio::test]
async fn alloc_waits_until_the_deadline_then_is_pf408() {
    let r = reactor();
    lease(&ok(&r, "rm:alloc", json!({"resource": "one", "capacity": 1, "ttl_ms": 60_000})).await);
    // The element's own PF408, answered before the deadline (the
    // reactor's, at the deadline, says something else).
    let result = run_within(&r, "rm:alloc", json!({"resource": "one", "ttl_ms": 10}), 300).await;
    assert_eq!(
        failure(&result),
        (
            "PF408".into(),
            "rm:alloc: 1 of resource \"one\" did not come free before the deadline (1 of 1 in use when it asked)"
                .into()
        )
    );
}

#[tokio::test]
async fn a_lease_ends_at_its_ttl_and_the_next_caller_gets_its_units() {
    let r = reactor();
    lease(&ok(&r, "rm:alloc", json!({"resource": "slot", "capacity": 2, "amount": 2, "ttl_ms": 150})).await);
    let started = Instant::now();
    let got = ok(&r, "rm:alloc", json!({"resource": "slot", "amount": 2, "ttl_ms": 60_000})).await;
    lease(&got);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_large_request_first_in_line_is_not_passed_over() {
    let r = reactor();
    let held = lease(&ok(&r, "rm:alloc", json!({"resource": "r", "capacity": 3, "ttl_ms": 60_000})).await);
    let big = spawn_run(&r, "rm:alloc", json!({"resource": "r", "amount": 3, "ttl_ms": 60_000}));
    until_queued(&r, RESOURCE_TYPE, "r", 1).await;
    // Two units are free, but the call first in line wants three.
    let small = spawn_run(&r, "rm:alloc", json!({"resource": "r", "amount": 1, "ttl_ms": 60_000}));
    until_queued(&r, RESOURCE_TYPE, "r", 2).await;
    ok(&r, "rm:free", json!({"lease_id": held})).await;
    let big = lease(&joined(big).await.outcome.unwrap());
    until_queued(&r, RESOURCE_TYPE, "r", 1).await;
    assert!(!small.is_finished());
    ok(&r, "rm:free", json!({"lease_id": big})).await;
    lease(&joined(small).await.outcome.unwrap());
}

#[tokio::test]
async fn the_calls_behind_a_first_one_that_gave_up_get_their_units() {
    let r = reactor();
    lease(&ok(&r, "rm:alloc", json!({"resource": "r", "capacity": 3, "ttl_ms": 60_000})).await);
    let big = {
        let r = r.clone();
        tokio::spawn(async move {
            run_within(&r, "rm:alloc", json!({"resource": "r", "amount": 3, "ttl_ms": 60_000}), 300).await
        })
    };
    until_queued(&r, RESOURCE_TYPE, "r", 1).await;
    let small = spawn_run(&r, "rm:alloc", json!({"resource": "r", "amount": 1, "ttl_ms": 60_000}));
    until_queued(&r, RESOURCE_TYPE, "r", 2).await;
    assert_eq!(failure(&joined(big).await).0, "PF408");
    // Nobody frees anything: the first call's wait ending lets the next in.
    lease(&joined(small).await.outcome.unwrap());
}

#[tokio::test]
async fn too_many_leases_is_pf429() {
    let r = reactor();
    let leases: serde_json::Map<String, Value> =
        (1..=10_000).map(|n| (n.to_string(), json!({"amount": 1, "expires_at": u64::MAX}))).collect();
    let state = json!({"capacity": 20_000, "epoch": "e", "next": 10_000, "leases": leases});
    r.actors().create(RESOURCE_TYPE, Some("many"), state).await.unwrap();
    let result = run(&r, "rm:alloc", json!({"resource": "many", "ttl_ms": 10})).await;
    assert_eq!(
        failure(&result),
        ("PF429".into(), "rm:alloc: resource \"many\" has 10000 leases out already; free some first".into())
    );
    // Freeing one makes room.
    assert_eq!(ok(&r, "rm:free", json!({"lease_id": "7.e@many"})).await, json!({"freed": true}));
    lease(&ok(&r, "rm:alloc", json!({"resource": "many", "ttl_ms": 10})).await);
}
