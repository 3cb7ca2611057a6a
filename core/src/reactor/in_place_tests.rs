//! Calls answered in place (`in_place`): what their handler observes is
//! what a child packet's would.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map};

use super::*;
use crate::packet::{Priority, META_NO_MC};

const WAIT: Duration = Duration::from_secs(5);

fn packet(group: &str, element: &str, data: Value) -> Packet {
    Packet::build(group, element, data).unwrap()
}

/// What the in-place handler saw: its id, trace id, metadata, priority,
/// and its context, kept past its return.
#[derive(Default)]
struct Seen {
    ids: Vec<String>,
    traces: Vec<String>,
    metadata: Vec<Value>,
    priorities: Vec<u8>,
    kept: Vec<Context>,
}

/// A reactor whose sync `df:leaf` records what it sees, and whose async
/// `cf:root` calls it twice.
fn reactor() -> (Reactor, Arc<Mutex<Seen>>) {
    let r = Reactor::default();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    r.register_sync("df", "leaf", move |data, ctx| {
        let mut s = s.lock();
        s.ids.push(ctx.packet_id().to_string());
        s.traces.push(ctx.trace_id().to_owned());
        s.metadata.push(ctx.metadata().map_or(Value::Null, |m| Value::Object(m.clone())));
        s.priorities.push(ctx.priority().get());
        s.kept.push(ctx.clone());
        assert!(!ctx.is_cancelled(), "a running call is not cancelled");
        match data {
            Value::String(s) if s == "panic" => panic!("leaf broke"),
            other => Ok(json!({"echo": other})),
        }
    })
    .unwrap();
    r.register("cf", "root", |data, ctx| async move {
        let first = ctx.call("df", "leaf", data.clone()).await?;
        let second =
            ctx.call_with("df", "leaf", data, CallOptions::priority(Priority::new(9).unwrap())).await?;
        Ok(json!([first, second]))
    })
    .unwrap();
    (r, seen)
}

#[tokio::test]
async fn an_in_place_call_sees_what_a_child_packet_would() {
    let (r, seen) = reactor();
    let root = packet("cf", "root", json!(1)).with_priority(Priority::new(3).unwrap());
    let root_id = root.id.to_string();
    let answer = r.call(root).await.unwrap();
    assert_eq!(answer, json!([{"echo": 1}, {"echo": 1}]));
    let s = seen.lock();
    assert_eq!(s.ids.len(), 2);
    for id in &s.ids {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id} is a UUID");
        assert_ne!(*id, root_id);
    }
    assert_ne!(s.ids[0], s.ids[1], "each call has an id of its own");
    assert_eq!(s.traces, [root_id.clone(), root_id.clone()]);
    assert_eq!(s.metadata[0], json!({"pf.trace_id": root_id}));
    assert_eq!(s.priorities, [3, 9], "the caller's priority, unless the call names one");
    let leaf = r.stats().handlers.into_iter().find(|h| h.element.as_str() == "leaf").unwrap();
    assert_eq!((leaf.count, leaf.errors), (2, 0), "counted in its key's statistics");
    assert_eq!(r.in_flight(), 0);
}

#[tokio::test]
async fn a_kept_context_is_over_once_the_call_returned() {
    let (r, seen) = reactor();
    r.call(packet("cf", "root", json!(1))).await.unwrap();
    let kept = seen.lock().kept[0].clone();
    assert!(kept.is_cancelled());
    tokio::time::timeout(WAIT, kept.cancelled()).await.expect("its signal fired");
    let late = kept.call("df", "leaf", json!(2)).await.unwrap_err();
    assert_eq!(late.kind(), Some(ErrorCode::Unavailable));
    assert!(late.message.contains("after the handler answered"), "{}", late.message);
}

#[tokio::test]
async fn a_panicking_in_place_handler_fails_its_call_with_pf500() {
    let (r, _) = reactor();
    let res = r.submit(packet("cf", "root", json!("panic"))).await;
    let e = res.outcome.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorCode::HandlerFailed));
    assert!(e.message.contains("leaf broke"), "{}", e.message);
}

#[tokio::test]
async fn a_call_barred_from_mc_carries_the_mark_in_place() {
    let (r, seen) = reactor();
    let mut root = packet("cf", "root", json!(1));
    root.bar_mc();
    let root_id = root.id.to_string();
    r.call(root).await.unwrap();
    let s = seen.lock();
    assert_eq!(s.metadata[0], json!({"pf.trace_id": root_id, META_NO_MC: true}));
    assert!(s.kept[0].bars_mc());
}

#[tokio::test]
async fn an_inherited_trace_id_passes_through_in_place() {
    let (r, seen) = reactor();
    let mut root = packet("cf", "root", json!(1));
    root.metadata = Some(Map::from_iter([("pf.trace_id".to_owned(), json!("trace-7"))]));
    r.call(root).await.unwrap();
    assert_eq!(seen.lock().traces, ["trace-7", "trace-7"]);
}

#[tokio::test]
async fn an_in_place_call_is_cancelled_with_its_caller() {
    let (r, _) = reactor();
    let observed = Arc::new(Mutex::new(None));
    let (o, handle) = (observed.clone(), r.clone());
    // Cancels the packet that called it, as another thread could while it
    // runs, and reports what its own context then says.
    r.register_sync("df", "cancel_caller", move |data, ctx| {
        let caller = PacketId::new(data.as_str().unwrap()).unwrap();
        let before = ctx.is_cancelled();
        assert!(handle.cancel(&caller));
        *o.lock() = Some((before, ctx.is_cancelled()));
        Ok(Value::Null)
    })
    .unwrap();
    r.register("cf", "calls", |_, ctx| async move {
        let own = ctx.packet_id().to_string();
        ctx.call("df", "cancel_caller", json!(own)).await
    })
    .unwrap();
    let res = r.submit(packet("cf", "calls", json!(null))).await;
    assert_eq!(res.outcome.unwrap_err().kind(), Some(ErrorCode::Cancelled));
    assert_eq!(*observed.lock(), Some((false, true)));
    assert_eq!(r.in_flight(), 0);
}
