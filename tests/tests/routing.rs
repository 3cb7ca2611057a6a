//! Nodes routing packets to each other over loopback WebSocket.

use std::time::Duration;

use packetflow::{json, ErrorCode, Group, Node, NodeConfig, Packet, Value};
use packetflow_tests::*;

fn code(result: &packetflow::PacketResult) -> Option<ErrorCode> {
    result.err().and_then(|e| e.kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_each_other() {
    let (a, _) = node("a", NodeConfig::default()).await;
    let (b, b_addr) = node("b", NodeConfig::default()).await;
    register_upper(a.reactor());
    b.reactor().register_sync("df", "double", |d, _| Ok(json!(d.as_i64().unwrap() * 2))).unwrap();
    a.connect(&url(b_addr)).await.unwrap();
    // Both directions over the one connection a dialed.
    let r = a.reactor().call(Packet::build("df", "double", json!(21)).unwrap()).await;
    assert_eq!(r, Ok(json!(42)));
    let r = b.reactor().call(Packet::build("df", "upper", json!("from b")).unwrap()).await;
    assert_eq!(r, Ok(json!("FROM B")));
    let r = a.reactor().submit(Packet::build("df", "nowhere", json!(1)).unwrap()).await;
    assert_eq!(code(&r), Some(ErrorCode::NoHandler));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_through_a_hub_with_late_registration() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (service, _) = node("service", NodeConfig::default()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    register_upper(service.reactor());
    service.connect(&url(hub_addr)).await.unwrap();
    client.connect(&url(hub_addr)).await.unwrap();
    let r = client.reactor().call(Packet::build("df", "upper", json!("via hub")).unwrap()).await;
    assert_eq!(r, Ok(json!("VIA HUB")));
    // A handler registered later is announced through the hub as well.
    service
        .reactor()
        .register_sync("co", "vote", |_, ctx| {
            Ok(json!({"hops": ctx.metadata().and_then(|m| m.get("pf.hops")).cloned()}))
        })
        .unwrap();
    // The announcement travels two hops: wait for it to reach the client.
    let mut routes = client.watch_routes();
    while !client.can_route(packetflow::Group::Collective, "vote") {
        tokio::time::timeout(WAIT, routes.changed()).await.expect("route announced in time").unwrap();
    }
    let answer = client.reactor().call(Packet::build("co", "vote", json!(null)).unwrap()).await;
    assert_eq!(answer, Ok(json!({"hops": 2})), "client -> hub -> service is two hops");
    for n in [client, service, hub] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_serves_as_the_default_route() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    let mut seed = RawPeer::connect(&url(addr)).await;
    let reactor = n.reactor().clone();
    let submitting = tokio::spawn(async move {
        reactor.call(Packet::build("ed", "notify_users", json!({"message": "hi"})).unwrap()).await
    });
    // The seed peer sees a plain submit frame, with no hello before it...
    let frame = seed.recv_open().await;
    assert_eq!(frame["type"], "submit");
    assert_eq!(frame["payload"]["element"], "notify_users");
    // ...and answers the seed's way: seq 0, matched by packet_id.
    let id = frame["payload"]["id"].clone();
    seed.send_json(&json!({"type": "result", "seq": 0, "payload": {
        "packet_id": id, "status": "success", "data": {"sent": true}, "duration_ms": 1}}))
        .await;
    assert_eq!(submitting.await.unwrap(), Ok(json!({"sent": true})));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_submits_and_gets_its_seq_back() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    register_upper(n.reactor());
    let mut seed = RawPeer::connect(&url(addr)).await;
    seed.send_json(&submit_frame(
        12345,
        "550e8400-e29b-41d4-a716-446655440000",
        "df",
        "upper",
        json!("hello world"),
    ))
    .await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["type"], "result");
    assert_eq!(answer["seq"], 12345);
    assert_eq!(answer["payload"]["packet_id"], "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(answer["payload"]["status"], "success");
    assert_eq!(answer["payload"]["data"], "HELLO WORLD");
    // A heartbeat from the seed is accepted silently; the next answer still flows.
    seed.send_json(&json!({"type": "heartbeat", "seq": 2, "payload": {"timestamp": 1}})).await;
    seed.send_json(&submit_frame(3, "second", "df", "missing", json!(1))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["payload"]["error"]["code"], "PF001");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_peers_get_binary_frames_with_compact_keys() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    register_upper(n.reactor());
    let mut peer = RawPeer::connect_msgpack(&url(addr)).await;
    let frame = json!({"type": "submit", "seq": 9, "payload": {"v": "1.0", "id": "m1", "g": "df", "e": "upper", "d": "packed", "p": 5}});
    peer.send(tokio_tungstenite::tungstenite::Message::Binary(
        rmp_serde::to_vec_named(&frame).unwrap().into(),
    ))
    .await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["seq"], 9);
    assert_eq!(answer["payload"]["data"], "PACKED");
    // And a msgpack dialer node routes through a JSON hub.
    let (other, _) = node("other", NodeConfig::default()).await;
    other.connect_with(&url(addr), packetflow::Codec::MsgPack).await.unwrap();
    let r = other.reactor().call(Packet::build("df", "upper", json!("x")).unwrap()).await;
    assert_eq!(r, Ok(Value::from("X")));
    other.stop().await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pf508_past_the_hop_limit() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (service, _) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    service.connect(&url(hub_addr)).await.unwrap();
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    let mut frame = submit_frame(1, "looping", "df", "upper", json!("x"));
    frame["payload"]["metadata"] = json!({"pf.hops": 8});
    raw.send_json(&frame).await;
    let answer = raw.recv_open().await;
    assert_eq!(answer["payload"]["error"]["code"], "PF508");
    frame["payload"]["metadata"] = json!({"pf.hops": 7});
    frame["payload"]["id"] = json!("fine");
    raw.send_json(&frame).await;
    assert_eq!(raw.recv_open().await["payload"]["data"], "X");
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_is_never_sent_back_where_it_came_from() {
    // The only peer that could take df:echo is the one that sent it.
    let (n, addr) = node("n", NodeConfig::default()).await;
    let mut seed = RawPeer::connect(&url(addr)).await;
    seed.send_json(&submit_frame(4, "boomerang", "df", "echo", json!(1))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["seq"], 4);
    assert_eq!(answer["payload"]["error"]["code"], "PF001");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spokes_reach_a_seed_peer_through_the_hub_it_is_connected_to() {
    // A long grace period: here the seed peer's first frame alone shows it.
    let hub_config = NodeConfig { seed_peer_grace: Duration::from_secs(3600), ..NodeConfig::default() };
    let (hub, hub_addr) = node("hub", hub_config).await;
    let (spoke, _) = node("spoke", NodeConfig::default()).await;
    spoke.connect(&url(hub_addr)).await.unwrap();
    // Before a seed peer shows itself, the spoke has no route.
    let r = spoke.reactor().submit(Packet::build("df", "seedwork", json!(1)).unwrap()).await;
    assert_eq!(code(&r), Some(ErrorCode::NoHandler));
    // The seed peer's first frame, if not a hello, makes the hub announce a
    // default route at once.
    let mut seed = RawPeer::connect(&url(hub_addr)).await;
    seed.send_json(&json!({"type": "heartbeat", "seq": 1, "payload": {"timestamp": 1}})).await;
    let mut routes = spoke.watch_routes();
    while !spoke.can_route(packetflow::Group::DataFlow, "seedwork") {
        tokio::time::timeout(WAIT, routes.changed()).await.expect("default route announced").unwrap();
    }
    let reactor = spoke.reactor().clone();
    let waiting =
        tokio::spawn(
            async move { reactor.call(Packet::build("df", "seedwork", json!({"n": 2})).unwrap()).await },
        );
    let frame = seed.recv_open().await;
    assert_eq!(frame["payload"]["element"], "seedwork");
    assert_eq!(frame["payload"]["metadata"]["pf.hops"], 2, "spoke -> hub -> seed");
    seed.send_json(&json!({"type": "result", "seq": 0, "payload": {
        "packet_id": frame["payload"]["id"], "status": "success", "data": "done", "duration_ms": 0}}))
        .await;
    assert_eq!(waiting.await.unwrap(), Ok(json!("done")));
    // When the seed peer leaves, the default route is withdrawn.
    seed.close().await;
    while spoke.can_route(packetflow::Group::DataFlow, "seedwork") {
        tokio::time::timeout(WAIT, routes.changed()).await.expect("default route withdrawn").unwrap();
    }
    spoke.stop().await;
    hub.stop().await;
}

/// Waits, on `node`'s route changes (each within [`WAIT`]), until `check`
/// holds.
async fn until_routes(node: &Node, what: &str, check: impl Fn(&Node) -> bool) {
    let mut routes = node.watch_routes();
    while !check(node) {
        tokio::time::timeout(WAIT, routes.changed())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_seed_peer_behind_a_hub_serves_a_spoke_before_sending_anything() {
    // The seed's reactor sends nothing for its first 30 s (its first
    // heartbeat): a peer that has not said hello by the end of the grace
    // period is a seed peer, and the hub announces a default route for it.
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (spoke, _) = node("spoke", NodeConfig::default()).await;
    spoke.connect(&url(hub_addr)).await.unwrap();
    let mut seed = RawPeer::connect(&url(hub_addr)).await;
    until_routes(&spoke, "the hub announces a default route for its silent seed peer", |n| {
        n.can_route(Group::DataFlow, "seedwork")
    })
    .await;
    let reactor = spoke.reactor().clone();
    let waiting =
        tokio::spawn(async move { reactor.call(Packet::build("df", "seedwork", json!(7)).unwrap()).await });
    // The first frame the seed peer sees is the submit; it has sent none.
    let frame = seed.recv_open().await;
    assert_eq!(frame["type"], "submit");
    assert_eq!(frame["payload"]["element"], "seedwork");
    assert_eq!(frame["payload"]["metadata"]["pf.hops"], 2, "spoke -> hub -> seed");
    seed.send_json(&json!({"type": "result", "seq": 0, "payload": {
        "packet_id": frame["payload"]["id"], "status": "success", "data": "served", "duration_ms": 0}}))
        .await;
    assert_eq!(waiting.await.unwrap(), Ok(json!("served")));
    spoke.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_after_the_grace_period_still_makes_the_peer_a_node() {
    // A slow PacketFlow dialer: taken for a seed peer first, then its
    // hello makes it a node (its keys routed to it, the default route gone).
    let config = NodeConfig { seed_peer_grace: Duration::from_millis(50), ..NodeConfig::default() };
    let (hub, hub_addr) = node("hub", config).await;
    let (spoke, _) = node("spoke", NodeConfig::default()).await;
    spoke.connect(&url(hub_addr)).await.unwrap();
    let mut late = RawPeer::connect(&url(hub_addr)).await;
    until_routes(&spoke, "the silent peer is taken for a seed peer", |n| {
        n.can_route(Group::DataFlow, "anything")
    })
    .await;
    late.send_json(&json!({"type": "hello", "seq": 1, "payload": {
        "node_id": "late", "name": "late", "runtime": "test", "protocol": "1.0",
        "handlers": ["df:late"], "features": [], "max_inflight": 100}}))
        .await;
    assert_eq!(late.recv_open().await["type"], "hello", "the hub answers the late hello");
    until_routes(&spoke, "the late peer's key replaces the default route", |n| {
        n.can_route(Group::DataFlow, "late") && !n.can_route(Group::DataFlow, "anything")
    })
    .await;
    let reactor = spoke.reactor().clone();
    let waiting =
        tokio::spawn(async move { reactor.call(Packet::build("df", "late", json!(1)).unwrap()).await });
    let frame = late.recv_open().await;
    assert_eq!(frame["type"], "submit");
    assert_eq!(frame["payload"]["element"], "late");
    let seq = frame["seq"].as_u64().unwrap();
    assert_ne!(seq, 0, "a node's submits carry a seq");
    late.send_json(&json!({"type": "result", "seq": seq, "payload": {
        "packet_id": frame["payload"]["id"], "status": "success", "data": "late", "duration_ms": 0}}))
        .await;
    assert_eq!(waiting.await.unwrap(), Ok(json!("late")));
    let r = spoke.reactor().submit(Packet::build("df", "other", json!(1)).unwrap()).await;
    assert_eq!(code(&r), Some(ErrorCode::NoHandler), "a node is no default route");
    spoke.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_server_the_hub_dialed_is_announced_at_once() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    // A seed server answers the upgrade without the node header: the hub
    // knows at once that it dialed a seed peer (its own grace period, long
    // here, plays no part).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seed_url = url(listener.local_addr().unwrap());
    let accepting = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(stream).await.unwrap()
    });
    let hub_config = NodeConfig { seed_peer_grace: Duration::from_secs(3600), ..NodeConfig::default() };
    let (hub, hub_addr) = node("hub", hub_config).await;
    let (spoke, _) = node("spoke", NodeConfig::default()).await;
    spoke.connect(&url(hub_addr)).await.unwrap();
    hub.connect(&seed_url).await.unwrap();
    let mut seed = tokio::time::timeout(WAIT, accepting).await.expect("dialed in time").unwrap();
    until_routes(&spoke, "the hub announces the seed server as a default route", |n| {
        n.can_route(Group::DataFlow, "seedwork")
    })
    .await;
    let reactor = spoke.reactor().clone();
    let waiting =
        tokio::spawn(async move { reactor.call(Packet::build("df", "seedwork", json!(1)).unwrap()).await });
    let frame: Value = loop {
        match tokio::time::timeout(WAIT, seed.next()).await.expect("a frame in time") {
            Some(Ok(WsMessage::Text(text))) => break serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the seed server's connection ended: {other:?}"),
        }
    };
    assert_eq!(frame["type"], "submit", "the hub never sends a seed peer hello");
    assert_eq!(frame["payload"]["element"], "seedwork");
    let answer = json!({"type": "result", "seq": 0, "payload": {
        "packet_id": frame["payload"]["id"], "status": "success", "data": "seeded", "duration_ms": 0}});
    seed.send(WsMessage::Text(answer.to_string().into())).await.unwrap();
    assert_eq!(waiting.await.unwrap(), Ok(json!("seeded")));
    spoke.stop().await;
    hub.stop().await;
}

/// A seed peer that serves `element` (answering with seq 0, as the seed
/// does) and answers PF001 for anything else.
async fn seed_server(mut peer: RawPeer, element: &'static str) {
    while let Some(frame) = peer.recv().await {
        if frame["type"] != "submit" {
            continue;
        }
        let p = &frame["payload"];
        let payload = if p["element"] == element {
            json!({"packet_id": p["id"], "status": "success", "data": element, "duration_ms": 0})
        } else {
            json!({"packet_id": p["id"], "status": "error", "duration_ms": 0,
                   "error": {"code": "PF001", "message": format!("No handler for df:{}", p["element"])}})
        };
        peer.send_json(&json!({"type": "result", "seq": 0, "payload": payload})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_seed_peers_each_get_what_they_serve() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    tokio::spawn(seed_server(RawPeer::connect(&url(addr)).await, "alpha"));
    tokio::spawn(seed_server(RawPeer::connect(&url(addr)).await, "beta"));
    for _ in 0..3 {
        for element in ["alpha", "beta"] {
            let r = n.reactor().call(Packet::build("df", element, json!(null)).unwrap()).await;
            assert_eq!(r, Ok(json!(element)), "{element} reached the seed peer that serves it");
        }
    }
    let r = n.reactor().submit(Packet::build("df", "gamma", json!(null)).unwrap()).await;
    assert_eq!(code(&r), Some(ErrorCode::NoHandler), "nobody serves gamma");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announced_batch_gets_coalesced_answers() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    register_upper(n.reactor());
    let mut peer = RawPeer::connect(&url(addr)).await;
    peer.send_json(&json!({"type": "hello", "seq": 0, "payload": {
        "node_id": "raw", "name": "raw", "runtime": "test", "protocol": "1.0",
        "handlers": [], "features": ["batch"], "max_inflight": 1000}}))
        .await;
    assert_eq!(peer.recv_open().await["type"], "hello", "the node answers hello with its own");
    // Fifty submits in one batch frame: their answers leave together.
    let batch: Vec<Value> =
        (1..=50).map(|i| submit_frame(i, &format!("b{i}"), "df", "upper", json!("x"))).collect();
    peer.send_text(Value::Array(batch).to_string()).await;
    let mut answered = std::collections::BTreeSet::new();
    let mut frames = 0;
    while answered.len() < 50 {
        let frame = peer.recv_open().await;
        frames += 1;
        let items = match frame {
            Value::Array(items) => items,
            single => vec![single],
        };
        for item in items {
            assert_eq!(item["payload"]["data"], "X");
            answered.insert(item["seq"].as_u64().unwrap());
        }
    }
    assert!(frames < 50, "answers were coalesced ({frames} frames for 50 answers)");
    n.stop().await;
}
