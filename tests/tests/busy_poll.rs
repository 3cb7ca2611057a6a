//! Nodes with `NodeConfig::busy_poll`: a hub relays as any hub does, spins
//! after frames while few packets are in flight, sleeps once its window
//! passes with no frame or while many packets are in flight (relayed, or a
//! node's own submits), and says which in `/health`.

use std::time::Duration;

use packetflow::{json, Node, NodeConfig, Packet, Reactor, ReactorConfig, Value};
use packetflow_tests::*;

fn spinning(hub: &Node) -> bool {
    hub.health()["busy_poll"]["spinning"].as_bool().expect("health shows busy_poll.spinning")
}

/// Makes a round trip every few milliseconds until `node` spins after one
/// (the 50 ms calm a node needs after a crowd); fails with `what` past
/// [`WAIT`].
async fn round_trips_until_spinning(node: &Node, what: &str, mut round_trip: impl AsyncFnMut()) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        round_trip().await;
        if spinning(node) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A hub busy-polling for `window`, a handler node dialing it that serves
/// `df:upper` and `df:held` (answers once `release` is sent), and a seed-style
/// client of the hub.
async fn hub_handler_client(window: Duration) -> (Node, Node, RawPeer, tokio::sync::watch::Sender<bool>) {
    let (hub, addr) = node("hub", NodeConfig { busy_poll: Some(window), ..NodeConfig::default() }).await;
    let (reactor, release) = handler_reactor();
    let handler = Node::new(reactor, NodeConfig::default());
    handler.connect(&url(addr)).await.expect("the handler dials the hub");
    let client = RawPeer::connect(&url(addr)).await;
    (hub, handler, client, release)
}

/// A reactor serving `df:upper` and `df:held`, which answers once `true`
/// is sent on the sender returned.
fn handler_reactor() -> (Reactor, tokio::sync::watch::Sender<bool>) {
    let reactor = Reactor::new(ReactorConfig { name: "handler".into(), ..ReactorConfig::default() });
    register_upper(&reactor);
    let (release, released) = tokio::sync::watch::channel(false);
    reactor
        .register("df", "held", move |data: Value, _| {
            let mut released = released.clone();
            async move {
                released.wait_for(|r| *r).await.expect("the test holds the sender");
                Ok(data)
            }
        })
        .unwrap();
    (reactor, release)
}

#[tokio::test]
async fn relays_spins_after_frames_and_sleeps_when_its_window_passes() {
    let window = Duration::from_millis(300);
    let (hub, _handler, mut client, _release) = hub_handler_client(window).await;
    assert_eq!(hub.health()["busy_poll"]["window_us"], json!(300_000));
    until("the hub sleeps after the hello exchange", || !spinning(&hub)).await;
    for i in 0..50u64 {
        client.send_json(&submit_frame(i + 1, &format!("p{i}"), "df", "upper", json!(format!("x{i}")))).await;
        let answer = client.recv_open().await;
        assert_eq!(answer["type"], "result", "{answer}");
        assert_eq!(answer["seq"], json!(i + 1), "{answer}");
        assert_eq!(answer["payload"]["data"], json!(format!("X{i}")), "{answer}");
    }
    // The client's frames (the last a moment ago) woke it.
    let answered = std::time::Instant::now();
    let spun = spinning(&hub);
    assert!(spun || answered.elapsed() >= window, "not spinning right after a round trip");
    until("the hub sleeps once its window passed", || !spinning(&hub)).await;
}

#[tokio::test]
async fn sleeps_while_many_packets_are_held_and_answers_them_all() {
    // A window of an hour: only the packets held can make it sleep.
    let (hub, _handler, mut client, release) = hub_handler_client(Duration::from_secs(3600)).await;
    client.send_json(&submit_frame(1, "warm", "df", "upper", json!("a"))).await;
    assert_eq!(client.recv_open().await["payload"]["data"], json!("A"));
    assert!(spinning(&hub), "frames a moment ago, a window of an hour");
    let held = 20u64;
    for i in 0..held {
        client.send_json(&submit_frame(i + 2, &format!("h{i}"), "df", "held", json!(i))).await;
    }
    until("the hub sleeps with 20 packets held", || {
        hub.health()["queued_bytes"].as_u64().unwrap_or(0) > 0 && !spinning(&hub)
    })
    .await;
    release.send(true).unwrap();
    let mut seqs: Vec<u64> = Vec::new();
    for _ in 0..held {
        let answer = client.recv_open().await;
        assert_eq!(answer["type"], "result", "{answer}");
        assert_eq!(answer["payload"]["status"], "success", "{answer}");
        seqs.push(answer["seq"].as_u64().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..held + 2).collect::<Vec<_>>());
    // Calm again (no crowd for a while): round trips make it spin, and with
    // a window of an hour it goes on spinning after them.
    let mut seq = 100;
    round_trips_until_spinning(&hub, "the hub never spun again once calm", async || {
        seq += 1;
        client.send_json(&submit_frame(seq, &format!("after{seq}"), "df", "upper", json!("b"))).await;
        assert_eq!(client.recv_open().await["payload"]["data"], json!("B"));
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn a_submitting_node_sleeps_while_many_of_its_submits_wait_on_a_peer() {
    let (reactor, release) = handler_reactor();
    let (_handler, addr) = node_with(reactor, NodeConfig::default()).await;
    let window = Duration::from_secs(3600);
    let client = Node::new(
        Reactor::new(ReactorConfig { name: "client".into(), ..ReactorConfig::default() }),
        NodeConfig { busy_poll: Some(window), ..NodeConfig::default() },
    );
    client.connect(&url(addr)).await.expect("connect");
    let upper = client.reactor().call(Packet::build("df", "upper", json!("a")).unwrap()).await;
    assert_eq!(upper.expect("df:upper over the network"), json!("A"));
    assert!(spinning(&client), "an answer a moment ago, a window of an hour");
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let reactor = client.reactor().clone();
            tokio::spawn(async move { reactor.call(Packet::build("df", "held", json!(i)).unwrap()).await })
        })
        .collect();
    until("the client sleeps with 20 of its submits in flight", || {
        client.health()["in_flight"].as_u64() == Some(20) && !spinning(&client)
    })
    .await;
    release.send(true).unwrap();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().expect("df:held answered"), json!(i));
    }
    // Calm again: round trips make it spin, and it goes on spinning.
    round_trips_until_spinning(&client, "the client never spun again once calm", async || {
        client.reactor().call(Packet::build("df", "upper", json!("b")).unwrap()).await.expect("df:upper");
    })
    .await;
    client.stop().await;
}

#[tokio::test]
async fn off_by_default() {
    let (hub, _) = node("hub", NodeConfig::default()).await;
    assert_eq!(hub.health()["busy_poll"], Value::Null);
}
