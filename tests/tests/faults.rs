//! Faults, on loopback and bounded in time: a service process killed
//! mid-request, a peer that stops reading, slow-loris upgrades, a
//! reconnect storm of 200 clients, a hub killed and restarted while its
//! peers redial. Each checks that every submit a node accepted got exactly
//! one answer. (The graceful versions, a node stopping and a peer going
//! silent, are in `liveness.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use packetflow::{json, ErrorCode, Group, Node, NodeConfig, Packet, Value};
use packetflow_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const FAULT_NODE: &str = env!("CARGO_BIN_EXE_fault-node");

/// Reads answers until each of `seqs` has one; fails on an answer for a
/// `seq` not asked for or already answered. Returns them by `seq`.
async fn answers_for(peer: &mut RawPeer, seqs: impl IntoIterator<Item = u64>) -> HashMap<u64, Value> {
    let mut wanted: std::collections::HashSet<u64> = seqs.into_iter().collect();
    let mut answers = HashMap::new();
    while !wanted.is_empty() {
        let answer = peer.recv_open().await;
        let seq = answer["seq"].as_u64().unwrap_or_else(|| panic!("an answer without a seq: {answer}"));
        assert!(wanted.remove(&seq), "an answer for seq {seq}, not awaited (twice?): {answer}");
        answers.insert(seq, answer);
    }
    answers
}

/// Sends one more `df:upper` submit and checks that the very next frame is
/// its answer: nothing else (no second answer to an earlier submit) was
/// owed to this peer.
async fn nothing_more(peer: &mut RawPeer, fence: u64) {
    peer.send_json(&submit_frame(fence, &format!("fence-{fence}"), "df", "upper", json!("fence"))).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["seq"], fence, "an answer nobody awaited came first: {answer}");
    assert_eq!(answer["payload"]["data"], "FENCE");
}

fn code(answer: &Value) -> &str {
    answer["payload"]["error"]["code"].as_str().unwrap_or("")
}

fn peers_in_flight(n: &Node) -> u64 {
    n.health()["peers"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["in_flight"].as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_process_killed_mid_request_answers_pf503_to_every_submitter() {
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    register_upper(hub.reactor());
    let service = ChildNode::start(FAULT_NODE, &["service", "--connect", &url(addr)]);
    until("the service announced df:stuck", || hub.can_route(Group::DataFlow, "stuck")).await;
    let mut clients = Vec::new();
    for c in 0..3 {
        let mut peer = RawPeer::connect(&url(addr)).await;
        for seq in 1..=10u64 {
            peer.send_json(&submit_frame(seq, &format!("c{c}-stuck-{seq}"), "df", "stuck", json!(seq))).await;
        }
        for seq in 11..=15u64 {
            peer.send_json(&submit_frame(seq, &format!("c{c}-work-{seq}"), "df", "work", json!(seq))).await;
        }
        // The service answers its df:work at once...
        for (seq, answer) in answers_for(&mut peer, 11..=15).await {
            assert_eq!(answer["payload"]["data"], seq, "{answer}");
        }
        clients.push(peer);
    }
    // ...and holds the thirty df:stuck ones when it is killed.
    until("the service holds 30 packets", || peers_in_flight(&hub) == 30).await;
    service.kill();
    for (c, peer) in clients.iter_mut().enumerate() {
        for (seq, answer) in answers_for(peer, 1..=10).await {
            assert_eq!(code(&answer), "PF503", "{answer}");
            assert_eq!(answer["payload"]["packet_id"], format!("c{c}-stuck-{seq}"));
            let message = answer["payload"]["error"]["message"].as_str().unwrap();
            assert!(message.contains("went away"), "{message}");
        }
        nothing_more(peer, 100).await;
    }
    until("the hub forgot the service", || hub.peer_count() == 3).await;
    assert!(!hub.can_route(Group::DataFlow, "stuck"));
    assert_eq!(hub.reactor().stats().in_flight, 0);
    assert_eq!(peers_in_flight(&hub), 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_and_the_hub_memory_stays_bounded() {
    const ANSWER: u64 = 64 * 1024;
    let hub = ChildNode::start(
        FAULT_NODE,
        &["hub", "--heartbeat-ms", "100", "--handshake-ms", "1000", "--max-inflight-per-conn", "64"],
    );
    // Warm the hub's allocator up with a reader taking the same answers.
    let mut warm = RawPeer::connect(&hub.url()).await;
    for seq in 1..=200u64 {
        warm.send_json(&submit_frame(seq, &format!("w{seq}"), "df", "big", json!(ANSWER))).await;
    }
    answers_for(&mut warm, 1..=200).await;
    warm.close().await;
    let baseline = hub.rss_kib();

    // This peer sends 64 KiB requests as fast as the hub takes them and
    // never reads: the hub must stop reading it (its sends stall) instead
    // of piling answers up.
    let (ws, _) = tokio_tungstenite::connect_async(hub.url()).await.unwrap();
    let (mut sink, _never_read) = ws.split();
    let mut peak = baseline;
    let mut sent = 0u64;
    loop {
        let frame = submit_frame(sent + 1, &format!("b{sent}"), "df", "big", json!(ANSWER));
        match tokio::time::timeout(
            Duration::from_millis(500),
            sink.send(WsMessage::Text(frame.to_string().into())),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("the connection failed before the hub stopped reading it: {e}"),
            Err(_) => break, // stalled
        }
        assert!(sent < 1_000_000, "the hub never stopped reading a peer that does not read");
        if sent.is_multiple_of(512) {
            peak = peak.max(hub.rss_kib());
        }
    }
    // While it is stalled, another peer is served as usual.
    let mut other = RawPeer::connect(&hub.url()).await;
    for seq in 1..=20u64 {
        other.send_json(&submit_frame(seq, &format!("o{seq}"), "df", "upper", json!("ok"))).await;
    }
    for answer in answers_for(&mut other, 1..=20).await.values() {
        assert_eq!(answer["payload"]["data"], "OK");
    }
    nothing_more(&mut other, 21).await;
    // The hub closes the stalled peer (after a handshake time of stall,
    // then a handshake time for the close frame it cannot deliver) and
    // drops the socket: the peer's blocked send fails.
    let closed_at = Instant::now();
    let frame = submit_frame(u64::MAX, "last", "df", "big", json!(ANSWER));
    let result = loop {
        peak = peak.max(hub.rss_kib());
        let sending = sink.send(WsMessage::Text(frame.to_string().into()));
        match tokio::time::timeout(Duration::from_millis(100), sending).await {
            Ok(result) => break result,
            Err(_) => assert!(closed_at.elapsed() < WAIT, "the hub never dropped the stalled peer"),
        }
    };
    assert!(result.is_err(), "the hub dropped the stalled peer, so its send fails");
    let (_, health) = http_get(&hub.addr(), "/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["connections"], 1, "only the reading peer is left: {health}");
    assert_eq!(health["queued_bytes"], 0, "{health}");
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("stalled after {sent} submits; hub RSS {baseline} KiB, peak {peak} KiB (+{growth_mib} MiB)");
    assert!(growth_mib < 64, "the hub grew by {growth_mib} MiB while a peer did not read");
    other.close().await;
}

/// Opens a TCP connection and trickles an upgrade request's head one byte
/// every 20 ms, never finishing it; returns how long the node kept it.
async fn slow_loris(addr: std::net::SocketAddr) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let head =
        b"GET /packetflow/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let padding = b"X-Slow: 1\r\n";
    let trickle = async {
        for byte in head.iter().chain(padding.iter().cycle()).take(2000) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::select! {
        _ = closed => {}
        _ = trickle => {}
    }
    opened.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_upgrades_hold_a_slot_only_for_the_handshake_time() {
    let handshake = Duration::from_millis(1000);
    let config = NodeConfig { handshake_timeout: handshake, max_connections: 20, ..NodeConfig::default() };
    let (hub, addr) = node("hub", config).await;
    register_upper(hub.reactor());
    let loris: Vec<_> = (0..20).map(|_| tokio::spawn(slow_loris(addr))).collect();
    until("the slow clients hold every slot", || hub.health()["connections"] == 20).await;
    // While they do, a new client is refused (503, retry later)...
    let refused = tokio_tungstenite::connect_async(url(addr)).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("expected HTTP 503 while the slots are held: {refused:?}")
    };
    assert_eq!(response.status(), 503);
    // ...and each of them is dropped at the handshake deadline.
    for held in loris {
        let held = tokio::time::timeout(WAIT, held).await.expect("dropped in time").unwrap();
        assert!(held >= handshake.mul_f64(0.7) && held < handshake * 3, "held for {held:?}");
    }
    until("the slots are free", || hub.health()["connections"] == 0).await;
    let mut peer = RawPeer::connect(&url(addr)).await;
    for seq in 1..=10u64 {
        peer.send_json(&submit_frame(seq, &format!("p{seq}"), "df", "upper", json!("served"))).await;
    }
    for answer in answers_for(&mut peer, 1..=10).await.values() {
        assert_eq!(answer["payload"]["data"], "SERVED");
    }
    nothing_more(&mut peer, 11).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_200_clients_gets_one_answer_per_submit() {
    const CLIENTS: u64 = 200;
    const ROUNDS: u64 = 3;
    const SUBMITS: u64 = 5;
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    register_upper(hub.reactor());
    let (service, _) = node("service", NodeConfig::default()).await;
    service
        .reactor()
        .register("df", "work", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(data)
        })
        .unwrap();
    service.connect(&url(addr)).await.unwrap();
    until("the hub routes df:work", || hub.can_route(Group::DataFlow, "work")).await;
    let answered = Arc::new(AtomicU64::new(0));
    let storm: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let answered = answered.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let mut peer = RawPeer::connect(&url(addr)).await;
                    for seq in 1..=SUBMITS {
                        let id = format!("c{c}-r{round}-{seq}");
                        peer.send_json(&submit_frame(seq, &id, "df", "work", json!(id))).await;
                    }
                    if round == 1 {
                        // Gone without a close frame, answers still owed.
                        drop(peer);
                        continue;
                    }
                    for (seq, answer) in answers_for(&mut peer, 1..=SUBMITS).await {
                        assert_eq!(answer["payload"]["data"], format!("c{c}-r{round}-{seq}"), "{answer}");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    nothing_more(&mut peer, SUBMITS + 1).await;
                    peer.close().await;
                }
            })
        })
        .collect();
    for client in storm {
        tokio::time::timeout(WAIT * 3, client).await.expect("the storm ends in time").unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), CLIENTS * (ROUNDS - 1) * SUBMITS);
    // Nothing is left behind: only the service's connection remains.
    until("the clients' connections are gone", || hub.health()["connections"] == 1).await;
    until("nothing in flight", || {
        hub.reactor().stats().in_flight == 0
            && service.reactor().stats().in_flight == 0
            && peers_in_flight(&hub) == 0
    })
    .await;
    assert_eq!(hub.peer_count(), 1);
    assert_eq!(hub.health()["queued_bytes"], 0);
    hub.stop().await;
    service.stop().await;
}

/// What the clients of the restart test saw.
#[derive(Default)]
struct Tally {
    submitted: AtomicU64,
    answered: AtomicU64,
    ok_after_restart: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    no_route: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_and_restarted_while_peers_redial_answers_every_submit_once() {
    let hub = ChildNode::start(FAULT_NODE, &["hub"]);
    let (hub_url, hub_addr) = (hub.url(), hub.addr());
    let config = || NodeConfig { max_redial_backoff: Duration::from_millis(100), ..NodeConfig::default() };
    let (service, _) = node("service", config()).await;
    service
        .reactor()
        .register("df", "work", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(data)
        })
        .unwrap();
    service.connect(&hub_url).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let (client, _) = node("client", config()).await;
        client.connect(&hub_url).await.unwrap();
        clients.push(client);
    }
    for client in &clients {
        until("the client routes df:work", || client.can_route(Group::DataFlow, "work")).await;
    }
    // phase 0: hub up; 1: hub killed; 2: hub restarted.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Tally>> = clients.iter().map(|_| Arc::new(Tally::default())).collect();
    let mut loops = Vec::new();
    for (client, tally) in clients.iter().zip(&tallies) {
        for worker in 0..4 {
            let (client, tally, phase, stop) = (client.clone(), tally.clone(), phase.clone(), stop.clone());
            loops.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let packet =
                        Packet::build("df", "work", json!([worker, n])).unwrap().with_timeout_ms(3000);
                    let id = packet.id.clone();
                    let seen = phase.load(Ordering::SeqCst);
                    tally.submitted.fetch_add(1, Ordering::Relaxed);
                    let result = tokio::time::timeout(WAIT, client.reactor().submit(packet))
                        .await
                        .expect("every submit is answered, hub or no hub");
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(result.packet_id, id, "the answer is the submit's own");
                    match result.err().and_then(|e| e.kind()) {
                        None => {
                            assert_eq!(result.outcome, Ok(json!([worker, n])));
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if seen == 2 {
                                tally.ok_after_restart.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(ErrorCode::Unavailable) => {
                            tally.unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(ErrorCode::NoHandler) => {
                            tally.no_route.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(other) => panic!("unexpected {other:?} while the hub restarts: {result:?}"),
                    }
                    if result.err().is_some() {
                        // No route for a moment: try again shortly.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
    }
    until("traffic flows", || tallies.iter().all(|t| t.ok.load(Ordering::Relaxed) >= 20)).await;
    hub.kill();
    phase.store(1, Ordering::SeqCst);
    for client in &clients {
        until("the client saw the hub go", || client.peer_count() == 0).await;
    }
    let hub = ChildNode::start(FAULT_NODE, &["hub", "--listen", &hub_addr]);
    phase.store(2, Ordering::SeqCst);
    until("every client is served again", || {
        tallies.iter().all(|t| t.ok_after_restart.load(Ordering::Relaxed) >= 20)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in loops {
        tokio::time::timeout(WAIT, worker).await.expect("the workers stop").unwrap();
    }
    for t in &tallies {
        assert_eq!(t.submitted.load(Ordering::Relaxed), t.answered.load(Ordering::Relaxed));
    }
    let (_, health) = http_get(&hub_addr, "/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["peers"].as_array().map(Vec::len), Some(6), "every peer redialed: {health}");
    let sum = |f: fn(&Tally) -> &AtomicU64| tallies.iter().map(|t| f(t).load(Ordering::Relaxed)).sum::<u64>();
    eprintln!(
        "restart: {} submits, {} ok, {} PF503, {} PF001",
        sum(|t| &t.submitted),
        sum(|t| &t.ok),
        sum(|t| &t.unavailable),
        sum(|t| &t.no_route)
    );
    for client in &clients {
        client.stop().await;
    }
    service.stop().await;
    hub.kill();
}
