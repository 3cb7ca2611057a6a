//! Peers that go quiet or away, nodes that stop, floods: every submit still
//! gets exactly one answer, and nothing grows without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::SinkExt;
use packetflow::{json, ErrorCode, NodeConfig, Packet, Reactor, ReactorConfig};
use packetflow_tests::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn short_heartbeats() -> NodeConfig {
    NodeConfig { heartbeat_interval: Duration::from_millis(40), ..NodeConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_after_three_intervals_and_its_packets_get_pf503() {
    let (n, addr) = node("n", short_heartbeats()).await;
    let mut silent = RawPeer::connect(&url(addr)).await;
    // Its upgrade is done on its side before the node has listed it: a
    // submit made in between has no route.
    until("the node lists the silent peer", || n.peer_count() == 1).await;
    let reactor = n.reactor().clone();
    let waiting =
        tokio::spawn(async move { reactor.submit(Packet::build("df", "held", json!(1)).unwrap()).await });
    // The silent peer receives the submit (it is the default route) and the
    // node's heartbeats, but never answers or sends anything.
    let frame = silent.recv_open().await;
    assert_eq!(frame["type"], "submit");
    let result = waiting.await.unwrap();
    assert!(result.err().unwrap().is(ErrorCode::Unavailable), "{result:?}");
    assert!(result.err().unwrap().message.contains("declared dead"), "{result:?}");
    assert_eq!(silent.closed_with().await, Some(1001));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_two_nodes_connected() {
    let (a, _) = node("a", short_heartbeats()).await;
    let (b, b_addr) = node("b", short_heartbeats()).await;
    register_upper(b.reactor());
    a.connect(&url(b_addr)).await.unwrap();
    // Well past three intervals with no traffic but heartbeats...
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.peer_count(), 1, "still connected after ten intervals");
    let r = a.reactor().call(Packet::build("df", "upper", json!("alive")).unwrap()).await;
    assert_eq!(r, Ok(json!("ALIVE")));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pf503_when_the_serving_peer_goes_away_mid_request() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (service, _) = node("service", NodeConfig::default()).await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let e = entered.clone();
    service
        .reactor()
        .register("df", "stuck", move |_, _| {
            let e = e.clone();
            async move {
                e.notify_one();
                std::future::pending::<()>().await;
                Ok(json!(null))
            }
        })
        .unwrap();
    service.connect(&url(hub_addr)).await.unwrap();
    let mut client = RawPeer::connect(&url(hub_addr)).await;
    client.send_json(&submit_frame(40, "orphan", "df", "stuck", json!(1))).await;
    tokio::time::timeout(WAIT, entered.notified()).await.unwrap();
    service.stop().await;
    let answer = client.recv_open().await;
    assert_eq!(answer["seq"], 40);
    assert_eq!(answer["payload"]["error"]["code"], "PF503");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_work_in_flight_pf503_and_closes_with_1001() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let e = entered.clone();
    n.reactor()
        .register("df", "forever", move |_, _| {
            let e = e.clone();
            async move {
                e.notify_one();
                std::future::pending::<()>().await;
                Ok(json!(null))
            }
        })
        .unwrap();
    let mut peer = RawPeer::connect(&url(addr)).await;
    peer.send_json(&submit_frame(8, "in-flight", "df", "forever", json!(1))).await;
    tokio::time::timeout(WAIT, entered.notified()).await.unwrap();
    let stopping = tokio::spawn({
        let n = n.clone();
        async move { n.stop().await }
    });
    let (frames, close) = peer.frames_until_close().await;
    assert_eq!(close, Some(1001));
    stopping.await.unwrap();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["seq"], 8);
    assert_eq!(frames[0]["payload"]["error"]["code"], "PF503");
    assert_eq!(n.reactor().stats().in_flight, 0);
    assert!(tokio_tungstenite::connect_async(url(addr)).await.is_err(), "the listener is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_redials_after_the_peer_restarts() {
    let (service, addr) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&url(addr)).await.unwrap();
    assert_eq!(
        client.reactor().call(Packet::build("df", "upper", json!("one")).unwrap()).await,
        Ok(json!("ONE"))
    );
    service.stop().await;
    // A new service on the same port; the client finds it by itself.
    let reactor = Reactor::new(ReactorConfig { name: "service2".into(), ..Default::default() });
    register_upper(&reactor);
    let service2 = packetflow::Node::new(reactor, NodeConfig::default());
    service2.listen(&addr.to_string()).await.unwrap();
    // Wait until the client's peer is the new service (the old connection
    // may linger a moment before its loss is noticed).
    let mut routes = client.watch_routes();
    let is_new_peer = |client: &packetflow::Node| {
        let health = client.health();
        let peers = health["peers"].as_array().cloned().unwrap_or_default();
        peers.len() == 1 && peers[0]["node_id"] == service2.node_id()
    };
    while !is_new_peer(&client) {
        tokio::time::timeout(WAIT, routes.changed()).await.expect("redialed in time").unwrap();
    }
    assert_eq!(
        client.reactor().call(Packet::build("df", "upper", json!("two")).unwrap()).await,
        Ok(json!("TWO"))
    );
    client.stop().await;
    service2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_100k_submits_at_a_slow_handler_is_answered_in_full_and_bounded() {
    let reactor = Reactor::new(ReactorConfig {
        name: "slow".into(),
        max_inflight: 32,
        max_queue: 256,
        ..ReactorConfig::default()
    });
    let peak_running = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let (peak, now) = (peak_running.clone(), running.clone());
    reactor
        .register("df", "slow", move |data, _| {
            let (peak, now) = (peak.clone(), now.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(data)
            }
        })
        .unwrap();
    let config = NodeConfig { max_inflight_per_conn: 1024, ..NodeConfig::default() };
    let (n, addr) = node_with(reactor, config).await;
    const TOTAL: u64 = 100_000;
    let mut conns = Vec::new();
    for c in 0..4u64 {
        let (ws, _) = tokio_tungstenite::connect_async(url(addr)).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let share = TOTAL / 4;
        // One task sends everything as fast as the node takes it...
        tokio::spawn(async move {
            for i in 0..share {
                let seq = c * share + i + 1;
                let frame = submit_frame(seq, &format!("f{seq}"), "df", "slow", json!(seq));
                sink.send(WsMessage::Text(frame.to_string().into())).await.unwrap();
            }
            sink
        });
        // ...while this one counts exactly one answer per submit.
        conns.push(tokio::spawn(async move {
            let (mut ok, mut overloaded) = (0u64, 0u64);
            let mut seen = std::collections::HashSet::new();
            while ok + overloaded < share {
                let frame = tokio::time::timeout(WAIT, stream.next()).await.expect("answers keep coming");
                let Some(Ok(WsMessage::Text(text))) = frame else { panic!("connection lost: {frame:?}") };
                let answer: packetflow::Value = serde_json::from_str(&text).unwrap();
                if answer["type"] == "heartbeat" {
                    continue;
                }
                assert!(seen.insert(answer["seq"].as_u64().unwrap()), "one answer per submit");
                match answer["payload"]["status"].as_str() {
                    Some("success") => ok += 1,
                    _ => {
                        assert_eq!(answer["payload"]["error"]["code"], "PF429", "{answer}");
                        overloaded += 1;
                    }
                }
            }
            (ok, overloaded)
        }));
    }
    let mut handles: FuturesUnordered<_> = conns.into_iter().collect();
    let (mut ok, mut overloaded) = (0, 0);
    while let Some(r) = handles.next().await {
        let (o, v) = r.unwrap();
        ok += o;
        overloaded += v;
    }
    assert_eq!(ok + overloaded, TOTAL);
    assert!(ok > 0 && overloaded > 0, "some served ({ok}), some refused ({overloaded})");
    assert!(peak_running.load(Ordering::SeqCst) <= 32, "max_inflight held");
    let stats = n.reactor().stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
    n.stop().await;
}
