//! `rm:cache` and `ed:watch` on one reactor (across nodes:
//! tests/tests/stdlib.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::time::{Duration, Instant};

use super::cache::{MAX_ENTRIES, MAX_WATCHES_PER_KEY};
use super::test_support::{failure, joined, ok, run, spawn_run, step, Seen, WAIT};
use super::*;
use crate::packet::Packet;
use crate::result::PacketResult;

/// A step that counts its calls and answers once let go (`release`).
#[derive(Clone)]
struct Held {
    calls: Arc<AtomicUsize>,
    started: Arc<Notify>,
    release: watch::Sender<bool>,
}

impl Held {
    async fn until_called(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let started = self.started.notified();
            if self.calls.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::timeout_at(deadline, started).await.expect("the step was not called");
        }
    }
}

/// A reactor with every standard element and `df:seen` (records its data),
/// `df:fail` (PF500), `df:missing` (PF404), `df:load` (answers
/// `{"loaded": data}`) and `df:held` (see [`Held`]).
fn reactor() -> (Reactor, Seen, Held) {
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::all());
    let seen = Seen::default();
    seen.register(&r);
    r.register_sync("df", "fail", |_, _| Err(PfError::new(ErrorCode::HandlerFailed, "boom"))).unwrap();
    r.register_sync("df", "missing", |_, _| Err(PfError::new(ErrorCode::NotFound, "no such row"))).unwrap();
    r.register_sync("df", "load", |d, _| Ok(json!({"loaded": d}))).unwrap();
    let held = Held { calls: Arc::default(), started: Arc::default(), release: watch::channel(false).0 };
    let h = held.clone();
    r.register("df", "held", move |d, _| {
        let h = h.clone();
        async move {
            let n = h.calls.fetch_add(1, Ordering::SeqCst) + 1;
            h.started.notify_waiters();
            let mut release = h.release.subscribe();
            release.wait_for(|go| *go).await.map_err(|_| PfError::failed("released never"))?;
            if d["fail"] == json!(true) {
                return Err(PfError::new(ErrorCode::NotFound, format!("call {n} found nothing")));
            }
            Ok(json!({"call": n, "got": d}))
        }
    })
    .unwrap();
    (r, seen, held)
}

async fn cache(r: &Reactor, data: Value) -> Value {
    ok(r, "rm:cache", data).await
}

/// Runs `data` as an `rm:cache` packet of its own task.
fn spawn_cache(r: &Reactor, data: Value) -> tokio::task::JoinHandle<PacketResult> {
    spawn_run(r, "rm:cache", data)
}

/// Waits until `n` callers wait for the step running for `key`.
async fn until_waiting(r: &Reactor, key: &str, n: usize) {
    let cache = super::cache::node_cache(r);
    let deadline = Instant::now() + WAIT;
    while cache.waiting(key) < n {
        assert!(Instant::now() < deadline, "{} callers wait, not {n}", cache.waiting(key));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_field() {
    let (r, seen, held) = reactor();
    let long = "k".repeat(129);
    let big = "x".repeat(1 << 20);
    let cases = [
        ("rm:cache", json!("get"), "rm:cache: data must be an object, got a string"),
        ("rm:cache", json!({"key": "k"}), "rm:cache: op is required (get, set, del or get_or_call)"),
        (
            "rm:cache",
            json!({"op": "put", "key": "k"}),
            "rm:cache: op must be one of get, set, del, get_or_call, got \"put\"",
        ),
        ("rm:cache", json!({"op": 1, "key": "k"}), "rm:cache: op must be a string, got a number"),
        ("rm:cache", json!({"op": "get"}), "rm:cache: key is required"),
        (
            "rm:cache",
            json!({"op": "get", "key": ""}),
            "rm:cache: key must be a string of 1-128 bytes, got 0 bytes",
        ),
        (
            "rm:cache",
            json!({"op": "get", "key": long}),
            "rm:cache: key must be a string of 1-128 bytes, got 129 bytes",
        ),
        ("rm:cache", json!({"op": "get", "key": 5}), "rm:cache: key must be a string, got a number"),
        ("rm:cache", json!({"op": "get", "key": "k", "value": 1}), "rm:cache: value is not taken by op get"),
        (
            "rm:cache",
            json!({"op": "del", "key": "k", "ttl_ms": 5}),
            "rm:cache: ttl_ms is not taken by op del",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k", "value": 1, "step": step("load")}),
            "rm:cache: step is not taken by op set",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k"}),
            "rm:cache: value is required (null is not a value: op del removes a key)",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k", "value": null}),
            "rm:cache: value is required (null is not a value: op del removes a key)",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k", "value": big}),
            "rm:cache: value must be at most 1048576 bytes as JSON",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k", "value": 1, "ttl_ms": 0}),
            "rm:cache: ttl_ms must be an integer 1-31536000000, got 0",
        ),
        (
            "rm:cache",
            json!({"op": "set", "key": "k", "value": 1, "ttl_ms": "5"}),
            "rm:cache: ttl_ms must be an integer 1-31536000000, got \"5\"",
        ),
        ("rm:cache", json!({"op": "get_or_call", "key": "k", "ttl_ms": 5}), "rm:cache: step is required"),
        (
            "rm:cache",
            json!({"op": "get_or_call", "key": "k", "step": step("load")}),
            "rm:cache: ttl_ms is required (1-31536000000)",
        ),
        (
            "rm:cache",
            json!({"op": "get_or_call", "key": "k", "ttl_ms": 5, "step": {"group": "df"}}),
            "rm:cache: step.element is required",
        ),
        (
            "rm:cache",
            json!({"op": "get_or_call", "key": "k", "ttl_ms": 5, "step": step("load"), "value": 1}),
            "rm:cache: value is not taken by op get_or_call",
        ),
        ("ed:watch", json!(7), "ed:watch: data must be an object, got a number"),
        ("ed:watch", json!({"do": step("seen")}), "ed:watch: key is required"),
        (
            "ed:watch",
            json!({"key": long, "do": step("seen")}),
            "ed:watch: key must be a string of 1-128 bytes, got 129 bytes",
        ),
        ("ed:watch", json!({"key": "k"}), "ed:watch: do is required"),
        (
            "ed:watch",
            json!({"key": "k", "do": "df:seen"}),
            "ed:watch: do must be a step object {group, element, ...}, got a string",
        ),
        ("ed:watch", json!({"cancel": 3}), "ed:watch: cancel must be a string, got a number"),
        ("ed:watch", json!({"cancel": "w", "key": "k"}), "ed:watch: cancel is given alone (with no key)"),
        (
            "ed:watch",
            json!({"cancel": "not-a-watch"}),
            "ed:watch: cancel must be a watch_id as ed:watch answered it, got \"not-a-watch\"",
        ),
    ];
    for (key, data, expected) in cases {
        let res = run(&r, key, data.clone()).await;
        assert_eq!(failure(&res), ("PF400".to_string(), expected.to_string()), "{key} {data}");
    }
    assert_eq!(seen.count(), 0, "nothing ran for a bad input");
    assert_eq!(held.calls.load(Ordering::SeqCst), 0);
    let stats = r.cache_stats();
    assert_eq!((stats.entries, stats.watches, stats.hits, stats.misses), (0, 0, 0, 0), "{stats:?}");
    assert!(r.actors().active_ids("pf.cache").is_empty());
}

#[tokio::test]
async fn set_get_and_del_answer_what_was_there_and_the_revision() {
    let (r, _, _) = reactor();
    assert_eq!(
        cache(&r, json!({"op": "get", "key": "k"})).await,
        json!({"hit": false, "value": null, "revision": null})
    );
    let first = cache(&r, json!({"op": "set", "key": "k", "value": {"a": 1}})).await;
    assert_eq!((first["hit"].clone(), first["value"].clone()), (json!(false), Value::Null), "{first}");
    let r1 = first["revision"].as_u64().unwrap();
    let got = cache(&r, json!({"op": "get", "key": "k"})).await;
    assert_eq!(got, json!({"hit": true, "value": {"a": 1}, "revision": r1}));
    let second = cache(&r, json!({"op": "set", "key": "k", "value": [2]})).await;
    assert_eq!((second["hit"].clone(), second["value"].clone()), (json!(true), json!({"a": 1})));
    let r2 = second["revision"].as_u64().unwrap();
    assert!(r2 > r1, "{r2} after {r1}");
    let deleted = cache(&r, json!({"op": "del", "key": "k"})).await;
    assert_eq!((deleted["hit"].clone(), deleted["value"].clone()), (json!(true), json!([2])));
    assert!(deleted["revision"].as_u64().unwrap() > r2);
    assert_eq!(cache(&r, json!({"op": "get", "key": "k"})).await["hit"], false);
    // Deleting nothing changes nothing.
    assert_eq!(
        cache(&r, json!({"op": "del", "key": "k"})).await,
        json!({"hit": false, "value": null, "revision": null})
    );
    // A set after a delete still has a later revision.
    let again = cache(&r, json!({"op": "set", "key": "k", "value": 3})).await;
    assert!(again["revision"].as_u64().unwrap() > deleted["revision"].as_u64().unwrap());
    // A key is any string of 1-128 bytes.
    let odd = "ключ:/ *?".repeat(8);
    cache(&r, json!({"op": "set", "key": odd, "value": "x"})).await;
    assert_eq!(cache(&r, json!({"op": "get", "key": odd})).await["value"], "x");
    let stats = r.cache_stats();
    assert_eq!((stats.entries, stats.hits, stats.misses), (2, 2, 2), "{stats:?}");
    // Served here: no actor turn for a key this node owns.
    assert!(r.actors().active_ids("pf.cache").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_entry_expires_at_its_ttl() {
    let (r, _, _) = reactor();
    cache(&r, json!({"op": "set", "key": "short", "value": 1, "ttl_ms": 100})).await;
    cache(&r, json!({"op": "set", "key": "long", "value": 2})).await;
    tokio::time::advance(Duration::from_millis(99)).await;
    assert_eq!(cache(&r, json!({"op": "get", "key": "short"})).await["value"], 1);
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(cache(&r, json!({"op": "get", "key": "short"})).await["hit"], false);
    assert_eq!(cache(&r, json!({"op": "get", "key": "long"})).await["value"], 2);
    // An expired entry is not what a set replaces, nor what a del removes.
    cache(&r, json!({"op": "set", "key": "e", "value": 1, "ttl_ms": 10})).await;
    tokio::time::advance(Duration::from_millis(11)).await;
    assert_eq!(cache(&r, json!({"op": "del", "key": "e"})).await["hit"], false);
    cache(&r, json!({"op": "set", "key": "e", "value": 1, "ttl_ms": 10})).await;
    tokio::time::advance(Duration::from_millis(11)).await;
    assert_eq!(cache(&r, json!({"op": "set", "key": "e", "value": 2})).await["hit"], false);
    let stats = r.cache_stats();
    assert_eq!((stats.expirations, stats.entries), (3, 2), "{stats:?}");
}

#[tokio::test]
async fn the_least_recently_used_entry_goes_first_past_the_bounds() {
    let (r, _, _) = reactor();
    for i in 0..MAX_ENTRIES {
        cache(&r, json!({"op": "set", "key": format!("k{i}"), "value": i})).await;
    }
    // k0 is used again: k1 is now the least recently used.
    assert_eq!(cache(&r, json!({"op": "get", "key": "k0"})).await["value"], 0);
    cache(&r, json!({"op": "set", "key": "one-more", "value": true})).await;
    assert_eq!(cache(&r, json!({"op": "get", "key": "k1"})).await["hit"], false);
    assert_eq!(cache(&r, json!({"op": "get", "key": "k0"})).await["hit"], true);
    assert_eq!(cache(&r, json!({"op": "get", "key": "one-more"})).await["hit"], true);
    let stats = r.cache_stats();
    assert_eq!((stats.entries, stats.evictions), (MAX_ENTRIES as u64, 1), "{:?}", stats);
    for i in 0..MAX_ENTRIES {
        cache(&r, json!({"op": "del", "key": format!("k{i}")})).await;
    }
    // The byte bound: 64 MiB of values of almost 1 MiB each.
    let big = "v".repeat((1 << 20) - 16);
    for i in 0..65 {
        cache(&r, json!({"op": "set", "key": format!("big{i}"), "value": big})).await;
    }
    let stats = r.cache_stats();
    assert!(stats.bytes <= 64 << 20, "{stats:?}");
    assert_eq!(cache(&r, json!({"op": "get", "key": "big0"})).await["hit"], false);
    assert_eq!(cache(&r, json!({"op": "get", "key": "big64"})).await["hit"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_call_runs_one_step_for_callers_that_miss_together() {
    let (r, _, held) = reactor();
    let request = json!({"op": "get_or_call", "key": "user:7", "ttl_ms": 60_000, "step": step("held")});
    let first = spawn_cache(&r, request.clone());
    held.until_called(1).await;
    let others: Vec<_> = (0..4).map(|_| spawn_cache(&r, request.clone())).collect();
    // The others wait for the one call: let them reach it first.
    until_waiting(&r, "user:7", 4).await;
    held.release.send_replace(true);
    let expected = json!({"call": 1, "got": {"key": "user:7"}});
    let lead = joined(first).await.outcome.unwrap();
    assert_eq!((lead["hit"].clone(), lead["value"].clone()), (json!(false), expected.clone()));
    for other in others {
        let answer = joined(other).await.outcome.unwrap();
        assert_eq!(answer, lead, "every caller gets the one value and its revision");
    }
    assert_eq!(held.calls.load(Ordering::SeqCst), 1);
    // Stored: later calls hit, and get sees it.
    let hit = cache(&r, request.clone()).await;
    assert_eq!(hit, json!({"hit": true, "value": expected, "revision": lead["revision"]}));
    assert_eq!(cache(&r, json!({"op": "get", "key": "user:7"})).await["value"], expected);
    assert_eq!(held.calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.cache_stats().step_calls, 1);
    // A step with data of its own is called with it.
    let own = json!({"op": "get_or_call", "key": "cfg", "ttl_ms": 1000,
        "step": {"group": "df", "element": "load", "data": "cfg.toml"}});
    assert_eq!(cache(&r, own).await["value"], json!({"loaded": "cfg.toml"}));
}

#[tokio::test]
async fn a_failed_step_is_not_stored_and_keeps_its_code() {
    let (r, _, _) = reactor();
    let res = run(
        &r,
        "rm:cache",
        json!({"op": "get_or_call", "key": "k", "ttl_ms": 1000, "step": step("missing")}),
    )
    .await;
    assert_eq!(
        failure(&res),
        ("PF404".to_string(), "rm:cache get_or_call step (df:missing) failed: no such row".to_string())
    );
    let res =
        run(&r, "rm:cache", json!({"op": "get_or_call", "key": "k", "ttl_ms": 1000, "step": step("fail")}))
            .await;
    assert_eq!(
        failure(&res),
        ("PF500".to_string(), "rm:cache get_or_call step (df:fail) failed: boom".to_string())
    );
    assert_eq!(cache(&r, json!({"op": "get", "key": "k"})).await["hit"], false);
    let loaded =
        cache(&r, json!({"op": "get_or_call", "key": "k", "ttl_ms": 1000, "step": step("load")})).await;
    assert_eq!(loaded["value"], json!({"loaded": {"key": "k"}}));
    assert_eq!(r.cache_stats().step_calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_for_a_step_answer_pf408_at_their_deadline_or_share_its_failure() {
    let (r, _, held) = reactor();
    let request = json!({"op": "get_or_call", "key": "slow", "ttl_ms": 1000, "step": step("held")});
    let first = spawn_cache(&r, request.clone());
    held.until_called(1).await;
    let mut short = Packet::build("rm", "cache", request.clone()).unwrap();
    short.timeout_ms = Some(100);
    let started = Instant::now();
    let res = r.submit(short).await;
    assert_eq!(
        failure(&res),
        (
            "PF408".to_string(),
            "rm:cache: the step running for key \"slow\" did not end before the deadline".to_string()
        )
    );
    assert!(started.elapsed() >= Duration::from_millis(90), "{:?}", started.elapsed());
    held.release.send_replace(true);
    assert!(joined(first).await.is_success());
    assert_eq!(held.calls.load(Ordering::SeqCst), 1);

    // The leader's own deadline ends its step: PF408, not stored.
    held.release.send_replace(false);
    let mut leader = Packet::build(
        "rm",
        "cache",
        json!({"op": "get_or_call", "key": "late", "ttl_ms": 1000, "step": step("held")}),
    )
    .unwrap();
    leader.timeout_ms = Some(100);
    let res = r.submit(leader).await;
    assert_eq!(failure(&res).0, "PF408", "{res:?}");
    assert_eq!(cache(&r, json!({"op": "get", "key": "late"})).await["hit"], false);

    // A failure reaches every caller that waited for it, with its code.
    let failing = json!({"op": "get_or_call", "key": "f", "ttl_ms": 1000,
        "step": {"group": "df", "element": "held", "data": {"fail": true}}});
    let calls = held.calls.load(Ordering::SeqCst);
    let lead = spawn_cache(&r, failing.clone());
    held.until_called(calls + 1).await;
    let follower = spawn_cache(&r, failing);
    until_waiting(&r, "f", 1).await;
    held.release.send_replace(true);
    let expected = (
        "PF404".to_string(),
        format!("rm:cache get_or_call step (df:held) failed: call {} found nothing", calls + 1),
    );
    assert_eq!(failure(&joined(lead).await), expected);
    assert_eq!(failure(&joined(follower).await), expected);
    assert_eq!(held.calls.load(Ordering::SeqCst), calls + 1);
    assert_eq!(cache(&r, json!({"op": "get", "key": "f"})).await["hit"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_takes_over_from_a_cancelled_one() {
    let (r, _, held) = reactor();
    let request = json!({"op": "get_or_call", "key": "k", "ttl_ms": 1000, "step": step("held")});
    let packet = Packet::build("rm", "cache", request.clone()).unwrap();
    let lead_id = packet.id.clone();
    let lead = {
        let r = r.clone();
        tokio::spawn(async move { r.submit(packet).await })
    };
    held.until_called(1).await;
    let follower = spawn_cache(&r, request.clone());
    until_waiting(&r, "k", 1).await;
    assert!(r.cancel(&lead_id));
    assert_eq!(failure(&joined(lead).await).0, "PF499");
    held.until_called(2).await;
    held.release.send_replace(true);
    let answer = joined(follower).await.outcome.unwrap();
    assert_eq!(answer["value"], json!({"call": 2, "got": {"key": "k"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_while_a_step_runs_wins_over_the_steps_value() {
    let (r, _, held) = reactor();
    let request = json!({"op": "get_or_call", "key": "k", "ttl_ms": 1000, "step": step("held")});
    let lead = spawn_cache(&r, request);
    held.until_called(1).await;
    cache(&r, json!({"op": "set", "key": "k", "value": "newer"})).await;
    held.release.send_replace(true);
    let answer = joined(lead).await.outcome.unwrap();
    assert_eq!((answer["value"]["call"].clone(), answer["revision"].clone()), (json!(1), Value::Null));
    assert_eq!(cache(&r, json!({"op": "get", "key": "k"})).await["value"], "newer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_change_of_its_key_until_cancelled() {
    let (r, seen, _) = reactor();
    let watch = ok(&r, "ed:watch", json!({"key": "k", "do": step("seen")})).await;
    let watch_id = watch["watch_id"].as_str().unwrap().to_owned();
    assert!(watch_id.ends_with(":k"), "{watch_id}");
    ok(&r, "ed:watch", json!({"key": "other", "do": step("seen")})).await;
    let set = cache(&r, json!({"op": "set", "key": "k", "value": 1})).await;
    seen.until(1).await;
    assert_eq!(seen.all()[0], json!({"key": "k", "value": 1, "revision": set["revision"], "change": "set"}));
    let del = cache(&r, json!({"op": "del", "key": "k"})).await;
    seen.until(2).await;
    assert_eq!(
        seen.all()[1],
        json!({"key": "k", "value": null, "revision": del["revision"], "change": "del"})
    );
    // A del of nothing is no change.
    cache(&r, json!({"op": "del", "key": "k"})).await;
    // get_or_call's stored value is a change too.
    let loaded =
        cache(&r, json!({"op": "get_or_call", "key": "k", "ttl_ms": 5000, "step": step("load")})).await;
    seen.until(3).await;
    assert_eq!(seen.all()[2]["revision"], loaded["revision"]);
    assert_eq!(seen.all()[2]["value"], json!({"loaded": {"key": "k"}}));
    assert_eq!(ok(&r, "ed:watch", json!({"cancel": watch_id})).await, json!({"cancelled": true}));
    assert_eq!(ok(&r, "ed:watch", json!({"cancel": watch_id})).await, json!({"cancelled": false}));
    cache(&r, json!({"op": "set", "key": "k", "value": 2})).await;
    // The set on the other watched key is seen after it, and nothing else.
    cache(&r, json!({"op": "set", "key": "other", "value": 3})).await;
    seen.until(4).await;
    assert_eq!(seen.all()[3]["key"], "other");
    assert_eq!(seen.count(), 4);
    let stats = r.cache_stats();
    assert_eq!((stats.watches, stats.watch_calls, stats.watch_failures), (1, 4, 0), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_watch_sees_its_key_expire() {
    let (r, seen, _) = reactor();
    cache(&r, json!({"op": "set", "key": "k", "value": 1, "ttl_ms": 500})).await;
    ok(&r, "ed:watch", json!({"key": "k", "do": step("seen")})).await;
    cache(&r, json!({"op": "set", "key": "k", "value": 2, "ttl_ms": 1000})).await;
    seen.until(1).await;
    // Past the first expiry the newer entry stays; past its own it goes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(cache(&r, json!({"op": "get", "key": "k"})).await["value"], 2);
    assert_eq!(seen.count(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen.until(2).await;
    let expired = seen.all()[1].clone();
    assert_eq!((expired["value"].clone(), expired["change"].clone()), (Value::Null, json!("expire")));
    assert_eq!(r.cache_stats().entries, 0, "gone without a get");
    // A newer entry that expires sooner than the timer running for the
    // key is told at its own expiry.
    cache(&r, json!({"op": "set", "key": "k", "value": 3, "ttl_ms": 10_000})).await;
    cache(&r, json!({"op": "set", "key": "k", "value": 4, "ttl_ms": 100})).await;
    seen.until(4).await;
    let started = Instant::now();
    seen.until(5).await;
    assert!(started.elapsed() < Duration::from_millis(1000), "told at {:?}", started.elapsed());
    assert_eq!(seen.all()[4]["change"], "expire");
    assert_eq!(r.cache_stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_does_not_fail_the_change_and_is_counted() {
    let (r, seen, _) = reactor();
    ok(&r, "ed:watch", json!({"key": "k", "do": step("fail")})).await;
    ok(&r, "ed:watch", json!({"key": "k", "do": {"group": "df", "element": "seen", "data": "own"}})).await;
    let set = cache(&r, json!({"op": "set", "key": "k", "value": 1})).await;
    assert!(set["revision"].is_u64());
    seen.until(1).await;
    assert_eq!(seen.all(), vec![json!("own")]);
    let deadline = Instant::now() + WAIT;
    while r.cache_stats().watch_failures < 1 {
        assert!(Instant::now() < deadline, "{:?}", r.cache_stats());
        tokio::task::yield_now().await;
    }
    assert_eq!(r.cache_stats().watch_calls, 2);
}

#[tokio::test]
async fn a_key_takes_a_bounded_number_of_watches() {
    let (r, _, _) = reactor();
    for _ in 0..MAX_WATCHES_PER_KEY {
        ok(&r, "ed:watch", json!({"key": "k", "do": step("seen")})).await;
    }
    let res = run(&r, "ed:watch", json!({"key": "k", "do": step("seen")})).await;
    assert_eq!(
        failure(&res),
        ("PF429".to_string(), "ed:watch: key \"k\" has 1000 watches already; cancel some first".to_string())
    );
    ok(&r, "ed:watch", json!({"key": "k2", "do": step("seen")})).await;
}

#[tokio::test]
async fn a_routed_request_is_served_by_a_pf_cache_turn_that_keeps_nothing() {
    // What a node that owns a key runs for a request another node sent.
    let (r, _, _) = reactor();
    let actor = crate::actor::ActorRef::new("pf.cache", "k").unwrap();
    let actors = r.actors();
    let set = actors.send(&actor, json!({"type": "set", "op": "set", "key": "k", "value": 5})).await.unwrap();
    assert_eq!(set["hit"], false);
    assert_eq!(cache(&r, json!({"op": "get", "key": "k"})).await["value"], 5);
    let got = actors.send(&actor, json!({"type": "get", "op": "get", "key": "k"})).await.unwrap();
    assert_eq!(got["value"], 5);
    let wrong = actors.send(&actor, json!({"type": "get", "op": "get", "key": "other"})).await;
    assert_eq!(
        wrong.unwrap_err().message,
        "rm:cache: key must be the id of the pf.cache actor it is sent to"
    );
    let bad = actors.send(&actor, json!({"type": "watch", "id": "x"})).await.unwrap_err();
    assert_eq!(bad.message, "ed:watch: id must be a watch id <uuid>:<key> of this key, got \"x\"");
    let deadline = Instant::now() + WAIT;
    while !actors.active_ids("pf.cache").is_empty() {
        assert!(Instant::now() < deadline, "{:?}", actors.active_ids("pf.cache"));
        tokio::task::yield_now().await;
    }
}
