//! A node's own messages to an actor on another node, through a hub, with
//! direct paths on and off at the sender: what keeping an actor's order
//! across a switch to a direct link costs (docs/protocol.md, "Direct
//! paths", "Order across the switch").
//!
//! With direct paths on, every actor message a node sends through a hub is
//! counted per actor until it is answered, so that a direct link coming up
//! never lets later messages overtake it. The host here takes no part in
//! direct paths, so the sender with them on keeps sending through the hub
//! and pays the count (and the look for a link) on every message, while
//! the sender with them off pays neither: both take the same path, hub
//! included. 100 asks in flight, `--n` per round, both senders alternately,
//! `--rounds` times -> messages/s of each and their ratio.
//!
//! `cargo bench -p packetflow-tests --bench actors_via_hub -- [--n N] [--rounds R] [--only on|off]`
//!
//! `--only` runs one sender (its warm-up included): under `valgrind
//! --tool=callgrind`, the difference of the two totals over N is what the
//! count costs per message.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use packetflow::actor::ActorRef;
use packetflow::net::DirectConfig;
use packetflow::{json, ActorType, Node, NodeConfig, Reactor, ReactorConfig, Reply, Value};
use packetflow_tests::bench_args::{number, only};
use packetflow_tests::{node_with, url};

const IN_FLIGHT: usize = 100;

/// The actor every message goes to: adds one, answers the count.
fn counter() -> ActorType {
    ActorType::new(|_: &str, _: &Value, state: &mut Value, _: &packetflow::ActorContext| {
        let count = state.as_i64().unwrap_or(0) + 1;
        *state = json!(count);
        Ok(Reply::Value(json!(count)))
    })
    .with_initial_state(json!(0))
}

fn reactor(name: &str) -> Reactor {
    Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() })
}

fn direct(enabled: bool) -> NodeConfig {
    NodeConfig { direct: DirectConfig { enabled, ..DirectConfig::default() }, ..NodeConfig::default() }
}

/// A sender node connected to `hub`, once it knows the counter's host.
async fn sender(name: &str, hub: &str, direct_paths: bool) -> Node {
    let (node, _) = node_with(reactor(name), direct(direct_paths)).await;
    node.connect(hub).await.unwrap();
    let mut routes = node.watch_routes();
    while node.actor_hosts("counter").is_empty() {
        tokio::time::timeout(Duration::from_secs(10), routes.changed())
            .await
            .expect("the sender learns the counter's host")
            .unwrap();
    }
    node
}

/// `n` asks to `actor` from `node`, `IN_FLIGHT` at a time -> messages/s.
async fn asks(node: &Node, actor: &ActorRef, n: usize) -> f64 {
    let actors = node.reactor().actors();
    let started = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut sent = 0;
    while sent < n.min(IN_FLIGHT) {
        running.push(actors.send(actor, json!({"type": "add"})));
        sent += 1;
    }
    while let Some(answer) = running.next().await {
        answer.expect("every ask is answered");
        if sent < n {
            running.push(actors.send(actor, json!({"type": "add"})));
            sent += 1;
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let (n, rounds) = (number("--n", 20_000), number("--rounds", 5));
    let (run_on, run_off) = only("on", "off");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (hub, hub_addr) = node_with(reactor("hub"), NodeConfig::default()).await;
        let hub_url = url(hub_addr);
        let host_reactor = reactor("host");
        host_reactor.actors().register("counter", counter()).unwrap();
        let (host, _) = node_with(host_reactor, direct(false)).await;
        host.connect(&hub_url).await.unwrap();
        let on = sender("sender-direct-on", &hub_url, true).await;
        let off = sender("sender-direct-off", &hub_url, false).await;
        // One actor each, so that neither sender's asks queue behind the
        // other's in one mailbox.
        let (actor_on, actor_off) =
            (ActorRef::new("counter", "on").unwrap(), ActorRef::new("counter", "off").unwrap());
        if run_on {
            asks(&on, &actor_on, n / 10).await;
        }
        if run_off {
            asks(&off, &actor_off, n / 10).await;
        }
        for round in 1..=rounds {
            println!("## round {round}: {n} asks each, {IN_FLIGHT} in flight, through the hub");
            if run_on {
                println!("direct paths on  (counted) {:>9.0} messages/s", asks(&on, &actor_on, n).await);
            }
            if run_off {
                println!("direct paths off           {:>9.0} messages/s", asks(&off, &actor_off, n).await);
            }
        }
        let linked = on.health()["direct"]["links"].as_array().map_or(0, Vec::len);
        assert_eq!(linked, 0, "the sender with direct paths on kept to the hub (the host takes no part)");
        for node in [on, off, host, hub] {
            node.stop().await;
        }
    });
}
