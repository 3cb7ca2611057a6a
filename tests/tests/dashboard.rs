//! The dashboard a listening node serves on its port (`docs/dashboard.md`):
//! the page and its embedded assets, the data it is pushed (a relayed
//! packet's failure, its hops, the peers' encodings), the event stream, and
//! the token it needs with auth on.

use std::time::Duration;

use packetflow::{json, ListenOptions, Node, NodeConfig, PfError, Reactor, ReactorConfig, TokenSpec, Value};
use packetflow_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A GET with an optional bearer token: status, head and body.
async fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect for HTTP");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an HTTP answer in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn snapshot(addr: &str, token: Option<&str>) -> Value {
    let (status, _, body) = get(addr, "/ui/api/snapshot", token).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the snapshot is JSON")
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let (node, addr) = node("solo", NodeConfig::default()).await;
    let addr = addr.to_string();
    let (status, head, _) = get(&addr, "/", None).await;
    assert_eq!(status, 302);
    assert!(head.contains("location: /ui/"), "{head}");
    let (status, head, page) = get(&addr, "/ui/", None).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/html")
            && head.contains("content-security-policy: default-src 'self'")
    );
    assert!(page.contains("<script src=\"/ui/app.js\">"), "{page}");
    for asset in ["/ui/app.js", "/ui/style.css", "/ui/vendor/uPlot.iife.min.js", "/ui/vendor/uPlot.min.css"] {
        let (status, _, body) = get(&addr, asset, None).await;
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 500, "{asset} is {} bytes", body.len());
    }
    let (status, _, licence) = get(&addr, "/ui/vendor/uPlot.LICENSE", None).await;
    assert!(status == 200 && licence.contains("MIT License"));
    assert_eq!(get(&addr, "/ui/nothing-here", None).await.0, 404);
    assert_eq!(get(&addr, "/ui/api/nothing", None).await.0, 404);
    assert_eq!(get(&addr, "/ui/api/trace", None).await.0, 400, "a trace needs an id");
    let doc = snapshot(&addr, None).await;
    assert_eq!(doc["health"]["name"], "solo");
    assert_eq!(doc["health"]["actors"], json!([]), "no actors hosted: none shown");
    assert!(doc["process"]["uptime_s"].is_u64());
    node.stop().await;
}

/// A hub, and a service behind it serving `df:upper` and `df:boom` (fails).
async fn hub_and_service() -> (Node, String, Node) {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let reactor = Reactor::new(ReactorConfig { name: "service".into(), ..ReactorConfig::default() });
    register_upper(&reactor);
    reactor.register_sync("df", "boom", |_, _| Err(PfError::failed("the boom handler failed"))).unwrap();
    let service = Node::new(reactor, NodeConfig::default());
    service.connect(&url(hub_addr)).await.unwrap();
    until("the hub routes df:boom", || hub.can_route(packetflow::Group::DataFlow, "boom")).await;
    (hub, hub_addr.to_string(), service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_failure_shows_with_its_peer_and_its_trace_hop_by_hop() {
    let (hub, addr, service) = hub_and_service().await;
    let mut client = RawPeer::connect(&format!("ws://{addr}/packetflow/v1")).await;
    client.send_json(&submit_frame(1, "fine-1", "df", "upper", json!("a"))).await;
    assert_eq!(client.recv_open().await["payload"]["data"], "A");
    client.send_json(&submit_frame(2, "broken-1", "df", "boom", json!(null))).await;
    assert_eq!(client.recv_open().await["payload"]["error"]["code"], "PF500");

    let doc = snapshot(&addr, None).await;
    let failure = &doc["failures"][0];
    assert_eq!(failure["key"], "df:boom");
    assert_eq!(failure["code"], "PF500");
    assert_eq!(failure["message"], "the boom handler failed");
    assert_eq!(failure["packet_id"], "broken-1");
    assert!(failure["served_by"].as_str().unwrap().starts_with("service (rust, "), "{failure}");
    assert!(failure["from"].as_str().unwrap().starts_with("seed peer ("), "{failure}");
    assert_eq!(doc["failures"].as_array().unwrap().len(), 1, "the success is no failure");
    assert_eq!(doc["errors_by_code"], json!({"PF500": 1}));
    let peers = doc["health"]["peers"].as_array().unwrap();
    let service_peer = peers.iter().find(|p| p["name"] == "service").expect("the service is a peer");
    assert_eq!(service_peer["encoding"], "json");
    assert_eq!(service_peer["runtime"], "rust");
    assert!(service_peer["connected_at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    let (status, _, body) = get(&addr, "/ui/api/trace?id=broken-1", None).await;
    assert_eq!(status, 200, "{body}");
    let trace: Value = serde_json::from_str(&body).unwrap();
    let events: Vec<&str> =
        trace["hops"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["arrived", "sent", "answered"], "{trace}");
    assert!(trace["hops"][1]["to"].as_str().unwrap().starts_with("service"), "{trace}");
    assert_eq!(trace["hops"][2]["code"], "PF500");
    assert_eq!(trace["failures"][0]["message"], "the boom handler failed");

    // The relayed keys are counted by the sampler, once a second.
    let charted = tokio::time::timeout(WAIT, async {
        loop {
            let doc = snapshot(&addr, None).await;
            let keys = doc["keys"].as_array().unwrap().clone();
            if let Some(boom) = keys.iter().find(|k| k["key"] == "df:boom") {
                return (boom.clone(), keys);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the sampler charts df:boom");
    assert_eq!(charted.0["served"], "routed");
    assert_eq!((charted.0["count"].as_u64(), charted.0["errors"].as_u64()), (Some(1), Some(1)));
    service.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_a_snapshot_then_a_tick_each_second() {
    let (node, addr) = node("streaming", NodeConfig::default()).await;
    register_upper(node.reactor());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /ui/api/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut seen = String::new();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 8192];
        while seen.matches("event: tick").count() < 2 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("two ticks in time");
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream"), "{seen}");
    let first = seen.find("event: snapshot\ndata: {").expect("a snapshot first");
    assert!(first < seen.find("event: tick").unwrap());
    assert!(started.elapsed() >= Duration::from_millis(900), "no faster than once a second");
    let tick = seen.split("event: tick\ndata: ").nth(1).unwrap().split("\n\n").next().unwrap();
    let tick: Value = serde_json::from_str(tick).expect("a tick is JSON");
    assert_eq!(tick["health"]["handlers"], json!(["df:upper"]));
    drop(stream);
    node.stop().await;
}

const VIEWER: &str = "viewer-token-0123456789";
const WORKER: &str = "worker-token-0123456789";

#[tokio::test]
async fn with_auth_on_the_data_needs_a_token_with_the_dashboard_permission() {
    let node = Node::new(Reactor::default(), NodeConfig::default());
    let options = ListenOptions {
        tokens: vec![
            TokenSpec::new("viewer", VIEWER, &[], &[]).with_dashboard(),
            TokenSpec::allow_all("worker", WORKER),
        ],
        ..ListenOptions::default()
    };
    let addr = node.listen_with("127.0.0.1:0", options).await.unwrap().to_string();
    // The page is the same static files on every node: no data, no token.
    assert_eq!(get(&addr, "/ui/", None).await.0, 200);
    for path in ["/ui/api/snapshot", "/ui/api/events", "/ui/api/trace?id=x"] {
        let (status, head, body) = get(&addr, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        assert!(body.contains("dashboard permission"), "{body}");
        let (status, _, body) = get(&addr, path, Some("not-a-token-of-this-node")).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _, body) = get(&addr, path, Some(WORKER)).await;
        assert_eq!(status, 403, "{path}: a token without the permission: {body}");
        assert!(body.contains("dashboard = true"), "{body}");
    }
    let (status, _, body) = get(&addr, "/ui/api/snapshot", Some(VIEWER)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(VIEWER) && !body.contains(WORKER), "no token is ever shown");
    node.stop().await;
}

#[tokio::test]
async fn the_actor_types_a_node_hosts_are_in_its_data() {
    let reactor = Reactor::default();
    let echo_state = |_: &str, _: &Value, state: &mut Value, _: &packetflow::ActorContext| {
        Ok(packetflow::Reply::Value(state.clone()))
    };
    reactor.actors().register("counter", packetflow::ActorType::new(echo_state)).unwrap();
    let (node, addr) = node_with(reactor, NodeConfig::default()).await;
    let doc = snapshot(&addr.to_string(), None).await;
    assert_eq!(doc["health"]["actors"][0]["actor_type"], "counter", "{doc}");
    assert_eq!(doc["health"]["actors"][0]["active"], 0);
    node.stop().await;
}
