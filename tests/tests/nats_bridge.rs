//! A node on NATS and on WebSocket routes between them both ways
//! (docs/protocol.md, "NATS", "Bridging"): seed-spec peers and nodes that
//! are not on NATS reach keys served on NATS through it, the keys they
//! serve are served on NATS by it, cancels cross NATS, and `/metrics`
//! counts packets per route. Real `nats-server` processes on loopback
//! ports, two of them clustered where a packet crosses servers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use packetflow::{json, Context, Group, HandlerResult, NodeConfig, PacketResult, Value};
use packetflow_tests::nats_node::{
    bare_node as bare, df as packet, submit_in_time as submit, until_reachable,
};
use packetflow_tests::nats_server::NatsServer;
use packetflow_tests::{node, register_upper, submit_frame, until, url, RawPeer, WAIT};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn code(result: &PacketResult) -> Option<&str> {
    result.err().map(|e| e.code.as_str())
}

/// A seed-spec peer serving `df:<element>` (it echoes `data` as
/// `{"seed": data}`): a plain WebSocket client that never sends `hello`
/// and answers every submit with `seq: 0`. Each packet id it serves is
/// reported on `served`. It closes its connection when `stop` is sent (or
/// dropped).
async fn seed_server(
    node_url: &str,
    element: &'static str,
    served: mpsc::UnboundedSender<String>,
) -> oneshot::Sender<()> {
    let (mut ws, _) =
        timeout(WAIT, tokio_tungstenite::connect_async(node_url)).await.expect("in time").expect("connect");
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                _ = &mut stopped => break,
                frame = ws.next() => frame,
            };
            let Some(Ok(WsMessage::Text(text))) = frame else {
                if matches!(frame, Some(Ok(_))) {
                    continue;
                }
                return;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["type"] != "submit" {
                continue;
            }
            let p = &message["payload"];
            let result = if p["element"] == element {
                let _ = served.send(p["id"].as_str().unwrap_or_default().to_owned());
                json!({"packet_id": p["id"], "status": "success", "data": {"seed": p["data"]}, "duration_ms": 0})
            } else {
                json!({"packet_id": p["id"], "status": "error",
                       "error": {"code": "PF001", "message": "no handler"}, "duration_ms": 0})
            };
            let frame = json!({"type": "result", "seq": 0, "payload": result});
            if ws.send(WsMessage::Text(frame.to_string().into())).await.is_err() {
                return;
            }
        }
        let _ = ws.close(None).await;
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_on_a_bridge_reaches_a_handler_behind_another_server() {
    let servers = NatsServer::cluster(2).await;
    let serving = bare("serving");
    register_upper(serving.reactor());
    serving.connect(&servers[1].url()).await.unwrap();
    let (bridge, addr) = node("bridge", NodeConfig::default()).await;
    bridge.connect(&servers[0].url()).await.unwrap();
    until_reachable(&bridge, "upper", json!("probe")).await;

    // A client written from the seed spec alone: no hello, raw frames.
    let mut seed = RawPeer::connect(&url(addr)).await;
    seed.send_json(&submit_frame(7, "seed-1", "df", "upper", json!("from a seed peer"))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["type"], "result", "{answer}");
    assert_eq!(answer["seq"], 7);
    assert_eq!(answer["payload"]["packet_id"], "seed-1");
    assert_eq!(answer["payload"]["data"], "FROM A SEED PEER", "{answer}");
    // It crossed NATS: the serving node answered a request, counted as
    // one more hop than the seed's.
    assert!(serving.health()["nats"]["requests_served"].as_u64().unwrap() >= 2);

    // A key nobody serves anywhere is PF001, as the seed spec says.
    seed.send_json(&submit_frame(8, "seed-2", "df", "nowhere", json!(null))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["payload"]["error"]["code"], "PF001", "{answer}");
    seed.close().await;
    bridge.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_off_nats_reaches_nats_through_its_hub_and_a_node_on_nats_goes_itself() {
    let server = NatsServer::start().await;
    let serving = bare("serving");
    register_upper(serving.reactor());
    serving.connect(&server.url()).await.unwrap();
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    hub.connect(&server.url()).await.unwrap();

    // Off NATS: the hub's hello lists `nats`, and what no one announced
    // goes to it, and on to NATS.
    let spoke = bare("spoke");
    spoke.connect(&url(addr)).await.unwrap();
    let result = until_reachable(&spoke, "upper", json!("spoke")).await;
    assert_eq!(result.outcome, Ok(json!("SPOKE")));
    let sent_by_hub = hub.reactor().stats().routed.nats;
    assert!(sent_by_hub >= 1, "the hub sent it over NATS");
    assert!(spoke.reactor().stats().routed.websocket >= 1);

    // On NATS too: it sends over NATS itself, never through the hub.
    let on_nats = bare("on-nats");
    on_nats.connect(&url(addr)).await.unwrap();
    on_nats.connect(&server.url()).await.unwrap();
    let result = until_reachable(&on_nats, "upper", json!("direct")).await;
    assert_eq!(result.outcome, Ok(json!("DIRECT")));
    let stats = on_nats.reactor().stats();
    assert_eq!(stats.routed.websocket, 0, "nothing went to the hub");
    assert!(stats.routed.nats >= 1);
    assert_eq!(hub.reactor().stats().routed.nats, sent_by_hub, "the hub sent nothing more");
    for n in [&on_nats, &spoke, &hub, &serving] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_on_a_seed_peer_is_reached_from_another_server_through_its_bridge() {
    let servers = NatsServer::cluster(2).await;
    let (bridge, addr) = node("bridge", NodeConfig::default()).await;
    bridge.connect(&servers[0].url()).await.unwrap();
    let (served_tx, mut served) = mpsc::unbounded_channel();
    let stop_seed = seed_server(&url(addr), "seedecho", served_tx).await;
    until("the seed peer is connected", || bridge.peer_count() == 1).await;

    // A seed peer announces nothing: the bridge learns the key when the
    // seed peer serves it, and serves it on NATS from then on.
    let result = submit(&bridge, packet("seedecho", json!(1))).await;
    assert_eq!(result.outcome, Ok(json!({"seed": 1})));
    until("the bridge serves the seed's key on NATS", || bridge.health()["nats"]["bridged_keys"] == 1).await;

    let asking = bare("asking");
    asking.connect(&servers[1].url()).await.unwrap();
    let p = packet("seedecho", json!("across"));
    let id = p.id.to_string();
    let result = until_reachable(&asking, "seedecho", json!("probe")).await;
    assert_eq!(result.outcome, Ok(json!({"seed": "probe"})));
    let result = submit(&asking, p).await;
    assert_eq!(result.outcome, Ok(json!({"seed": "across"})));
    // The seed peer saw the asking node's packet itself.
    let mut ids = Vec::new();
    while let Ok(seen) = served.try_recv() {
        ids.push(seen);
    }
    assert!(ids.contains(&id), "{ids:?} lacks {id}");

    // The seed peer leaves: its key leaves NATS with it.
    drop(stop_seed);
    until("the bridge no longer serves the key", || bridge.health()["nats"]["bridged_keys"] == 0).await;
    // A request routed to the bridge while its UNSUB travels is lost by
    // the client and answered PF408 at its deadline (docs/protocol.md,
    // "NATS"): short deadlines, so that such a one ends within the wait.
    let until_gone = Instant::now() + WAIT;
    loop {
        let result = submit(&asking, packet("seedecho", json!(2)).with_timeout_ms(2_000)).await;
        if code(&result) == Some("PF001") {
            break;
        }
        assert!(Instant::now() < until_gone, "the key stayed on NATS: {result:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asking.stop().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_serves_on_nats_the_keys_of_its_peers_off_nats_only() {
    let servers = NatsServer::cluster(2).await;
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    hub.connect(&servers[0].url()).await.unwrap();
    // A node off NATS, and one on NATS, both peers of the hub.
    let off = bare("off");
    off.reactor()
        .register_sync("df", "lower", |d, _| Ok(json!(d.as_str().unwrap_or("").to_lowercase())))
        .unwrap();
    off.connect(&url(addr)).await.unwrap();
    let on = bare("on");
    register_upper(on.reactor());
    on.connect(&servers[1].url()).await.unwrap();
    on.connect(&url(addr)).await.unwrap();
    until("the hub knows both peers' keys", || {
        hub.can_route(Group::DataFlow, "lower") && hub.can_route(Group::DataFlow, "upper")
    })
    .await;
    // Only the key of the peer off NATS is bridged: the other is served
    // on NATS by its own node.
    until("the hub bridges df:lower", || hub.health()["nats"]["bridged_keys"] == 1).await;
    assert_eq!(hub.reactor().stats().nats.as_ref().unwrap().bridged_keys, 1);
    assert_eq!(hub.health()["nats"]["served_keys"], 1);

    let asking = bare("asking");
    asking.connect(&servers[1].url()).await.unwrap();
    let result = until_reachable(&asking, "lower", json!("ACROSS")).await;
    assert_eq!(result.outcome, Ok(json!("across")));
    assert!(off.reactor().stats().routed.local >= 1);
    let result = until_reachable(&asking, "upper", json!("on")).await;
    assert_eq!(result.outcome, Ok(json!("ON")));

    // The peer off NATS leaves: its key leaves NATS.
    off.stop().await;
    until("the hub no longer bridges df:lower", || hub.health()["nats"]["bridged_keys"] == 0).await;
    for n in [&asking, &on, &hub] {
        n.stop().await;
    }
}

type Seen = mpsc::UnboundedSender<&'static str>;

/// Reports `name` on `seen` once `ctx`'s cancellation signal fires.
fn watch(ctx: &Context, seen: &Seen, name: &'static str) {
    let (cancelled, seen) = (ctx.cancelled(), seen.clone());
    tokio::spawn(async move {
        cancelled.await;
        let _ = seen.send(name);
    });
}

async fn next(events: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    timeout(WAIT, events.recv()).await.expect("observed in time").expect("sender alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_crosses_nats_and_goes_down_the_call_tree_beyond() {
    let servers = NatsServer::cluster(2).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    // df:outer on a node on NATS calls df:inner, on a WebSocket peer of it
    // that is off NATS; df:inner never answers.
    let (serving, addr) = node("serving", NodeConfig::default()).await;
    serving.connect(&servers[1].url()).await.unwrap();
    let seen_outer = seen_tx.clone();
    serving
        .reactor()
        .register("df", "outer", move |data, ctx| {
            let seen = seen_outer.clone();
            async move {
                watch(&ctx, &seen, "outer");
                ctx.call("df", "inner", data).await
            }
        })
        .unwrap();
    let inner = bare("inner");
    let (entered_inner, seen_inner) = (entered_tx.clone(), seen_tx.clone());
    inner
        .reactor()
        .register("df", "inner", move |_, ctx| {
            watch(&ctx, &seen_inner, "inner");
            let _ = entered_inner.send("inner");
            std::future::pending::<HandlerResult>()
        })
        .unwrap();
    inner.connect(&url(addr)).await.unwrap();
    until("the serving node routes df:inner", || serving.can_route(Group::DataFlow, "inner")).await;

    let asking = bare("asking");
    asking.connect(&servers[0].url()).await.unwrap();
    // Reachable first (a probe that answers at once would not tell): the
    // serving node's subscription reaches the other server a moment later.
    serving.reactor().register_sync("df", "probe", |_, _| Ok(json!("ok"))).unwrap();
    until_reachable(&asking, "probe", json!(null)).await;

    let p = packet("outer", json!("x")).with_timeout_ms(60_000);
    let id = p.id.clone();
    let reactor = asking.reactor().clone();
    let waiting = tokio::spawn(async move { reactor.submit(p).await });
    assert_eq!(next(&mut entered).await, "inner");
    assert!(asking.reactor().cancel(&id));
    let result = timeout(WAIT, waiting).await.expect("answered in time").unwrap();
    assert_eq!(code(&result), Some("PF499"));
    // The serving node was told: its handler, and the call it made over
    // WebSocket, stop long before their 60 s deadline.
    let mut stopped = vec![next(&mut seen).await, next(&mut seen).await];
    stopped.sort();
    assert_eq!(stopped, ["inner", "outer"]);
    assert_eq!(asking.health()["nats"]["cancels_sent"], 1);
    until("the serving node counts the cancel", || serving.health()["nats"]["cancels_applied"] == 1).await;
    until("nothing in flight on the serving node", || serving.health()["in_flight"] == 0).await;
    until("nothing in flight on the inner node", || inner.health()["in_flight"] == 0).await;

    // A submitter that goes away (its submit's future dropped) cancels
    // the same way.
    let p = packet("outer", json!("y")).with_timeout_ms(60_000);
    let reactor = asking.reactor().clone();
    let waiting = tokio::spawn(async move { reactor.submit(p).await });
    assert_eq!(next(&mut entered).await, "inner");
    waiting.abort();
    let mut stopped = vec![next(&mut seen).await, next(&mut seen).await];
    stopped.sort();
    assert_eq!(stopped, ["inner", "outer"]);
    assert_eq!(asking.health()["nats"]["cancels_sent"], 2);
    until("the serving node counts the second cancel", || serving.health()["nats"]["cancels_applied"] == 2)
        .await;
    for n in [&asking, &inner, &serving] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_only_a_request_that_named_its_subject() {
    let server = NatsServer::start().await;
    // Reports the packet id of each df:block that starts, and of each
    // whose signal fires.
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<String>();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let serving = bare("serving");
    serving
        .reactor()
        .register("df", "block", move |_, ctx| {
            let (cancelled, seen) = (ctx.cancelled(), seen_tx.clone());
            let id = ctx.packet_id().to_string();
            let _ = entered_tx.send(id.clone());
            tokio::spawn(async move {
                cancelled.await;
                let _ = seen.send(id);
            });
            std::future::pending::<HandlerResult>()
        })
        .unwrap();
    serving.connect(&server.url()).await.unwrap();

    // A plain NATS client sends the requests and the cancels, as any tool
    // could.
    let client = async_nats::connect(server.url()).await.unwrap();
    let request = |id: &str, cancel_subject: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Pf-Cancel-Subject", cancel_subject);
        let body = submit_frame(0, id, "df", "block", json!(null)).to_string();
        (headers, body)
    };
    let cancel = |id: &str| json!({"type": "cancel", "seq": 0, "payload": {"packet_id": id}}).to_string();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    for (id, subject) in [("p-1", "pf.cancel.tool-1"), ("p-2", "pf.cancel.tool-2")] {
        let (headers, body) = request(id, subject);
        client
            .publish_with_reply_and_headers("pf.df.block", inbox.clone(), headers, body.into())
            .await
            .unwrap();
    }
    let mut started = vec![recv(&mut entered).await, recv(&mut entered).await];
    started.sort();
    assert_eq!(started, ["p-1", "p-2"]);
    // Both cancels come on tool-2's subject, in this order: the first
    // names p-1, which tool-1 asked for, and stops nothing; the second
    // stops p-2 (they are heard in order, so p-1's was heard by then).
    client.publish("pf.cancel.tool-2", cancel("p-1").into()).await.unwrap();
    client.publish("pf.cancel.tool-2", cancel("p-2").into()).await.unwrap();
    assert_eq!(recv(&mut seen).await, "p-2");
    let answer = timeout(WAIT, answers.next()).await.expect("answered in time").unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["payload"]["packet_id"], "p-2", "{answer}");
    assert_eq!(answer["payload"]["error"]["code"], "PF499", "{answer}");
    assert_eq!(serving.health()["nats"]["cancels_applied"], 1);
    assert_eq!(serving.health()["in_flight"], 1, "p-1 still runs");
    // On the subject its request named, p-1 stops too.
    client.publish("pf.cancel.tool-1", cancel("p-1").into()).await.unwrap();
    assert_eq!(recv(&mut seen).await, "p-1");

    // A cancel subject of another form is PF400 naming the header.
    let (headers, body) = request("p-3", "elsewhere.cancel.x");
    let reply = timeout(WAIT, client.request_with_headers("pf.df.block", headers, body.into()))
        .await
        .expect("answered in time")
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["payload"]["code"], "PF400");
    assert!(reply["payload"]["message"].as_str().unwrap().contains("Pf-Cancel-Subject"), "{reply}");
    serving.stop().await;
}

async fn recv(events: &mut mpsc::UnboundedReceiver<String>) -> String {
    timeout(WAIT, events.recv()).await.expect("observed in time").expect("sender alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_count_packets_per_route_and_show_the_nats_connection() {
    let server = NatsServer::start().await;
    let far = bare("far");
    far.reactor().register_sync("df", "far", |d, _| Ok(d)).unwrap();
    far.connect(&server.url()).await.unwrap();
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    hub.reactor().register_sync("df", "here", |d, _| Ok(d)).unwrap();
    hub.connect(&server.url()).await.unwrap();
    let peer = bare("peer");
    peer.reactor().register_sync("df", "near", |d, _| Ok(d)).unwrap();
    peer.connect(&url(addr)).await.unwrap();
    until("the hub routes df:near", || hub.can_route(Group::DataFlow, "near")).await;
    until_reachable(&hub, "far", json!(0)).await;
    let before = hub.reactor().stats().routed;

    for (element, times) in [("here", 2), ("near", 3), ("far", 4)] {
        for i in 0..times {
            let result = submit(&hub, packet(element, json!(i))).await;
            assert_eq!(result.outcome, Ok(json!(i)), "df:{element}");
        }
    }
    let stats = hub.reactor().stats();
    assert_eq!(stats.routed.local - before.local, 2);
    assert_eq!(stats.routed.websocket - before.websocket, 3);
    assert_eq!(stats.routed.nats - before.nats, 4);
    let nats = stats.nats.expect("the hub is on NATS");
    assert_eq!(nats.state, "connected");
    assert_eq!(nats.server, format!("127.0.0.1:{}", server.port));
    assert!(nats.rtt_us > 0);
    assert_eq!(nats.bridged_keys, 1, "df:near, for its peer off NATS");
    assert!(bare("alone").reactor().stats().nats.is_none());

    let metrics = hub.metrics();
    for (route, n) in
        [("local", stats.routed.local), ("websocket", stats.routed.websocket), ("nats", stats.routed.nats)]
    {
        let line = format!("packetflow_routed_total{{route=\"{route}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    let health = hub.health();
    assert_eq!(health["routed"]["nats"], stats.routed.nats);
    assert_eq!(health["nats"]["state"], "connected");
    assert!(metrics.contains("packetflow_nats_cancels_sent_total 0"), "{metrics}");
    for n in [&peer, &hub, &far] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_that_lacks_a_key_hands_it_on_to_nats() {
    let server = NatsServer::start().await;
    let serving = bare("serving");
    register_upper(serving.reactor());
    serving.connect(&server.url()).await.unwrap();
    let (hub, addr) = node("hub", NodeConfig::default()).await;
    hub.connect(&server.url()).await.unwrap();
    // A seed peer is the default route, before NATS: one that lacks the
    // key answers PF001, and the packet goes on to NATS.
    let (served_tx, _served) = mpsc::unbounded_channel();
    let _seed = seed_server(&url(addr), "other", served_tx).await;
    until("the seed peer is connected", || hub.peer_count() == 1).await;
    let result = until_reachable(&hub, "upper", json!("past the seed")).await;
    assert_eq!(result.outcome, Ok(json!("PAST THE SEED")));
    assert_eq!(code(&submit(&hub, packet("missing", json!(null))).await), Some("PF001"));
    hub.stop().await;
    serving.stop().await;
}
