//! Core benchmarks, each beside its floor measured in the same run:
//!
//! 1. dispatch: handler lookup + invoke of a trivial sync handler, against a
//!    bare `HashMap<String, Box<dyn Fn>>` lookup + call (and the seed's
//!    per-packet `format!` of the key, for scale);
//! 2. frame: JSON submit frame decode -> reactor submit -> result frame
//!    encode, against serde_json alone decoding typed structs and encoding;
//! 3. submit: in-process async submit -> async handler -> result through the
//!    scheduler with 100 in flight on a current-thread runtime (one core),
//!    against a plain async dispatch (map lookup + await) with 100 in flight;
//! 4. build: a packet from loose fields (`PacketParts::into_packet`, what
//!    every binding and the CLI call per submit) against the typed
//!    constructor `Packet::build`, both with a fresh UUID id;
//! 5. cancel: 10,000 packets in flight on one reactor (1,024 running, the
//!    rest queued), every one cancelled: how long the `Reactor::cancel`
//!    calls take, and until every submit has its PF499 answer;
//! 6. cancel-net: the same 10,000 forwarded by one node to another over
//!    loopback and cancelled on the first: until every submit has its
//!    answer, and until the second node has nothing left in flight (its
//!    10,000 cancel frames read and acted on).
//!
//! `cargo bench -p packetflow --bench core -- [--n N] [--reps R]`
//! Prints one line per variant: median ns/packet over R repetitions, with
//! the min-max range, and packets/s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use packetflow::wire::Decoded;
use packetflow::{
    json, Codec, ErrorCode, Field, Group, HandlerResult, Message, Node, NodeConfig, Packet, PacketId,
    PacketParts, Priority, Reactor, Value,
};
use serde::{Deserialize, Serialize};

mod common;
use common::{args, measure, Args};

const KEYS: [(&str, &str); 24] = [
    ("cf", "seq"),
    ("cf", "branch"),
    ("cf", "loop"),
    ("cf", "gate"),
    ("df", "produce"),
    ("df", "consume"),
    ("df", "transform"),
    ("df", "reduce"),
    ("ed", "signal"),
    ("ed", "timer"),
    ("ed", "watch"),
    ("ed", "react"),
    ("co", "sync"),
    ("co", "broadcast"),
    ("co", "gather"),
    ("co", "vote"),
    ("mc", "spawn"),
    ("mc", "migrate"),
    ("mc", "scale"),
    ("mc", "tune"),
    ("rm", "alloc"),
    ("rm", "free"),
    ("rm", "lock"),
    ("rm", "cache"),
];

fn report(name: &str, (median, min, max): (f64, f64, f64)) -> f64 {
    println!("{name:<58} {median:>9.1} ns/packet ({min:.1}-{max:.1})  {:>12.0} packets/s", 1e9 / median);
    median
}

/// The floor of dispatch: a map of boxed closures, no reactor.
type StrHandlers = HashMap<String, Box<dyn Fn(&str) -> usize>>;
/// The floor of the frame path's handler lookup.
type ValueHandlers = HashMap<String, Box<dyn Fn(&Value) -> Value>>;

fn bench_dispatch(a: &Args) {
    println!("## 1. dispatch: lookup + invoke of a trivial sync handler");
    let mut floor: StrHandlers = HashMap::new();
    for (i, (g, e)) in KEYS.iter().enumerate() {
        floor.insert(format!("{g}:{e}"), Box::new(move |s: &str| s.len() + i));
    }
    let keys: Vec<String> = KEYS.iter().map(|(g, e)| format!("{g}:{e}")).collect();
    let f = report(
        "floor: HashMap<String, Box<dyn Fn>> lookup + call",
        measure(a.n, a.reps, |n| {
            let mut acc = 0;
            for i in 0..n {
                let k = &keys[i % keys.len()];
                acc += floor.get(k.as_str()).unwrap()(k);
            }
            black_box(acc);
        }),
    );
    report(
        "seed style: format!(\"{group}:{element}\") per packet",
        measure(a.n, a.reps, |n| {
            let mut acc = 0;
            for i in 0..n {
                let (g, e) = KEYS[i % KEYS.len()];
                let k = format!("{g}:{e}");
                acc += floor.get(&k).unwrap()(&k);
            }
            black_box(acc);
        }),
    );
    let reactor = Reactor::default();
    for (i, (g, e)) in KEYS.iter().enumerate() {
        reactor.register_sync(g, e, move |_, _| Ok(Value::from(i))).unwrap();
    }
    let ctx = reactor.context_for_bench();
    let parsed: Vec<(Group, &str)> = KEYS.iter().map(|(g, e)| (Group::parse(g).unwrap(), *e)).collect();
    let ours = report(
        "packetflow: Reactor handler lookup + invoke",
        measure(a.n, a.reps, |n| {
            let mut acc = 0u64;
            for i in 0..n {
                let (g, e) = parsed[i % parsed.len()];
                let out = reactor.dispatch_sync_for_bench(g, e, Value::Null, &ctx).unwrap();
                acc += out.unwrap().as_u64().unwrap();
            }
            black_box(acc);
        }),
    );
    println!("ratio packetflow/floor: {:.2}\n", ours / f);
}

#[derive(Deserialize)]
struct FloorFrame<'a> {
    #[serde(rename = "type", borrow)]
    _ty: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    payload: FloorPacket<'a>,
}

#[derive(Deserialize)]
struct FloorPacket<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    element: Cow<'a, str>,
    data: Value,
}

#[derive(Serialize)]
struct FloorOut<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    seq: u64,
    payload: FloorResult<'a>,
}

#[derive(Serialize)]
struct FloorResult<'a> {
    packet_id: &'a str,
    status: &'static str,
    data: Value,
    duration_ms: u64,
}

fn frames(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let p = Packet::build("df", "transform", json!("hello world")).unwrap();
            Codec::Json.encode_to_vec(&Message::Submit { seq: i as u64 + 1, packet: Box::new(p) })
        })
        .collect()
}

fn bench_frame(a: &Args) {
    println!("## 2. JSON frame decode -> dispatch -> result encode");
    let input = frames(1024);
    let mut upper: ValueHandlers = HashMap::new();
    upper.insert(
        "df:transform".into(),
        Box::new(|v| Value::String(v.as_str().unwrap_or_default().to_uppercase())),
    );
    let mut out = Vec::with_capacity(256);
    let f = report(
        "floor: serde_json typed decode + HashMap dispatch + encode",
        measure(a.n / 4, a.reps, |n| {
            for i in 0..n {
                let frame: FloorFrame = serde_json::from_slice(&input[i % input.len()]).unwrap();
                let p = frame.payload;
                let key = [p.group.as_ref(), p.element.as_ref()].join(":");
                let data = upper.get(&key).unwrap()(&p.data);
                out.clear();
                let res = FloorResult { packet_id: &p.id, status: "success", data, duration_ms: 0 };
                serde_json::to_writer(&mut out, &FloorOut { ty: "result", seq: frame.seq, payload: res })
                    .unwrap();
                black_box(&out);
            }
        }),
    );
    let reactor = Reactor::default();
    reactor
        .register_sync("df", "transform", |v, _| {
            Ok(Value::String(v.as_str().unwrap_or_default().to_uppercase()))
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ours = report(
        "packetflow: Codec::decode -> Reactor::submit -> Codec::encode",
        measure(a.n / 4, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    let Decoded::Single(Ok(Message::Submit { seq, packet })) =
                        Codec::Json.decode(&input[i % input.len()])
                    else {
                        panic!("bad frame")
                    };
                    let result = reactor.submit(*packet).await;
                    out.clear();
                    Codec::Json.encode(&Message::Result { seq, result }, &mut out);
                    black_box(&out);
                }
            })
        }),
    );
    println!("ratio packetflow/floor: {:.2}", ours / f);
    // The three steps alone, to see where the time goes.
    report(
        "  of which: Codec::decode",
        measure(a.n / 4, a.reps, |n| {
            for i in 0..n {
                black_box(Codec::Json.decode(&input[i % input.len()]));
            }
        }),
    );
    let packets: Vec<Packet> =
        (0..1024).map(|_| Packet::build("df", "transform", json!("hello world")).unwrap()).collect();
    report(
        "  of which: Reactor::submit (sync handler, packet clone)",
        measure(a.n / 4, a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    black_box(reactor.submit(packets[i % packets.len()].clone()).await);
                }
            })
        }),
    );
    let result = Message::Result {
        seq: 1,
        result: packetflow::PacketResult::success(packets[0].id.clone(), json!("HELLO WORLD"), 0),
    };
    report(
        "  of which: Codec::encode of the result",
        measure(a.n / 4, a.reps, |n| {
            for _ in 0..n {
                out.clear();
                Codec::Json.encode(&result, &mut out);
                black_box(&out);
            }
        }),
    );
    println!();
}

type BoxedHandler = Box<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Value>>>>;

fn bench_submit(a: &Args) {
    println!("## 3. async submit -> async handler -> result, 100 in flight, one core");
    const WINDOW: usize = 100;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut floor: HashMap<String, BoxedHandler> = HashMap::new();
    floor.insert("df:echo".into(), Box::new(|v| Box::pin(async move { v })));
    let key = "df:echo".to_string();
    let f = report(
        "floor: HashMap lookup + boxed async fn, 100 in flight",
        measure(a.n / 2, a.reps, |n| {
            rt.block_on(async {
                let mut inflight = FuturesUnordered::new();
                let mut sent = 0;
                let mut done = 0;
                while done < n {
                    while sent < n && inflight.len() < WINDOW {
                        inflight.push(floor.get(&key).unwrap()(Value::from(sent)));
                        sent += 1;
                    }
                    black_box(inflight.next().await);
                    done += 1;
                }
            })
        }),
    );

    let reactor = Reactor::default();
    reactor.register("df", "echo", |v, _| async move { Ok(v) }).unwrap();
    let template = Packet::build("df", "echo", Value::Null).unwrap();
    let ours = report(
        "packetflow: Reactor::submit (fresh UUID id per packet)",
        measure(a.n / 2, a.reps, |n| {
            rt.block_on(async {
                let mut inflight = FuturesUnordered::new();
                let mut sent = 0;
                let mut done = 0;
                while done < n {
                    while sent < n && inflight.len() < WINDOW {
                        let p = Packet::new(template.group, template.element.clone(), Value::from(sent));
                        inflight.push(reactor.submit(p));
                        sent += 1;
                    }
                    let r = inflight.next().await.unwrap();
                    assert!(r.is_success());
                    done += 1;
                }
            })
        }),
    );
    println!("ratio packetflow/floor: {:.2}", ours / f);
    println!("packetflow submits/s on one core: {:.0}\n", 1e9 / ours);
}

fn bench_build(a: &Args) {
    println!("## 4. a packet from loose fields, fresh UUID id");
    let f = report(
        "floor: Packet::build(group, element, data)",
        measure(a.n, a.reps, |n| {
            for i in 0..n {
                let (g, e) = KEYS[i % KEYS.len()];
                black_box(Packet::build(black_box(g), black_box(e), Value::Null).unwrap());
            }
        }),
    );
    let ours = report(
        "packetflow: PacketParts {group, element, data}.into_packet()",
        measure(a.n, a.reps, |n| {
            for i in 0..n {
                let (g, e) = KEYS[i % KEYS.len()];
                let parts = PacketParts {
                    group: Some(black_box(g).into()),
                    element: Some(black_box(e).into()),
                    data: Some(Value::Null),
                    ..PacketParts::default()
                };
                black_box(parts.into_packet().unwrap());
            }
        }),
    );
    println!("ratio packetflow/floor: {:.2}", ours / f);
    let deps = [Field::from("a"), Field::from("b")];
    let meta = json!({"pf.trace_id": "t-1", "k": 1});
    let f = report(
        "floor: Packet::build + id, priority, timeout, 2 deps, metadata",
        measure(a.n / 2, a.reps, |n| {
            for i in 0..n {
                let (g, e) = KEYS[i % KEYS.len()];
                let mut p = Packet::build(black_box(g), black_box(e), Value::Null).unwrap();
                p.id = PacketId::new(black_box("p-1")).unwrap();
                let p = p
                    .with_priority(Priority::new(black_box(7)).unwrap())
                    .with_timeout_ms(black_box(250))
                    .with_dependencies(vec![PacketId::new("a").unwrap(), PacketId::new("b").unwrap()])
                    .with_metadata(meta.as_object().unwrap().clone());
                p.validate().unwrap();
                black_box(p);
            }
        }),
    );
    let ours = report(
        "packetflow: PacketParts with every field .into_packet()",
        measure(a.n / 2, a.reps, |n| {
            for i in 0..n {
                let (g, e) = KEYS[i % KEYS.len()];
                let parts = PacketParts {
                    id: Some(black_box("p-1").into()),
                    group: Some(black_box(g).into()),
                    element: Some(black_box(e).into()),
                    data: Some(Value::Null),
                    priority: Some(Field::Int(black_box(7))),
                    timeout_ms: Some(Field::Int(black_box(250))),
                    dependencies: Some(Field::List(deps.to_vec())),
                    metadata: Some(meta.clone()),
                };
                black_box(parts.into_packet().unwrap());
            }
        }),
    );
    println!("ratio packetflow/floor: {:.2}\n", ours / f);
}

/// Packets in flight when the cancel benchmarks cancel them.
const TO_CANCEL: usize = 10_000;

/// `df:wait`, a handler that never answers.
fn register_wait(reactor: &Reactor) {
    reactor.register("df", "wait", |_, _| std::future::pending::<HandlerResult>()).unwrap();
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn bench_cancel(a: &Args) {
    println!("## 5. cancel {TO_CANCEL} packets in flight on one reactor (1024 running, the rest queued)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut calls, mut answered) = (Vec::new(), Vec::new());
    for _ in 0..a.reps {
        let (c, all) = rt.block_on(async {
            let reactor = Reactor::default();
            register_wait(&reactor);
            let packets: Vec<Packet> =
                (0..TO_CANCEL).map(|_| Packet::build("df", "wait", Value::Null).unwrap()).collect();
            let ids: Vec<PacketId> = packets.iter().map(|p| p.id.clone()).collect();
            let mut inflight: FuturesUnordered<_> = packets.into_iter().map(|p| reactor.submit(p)).collect();
            // One poll of each: every packet is running or queued.
            assert!(futures::poll!(inflight.next()).is_pending());
            assert_eq!(reactor.stats().in_flight, TO_CANCEL);
            let start = std::time::Instant::now();
            for id in &ids {
                assert!(reactor.cancel(id));
            }
            let called = start.elapsed();
            let mut done = 0;
            while let Some(result) = inflight.next().await {
                assert_eq!(result.err().and_then(|e| e.kind()), Some(ErrorCode::Cancelled));
                done += 1;
            }
            let all = start.elapsed();
            assert_eq!((done, reactor.stats().in_flight, reactor.stats().queued), (TO_CANCEL, 0, 0));
            (called, all)
        });
        calls.push(ms(c));
        answered.push(ms(all));
    }
    let (m, lo, hi) = median(calls);
    println!("Reactor::cancel x {TO_CANCEL}: {m:.2} ms ({lo:.2}-{hi:.2})");
    let (m, lo, hi) = median(answered);
    println!("until every submit answered PF499: {m:.2} ms ({lo:.2}-{hi:.2})  (target <= 50 ms)\n");
}

fn bench_cancel_net(a: &Args) {
    println!("## 6. cancel {TO_CANCEL} packets forwarded to a second node over loopback");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut answered, mut settled) = (Vec::new(), Vec::new());
    for _ in 0..a.reps {
        let (all, far) = rt.block_on(async {
            // Room for every packet on the one connection.
            let config = NodeConfig { max_inflight_per_conn: 2 * TO_CANCEL, ..NodeConfig::default() };
            let server = Node::new(Reactor::default(), config.clone());
            register_wait(server.reactor());
            let addr = server.listen("127.0.0.1:0").await.unwrap();
            let client = Node::new(Reactor::default(), config);
            client.connect(&format!("ws://{addr}/packetflow/v1")).await.unwrap();
            let packets: Vec<Packet> =
                (0..TO_CANCEL).map(|_| Packet::build("df", "wait", Value::Null).unwrap()).collect();
            let ids: Vec<PacketId> = packets.iter().map(|p| p.id.clone()).collect();
            let reactor = client.reactor().clone();
            let mut inflight: FuturesUnordered<_> = packets.into_iter().map(|p| reactor.submit(p)).collect();
            assert!(futures::poll!(inflight.next()).is_pending());
            // Every packet reached the server (running or queued there).
            // Looked at every half millisecond: a tighter loop would take
            // one of the two cores from the nodes it waits for.
            let look_again = || tokio::time::sleep(std::time::Duration::from_micros(500));
            while server.reactor().stats().in_flight < TO_CANCEL {
                look_again().await;
            }
            let start = std::time::Instant::now();
            for id in &ids {
                assert!(reactor.cancel(id));
            }
            while let Some(result) = inflight.next().await {
                assert_eq!(result.err().and_then(|e| e.kind()), Some(ErrorCode::Cancelled));
            }
            let all = start.elapsed();
            while server.reactor().stats().in_flight > 0 {
                look_again().await;
            }
            let far = start.elapsed();
            client.stop().await;
            server.stop().await;
            (all, far)
        });
        answered.push(ms(all));
        settled.push(ms(far));
    }
    let (m, lo, hi) = median(answered);
    println!("until every submit answered PF499 (first node): {m:.2} ms ({lo:.2}-{hi:.2})");
    let (m, lo, hi) = median(settled);
    println!(
        "until nothing is in flight on the second node: {m:.2} ms ({lo:.2}-{hi:.2})  (target <= 50 ms)\n"
    );
}

fn main() {
    let a = args(2_000_000);
    println!("packetflow core benchmarks: n={} reps={}\n", a.n, a.reps);
    let only: Option<String> = std::env::args().skip_while(|x| x != "--only").nth(1);
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("dispatch") {
        bench_dispatch(&a);
    }
    if run("frame") {
        bench_frame(&a);
    }
    if run("submit") {
        bench_submit(&a);
    }
    if run("build") {
        bench_build(&a);
    }
    if run("cancel") {
        bench_cancel(&a);
    }
    if run("cancel-net") {
        bench_cancel_net(&a);
    }
}
