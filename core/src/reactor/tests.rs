use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use serde_json::json;
use tokio::sync::{oneshot, Notify};

use super::*;
use crate::packet::Priority;

fn packet(group: &str, element: &str, data: Value) -> Packet {
    Packet::build(group, element, data).unwrap()
}

fn code_of(result: &PacketResult) -> Option<ErrorCode> {
    result.err().and_then(PfError::kind)
}

fn upper_reactor() -> Reactor {
    let r = Reactor::default();
    r.register_sync("df", "transform", |data, _| {
        Ok(Value::String(data.as_str().unwrap_or_default().to_uppercase()))
    })
    .unwrap();
    r
}

#[tokio::test]
async fn sync_and_async_handlers_answer() {
    let r = upper_reactor();
    r.register("df", "double", |data, _ctx| async move { Ok(json!(data.as_i64().unwrap() * 2)) }).unwrap();
    let res = r.submit(packet("df", "transform", json!("hello world"))).await;
    assert_eq!(res.outcome, Ok(json!("HELLO WORLD")));
    assert_eq!(r.call(packet("df", "double", json!(21))).await, Ok(json!(42)));
    let stats = r.stats();
    assert_eq!(stats.handlers.len(), 2);
    assert!(stats.handlers.iter().all(|h| h.count == 1 && h.errors == 0));
}

#[tokio::test]
async fn pf001_when_no_handler() {
    let r = upper_reactor();
    let res = r.submit(packet("df", "missing", json!(null))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::NoHandler));
    assert_eq!(res.err().unwrap().message, "no handler for df:missing");
    assert_eq!(r.stats().unrouted, 1);
    assert!(r.unregister("df", "transform"));
    assert!(!r.unregister("df", "transform"));
    let res = r.submit(packet("df", "transform", json!("x"))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::NoHandler));
}

#[tokio::test]
async fn pf500_for_errors_and_panics_in_both_kinds_of_handler() {
    let r = Reactor::default();
    r.register_sync("df", "err", |_, _| Err(PfError::failed("bad input"))).unwrap();
    r.register_sync("df", "panic", |_, _| panic!("sync boom")).unwrap();
    r.register("df", "apanic", |_, _| async move {
        tokio::task::yield_now().await;
        panic!("async boom")
    })
    .unwrap();
    let res = r.submit(packet("df", "err", json!(1))).await;
    assert_eq!(res.err().unwrap(), &PfError::failed("bad input"));
    let res = r.submit(packet("df", "panic", json!(1))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::HandlerFailed));
    assert_eq!(res.err().unwrap().message, "handler panicked: sync boom");
    let res = r.submit(packet("df", "apanic", json!(1))).await;
    assert_eq!(res.err().unwrap().message, "handler panicked: async boom");
    assert_eq!(r.stats().handlers.iter().map(|h| h.errors).sum::<u64>(), 3);
}

#[tokio::test(start_paused = true)]
async fn pf408_at_the_deadline() {
    let r = Reactor::default();
    r.register("df", "slow", |_, _| async move {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    })
    .unwrap();
    let res = r.submit(packet("df", "slow", json!(1)).with_timeout_ms(50)).await;
    assert_eq!(code_of(&res), Some(ErrorCode::Timeout));
    assert_eq!(res.err().unwrap().message, "df:slow did not answer in time");
    assert_eq!(res.duration_ms, 50);
}

#[tokio::test]
async fn pf409_for_a_duplicate_id_in_flight() {
    let r = Reactor::default();
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (g, e) = (gate.clone(), entered.clone());
    r.register("df", "wait", move |_, _| {
        let (g, e) = (g.clone(), e.clone());
        async move {
            e.notify_one();
            g.notified().await;
            Ok(json!("done"))
        }
    })
    .unwrap();
    let first = packet("df", "wait", json!(1));
    let dup = first.clone();
    let r2 = r.clone();
    let running = tokio::spawn(async move { r2.submit(first).await });
    entered.notified().await;
    let res = r.submit(dup.clone()).await;
    assert_eq!(code_of(&res), Some(ErrorCode::DuplicateId));
    assert!(res.err().unwrap().message.contains(dup.id.as_str()));
    gate.notify_one();
    assert!(running.await.unwrap().is_success());
    // Once finished, the id may be used again.
    let again = tokio::spawn({
        let r = r.clone();
        async move { r.submit(dup).await }
    });
    entered.notified().await;
    gate.notify_one();
    assert!(again.await.unwrap().is_success());
}

#[tokio::test]
async fn dependencies_wait_for_success_and_pf424_on_failure() {
    let r = Reactor::default();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (tx, rx) = oneshot::channel::<()>();
    let rx = Arc::new(parking_lot::Mutex::new(Some(rx)));
    let o = order.clone();
    r.register("df", "step", move |data, _| {
        let o = o.clone();
        let rx = rx.clone();
        async move {
            if data == json!("first") {
                let gate = rx.lock().take().unwrap();
                gate.await.unwrap();
            }
            o.lock().push(data.clone());
            Ok(data)
        }
    })
    .unwrap();
    r.register_sync("df", "fail", |_, _| Err(PfError::failed("nope"))).unwrap();

    let first = packet("df", "step", json!("first"));
    let second = packet("df", "step", json!("second")).with_dependencies(vec![first.id.clone()]);
    let (r1, r2) = (r.clone(), r.clone());
    let second_task = tokio::spawn(async move { r2.submit(second).await });
    let first_task = tokio::spawn(async move { r1.submit(first).await });
    tx.send(()).unwrap();
    assert!(first_task.await.unwrap().is_success());
    assert!(second_task.await.unwrap().is_success());
    assert_eq!(*order.lock(), vec![json!("first"), json!("second")]);

    // A failed dependency, already finished: PF424 without running.
    let bad = packet("df", "fail", json!(1));
    let bad_id = bad.id.clone();
    assert!(!r.submit(bad).await.is_success());
    let dependent = packet("df", "step", json!("never")).with_dependencies(vec![bad_id.clone()]);
    let res = r.submit(dependent).await;
    assert_eq!(code_of(&res), Some(ErrorCode::DependencyFailed));
    assert_eq!(res.err().unwrap().message, format!("dependency {bad_id} failed"));
    assert!(!order.lock().contains(&json!("never")));
}

#[tokio::test(start_paused = true)]
async fn pf424_when_a_dependency_never_completes() {
    let r = upper_reactor();
    let dependent = packet("df", "transform", json!("x"))
        .with_timeout_ms(100)
        .with_dependencies(vec![PacketId::new("ghost").unwrap()]);
    let res = r.submit(dependent).await;
    assert_eq!(code_of(&res), Some(ErrorCode::DependencyFailed));
    assert_eq!(res.err().unwrap().message, "dependency ghost did not complete before this packet's deadline");
    // The abandoned wait left nothing behind.
    assert_eq!(r.inner.inflight.entry_count(), 0);
}

/// [`one_slot_reactor`]: the reactor, the release and entered signals, and
/// what ran, in order.
type OneSlot = (Reactor, Arc<Notify>, Arc<Notify>, Arc<parking_lot::Mutex<Vec<u8>>>);

/// A reactor with one slot whose handler blocks until released, so tests
/// can fill the queue deterministically.
fn one_slot_reactor(max_queue: usize) -> OneSlot {
    let r = Reactor::new(ReactorConfig { max_inflight: 1, max_queue, ..ReactorConfig::default() });
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let ran = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (rel, ent, log) = (release.clone(), entered.clone(), ran.clone());
    r.register("df", "hold", move |data, _| {
        let (rel, ent, log) = (rel.clone(), ent.clone(), log.clone());
        async move {
            log.lock().push(data.as_u64().unwrap() as u8);
            if data == json!(0) {
                ent.notify_one();
                rel.notified().await;
            }
            Ok(data)
        }
    })
    .unwrap();
    (r, release, entered, ran)
}

async fn wait_for_queue(r: &Reactor, n: usize) {
    // Each submit task enqueues on its first poll; yield until they have.
    for _ in 0..10_000 {
        if r.stats().queued == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("queue never reached {n}");
}

#[tokio::test]
async fn priority_runs_highest_first_and_fifo_within_a_priority() {
    let (r, release, entered, ran) = one_slot_reactor(100);
    let blocker = tokio::spawn({
        let r = r.clone();
        async move { r.submit(packet("df", "hold", json!(0))).await }
    });
    entered.notified().await;
    let mut tasks = Vec::new();
    for (n, prio) in [(1, 2), (2, 9), (3, 5), (4, 9), (5, 2), (6, 10)] {
        let p = packet("df", "hold", json!(n)).with_priority(Priority::new(prio).unwrap());
        let r2 = r.clone();
        tasks.push(tokio::spawn(async move { r2.submit(p).await }));
        wait_for_queue(&r, tasks.len()).await;
    }
    release.notify_one();
    assert!(blocker.await.unwrap().is_success());
    for t in join_all(tasks).await {
        assert!(t.unwrap().is_success());
    }
    assert_eq!(*ran.lock(), vec![0, 6, 2, 4, 3, 1, 5]);
}

#[tokio::test]
async fn pf429_when_the_queue_is_full() {
    let (r, release, entered, _) = one_slot_reactor(2);
    let blocker = tokio::spawn({
        let r = r.clone();
        async move { r.submit(packet("df", "hold", json!(0))).await }
    });
    entered.notified().await;
    let queued: Vec<_> = (1..=2)
        .map(|n| {
            let r = r.clone();
            tokio::spawn(async move { r.submit(packet("df", "hold", json!(n))).await })
        })
        .collect();
    wait_for_queue(&r, 2).await;
    let res = r.submit(packet("df", "hold", json!(3))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::Overloaded));
    assert_eq!(res.err().unwrap().message, "the queue is full (2 packets waiting); retry later");
    release.notify_one();
    assert!(blocker.await.unwrap().is_success());
    for t in join_all(queued).await {
        assert!(t.unwrap().is_success());
    }
}

#[tokio::test(start_paused = true)]
async fn a_packet_that_times_out_in_the_queue_gives_its_slot_back() {
    let (r, release, entered, ran) = one_slot_reactor(10);
    let blocker = tokio::spawn({
        let r = r.clone();
        async move { r.submit(packet("df", "hold", json!(0))).await }
    });
    entered.notified().await;
    let res = r.submit(packet("df", "hold", json!(1)).with_timeout_ms(20)).await;
    assert_eq!(code_of(&res), Some(ErrorCode::Timeout));
    release.notify_one();
    assert!(blocker.await.unwrap().is_success());
    // The slot is free again: a new packet runs at once.
    assert!(r.submit(packet("df", "hold", json!(2))).await.is_success());
    assert_eq!(*ran.lock(), vec![0, 2]);
}

#[tokio::test]
async fn pf503_for_in_flight_and_later_submits_after_stop() {
    let (r, _release, entered, _) = one_slot_reactor(10);
    let blocked = tokio::spawn({
        let r = r.clone();
        async move { r.submit(packet("df", "hold", json!(0))).await }
    });
    entered.notified().await;
    r.stop();
    assert_eq!(code_of(&blocked.await.unwrap()), Some(ErrorCode::Unavailable));
    let res = r.submit(packet("df", "hold", json!(1))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::Unavailable));
}

#[tokio::test]
async fn pf400_for_a_packet_that_breaks_a_cross_field_rule() {
    let r = upper_reactor();
    let res = r.submit(packet("df", "transform", json!("x")).with_timeout_ms(0)).await;
    assert_eq!(code_of(&res), Some(ErrorCode::BadRequest));
}

#[tokio::test(start_paused = true)]
async fn ctx_call_inherits_deadline_and_trace_id() {
    let r = Reactor::default();
    let seen = Arc::new(parking_lot::Mutex::new(None));
    let s = seen.clone();
    r.register_sync("df", "leaf", move |_, ctx| {
        let meta_trace = ctx.metadata().and_then(|m| m.get("pf.trace_id")).cloned();
        *s.lock() = Some((meta_trace, ctx.remaining()));
        Ok(json!("leaf"))
    })
    .unwrap();
    r.register("cf", "root", |_, ctx| async move {
        let inner = ctx.call("df", "leaf", json!(null)).await?;
        Ok(json!({"root": ctx.packet_id().as_str(), "inner": inner}))
    })
    .unwrap();
    let root = packet("cf", "root", json!(null)).with_timeout_ms(5000);
    let root_id = root.id.clone();
    let res = r.call(root).await.unwrap();
    assert_eq!(res, json!({"root": root_id.as_str(), "inner": "leaf"}));
    let (trace, remaining) = seen.lock().clone().unwrap();
    assert_eq!(trace, Some(json!(root_id.as_str())));
    assert!(remaining <= Duration::from_millis(5000));
    // A call's error passes through `?` with its code.
    r.register("cf", "broken", |_, ctx| async move { ctx.call("df", "nowhere", json!(1)).await }).unwrap();
    let res = r.submit(packet("cf", "broken", json!(null))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::NoHandler));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_submits_are_all_answered() {
    let r = Reactor::new(ReactorConfig { max_inflight: 16, ..ReactorConfig::default() });
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    r.register("df", "count", move |data, _| {
        let c = c.clone();
        async move {
            tokio::task::yield_now().await;
            c.fetch_add(1, Ordering::Relaxed);
            Ok(data)
        }
    })
    .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.call(packet("df", "count", json!(i))).await })
        })
        .collect();
    for (i, t) in join_all(tasks).await.into_iter().enumerate() {
        assert_eq!(t.unwrap(), Ok(json!(i)));
    }
    assert_eq!(count.load(Ordering::Relaxed), 1000);
    let stats = r.stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
    assert_eq!(stats.handlers[0].count, 1000);
}

struct EchoForwarder;

impl Forwarder for EchoForwarder {
    fn forward(
        &self,
        packet: Packet,
        _deadline: Instant,
        _origin: Option<Origin>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        (packet.element.as_str() == "remote")
            .then(|| async move { PacketResult::success(packet.id, json!("forwarded"), 0) }.boxed())
    }
}

#[tokio::test]
async fn packets_without_a_local_handler_go_to_the_forwarder() {
    let r = upper_reactor();
    r.set_forwarder(Box::new(EchoForwarder));
    assert_eq!(r.call(packet("df", "remote", json!(1))).await, Ok(json!("forwarded")));
    assert_eq!(r.call(packet("df", "transform", json!("a"))).await, Ok(json!("A")));
    let res = r.submit(packet("df", "other", json!(1))).await;
    assert_eq!(code_of(&res), Some(ErrorCode::NoHandler));
}

#[tokio::test]
async fn a_context_calls_while_its_packet_runs_and_never_after() {
    let r = upper_reactor();
    let kept: Arc<Mutex<Option<Context>>> = Arc::default();
    let slot = kept.clone();
    r.register("cf", "keep", move |data, ctx| {
        let slot = slot.clone();
        async move {
            let inner = ctx.call("df", "transform", data).await;
            *slot.lock() = Some(ctx);
            inner
        }
    })
    .unwrap();
    assert_eq!(r.call(packet("cf", "keep", json!("in time"))).await, Ok(json!("IN TIME")));
    let ctx = kept.lock().take().expect("the handler kept its context");
    let late = ctx.call("df", "transform", json!("late")).await.unwrap_err();
    assert_eq!(late, late_call_error("df", "transform"));
    assert!(late.is(ErrorCode::Unavailable));
    // Only the late call was refused; the packet it would have made never ran.
    assert_eq!(r.stats().handlers.iter().find(|h| h.element.as_str() == "transform").unwrap().count, 1);
}

#[test]
fn config_values_are_checked() {
    assert!(ReactorConfig::default().validate().is_ok());
    let e = ReactorConfig { max_inflight: 0, ..Default::default() }.validate().unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("PF400", "max_inflight must be at least 1, got 0"));
}
