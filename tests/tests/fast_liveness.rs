//! A frozen or cut-off PacketFlow peer is routed around within seconds
//! (docs/protocol.md, "Liveness"): nodes agree on a 1 s heartbeat in their
//! hellos, a peer silent for three beats is declared dead and what it held
//! is answered PF503; a busy peer and a seed peer are never declared dead
//! early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use packetflow::{json, Map, Node, NodeConfig, Packet, Value};
use packetflow_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const FAULT_NODE: &str = env!("CARGO_BIN_EXE_fault-node");

fn keyed(element: &str, key: &str, timeout_ms: u64) -> Packet {
    let mut meta = Map::new();
    meta.insert("pf.route_key".into(), Value::String(key.into()));
    Packet::build("df", element, json!(null)).unwrap().with_timeout_ms(timeout_ms).with_metadata(meta)
}

/// Which service answers each route key now: pid per key (`None`: failed).
async fn owners(hub: &Node, keys: &[String], timeout_ms: u64) -> HashMap<String, Option<u64>> {
    let calls = keys.iter().map(|k| async move {
        let r = hub.reactor().call(keyed("whoami", k, timeout_ms)).await;
        (k.clone(), r.ok().and_then(|v| v.as_u64()))
    });
    futures_util::future::join_all(calls).await.into_iter().collect()
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

/// Whether every thread of `pid` is stopped (state `T` in its
/// `/proc/PID/task/TID/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

fn health_of(node: &Node) -> Value {
    node.health()
}

/// `n` peers connected, every one with its hello in (a connection is
/// listed before its hello arrives, as a seed peer would be).
fn announced(hub: &Node, n: usize) -> bool {
    let peers = health_of(hub)["peers"].as_array().cloned().unwrap_or_default();
    peers.len() == n && peers.iter().all(|p| p["node_id"].is_string())
}

fn metric(node: &Node, name: &str) -> u64 {
    let text = node.metrics();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in /metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_is_routed_around_within_seconds_and_comes_back() {
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    let a = ChildNode::start(FAULT_NODE, &["service", "--connect", &url(addr)]);
    let b = ChildNode::start(FAULT_NODE, &["service", "--connect", &url(addr)]);
    until("both services announced", || announced(&hub, 2)).await;
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let before = owners(&hub, &keys, 2000).await;
    assert!(before.values().all(|o| o.is_some()), "{before:?}");
    let a_keys: Vec<String> =
        keys.iter().filter(|k| before[*k] == Some(u64::from(a.pid()))).cloned().collect();
    assert!(!a_keys.is_empty() && a_keys.len() < keys.len(), "the keys are spread: {before:?}");
    // Both services heartbeat at the agreed 1 s.
    let peers = health_of(&hub)["peers"].as_array().unwrap().clone();
    assert!(peers.iter().all(|p| p["heartbeat_ms"] == 1000 && p["state"] == "alive"), "{peers:?}");

    signal(a.pid(), "-STOP");
    // A stop reaches each thread of a process when that thread next runs:
    // on a loaded machine, one of the service's threads could still take
    // and answer the packet below after `kill` returned.
    until("every thread of the service is stopped", || all_threads_stopped(a.pid())).await;
    let stopped = Instant::now();
    // One packet already on its way to the frozen service: answered PF503
    // when it is declared dead, well before its own 20 s deadline.
    let held = {
        let hub = hub.clone();
        let key = a_keys[0].clone();
        tokio::spawn(async move { hub.reactor().submit(keyed("whoami", &key, 20_000)).await })
    };
    // Route-keyed submits (2 s each) until every key is answered again.
    let rerouted = loop {
        let now = owners(&hub, &keys, 2000).await;
        if now.values().all(|o| *o == Some(u64::from(b.pid()))) {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < Duration::from_secs(15), "not rerouted 15 s after the stop: {now:?}");
    };
    assert!(rerouted < Duration::from_secs(5), "rerouted only after {rerouted:?}");
    let held = held.await.unwrap();
    let e = held.err().expect("the held packet fails");
    assert!(e.is(packetflow::ErrorCode::Unavailable) && e.message.contains("declared dead"), "{e:?}");
    assert!(stopped.elapsed() < Duration::from_secs(6));
    assert_eq!(metric(&hub, "packetflow_peer_deaths_total"), 1);
    assert_eq!(health_of(&hub)["dead_peers"].as_array().unwrap().len(), 1);

    // Thawed, it redials, and its keys go back to it.
    signal(a.pid(), "-CONT");
    until("the thawed service is back with its hello", || announced(&hub, 2)).await;
    let after = owners(&hub, &keys, 2000).await;
    assert_eq!(after, before, "every key back with its first owner");
    drop((a, b));
    hub.stop().await;
}

/// A TCP proxy that can stop forwarding (both ways) without closing: once
/// cut, neither data nor a close gets through.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn to(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = TcpStream::connect(target).await.unwrap();
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, c.clone()));
                tokio::spawn(pump(ro, wi, c.clone()));
            }
        });
        Proxy { addr, cut }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            // A cut link carries no close either: the other side keeps
            // its socket open and hears nothing (the runtime's end drops it).
            Ok(0) | Err(_) if cut.load(Ordering::Relaxed) => std::future::pending().await,
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Cut: what arrives is swallowed, the sockets stay open.
        if !cut.load(Ordering::Relaxed) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_a_connection_that_drops_everything_is_declared_dead() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let proxy = Proxy::to(hub_addr).await;
    let (service, _) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    service.connect(&url(proxy.addr)).await.unwrap();
    until("the service announced", || hub.can_route(packetflow::Group::DataFlow, "upper")).await;
    let up = hub.reactor().call(Packet::build("df", "upper", json!("a")).unwrap()).await;
    assert_eq!(up, Ok(json!("A")));

    proxy.cut.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    let lost = hub.reactor().submit(Packet::build("df", "upper", json!("b")).unwrap()).await;
    let e = lost.err().expect("no answer through the cut");
    assert!(e.is(packetflow::ErrorCode::Unavailable) && e.message.contains("declared dead"), "{e:?}");
    assert!(cut.elapsed() < Duration::from_secs(5), "declared dead after {:?}", cut.elapsed());
    assert_eq!(hub.peer_count(), 0);
    assert_eq!(metric(&hub, "packetflow_peer_deaths_total"), 1);
    hub.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passed_in_a_peers_silence_makes_it_suspect_and_routing_skips_it() {
    // Beats of 1.5 s, so that suspicion (a 1.6 s deadline passed in
    // silence) comes well before death (three silent beats).
    let slow = NodeConfig { peer_heartbeat_interval: Duration::from_millis(1500), ..NodeConfig::default() };
    let (hub, hub_addr) = node("hub", slow.clone()).await;
    let proxy = Proxy::to(hub_addr).await;
    let (quiet, _) = node("quiet", slow.clone()).await;
    let (other, _) = node("other", slow).await;
    for n in [&quiet, &other] {
        register_upper(n.reactor());
    }
    quiet.connect(&url(proxy.addr)).await.unwrap();
    other.connect(&url(hub_addr)).await.unwrap();
    until("both announced", || announced(&hub, 2)).await;
    proxy.cut.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    // Every key owned by the quiet node times out once (1.6 s, beyond one
    // beat of silence): it turns suspect, and the same keys go elsewhere.
    let mut suspected = false;
    for i in 0..64 {
        let r = hub.reactor().submit(keyed("upper", &format!("k{i}"), 1600)).await;
        if !r.is_success() {
            suspected = true;
            break;
        }
    }
    assert!(suspected, "some key was owned by the quiet node");
    assert_eq!(metric(&hub, "packetflow_peer_suspicions_total"), 1);
    let states: Vec<Value> =
        health_of(&hub)["peers"].as_array().unwrap().iter().map(|p| p["state"].clone()).collect();
    assert!(states.contains(&json!("suspect")), "{states:?}");
    for i in 0..64 {
        let r = hub.reactor().call(keyed("upper", &format!("k{i}"), 1600)).await;
        assert!(r.is_ok(), "k{i} rerouted while the quiet node is suspect: {r:?}");
    }
    assert!(cut.elapsed() < Duration::from_millis(4500), "all this before the death rule");
    hub.stop().await;
    quiet.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_service_is_never_suspect_nor_dead() {
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    let service = ChildNode::start(FAULT_NODE, &["service", "--connect", &url(addr)]);
    until("the service announced", || announced(&hub, 1)).await;
    let answered = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(60);
    // Pipelined load through the hub at full speed on both cores, and a
    // handler that never answers holding packets for 2 s each.
    let mut load = Vec::new();
    for _ in 0..64 {
        let hub = hub.clone();
        let answered = answered.clone();
        load.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = hub.reactor().call(Packet::build("df", "upper", json!("busy")).unwrap()).await;
                assert_eq!(r, Ok(json!("BUSY")));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let stuck = {
        let hub = hub.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                let p = Packet::build("df", "stuck", json!(null)).unwrap().with_timeout_ms(2000);
                let r = hub.reactor().submit(p).await;
                assert!(r.err().unwrap().is(packetflow::ErrorCode::Timeout));
            }
        })
    };
    for task in load {
        task.await.unwrap();
    }
    stuck.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 10_000, "the load ran: {answered:?}");
    assert_eq!(hub.peer_count(), 1);
    assert_eq!(metric(&hub, "packetflow_peer_deaths_total"), 0);
    assert_eq!(metric(&hub, "packetflow_peer_suspicions_total"), 0);
    drop(service);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_keeps_the_seeds_30_s_rule() {
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    let mut seed = RawPeer::connect(&url(addr)).await;
    until("the seed peer is listed", || hub.peer_count() == 1).await;
    // Silent for twice the time that declares a PacketFlow node dead.
    let quiet_until = Instant::now() + Duration::from_secs(7);
    let mut heard = Vec::new();
    while let Ok(frame) = tokio::time::timeout_at(quiet_until, seed.recv()).await {
        heard.push(frame);
    }
    assert!(heard.is_empty(), "a seed peer is sent no hello nor fast heartbeat: {heard:?}");
    assert_eq!(hub.peer_count(), 1, "still connected");
    assert_eq!(health_of(&hub)["peers"][0]["heartbeat_ms"], 30_000);
    assert_eq!(metric(&hub, "packetflow_peer_deaths_total"), 0);
    seed.close().await;
    hub.stop().await;
}
