//! Standard elements in process, each beside what a caller would do by
//! hand in the same run (one core, a current-thread runtime):
//!
//! 1. `cf:seq` of 3 trivial Rust steps, one packet at a time, against one
//!    submit and against three awaited submits (target: the seq at most 3x
//!    one submit);
//! 2. `co:gather` of 100 trivial calls against 100 concurrent submits from
//!    the caller (target: at most 1.5x);
//! 3. `mc:migrate` over loopback (see `migrate`).
//!
//! `cargo bench -p packetflow --bench stdlib -- [--n N] [--reps R] [--only seq|gather|migrate]`

use std::hint::black_box;

use packetflow::stdlib::StdlibPatterns;
use packetflow::{json, Packet, Reactor, Value};

mod common;
mod migrate;
use common::{args, measure};

fn report(name: &str, (median, min, max): (f64, f64, f64)) -> f64 {
    println!("{name:<58} {median:>9.1} ns ({min:.1}-{max:.1})");
    median
}

fn packet(group: &str, element: &str, data: Value) -> Packet {
    Packet::build(group, element, data).unwrap()
}

fn main() {
    let a = args(20_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::parse("cf:seq,co:gather").unwrap());
    r.register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap_or(0) + 1))).unwrap();
    let step = json!({"group": "df", "element": "inc"});
    let argv: Vec<String> = std::env::args().collect();
    let only = argv.iter().position(|x| x == "--only").and_then(|i| argv.get(i + 1)).cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if only.as_deref() == Some("migrate") {
        migrate::run(&a);
        return;
    }

    if wanted("seq") {
        println!("## 1. cf:seq of 3 trivial steps, one at a time");
        let one = report(
            "one submit of df:inc",
            measure(a.n, a.reps, |n| {
                rt.block_on(async {
                    for i in 0..n {
                        black_box(r.submit(packet("df", "inc", json!(i))).await);
                    }
                })
            }),
        );
        report(
            "three awaited submits of df:inc",
            measure(a.n, a.reps, |n| {
                rt.block_on(async {
                    for i in 0..n {
                        let mut v = json!(i);
                        for _ in 0..3 {
                            v = r.submit(packet("df", "inc", v)).await.outcome.unwrap();
                        }
                        black_box(v);
                    }
                })
            }),
        );
        let seq_data = json!({"steps": [step, step, step], "input": 0});
        let seq = report(
            "cf:seq of three df:inc steps",
            measure(a.n, a.reps, |n| {
                rt.block_on(async {
                    for _ in 0..n {
                        black_box(r.submit(packet("cf", "seq", seq_data.clone())).await);
                    }
                })
            }),
        );
        println!("cf:seq / one submit: {:.2}x (target <= 3x)\n", seq / one);
    }
    if !wanted("gather") {
        return;
    }

    println!("## 2. co:gather of 100 trivial calls");
    let calls: Vec<Value> = (0..100).map(|_| step.clone()).collect();
    let gather_data = json!({"calls": calls});
    let n = (a.n / 100).max(10);
    let by_hand = report(
        "100 concurrent submits of df:inc (join_all), per batch",
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for _ in 0..n {
                    let all = (0..100).map(|i| r.submit(packet("df", "inc", json!(i))));
                    black_box(futures::future::join_all(all).await);
                }
            })
        }),
    );
    let gather = report(
        "co:gather of 100 df:inc calls, per packet",
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for _ in 0..n {
                    black_box(r.submit(packet("co", "gather", gather_data.clone())).await);
                }
            })
        }),
    );
    println!("co:gather / 100 submits: {:.2}x (target <= 1.5x)\n", gather / by_hand);
    if wanted("migrate") {
        migrate::run(&a);
    }
}
