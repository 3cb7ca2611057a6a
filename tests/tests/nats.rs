//! Nodes on NATS (docs/protocol.md, "NATS"), through real `nats-server`
//! processes on loopback ports: one server, or a cluster of three whose
//! servers route to each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use packetflow::net::NatsOptions;
use packetflow::{json, ErrorCode, Map, Node, PacketResult, Priority, Value};
use packetflow_tests::nats_node::{
    bare_node as node, df as packet, submit_in_time as submit, until_reachable,
};
use packetflow_tests::nats_server::NatsServer;
use packetflow_tests::{register_upper, WAIT};
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};

fn code(result: &PacketResult) -> Option<String> {
    result.err().map(|e| e.code.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_crosses_a_three_server_cluster_with_its_metadata() {
    let servers = NatsServer::cluster(3).await;
    let serving = node("serving");
    // The handler reports what its context says about the packet.
    serving
        .reactor()
        .register_sync("df", "inspect", |data, ctx| {
            Ok(json!({
                "data": data,
                "priority": ctx.priority().get(),
                "trace_id": ctx.trace_id(),
                "remaining_ms": ctx.remaining().as_millis() as u64,
                "hops": ctx.metadata().and_then(|m| m.get("pf.hops")).cloned(),
                "route_key": ctx.metadata().and_then(|m| m.get("pf.route_key")).cloned(),
            }))
        })
        .unwrap();
    register_upper(serving.reactor());
    serving.connect(&servers[0].url()).await.unwrap();
    let asking = node("asking");
    // A list of servers, as a client is usually given.
    asking.connect(&format!("{},{}", servers[1].url(), servers[2].url())).await.unwrap();
    until_reachable(&asking, "upper", json!("probe")).await;

    let result = submit(&asking, packet("upper", json!("over nats"))).await;
    assert_eq!(result.outcome, Ok(json!("OVER NATS")));

    let mut meta = Map::new();
    meta.insert("pf.trace_id".into(), json!("trace-abc"));
    meta.insert("pf.route_key".into(), json!("user 42"));
    let p = packet("inspect", json!({"n": 1}))
        .with_priority(Priority::new(9).unwrap())
        .with_timeout_ms(4000)
        .with_metadata(meta);
    let id = p.id.clone();
    let result = submit(&asking, p).await;
    assert_eq!(result.packet_id, id);
    let seen = result.outcome.unwrap();
    assert_eq!(seen["data"], json!({"n": 1}));
    assert_eq!(seen["priority"], json!(9));
    assert_eq!(seen["trace_id"], json!("trace-abc"));
    assert_eq!(seen["route_key"], json!("user 42"));
    assert_eq!(seen["hops"], json!(1));
    let remaining = seen["remaining_ms"].as_u64().unwrap();
    assert!(remaining <= 4000 && remaining > 2000, "the deadline travels as remaining time: {remaining} ms");

    // Both nodes show their connection; the serving one its key count.
    let health = asking.health();
    assert_eq!(health["nats"]["state"], "connected");
    assert!(health["nats"]["requests_sent"].as_u64().unwrap() >= 2);
    let health = serving.health();
    assert_eq!(health["nats"]["served_keys"], 2);
    assert_eq!(health["nats"]["server"], format!("127.0.0.1:{}", servers[0].port));
    assert_eq!(health["nats"]["max_payload"], 1 << 20);
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_nobody_serves_is_pf001_at_once() {
    let server = NatsServer::start().await;
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    let started = Instant::now();
    let result = submit(&asking, packet("nobody", json!(1)).with_timeout_ms(10_000)).await;
    assert_eq!(code(&result).as_deref(), Some("PF001"), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "no responders is known at once");
    assert_eq!(asking.health()["nats"]["no_responders"], 1);
    let metrics = asking.metrics();
    assert!(
        metrics.contains("packetflow_nats_request_failures_total{reason=\"no_responders\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("packetflow_nats_connected 1\n"), "{metrics}");
    asking.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_the_servers_max_payload_is_pf413_before_sending() {
    let server = NatsServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let serving = node("serving");
    let counted = calls.clone();
    serving
        .reactor()
        .register_sync("df", "big", move |data, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(json!(data.as_str().map_or(0, str::len)))
        })
        .unwrap();
    serving.connect(&server.url()).await.unwrap();
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    until_reachable(&asking, "big", json!("probe")).await;
    let before = calls.load(Ordering::SeqCst);

    let result = submit(&asking, packet("big", json!("x".repeat((1 << 20) + 1)))).await;
    let error = result.err().expect("refused");
    assert!(error.is(ErrorCode::TooLarge), "{error:?}");
    assert!(error.message.contains("max_payload of 1048576"), "{}", error.message);
    assert_eq!(asking.health()["nats"]["too_large"], 1);
    // A packet just under the limit still goes.
    let result = submit(&asking, packet("big", json!("x".repeat(1 << 19)))).await;
    assert_eq!(result.outcome, Ok(json!(1 << 19)));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1, "the oversize packet never reached the handler");
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_is_pf408_at_the_deadline() {
    let server = NatsServer::start().await;
    let serving = node("serving");
    serving
        .reactor()
        .register("df", "slow", |data, ctx| async move {
            // Holds the packet past its deadline (the context ends it).
            ctx.cancelled().await;
            Ok(data)
        })
        .unwrap();
    register_upper(serving.reactor());
    serving.connect(&server.url()).await.unwrap();
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    until_reachable(&asking, "upper", json!("probe")).await;
    let started = Instant::now();
    let result = submit(&asking, packet("slow", json!(1)).with_timeout_ms(300)).await;
    let elapsed = started.elapsed();
    assert_eq!(code(&result).as_deref(), Some("PF408"), "{result:?}");
    assert!(elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    asking.stop().await;
    serving.stop().await;
}

/// The requests a serving node cannot answer at once run beside each
/// other in their key's task: one held by its handler holds up none of
/// the others, and one still running when the key is unregistered (its
/// subscription drained) is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_holds_up_no_other_and_is_answered_after_its_key_goes() {
    let server = NatsServer::start().await;
    let serving = node("serving");
    let held = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (h, r) = (held.clone(), release.clone());
    serving
        .reactor()
        .register("df", "gate", move |data, _| {
            let (held, release) = (h.clone(), r.clone());
            async move {
                if data == json!("hold") {
                    held.notify_one();
                    release.notified().await;
                }
                Ok(data)
            }
        })
        .unwrap();
    serving.connect(&server.url()).await.unwrap();
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    until_reachable(&asking, "gate", json!("probe")).await;

    let holder = asking.clone();
    let first = tokio::spawn(async move { submit(&holder, packet("gate", json!("hold"))).await });
    timeout(WAIT, held.notified()).await.expect("the held request reached its handler");
    let mut others: FuturesUnordered<_> =
        (0..20).map(|i| submit(&asking, packet("gate", json!({ "n": i })))).collect();
    let mut answered = 0;
    while let Some(result) = others.next().await {
        assert!(result.is_success(), "{result:?}");
        answered += 1;
    }
    assert_eq!(answered, 20);
    assert!(!first.is_finished(), "the held request was answered before its release");

    assert!(serving.reactor().unregister("df", "gate"));
    release.notify_one();
    let result = timeout(WAIT, first).await.expect("the held request is answered").unwrap();
    assert!(result.is_success(), "{result:?}");
    assert_eq!(result.outcome, Ok(json!("hold")));
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_spreads_requests_over_three_serving_nodes() {
    let server = NatsServer::start().await;
    let mut serving = Vec::new();
    for i in 0..3 {
        let n = node(&format!("serving-{i}"));
        n.reactor().register_sync("df", "who", move |_, _| Ok(json!(i))).unwrap();
        n.connect(&server.url()).await.unwrap();
        serving.push(n);
    }
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    until_reachable(&asking, "who", json!("probe")).await;

    const TOTAL: usize = 3000;
    let counts: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    // At most 64 in flight.
    while sent < TOTAL || !pending.is_empty() {
        while sent < TOTAL && pending.len() < 64 {
            pending.push(submit(&asking, packet("who", json!(null))));
            sent += 1;
        }
        let result = pending.next().await.unwrap();
        let who = result.outcome.expect("answered").as_u64().unwrap();
        *counts.lock().await.entry(who).or_default() += 1;
    }
    let counts = counts.lock().await;
    for i in 0..3 {
        let n = counts.get(&i).copied().unwrap_or(0);
        assert!((850..=1150).contains(&n), "node {i} answered {n} of {TOTAL}: {counts:?}");
    }
    asking.stop().await;
    for n in serving {
        n.stop().await;
    }
}

/// A node serving `df:work` (2 ms a packet) through server 0 of a cluster of
/// three, and one asking through server 1: `total` packets of `timeout_ms`
/// sent 32 at a time, server `victim` killed once a quarter of them were
/// sent. Every outcome must be `ok` or one of `codes` -> the servers, the
/// serving and the asking node, and the count of each outcome.
async fn kill_mid_traffic(
    victim: usize,
    total: usize,
    timeout_ms: u64,
    codes: &[&str],
) -> (Vec<NatsServer>, Node, Node, HashMap<String, usize>) {
    let mut servers = NatsServer::cluster(3).await;
    let serving = node("serving");
    serving
        .reactor()
        .register("df", "work", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(data)
        })
        .unwrap();
    serving.connect(&servers[0].url()).await.unwrap();
    let asking = node("asking");
    asking.connect(&servers[1].url()).await.unwrap();
    until_reachable(&asking, "work", json!("probe")).await;

    let mut pending = FuturesUnordered::new();
    let (mut sent, mut killed) = (0, false);
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    while sent < total || !pending.is_empty() {
        while sent < total && pending.len() < 32 {
            pending.push(submit(&asking, packet("work", json!(sent)).with_timeout_ms(timeout_ms)));
            sent += 1;
        }
        if sent >= total / 4 && !killed {
            servers[victim].kill();
            killed = true;
        }
        let result = pending.next().await.unwrap();
        let outcome = code(&result).unwrap_or_else(|| "ok".into());
        assert!(outcome == "ok" || codes.contains(&outcome.as_str()), "{result:?}");
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert_eq!(outcomes.values().sum::<usize>(), total, "{outcomes:?}");
    drop(pending);
    (servers, serving, asking, outcomes)
}

/// Waits until `asking` gets `df:work` answered again; `what` names what
/// has to happen first, for the failure.
async fn until_work_answered(asking: &Node, what: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let result = submit(asking, packet("work", json!("after"))).await;
        if result.outcome == Ok(json!("after")) {
            return;
        }
        assert!(Instant::now() < until, "{what}: {result:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_a_node_uses_answers_every_packet_in_flight() {
    // The asking node's server dies with packets in flight.
    const TOTAL: usize = 2000;
    let (servers, serving, asking, outcomes) = kill_mid_traffic(1, TOTAL, 3000, &["PF503", "PF408"]).await;
    assert!(outcomes.get("PF503").copied().unwrap_or(0) > 0, "the loss was seen: {outcomes:?}");
    assert!(outcomes.get("ok").copied().unwrap_or(0) >= TOTAL / 4 - 32, "{outcomes:?}");
    // The client fails over to another server of the cluster, and packets
    // go through again.
    until_work_answered(&asking, "no failover").await;
    let health = asking.health();
    assert_eq!(health["nats"]["state"], "connected");
    assert_ne!(health["nats"]["server"], format!("127.0.0.1:{}", servers[1].port));
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_registrations() {
    let server = NatsServer::start().await;
    let serving = node("serving");
    serving.connect(&server.url()).await.unwrap();
    let asking = node("asking");
    asking.connect(&server.url()).await.unwrap();
    let result = submit(&asking, packet("later", json!(1))).await;
    assert_eq!(code(&result).as_deref(), Some("PF001"));

    serving.reactor().register_sync("df", "later", |data, _| Ok(data)).unwrap();
    until_reachable(&asking, "later", json!("probe")).await;
    assert_eq!(submit(&asking, packet("later", json!(2))).await.outcome, Ok(json!(2)));

    // Unregistered with packets in flight: each is answered, by the
    // handler or PF001, or PF408 at its deadline for the few the server
    // routed here while the unsubscribe travelled (the client drops them
    // unread: docs/protocol.md, "NATS").
    const TOTAL: usize = 400;
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut answered, mut unregistered) = (0, HashMap::<String, usize>::new(), false);
    while sent < TOTAL || !pending.is_empty() {
        while sent < TOTAL && pending.len() < 32 {
            pending.push(submit(&asking, packet("later", json!(sent)).with_timeout_ms(3_000)));
            sent += 1;
        }
        if sent >= TOTAL / 4 && !unregistered {
            assert!(serving.reactor().unregister("df", "later"));
            unregistered = true;
        }
        let result = pending.next().await.unwrap();
        let outcome = code(&result).unwrap_or_else(|| "ok".into());
        assert!(["ok", "PF001", "PF408"].contains(&outcome.as_str()), "{result:?}");
        *answered.entry(outcome).or_default() += 1;
    }
    assert!(answered.contains_key("PF001"), "{answered:?}");
    // At most what was in flight when the unsubscribe went out.
    assert!(answered.get("PF408").copied().unwrap_or(0) <= 32, "{answered:?}");
    let until = Instant::now() + WAIT;
    loop {
        let result = submit(&asking, packet("later", json!(3))).await;
        if code(&result).as_deref() == Some("PF001") {
            break;
        }
        assert!(Instant::now() < until, "df:later still served after unregistering: {result:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_an_adr32_service_listing_its_keys() {
    let server = NatsServer::start().await;
    let serving = node("serving");
    register_upper(serving.reactor());
    serving.reactor().register_sync("df", "a.b", |data, _| Ok(data)).unwrap();
    serving.connect(&server.url()).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();

    let ping = client.request("$SRV.PING.packetflow", "".into()).await.unwrap();
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["metadata"]["node_id"], serving.node_id());

    let info = client.request("$SRV.INFO.packetflow", "".into()).await.unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let mut subjects: Vec<(String, String, String)> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&e["subject"]), text(&e["queue_group"]), text(&e["metadata"]["key"]))
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            ("pf.df.a%2Eb".into(), "packetflow".into(), "df:a.b".into()),
            ("pf.df.upper".into(), "packetflow".into(), "df:upper".into()),
        ]
    );

    // A plain NATS request in the protocol's frames is served too.
    let frame = json!({"type": "submit", "seq": 7, "payload": {
        "version": "1.0", "id": "plain-1", "group": "df", "element": "upper", "data": "plain"}});
    let answer = client.request("pf.df.upper", serde_json::to_vec(&frame).unwrap().into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["type"], "result", "{answer}");
    assert_eq!(answer["payload"]["packet_id"], "plain-1");
    assert_eq!(answer["payload"]["data"], "PLAIN");

    let stats = client.request("$SRV.STATS.packetflow", "".into()).await.unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let upper =
        stats["endpoints"].as_array().unwrap().iter().find(|e| e["subject"] == "pf.df.upper").unwrap();
    assert_eq!(upper["num_requests"], 1);

    // A body that is not a submit frame is answered with an error frame.
    let answer = client.request("pf.df.upper", "not json".into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["payload"]["code"], "PF400");
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_options_are_pf400_and_an_unreachable_server_pf503() {
    let asking = node("asking");
    let e = asking.connect("nats://127.0.0.1:4222,ws://127.0.0.1:1").await.unwrap_err();
    assert_eq!(e.code, "PF400", "{e:?}");
    assert!(e.message.contains("ws://127.0.0.1:1"), "{}", e.message);
    let e = asking
        .connect_nats(
            "nats://127.0.0.1:4222",
            NatsOptions { namespace: "a.*".into(), ..NatsOptions::default() },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "PF400");
    assert!(e.message.starts_with("namespace must be"), "{}", e.message);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = NatsOptions { connect_timeout: Duration::from_secs(2), ..NatsOptions::default() };
    let e = timeout(WAIT, asking.connect_nats(&format!("nats://127.0.0.1:{port}"), options))
        .await
        .expect("connect gives up in time")
        .unwrap_err();
    assert_eq!(e.code, "PF503", "{e:?}");
    assert!(asking.health()["nats"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_serving_nodes_server_answers_every_packet_by_its_deadline() {
    // The serving node's server dies: its answers in flight are lost. PF001
    // too: until the serving node is back on another server, nobody serves
    // the key.
    let (servers, serving, asking, _) = kill_mid_traffic(0, 1000, 1000, &["PF408", "PF503", "PF001"]).await;
    until_work_answered(&asking, "the serving node never came back").await;
    assert_ne!(serving.health()["nats"]["server"], format!("127.0.0.1:{}", servers[0].port));
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_password_takes_the_right_one_only() {
    let server = NatsServer::start_with(&["--user", "pf", "--pass", "right-password"]).await;
    let options = |password: &str| NatsOptions {
        user: Some("pf".into()),
        password: Some(password.into()),
        ..NatsOptions::default()
    };
    let refused = node("refused");
    let e = refused.connect_nats(&server.url(), options("wrong-password")).await.unwrap_err();
    assert_eq!(e.code, "PF401", "{e:?}");
    let e = refused.connect(&server.url()).await.unwrap_err();
    assert_eq!(e.code, "PF401", "{e:?}");

    let serving = node("serving");
    register_upper(serving.reactor());
    serving.connect_nats(&server.url(), options("right-password")).await.unwrap();
    let asking = node("asking");
    // Credentials in the URL work as well.
    asking.connect(&format!("nats://pf:right-password@127.0.0.1:{}", server.port)).await.unwrap();
    until_reachable(&asking, "upper", json!("probe")).await;
    assert_eq!(submit(&asking, packet("upper", json!("secret"))).await.outcome, Ok(json!("SECRET")));
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_urls_verify_the_server_against_the_given_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = packetflow_tests::TempDir::new("nats-tls");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "PacketFlow NATS test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = other_params.self_signed(&other_key).unwrap();
    let ca_file = dir.file("ca.pem", &ca.pem());
    let other_ca_file = dir.file("other-ca.pem", &other_ca.pem());
    let cert = dir.file("cert.pem", &leaf.pem());
    let key = dir.file("key.pem", &leaf_key.serialize_pem());
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ])
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let with_ca =
        |ca: &std::path::Path| NatsOptions { tls_ca: Some(ca.to_owned()), ..NatsOptions::default() };

    let refused = node("refused");
    let e = timeout(WAIT, refused.connect_nats(&url, with_ca(&other_ca_file))).await.unwrap().unwrap_err();
    assert_eq!(e.code, "PF503", "{e:?}");
    let serving = node("serving");
    register_upper(serving.reactor());
    serving.connect_nats(&url, with_ca(&ca_file)).await.unwrap();
    let asking = node("asking");
    // connect_with: the CA of the WebSocket options serves tls:// too.
    let options = packetflow::ConnectOptions { tls_ca: Some(ca_file.clone()), ..Default::default() };
    asking.connect_with(&url, options).await.unwrap();
    until_reachable(&asking, "upper", json!("probe")).await;
    assert_eq!(submit(&asking, packet("upper", json!("sealed"))).await.outcome, Ok(json!("SEALED")));
    asking.stop().await;
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_takes_every_nats_option_and_stats_show_the_connection() {
    use packetflow::{Codec, ConnectOptions, KeyStyle};
    let server = NatsServer::start_with(&["--user", "pf", "--pass", "right-password"]).await;
    let options = |namespace: &str| ConnectOptions {
        namespace: Some(namespace.into()),
        name: Some(format!("{namespace} node")),
        user: Some("pf".into()),
        password: Some("right-password".into()),
        connect_timeout_ms: Some(2000),
        ..ConnectOptions::default()
    };
    let serving = node("serving");
    register_upper(serving.reactor());
    assert!(serving.reactor().stats().nats.is_none());
    serving.connect_with(&server.url(), options("team-a")).await.unwrap();
    // Same namespace: served; another namespace sees no responder.
    let asking = node("asking");
    asking.connect_with(&server.url(), options("team-a")).await.unwrap();
    assert_eq!(submit(&asking, packet("upper", json!("shared"))).await.outcome, Ok(json!("SHARED")));
    let elsewhere = node("elsewhere");
    elsewhere.connect_with(&server.url(), options("team-b")).await.unwrap();
    assert_eq!(code(&submit(&elsewhere, packet("upper", json!("x"))).await).as_deref(), Some("PF001"));

    let stats = asking.reactor().stats().nats.expect("on NATS");
    assert_eq!(stats.state, "connected");
    assert_eq!(stats.server, format!("127.0.0.1:{}", server.port));
    assert_eq!(asking.health()["nats"]["namespace"], "team-a");
    assert_eq!(stats.requests_sent, 1);
    assert!(stats.rtt_us > 0);
    assert_eq!(serving.reactor().stats().nats.unwrap().requests_served, 1);
    assert_eq!(asking.health()["nats"]["requests_sent"], 1);
    // The connection's name is what the server shows.
    let connz = server.monitor("/connz").await.unwrap();
    assert!(connz.contains("\"team-a node\""), "{connz}");

    // What the core refuses, named as the caller spells it.
    let refused = node("refused");
    let camel = |o: ConnectOptions| ConnectOptions { key_style: KeyStyle::Camel, ..o };
    let half = ConnectOptions { tls_cert: Some("c.pem".into()), ..ConnectOptions::default() };
    let e = refused.connect_with(&server.url(), camel(half.clone())).await.unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("PF400", "tlsCert and tlsKey must be given together"));
    let e = refused.connect_with("ws://127.0.0.1:1/packetflow/v1", half).await.unwrap_err();
    assert_eq!(e.code, "PF400");
    assert!(e.message.starts_with("tls_cert is an option of NATS URLs"), "{}", e.message);
    let e = refused.connect_with(&server.url(), Codec::MsgPack).await.unwrap_err();
    assert!(e.message.starts_with("msgpack is"), "{}", e.message);
    assert!(refused.reactor().stats().nats.is_none());
    for node in [asking, elsewhere, serving] {
        node.stop().await;
    }
}
