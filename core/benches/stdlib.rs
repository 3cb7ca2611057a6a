//! Standard elements in process, each beside what a caller would do by
//! hand in the same run (one core, a current-thread runtime):
//!
//! 1. `cf:seq` of 3 trivial Rust steps, one packet at a time, against one
//!    submit and against three awaited submits (target: the seq at most 3x
//!    one submit);
//! 2. `co:gather` of 100 trivial calls against 100 concurrent submits from
//!    the caller (target: at most 1.5x);
//! 3. `rm:cache` `get` of a key this node owns (a hit), and `set`, one
//!    packet at a time, against one submit of a trivial handler (target:
//!    at least 1,000,000 gets per second).
//!
//! `cargo bench -p packetflow --bench stdlib -- [--n N] [--reps R] [--only seq|gather|cache]`

use std::hint::black_box;

use packetflow::stdlib::StdlibPatterns;
use packetflow::{json, Packet, Reactor, Value};

mod common;
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
    r.enable_stdlib(&StdlibPatterns::parse("cf:seq,co:gather,rm:cache").unwrap());
    r.register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap_or(0) + 1))).unwrap();
    let step = json!({"group": "df", "element": "inc"});
    let argv: Vec<String> = std::env::args().collect();
    let only = argv.iter().position(|x| x == "--only").and_then(|i| argv.get(i + 1)).cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);

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
    if wanted("cache") {
        cache(&rt, &r, &a);
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
    println!("co:gather / 100 submits: {:.2}x (target <= 1.5x)", gather / by_hand);
}

/// Section 3: `rm:cache` beside a plain submit, in the same run.
fn cache(rt: &tokio::runtime::Runtime, r: &Reactor, a: &common::Args) {
    println!("## 3. rm:cache, one packet at a time");
    let n = a.n * 10;
    let one = report(
        "one submit of df:inc",
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    black_box(r.submit(packet("df", "inc", json!(i))).await);
                }
            })
        }),
    );
    let keys: Vec<String> = (0..1000).map(|i| format!("user:{i}")).collect();
    let gets: Vec<Value> = keys.iter().map(|key| json!({"op": "get", "key": key})).collect();
    let get_all = |what: &str| {
        report(
            &format!("rm:cache get (a hit, 1000 keys in turn), {what}"),
            measure(n, a.reps, |n| {
                rt.block_on(async {
                    for i in 0..n {
                        let result = r.submit(packet("rm", "cache", gets[i % gets.len()].clone())).await;
                        debug_assert_eq!(result.outcome.as_ref().unwrap()["hit"], json!(true));
                        black_box(result);
                    }
                })
            }),
        )
    };
    let set_all = |value: &dyn Fn(&str) -> Value| {
        rt.block_on(async {
            for key in &keys {
                let data = json!({"op": "set", "key": key, "value": value(key)});
                assert!(r.submit(packet("rm", "cache", data)).await.is_success());
            }
        })
    };
    set_all(&|key| json!(format!("session-of-{key}")));
    // The floor of any element that may wait: a trivial async handler.
    r.register("df", "has_key", |d, _| async move { Ok(json!(d["key"].is_string())) }).unwrap();
    let floor = report(
        "one submit of a trivial async handler, a get's data",
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    black_box(r.submit(packet("df", "has_key", gets[i % gets.len()].clone())).await);
                }
            })
        }),
    );
    let get = get_all("a string value");
    set_all(&|key| json!({"name": key, "visits": 1}));
    get_all("an object value {name, visits}");
    report(
        "rm:cache set (1000 keys in turn)",
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    let key = &keys[i % keys.len()];
                    let data = json!({"op": "set", "key": key, "value": {"name": key, "visits": i}});
                    black_box(r.submit(packet("rm", "cache", data)).await);
                }
            })
        }),
    );
    println!(
        "rm:cache get: {:.2} M/s; get / one submit: {:.2}x; get / async floor: {:.2}x (target >= 1 M/s)\n",
        1e3 / get,
        get / one,
        get / floor
    );
}
