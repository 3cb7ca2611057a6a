//! Standard elements in process, each beside what a caller would do by
//! hand in the same run (one core, a current-thread runtime):
//!
//! 1. `cf:seq` of 3 trivial Rust steps, one packet at a time, against one
//!    submit and against three awaited submits (target: the seq at most 3x
//!    one submit);
//! 2. `co:gather` of 100 trivial calls against 100 concurrent submits from
//!    the caller (target: at most 1.5x);
//! 3. `rm:lock` acquire + unlock of one free lock, against the two actor
//!    messages they make sent by hand and two submits of a trivial async
//!    handler (target: at least 200,000 pairs per second);
//! 4. `rm:cache` `get` of a key this node owns (a hit), and `set`, one
//!    packet at a time, against one submit of a trivial handler (target:
//!    at least 1,000,000 gets per second);
//! 5. `mc:scale`: 100 async submits in flight to a key without a limit of
//!    its own, against the same key with a limit that never binds (1024):
//!    what a limit costs a key that has one (the keys without one pay only
//!    a null check; core/benches/core.rs measures that before and after);
//! 6. the `pf.no_mc` mark a node puts on a packet of a token without
//!    `mc:*` that it passes on (to a peer, an actor, the awaiting path; a
//!    handler it runs at once is told with a flag instead): a marked
//!    submit of a trivial sync handler against an unmarked one (the mark
//!    is one metadata entry, inherited by calls).
//! 7. `mc:migrate` over loopback (see `migrate`).
//!
//! `cargo bench -p packetflow --bench stdlib -- [--n N] [--reps R] [--only seq|gather|lock|cache|scale|mark|migrate]`

use std::hint::black_box;

use futures::stream::{FuturesUnordered, StreamExt};
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
    r.enable_stdlib(&StdlibPatterns::parse("cf:seq,co:gather,rm:cache").unwrap());
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
        // What the loop above spends on its input: a packet with three
        // step objects, built and dropped, which one submit's `json!(i)`
        // does not cost.
        let input = report(
            "building and dropping a cf:seq packet (no submit)",
            measure(a.n, a.reps, |n| {
                for _ in 0..n {
                    black_box(packet("cf", "seq", seq_data.clone()));
                }
            }),
        );
        println!("cf:seq / one submit: {:.2}x (target <= 3x)", seq / one);
        println!("cf:seq less its packet's building / one submit: {:.2}x\n", (seq - input) / one);
    }
    if wanted("gather") {
        bench_gather(&a, &rt, &r, &step);
    }
    if wanted("lock") {
        lock_pairs(&rt, &a);
    }
    if wanted("cache") {
        cache(&rt, &r, &a);
    }
    if wanted("scale") {
        bench_scale(&a, &rt);
    }
    if wanted("mark") {
        bench_mark(&a, &rt, &r);
    }
    if wanted("migrate") {
        migrate::run(&a);
    }
}

fn bench_gather(a: &common::Args, rt: &tokio::runtime::Runtime, r: &Reactor, step: &Value) {
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
}

/// `n` async submits of `df:<element>`, 100 in flight.
fn hundred_in_flight(rt: &tokio::runtime::Runtime, r: &Reactor, element: &str, n: usize) {
    rt.block_on(async {
        let mut inflight = FuturesUnordered::new();
        let (mut sent, mut done) = (0, 0);
        while done < n {
            while sent < n && inflight.len() < 100 {
                inflight.push(r.submit(packet("df", element, json!(sent))));
                sent += 1;
            }
            assert!(inflight.next().await.unwrap().is_success());
            done += 1;
        }
    })
}

fn bench_scale(a: &common::Args, rt: &tokio::runtime::Runtime) {
    println!("## 5. mc:scale: 100 async submits in flight, per packet");
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::parse("mc:scale").unwrap());
    for element in ["free", "limited"] {
        r.register("df", element, |v, _| async move { Ok(v) }).unwrap();
    }
    let scale = json!({"target": "df:limited", "max_concurrency": 1024});
    rt.block_on(r.call(packet("mc", "scale", scale))).unwrap();
    let free =
        report("a key without a limit", measure(a.n, a.reps, |n| hundred_in_flight(rt, &r, "free", n)));
    let limited = report(
        "a key with a limit of 1024 (never reached)",
        measure(a.n, a.reps, |n| hundred_in_flight(rt, &r, "limited", n)),
    );
    println!("limited / free: {:.2}x\n", limited / free);
}

fn bench_mark(a: &common::Args, rt: &tokio::runtime::Runtime, r: &Reactor) {
    println!("## 6. the pf.no_mc mark, one sync submit at a time, per packet");
    let plain = report(
        "an unmarked submit of df:inc",
        measure(a.n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    black_box(r.submit(packet("df", "inc", json!(i))).await);
                }
            })
        }),
    );
    let marked = report(
        "a submit of df:inc marked pf.no_mc",
        measure(a.n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    let mut p = packet("df", "inc", json!(i));
                    p.bar_mc();
                    black_box(r.submit(p).await);
                }
            })
        }),
    );
    println!("marked / unmarked: {:.2}x", marked / plain);
}

/// Section 3: `rm:lock` acquire + unlock, uncontended, one pair at a time.
fn lock_pairs(rt: &tokio::runtime::Runtime, a: &common::Args) {
    println!("## 3. rm:lock acquire + unlock of a free lock, one pair at a time");
    let r = Reactor::default();
    r.enable_stdlib(&StdlibPatterns::parse("rm:lock").unwrap());
    r.register("df", "echo", |d, _| async move { Ok(d) }).unwrap();
    r.actors()
        .register_fn("bench.lock", |_, m, state, _| {
            // What pf.lock's two turns do, without the checks.
            if m["type"] == "acquire" {
                let token = state["fence"].as_u64().unwrap_or(0) + 1;
                *state = json!({"fence": token, "holder": {"token": token, "expires_at": 1}});
                Ok(packetflow::actor::Reply::Value(json!({"acquired": true, "token": token})))
            } else {
                *state = json!({"fence": state["fence"]});
                Ok(packetflow::actor::Reply::Value(json!({"released": true})))
            }
        })
        .unwrap();
    let by_hand_actor = packetflow::actor::ActorRef::new("bench.lock", "db").unwrap();
    rt.block_on(r.actors().create("bench.lock", Some("db"), json!({}))).unwrap();
    let submits = report(
        "two submits of an async df:echo, per pair",
        measure(a.n, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    black_box(r.submit(packet("df", "echo", json!(i))).await);
                    black_box(r.submit(packet("df", "echo", json!(i))).await);
                }
            })
        }),
    );
    let sends = report(
        "two actor messages by hand (Actors::send), per pair",
        measure(a.n, a.reps, |n| {
            rt.block_on(async {
                for _ in 0..n {
                    let actors = r.actors();
                    black_box(actors.send(&by_hand_actor, json!({"type": "acquire"})).await.unwrap());
                    black_box(actors.send(&by_hand_actor, json!({"type": "unlock"})).await.unwrap());
                }
            })
        }),
    );
    let pair = report(
        "rm:lock acquire + rm:lock unlock, per pair",
        measure(a.n, a.reps, |n| {
            rt.block_on(async {
                for _ in 0..n {
                    let got = r.call(packet("rm", "lock", json!({"name": "db", "ttl_ms": 30_000}))).await;
                    let token = got.unwrap()["token"].clone();
                    let unlock = json!({"unlock": "db", "token": token});
                    black_box(r.call(packet("rm", "lock", unlock)).await.unwrap());
                }
            })
        }),
    );
    println!("rm:lock pair / two async submits: {:.2}x", pair / submits);
    println!("rm:lock pair / two actor messages by hand: {:.2}x", pair / sends);
    println!("rm:lock pairs per second: {:.0} (target >= 200000)\n", 1e9 / pair);
}

/// Section 4: `rm:cache` beside a plain submit, in the same run.
fn cache(rt: &tokio::runtime::Runtime, r: &Reactor, a: &common::Args) {
    println!("## 4. rm:cache, one packet at a time");
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
