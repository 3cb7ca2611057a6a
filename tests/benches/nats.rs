//! Request/reply through one `nats-server` on loopback, sequential: a
//! PacketFlow node asking a node that serves `df:echo`, beside plain
//! `async-nats` (a responder echoing, a requester waiting for each answer),
//! alternately, `--rounds` times -> requests/s, p50 and p99 of each, and
//! their ratios (targets: >= 0.8x the requests/s, <= 1.2x the p50).
//!
//! `cargo bench -p packetflow-tests --bench nats -- [--n N] [--rounds R] [--only plain|packetflow]`
//!
//! `--only` runs one of the two (warm-up included): under `valgrind
//! --tool=callgrind`, the difference of the two totals over N is what a
//! PacketFlow round trip costs beyond a plain one.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use packetflow::{json, Node, NodeConfig, Packet, Reactor, ReactorConfig};
use packetflow_tests::bench_args::{number, only};
use packetflow_tests::nats_server::NatsServer;

/// Requests/s, p50 and p99 (µs) of one run of `n` requests.
struct Figures {
    rps: f64,
    p50: u64,
    p99: u64,
}

impl Figures {
    fn of(mut micros: Vec<u64>, total: Duration) -> Figures {
        micros.sort_unstable();
        let rps = micros.len() as f64 / total.as_secs_f64();
        Figures { rps, p50: micros[micros.len() / 2], p99: micros[micros.len() * 99 / 100] }
    }

    fn print(&self, label: &str) {
        println!("{label:<24} {:>8.0} requests/s, p50 {:>4} us, p99 {:>5} us", self.rps, self.p50, self.p99);
    }
}

fn node(name: &str) -> Node {
    Node::new(
        Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() }),
        NodeConfig::default(),
    )
}

async fn plain(requester: &async_nats::Client, n: usize) -> Figures {
    let body = serde_json::to_vec(&json!("ping")).unwrap();
    let mut micros = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let sent = Instant::now();
        requester.request("plain.echo", body.clone().into()).await.unwrap();
        micros.push(sent.elapsed().as_micros() as u64);
    }
    Figures::of(micros, started.elapsed())
}

async fn packetflow(asking: &Node, n: usize) -> Figures {
    let mut micros = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let sent = Instant::now();
        let result = asking.reactor().submit(Packet::build("df", "echo", json!("ping")).unwrap()).await;
        assert!(result.is_success(), "{result:?}");
        micros.push(sent.elapsed().as_micros() as u64);
    }
    Figures::of(micros, started.elapsed())
}

fn main() {
    let (n, rounds) = (number("--n", 5000), number("--rounds", 3));
    let (run_plain, run_ours) = only("plain", "packetflow");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = NatsServer::start().await;
        let responder = async_nats::connect(server.url()).await.unwrap();
        let mut requests = responder.subscribe("plain.echo").await.unwrap();
        let echo = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                if let Some(reply) = message.reply {
                    responder.publish(reply, message.payload).await.unwrap();
                }
            }
        });
        let requester = async_nats::connect(server.url()).await.unwrap();

        let serving = node("serving");
        serving.reactor().register_sync("df", "echo", |data, _| Ok(data)).unwrap();
        serving.connect(&server.url()).await.unwrap();
        let asking = node("asking");
        asking.connect(&server.url()).await.unwrap();
        // Warm-up, and the subscription seen by the server.
        if run_ours {
            packetflow(&asking, n / 10).await;
        }
        if run_plain {
            plain(&requester, n / 10).await;
        }

        for round in 1..=rounds {
            println!("## round {round}: {n} sequential requests each");
            if !(run_plain && run_ours) {
                let figures =
                    if run_plain { plain(&requester, n).await } else { packetflow(&asking, n).await };
                figures.print(if run_plain { "plain async-nats" } else { "packetflow over nats" });
                continue;
            }
            let theirs = plain(&requester, n).await;
            theirs.print("plain async-nats");
            let ours = packetflow(&asking, n).await;
            ours.print("packetflow over nats");
            println!(
                "ratio: {:.2}x the requests/s (target >= 0.8x), {:.2}x the p50 (target <= 1.2x)\n",
                ours.rps / theirs.rps,
                ours.p50 as f64 / theirs.p50 as f64
            );
        }
        echo.abort();
        asking.stop().await;
        serving.stop().await;
    });
}
