//! A hub relaying packets from a connection to the peer that serves them
//! (the path a submit with no local handler takes on a node): the packet
//! the peer sees, the answers the submitter gets, and the hub's counters.

use std::time::Duration;

use packetflow::{json, Node, NodeConfig, Value};
use packetflow_tests::*;
use tokio::time::Instant;

/// A hub with a service node behind it serving `df:upper`, `df:inspect`
/// (answers with the metadata and remaining time its context shows) and
/// `df:slow` (answers after `data` ms).
async fn hub_and_service() -> (Node, std::net::SocketAddr, Node, std::net::SocketAddr) {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (service, service_addr) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    service
        .reactor()
        .register_sync("df", "inspect", |_, ctx| {
            Ok(json!({
                "metadata": ctx.metadata().cloned().map(Value::Object),
                "remaining_ms": ctx.remaining().as_millis() as u64,
            }))
        })
        .unwrap();
    service
        .reactor()
        .register("df", "slow", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(data.as_u64().unwrap_or(0))).await;
            Ok(json!("slept"))
        })
        .unwrap();
    service.connect(&url(hub_addr)).await.unwrap();
    until("the hub routes df:slow", || hub.can_route(packetflow::Group::DataFlow, "slow")).await;
    (hub, hub_addr, service, service_addr)
}

async fn health(addr: std::net::SocketAddr) -> Value {
    let (status, body) = http_get(&addr.to_string(), "/health").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("health is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_packet_carries_one_more_hop_and_what_is_left_of_its_timeout() {
    let (hub, hub_addr, service, _) = hub_and_service().await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    let mut frame = submit_frame(7, "meta", "df", "inspect", json!(null));
    frame["payload"]["timeout_ms"] = json!(5000);
    frame["payload"]["metadata"] = json!({"user": "kept", "pf.hops": 2, "pf.trace_id": "t-1"});
    raw.send_json(&frame).await;
    let answer = raw.recv_open().await;
    assert_eq!(answer["type"], "result");
    assert_eq!(answer["seq"], 7);
    assert_eq!(answer["payload"]["packet_id"], "meta");
    let data = &answer["payload"]["data"];
    assert_eq!(data["metadata"], json!({"user": "kept", "pf.hops": 3, "pf.trace_id": "t-1"}), "{answer}");
    let remaining = data["remaining_ms"].as_u64().unwrap();
    assert!((2500..5000).contains(&remaining), "the service saw {remaining} ms left of 5000");
    // Without metadata: the hub adds pf.hops = 1 and the default timeout.
    raw.send_json(&submit_frame(8, "bare", "df", "inspect", json!(null))).await;
    let answer = raw.recv_open().await;
    let data = &answer["payload"]["data"];
    assert_eq!(data["metadata"], json!({"pf.hops": 1}), "{answer}");
    let remaining = data["remaining_ms"].as_u64().unwrap();
    assert!((25_000..30_000).contains(&remaining), "the service saw {remaining} ms left of 30000");
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_answers_bad_packets_as_the_serving_node_does() {
    let (hub, hub_addr, service, service_addr) = hub_and_service().await;
    let mut via_hub = RawPeer::connect(&url(hub_addr)).await;
    let mut direct = RawPeer::connect(&url(service_addr)).await;
    let mut cases = Vec::new();
    let mut bad_priority = submit_frame(11, "p", "df", "upper", json!("x"));
    bad_priority["payload"]["priority"] = json!(11);
    cases.push(bad_priority);
    let mut bad_hops = submit_frame(12, "h", "df", "upper", json!("x"));
    bad_hops["payload"]["metadata"] = json!({"pf.hops": "many"});
    cases.push(bad_hops);
    let mut bad_route_key = submit_frame(13, "r", "df", "upper", json!("x"));
    bad_route_key["payload"]["metadata"] = json!({"pf.route_key": 5});
    cases.push(bad_route_key);
    let mut bad_timeout = submit_frame(14, "t", "df", "upper", json!("x"));
    bad_timeout["payload"]["timeout_ms"] = json!(0);
    cases.push(bad_timeout);
    let mut no_element = submit_frame(15, "e", "df", "upper", json!("x"));
    no_element["payload"].as_object_mut().unwrap().remove("element");
    cases.push(no_element);
    for frame in &cases {
        via_hub.send_json(frame).await;
        direct.send_json(frame).await;
        let (from_hub, from_service) = (via_hub.recv_open().await, direct.recv_open().await);
        assert_eq!(from_hub, from_service, "the same answer to {frame}");
        assert_eq!(from_hub["seq"], frame["seq"]);
        let code = from_hub["payload"]["code"].as_str().or(from_hub["payload"]["error"]["code"].as_str());
        assert_eq!(code, Some("PF400"), "{from_hub}");
    }
    // Nothing was forwarded, nothing is left in flight.
    let stats = hub.reactor().stats();
    assert_eq!((stats.in_flight, stats.unrouted), (0, 0));
    assert_eq!(health(hub_addr).await["queued_bytes"], 0);
    // A key nobody serves is still PF001 (and counted as unrouted).
    via_hub.send_json(&submit_frame(16, "nobody", "df", "nobody", json!(1))).await;
    let answer = via_hub.recv_open().await;
    assert_eq!(answer["payload"]["error"]["code"], "PF001", "{answer}");
    assert_eq!(hub.reactor().stats().unrouted, 1);
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_packet_is_answered_pf408_at_its_deadline_in_deadline_order() {
    let (hub, hub_addr, service, _) = hub_and_service().await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    let start = Instant::now();
    // The later deadline first: the earlier one must not wait behind it.
    let mut late = submit_frame(1, "late", "df", "slow", json!(5000));
    late["payload"]["timeout_ms"] = json!(1500);
    let mut early = submit_frame(2, "early", "df", "slow", json!(5000));
    early["payload"]["timeout_ms"] = json!(300);
    raw.send_json(&late).await;
    raw.send_json(&early).await;
    raw.send_json(&submit_frame(3, "fast", "df", "upper", json!("quick"))).await;
    let fast = raw.recv_open().await;
    assert_eq!((fast["seq"].clone(), fast["payload"]["data"].clone()), (json!(3), json!("QUICK")));
    until("both relayed packets are in flight on the hub", || hub.reactor().stats().in_flight == 2).await;
    let first = raw.recv_open().await;
    let first_at = start.elapsed();
    let second = raw.recv_open().await;
    let second_at = start.elapsed();
    for (answer, seq, id) in [(&first, 2, "early"), (&second, 1, "late")] {
        assert_eq!(answer["seq"], seq, "{answer}");
        assert_eq!(answer["payload"]["packet_id"], id);
        assert_eq!(answer["payload"]["error"]["code"], "PF408", "{answer}");
        // The service got what was left of the deadline, so its own PF408
        // may come back first; either way it is the deadline's.
        let message = answer["payload"]["error"]["message"].as_str().unwrap();
        let hubs = message.starts_with("no answer from peer ") && message.ends_with(" before the deadline");
        assert!(hubs || message == "df:slow did not answer in time", "{message}");
    }
    // The hub hands on what is left of the deadline in whole milliseconds,
    // rounded down, so the service's own PF408 may come up to 1 ms early.
    assert!(first_at >= Duration::from_millis(299) && first_at < Duration::from_millis(1500), "{first_at:?}");
    assert!(second_at >= Duration::from_millis(1499), "{second_at:?}");
    let duration = second["payload"]["duration_ms"].as_u64().unwrap();
    assert!((1400..5000).contains(&duration), "duration_ms {duration}");
    // The hub's in-flight marks and queued bytes are released.
    assert_eq!(hub.reactor().stats().in_flight, 0);
    assert_eq!(health(hub_addr).await["queued_bytes"], 0);
    // The connection still relays.
    raw.send_json(&submit_frame(4, "after", "df", "upper", json!("again"))).await;
    assert_eq!(raw.recv_open().await["payload"]["data"], "AGAIN");
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_in_flight_through_the_hub_is_pf409_and_counts_in_health() {
    let (hub, hub_addr, service, _) = hub_and_service().await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    raw.send_json(&submit_frame(1, "dup", "df", "slow", json!(400))).await;
    until("the packet is in flight on the hub", || hub.reactor().stats().in_flight == 1).await;
    let doc = health(hub_addr).await;
    assert_eq!(doc["in_flight"], 1, "{doc}");
    assert!(doc["queued_bytes"].as_u64().unwrap() > 0, "{doc}");
    raw.send_json(&submit_frame(2, "dup", "df", "upper", json!("x"))).await;
    let refused = raw.recv_open().await;
    assert_eq!(refused["seq"], 2);
    assert_eq!(refused["payload"]["error"]["code"], "PF409", "{refused}");
    assert_eq!(refused["payload"]["error"]["message"], "a packet with id dup is already in flight");
    let done = raw.recv_open().await;
    assert_eq!((done["seq"].clone(), done["payload"]["data"].clone()), (json!(1), json!("slept")));
    assert_eq!(hub.reactor().stats().in_flight, 0);
    assert_eq!(health(hub_addr).await["queued_bytes"], 0);
    // A dependency on the relayed packet sees that it succeeded.
    hub.reactor().register_sync("df", "after", |_, _| Ok(json!("ran"))).unwrap();
    let mut dependent = submit_frame(3, "dependent", "df", "after", json!(null));
    dependent["payload"]["dependencies"] = json!(["dup"]);
    raw.send_json(&dependent).await;
    assert_eq!(raw.recv_open().await["payload"]["data"], "ran");
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_packets_are_answered_pf503_when_the_serving_peer_goes_or_the_hub_stops() {
    let (hub, hub_addr, service, _) = hub_and_service().await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    raw.send_json(&submit_frame(1, "orphan", "df", "slow", json!(5000))).await;
    until("the packet is in flight on the hub", || hub.reactor().stats().in_flight == 1).await;
    let start = Instant::now();
    service.stop().await;
    let answer = raw.recv_open().await;
    assert_eq!(answer["seq"], 1);
    assert_eq!(answer["payload"]["error"]["code"], "PF503", "{answer}");
    assert!(start.elapsed() < Duration::from_secs(4), "answered when the peer left, not at the deadline");
    assert_eq!(hub.reactor().stats().in_flight, 0);

    // A hub stopping with a relayed packet in flight answers it before closing.
    let (service, _) = node("service2", NodeConfig::default()).await;
    service
        .reactor()
        .register("df", "slow", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(data.as_u64().unwrap_or(0))).await;
            Ok(json!("slept"))
        })
        .unwrap();
    service.connect(&url(hub_addr)).await.unwrap();
    until("the hub routes df:slow again", || hub.can_route(packetflow::Group::DataFlow, "slow")).await;
    raw.send_json(&submit_frame(2, "stopping", "df", "slow", json!(5000))).await;
    until("the packet is in flight on the hub", || hub.reactor().stats().in_flight == 1).await;
    hub.stop().await;
    let (frames, code) = raw.frames_until_close().await;
    assert_eq!(code, Some(1001));
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["seq"], 2);
    assert_eq!(frames[0]["payload"]["error"]["code"], "PF503", "{frames:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_answers_pf408_itself_for_a_peer_that_never_answers() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let mut silent = silent_peer(&hub, hub_addr).await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    let start = Instant::now();
    let mut late = submit_frame(1, "late", "df", "void", json!(null));
    late["payload"]["timeout_ms"] = json!(900);
    let mut early = submit_frame(2, "early", "df", "void", json!(null));
    early["payload"]["timeout_ms"] = json!(200);
    let mut middle = submit_frame(3, "middle", "df", "void", json!(null));
    middle["payload"]["timeout_ms"] = json!(500);
    for frame in [&late, &early, &middle] {
        raw.send_json(frame).await;
    }
    for (seq, id, after_ms) in [(2, "early", 200), (3, "middle", 500), (1, "late", 900)] {
        let answer = raw.recv_open().await;
        let at = start.elapsed();
        assert_eq!(answer["seq"], seq, "{answer}");
        assert_eq!(answer["payload"]["packet_id"], id);
        assert_eq!(answer["payload"]["error"]["code"], "PF408");
        let message = answer["payload"]["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("no answer from peer ") && message.ends_with(" before the deadline"));
        assert!(at >= Duration::from_millis(after_ms), "{id} answered after {at:?}");
        assert!(at < Duration::from_millis(after_ms + 2000), "{id} answered after {at:?}");
    }
    // The silent peer got the three submits, each one hop further.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = silent.recv_open().await;
        if frame["type"] == "submit" {
            assert_eq!(frame["payload"]["metadata"]["pf.hops"], 1);
            seen.push(frame["payload"]["id"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["early", "late", "middle"]);
    // Its answer after the deadline is dropped: nothing more reaches `raw`.
    silent
        .send_json(&json!({"type": "result", "seq": 1, "payload": {
            "packet_id": "late", "status": "success", "data": 1, "duration_ms": 1}}))
        .await;
    raw.send_json(&json!({"type": "heartbeat", "seq": 9, "payload": {"timestamp": 1}})).await;
    let stats = hub.reactor().stats();
    assert_eq!(stats.in_flight, 0);
    assert_eq!(health(hub_addr).await["queued_bytes"], 0);
    hub.stop().await;
    let (frames, code) = raw.frames_until_close().await;
    assert_eq!((frames.len(), code), (0, Some(1001)), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_kept_while_thousands_of_relayed_packets_come_and_go() {
    let (hub, hub_addr, service, _) = hub_and_service().await;
    let _silent = silent_peer(&hub, hub_addr).await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    let start = Instant::now();
    let mut stuck = submit_frame(1, "stuck", "df", "void", json!(null));
    stuck["payload"]["timeout_ms"] = json!(5000);
    raw.send_json(&stuck).await;
    // Far more answered packets than the hub keeps deadline entries for
    // before it drops the answered ones, 50 in flight at a time.
    const N: u64 = 5000;
    let (mut sent, mut answered) = (0, 0);
    while answered < N {
        while sent < N && sent - answered < 50 {
            sent += 1;
            raw.send_json(&submit_frame(sent + 1, &format!("p{sent}"), "df", "upper", json!("x"))).await;
        }
        let answer = raw.recv_open().await;
        assert_eq!(answer["payload"]["data"], "X", "{answer}");
        answered += 1;
    }
    assert!(start.elapsed() < Duration::from_millis(5000), "the load took too long to test anything");
    let answer = raw.recv_open().await;
    assert_eq!(
        (answer["seq"].clone(), answer["payload"]["error"]["code"].clone()),
        (json!(1), json!("PF408"))
    );
    assert!(start.elapsed() >= Duration::from_millis(5000));
    assert_eq!(hub.reactor().stats().in_flight, 0);
    assert_eq!(health(hub_addr).await["queued_bytes"], 0);
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_leaving_ends_the_in_flight_marks_of_its_relayed_packets() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let mut silent = silent_peer(&hub, hub_addr).await;
    let mut raw = RawPeer::connect(&url(hub_addr)).await;
    raw.send_json(&submit_frame(1, "left-behind", "df", "void", json!(null))).await;
    until("the packet is in flight on the hub", || hub.reactor().stats().in_flight == 1).await;
    raw.close().await;
    // As when a forwarding future was dropped: the mark ends (the id may be
    // submitted again), the bytes are released; the peer still owes its answer.
    until("the in-flight mark ends", || hub.reactor().stats().in_flight == 0).await;
    let doc = health(hub_addr).await;
    assert_eq!(doc["queued_bytes"], 0, "{doc}");
    let peer = doc["peers"].as_array().unwrap().iter().find(|p| p["node_id"] == "silent").cloned();
    assert_eq!(peer.expect("the silent peer is listed")["in_flight"], 1, "{doc}");
    let mut again = RawPeer::connect(&url(hub_addr)).await;
    let mut frame = submit_frame(2, "left-behind", "df", "void", json!(null));
    frame["payload"]["timeout_ms"] = json!(200);
    again.send_json(&frame).await;
    let answer = again.recv_open().await;
    assert_eq!(answer["payload"]["error"]["code"], "PF408", "not PF409: {answer}");
    // The late answer to the first one is dropped quietly.
    silent
        .send_json(&json!({"type": "result", "seq": 1, "payload": {
            "packet_id": "left-behind", "status": "success", "data": 1, "duration_ms": 1}}))
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let doc = health(hub_addr).await;
        let peer = doc["peers"].as_array().unwrap().iter().find(|p| p["node_id"] == "silent").cloned();
        if peer.expect("the silent peer is listed")["in_flight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the silent peer's answer was not taken: {doc}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(hub.reactor().stats().in_flight, 0);
    hub.stop().await;
    let (frames, code) = again.frames_until_close().await;
    assert_eq!((frames.len(), code), (0, Some(1001)), "{frames:?}");
}

/// A peer that says hello (so it is a node, not a seed peer), announces
/// df:void, takes the submits and never answers them; returned once the hub
/// routes df:void to it.
async fn silent_peer(hub: &Node, hub_addr: std::net::SocketAddr) -> RawPeer {
    let mut silent = RawPeer::connect(&url(hub_addr)).await;
    silent
        .send_json(&json!({"type": "hello", "seq": 1, "payload": {
            "node_id": "silent", "name": "silent", "runtime": "test", "protocol": "1.0",
            "handlers": ["df:void"], "features": [], "max_inflight": 0}}))
        .await;
    until("the hub routes df:void", || hub.can_route(packetflow::Group::DataFlow, "void")).await;
    silent
}
