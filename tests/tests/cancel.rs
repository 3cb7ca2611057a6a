//! Cancellation across nodes (docs/protocol.md, "Cancellation"): a chain
//! of calls over two hops, a hub passing a cancel on, connections that go
//! away, deadlines, cancel frames from peers, and peers that must never be
//! sent one (seed-spec peers, nodes that do not list `cancel`).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use packetflow::{
    json, Context, Group, HandlerResult, Node, NodeConfig, Packet, PacketResult, Priority, Value,
};
use packetflow_tests::{node, submit_frame, until, url, RawPeer, WAIT};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Seen = mpsc::UnboundedSender<&'static str>;

/// Reports `name` on `seen` once `ctx`'s cancellation signal fires.
fn watch(ctx: &Context, seen: &Seen, name: &'static str) {
    let (cancelled, seen) = (ctx.cancelled(), seen.clone());
    tokio::spawn(async move {
        cancelled.await;
        let _ = seen.send(name);
    });
}

/// `df:<name>`: reports `name` on `entered` when it starts, watches its
/// signal (reported as `name` on `seen`), and never answers.
fn register_block(node: &Node, name: &'static str, entered: &Seen, seen: &Seen) {
    let (entered, seen) = (entered.clone(), seen.clone());
    node.reactor()
        .register("df", name, move |_, ctx| {
            watch(&ctx, &seen, name);
            let _ = entered.send(name);
            std::future::pending::<HandlerResult>()
        })
        .unwrap();
}

/// `df:<name>`: watches its signal and calls `df:<next>`.
fn register_call(node: &Node, name: &'static str, next: &'static str, seen: &Seen) {
    let seen = seen.clone();
    node.reactor()
        .register("df", name, move |data, ctx| {
            let seen = seen.clone();
            async move {
                watch(&ctx, &seen, name);
                ctx.call("df", next, data).await
            }
        })
        .unwrap();
}

async fn next(events: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    timeout(WAIT, events.recv()).await.expect("observed in time").expect("sender alive")
}

async fn nothing_in_flight(nodes: &[&Node]) {
    for (i, n) in nodes.iter().enumerate() {
        until(&format!("node {i} has nothing in flight"), || n.health()["in_flight"] == 0).await;
    }
}

fn cancelled_of(node: &Node, element: &str) -> u64 {
    let stats = node.reactor().stats();
    stats.handlers.iter().find(|h| h.element.as_str() == element).map_or(0, |h| h.cancelled)
}

fn code_of(result: &PacketResult) -> Option<&str> {
    result.err().map(|e| e.code.as_str())
}

async fn routes(node: &Node, element: &str) {
    until(&format!("a route to df:{element}"), || node.can_route(Group::DataFlow, element)).await;
}

#[tokio::test]
async fn a_chain_of_three_over_two_hops_is_cancelled_at_every_level() {
    let (seen, mut events) = mpsc::unbounded_channel();
    let (entered, mut started) = mpsc::unbounded_channel();
    let (n1, _) = node("n1", NodeConfig::default()).await;
    let (n2, addr2) = node("n2", NodeConfig::default()).await;
    let (n3, addr3) = node("n3", NodeConfig::default()).await;
    register_call(&n1, "a", "b", &seen);
    register_call(&n2, "b", "c", &seen);
    register_block(&n3, "c", &entered, &seen);
    n2.connect(&url(addr3)).await.unwrap();
    n1.connect(&url(addr2)).await.unwrap();
    routes(&n1, "b").await;
    routes(&n2, "c").await;

    let p = Packet::build("df", "a", json!(1)).unwrap();
    let id = p.id.clone();
    let reactor = n1.reactor().clone();
    let submit = tokio::spawn(async move { reactor.submit(p).await });
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("c"));
    assert!(n1.reactor().cancel(&id));
    let result = timeout(WAIT, submit).await.expect("answered at once").unwrap();
    assert_eq!(code_of(&result), Some("PF499"));
    let mut levels = vec![next(&mut events).await, next(&mut events).await, next(&mut events).await];
    levels.sort();
    assert_eq!(levels, ["a", "b", "c"]);
    nothing_in_flight(&[&n1, &n2, &n3]).await;
    until("n3 counts c cancelled", || cancelled_of(&n3, "c") == 1).await;
    until("n2 counts b cancelled", || cancelled_of(&n2, "b") == 1).await;
    assert_eq!(cancelled_of(&n1, "a"), 1);
    assert_eq!(n1.reactor().stats().forwards_cancelled, 1, "the call to b, withdrawn");
    let metrics = n3.metrics();
    assert!(metrics.contains("packetflow_cancelled_total{group=\"df\",element=\"c\"} 1"), "{metrics}");
    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_call_keeps_its_callers_priority_across_a_hop() {
    let (n1, _) = node("n1", NodeConfig::default()).await;
    let (n2, addr2) = node("n2", NodeConfig::default()).await;
    n2.reactor().register_sync("df", "priority", |_, ctx| Ok(json!(ctx.priority().get()))).unwrap();
    n1.reactor()
        .register("df", "caller", |_, ctx| async move { ctx.call("df", "priority", json!(null)).await })
        .unwrap();
    n1.connect(&url(addr2)).await.unwrap();
    routes(&n1, "priority").await;
    let p = Packet::build("df", "caller", json!(null)).unwrap().with_priority(Priority::new(8).unwrap());
    assert_eq!(n1.reactor().call(p).await, Ok(json!(8)));
    for n in [n1, n2] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_hub_passes_a_cancel_on_to_the_node_it_relayed_to() {
    let (seen, mut events) = mpsc::unbounded_channel();
    let (entered, mut started) = mpsc::unbounded_channel();
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (server, _) = node("server", NodeConfig::default()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    register_block(&server, "block", &entered, &seen);
    server.connect(&url(hub_addr)).await.unwrap();
    client.connect(&url(hub_addr)).await.unwrap();
    routes(&client, "block").await;

    let p = Packet::build("df", "block", json!(null)).unwrap();
    let id = p.id.clone();
    let reactor = client.reactor().clone();
    let submit = tokio::spawn(async move { reactor.submit(p).await });
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("block"));
    assert_eq!(hub.health()["in_flight"], 1, "relayed by the hub");
    assert!(client.reactor().cancel(&id));
    assert_eq!(code_of(&timeout(WAIT, submit).await.unwrap().unwrap()), Some("PF499"));
    assert_eq!(next(&mut events).await, "block");
    nothing_in_flight(&[&client, &hub, &server]).await;
    until("the hub counts the relay cancelled", || hub.reactor().stats().forwards_cancelled == 1).await;
    until("the server counts block cancelled", || cancelled_of(&server, "block") == 1).await;
    for n in [client, hub, server] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_connection_that_goes_away_cancels_what_it_submitted() {
    let (seen, mut events) = mpsc::unbounded_channel();
    let (entered, mut started) = mpsc::unbounded_channel();
    // Run here, on the node the client is connected to.
    let (local, local_addr) = node("local", NodeConfig::default()).await;
    register_block(&local, "here", &entered, &seen);
    let mut client = RawPeer::connect(&url(local_addr)).await;
    client.send_json(&submit_frame(1, "here-1", "df", "here", json!(null))).await;
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("here"));
    client.close().await;
    assert_eq!(next(&mut events).await, "here");
    nothing_in_flight(&[&local]).await;
    until("counted cancelled", || cancelled_of(&local, "here") == 1).await;

    // Relayed by a hub to another node: that node is told.
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let (server, _) = node("server", NodeConfig::default()).await;
    register_block(&server, "there", &entered, &seen);
    server.connect(&url(hub_addr)).await.unwrap();
    routes(&hub, "there").await;
    let mut client = RawPeer::connect(&url(hub_addr)).await;
    client.send_json(&submit_frame(1, "there-1", "df", "there", json!(null))).await;
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("there"));
    client.close().await;
    assert_eq!(next(&mut events).await, "there");
    nothing_in_flight(&[&hub, &server]).await;
    until("the hub counts the relay cancelled", || hub.reactor().stats().forwards_cancelled == 1).await;
    for n in [local, hub, server] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_peer_cancels_its_own_submits_with_a_cancel_frame_and_nobody_elses() {
    let (seen, mut events) = mpsc::unbounded_channel();
    let (entered, mut started) = mpsc::unbounded_channel();
    let (n, addr) = node("n", NodeConfig::default()).await;
    register_block(&n, "block", &entered, &seen);
    packetflow_tests::register_upper(n.reactor());
    let mut owner = RawPeer::connect(&url(addr)).await;
    let mut other = RawPeer::connect(&url(addr)).await;
    owner.send_json(&submit_frame(7, "mine", "df", "block", json!(null))).await;
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("block"));

    // Another connection's cancel is ignored: no answer (the answer to its
    // next submit comes first), nothing cancelled.
    other.send_json(&json!({"type": "cancel", "seq": 7, "payload": {"packet_id": "mine"}})).await;
    other.send_json(&submit_frame(1, "probe", "df", "upper", json!("x"))).await;
    let answer = other.recv_open().await;
    assert_eq!(answer["payload"]["packet_id"], "probe", "{answer}");
    assert_eq!(n.health()["in_flight"], 1);

    // A cancel naming no valid packet id is refused, naming the field.
    owner.send_json(&json!({"type": "cancel", "seq": 8, "payload": {"packet_id": ""}})).await;
    let refused = owner.recv_open().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["seq"], 8);
    assert_eq!(refused["payload"]["code"], "PF400");
    assert_eq!(refused["payload"]["message"], "packet_id must be a string of 1-128 bytes, got 0 bytes");

    owner.send_json(&json!({"type": "cancel", "seq": 7, "payload": {"packet_id": "mine"}})).await;
    let answer = owner.recv_open().await;
    assert_eq!(answer["type"], "result");
    assert_eq!(answer["seq"], 7);
    assert_eq!(answer["payload"]["error"]["code"], "PF499");
    assert_eq!(next(&mut events).await, "block");

    // A submit and its cancel in one frame (a batch), read together before
    // the submit starts: cancelled all the same.
    let cancel = json!({"type": "cancel", "seq": 9, "payload": {"packet_id": "quick"}});
    owner.send_json(&json!([submit_frame(9, "quick", "df", "block", json!(null)), cancel])).await;
    let answer = owner.recv_open().await;
    assert_eq!(
        (answer["seq"].clone(), answer["payload"]["error"]["code"].clone()),
        (json!(9), json!("PF499"))
    );
    nothing_in_flight(&[&n]).await;
    n.stop().await;
}

/// A PacketFlow peer made of raw frames, for one connection: it answers a
/// dialer's `hello` with one announcing `df:raw` and `features`, and hands
/// every later frame to the test.
async fn raw_node(features: &'static [&'static str]) -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (frames, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The callback's type is tungstenite's (an `ErrorResponse` error).
        #[allow(clippy::result_large_err)]
        let speaks_hello = |_: &Request, mut response: Response| {
            response.headers_mut().insert("x-packetflow-node", "raw".parse().unwrap());
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, speaks_hello).await.unwrap();
        let hello = json!({"type": "hello", "seq": 0, "payload": {
            "node_id": "raw", "name": "raw", "runtime": "test", "protocol": "1.0",
            "handlers": ["df:raw"], "features": features, "max_inflight": 64}});
        ws.send(WsMessage::Text(hello.to_string().into())).await.unwrap();
        while let Some(Ok(frame)) = ws.next().await {
            let WsMessage::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "hello" && value["type"] != "heartbeat" {
                let _ = frames.send(value);
            }
        }
    });
    (addr, received)
}

async fn frame(received: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    timeout(WAIT, received.recv()).await.expect("a frame in time").expect("peer alive")
}

#[tokio::test]
async fn a_deadline_that_passes_withdraws_a_forwarded_packet_from_a_peer_that_takes_cancels() {
    let (addr, mut received) = raw_node(&["cancel"]).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&url(addr)).await.unwrap();
    let p = Packet::build("df", "raw", json!(null)).unwrap().with_timeout_ms(100);
    let id = p.id.clone();
    let result = client.reactor().submit(p).await;
    assert_eq!(code_of(&result), Some("PF408"));
    let submit = frame(&mut received).await;
    assert_eq!(submit["type"], "submit");
    let cancel = frame(&mut received).await;
    assert_eq!(
        cancel,
        json!({"type": "cancel", "seq": submit["seq"], "payload": {"packet_id": id.as_str()}})
    );
    assert_eq!(client.health()["in_flight"], 0);
    client.stop().await;
}

#[tokio::test]
async fn a_node_that_does_not_list_cancel_is_never_sent_one() {
    let (addr, mut received) = raw_node(&["batch"]).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&url(addr)).await.unwrap();
    let p = Packet::build("df", "raw", json!(1)).unwrap();
    let id = p.id.clone();
    let reactor = client.reactor().clone();
    let submit = tokio::spawn(async move { reactor.submit(p).await });
    assert_eq!(frame(&mut received).await["payload"]["id"], id.as_str());
    assert!(client.reactor().cancel(&id));
    assert_eq!(code_of(&timeout(WAIT, submit).await.unwrap().unwrap()), Some("PF499"));
    // Frames keep their order: the next submit comes with no cancel before.
    let probe = Packet::build("df", "raw", json!(2)).unwrap();
    let probe_id = probe.id.clone();
    let reactor = client.reactor().clone();
    let _pending = tokio::spawn(async move { reactor.submit(probe).await });
    assert_eq!(frame(&mut received).await["payload"]["id"], probe_id.as_str());
    client.stop().await;
}

#[tokio::test]
async fn a_seed_spec_peer_in_the_middle_of_a_chain_never_receives_a_cancel_frame() {
    let (seen, mut events) = mpsc::unbounded_channel();
    let (entered, mut started) = mpsc::unbounded_channel();
    let (n, addr) = node("n", NodeConfig::default()).await;
    // df:a calls df:seed, which only the seed-spec peer serves (a default
    // route); the seed peer, in its turn, submits df:c back to the node.
    register_call(&n, "a", "seed", &seen);
    register_block(&n, "c", &entered, &seen);
    let mut seed = RawPeer::connect(&url(addr)).await;
    let p = Packet::build("df", "a", json!(null)).unwrap();
    let id = p.id.clone();
    let reactor = n.reactor().clone();
    let submit = tokio::spawn(async move { reactor.submit(p).await });
    let call = seed.recv_open().await;
    assert_eq!((call["type"].clone(), call["payload"]["element"].clone()), (json!("submit"), json!("seed")));
    seed.send_json(&submit_frame(1, "seed-calls-c", "df", "c", json!(null))).await;
    assert_eq!(timeout(WAIT, started.recv()).await.unwrap(), Some("c"));

    assert!(n.reactor().cancel(&id));
    assert_eq!(code_of(&timeout(WAIT, submit).await.unwrap().unwrap()), Some("PF499"));
    assert_eq!(next(&mut events).await, "a");
    // Frames keep their order: a probe sent after the cancel arrives with
    // nothing before it.
    let probe = Packet::build("df", "seed", json!("probe")).unwrap();
    let reactor = n.reactor().clone();
    let _pending = tokio::spawn(async move { reactor.submit(probe).await });
    let after = seed.recv_open().await;
    assert_eq!(after["type"], "submit", "{after}");
    assert_eq!(after["payload"]["data"], "probe");
    // The chain stops at the seed peer: its own packet runs on, until its
    // connection goes away.
    assert_eq!(n.health()["in_flight"], 2, "df:c and the probe");
    seed.close().await;
    assert_eq!(next(&mut events).await, "c");
    nothing_in_flight(&[&n]).await;
    n.stop().await;
}
