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

/// Each actor's count after one more increment through `via`.
async fn increment_all(via: &Node, ids: &[String]) -> Vec<i64> {
    let mut values = Vec::new();
    for id in ids {
        let actor = ActorRef::new("counter", id).unwrap();
        let value = via.reactor().actors().send(&actor, json!({"type": "increment"})).await.unwrap();
        values.push(value["value"].as_i64().unwrap());
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_hosts_leaves_no_stale_copy_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ActorStore> = Arc::new(FileStore::open(dir.path().join("actors.redb")).unwrap());
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let (a, ra) = host("a", &store, &hub_url).await;
    until_hosts(&hub, 1).await;
    let ids: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    increment_all(&hub, &ids).await;
    assert_eq!(increment_all(&hub, &ids).await, vec![2; ids.len()]);
    assert_eq!(ra.actors().active_ids("counter").len(), ids.len(), "A alone holds them all");

    // B joins: A lets go of what it held; each actor comes back from the
    // store on its owner, A or B.
    let (b, rb) = host("b", &store, &hub_url).await;
    until_hosts(&a, 2).await;
    until_hosts(&hub, 2).await;
    packetflow_tests::until("A let go of its actors", || ra.actors().active_ids("counter").is_empty()).await;
    assert_eq!(increment_all(&hub, &ids).await, vec![3; ids.len()]);
    let placed = homes(&[&ra, &rb], &ids);
    assert!(placed.iter().all(|h| h.len() == 1), "each actor on one node: {placed:?}");
    assert!(placed.iter().any(|h| h[0] == 1), "B owns some: {placed:?}");

    // B leaves: A serves B's actors again from the store (B's turns), not
    // from a copy it held before B came.
    b.stop().await;
    until_hosts(&a, 1).await;
    until_hosts(&hub, 1).await;
    assert_eq!(increment_all(&hub, &ids).await, vec![4; ids.len()]);
    for n in [a, hub] {
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

/// Keeps the numbers it is told, in the order its turns see them.
fn log() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, _: &packetflow::ActorContext| {
        if kind == "add" {
            state["seen"].as_array_mut().unwrap().push(message["n"].clone());
        }
        Ok(Reply::Value(state.clone()))
    })
    .with_initial_state(json!({"seen": []}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_to_an_actor_on_another_node_run_in_the_order_they_were_made() {
    let (hub, hub_addr) = node("hub", NodeConfig::default()).await;
    let hub_url = url(hub_addr);
    let mut hosts = Vec::new();
    for name in ["a", "b"] {
        let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
        reactor.actors().register("log", log()).unwrap();
        let (node, _) = node_with(reactor.clone(), NodeConfig::default()).await;
        node.connect(&hub_url).await.unwrap();
        hosts.push((node, reactor));
    }
    for (node, _) in &hosts {
        let mut routes = node.watch_routes();
        while node.actor_hosts("log").len() != 2 {
            tokio::time::timeout(WAIT, routes.changed()).await.expect("both hosts known").unwrap();
        }
    }
    // An actor that B holds, told from A: every tell crosses the hub.
    let (ra, rb) = (&hosts[0].1, &hosts[1].1);
    let mut actor = None;
    for i in 0..64 {
        let candidate = ActorRef::new("log", &format!("l{i}")).unwrap();
        ra.actors().send(&candidate, json!({"type": "get"})).await.unwrap();
        if rb.actors().active_ids("log").contains(&candidate.id().to_owned()) {
            actor = Some(candidate);
            break;
        }
    }
    let actor = actor.expect("one of 64 actors is placed on B");
    // Told through the hub without a pause until A's direct link to B
    // (dialed once the route is busy) is up: tells are in flight through
    // the hub when it comes, and the later ones must not overtake them.
    let a = &hosts[0].0;
    let linked = || a.health()["direct"]["links"].as_array().is_some_and(|l| !l.is_empty());
    let direct_packets = || a.health()["direct"]["packets"].as_u64().unwrap_or(0);
    let tell = |from: i64, to: i64| {
        for n in from..to {
            ra.actors().tell(&actor, json!({"type": "add", "n": n})).unwrap();
        }
    };
    let until = tokio::time::Instant::now() + WAIT;
    let mut told = 0;
    while !linked() || told < 500 {
        assert!(tokio::time::Instant::now() < until, "A never linked to B ({told} told)");
        tell(told, told + 50);
        told += 50;
        tokio::task::yield_now().await;
    }
    tell(told, told + 500);
    told += 500;
    // An ask made after the tells runs after them; once they are all
    // answered, the next tells take the link.
    let get = || async { ra.actors().send(&actor, json!({"type": "get"})).await.unwrap() };
    get().await;
    packetflow_tests::until("every tell made on A is answered", || ra.stats().in_flight == 0).await;
    let before = direct_packets();
    tell(told, told + 500);
    told += 500;
    let state = get().await;
    assert!(direct_packets() > before, "the tells after the pause went on the direct link");
    let seen: Vec<i64> = state["seen"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap()).collect();
    assert_eq!(seen, (0..told).collect::<Vec<i64>>(), "the tells ran once each, in the order A made them");
    for (node, _) in hosts {
        node.stop().await;
    }
    hub.stop().await;
}
