//! Direct paths (docs/protocol.md, "Direct paths"): a busy route's packets
//! go straight from the submitter's node to the handler's node, around the
//! hub that introduced them, with the same answers; a link that drops
//! hands its traffic back to the hub with every packet answered; an
//! address that cannot be reached costs nothing but a failed dial; seed
//! peers see nothing new; route keys and actors land on the same node
//! either way.
//!
//! The handler and submitter nodes here only `connect` to the hub, as a
//! binding's reactor does: the core listens for direct links by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use packetflow::net::DirectConfig;
use packetflow::packet::META_ROUTE_KEY;
use packetflow::{
    json, ActorRef, ActorType, ErrorCode, Group, Node, NodeConfig, Packet, Reactor, ReactorConfig, Reply,
    Value,
};
use packetflow_tests::{node, register_upper, submit_frame, until, url, RawPeer, WAIT};

/// A node that only dials `hub` (no listener of its own), its handlers
/// registered by `setup` first.
async fn member(name: &str, hub: &str, config: NodeConfig, setup: impl FnOnce(&Reactor)) -> Node {
    let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
    setup(&reactor);
    let node = Node::new(reactor, config);
    node.connect(hub).await.expect("connect to the hub");
    node
}

fn no_direct() -> NodeConfig {
    NodeConfig { direct: DirectConfig { enabled: false, ..DirectConfig::default() }, ..NodeConfig::default() }
}

fn direct(node: &Node) -> Value {
    node.health()["direct"].clone()
}

fn links(node: &Node) -> Vec<Value> {
    direct(node)["links"].as_array().cloned().unwrap_or_default()
}

/// Packets `from` sent the peer whose node is `to` over the connection
/// that is (`direct_link`) or is not a direct link.
fn submitted(from: &Node, to: &str, direct_link: bool) -> u64 {
    let health = from.health();
    let peers = health["peers"].as_array().cloned().unwrap_or_default();
    peers
        .iter()
        .find(|p| p["node_id"] == to && p["direct_link"] == direct_link)
        .and_then(|p| p["submitted"].as_u64())
        .unwrap_or(0)
}

async fn submit(
    node: &Node,
    element: &str,
    data: Value,
    route_key: Option<&str>,
) -> packetflow::PacketResult {
    let mut packet = Packet::build("df", element, data).unwrap();
    if let Some(key) = route_key {
        packet.metadata.get_or_insert_with(Default::default).insert(META_ROUTE_KEY.into(), json!(key));
    }
    tokio::time::timeout(WAIT, node.reactor().submit(packet)).await.expect("answered in time")
}

/// Submits `df:element` until `node` has `count` direct links (each submit
/// counts toward a busy route), bounded by [`WAIT`].
async fn go_direct(node: &Node, element: &str, count: usize, route_keys: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut i = 0usize;
    while links(node).len() < count {
        assert!(tokio::time::Instant::now() < deadline, "no {count} direct links: {}", direct(node));
        let key = route_keys.get(i % route_keys.len().max(1)).copied();
        let result = submit(node, element, json!("warm"), key).await;
        assert!(result.is_success(), "{result:?}");
        i += 1;
    }
}

fn fail_or_upper(reactor: &Reactor) {
    register_upper(reactor);
    reactor
        .register_sync("df", "fail", |data, _| Err(packetflow::PfError::failed(format!("refused {data}"))))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_route_goes_direct_with_the_same_answers() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let handler = member("handler", &hub_url, NodeConfig::default(), fail_or_upper).await;
    let direct_sub = member("submitter", &hub_url, NodeConfig::default(), |_| {}).await;
    let hub_sub = member("hub-only submitter", &hub_url, no_direct(), |_| {}).await;
    for s in [&direct_sub, &hub_sub] {
        until("the submitters route df:upper", || s.can_route(Group::DataFlow, "upper")).await;
    }
    go_direct(&direct_sub, "upper", 1, &[]).await;
    assert_eq!(links(&direct_sub)[0]["node_id"], handler.node_id());
    assert_eq!(direct(&handler)["accepted"], 1);
    let hub_to_handler = submitted(&hub, handler.node_id(), false);
    let sub_to_hub = submitted(&direct_sub, hub.node_id(), false);

    // The same packets, through the hub and direct: the same answers
    // (successes, and a handler's error with its code and message).
    for i in 0..100 {
        let (element, data) =
            if i % 10 == 9 { ("fail", json!(i)) } else { ("upper", json!(format!("p{i}"))) };
        let through_hub = submit(&hub_sub, element, data.clone(), None).await;
        let around_hub = submit(&direct_sub, element, data, None).await;
        assert_eq!(around_hub.outcome, through_hub.outcome);
    }
    // Pipelined too.
    let answers = futures_util::future::join_all(
        (0..200).map(|i| submit(&direct_sub, "upper", json!(format!("q{i}")), None)),
    )
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.outcome, Ok(json!(format!("Q{i}"))));
    }

    // Observable: the link carried them, the hub carried none of them.
    let link = &links(&direct_sub)[0];
    assert!(link["packets"].as_u64().unwrap() >= 300, "{link}");
    assert_eq!(submitted(&direct_sub, handler.node_id(), true), link["packets"].as_u64().unwrap());
    assert_eq!(submitted(&direct_sub, hub.node_id(), false), sub_to_hub);
    assert_eq!(
        submitted(&hub, handler.node_id(), false),
        hub_to_handler + 100,
        "only the hub-only submitter's"
    );
    let metrics = direct_sub.metrics();
    let line = metrics.lines().find(|l| l.starts_with("packetflow_direct_packets_total ")).unwrap();
    assert!(line.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 300, "{line}");
    // The link is not a peer to route through or to count.
    assert_eq!(direct_sub.peer_count(), 1);
    assert_eq!(handler.peer_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_dropped_mid_traffic_answers_every_packet_and_the_hub_takes_over() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let handler = member("handler", &hub_url, NodeConfig::default(), |r| {
        r.register("df", "upper", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(json!(data.as_str().unwrap_or_default().to_uppercase()))
        })
        .unwrap();
    })
    .await;
    let submitter = member("submitter", &hub_url, NodeConfig::default(), |_| {}).await;
    until("the submitter routes df:upper", || submitter.can_route(Group::DataFlow, "upper")).await;
    go_direct(&submitter, "upper", 1, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default()); // submitted, ok, PF503
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (submitter, stop, counts) = (submitter.clone(), stop.clone(), counts.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    counts[0].fetch_add(1, Ordering::Relaxed);
                    let data = format!("w{w}-{n}");
                    let result = submit(&submitter, "upper", json!(data), None).await;
                    match result.err().and_then(|e| e.kind()) {
                        None => {
                            assert_eq!(result.outcome, Ok(json!(data.to_uppercase())));
                            counts[1].fetch_add(1, Ordering::Relaxed);
                        }
                        Some(ErrorCode::Unavailable) => {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                        }
                        Some(other) => panic!("unexpected {other:?}: {result:?}"),
                    }
                }
            })
        })
        .collect();
    until("traffic on the link", || {
        links(&submitter).first().is_some_and(|l| l["packets"].as_u64() >= Some(100))
    })
    .await;
    let hub_before = submitted(&hub, handler.node_id(), false);
    // Broken from the far end, with packets in flight on it.
    assert_eq!(handler.close_direct_links(), 1);
    until("the submitter gave the link up", || links(&submitter).is_empty()).await;
    until("the hub carries the traffic", || submitted(&hub, handler.node_id(), false) >= hub_before + 100)
        .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("every submit answered, as expected");
    }
    let [sent, ok, unavailable] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    assert_eq!(sent, ok + unavailable, "every packet got its result or a PF code");
    assert!(unavailable <= 6, "only packets in flight on the link at the drop: {unavailable}");
    let health = direct(&submitter);
    assert_eq!(health["lost"], 1);
    let backing_off = health["backing_off"].as_array().unwrap();
    assert!(backing_off.iter().any(|b| b["node_id"] == handler.node_id()), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_address_falls_back_to_the_hub_without_a_hang() {
    // Accepts TCP (into its backlog) and never answers the upgrade: the
    // worst address to be given (a reset would fail at once).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let advertised = format!("ws://{}/packetflow/v1", silent.local_addr().unwrap());
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let config = NodeConfig {
        direct: DirectConfig { advertise: vec![advertised], ..DirectConfig::default() },
        ..NodeConfig::default()
    };
    let handler = member("handler", &hub_url, config, register_upper).await;
    let quick = NodeConfig {
        direct: DirectConfig { dial_timeout: Duration::from_millis(300), ..DirectConfig::default() },
        ..NodeConfig::default()
    };
    let submitter = member("submitter", &hub_url, quick, |_| {}).await;
    until("the handler accepts direct links", || direct(&handler)["listening"][0].is_string()).await;
    until("the submitter routes df:upper", || submitter.can_route(Group::DataFlow, "upper")).await;

    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while direct(&submitter)["dials_failed"] != 1 || sent < 100 {
        assert!(Instant::now() < deadline, "the dial never failed: {}", direct(&submitter));
        let start = Instant::now();
        let result = submit(&submitter, "upper", json!(format!("x{sent}")), None).await;
        slowest = slowest.max(start.elapsed());
        assert_eq!(result.outcome, Ok(json!(format!("X{sent}"))));
        sent += 1;
    }
    // No packet waited for the dial (300 ms); the hub carried them all.
    assert!(slowest < Duration::from_millis(250), "a packet took {slowest:?}");
    assert!(links(&submitter).is_empty());
    assert_eq!(submitted(&hub, handler.node_id(), false), sent);
    let health = direct(&submitter);
    assert!(health["backing_off"][0]["why"].as_str().unwrap().contains("timed out"), "{health}");
    // Remembered: more traffic does not dial it again.
    for i in 0..50 {
        assert!(submit(&submitter, "upper", json!(format!("y{i}")), None).await.is_success());
    }
    assert_eq!(direct(&submitter)["dials_failed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_peers_through_the_hub_see_nothing_new() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let _handler = member("handler", &hub_url, NodeConfig::default(), register_upper).await;
    let submitter = member("submitter", &hub_url, NodeConfig::default(), |_| {}).await;
    // A seed-spec handler, the hub's default route: it answers with seq 0.
    let mut seed_handler = RawPeer::connect(&hub_url).await;
    seed_handler.send_json(&json!({"type": "heartbeat", "seq": 1, "payload": {"timestamp": 1}})).await;
    until("the submitter reaches the seed peer", || submitter.can_route(Group::DataFlow, "seedonly")).await;
    until("the submitter routes df:upper", || submitter.can_route(Group::DataFlow, "upper")).await;
    go_direct(&submitter, "upper", 1, &[]).await;

    // A busy route to the seed peer stays with the hub (a seed peer has no
    // node id to dial), and the seed peer sees plain submits only.
    let served = tokio::spawn(async move {
        let mut frames = Vec::new();
        for _ in 0..40 {
            let frame = seed_handler.recv_open().await;
            let id = frame["payload"]["id"].clone();
            frames.push(frame);
            seed_handler
                .send_json(&json!({"type": "result", "seq": 0, "payload": {
                    "packet_id": id, "status": "success", "data": "from seed", "duration_ms": 0}}))
                .await;
        }
        frames
    });
    for i in 0..40 {
        let result = submit(&submitter, "seedonly", json!(i), None).await;
        assert_eq!(result.outcome, Ok(json!("from seed")));
    }
    let frames = served.await.unwrap();
    assert!(frames.iter().all(|f| f["type"] == "submit"), "{frames:?}");
    // Through the hub: the submitter's hop, then the hub's.
    assert!(frames.iter().all(|f| f["payload"]["metadata"]["pf.hops"] == 2), "{:?}", frames[0]);

    // A seed-spec submitter on the hub: its own seqs back, results only.
    let mut seed_client = RawPeer::connect(&hub_url).await;
    for seq in 1..=20u64 {
        seed_client.send_json(&submit_frame(seq, &format!("s{seq}"), "df", "upper", json!("abc"))).await;
        let answer = seed_client.recv_open().await;
        assert_eq!(answer["type"], "result");
        assert_eq!(answer["seq"], seq);
        assert_eq!(answer["payload"]["data"], "ABC");
        assert!(answer.get("direct").is_none() && answer["payload"].get("direct").is_none());
    }
    assert_eq!(links(&submitter).len(), 1, "the direct route stayed up meanwhile");
    drop(hub);
}

/// The seed's counter, virtual (any id starts at 0).
fn counter() -> ActorType {
    ActorType::new(|kind: &str, _: &Value, state: &mut Value, _: &packetflow::ActorContext| match kind {
        "increment" => {
            state["value"] = json!(state["value"].as_i64().unwrap_or(0) + 1);
            Ok(Reply::Value(state.clone()))
        }
        _ => Ok(Reply::Value(state.clone())),
    })
    .with_initial_state(json!({"value": 0}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_keys_and_actors_land_on_the_same_node_direct_or_through_the_hub() {
    let (_hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let mut handlers = Vec::new();
    for name in ["a", "b"] {
        handlers.push(
            member(name, &hub_url, NodeConfig::default(), |r| {
                r.register_sync("df", "who", move |_, _| Ok(json!(name))).unwrap();
                r.actors().register("counter", counter()).unwrap();
            })
            .await,
        );
    }
    let through_hub = member("hub-only", &hub_url, no_direct(), |_| {}).await;
    let direct_sub = member("direct", &hub_url, NodeConfig::default(), |_| {}).await;
    for s in [&through_hub, &direct_sub] {
        until("both hosts known", || s.actor_hosts("counter").len() == 2).await;
        until("df:who routed", || s.can_route(Group::DataFlow, "who")).await;
    }
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    go_direct(&direct_sub, "who", 2, &key_refs).await;

    let mut owners = std::collections::BTreeSet::new();
    for key in &keys {
        let via_hub = submit(&through_hub, "who", json!(null), Some(key)).await.outcome.unwrap();
        let direct = submit(&direct_sub, "who", json!(null), Some(key)).await.outcome.unwrap();
        assert_eq!(direct, via_hub, "route key {key}");
        owners.insert(via_hub.as_str().unwrap().to_owned());
    }
    assert_eq!(owners.len(), 2, "the keys spread over both nodes");

    // Each actor's messages, from either submitter, reach one activation.
    let before: u64 = links(&direct_sub).iter().map(|l| l["packets"].as_u64().unwrap()).sum();
    for i in 0..20 {
        let actor = ActorRef::new("counter", &format!("c{i}")).unwrap();
        for round in 1..=3 {
            through_hub.reactor().actors().send(&actor, json!({"type": "increment"})).await.unwrap();
            let value =
                direct_sub.reactor().actors().send(&actor, json!({"type": "increment"})).await.unwrap();
            assert_eq!(value, json!({"value": 2 * round}), "c{i}: one activation");
        }
    }
    let after: u64 = links(&direct_sub).iter().map(|l| l["packets"].as_u64().unwrap()).sum();
    assert_eq!(after - before, 60, "every actor message of the direct submitter went direct");
    let active: usize = handlers.iter().map(|h| h.reactor().actors().active_ids("counter").len()).sum();
    assert_eq!(active, 20, "each actor active on exactly one node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_priorities_cancels_and_trace_ids_cross_a_direct_link() {
    let (_hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let (told, mut heard) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let handler = member("handler", &hub_url, NodeConfig::default(), move |r| {
        register_upper(r);
        r.register("df", "context", |_, ctx| async move {
            Ok(json!({"trace": ctx.trace_id(), "priority": ctx.priority().get(), "remaining_ms": ctx.remaining().as_millis() as u64}))
        })
        .unwrap();
        r.register("df", "hang", move |_, ctx| {
            let told = told.clone();
            async move {
                let _ = told.send("started");
                let cancelled = ctx.cancelled();
                // Told from beside the handler's future, which is dropped.
                tokio::spawn(async move {
                    cancelled.await;
                    let _ = told.send("cancelled");
                });
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        })
        .unwrap();
    })
    .await;
    let submitter = member("submitter", &hub_url, NodeConfig::default(), |_| {}).await;
    until("the submitter routes df:upper", || submitter.can_route(Group::DataFlow, "upper")).await;
    go_direct(&submitter, "upper", 1, &[]).await;
    let on_link = || links(&submitter)[0]["packets"].as_u64().unwrap();

    let sent = on_link();
    let mut metadata = packetflow::Map::new();
    metadata.insert("pf.trace_id".into(), json!("trace-42"));
    let packet = Packet::build("df", "context", Value::Null)
        .unwrap()
        .with_priority(packetflow::Priority::new(9).unwrap())
        .with_timeout_ms(5000)
        .with_metadata(metadata);
    let seen = submitter.reactor().submit(packet).await.outcome.unwrap();
    assert_eq!((seen["trace"].clone(), seen["priority"].clone()), (json!("trace-42"), json!(9)));
    let remaining = seen["remaining_ms"].as_u64().unwrap();
    assert!((4000..=5000).contains(&remaining), "what is left of the deadline: {remaining}");

    // Cancelled by its submitter: PF499 here, and the handler there stops.
    let packet = Packet::build("df", "hang", Value::Null).unwrap();
    let id = packet.id.clone();
    let reactor = submitter.reactor().clone();
    let running = tokio::spawn(async move { reactor.submit(packet).await });
    assert_eq!(tokio::time::timeout(WAIT, heard.recv()).await.unwrap(), Some("started"));
    assert!(submitter.reactor().cancel(&id));
    let result = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    assert_eq!(result.err().and_then(|e| e.kind()), Some(ErrorCode::Cancelled));
    assert_eq!(tokio::time::timeout(WAIT, heard.recv()).await.unwrap(), Some("cancelled"));

    // Past its deadline: PF408 here, and the handler there stops too.
    let packet = Packet::build("df", "hang", Value::Null).unwrap().with_timeout_ms(200);
    let result = submitter.reactor().submit(packet).await;
    assert_eq!(result.err().and_then(|e| e.kind()), Some(ErrorCode::Timeout));
    assert_eq!(tokio::time::timeout(WAIT, heard.recv()).await.unwrap(), Some("started"));
    assert_eq!(tokio::time::timeout(WAIT, heard.recv()).await.unwrap(), Some("cancelled"));
    assert_eq!(on_link(), sent + 3, "all three went direct");
    drop(handler);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_handing_actor_messages_to_their_owner_dials_no_second_link() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let host = member("host", &url(hub_addr), NodeConfig::default(), |r| {
        r.actors().register("counter", counter()).unwrap();
    })
    .await;
    until("the hub knows the host", || hub.actor_hosts("counter").len() == 1).await;
    // A seed peer's messages: far more than make a route busy.
    let mut peer = RawPeer::connect(&url(hub_addr)).await;
    for seq in 1..=64u64 {
        let mut frame =
            submit_frame(seq, &format!("m{seq}"), "rm", "actor.counter", json!({"type": "increment"}));
        frame["payload"]["metadata"] = json!({"pf.actor_id": "c1"});
        peer.send_json(&frame).await;
    }
    let mut answered = 0;
    while answered < 64 {
        let frame = peer.recv().await.expect("an answer");
        if frame["type"] == "result" {
            assert_eq!(frame["payload"]["status"], "success", "{frame}");
            answered += 1;
        }
    }
    assert!(links(&hub).is_empty(), "the hub is connected to the owner already: {}", direct(&hub));
    assert_eq!(direct(&hub)["dials_ok"], 0);
    assert_eq!(host.reactor().actors().active_ids("counter").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_a_node_relays_for_its_clients_go_direct_too() {
    let (_hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let handler = member("handler", &hub_url, NodeConfig::default(), register_upper).await;
    // A node between seed-spec clients and the hub: it relays their submits.
    let (relay, relay_addr) = node("relay", NodeConfig::default()).await;
    relay.connect(&hub_url).await.unwrap();
    until("the relay routes df:upper", || relay.can_route(Group::DataFlow, "upper")).await;
    let mut client = RawPeer::connect(&url(relay_addr)).await;
    let mut seq = 0u64;
    while links(&relay).is_empty() {
        assert!(seq < 1000, "no direct link: {}", direct(&relay));
        seq += 1;
        client.send_json(&submit_frame(seq, &format!("r{seq}"), "df", "upper", json!("abc"))).await;
        let answer = client.recv_open().await;
        assert_eq!((answer["seq"].clone(), answer["payload"]["data"].clone()), (json!(seq), json!("ABC")));
    }
    for _ in 0..20 {
        seq += 1;
        client.send_json(&submit_frame(seq, &format!("r{seq}"), "df", "upper", json!("abc"))).await;
        let answer = client.recv_open().await;
        assert_eq!((answer["seq"].clone(), answer["payload"]["data"].clone()), (json!(seq), json!("ABC")));
    }
    assert!(links(&relay)[0]["packets"].as_u64().unwrap() >= 20, "{}", direct(&relay));
    assert_eq!(links(&relay)[0]["node_id"], handler.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_token_keeps_its_direct_paths_and_mc_keys_always_go_through_the_hub() {
    use packetflow::{ConnectOptions, ListenOptions, TokenSpec};
    const SERVICE: &str = "service-token-0123456789";
    const CLIENT: &str = "client-token-0123456789";
    const OPERATOR: &str = "operator-token-0123456789";
    let tokens = vec![
        TokenSpec::new("service", SERVICE, &[], &["df:upper", "mc:custom"]),
        // `*` grants everything but mc:*, which the operator's names.
        TokenSpec::new("client", CLIENT, &["*"], &[]),
        TokenSpec::new("operator", OPERATOR, &["*", "mc:*"], &[]),
    ];
    let (hub, _) = node("hub", NodeConfig::default()).await;
    let addr =
        hub.listen_with("127.0.0.1:0", ListenOptions { tokens, ..ListenOptions::default() }).await.unwrap();
    let hub_url = url(addr);
    let with = |token: &str| ConnectOptions { token: Some(token.into()), ..ConnectOptions::default() };
    let reactor = Reactor::new(ReactorConfig { name: "handler".into(), ..ReactorConfig::default() });
    register_upper(&reactor);
    reactor.register_sync("mc", "custom", |data, _| Ok(data)).unwrap();
    let handler = Node::new(reactor, NodeConfig::default());
    handler.connect_with(&hub_url, with(SERVICE)).await.unwrap();
    let (client, operator) = (
        Node::new(Reactor::default(), NodeConfig::default()),
        Node::new(Reactor::default(), NodeConfig::default()),
    );
    client.connect_with(&hub_url, with(CLIENT)).await.unwrap();
    operator.connect_with(&hub_url, with(OPERATOR)).await.unwrap();
    until("the operator routes mc:custom", || operator.can_route(Group::MetaCompute, "custom")).await;
    // Busy: twice the packets that make a route go direct.
    for i in 0..2 * DirectConfig::default().busy_packets {
        let packet = Packet::build("mc", "custom", json!(i)).unwrap();
        assert_eq!(operator.reactor().call(packet).await, Ok(json!(i)));
    }
    assert!(links(&operator).is_empty(), "an mc key went around the hub: {}", direct(&operator));
    until("the client routes df:upper", || client.can_route(Group::DataFlow, "upper")).await;
    go_direct(&client, "upper", 1, &[]).await;
    assert_eq!(links(&client)[0]["node_id"], handler.node_id());
    for n in [client, operator, handler, hub] {
        n.stop().await;
    }
}
