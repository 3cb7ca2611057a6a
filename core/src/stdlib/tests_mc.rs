//! `mc:spawn`, `mc:scale` and `mc:tune` on one reactor, and the `pf.no_mc`
//! mark that keeps the calls of a packet whose token lacks `mc:*` away from
//! them (the tokens themselves: tests/tests/auth.rs).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Duration, Instant};

use super::test_support::{failure, ok, run, WAIT};
use super::*;
use crate::actor::Reply;
use crate::packet::{Packet, Priority};
use crate::reactor::Setting;
use crate::result::PacketResult;

/// A handler that holds each call until the test lets one go, and records
/// when calls start and end.
#[derive(Clone)]
struct Hold {
    events: Arc<Mutex<Vec<String>>>,
    running: Arc<Mutex<(usize, usize)>>,
    changed: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Hold {
    fn new() -> Hold {
        Hold {
            events: Arc::default(),
            running: Arc::default(),
            changed: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    /// Registers it as `df:<element>` (an async handler), answering its data.
    fn register(&self, r: &Reactor, element: &str) {
        let hold = self.clone();
        r.register("df", element, move |data, _| {
            let hold = hold.clone();
            async move {
                let name = data.as_str().unwrap_or("?").to_owned();
                hold.note(format!("start {name}"), 1);
                hold.release.acquire().await.expect("never closed").forget();
                hold.note(format!("end {name}"), -1);
                Ok(data)
            }
        })
        .unwrap();
    }

    fn note(&self, event: String, step: isize) {
        {
            let mut running = self.running.lock();
            running.0 = running.0.checked_add_signed(step).unwrap();
            running.1 = running.1.max(running.0);
        }
        self.events.lock().push(event);
        self.changed.notify_waiters();
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().clone()
    }

    /// Most calls that ran at once so far.
    fn most_at_once(&self) -> usize {
        self.running.lock().1
    }

    /// Waits until `check` holds of the events.
    async fn until(&self, what: &str, check: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            if check(&self.events()) {
                return;
            }
            tokio::time::timeout_at(deadline, changed)
                .await
                .unwrap_or_else(|_| panic!("{what}: never happened; events {:?}", self.events()));
        }
    }

    async fn until_started(&self, n: usize) {
        self.until(&format!("{n} started"), |e| e.iter().filter(|e| e.starts_with("start")).count() >= n)
            .await;
    }
}

fn reactor() -> Reactor {
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::all());
    r
}

/// Submits `df:<element>` with `data` in a task of its own.
fn spawn_call(
    r: &Reactor,
    element: &str,
    data: &str,
    priority: i64,
) -> tokio::task::JoinHandle<PacketResult> {
    let packet =
        Packet::build("df", element, json!(data)).unwrap().with_priority(Priority::new(priority).unwrap());
    let r = r.clone();
    tokio::spawn(async move { r.submit(packet).await })
}

/// Waits until the reactor reports `n` packets waiting for a slot.
async fn until_queued(r: &Reactor, n: usize) {
    let deadline = Instant::now() + WAIT;
    while r.stats().queued != n {
        assert!(Instant::now() < deadline, "{} queued, not {n}", r.stats().queued);
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_element_and_the_field() {
    let r = reactor();
    let long_id = "x".repeat(129);
    let cases = [
        ("mc:spawn", json!(7), "mc:spawn: data must be an object, got a number"),
        ("mc:spawn", json!({}), "mc:spawn: type is required"),
        ("mc:spawn", json!({"type": 3}), "mc:spawn: type must be a string, got a number"),
        (
            "mc:spawn",
            json!({"type": "a b"}),
            "mc:spawn: type must be 1-58 characters of [A-Za-z0-9_.-], got \"a b\"",
        ),
        (
            "mc:spawn",
            json!({"type": "pf.timer"}),
            "mc:spawn: type \"pf.timer\" is reserved: types starting with \"pf.\" hold the standard elements' state",
        ),
        ("mc:spawn", json!({"type": "counter", "id": 5}), "mc:spawn: id must be a string, got a number"),
        (
            "mc:spawn",
            json!({"type": "counter", "id": long_id}),
            "mc:spawn: id must be a string of 1-128 bytes, got 129 bytes",
        ),
        ("mc:scale", json!([]), "mc:scale: data must be an object, got an array"),
        ("mc:scale", json!({"max_concurrency": 1}), "mc:scale: target is required"),
        (
            "mc:scale",
            json!({"target": "df.x", "max_concurrency": 1}),
            "mc:scale: target must be group:element, got \"df.x\"",
        ),
        (
            "mc:scale",
            json!({"target": "zz:x", "max_concurrency": 1}),
            "mc:scale: target \"zz:x\": group must be one of cf, df, ed, co, mc, rm, got \"zz\"",
        ),
        ("mc:scale", json!({"target": "df:a b", "max_concurrency": 1}), "mc:scale: target \"df:a b\": element"),
        (
            "mc:scale",
            json!({"target": "df:x"}),
            "mc:scale: max_concurrency is required (1-1048576; 0 lifts the limit)",
        ),
        (
            "mc:scale",
            json!({"target": "df:x", "max_concurrency": -1}),
            "mc:scale: max_concurrency must be an integer 0-1048576, got -1",
        ),
        (
            "mc:scale",
            json!({"target": "df:x", "max_concurrency": 1.5}),
            "mc:scale: max_concurrency must be an integer 0-1048576, got 1.5",
        ),
        (
            "mc:scale",
            json!({"target": "df:x", "max_concurrency": 1048577}),
            "mc:scale: max_concurrency must be an integer 0-1048576, got 1048577",
        ),
        (
            "mc:scale",
            json!({"target": "rm:actor.counter", "max_concurrency": 2}),
            "mc:scale: target rm:actor.counter is an actor type: each of its actors runs one turn at a time already",
        ),
        ("mc:tune", json!("x"), "mc:tune: data must be an object, got a string"),
        (
            "mc:tune",
            json!({"value": 1}),
            "mc:tune: setting is required (one of default_timeout_ms, max_inflight, max_queue, \
             actor_passivate_after_ms, busy_poll_us)",
        ),
        (
            "mc:tune",
            json!({"setting": "max_inflights", "value": 1}),
            "mc:tune: setting must be one of default_timeout_ms, max_inflight, max_queue, \
             actor_passivate_after_ms, busy_poll_us, got \"max_inflights\"",
        ),
        ("mc:tune", json!({"setting": 1, "value": 1}), "mc:tune: setting must be a string, got a number"),
        ("mc:tune", json!({"setting": "max_queue"}), "mc:tune: value is required (0-16777216 for max_queue)"),
        (
            "mc:tune",
            json!({"setting": "max_inflight", "value": "8"}),
            "mc:tune: value must be an integer (1-1048576 for max_inflight), got a string",
        ),
        (
            "mc:tune",
            json!({"setting": "max_inflight", "value": 2.5}),
            "mc:tune: value must be an integer (1-1048576 for max_inflight), got 2.5",
        ),
        (
            "mc:tune",
            json!({"setting": "max_inflight", "value": 0}),
            "mc:tune: value must be 1-1048576 for max_inflight, got 0",
        ),
        (
            "mc:tune",
            json!({"setting": "default_timeout_ms", "value": -5}),
            "mc:tune: value must be 1-86400000 for default_timeout_ms, got -5",
        ),
        (
            "mc:tune",
            json!({"setting": "default_timeout_ms", "value": 86400001}),
            "mc:tune: value must be 1-86400000 for default_timeout_ms, got 86400001",
        ),
        (
            "mc:tune",
            json!({"setting": "actor_passivate_after_ms", "value": 99}),
            "mc:tune: value must be 100-86400000 for actor_passivate_after_ms, got 99",
        ),
        (
            "mc:tune",
            json!({"setting": "busy_poll_us", "value": 1000001}),
            "mc:tune: value must be 0-1000000 for busy_poll_us, got 1000001",
        ),
        (
            "mc:tune",
            json!({"setting": "busy_poll_us", "value": 50}),
            "mc:tune: setting busy_poll_us applies to a network node whose connections run on its Tokio \
             runtime; this reactor has none",
        ),
    ];
    for (key, data, says) in cases {
        let (code, message) = failure(&run(&r, key, data.clone()).await);
        assert_eq!(code, "PF400", "{key} {data}: {message}");
        assert!(message.starts_with(says), "{key} {data}:\n  got  {message}\n  want {says}");
    }
    // Nothing was changed by a refused input.
    assert_eq!(r.setting(Setting::MaxInflight), Some(1024));
    assert_eq!(r.concurrency_limit(Group::DataFlow, "x"), None);
}

fn register_counter(r: &Reactor) {
    r.actors()
        .register_fn("counter", |kind, _, state, _| {
            if kind == "add" {
                *state = json!(state.as_i64().unwrap_or(0) + 1);
            }
            Ok(Reply::Value(state.clone()))
        })
        .unwrap();
}

#[tokio::test]
async fn spawn_creates_an_actor_as_a_create_packet_would() {
    let r = reactor();
    register_counter(&r);
    let made = ok(&r, "mc:spawn", json!({"type": "counter", "id": "c1", "state": 41})).await;
    assert_eq!(made, json!({"actor": {"type": "counter", "id": "c1"}}));
    let c1 = crate::actor::ActorRef::new("counter", "c1").unwrap();
    assert_eq!(
        r.actors().send(&c1, json!({"type": "add"})).await,
        Ok(json!(42)),
        "its state is the one given"
    );

    let made = ok(&r, "mc:spawn", json!({"type": "counter"})).await;
    let id = made["actor"]["id"].as_str().expect("an id is made").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let fresh = crate::actor::ActorRef::new("counter", &id).unwrap();
    assert_eq!(r.actors().send(&fresh, json!({"type": "get"})).await, Ok(Value::Null), "state: null");

    let (code, message) = failure(&run(&r, "mc:spawn", json!({"type": "counter", "id": "c1"})).await);
    assert_eq!((code.as_str(), message.as_str()), ("PF409", "mc:spawn: actor counter/c1 already exists"));
    assert_eq!(r.actors().send(&c1, json!({"type": "get"})).await, Ok(json!(42)), "left as it was");

    let (code, message) = failure(&run(&r, "mc:spawn", json!({"type": "nobody", "id": "n"})).await);
    assert_eq!((code.as_str(), message.as_str()), ("PF001", "mc:spawn: no handler for rm:actor.nobody"));
}

#[tokio::test]
async fn scale_to_one_runs_a_keys_packets_one_after_the_other() {
    let r = reactor();
    let hold = Hold::new();
    hold.register(&r, "slow");
    let set = ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 1})).await;
    assert_eq!(set, json!({"previous": null}), "no limit before");
    assert_eq!(r.concurrency_limit(Group::DataFlow, "slow"), Some(1));

    let (a, b) = (spawn_call(&r, "slow", "a", 5), spawn_call(&r, "slow", "b", 5));
    hold.until_started(1).await;
    until_queued(&r, 1).await;
    assert_eq!(hold.events().len(), 1, "the second waits: {:?}", hold.events());
    hold.release.add_permits(1);
    hold.until_started(2).await;
    hold.release.add_permits(1);
    for call in [a, b] {
        assert!(call.await.unwrap().is_success());
    }
    let events = hold.events();
    let first = events[0].strip_prefix("start ").unwrap();
    let second = if first == "a" { "b" } else { "a" };
    let expected = [
        format!("start {first}"),
        format!("end {first}"),
        format!("start {second}"),
        format!("end {second}"),
    ];
    assert_eq!(events, expected);
    assert_eq!(hold.most_at_once(), 1);

    // 0 lifts it: two run at once again.
    assert_eq!(
        ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 0})).await,
        json!({"previous": 1})
    );
    assert_eq!(r.concurrency_limit(Group::DataFlow, "slow"), None);
    let (c, d) = (spawn_call(&r, "slow", "c", 5), spawn_call(&r, "slow", "d", 5));
    hold.until_started(4).await;
    assert_eq!(hold.most_at_once(), 2);
    hold.release.add_permits(2);
    for call in [c, d] {
        assert!(call.await.unwrap().is_success());
    }
    let lifted = ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 0})).await;
    assert_eq!(lifted, json!({"previous": null}), "lifting no limit is no change");
}

#[tokio::test]
async fn waiting_packets_go_by_priority_and_a_lifted_limit_lets_them_all_run() {
    let r = reactor();
    let hold = Hold::new();
    // Set before the handler exists: it applies once it is registered.
    ok(&r, "mc:scale", json!({"target": "df:later", "max_concurrency": 1})).await;
    hold.register(&r, "later");
    let first = spawn_call(&r, "later", "first", 5);
    hold.until_started(1).await;
    let low = spawn_call(&r, "later", "low", 1);
    until_queued(&r, 1).await;
    let high = spawn_call(&r, "later", "high", 10);
    until_queued(&r, 2).await;
    hold.release.add_permits(1);
    hold.until_started(2).await;
    assert_eq!(hold.events()[2], "start high", "the urgent one first: {:?}", hold.events());
    // Raised to 3: the one still waiting runs beside the one running.
    assert_eq!(
        ok(&r, "mc:scale", json!({"target": "df:later", "max_concurrency": 3})).await,
        json!({"previous": 1})
    );
    hold.until_started(3).await;
    assert_eq!(hold.most_at_once(), 2);
    hold.release.add_permits(2);
    for call in [first, low, high] {
        assert!(call.await.unwrap().is_success());
    }
}

#[tokio::test]
async fn a_packet_waits_for_its_keys_slot_within_its_deadline_only() {
    let r = reactor();
    let hold = Hold::new();
    hold.register(&r, "slow");
    ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 1})).await;
    let first = spawn_call(&r, "slow", "first", 5);
    hold.until_started(1).await;
    let late = r.submit(Packet::build("df", "slow", json!("late")).unwrap().with_timeout_ms(30)).await;
    let (code, message) = failure(&late);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("PF408", "timed out after waiting in the queue for df:slow")
    );
    assert_eq!(r.stats().queued, 0, "the wait it gave up is not counted");
    // With max_queue 0, a packet that cannot run at once is refused.
    ok(&r, "mc:tune", json!({"setting": "max_queue", "value": 0})).await;
    let (code, message) = failure(&run(&r, "df:slow", json!("refused")).await);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("PF429", "the queue of this key is full (0 packets waiting); retry later")
    );
    hold.release.add_permits(1);
    assert!(first.await.unwrap().is_success());
    assert_eq!(hold.events(), ["start first", "end first"], "neither the late nor the refused one ran");
}

#[tokio::test]
async fn tune_max_inflight_and_max_queue_change_the_reactors_own_queue() {
    let r = reactor();
    let hold = Hold::new();
    hold.register(&r, "slow");
    hold.register(&r, "other");
    let previous = ok(&r, "mc:tune", json!({"setting": "max_inflight", "value": 1})).await;
    assert_eq!(previous, json!({"previous": 1024}));
    assert_eq!(r.setting(Setting::MaxInflight), Some(1));
    // Any two keys now run one after the other.
    let (a, b) = (spawn_call(&r, "slow", "a", 5), spawn_call(&r, "other", "b", 5));
    hold.until_started(1).await;
    until_queued(&r, 1).await;
    assert_eq!(
        ok(&r, "mc:tune", json!({"setting": "max_queue", "value": 1})).await,
        json!({"previous": 65536})
    );
    let (code, message) = failure(&run(&r, "df:slow", json!("c")).await);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("PF429", "the queue is full (1 packets waiting); retry later")
    );
    // Raised again: the waiting one starts at once.
    assert_eq!(
        ok(&r, "mc:tune", json!({"setting": "max_inflight", "value": 8})).await,
        json!({"previous": 1})
    );
    hold.until_started(2).await;
    assert_eq!(hold.most_at_once(), 2);
    hold.release.add_permits(2);
    for call in [a, b] {
        assert!(call.await.unwrap().is_success());
    }
}

#[tokio::test]
async fn tune_default_timeout_is_the_deadline_of_packets_without_one() {
    let r = reactor();
    r.register_sync("df", "left", |_, ctx| Ok(json!(ctx.remaining().as_millis() as u64))).unwrap();
    let before = ok(&r, "df:left", Value::Null).await.as_u64().unwrap();
    assert!(before > 20_000, "30 s by default: {before}");
    let previous = ok(&r, "mc:tune", json!({"setting": "default_timeout_ms", "value": 250})).await;
    assert_eq!(previous, json!({"previous": 30000}));
    let after = ok(&r, "df:left", Value::Null).await.as_u64().unwrap();
    assert!(after <= 250, "the new default: {after}");
    let own =
        r.call(Packet::build("df", "left", Value::Null).unwrap().with_timeout_ms(60_000)).await.unwrap();
    assert!(own.as_u64().unwrap() > 250, "a packet's own timeout stands: {own}");
    assert_eq!(r.timeout_of(&Packet::build("df", "left", Value::Null).unwrap()), 250);
}

#[tokio::test]
async fn tune_actor_passivation_sends_idle_actors_to_the_store_sooner() {
    let r = reactor();
    register_counter(&r);
    ok(&r, "mc:spawn", json!({"type": "counter", "id": "idle"})).await;
    let previous = ok(&r, "mc:tune", json!({"setting": "actor_passivate_after_ms", "value": 100})).await;
    assert_eq!(previous, json!({"previous": 600000}));
    let deadline = Instant::now() + WAIT;
    while !r.actors().active_ids("counter").is_empty() {
        assert!(Instant::now() < deadline, "the actor never left memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counter = r.actors().stats().into_iter().find(|s| s.actor_type == "counter").unwrap();
    assert_eq!((counter.active, counter.passivated), (0, 1));
    assert_eq!(r.setting(Setting::ActorPassivateAfterMs), Some(100));
}

#[tokio::test]
async fn tune_busy_poll_turns_a_nodes_spinning_on_and_off() {
    let r = reactor();
    let node = crate::net::Node::new(r.clone(), crate::net::NodeConfig::default());
    assert_eq!(node.health()["busy_poll"], Value::Null, "off by default");
    assert_eq!(
        ok(&r, "mc:tune", json!({"setting": "busy_poll_us", "value": 200})).await,
        json!({"previous": 0})
    );
    assert_eq!(node.health()["busy_poll"]["window_us"], json!(200));
    assert_eq!(
        ok(&r, "mc:tune", json!({"setting": "busy_poll_us", "value": 0})).await,
        json!({"previous": 200})
    );
    assert_eq!(node.health()["busy_poll"], Value::Null);
    node.stop().await;
}

/// `key` with `data` in a packet marked as a token without `mc:*` makes it.
async fn run_barred(r: &Reactor, key: &str, data: Value) -> PacketResult {
    let (group, element) = key.split_once(':').unwrap();
    let mut packet = Packet::build(group, element, data).unwrap();
    packet.bar_mc();
    r.submit(packet).await
}

fn tune_step(value: u64) -> Value {
    json!({"group": "mc", "element": "tune", "data": {"setting": "default_timeout_ms", "value": value}})
}

#[tokio::test]
async fn the_calls_of_a_packet_marked_no_mc_cannot_reach_mc_however_deep() {
    let r = reactor();
    let seq = json!({"steps": [tune_step(1000)]});
    let refused = run_barred(&r, "cf:seq", seq.clone()).await;
    let (code, message) = failure(&refused);
    assert_eq!(code, "PF403");
    assert!(
        message.starts_with("cf:seq step 0 (mc:tune) failed: ctx.call to mc:tune refused: the packet calling it came with a token that does not grant mc:*"),
        "{message}"
    );
    // Nested: the inner cf:seq inherits the mark.
    let nested = json!({"steps": [{"group": "cf", "element": "seq", "data": seq}]});
    assert_eq!(failure(&run_barred(&r, "cf:seq", nested).await).0, "PF403");
    assert_eq!(r.setting(Setting::DefaultTimeoutMs), Some(30_000), "nothing changed");
    // A handler's own ctx.call is refused the same way.
    r.register("df", "tuner", |_, ctx| async move {
        ctx.call("mc", "tune", json!({"setting": "default_timeout_ms", "value": 2000})).await
    })
    .unwrap();
    assert_eq!(failure(&run_barred(&r, "df:tuner", Value::Null).await).0, "PF403");
    // Other calls go on.
    let fine = run_barred(
        &r,
        "cf:seq",
        json!({"steps": [{"group": "cf", "element": "seq", "data": {"steps": []}}]}),
    )
    .await;
    assert_eq!(failure(&fine).0, "PF400", "the inner cf:seq ran (and refused its empty steps)");
    // Unmarked, the same composite reaches mc:tune.
    ok(&r, "cf:seq", seq).await;
    assert_eq!(r.setting(Setting::DefaultTimeoutMs), Some(1000));
}

#[tokio::test]
async fn stored_steps_keep_the_mark_of_the_packet_that_stored_them() {
    let r = reactor();
    // Named when given.
    let (code, message) =
        failure(&run_barred(&r, "ed:timer", json!({"after_ms": 1, "do": tune_step(5)})).await);
    assert_eq!(code, "PF403");
    assert!(message.starts_with("ed:timer: do: ctx.call to mc:tune refused"), "{message}");
    let (code, message) = failure(&run_barred(&r, "ed:react", json!({"on": "x", "do": tune_step(5)})).await);
    assert_eq!(code, "PF403");
    assert!(message.starts_with("ed:react: do: ctx.call to mc:tune refused"), "{message}");

    // A step that reaches mc:* one call further: refused when it runs,
    // however later, even when what triggers it may reach mc:*.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let called = Arc::new(Notify::new());
    let (record, notify) = (seen.clone(), called.clone());
    r.register("df", "tuner", move |_, ctx| {
        let (record, notify) = (record.clone(), notify.clone());
        async move {
            let answer = ctx.call("mc", "tune", json!({"setting": "max_queue", "value": 7})).await;
            record.lock().push(answer.err().map_or("ok".into(), |e| e.code));
            notify.notify_waiters();
            Ok(Value::Null)
        }
    })
    .unwrap();
    let tuner = json!({"group": "df", "element": "tuner"});
    let subscribed = run_barred(&r, "ed:react", json!({"on": "go", "do": tuner})).await;
    assert!(subscribed.is_success(), "{subscribed:?}");
    let fired = ok(&r, "ed:signal", json!({"name": "go"})).await;
    assert_eq!(fired["delivered"], json!(1));
    assert_eq!(*seen.lock(), ["PF403"], "an unmarked signal runs the marked reaction marked");
    let waiting = called.notified();
    let timer = run_barred(&r, "ed:timer", json!({"after_ms": 1, "do": tuner})).await;
    assert!(timer.is_success(), "{timer:?}");
    tokio::time::timeout(WAIT, waiting).await.expect("the timer fired");
    assert_eq!(*seen.lock(), ["PF403", "PF403"]);
    assert_eq!(r.setting(Setting::MaxQueue), Some(65_536), "nothing changed");
    // Stored unmarked, the same step reaches mc:tune.
    let mut subscribe = Map::new();
    subscribe.insert("on".into(), json!("free"));
    subscribe.insert("do".into(), tuner);
    ok(&r, "ed:react", Value::Object(subscribe)).await;
    ok(&r, "ed:signal", json!({"name": "free"})).await;
    assert_eq!(seen.lock().last().map(String::as_str), Some("ok"));
    assert_eq!(r.setting(Setting::MaxQueue), Some(7));
}

#[tokio::test]
async fn a_lowered_limit_lets_what_runs_finish_and_starts_nothing_until_below_it() {
    let r = reactor();
    let hold = Hold::new();
    hold.register(&r, "slow");
    ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 2})).await;
    let (a, b) = (spawn_call(&r, "slow", "a", 5), spawn_call(&r, "slow", "b", 5));
    hold.until_started(2).await;
    assert_eq!(
        ok(&r, "mc:scale", json!({"target": "df:slow", "max_concurrency": 1})).await,
        json!({"previous": 2})
    );
    let c = spawn_call(&r, "slow", "c", 5);
    until_queued(&r, 1).await;
    hold.release.add_permits(1);
    hold.until("one ended", |e| e.iter().any(|e| e.starts_with("end"))).await;
    // One still runs, at the new limit: the third waits.
    assert_eq!(r.stats().queued, 1, "{:?}", hold.events());
    hold.release.add_permits(1);
    hold.until_started(3).await;
    hold.release.add_permits(1);
    for call in [a, b, c] {
        assert!(call.await.unwrap().is_success());
    }
    let events = hold.events();
    let third = events.iter().position(|e| e == "start c").unwrap();
    assert_eq!(events[..third].iter().filter(|e| e.starts_with("end")).count(), 2, "{events:?}");
    // A sync handler's key may be limited too: it answers as before.
    r.register_sync("df", "quick", |d, _| Ok(d)).unwrap();
    ok(&r, "mc:scale", json!({"target": "df:quick", "max_concurrency": 1})).await;
    assert_eq!(ok(&r, "df:quick", json!(3)).await, json!(3));
}
