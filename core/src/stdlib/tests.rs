use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use std::task::Poll;

use tokio::time::Duration;

use super::test_support::{failure, run, step};
use super::*;
use crate::packet::Packet;
use crate::ReactorConfig;

/// A reactor with every standard element and a few plain handlers:
/// `df:inc` (n + 1), `df:double`, `df:fail` (PF500 "boom"), `df:even`
/// (n is even), `df:slow` (answers after `data` ms), `df:count` (counts
/// its calls in the returned counter).
fn reactor() -> (Reactor, Arc<AtomicUsize>) {
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::all());
    r.register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap_or(0) + 1))).unwrap();
    r.register_sync("df", "double", |d, _| Ok(json!(d.as_i64().unwrap_or(0) * 2))).unwrap();
    r.register_sync("df", "fail", |_, _| Err(PfError::new(ErrorCode::HandlerFailed, "boom"))).unwrap();
    r.register_sync("df", "even", |d, _| Ok(json!(d.as_i64().unwrap_or(1) % 2 == 0))).unwrap();
    r.register("df", "slow", |d, _| async move {
        tokio::time::sleep(Duration::from_millis(d.as_u64().unwrap_or(0))).await;
        Ok(d)
    })
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    r.register_sync("df", "count", move |_, _| Ok(json!(counted.fetch_add(1, Ordering::SeqCst)))).unwrap();
    (r, count)
}

#[test]
fn patterns_choose_keys_and_name_what_they_cannot_read() {
    let p = StdlibPatterns::parse("cf:*, co:gather").unwrap();
    assert!(p.matches(Group::ControlFlow, "seq") && p.matches(Group::Collective, "gather"));
    assert!(!p.matches(Group::Collective, "vote") && !p.matches(Group::DataFlow, "transform"));
    assert!(StdlibPatterns::parse("").unwrap().is_empty());
    assert!(StdlibPatterns::parse("*").unwrap().matches(Group::DataFlow, "reduce"));
    let e = StdlibPatterns::parse("cf:*,cf:sqe").unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("PF400", "stdlib[1] \"cf:sqe\": no standard element matches it (docs/stdlib.md lists them)")
    );
    assert!(StdlibPatterns::parse("xx:*").unwrap_err().message.contains("not a group"));
    assert!(StdlibPatterns::parse("seq").unwrap_err().message.contains("expected group:element"));
}

#[tokio::test]
async fn only_chosen_elements_are_hosted_and_a_users_handler_wins() {
    let r = Reactor::default();
    let keys = r.enable_stdlib(&StdlibPatterns::parse("cf:seq,df:transform").unwrap());
    assert_eq!(keys.len(), 2);
    assert_eq!(run(&r, "cf:branch", json!({})).await.err().unwrap().code, "PF001");
    // The built-in df:transform maps...
    r.register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap() + 1))).unwrap();
    let mapped = run(&r, "df:transform", json!({"items": [1, 2], "fn": step("inc")})).await;
    assert_eq!(mapped.outcome, Ok(json!([2, 3])));
    // ...until a user registers the key: then the user's handler serves it.
    r.register_sync("df", "transform", |d, _| Ok(json!({"mine": d}))).unwrap();
    assert_eq!(run(&r, "df:transform", json!(7)).await.outcome, Ok(json!({"mine": 7})));
    // And back when the user's handler goes.
    assert!(r.unregister("df", "transform"));
    assert_eq!(
        run(&r, "df:transform", json!({"items": [1], "fn": step("inc")})).await.outcome,
        Ok(json!([2]))
    );
    // Built-ins are not handler keys (a node does not announce them).
    assert!(r.handler_keys().iter().all(|(g, e)| (*g, e.as_str()) != (Group::DataFlow, "transform")));
}

#[tokio::test]
async fn seq_carries_each_result_into_the_next_step() {
    let (r, _) = reactor();
    let steps =
        json!([step("inc"), step("double"), {"group": "df", "element": "inc", "data": 100}, step("double")]);
    let res = run(&r, "cf:seq", json!({"steps": steps, "input": 1})).await;
    assert_eq!(res.outcome, Ok(json!({"value": 202, "steps": 4})));
    // Steps compose: a step may be a standard element.
    let inner = json!({"group": "cf", "element": "seq", "data": {"steps": [step("inc")], "input": 5}});
    let res = run(&r, "cf:seq", json!({"steps": [inner]})).await;
    assert_eq!(res.outcome, Ok(json!({"value": {"value": 6, "steps": 1}, "steps": 1})));
}

#[tokio::test]
async fn seq_stops_at_the_first_failure_with_its_code_and_index() {
    let (r, count) = reactor();
    let res = run(&r, "cf:seq", json!({"steps": [step("inc"), step("fail"), step("count")]})).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF500");
    assert_eq!(message, "cf:seq step 1 (df:fail) failed: boom");
    assert_eq!(count.load(Ordering::SeqCst), 0, "no step ran after the failure");
    let res = run(&r, "cf:seq", json!({"steps": [step("nowhere")]})).await;
    assert_eq!(failure(&res).0, "PF001");
}

#[tokio::test]
async fn a_seq_of_steps_answered_in_place_runs_at_once_without_a_run_slot() {
    let r = Reactor::new(ReactorConfig { max_inflight: 1, ..ReactorConfig::default() });
    r.enable_stdlib(&StdlibPatterns::parse("cf:seq").unwrap());
    r.register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap_or(0) + 1))).unwrap();
    r.register("df", "slow", |d, _| async move { Ok(d) }).unwrap();
    let (entered, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let (e, rel) = (entered.clone(), release.clone());
    r.register("df", "hold", move |d, _| {
        let (e, rel) = (e.clone(), rel.clone());
        async move {
            e.notify_one();
            rel.notified().await;
            Ok(d)
        }
    })
    .unwrap();
    // The only run slot is taken...
    let holding = super::test_support::spawn_run(&r, "df:hold", json!(1));
    tokio::time::timeout(super::test_support::WAIT, entered.notified()).await.unwrap();
    // ...and a seq whose steps all run in place still answers, from its
    // first poll (an async seq would wait for the slot).
    let seq = Packet::build("cf", "seq", json!({"steps": [step("inc"), step("inc")], "input": 1})).unwrap();
    let mut answer = std::pin::pin!(r.submit(seq));
    let Poll::Ready(res) = futures::poll!(answer.as_mut()) else { panic!("the seq waited") };
    assert_eq!(res.outcome, Ok(json!({"value": 3, "steps": 2})));
    // A step of another kind: the seq is an async handler's packet, which
    // waits for the slot.
    let seq = Packet::build("cf", "seq", json!({"steps": [step("inc"), step("slow")], "input": 1})).unwrap();
    let mut waiting = Box::pin(r.submit(seq));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    release.notify_one();
    assert_eq!(super::test_support::joined(holding).await.outcome, Ok(json!(1)));
    drop(waiting);
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_field() {
    let (r, count) = reactor();
    let cases = [
        ("cf:seq", json!([1]), "cf:seq: data must be an object, got an array"),
        ("cf:seq", json!({}), "cf:seq: steps is required"),
        ("cf:seq", json!({"steps": []}), "cf:seq: steps must hold at least one step"),
        (
            "cf:seq",
            json!({"steps": [step("count"), {"group": "zz", "element": "x"}]}),
            "cf:seq: steps[1].group: group must be one of cf, df, ed, co, mc, rm, got \"zz\"",
        ),
        ("cf:seq", json!({"steps": [{"group": "df"}]}), "cf:seq: steps[0].element is required"),
        (
            "cf:seq",
            json!({"steps": [{"group": "df", "element": "x", "priority": 11}]}),
            "cf:seq: steps[0].priority must be an integer 1-10, got 11",
        ),
        (
            "cf:seq",
            json!({"steps": [{"group": "df", "element": "x", "timeout_ms": 0}]}),
            "cf:seq: steps[0].timeout_ms must be an integer 1-86400000, got 0",
        ),
        ("cf:loop", json!({"body": step("inc")}), "cf:loop: max_iterations is required (1-10000)"),
        (
            "cf:loop",
            json!({"body": step("inc"), "max_iterations": 10001}),
            "cf:loop: max_iterations must be an integer 1-10000, got 10001",
        ),
        ("cf:branch", json!({"if": step("even")}), "cf:branch: then is required"),
        (
            "df:transform",
            json!({"items": 3, "fn": step("inc")}),
            "df:transform: items must be an array, got a number",
        ),
        (
            "df:transform",
            json!({"items": [], "fn": step("inc"), "on_error": "ignore"}),
            "df:transform: on_error must be one of fail, skip, collect, got \"ignore\"",
        ),
        (
            "df:consume",
            json!({"items": [], "sink": step("inc"), "concurrency": 0}),
            "df:consume: concurrency must be an integer 1-1000, got 0",
        ),
        (
            "df:reduce",
            json!({"items": [1, "x"], "op": "sum"}),
            "df:reduce: items[1] must be a number for op sum, got a string",
        ),
        (
            "df:reduce",
            json!({"items": [1], "op": "avg"}),
            "df:reduce: op must be one of sum, min, max, concat, merge, count, got \"avg\"",
        ),
        ("df:reduce", json!({"items": [1]}), "df:reduce: op or fn is required"),
        ("df:reduce", json!({"items": [1], "fn": step("inc")}), "df:reduce: initial is required with fn"),
        (
            "df:produce",
            json!({"source": step("count")}),
            "df:produce: count is required unless until_null is true",
        ),
        (
            "co:gather",
            json!({"calls": [step("inc")], "min": 2}),
            "co:gather: min must be at most the number of calls (1), got 2",
        ),
        (
            "co:vote",
            json!({"voters": [step("inc")], "quorum": "most"}),
            "co:vote: quorum must be \"majority\" or an integer 1-1, got \"most\"",
        ),
    ];
    for (key, data, expected) in cases {
        let res = run(&r, key, data.clone()).await;
        assert_eq!(failure(&res), ("PF400".to_string(), expected.to_string()), "{key} {data}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing ran for a bad input");
}

#[tokio::test]
async fn branch_runs_then_or_else_on_the_condition() {
    let (r, _) = reactor();
    let data = |n: i64| json!({"if": step("even"), "then": step("double"), "else": step("inc"), "input": n});
    assert_eq!(run(&r, "cf:branch", data(4)).await.outcome, Ok(json!(8)));
    assert_eq!(run(&r, "cf:branch", data(5)).await.outcome, Ok(json!(6)));
    let no_else = json!({"if": step("even"), "then": step("double"), "input": 5});
    assert_eq!(run(&r, "cf:branch", no_else).await.outcome, Ok(Value::Null));
    let res = run(&r, "cf:branch", json!({"if": step("fail"), "then": step("double")})).await;
    assert_eq!(failure(&res).1, "cf:branch if (df:fail) failed: boom");
}

#[tokio::test]
async fn loop_carries_its_value_while_the_condition_holds_up_to_its_bound() {
    let (r, _) = reactor();
    // While even: 2 -> 3 after one iteration.
    let res = run(
        &r,
        "cf:loop",
        json!({"body": step("inc"), "while": step("even"), "max_iterations": 10, "input": 2}),
    )
    .await;
    assert_eq!(res.outcome, Ok(json!({"value": 3, "iterations": 1})));
    let res = run(&r, "cf:loop", json!({"body": step("double"), "max_iterations": 5, "input": 1})).await;
    assert_eq!(res.outcome, Ok(json!({"value": 32, "iterations": 5})));
    let res = run(&r, "cf:loop", json!({"body": step("fail"), "max_iterations": 5})).await;
    assert_eq!(failure(&res).1, "cf:loop body, iteration 0 (df:fail) failed: boom");
}

#[tokio::test]
async fn transform_keeps_input_order_and_handles_failures_as_asked() {
    let (r, _) = reactor();
    // Slower items first: answers come back in another order.
    let items = json!([40, 30, 20, 10, 0]);
    let res = run(&r, "df:transform", json!({"items": items, "fn": step("slow"), "concurrency": 5})).await;
    assert_eq!(res.outcome, Ok(items));
    r.register_sync("df", "odd_only", |d, _| match d.as_i64() {
        Some(n) if n % 2 == 1 => Ok(json!(n * 10)),
        _ => Err(PfError::new(ErrorCode::BadRequest, "even")),
    })
    .unwrap();
    let data = |mode: &str| json!({"items": [1, 2, 3], "fn": step("odd_only"), "on_error": mode});
    assert_eq!(run(&r, "df:transform", data("skip")).await.outcome, Ok(json!([10, 30])));
    let collected = run(&r, "df:transform", data("collect")).await.outcome.unwrap();
    assert_eq!(collected, json!([10, {"error": {"code": "PF400", "message": "even"}}, 30]));
    let res = run(&r, "df:transform", data("fail")).await;
    assert_eq!(failure(&res), ("PF400".into(), "df:transform fn, item 1 (df:odd_only) failed: even".into()));
}

#[tokio::test]
async fn produce_and_consume() {
    let (r, count) = reactor();
    let res = run(&r, "df:produce", json!({"source": step("count"), "count": 3})).await;
    assert_eq!(res.outcome, Ok(json!([0, 1, 2])));
    r.register_sync("df", "upto", |d, _| {
        let i = d["index"].as_u64().unwrap();
        Ok(if i < 4 { json!(i * i) } else { Value::Null })
    })
    .unwrap();
    let res = run(&r, "df:produce", json!({"source": step("upto"), "until_null": true})).await;
    assert_eq!(res.outcome, Ok(json!([0, 1, 4, 9])));
    let before = count.load(Ordering::SeqCst);
    let res = run(&r, "df:consume", json!({"items": [1, 2, 3], "sink": step("count")})).await;
    assert_eq!(res.outcome, Ok(json!({"delivered": 3, "failed": []})));
    assert_eq!(count.load(Ordering::SeqCst), before + 3);
    let res = run(&r, "df:consume", json!({"items": [1, 2], "sink": step("fail")})).await;
    let failed = json!([{"index": 0, "code": "PF500", "message": "boom"}, {"index": 1, "code": "PF500", "message": "boom"}]);
    assert_eq!(res.outcome, Ok(json!({"delivered": 0, "failed": failed})));
}

#[tokio::test]
async fn reduce_by_op_or_by_a_fold() {
    let (r, _) = reactor();
    let cases = [
        (json!({"items": [1, 2, 3], "op": "sum"}), json!(6)),
        (json!({"items": [1, 2.5], "op": "sum", "initial": 1}), json!(4.5)),
        (json!({"items": [3, 1, 2], "op": "min"}), json!(1)),
        (json!({"items": [3, 1, 2], "op": "max"}), json!(3)),
        (json!({"items": [], "op": "max"}), Value::Null),
        (json!({"items": ["a", "b"], "op": "concat"}), json!("ab")),
        (json!({"items": [[1], [2, 3]], "op": "concat"}), json!([1, 2, 3])),
        (json!({"items": [{"a": 1}, {"a": 2, "b": 3}], "op": "merge"}), json!({"a": 2, "b": 3})),
        (json!({"items": [7, 8, 9], "op": "count"}), json!(3)),
    ];
    for (data, expected) in cases {
        assert_eq!(run(&r, "df:reduce", data.clone()).await.outcome, Ok(expected), "{data}");
    }
    r.register_sync("df", "add", |d, _| Ok(json!(d["acc"].as_i64().unwrap() + d["item"].as_i64().unwrap())))
        .unwrap();
    let res = run(&r, "df:reduce", json!({"items": [1, 2, 3], "fn": step("add"), "initial": 10})).await;
    assert_eq!(res.outcome, Ok(json!(16)));
}

#[tokio::test]
async fn gather_returns_at_min_and_cancels_the_rest() {
    let (r, _) = reactor();
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let told = cancelled.clone();
    /// Tells when the call it lives in is dropped: cancelled.
    struct OnDrop(Arc<tokio::sync::Notify>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    r.register("df", "forever", move |_, _| {
        let guard = OnDrop(told.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    })
    .unwrap();
    let notified = cancelled.notified();
    let calls = json!([step("inc"), step("forever"), step("double")]);
    let res = run(&r, "co:gather", json!({"calls": calls, "min": 2})).await;
    let results = res.outcome.unwrap();
    assert_eq!(
        results,
        json!([{"ok": true, "value": 1}, {"ok": false, "cancelled": true}, {"ok": true, "value": 0}])
    );
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("the call no longer needed was cancelled");
    // All by default; failures are reported per call.
    let res = run(&r, "co:gather", json!({"calls": [step("inc"), step("double")]})).await;
    assert_eq!(res.outcome, Ok(json!([{"ok": true, "value": 1}, {"ok": true, "value": 0}])));
    let res =
        run(&r, "co:gather", json!({"calls": [step("inc"), step("fail"), step("fail")], "min": 2})).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF424");
    assert!(message.starts_with("co:gather: 2 of 3 calls failed, so 2 cannot succeed"), "{message}");
}

#[tokio::test]
async fn vote_decides_by_quorum_or_answers_pf409() {
    let (r, _) = reactor();
    let data = json!({"voters": [step("even"), step("even"), step("inc")], "input": 2});
    let res = run(&r, "co:vote", data).await.outcome.unwrap();
    assert_eq!(
        res,
        json!({"decision": true, "tally": [{"value": true, "votes": 2}, {"value": 3, "votes": 1}], "responded": 3})
    );
    let split = json!({"voters": [step("even"), step("inc"), step("fail")], "input": 2});
    let res = run(&r, "co:vote", split).await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF409");
    assert!(
        message.starts_with("co:vote: no answer reached the quorum of 2 (2 of 3 voters responded"),
        "{message}"
    );
}

#[tokio::test]
async fn a_standard_element_keeps_its_packets_deadline_and_a_steps_timeout() {
    let (r, _) = reactor();
    let mut packet =
        Packet::build("cf", "seq", json!({"steps": [{"group": "df", "element": "slow", "data": 5000}]}))
            .unwrap();
    packet.timeout_ms = Some(100);
    let started = std::time::Instant::now();
    let res = r.submit(packet).await;
    assert_eq!(failure(&res).0, "PF408");
    assert!(started.elapsed() < Duration::from_secs(3));
    let res = run(
        &r,
        "cf:seq",
        json!({"steps": [{"group": "df", "element": "slow", "data": 5000, "timeout_ms": 50}]}),
    )
    .await;
    let (code, message) = failure(&res);
    assert_eq!(code, "PF408");
    assert!(message.starts_with("cf:seq step 0 (df:slow) failed"), "{message}");
}
