//! The in-process demo: handlers and submits in one process, no network.
//! Shows a plain call, priorities, a dependency, a timeout and an error.
//!
//! `cargo run --release -p packetflow --example demo`

use std::sync::Arc;
use std::time::Duration;

use packetflow::{json, Packet, PfError, Priority, Reactor, ReactorConfig, Value};
use tokio::sync::Notify;

fn show(label: &str, result: &packetflow::PacketResult) {
    match &result.outcome {
        Ok(data) => println!("  {label:<34} -> {data}  ({} ms)", result.duration_ms),
        Err(e) => println!("  {label:<34} -> {}: {}  ({} ms)", e.code, e.message, result.duration_ms),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // One slot, so that waiting packets show the priority order.
    let reactor = Reactor::new(ReactorConfig { name: "demo".into(), max_inflight: 1, ..Default::default() });
    reactor
        .register_sync("df", "transform", |data, _| match data {
            Value::String(s) => Ok(Value::String(s.to_uppercase())),
            other => Err(PfError::failed(format!("expected a string, got {other}"))),
        })
        .unwrap();
    let order = Arc::new(Log::default());
    let gate = Arc::new(Notify::new());
    let (log, g) = (order.clone(), gate.clone());
    reactor
        .register("cf", "step", move |data, _| {
            let (log, g) = (log.clone(), g.clone());
            async move {
                if data == "gate" {
                    g.notified().await;
                } else {
                    log.push(data.to_string());
                }
                Ok(data)
            }
        })
        .unwrap();
    reactor
        .register("ed", "slow", |_, _| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json!("too late"))
        })
        .unwrap();
    reactor.register_sync("rm", "fail", |_, _| Err(PfError::failed("disk quota exceeded"))).unwrap();

    println!("PacketFlow demo: one in-process reactor, no network\n");
    show(
        "df:transform \"hello world\"",
        &reactor.submit(Packet::build("df", "transform", json!("hello world")).unwrap()).await,
    );

    // Priorities: hold the only slot, queue five packets, then release.
    let holder = tokio::spawn({
        let r = reactor.clone();
        async move { r.submit(Packet::build("cf", "step", json!("gate")).unwrap()).await }
    });
    tokio::task::yield_now().await;
    let mut queued = Vec::new();
    for (name, prio) in [("low", 1), ("normal-1", 5), ("urgent", 10), ("normal-2", 5), ("high", 9)] {
        let p = Packet::build("cf", "step", json!(name)).unwrap().with_priority(Priority::new(prio).unwrap());
        let r = reactor.clone();
        queued.push(tokio::spawn(async move { r.submit(p).await }));
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    holder.await.unwrap();
    for q in queued {
        q.await.unwrap();
    }
    println!("  {:<34} -> ran {}", "priorities 1, 5, 10, 5, 9", order.take().join(", "));

    // A dependency: "ship" waits until "charge" succeeded.
    let charge = Packet::build("cf", "step", json!("charge")).unwrap();
    let ship = Packet::build("cf", "step", json!("ship")).unwrap().with_dependencies(vec![charge.id.clone()]);
    let r = reactor.clone();
    let shipping = tokio::spawn(async move { r.submit(ship).await });
    tokio::task::yield_now().await;
    reactor.submit(charge).await;
    shipping.await.unwrap();
    println!("  {:<34} -> ran {}", "ship (depends on charge), charge", order.take().join(", "));

    show(
        "ed:slow with timeout_ms 50",
        &reactor.submit(Packet::build("ed", "slow", json!(null)).unwrap().with_timeout_ms(50)).await,
    );
    show("rm:fail", &reactor.submit(Packet::build("rm", "fail", json!(null)).unwrap()).await);
    show("mc:unknown", &reactor.submit(Packet::build("mc", "unknown", json!(1)).unwrap()).await);

    let stats = reactor.stats();
    println!("\nstats:");
    for h in stats.handlers {
        let key = format!("{}:{}", h.group, h.element);
        println!(
            "  {key:<14} count {:>2}  errors {}  p50 {} µs  p99 {} µs",
            h.count, h.errors, h.p50_us, h.p99_us
        );
    }
}

/// What the `cf:step` handler saw, in order.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<String>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}
