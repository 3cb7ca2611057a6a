//! `packetflow serve --nats`: two hubs that share nothing but a NATS
//! server, one serving a key, the other answering a submit for it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use packetflow_tests::nats_server::NatsServer;
use packetflow_tests::{submit_frame, RawPeer};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_packetflow");

/// A `packetflow serve --nats` hub, killed when dropped.
struct Hub {
    child: Child,
    url: String,
}

impl Hub {
    /// Starts a hub and returns once it joined NATS (or panics with what
    /// it printed instead).
    fn start(nats: &str, extra: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--nats", nats])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start packetflow serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut url = None;
        let mut seen = Vec::new();
        // A handful of lines precede the join; bounded either way.
        for line in lines.by_ref().take(20) {
            let line = line.unwrap();
            if url.is_none() {
                url = line.split_whitespace().find(|w| w.starts_with("ws://")).map(str::to_owned);
            }
            let joined = line.contains("joined NATS");
            seen.push(line);
            if joined {
                break;
            }
        }
        assert!(seen.last().is_some_and(|l| l.contains("joined NATS")), "serve did not join NATS: {seen:?}");
        // Keep reading what the hub prints, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Hub { child, url: url.expect("serve names its URL") }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run packetflow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_nats_server_answer_each_others_keys() {
    let server = NatsServer::start().await;
    let serving =
        Hub::start(&server.url(), &["--handler", "df:shout=uppercase", "--nats-namespace", "cli.test"]);
    let asking = Hub::start(&server.url(), &["--nats-namespace", "cli.test"]);
    // A raw WebSocket client (no hello, as the seed's): the hub runs its
    // packet through its reactor, which finds the key on NATS.
    let mut client = RawPeer::connect(&asking.url).await;
    client.send_json(&submit_frame(1, "p1", "df", "shout", json!("through nats"))).await;
    let answer = client.recv().await.expect("an answer");
    assert_eq!(answer["type"], "result", "{answer}");
    assert_eq!(answer["payload"]["data"], "THROUGH NATS");
    // Another namespace is another system: nobody serves the key there.
    let elsewhere = Hub::start(&server.url(), &[]);
    let mut client = RawPeer::connect(&elsewhere.url).await;
    client.send_json(&submit_frame(1, "p2", "df", "shout", json!(1))).await;
    let answer = client.recv().await.expect("an answer");
    assert_eq!(answer["payload"]["error"]["code"], "PF001", "{answer}");
    drop(serving);
}

#[test]
fn a_bad_nats_url_stops_serve_with_a_pf400() {
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--nats", "nats://127.0.0.1:1,http://x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PF400") && err.contains("http://x"), "{err}");
}
