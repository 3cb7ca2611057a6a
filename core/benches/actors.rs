//! Actor benchmarks, each beside the usual Rust baseline in the same run:
//!
//! 1. turns: message -> behaviour -> reply to one active actor, 100 in
//!    flight on a current-thread runtime (one core), against a tokio task
//!    owning the state and serving an mpsc of (message, oneshot) pairs;
//! 2. create: N actors created in process (state `null`), time per actor;
//! 3. memory: resident memory per idle actor after creating N (state
//!    `null`), against one tokio task + mpsc channel per actor. Each memory
//!    variant must run in a process of its own (`--only memory-actors`,
//!    `--only memory-tasks`), so that one's freed pages do not hide the
//!    other's growth; `bench/actors/run.sh` runs them so.
//!
//! `cargo bench -p packetflow --bench actors -- [--only NAME] [--variant send|submit] [--n N] [--reps R]`

use std::hint::black_box;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use packetflow::actor::{ActorRef, Op};
use packetflow::{json, Reactor, Reply, Value};
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{args, measure, Args};

fn report(name: &str, (median, min, max): (f64, f64, f64)) -> f64 {
    println!("{name:<64} {median:>8.1} ns/message ({min:.1}-{max:.1})  {:>11.0} messages/s", 1e9 / median);
    median
}

/// The counter every variant runs: add one, answer the new value.
fn increment(state: &mut Value) -> Value {
    let value = state.as_i64().unwrap_or(0) + 1;
    *state = json!(value);
    json!(value)
}

type Request = (Value, oneshot::Sender<Value>);

/// Which of the turn variants run: all by default; `--variant send` or
/// `--variant submit` runs one alone (for a profile of it).
fn bench_turns(a: &Args, variant: Option<&str>) {
    println!("## 1. message -> behaviour -> reply, one active actor, 100 in flight, one core");
    let wanted = |name: &str| variant.is_none_or(|v| v == name);
    const WINDOW: usize = 100;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pipelined = |n: usize, send: &dyn Fn() -> futures::future::BoxFuture<'static, Value>| {
        rt.block_on(async {
            let mut inflight = FuturesUnordered::new();
            let (mut sent, mut done) = (0, 0);
            while done < n {
                while sent < n && inflight.len() < WINDOW {
                    inflight.push(send());
                    sent += 1;
                }
                black_box(inflight.next().await);
                done += 1;
            }
        })
    };

    let mailbox = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel::<Request>(1024);
        tokio::spawn(async move {
            let mut state = json!(0);
            while let Some((message, reply)) = rx.recv().await {
                black_box(&message);
                let _ = reply.send(increment(&mut state));
            }
        });
        tx
    });
    let floor = report(
        "baseline: tokio task + mpsc + oneshot per message",
        measure(a.n, a.reps, |n| {
            pipelined(n, &|| {
                let tx = mailbox.clone();
                Box::pin(async move {
                    let (reply, answer) = oneshot::channel();
                    tx.send((json!({"type": "increment"}), reply)).await.unwrap();
                    answer.await.unwrap()
                })
            })
        }),
    );

    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.register_fn("counter", |_, _, state, _| Ok(Reply::Value(increment(state)))).unwrap();
    let counter = rt.block_on(actors.create("counter", Some("c"), json!(0))).unwrap();
    if wanted("send") {
        let ours = report(
            "packetflow: Actors::send (an id made for each message)",
            measure(a.n, a.reps, |n| {
                pipelined(n, &|| {
                    let (actors, counter) = (actors.clone(), counter.clone());
                    Box::pin(
                        async move { actors.send(&counter, json!({"type": "increment"})).await.unwrap() },
                    )
                })
            }),
        );
        println!("ratio packetflow/baseline: {:.2}", ours / floor);
    }
    if wanted("submit") {
        let packets = report(
            "packetflow: Reactor::submit of an actor packet (what a peer sends)",
            measure(a.n, a.reps, |n| {
                pipelined(n, &|| {
                    let (reactor, counter) = (reactor.clone(), counter.clone());
                    Box::pin(async move {
                        reactor
                            .submit(counter.packet(Op::Send, json!({"type": "increment"})))
                            .await
                            .outcome
                            .unwrap()
                    })
                })
            }),
        );
        println!("ratio packet path/baseline: {:.2}", packets / floor);
    }
    println!();
}

fn bench_create(a: &Args) {
    println!("## 2. creating actors in process (state null)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.register_fn("idle", |_, _, _, _| Ok(Reply::Value(Value::Null))).unwrap();
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..a.n {
            actors.create("idle", Some(&format!("a{i}")), Value::Null).await.unwrap();
        }
    });
    let took = start.elapsed();
    println!(
        "packetflow: {} actors created in {:.3} s ({:.0} ns each)\n",
        a.n,
        took.as_secs_f64(),
        took.as_nanos() as f64 / a.n as f64
    );
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn bench_memory_actors(a: &Args) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reactor = Reactor::default();
    let actors = reactor.actors();
    actors.register_fn("idle", |_, _, _, _| Ok(Reply::Value(Value::Null))).unwrap();
    rt.block_on(async {
        // Warm the allocator and the runtime first.
        actors.create("idle", Some("warm"), Value::Null).await.unwrap();
        let before = rss();
        for i in 0..a.n {
            actors.create("idle", Some(&format!("a{i}")), Value::Null).await.unwrap();
        }
        let after = rss();
        assert_eq!(actors.stats()[0].active as usize, a.n + 1);
        // Still reachable: one message to the last one.
        let last = ActorRef::new("idle", &format!("a{}", a.n - 1)).unwrap();
        actors.send(&last, json!({"type": "ping"})).await.unwrap();
        println!(
            "packetflow: {} idle actors, RSS grew {:.1} MiB: {:.0} bytes per actor",
            a.n,
            (after - before) as f64 / 1048576.0,
            (after - before) as f64 / a.n as f64
        );
    });
}

fn bench_memory_tasks(a: &Args) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let before = rss();
        let mut senders = Vec::with_capacity(a.n);
        for _ in 0..a.n {
            let (tx, mut rx) = mpsc::channel::<Request>(16);
            tokio::spawn(async move {
                let mut state = Value::Null;
                while let Some((_, reply)) = rx.recv().await {
                    let _ = reply.send(increment(&mut state));
                }
            });
            senders.push(tx);
        }
        // Let every task reach its first await (parked on its channel).
        tokio::task::yield_now().await;
        let after = rss();
        println!(
            "baseline: {} tokio tasks + mpsc, RSS grew {:.1} MiB: {:.0} bytes per actor",
            a.n,
            (after - before) as f64 / 1048576.0,
            (after - before) as f64 / a.n as f64
        );
        black_box(senders);
    });
}

fn main() {
    let a = args(1_000_000);
    println!("packetflow actor benchmarks: n={} reps={}\n", a.n, a.reps);
    let only: Option<String> = std::env::args().skip_while(|x| x != "--only").nth(1);
    let variant: Option<String> = std::env::args().skip_while(|x| x != "--variant").nth(1);
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("turns") {
        bench_turns(&a, variant.as_deref());
    }
    if run("create") {
        bench_create(&a);
    }
    // Memory needs a process each: only when asked for by name.
    match only.as_deref() {
        Some("memory-actors") => bench_memory_actors(&a),
        Some("memory-tasks") => bench_memory_tasks(&a),
        _ => {}
    }
}
