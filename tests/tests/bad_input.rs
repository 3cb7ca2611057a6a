//! Every kind of bad input gets a clear answer, and the node stays up.

use packetflow::{json, NodeConfig};
use packetflow_tests::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn upper_node() -> (packetflow::Node, String) {
    let (n, addr) = node("n", NodeConfig::default()).await;
    register_upper(n.reactor());
    (n, url(addr))
}

#[tokio::test]
async fn an_unparsable_frame_gets_pf400_and_the_connection_stays() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    peer.send_text(r#"{"type":"submit","seq":5,"payload":{"#).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["seq"], 5, "the seq read before the fault is kept");
    assert_eq!(answer["payload"]["code"], "PF400");
    assert!(answer["payload"]["message"].as_str().unwrap().starts_with("malformed frame"));
    peer.send_json(&submit_frame(6, "after", "df", "upper", json!("still here"))).await;
    assert_eq!(peer.recv_open().await["payload"]["data"], "STILL HERE");
    n.stop().await;
}

#[tokio::test]
async fn a_hundred_bad_frames_in_a_row_close_with_1008() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    for _ in 0..100 {
        peer.send_text("not json").await;
    }
    let mut errors = 0;
    while let Some(frame) = peer.recv().await {
        assert_eq!(frame["payload"]["code"], "PF400");
        errors += 1;
    }
    assert_eq!(errors, 100, "each bad frame was answered before the close");
    n.stop().await;
}

#[tokio::test]
async fn the_close_code_for_too_many_bad_frames_is_1008() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    for _ in 0..100 {
        peer.send_text("{").await;
    }
    assert_eq!(peer.closed_with().await, Some(1008));
    n.stop().await;
}

#[tokio::test]
async fn good_frames_reset_the_bad_frame_count() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    for round in 0..3 {
        for _ in 0..60 {
            peer.send_text("nope").await;
        }
        peer.send_json(&submit_frame(round + 1, &format!("ok{round}"), "df", "upper", json!("a"))).await;
    }
    let mut results = 0;
    for _ in 0..183 {
        if peer.recv_open().await["type"] == "result" {
            results += 1;
        }
    }
    assert_eq!(results, 3);
    n.stop().await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    let big = "x".repeat((1 << 20) + 1);
    peer.send_json(&submit_frame(1, "big", "df", "upper", json!(big))).await;
    assert_eq!(peer.closed_with().await, Some(1009));
    // The node still serves others.
    let mut other = RawPeer::connect(&url).await;
    other.send_json(&submit_frame(1, "small", "df", "upper", json!("ok"))).await;
    assert_eq!(other.recv_open().await["payload"]["data"], "OK");
    n.stop().await;
}

#[tokio::test]
async fn a_frame_just_under_the_limit_is_served() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    let payload = "y".repeat((1 << 20) - 200);
    peer.send_json(&submit_frame(1, "near-limit", "df", "upper", json!(payload))).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["payload"]["data"].as_str().unwrap().len(), (1 << 20) - 200);
    n.stop().await;
}

#[tokio::test]
async fn an_unknown_type_gets_pf400_and_the_connection_stays() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    peer.send_json(&json!({"type": "gossip", "seq": 77, "payload": {}})).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["seq"], 77);
    assert_eq!(answer["payload"]["code"], "PF400");
    assert!(answer["payload"]["message"].as_str().unwrap().contains("gossip"));
    peer.send_json(&submit_frame(78, "next", "df", "upper", json!("b"))).await;
    assert_eq!(peer.recv_open().await["payload"]["data"], "B");
    n.stop().await;
}

#[tokio::test]
async fn a_submit_with_a_bad_field_gets_an_error_with_its_seq_naming_the_field() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    let mut frame = submit_frame(31, "bad-priority", "df", "upper", json!("x"));
    frame["payload"]["priority"] = json!(11);
    peer.send_json(&frame).await;
    let answer = peer.recv_open().await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["seq"], 31);
    assert_eq!(answer["payload"]["code"], "PF400");
    assert_eq!(answer["payload"]["message"], "priority must be an integer 1-10, got 11");
    assert_eq!(answer["payload"]["packet_id"], "bad-priority");
    n.stop().await;
}

#[tokio::test]
async fn binary_garbage_on_a_json_connection_is_answered_too() {
    let (n, url) = upper_node().await;
    let mut peer = RawPeer::connect(&url).await;
    peer.send(WsMessage::Binary(vec![0xc1, 0x00, 0xff].into())).await;
    assert_eq!(peer.recv_open().await["payload"]["code"], "PF400");
    n.stop().await;
}

#[tokio::test]
async fn http_health_metrics_and_unknown_paths() {
    let (n, addr) = node("observed", NodeConfig::default()).await;
    register_upper(n.reactor());
    let mut peer = RawPeer::connect(&url(addr)).await;
    peer.send_json(&submit_frame(1, "counted", "df", "upper", json!("m"))).await;
    peer.recv_open().await;
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200);
    let health: packetflow::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["name"], "observed");
    assert_eq!(health["handlers"], json!(["df:upper"]));
    assert_eq!(health["peers"].as_array().unwrap().len(), 1);
    assert_eq!(health["node_id"], n.node_id());
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("packetflow_packets_total{group=\"df\",element=\"upper\"} 1"), "{body}");
    assert!(body.contains("packetflow_latency_seconds_count{group=\"df\",element=\"upper\"} 1"));
    assert!(body.contains("le=\"+Inf\"} 1"));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    n.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.unwrap().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn a_wrong_path_is_refused_with_404() {
    let (n, addr) = node("n", NodeConfig::default()).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/elsewhere")).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    n.stop().await;
}
