//! Each configurable limit, triggered: submits per second (PF429), frame
//! size (close 1009, PF413), connections per node (HTTP 503 / PF429),
//! in flight per connection (PF429), queued bytes (PF429).

use std::sync::Arc;

use packetflow::{json, ErrorCode, NodeConfig, Packet, Reactor, ReactorConfig, Value};
use packetflow_tests::*;
use tokio::sync::Semaphore;
use tokio::time::Duration;

/// A node whose `df:gate` handler waits for a permit before answering.
async fn gated(config: NodeConfig) -> (packetflow::Node, String, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let reactor = Reactor::new(ReactorConfig { name: "gated".into(), ..ReactorConfig::default() });
    let g = gate.clone();
    reactor
        .register("df", "gate", move |data: Value, _| {
            let g = g.clone();
            async move {
                g.acquire().await.expect("gate open").forget();
                Ok(data)
            }
        })
        .unwrap();
    register_upper(&reactor);
    let (n, addr) = node_with(reactor, config).await;
    (n, url(addr), gate)
}

/// Waits until the node's health shows `field` equal to `value`.
async fn until_health(n: &packetflow::Node, field: &str, value: u64) {
    tokio::time::timeout(WAIT, async {
        while n.health()[field] != value {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{field} never reached {value}: {}", n.health()));
}

#[tokio::test]
async fn the_rate_limit_answers_pf429_past_the_submits_per_second() {
    let config = NodeConfig { max_submits_per_sec: Some(5), ..NodeConfig::default() };
    let (n, url, _) = gated(config).await;
    let mut peer = RawPeer::connect(&url).await;
    // Twenty submits in one batch frame: read at one instant, so the bucket
    // (five a second) has no time to refill.
    let batch: Vec<Value> =
        (1..=20u64).map(|seq| submit_frame(seq, &format!("r{seq}"), "df", "upper", json!("x"))).collect();
    peer.send_json(&Value::Array(batch)).await;
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 20 {
        let answer = peer.recv_open().await;
        match answer["payload"]["status"].as_str() {
            Some("success") => ok += 1,
            _ => {
                assert_eq!(answer["payload"]["error"]["code"], "PF429", "{answer}");
                assert_eq!(
                    answer["payload"]["error"]["message"],
                    "rate limit: this connection may submit 5 packets per second"
                );
                limited += 1;
            }
        }
    }
    assert_eq!((ok, limited), (5, 15));
    // Another connection has its own bucket.
    let mut other = RawPeer::connect(&url).await;
    other.send_json(&submit_frame(1, "o1", "df", "upper", json!("y"))).await;
    assert_eq!(other.recv_open().await["payload"]["data"], "Y");
    n.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_configured_size_closes_with_1009_naming_pf413() {
    let config = NodeConfig { max_frame_bytes: 4096, ..NodeConfig::default() };
    let (n, url, _) = gated(config).await;
    let mut peer = RawPeer::connect(&url).await;
    peer.send_json(&submit_frame(1, "fits", "df", "upper", json!("a".repeat(3500)))).await;
    assert_eq!(peer.recv_open().await["payload"]["status"], "success");
    peer.send_json(&submit_frame(2, "big", "df", "upper", json!("b".repeat(5000)))).await;
    let (code, reason) = peer.close_frame().await.expect("a close frame");
    assert_eq!(code, 1009);
    assert_eq!(reason, "frame larger than 4096 bytes (PF413)");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_with_503_and_frees_on_close() {
    let config = NodeConfig { max_connections: 2, ..NodeConfig::default() };
    let (n, url, _) = gated(config).await;
    let first = RawPeer::connect(&url).await;
    let mut second = RawPeer::connect(&url).await;
    until_health(&n, "connections", 2).await;
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    // A node dialing gets PF429 with the node's reason.
    let (dialer, _) = node("dialer", NodeConfig::default()).await;
    let refused = dialer.connect(&url).await.unwrap_err();
    assert!(refused.is(ErrorCode::Overloaded), "{refused:?}");
    assert!(refused.message.contains("holds its limit of 2 connections"), "{}", refused.message);
    // Those within the limit are served meanwhile.
    second.send_json(&submit_frame(1, "in", "df", "upper", json!("in"))).await;
    assert_eq!(second.recv_open().await["payload"]["data"], "IN");
    // A closed connection frees its place.
    first.close().await;
    until_health(&n, "connections", 1).await;
    dialer.connect(&url).await.expect("room again");
    dialer.stop().await;
    n.stop().await;
}

#[tokio::test]
async fn the_in_flight_window_per_connection_answers_pf429() {
    let config = NodeConfig { max_inflight_per_conn: 2, ..NodeConfig::default() };
    let (n, url, gate) = gated(config).await;
    let mut peer = RawPeer::connect(&url).await;
    let batch: Vec<Value> =
        (1..=3u64).map(|seq| submit_frame(seq, &format!("g{seq}"), "df", "gate", json!(seq))).collect();
    peer.send_json(&Value::Array(batch)).await;
    let refused = peer.recv_open().await;
    assert_eq!(refused["seq"], 3);
    assert_eq!(refused["payload"]["error"]["code"], "PF429");
    assert!(refused["payload"]["error"]["message"].as_str().unwrap().contains("2 packets in flight"));
    gate.add_permits(2);
    let mut seqs = vec![peer.recv_open().await["seq"].as_u64(), peer.recv_open().await["seq"].as_u64()];
    seqs.sort();
    assert_eq!(seqs, vec![Some(1), Some(2)]);
    n.stop().await;
}

#[tokio::test]
async fn the_queued_bytes_limit_answers_pf429_and_frees_as_packets_finish() {
    let config = NodeConfig { max_queued_bytes: 3000, ..NodeConfig::default() };
    let (n, url, gate) = gated(config).await;
    let mut a = RawPeer::connect(&url).await;
    let mut b = RawPeer::connect(&url).await;
    let data = json!("q".repeat(1000)); // a frame of about 1.1 KB
    a.send_json(&submit_frame(1, "q1", "df", "gate", data.clone())).await;
    b.send_json(&submit_frame(1, "q2", "df", "gate", data.clone())).await;
    until_health(
        &n,
        "queued_bytes",
        2 * submit_frame(1, "q1", "df", "gate", data.clone()).to_string().len() as u64,
    )
    .await;
    // The limit is the node's, over all connections.
    a.send_json(&submit_frame(2, "q3", "df", "gate", data.clone())).await;
    let refused = a.recv_open().await;
    assert_eq!(refused["seq"], 2);
    assert_eq!(refused["payload"]["error"]["code"], "PF429");
    assert_eq!(
        refused["payload"]["error"]["message"],
        "this node holds its limit of 3000 bytes of packets in flight; retry later"
    );
    // Answered-at-once packets are not held, so not counted.
    a.send_json(&submit_frame(3, "u1", "df", "upper", json!("free"))).await;
    assert_eq!(a.recv_open().await["payload"]["data"], "FREE");
    gate.add_permits(2);
    assert_eq!(a.recv_open().await["payload"]["status"], "success");
    assert_eq!(b.recv_open().await["payload"]["status"], "success");
    until_health(&n, "queued_bytes", 0).await;
    a.send_json(&submit_frame(4, "q4", "df", "gate", data)).await;
    gate.add_permits(1);
    assert_eq!(a.recv_open().await["payload"]["status"], "success");
    // Bytes held by a connection that goes away are given back too.
    b.send_json(&submit_frame(2, "q5", "df", "gate", json!("held"))).await;
    until_health(
        &n,
        "queued_bytes",
        submit_frame(2, "q5", "df", "gate", json!("held")).to_string().len() as u64,
    )
    .await;
    b.close().await;
    until_health(&n, "queued_bytes", 0).await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_within_the_frame_limit_of_the_node_that_reads_them() {
    // Packets and answers of `size` bytes, twelve in flight at once, so that
    // both ends queue several together: at the default limit (1 MiB) four
    // such packets would not fit one frame, and a node that reads frames of
    // at most 16 KiB (as its hello says) gets no batch of 64 KiB.
    for (client_limit, size) in [(1 << 20, 300_000), (16 * 1024, 6_000)] {
        let (server, server_addr) = node("server", NodeConfig::default()).await;
        let config = NodeConfig { max_frame_bytes: client_limit, ..NodeConfig::default() };
        let (client, _) = node("client", config).await;
        register_upper(server.reactor());
        client.connect(&url(server_addr)).await.unwrap();
        let text = "x".repeat(size);
        let calls =
            (0..12).map(|_| client.reactor().call(Packet::build("df", "upper", json!(text)).unwrap()));
        let expected = json!(text.to_uppercase());
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(
                answer.as_ref().ok(),
                Some(&expected),
                "limit {client_limit}: {:?}",
                answer.as_ref().err()
            );
        }
        client.stop().await;
        server.stop().await;
    }
}
