//! Cancellation on one reactor: a packet cancelled before it starts, while
//! it waits (for a slot, for a dependency), while it runs, with the calls
//! it made; a deadline or an answer that ends the calls still running; the
//! priority a call inherits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

use super::*;

/// Any single wait of a test; far above what each takes.
const WAIT: Duration = Duration::from_secs(5);

fn packet(group: &str, element: &str, data: Value) -> Packet {
    Packet::build(group, element, data).unwrap()
}

fn code_of(result: &PacketResult) -> Option<ErrorCode> {
    result.err().and_then(PfError::kind)
}

fn stats_of(r: &Reactor, element: &str) -> HandlerStats {
    r.stats().handlers.into_iter().find(|h| h.element.as_str() == element).expect("registered")
}

/// Reports `name` on `seen` once `ctx`'s cancellation signal fires, from a
/// task of its own: the handler's future is dropped by then.
fn watch(ctx: &Context, seen: &mpsc::UnboundedSender<&'static str>, name: &'static str) {
    let (cancelled, seen) = (ctx.cancelled(), seen.clone());
    tokio::spawn(async move {
        cancelled.await;
        let _ = seen.send(name);
    });
}

/// Sets its flag when dropped: shows a handler's future was dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `df:block`: watches its cancellation (reported as "block"), then never
/// answers; its future's drop sets `dropped`.
fn register_block(r: &Reactor, seen: &mpsc::UnboundedSender<&'static str>, dropped: &Arc<AtomicBool>) {
    let (seen, dropped) = (seen.clone(), dropped.clone());
    r.register("df", "block", move |_, ctx| {
        watch(&ctx, &seen, "block");
        let guard = SetOnDrop(dropped.clone());
        async move {
            let _guard = guard;
            std::future::pending::<HandlerResult>().await
        }
    })
    .unwrap();
}

async fn next(seen: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    timeout(WAIT, seen.recv()).await.expect("observed in time").expect("sender alive")
}

#[tokio::test]
async fn cancel_while_running_answers_pf499_at_once_and_tells_the_handler() {
    let r = Reactor::default();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    register_block(&r, &seen_tx, &dropped);
    let p = packet("df", "block", json!(null));
    let id = p.id.clone();
    let mut submit = Box::pin(r.submit(p));
    // The first poll runs the handler up to its wait.
    assert!(futures::poll!(submit.as_mut()).is_pending());
    assert_eq!(r.stats().in_flight, 1);
    assert!(r.cancel(&id));
    assert!(r.cancel(&id), "idempotent while the packet is in flight");
    let result = timeout(WAIT, submit).await.expect("answered at once");
    assert_eq!(code_of(&result), Some(ErrorCode::Cancelled));
    assert_eq!(result.err().unwrap().message, format!("packet {id} was cancelled"));
    assert_eq!(next(&mut seen).await, "block");
    assert!(dropped.load(Ordering::SeqCst), "the handler's future was dropped");
    let stats = stats_of(&r, "block");
    assert_eq!((stats.count, stats.errors, stats.cancelled), (1, 1, 1));
    assert_eq!(r.stats().in_flight, 0);
    assert!(!r.cancel(&id), "no longer in flight");
}

#[tokio::test]
async fn cancel_before_start_does_nothing_and_is_not_remembered() {
    let r = Reactor::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    r.register("df", "count", move |data, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(data) }
    })
    .unwrap();
    let p = packet("df", "count", json!(7));
    // Not submitted yet, or not polled yet: not in flight.
    assert!(!r.cancel(&p.id));
    let submit = r.submit(p.clone());
    assert!(!r.cancel(&p.id));
    assert_eq!(submit.await.outcome, Ok(json!(7)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(stats_of(&r, "count").cancelled, 0);
}

#[tokio::test]
async fn cancel_while_queued_answers_at_once_and_never_runs_the_handler() {
    let r = Reactor::new(ReactorConfig { max_inflight: 1, ..ReactorConfig::default() });
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    r.register("df", "hold", move |_, _| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok(json!("held"))
        }
    })
    .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    r.register("df", "count", move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(json!("ran")) }
    })
    .unwrap();
    let mut holding = Box::pin(r.submit(packet("df", "hold", json!(null))));
    assert!(futures::poll!(holding.as_mut()).is_pending(), "holds the only slot");
    let queued = packet("df", "count", json!(null));
    let id = queued.id.clone();
    let mut waiting = Box::pin(r.submit(queued));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    assert_eq!(r.stats().queued, 1);
    assert!(r.cancel(&id));
    let result = timeout(WAIT, waiting).await.expect("answered at once");
    assert_eq!(code_of(&result), Some(ErrorCode::Cancelled));
    assert_eq!(r.stats().queued, 0, "a cancelled packet no longer counts as queued");
    // The slot, once free, goes to nobody: the cancelled packet never runs.
    gate.notify_one();
    assert_eq!(timeout(WAIT, holding).await.unwrap().outcome, Ok(json!("held")));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(stats_of(&r, "count").cancelled, 1);
    // And the slot is free for the next packet.
    assert_eq!(r.call(packet("df", "count", json!(null))).await, Ok(json!("ran")));
    assert_eq!(r.stats().in_flight, 0);
}

#[tokio::test]
async fn cancel_while_waiting_on_a_dependency_and_dependents_of_a_cancelled_packet() {
    let r = Reactor::default();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    r.register("df", "hold", move |_, _| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok(json!("held"))
        }
    })
    .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    r.register("df", "after", move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(json!("after")) }
    })
    .unwrap();

    // A dependent cancelled while it waits never runs; its dependency
    // goes on undisturbed.
    let first = packet("df", "hold", json!(null));
    let dependent = packet("df", "after", json!(null)).with_dependencies(vec![first.id.clone()]);
    let dependent_id = dependent.id.clone();
    let mut first_run = Box::pin(r.submit(first));
    assert!(futures::poll!(first_run.as_mut()).is_pending());
    let mut waiting = Box::pin(r.submit(dependent));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    assert!(r.cancel(&dependent_id));
    assert_eq!(code_of(&timeout(WAIT, waiting).await.unwrap()), Some(ErrorCode::Cancelled));
    gate.notify_one();
    assert!(timeout(WAIT, first_run).await.unwrap().is_success());
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(r.inner.inflight.entry_count(), 0, "no waiter left behind");

    // Cancelling the dependency answers its dependents PF424.
    let first = packet("df", "hold", json!(null));
    let first_id = first.id.clone();
    let dependents: Vec<Packet> =
        (0..2).map(|i| packet("df", "after", json!(i)).with_dependencies(vec![first_id.clone()])).collect();
    let mut first_run = Box::pin(r.submit(first));
    assert!(futures::poll!(first_run.as_mut()).is_pending());
    let mut waiting: Vec<_> = dependents.into_iter().map(|d| Box::pin(r.submit(d))).collect();
    for w in &mut waiting {
        assert!(futures::poll!(w.as_mut()).is_pending());
    }
    assert!(r.cancel(&first_id));
    assert_eq!(code_of(&timeout(WAIT, first_run).await.unwrap()), Some(ErrorCode::Cancelled));
    for w in waiting {
        let result = timeout(WAIT, w).await.unwrap();
        assert_eq!(code_of(&result), Some(ErrorCode::DependencyFailed));
        assert_eq!(result.err().unwrap().message, format!("dependency {first_id} was cancelled"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // A later dependent finds it remembered as cancelled.
    let late = packet("df", "after", json!(null)).with_dependencies(vec![first_id.clone()]);
    assert_eq!(code_of(&r.submit(late).await), Some(ErrorCode::DependencyFailed));
}

/// `df:a` calls `df:b`, which calls `df:block`; each watches its signal.
fn register_chain(r: &Reactor, seen: &mpsc::UnboundedSender<&'static str>, dropped: &Arc<AtomicBool>) {
    register_block(r, seen, dropped);
    for (name, next) in [("a", "b"), ("b", "block")] {
        let seen = seen.clone();
        r.register("df", name, move |data, ctx| {
            let seen = seen.clone();
            async move {
                watch(&ctx, &seen, name);
                ctx.call("df", next, data).await
            }
        })
        .unwrap();
    }
}

#[tokio::test]
async fn cancelling_the_first_of_a_chain_of_three_cancels_every_level() {
    let r = Reactor::default();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    register_chain(&r, &seen_tx, &dropped);
    let p = packet("df", "a", json!(null));
    let id = p.id.clone();
    let mut submit = Box::pin(r.submit(p));
    // One poll runs the whole chain down to df:block's wait.
    assert!(futures::poll!(submit.as_mut()).is_pending());
    assert_eq!(r.stats().in_flight, 3);
    assert!(r.cancel(&id));
    assert_eq!(code_of(&timeout(WAIT, submit).await.unwrap()), Some(ErrorCode::Cancelled));
    let mut levels = vec![next(&mut seen).await, next(&mut seen).await, next(&mut seen).await];
    levels.sort();
    assert_eq!(levels, ["a", "b", "block"]);
    assert!(dropped.load(Ordering::SeqCst));
    for element in ["a", "b", "block"] {
        assert_eq!(stats_of(&r, element).cancelled, 1, "{element}");
    }
    assert_eq!(r.stats().in_flight, 0);
}

#[tokio::test]
async fn cancelling_a_call_fails_it_in_its_caller_with_pf499() {
    let r = Reactor::default();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    // df:block reports its id, so that the test can cancel it.
    let started = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let ids = started.clone();
    r.register("df", "block", move |_, ctx| {
        ids.lock().push(ctx.packet_id().clone());
        watch(&ctx, &seen_tx, "block");
        std::future::pending::<HandlerResult>()
    })
    .unwrap();
    r.register("df", "catch", |_, ctx| async move {
        match ctx.call("df", "block", json!(null)).await {
            Err(e) if e.is(ErrorCode::Cancelled) => Ok(json!("child cancelled")),
            other => other,
        }
    })
    .unwrap();
    let mut submit = Box::pin(r.submit(packet("df", "catch", json!(null))));
    assert!(futures::poll!(submit.as_mut()).is_pending());
    let child = started.lock().pop().expect("df:block started");
    assert!(r.cancel(&child));
    assert_eq!(timeout(WAIT, submit).await.unwrap().outcome, Ok(json!("child cancelled")));
    assert_eq!(next(&mut seen).await, "block");
    assert_eq!(stats_of(&r, "block").cancelled, 1);
    assert_eq!(stats_of(&r, "catch").cancelled, 0, "the caller answered by itself");
}

/// A forwarder whose packets never come back: records each one it gets,
/// and each one withdrawn (its future dropped).
struct Hold {
    withdrawn: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

impl Forwarder for Hold {
    fn forward(
        &self,
        _packet: Packet,
        _deadline: Instant,
        _origin: Option<Origin>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let withdrawn = WithdrawnOnDrop(self.withdrawn.clone());
        Some(Box::pin(async move {
            let _withdrawn = withdrawn;
            std::future::pending().await
        }))
    }
}

struct WithdrawnOnDrop(Arc<AtomicUsize>);

impl Drop for WithdrawnOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_withdraws_the_calls_still_running() {
    let r = Reactor::default();
    let withdrawn = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    r.set_forwarder(Box::new(Hold { withdrawn: withdrawn.clone(), sent: sent.clone() }));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    r.register("df", "parent", move |_, ctx| {
        let seen = seen_tx.clone();
        async move {
            watch(&ctx, &seen, "parent");
            // No local handler: the call goes to the forwarder (a peer).
            ctx.call("df", "remote", json!(null)).await
        }
    })
    .unwrap();
    let start = Instant::now();
    let result = r.submit(packet("df", "parent", json!(null)).with_timeout_ms(50)).await;
    assert_eq!(code_of(&result), Some(ErrorCode::Timeout));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    // Withdrawn when the parent's deadline passed, not left to its own.
    assert_eq!(withdrawn.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats().forwards_cancelled, 1);
    assert_eq!(next(&mut seen).await, "parent");
    assert_eq!(r.stats().in_flight, 0);
}

#[tokio::test]
async fn a_call_left_running_by_its_caller_is_cancelled_when_the_caller_answers() {
    let r = Reactor::default();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    register_block(&r, &seen_tx, &dropped);
    let (call_tx, mut call_result) = mpsc::unbounded_channel();
    r.register("df", "leave", move |_, ctx| {
        let call_tx = call_tx.clone();
        async move {
            // Starts a call, leaves it running in a task of its own, answers.
            let mut call = Box::pin(async move { ctx.call("df", "block", json!(null)).await });
            assert!(futures::poll!(call.as_mut()).is_pending());
            tokio::spawn(async move {
                let _ = call_tx.send(call.await);
            });
            Ok(json!("answered"))
        }
    })
    .unwrap();
    assert_eq!(r.call(packet("df", "leave", json!(null))).await, Ok(json!("answered")));
    let left = timeout(WAIT, call_result.recv()).await.unwrap().unwrap();
    assert_eq!(left.unwrap_err().kind(), Some(ErrorCode::Cancelled));
    assert_eq!(next(&mut seen).await, "block");
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(stats_of(&r, "block").cancelled, 1);
    assert_eq!(r.stats().in_flight, 0);
}

#[tokio::test]
async fn a_sync_handler_is_not_interrupted_but_its_cancelled_packet_answers_pf499() {
    let r = Reactor::default();
    let handle = r.clone();
    r.register_sync("df", "self", move |_, ctx| {
        assert!(!ctx.is_cancelled());
        assert!(handle.cancel(ctx.packet_id()));
        assert!(ctx.is_cancelled());
        Ok(json!("done anyway"))
    })
    .unwrap();
    let result = r.submit(packet("df", "self", json!(null))).await;
    assert_eq!(code_of(&result), Some(ErrorCode::Cancelled));
    assert_eq!(stats_of(&r, "self").cancelled, 1);
}

#[tokio::test]
async fn a_context_is_cancelled_once_its_packet_is_over() {
    let r = Reactor::default();
    let (kept_tx, mut kept) = mpsc::unbounded_channel::<Context>();
    r.register("df", "keep", move |_, ctx| {
        let kept_tx = kept_tx.clone();
        async move {
            assert!(!ctx.is_cancelled(), "not while it runs");
            let _ = kept_tx.send(ctx.clone());
            Ok(json!(1))
        }
    })
    .unwrap();
    assert_eq!(r.call(packet("df", "keep", json!(null))).await, Ok(json!(1)));
    let ctx = kept.recv().await.unwrap();
    // Answered: like a Go request context, done once the handler returned.
    assert!(ctx.is_cancelled());
    timeout(WAIT, ctx.cancelled()).await.expect("resolved");
}

#[tokio::test]
async fn a_call_inherits_its_callers_priority_unless_it_names_one() {
    let r = Reactor::default();
    r.register_sync("df", "priority", |_, ctx| Ok(json!(ctx.priority().get()))).unwrap();
    r.register("df", "parent", |data, ctx| async move {
        let inherited = ctx.call("df", "priority", json!(null)).await?;
        let named = match data.as_i64() {
            Some(p) => {
                let options = CallOptions::priority(crate::packet::Priority::new(p).unwrap());
                ctx.call_with("df", "priority", json!(null), options).await?
            }
            None => Value::Null,
        };
        Ok(json!([inherited, named]))
    })
    .unwrap();
    let high = packet("df", "parent", json!(2)).with_priority(crate::packet::Priority::new(9).unwrap());
    assert_eq!(r.call(high).await, Ok(json!([9, 2])));
    assert_eq!(r.call(packet("df", "parent", json!(null))).await, Ok(json!([5, null])));
}

#[tokio::test]
async fn an_actor_message_cancelled_in_the_mailbox_never_runs_and_a_turn_cancelled_commits_nothing() {
    use crate::actor::{ActorType, Op, Reply, TurnInput, TurnOutput};
    let r = Reactor::default();
    let actors = r.actors();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let turns = Arc::new(AtomicUsize::new(0));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (held, counted) = (gate.clone(), turns.clone());
    actors
        .register(
            "slow",
            ActorType::from_async(move |input: TurnInput| {
                let (gate, counted, seen) = (held.clone(), counted.clone(), seen_tx.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    watch(&input.ctx, &seen, "turn");
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
    let running = slow.packet(Op::Send, json!({"type": "wait"}));
    let queued = slow.packet(Op::Send, json!({"type": "wait"}));
    let (running_id, queued_id) = (running.id.clone(), queued.id.clone());
    let mut first = Box::pin(r.submit(running));
    assert!(futures::poll!(first.as_mut()).is_pending(), "its turn waits");
    let mut second = Box::pin(r.submit(queued));
    assert!(futures::poll!(second.as_mut()).is_pending(), "in the mailbox behind it");
    assert!(r.cancel(&queued_id));
    assert_eq!(code_of(&timeout(WAIT, second).await.unwrap()), Some(ErrorCode::Cancelled));
    assert!(r.cancel(&running_id));
    assert_eq!(code_of(&timeout(WAIT, first).await.unwrap()), Some(ErrorCode::Cancelled));
    assert_eq!(next(&mut seen).await, "turn", "the running turn was told");
    gate.add_permits(2);
    assert_eq!(actors.send(&slow, json!({"type": "read"})).await.unwrap(), json!(1), "nothing committed");
    assert_eq!(turns.load(Ordering::SeqCst), 2, "the cancelled turn and the read; never the queued one");
    assert_eq!(r.stats().in_flight, 0);
}

#[tokio::test]
async fn a_call_after_its_packet_was_cancelled_says_so() {
    let r = Reactor::default();
    r.register("df", "echo", |data, _| async move { Ok(data) }).unwrap();
    // `df:keep` hands its context out, then never answers.
    let (kept_tx, mut kept) = mpsc::unbounded_channel();
    r.register("df", "keep", move |_, ctx| {
        let _ = kept_tx.send(ctx);
        std::future::pending::<HandlerResult>()
    })
    .unwrap();
    let p = packet("df", "keep", json!(null));
    let id = p.id.clone();
    let mut submit = Box::pin(r.submit(p));
    assert!(futures::poll!(submit.as_mut()).is_pending());
    let ctx = timeout(WAIT, kept.recv()).await.unwrap().unwrap();
    assert!(r.cancel(&id));
    assert_eq!(code_of(&timeout(WAIT, submit).await.unwrap()), Some(ErrorCode::Cancelled));
    let refused = ctx.call("df", "echo", json!(1)).await.unwrap_err();
    assert_eq!(refused.kind(), Some(ErrorCode::Cancelled));
    assert_eq!(refused.message, format!("ctx.call to df:echo refused: packet {id} was cancelled"));

    // A packet that was answered: the late call's own words.
    let (late_tx, mut late) = mpsc::unbounded_channel();
    r.register("df", "leak", move |data, ctx| {
        let _ = late_tx.send(ctx);
        async move { Ok(data) }
    })
    .unwrap();
    assert!(r.submit(packet("df", "leak", json!(2))).await.is_success());
    let ctx = timeout(WAIT, late.recv()).await.unwrap().unwrap();
    let late = ctx.call("df", "echo", json!(1)).await.unwrap_err();
    assert_eq!(late, late_call_error("df", "echo"));
}
