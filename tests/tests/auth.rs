//! Token auth over real loopback sockets: who gets in (PF401, close 1008),
//! what each token may submit and serve (PF403 naming the key), and how a
//! hub applies the permission where a submit entered it.

use packetflow::{json, ConnectOptions, ErrorCode, ListenOptions, Node, NodeConfig, Packet, TokenSpec};
use packetflow_tests::*;
use tokio::time::Duration;

const CLIENT: &str = "client-token-0123456789";
const SERVICE: &str = "service-token-0123456789";
const ADMIN: &str = "admin-token-0123456789ab";
const OPERATOR: &str = "operator-token-0123456789";
const SCALER: &str = "scaler-token-0123456789";

fn tokens() -> Vec<TokenSpec> {
    vec![
        TokenSpec::new("client", CLIENT, &["df:*", "*:user.*", "cf:start"], &[]),
        TokenSpec::new("service", SERVICE, &[], &["df:upper", "df:public"]),
        TokenSpec::new("admin", ADMIN, &["*"], &["*"]),
        TokenSpec::new("operator", OPERATOR, &["*", "mc:*"], &[]),
        TokenSpec::new("scaler", SCALER, &["cf:*", "mc:scale"], &[]),
    ]
}

/// A hub requiring the test tokens, serving `df:upper` itself.
async fn hub_with(config: NodeConfig) -> (Node, String) {
    let hub = Node::new(
        packetflow::Reactor::new(packetflow::ReactorConfig { name: "hub".into(), ..Default::default() }),
        config,
    );
    let options = ListenOptions { tokens: tokens(), ..ListenOptions::default() };
    let addr = hub.listen_with("127.0.0.1:0", options).await.expect("listen with auth");
    (hub, url(addr))
}

async fn hub() -> (Node, String) {
    hub_with(NodeConfig::default()).await
}

fn with_token(t: &str) -> ConnectOptions {
    ConnectOptions { token: Some(t.into()), ..ConnectOptions::default() }
}

fn hello_frame(token: Option<&str>, handlers: &[&str]) -> packetflow::Value {
    let mut payload = json!({"node_id": "raw-1", "name": "raw", "runtime": "test", "protocol": "1.0",
        "handlers": handlers, "features": [], "max_inflight": 10});
    if let Some(t) = token {
        payload["token"] = json!(t);
    }
    json!({"type": "hello", "seq": 0, "payload": payload})
}

/// Waits until `check` holds for `node`'s routes, or fails after WAIT.
async fn until_routes(node: &Node, check: impl Fn(&Node) -> bool) {
    let mut changes = node.watch_routes();
    tokio::time::timeout(WAIT, async {
        while !check(node) {
            changes.changed().await.expect("node alive");
        }
    })
    .await
    .expect("routes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_a_service_with_good_tokens_meet_through_the_hub() {
    let (hub, hub_url) = hub().await;
    hub.reactor().register_sync("rm", "lock", |_, _| Ok(json!("locked"))).unwrap();
    let (service, _) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    service.connect_with(&hub_url, with_token(SERVICE)).await.expect("the service's token is good");
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect_with(&hub_url, with_token(CLIENT)).await.expect("the client's token is good");
    until_routes(&client, |c| {
        c.can_route(packetflow::Group::DataFlow, "upper")
            && c.can_route(packetflow::Group::ResourceMgmt, "lock")
    })
    .await;
    // The client may submit df:*; the hub forwards to the service, whose
    // token allows serving df:upper (and submitting nothing: that governs
    // what the service sends, not what the hub sends it).
    let answer = client.reactor().call(Packet::build("df", "upper", json!("through")).unwrap()).await;
    assert_eq!(answer, Ok(json!("THROUGH")));
    // Outside the client's token: refused at the hub, where it entered
    // (the hub serves rm:lock and announced it).
    let refused = client.reactor().submit(Packet::build("rm", "lock", json!(1)).unwrap()).await;
    let err = refused.err().unwrap();
    assert!(err.is(ErrorCode::Forbidden), "{err:?}");
    assert_eq!(err.message, "token \"client\" may not submit rm:lock");
    for n in [client, service, hub] {
        n.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_token_in_hello_gets_pf401_and_close_1008() {
    let (hub, hub_url) = hub().await;
    let mut peer = RawPeer::connect(&hub_url).await;
    peer.send_json(&hello_frame(Some("not-a-token-at-all-00"), &[])).await;
    let (frames, code) = peer.frames_until_close().await;
    assert_eq!(frames.len(), 1, "one error, then the close: {frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["payload"]["code"], "PF401");
    assert_eq!(frames[0]["payload"]["message"], "the token presented is not valid");
    assert!(!frames[0].to_string().contains("not-a-token"), "the token is never echoed");
    assert_eq!(code, Some(1008));
    assert_eq!(hub.peer_count(), 0, "never entered the peer table");
    hub.stop().await;
}

#[tokio::test]
async fn a_node_dialing_with_a_wrong_token_gets_pf401() {
    let (hub, hub_url) = hub().await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client.connect_with(&hub_url, with_token("wrong-token-0123456789")).await.unwrap_err();
    assert_eq!(err.code, "PF401", "{err:?}");
    assert!(err.message.contains("not valid"), "{}", err.message);
    assert!(!err.message.contains("wrong-token"), "{}", err.message);
    client.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_missing_token_is_refused_when_auth_is_on() {
    let (hub, hub_url) = hub().await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client.connect(&hub_url).await.unwrap_err();
    assert_eq!(err.code, "PF401");
    assert!(err.message.contains("requires a token"), "{}", err.message);
    let mut peer = RawPeer::connect(&hub_url).await;
    peer.send_json(&hello_frame(None, &[])).await;
    let (frames, code) = peer.frames_until_close().await;
    assert_eq!(frames[0]["payload"]["code"], "PF401");
    assert_eq!(code, Some(1008));
    client.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_seed_peer_without_a_token_is_refused_only_when_auth_is_on() {
    // Auth on: its first frame (a submit, no hello) is answered PF401 with
    // the submit's seq and packet id, and the connection closes with 1008.
    let (hub, hub_url) = hub().await;
    let mut seed = RawPeer::connect(&hub_url).await;
    seed.send_json(&submit_frame(7, "seed-1", "df", "upper", json!("x"))).await;
    let (frames, code) = seed.frames_until_close().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["seq"], 7);
    assert_eq!(frames[0]["payload"]["code"], "PF401");
    assert_eq!(frames[0]["payload"]["packet_id"], "seed-1");
    assert_eq!(code, Some(1008));
    hub.stop().await;
    // Auth off: the same peer is served.
    let (open, addr) = node("open", NodeConfig::default()).await;
    register_upper(open.reactor());
    let mut seed = RawPeer::connect(&url(addr)).await;
    seed.send_json(&submit_frame(7, "seed-1", "df", "upper", json!("x"))).await;
    assert_eq!(seed.recv_open().await["payload"]["data"], "X");
    open.stop().await;
}

#[tokio::test]
async fn a_connection_that_presents_nothing_is_refused_after_the_handshake_time() {
    let config = NodeConfig { handshake_timeout: Duration::from_millis(400), ..NodeConfig::default() };
    let (hub, hub_url) = hub_with(config).await;
    let mut silent = RawPeer::connect(&hub_url).await;
    let (frames, code) = silent.frames_until_close().await;
    assert_eq!(frames[0]["payload"]["code"], "PF401");
    assert_eq!(frames[0]["payload"]["message"], "no token was presented within 400 ms");
    assert_eq!(code, Some(1008));
    hub.stop().await;
}

#[tokio::test]
async fn a_token_in_the_upgrade_header_admits_a_peer_that_sends_no_hello() {
    let (hub, hub_url) = hub().await;
    register_upper(hub.reactor());
    let mut seed = RawPeer::connect_with_token(&hub_url, CLIENT).await;
    seed.send_json(&submit_frame(1, "h1", "df", "upper", json!("header"))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["payload"]["data"], "HEADER", "{answer}");
    seed.close().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_token_in_hello_admits_a_peer_and_its_routes() {
    let (hub, hub_url) = hub().await;
    let mut peer = RawPeer::connect(&hub_url).await;
    peer.send_json(&hello_frame(Some(SERVICE), &["df:upper"])).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "hello", "the hub answers with its own hello: {answer}");
    assert!(answer["payload"].get("token").is_none(), "a hub never sends a token back");
    until_routes(&hub, |h| h.can_route(packetflow::Group::DataFlow, "upper")).await;
    peer.close().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_wrong_header_token_is_refused_even_before_a_good_hello() {
    let (hub, hub_url) = hub().await;
    let mut peer = RawPeer::connect_with_token(&hub_url, "wrong-token-0123456789").await;
    peer.send_json(&hello_frame(Some(ADMIN), &[])).await;
    let (frames, code) = peer.frames_until_close().await;
    assert_eq!(frames[0]["payload"]["code"], "PF401");
    assert_eq!(frames[0]["payload"]["message"], "the token presented in Authorization is not valid");
    assert_eq!(code, Some(1008));
    hub.stop().await;
}

#[tokio::test]
async fn pf403_on_a_submit_outside_the_token_names_the_key_and_the_connection_stays() {
    let (hub, hub_url) = hub().await;
    register_upper(hub.reactor());
    let mut peer = RawPeer::connect_with_token(&hub_url, CLIENT).await;
    peer.send_json(&submit_frame(1, "f1", "rm", "lock", json!(1))).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "result");
    assert_eq!(answer["seq"], 1);
    assert_eq!(answer["payload"]["status"], "error");
    assert_eq!(answer["payload"]["error"]["code"], "PF403");
    assert_eq!(answer["payload"]["error"]["message"], "token \"client\" may not submit rm:lock");
    peer.send_json(&submit_frame(2, "f2", "df", "upper", json!("still"))).await;
    assert_eq!(peer.recv_open().await["payload"]["data"], "STILL");
    hub.stop().await;
}

#[tokio::test]
async fn wildcard_patterns_decide_what_a_token_may_submit() {
    // client: df:*, *:user.*, cf:start. Allowed keys with no handler get
    // PF001; the others PF403.
    let (hub, hub_url) = hub().await;
    let mut peer = RawPeer::connect_with_token(&hub_url, CLIENT).await;
    let cases = [
        ("df", "anything", "PF001"),
        ("ed", "user.created", "PF001"),
        ("co", "user.x", "PF001"),
        ("ed", "users", "PF403"),
        ("cf", "start", "PF001"),
        ("cf", "stop", "PF403"),
        ("mc", "spawn", "PF403"),
    ];
    for (i, (group, element, code)) in cases.iter().enumerate() {
        let seq = i as u64 + 1;
        peer.send_json(&submit_frame(seq, &format!("w{seq}"), group, element, json!(null))).await;
        let answer = peer.recv_open().await;
        assert_eq!(answer["payload"]["error"]["code"], *code, "{group}:{element}: {answer}");
    }
    // The admin token (`*`) may submit anything but mc:*, which a token
    // must name.
    let mut admin = RawPeer::connect_with_token(&hub_url, ADMIN).await;
    admin.send_json(&submit_frame(1, "a1", "rm", "anything", json!(null))).await;
    assert_eq!(admin.recv_open().await["payload"]["error"]["code"], "PF001");
    admin.send_json(&submit_frame(2, "a2", "mc", "spawn", json!(null))).await;
    assert_eq!(admin.recv_open().await["payload"]["error"]["code"], "PF403");
    let mut operator = RawPeer::connect_with_token(&hub_url, OPERATOR).await;
    operator.send_json(&submit_frame(1, "o1", "mc", "spawn", json!(null))).await;
    assert_eq!(operator.recv_open().await["payload"]["error"]["code"], "PF001");
    hub.stop().await;
}

/// A hub with the standard elements `cf:*` and `mc:*`.
async fn hub_with_mc() -> (Node, String) {
    let (hub, hub_url) = hub().await;
    let patterns = packetflow::stdlib::StdlibPatterns::parse("cf:*,mc:*").unwrap();
    hub.reactor().enable_stdlib(&patterns);
    (hub, hub_url)
}

/// The one answer to `frame`, sent on `peer`.
async fn ask(peer: &mut RawPeer, frame: packetflow::Value) -> packetflow::Value {
    peer.send_json(&frame).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "result", "{answer}");
    answer["payload"].clone()
}

fn tune(value: u64) -> packetflow::Value {
    json!({"setting": "default_timeout_ms", "value": value})
}

#[tokio::test]
async fn mc_tune_needs_a_token_naming_mc_a_star_token_gets_pf403() {
    let (hub, hub_url) = hub_with_mc().await;
    let timeout = || hub.reactor().setting(packetflow::reactor::Setting::DefaultTimeoutMs);
    let mut admin = RawPeer::connect_with_token(&hub_url, ADMIN).await;
    let refused = ask(&mut admin, submit_frame(1, "t1", "mc", "tune", tune(5000))).await;
    assert_eq!(refused["status"], "error");
    assert_eq!(refused["error"]["code"], "PF403");
    assert_eq!(refused["error"]["message"], "token \"admin\" may not submit mc:tune");
    assert_eq!(timeout(), Some(30_000), "refused: nothing changed");

    let mut operator = RawPeer::connect_with_token(&hub_url, OPERATOR).await;
    let tuned = ask(&mut operator, submit_frame(1, "t2", "mc", "tune", tune(5000))).await;
    assert_eq!(tuned["status"], "success", "{tuned}");
    assert_eq!(tuned["data"], json!({"previous": 30000}));
    assert_eq!(timeout(), Some(5000));

    // A token naming one mc element reaches that one only.
    let mut scaler = RawPeer::connect_with_token(&hub_url, SCALER).await;
    let scale = json!({"target": "df:upper", "max_concurrency": 4});
    let scaled = ask(&mut scaler, submit_frame(1, "s1", "mc", "scale", scale)).await;
    assert_eq!(scaled["data"], json!({"previous": null}), "{scaled}");
    let refused = ask(&mut scaler, submit_frame(2, "s2", "mc", "tune", tune(1000))).await;
    assert_eq!(refused["error"]["code"], "PF403");
    hub.stop().await;
}

#[tokio::test]
async fn a_composite_cannot_reach_mc_for_a_token_that_does_not_grant_mc_star() {
    let (hub, hub_url) = hub_with_mc().await;
    let timeout = || hub.reactor().setting(packetflow::reactor::Setting::DefaultTimeoutMs);
    let seq = json!({"steps": [{"group": "mc", "element": "tune", "data": tune(7000)}]});
    // `*` may submit cf:seq, but its step may not reach mc:tune.
    let mut admin = RawPeer::connect_with_token(&hub_url, ADMIN).await;
    let refused = ask(&mut admin, submit_frame(1, "c1", "cf", "seq", seq.clone())).await;
    assert_eq!(refused["error"]["code"], "PF403", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("cf:seq step 0 (mc:tune) failed: ctx.call to mc:tune refused"), "{message}");
    // Nor for a token naming one mc element: only mc:* lets calls through.
    let mut scaler = RawPeer::connect_with_token(&hub_url, SCALER).await;
    let refused = ask(&mut scaler, submit_frame(1, "c2", "cf", "seq", seq.clone())).await;
    assert_eq!(refused["error"]["code"], "PF403", "{refused}");
    // A mark the client sets to false is overwritten.
    let mut frame = submit_frame(2, "c3", "cf", "seq", seq.clone());
    frame["payload"]["metadata"] = json!({"pf.no_mc": false});
    assert_eq!(ask(&mut admin, frame).await["error"]["code"], "PF403");
    assert_eq!(timeout(), Some(30_000), "nothing changed");
    // A token granting mc:* may.
    let mut operator = RawPeer::connect_with_token(&hub_url, OPERATOR).await;
    let done = ask(&mut operator, submit_frame(1, "c4", "cf", "seq", seq)).await;
    assert_eq!(done["data"], json!({"value": {"previous": 30000}, "steps": 1}), "{done}");
    assert_eq!(timeout(), Some(7000));
    hub.stop().await;
}

#[tokio::test]
async fn pf403_on_an_announce_outside_the_token_names_the_key() {
    let (hub, hub_url) = hub().await;
    let mut peer = RawPeer::connect(&hub_url).await;
    peer.send_json(&hello_frame(Some(SERVICE), &["df:public", "df:secret", "rm:lock"])).await;
    let error = peer.recv_open().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["payload"]["code"], "PF403");
    assert_eq!(
        error["payload"]["message"],
        "token \"service\" may not serve df:secret, rm:lock; those handlers are not announced"
    );
    assert_eq!(peer.recv_open().await["type"], "hello", "the rest of the hello stands");
    until_routes(&hub, |h| h.can_route(packetflow::Group::DataFlow, "public")).await;
    assert!(!hub.can_route(packetflow::Group::DataFlow, "secret"));
    assert!(!hub.can_route(packetflow::Group::ResourceMgmt, "lock"));
    // Nothing is routed there for the refused key: PF001 at the hub.
    let r = hub.reactor().submit(Packet::build("df", "secret", json!(1)).unwrap()).await;
    assert!(r.err().unwrap().is(ErrorCode::NoHandler));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_outside_its_token_is_routed_only_what_it_may_serve() {
    let (hub, hub_url) = hub().await;
    let (service, _) = node("service", NodeConfig::default()).await;
    register_upper(service.reactor());
    service.reactor().register_sync("df", "secret", |_, _| Ok(json!("leaked"))).unwrap();
    service.connect_with(&hub_url, with_token(SERVICE)).await.expect("connect succeeds; one key is refused");
    until_routes(&hub, |h| h.can_route(packetflow::Group::DataFlow, "upper")).await;
    assert!(!hub.can_route(packetflow::Group::DataFlow, "secret"));
    let r = hub.reactor().call(Packet::build("df", "upper", json!("ok")).unwrap()).await;
    assert_eq!(r, Ok(json!("OK")));
    let r = hub.reactor().submit(Packet::build("df", "secret", json!(1)).unwrap()).await;
    assert!(r.err().unwrap().is(ErrorCode::NoHandler));
    service.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_peer_without_hello_is_a_default_route_only_for_what_its_token_serves() {
    let (hub, hub_url) = hub().await;
    // A seed-style service admitted by its header: it never announces, so
    // it is the hub's default route, but only for df:upper and df:public.
    let mut seed = RawPeer::connect_with_token(&hub_url, SERVICE).await;
    seed.send_json(&json!({"type": "heartbeat", "seq": 0, "payload": {"timestamp": 1}})).await;
    let reactor = hub.reactor().clone();
    let allowed =
        tokio::spawn(async move { reactor.submit(Packet::build("df", "public", json!(1)).unwrap()).await });
    let forwarded = seed.recv_open().await;
    assert_eq!(forwarded["type"], "submit");
    assert_eq!(forwarded["payload"]["element"], "public");
    let id = forwarded["payload"]["id"].as_str().unwrap();
    seed.send_json(&json!({"type": "result", "seq": 0,
        "payload": {"packet_id": id, "status": "success", "data": "served", "duration_ms": 0}}))
        .await;
    assert_eq!(allowed.await.unwrap().outcome, Ok(json!("served")));
    let refused = hub.reactor().submit(Packet::build("df", "other", json!(1)).unwrap()).await;
    assert!(refused.err().unwrap().is(ErrorCode::NoHandler), "not routed to a peer that may not serve it");
    hub.stop().await;
}

#[tokio::test]
async fn health_shows_only_the_status_and_metrics_refuse_without_a_token() {
    let (hub, hub_url) = hub().await;
    let addr = hub_url.trim_start_matches("ws://").trim_end_matches("/packetflow/v1").to_owned();
    let (status, body) = http_get(&addr, "/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"status":"ok"}"#);
    let (status, body) = http_get(&addr, "/health", Some(CLIENT)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"node_id\""), "{body}");
    assert_eq!(http_get(&addr, "/metrics", None).await.0, 401);
    assert_eq!(http_get(&addr, "/metrics", Some("wrong-token-0123456789")).await.0, 401);
    let (status, body) = http_get(&addr, "/metrics", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("packetflow_connections"), "{body}");
    hub.stop().await;
}

async fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.unwrap().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn a_tokens_file_is_read_by_listen_and_its_errors_name_it() {
    let dir = TempDir::new("auth");
    let file = dir.file(
        "tokens.json",
        &format!(r#"{{"tokens": [{{"name": "client", "token": "{CLIENT}", "submit": ["df:*"]}}]}}"#),
    );
    let (n, _) = node("n", NodeConfig::default()).await;
    register_upper(n.reactor());
    let addr = n
        .listen_with("127.0.0.1:0", ListenOptions { auth_file: Some(file), ..ListenOptions::default() })
        .await
        .unwrap();
    let mut peer = RawPeer::connect_with_token(&url(addr), CLIENT).await;
    peer.send_json(&submit_frame(1, "t1", "df", "upper", json!("file"))).await;
    assert_eq!(peer.recv_open().await["payload"]["data"], "FILE");

    let missing = dir.0.join("absent.toml");
    let err = n
        .listen_with(
            "127.0.0.1:0",
            ListenOptions { auth_file: Some(missing.clone()), ..ListenOptions::default() },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "PF400");
    assert!(err.message.contains(&missing.display().to_string()), "{}", err.message);
    let short = dir.file("short.toml", "[[tokens]]\nname = \"s\"\ntoken = \"short\"\n");
    let err = n
        .listen_with("127.0.0.1:0", ListenOptions { auth_file: Some(short), ..ListenOptions::default() })
        .await
        .unwrap_err();
    assert!(err.message.contains("at least 16 bytes"), "{}", err.message);
    n.stop().await;
}

/// A node that refuses every token and then keeps the socket open, so a
/// refused dialer's route would linger if it had one.
async fn refusing_node_that_never_closes() -> (String, tokio::sync::oneshot::Receiver<Option<u16>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The callback's type is tungstenite's (an `ErrorResponse` error).
        #[allow(clippy::result_large_err)]
        let speaks_hello = |_: &Request, mut response: Response| {
            response.headers_mut().insert("x-packetflow-node", "1".parse().unwrap());
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, speaks_hello).await.unwrap();
        let _hello = ws.next().await;
        let refusal = json!({"type": "error", "seq": 0, "payload": {"code": "PF401", "message": "no"}});
        ws.send(WsMessage::Text(refusal.to_string().into())).await.unwrap();
        // Read until the dialer closes (bounded by the test's timeout).
        let mut code = None;
        while let Some(Ok(frame)) = ws.next().await {
            if let WsMessage::Close(frame) = frame {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
        }
        let _ = closed_tx.send(code);
    });
    (format!("ws://{addr}/packetflow/v1"), closed_rx)
}

#[tokio::test]
async fn a_refused_dial_leaves_no_route_and_the_dialer_closes_it() {
    let (refusing_url, closed) = refusing_node_that_never_closes().await;
    let (client, _) = node("client", NodeConfig::default()).await;
    let err = client.connect_with(&refusing_url, with_token("some-token-0123456789")).await.unwrap_err();
    assert_eq!(err.code, "PF401", "{err:?}");
    // Never a route, not even while the socket is still open: a submit right
    // after the failed dial finds no handler rather than the refusing peer.
    assert_eq!(client.peer_count(), 0);
    let r = client.reactor().call(Packet::build("df", "anything", json!(1)).unwrap()).await;
    assert_eq!(r.unwrap_err().code, "PF001");
    let code =
        tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the dialer closes").unwrap();
    assert_eq!(code, Some(1008));
    client.stop().await;
}

#[tokio::test]
async fn what_a_node_runs_for_a_star_tokens_packet_knows_its_calls_cannot_reach_mc() {
    let (hub, hub_url) = hub().await;
    let r = hub.reactor();
    r.register_sync("df", "probe", |_, ctx| Ok(json!(ctx.bars_mc()))).unwrap();
    r.register("df", "probe_async", |_, ctx| async move { Ok(json!(ctx.bars_mc())) }).unwrap();
    let probe = packetflow::ActorType::new(
        |_: &str, _: &packetflow::Value, _: &mut packetflow::Value, ctx: &packetflow::ActorContext| {
            Ok(packetflow::Reply::Value(json!(ctx.bars_mc())))
        },
    )
    .with_initial_state(json!({}));
    r.actors().register("probe", probe).unwrap();
    // Ids apart per token: an actor answers a packet id it remembers from memory.
    let actor_frame = |seq: u64, token: &str| {
        let id = format!("{}-{seq}", &token[..5]);
        let mut frame = submit_frame(seq, &id, "rm", "actor.probe", json!({"type": "ask"}));
        frame["payload"]["metadata"] = json!({"pf.actor_id": "p1"});
        frame
    };
    for (token, barred) in [(ADMIN, true), (OPERATOR, false)] {
        let mut peer = RawPeer::connect_with_token(&hub_url, token).await;
        for (seq, element) in [(1, "probe"), (2, "probe_async")] {
            let answer =
                ask(&mut peer, submit_frame(seq, &format!("p{seq}"), "df", element, json!(null))).await;
            assert_eq!(answer["data"], json!(barred), "{token}: df:{element}: {answer}");
        }
        // The first message activates the actor (the slow path), the next
        // finds it idle in memory (the inline one).
        for seq in [3, 4] {
            let answer = ask(&mut peer, actor_frame(seq, token)).await;
            assert_eq!(answer["data"], json!(barred), "{token}: actor message {seq}: {answer}");
        }
    }
    // In process: never barred.
    assert_eq!(r.call(Packet::build("df", "probe_async", json!(null)).unwrap()).await, Ok(json!(false)));
    hub.stop().await;
}
