//! Actors across nodes: placement by rendezvous hash over the nodes that
//! host a type, agreed through a hub without a directory; a host that
//! leaves hands its actors to the next owner through a shared store; a
//! seed-spec peer messages an actor with a plain frame.

use std::collections::BTreeSet;
use std::sync::Arc;

use packetflow::actor::{ActorStore, FileStore};
use packetflow::{json, ActorRef, ActorType, Node, NodeConfig, Reactor, ReactorConfig, Reply, Value};
use packetflow_tests::{node, node_with, url, RawPeer, WAIT};

/// The seed's counter, virtual (any id starts at 0).
fn counter() -> ActorType {
    ActorType::new(
        |kind: &str, message: &Value, state: &mut Value, _: &packetflow::ActorContext| match kind {
            "increment" => {
                let value = state["value"].as_i64().unwrap_or(0) + message["by"].as_i64().unwrap_or(1);
                state["value"] = json!(value);
                Ok(Reply::Value(json!({"value": value})))
            }
            _ => Ok(Reply::Value(state.clone())),
        },
    )
    .with_initial_state(json!({"value": 0}))
}

/// A node hosting `counter` on `store`, dialed into `hub`.
async fn host(name: &str, store: &Arc<dyn ActorStore>, hub: &str) -> (Node, Reactor) {
    let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
    reactor.actors().set_store(store.clone()).unwrap();
    reactor.actors().register("counter", counter()).unwrap();
    let (node, _) = node_with(reactor.clone(), NodeConfig::default()).await;
    node.connect(hub).await.unwrap();
    (node, reactor)
}

async fn until_hosts(node: &Node, count: usize) {
    let mut routes = node.watch_routes();
    while node.actor_hosts("counter").len() != count {
        tokio::time::timeout(WAIT, routes.changed())
            .await
            .unwrap_or_else(|_| panic!("{} hosts known, not {count}", node.actor_hosts("counter").len()))
            .unwrap();
    }
}

/// Which of `reactors` hold each id in memory.
fn homes(reactors: &[&Reactor], ids: &[String]) -> Vec<Vec<usize>> {
    ids.iter()
        .map(|id| {
            (0..reactors.len()).filter(|i| reactors[*i].actors().active_ids("counter").contains(id)).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_actor_lives_on_one_node_and_moves_when_its_host_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ActorStore> = Arc::new(FileStore::open(dir.path().join("actors.redb")).unwrap());
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let (a, ra) = host("a", &store, &hub_url).await;
    let (b, rb) = host("b", &store, &hub_url).await;
    let (c, rc) = host("c", &store, &hub_url).await;
    for n in [&hub, &a, &b, &c] {
        until_hosts(n, 3).await;
    }
    // Messages from the hub and from a host go to the same place.
    let ids: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let hub_actors = hub.reactor().actors();
    for id in &ids {
        let actor = ActorRef::new("counter", id).unwrap();
        hub_actors.send(&actor, json!({"type": "increment"})).await.unwrap();
        let second = ra.actors().send(&actor, json!({"type": "increment"})).await.unwrap();
        assert_eq!(second, json!({"value": 2}), "{id}: both messages reached one activation");
    }
    let placed = homes(&[&ra, &rb, &rc], &ids);
    assert!(placed.iter().all(|h| h.len() == 1), "each actor on exactly one node: {placed:?}");
    let used: BTreeSet<usize> = placed.iter().map(|h| h[0]).collect();
    assert_eq!(used.len(), 3, "30 actors spread over the 3 hosts: {placed:?}");
    let on_c: Vec<String> =
        ids.iter().zip(&placed).filter(|(_, h)| h[0] == 2).map(|(id, _)| id.clone()).collect();

    // C leaves: its actors come back on A or B, with their state.
    c.stop().await;
    until_hosts(&hub, 2).await;
    until_hosts(&a, 2).await;
    for id in &on_c {
        let actor = ActorRef::new("counter", id).unwrap();
        let value = hub_actors.send(&actor, json!({"type": "increment"})).await.unwrap();
        assert_eq!(value, json!({"value": 3}), "{id} moved with its state");
    }
    let moved = homes(&[&ra, &rb], &on_c);
    assert!(moved.iter().all(|h| h.len() == 1), "each moved actor on one of A, B: {moved:?}");

    // A seed-spec peer messages an actor with a plain submit frame.
    let c0 = ActorRef::new("counter", "c0").unwrap();
    let before = hub_actors.send(&c0, json!({"type": "get"})).await.unwrap()["value"].as_i64().unwrap();
    let mut seed = RawPeer::connect(&hub_url).await;
    seed.send_json(&json!({"type": "submit", "seq": 1, "payload": {
        "version": "1.0", "id": "seed-1", "group": "rm", "element": "actor.counter",
        "data": {"type": "increment", "by": 10}, "metadata": {"pf.actor_id": "c0"}}}))
        .await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["payload"]["status"], "success", "{answer}");
    assert_eq!(answer["payload"]["data"], json!({"value": before + 10}));
    // The seed peer repeats the same packet (a retry): applied once.
    seed.send_json(&json!({"type": "submit", "seq": 2, "payload": {
        "version": "1.0", "id": "seed-1", "group": "rm", "element": "actor.counter",
        "data": {"type": "increment", "by": 10}, "metadata": {"pf.actor_id": "c0"}}}))
        .await;
    assert_eq!(seed.recv_open().await["payload"]["data"], json!({"value": before + 10}));

    for n in [a, b, hub] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_count_actors_per_type() {
    let reactor = Reactor::default();
    reactor.actors().register("counter", counter()).unwrap();
    let (n, _) = node_with(reactor.clone(), NodeConfig::default()).await;
    for id in ["x", "y"] {
        reactor
            .actors()
            .send(&ActorRef::new("counter", id).unwrap(), json!({"type": "increment"}))
            .await
            .unwrap();
    }
    let health = n.health();
    assert_eq!(health["actors"][0]["actor_type"], "counter");
    assert_eq!(health["actors"][0]["active"], 2);
    assert!(n.metrics().contains("packetflow_actors_active{actor_type=\"counter\"} 2"), "{}", n.metrics());
    assert!(health["handlers"].as_array().unwrap().contains(&json!("rm:actor.counter")));
    n.stop().await;
}

const FAULT_NODE: &str = env!("CARGO_BIN_EXE_fault-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_turn_survives_kill_9_and_a_repeat_after_restart_is_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("actors.redb");
    let store = store.to_str().unwrap();
    let increment = |packet_id: &str| {
        ActorRef::new("counter", "k")
            .unwrap()
            .packet_from(
                packetflow::actor::Op::Send,
                packetflow::PacketParts {
                    id: Some(packet_id.into()),
                    data: Some(json!({"type": "increment", "by": 5})),
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let first = packetflow_tests::ChildNode::start(FAULT_NODE, &["hub", "--actor-store", store]);
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&first.url()).await.unwrap();
    for n in 1..=3 {
        let answer = client.reactor().submit(increment(&format!("inc-{n}"))).await;
        assert_eq!(answer.outcome.unwrap(), json!({"value": 5 * n}));
    }
    // Acknowledged: killed with no chance to flush anything more.
    first.kill();
    client.stop().await;

    let second = packetflow_tests::ChildNode::start(FAULT_NODE, &["hub", "--actor-store", store]);
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&second.url()).await.unwrap();
    // The client never saw inc-3's answer, say, and retries it: answered
    // from the stored window, not applied again.
    let repeat = client.reactor().submit(increment("inc-3")).await;
    assert_eq!(repeat.outcome.unwrap(), json!({"value": 15}));
    let read = client.reactor().submit(
        ActorRef::new("counter", "k").unwrap().packet(packetflow::actor::Op::Send, json!({"type": "get"})),
    );
    assert_eq!(read.await.outcome.unwrap(), json!({"value": 15}));
    client.stop().await;
    second.kill();
}
