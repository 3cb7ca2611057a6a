//! `mc:migrate` across nodes: an actor with state and messages waiting
//! moves from its home to another node of a three-node mesh (connected
//! directly, or through a hub), keeps its state, runs every message once,
//! and is reached there from every node; it moves back; a target that
//! leaves gives the actor back to its home.

use std::sync::Arc;

use packetflow::actor::{ActorStore, FileStore, MemoryStore, TurnInput, TurnOutput};
use packetflow::stdlib::StdlibPatterns;
use packetflow::{
    json, ActorRef, ActorType, Node, NodeConfig, Packet, Priority, Reactor, ReactorConfig, Reply, Value,
};
use packetflow_tests::{node, node_with, until, url, WAIT};
use tokio::sync::Semaphore;

/// The type under test: `add {n}` appends `n` to the state's `seen`;
/// `hold` waits until the test lets it go (so that messages queue behind
/// it); `get` answers `seen` too. Every answer names the node that ran the
/// turn and counts what it saw.
fn ledger(node: &str, gate: Arc<Semaphore>) -> ActorType {
    let node = node.to_owned();
    ActorType::from_async(move |input: TurnInput| {
        let (node, gate) = (node.clone(), gate.clone());
        async move {
            let TurnInput { message_type, message, mut state, .. } = input;
            match message_type.as_str() {
                "add" => state["seen"].as_array_mut().expect("seen is a list").push(message["n"].clone()),
                "hold" => gate.acquire().await.expect("the gate stays open").forget(),
                _ => {}
            }
            let count = state["seen"].as_array().map_or(0, Vec::len);
            let mut reply = json!({"node": node, "count": count});
            if message_type == "get" {
                reply["seen"] = state["seen"].clone();
            }
            Ok(TurnOutput { reply: Reply::Value(reply), state })
        }
    })
    .with_initial_state(json!({"seen": []}))
}

/// Three nodes hosting `ledger` (and `mc:migrate`), each on its own store
/// made by `store`, connected to each other or to a hub hosting nothing.
struct Mesh {
    names: [&'static str; 3],
    nodes: Vec<Node>,
    addrs: Vec<std::net::SocketAddr>,
    reactors: Vec<Reactor>,
    hub: Option<Node>,
    hub_addr: Option<std::net::SocketAddr>,
    gate: Arc<Semaphore>,
}

impl Mesh {
    async fn start(through_hub: bool, store: impl Fn() -> Arc<dyn ActorStore>) -> Mesh {
        let names = ["a", "b", "c"];
        let gate = Arc::new(Semaphore::new(0));
        let hub = if through_hub { Some(node("hub", NodeConfig::default()).await) } else { None };
        let mut nodes: Vec<Node> = Vec::new();
        let mut reactors = Vec::new();
        let mut addrs = Vec::new();
        for name in names {
            let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
            reactor.actors().set_store(store()).unwrap();
            reactor.actors().register("ledger", ledger(name, gate.clone())).unwrap();
            reactor.enable_stdlib(&StdlibPatterns::parse("mc:migrate").unwrap());
            let (n, addr) = node_with(reactor.clone(), NodeConfig::default()).await;
            match &hub {
                Some((_, hub_addr)) => n.connect(&url(*hub_addr)).await.unwrap(),
                // A full mesh: each node dials those started before it.
                None => {
                    for earlier in &addrs {
                        n.connect(&url(*earlier)).await.unwrap();
                    }
                }
            }
            addrs.push(addr);
            nodes.push(n);
            reactors.push(reactor);
        }
        let hub_addr = hub.as_ref().map(|(_, addr)| *addr);
        let mesh = Mesh { names, nodes, addrs, reactors, hub: hub.map(|(n, _)| n), hub_addr, gate };
        let all: Vec<&Node> = mesh.nodes.iter().chain(&mesh.hub).collect();
        until_hosts(&all, 3).await;
        mesh
    }

    fn id(&self, i: usize) -> String {
        self.nodes[i].node_id().to_owned()
    }

    /// An actor id whose home (its placement) is node `i`.
    async fn homed_at(&self, i: usize) -> ActorRef {
        for k in 0..200 {
            let actor = ActorRef::new("ledger", &format!("k{k}")).unwrap();
            if self.ask(2, &actor, json!({"type": "get"})).await["node"] == self.names[i] {
                return actor;
            }
        }
        panic!("no actor of 200 placed on {}", self.names[i]);
    }

    /// An actor id whose rendezvous scores rank the nodes in `order`: its
    /// home is `order[0]`, then `order[1]` once that one leaves.
    fn ranked(&self, order: [usize; 3]) -> ActorRef {
        let score = |id: &str, i: usize| {
            xxhash_rust::xxh3::xxh3_64(format!("ledger/{id}\0{}", self.nodes[i].node_id()).as_bytes())
        };
        (0..10_000)
            .map(|k| format!("r{k}"))
            .find(|id| score(id, order[0]) > score(id, order[1]) && score(id, order[1]) > score(id, order[2]))
            .map(|id| ActorRef::new("ledger", &id).unwrap())
            .expect("one id in 6 ranks the nodes so")
    }

    async fn ask(&self, via: usize, actor: &ActorRef, message: Value) -> Value {
        self.reactors[via].actors().send(actor, message).await.unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Submits `mc:migrate` of `actor` to node `to` through node `via`.
    async fn migrate(&self, via: usize, actor: &ActorRef, to: &str) -> Result<Value, packetflow::PfError> {
        let data = json!({"actor": {"type": actor.actor_type(), "id": actor.id()}, "to": to});
        let packet = Packet::build("mc", "migrate", data).unwrap().with_priority(Priority::new(10).unwrap());
        self.reactors[via].submit(packet).await.outcome
    }

    /// Which nodes hold `actor` in memory.
    fn holders(&self, actor: &ActorRef) -> Vec<&'static str> {
        (0..3)
            .filter(|i| self.reactors[*i].actors().active_ids("ledger").iter().any(|id| id == actor.id()))
            .map(|i| self.names[i])
            .collect()
    }

    async fn stop(self) {
        for n in self.nodes.into_iter().chain(self.hub) {
            n.stop().await;
        }
    }
}

/// The numbers the actor saw, in the order it saw them.
fn seen(state: &Value) -> Vec<i64> {
    state["seen"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap()).collect()
}

async fn moves_with_its_state_and_waiting_messages(through_hub: bool) {
    let mesh = Mesh::start(through_hub, || Arc::new(MemoryStore::new())).await;
    let (a, b, c) = (0, 1, 2);
    let actor = mesh.homed_at(a).await;
    for n in 0..5 {
        mesh.ask(c, &actor, json!({"type": "add", "n": n})).await;
    }

    // A turn holds the actor on A while messages queue behind it: tells
    // made on A (in the mailbox when each returns), asks from C (in flight
    // on A once they arrive), and the move, which outranks them.
    let held = {
        let ra = mesh.reactors[a].clone();
        let actor = actor.clone();
        tokio::spawn(async move { ra.actors().send(&actor, json!({"type": "hold"})).await })
    };
    until("the hold runs", || mesh.reactors[a].stats().in_flight == 1).await;
    for n in 5..55 {
        mesh.reactors[a].actors().tell(&actor, json!({"type": "add", "n": n})).unwrap();
    }
    let asks: Vec<_> = (55..105)
        .map(|n| {
            let (rc, actor) = (mesh.reactors[c].clone(), actor.clone());
            tokio::spawn(async move { rc.actors().send(&actor, json!({"type": "add", "n": n})).await })
        })
        .collect();
    let moving = {
        let (rc, to) = (mesh.reactors[c].clone(), mesh.id(b));
        let data = json!({"actor": {"type": "ledger", "id": actor.id()}, "to": to});
        let packet = Packet::build("mc", "migrate", data).unwrap().with_priority(Priority::new(10).unwrap());
        tokio::spawn(async move { rc.submit(packet).await.outcome })
    };
    until("the asks and the move wait on A", || mesh.reactors[a].stats().in_flight == 1 + 50 + 1).await;
    mesh.gate.add_permits(1);

    let moved = moving.await.unwrap().expect("the move succeeds");
    assert_eq!(moved, json!({"from": mesh.id(a), "to": mesh.id(b)}));
    held.await.unwrap().expect("the hold ran on A");
    for ask in asks {
        let answer = ask.await.unwrap().expect("every ask waiting on A is answered");
        assert_eq!(answer["node"], "b", "a message that waited on A ran on B: {answer}");
    }
    assert_eq!(mesh.holders(&actor), ["b"], "the actor is on B alone");

    // Later messages reach it on B from every node: from C and A through
    // its home A, from B itself (placed on A, sent back to B).
    for (i, via) in [c, a, b, c].into_iter().enumerate() {
        let answer = mesh.ask(via, &actor, json!({"type": "add", "n": 105 + i})).await;
        assert_eq!(answer["node"], "b", "from {}: {answer}", mesh.names[via]);
    }
    let state = mesh.ask(c, &actor, json!({"type": "get"})).await;
    assert_eq!((state["node"].clone(), state["count"].clone()), (json!("b"), json!(109)), "{state}");
    // Each message ran once; the tells made on A kept their order.
    let order = seen(&state);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..109).collect::<Vec<i64>>(), "every message ran exactly once");
    let tells: Vec<i64> = order.iter().copied().filter(|n| (5..55).contains(n)).collect();
    assert_eq!(tells, (5..55).collect::<Vec<i64>>(), "the tells ran in the order they were made");
    assert_eq!(mesh.reactors[a].actors().stats()[0].tells_failed, 0);
    let listed_on_a = mesh.reactors[a].actors().list("ledger").await.unwrap();
    assert!(!listed_on_a.iter().any(|id| id == actor.id()), "A lists what it handed on: {listed_on_a:?}");

    // Moving it to the node it is on changes nothing; an unknown node is PF404.
    assert_eq!(
        mesh.migrate(a, &actor, &mesh.id(b)).await.unwrap(),
        json!({"from": mesh.id(b), "to": mesh.id(b)})
    );
    let unknown = mesh.migrate(c, &actor, "nowhere").await.unwrap_err();
    assert_eq!(unknown.code, "PF404", "{unknown:?}");
    assert!(unknown.message.contains("no node \"nowhere\" is known"), "{unknown:?}");

    // Back home: from B to A, with its state; messages reach it on A.
    assert_eq!(
        mesh.migrate(c, &actor, &mesh.id(a)).await.unwrap(),
        json!({"from": mesh.id(b), "to": mesh.id(a)})
    );
    for via in [c, b, a] {
        let answer = mesh.ask(via, &actor, json!({"type": "get"})).await;
        assert_eq!((answer["node"].clone(), answer["count"].clone()), (json!("a"), json!(109)));
    }
    assert_eq!(mesh.holders(&actor), ["a"]);

    // And on to C, by way of a move asked on B.
    assert_eq!(
        mesh.migrate(b, &actor, &mesh.id(c)).await.unwrap(),
        json!({"from": mesh.id(a), "to": mesh.id(c)})
    );
    let answer = mesh.ask(b, &actor, json!({"type": "add", "n": 109})).await;
    assert_eq!((answer["node"].clone(), answer["count"].clone()), (json!("c"), json!(110)));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_moves_between_directly_connected_nodes_with_its_state_and_waiting_messages() {
    moves_with_its_state_and_waiting_messages(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_moves_between_nodes_connected_through_a_hub() {
    moves_with_its_state_and_waiting_messages(true).await;
}

/// Waits until each of `nodes` knows `count` hosts of `ledger`.
async fn until_hosts(nodes: &[&Node], count: usize) {
    for n in nodes {
        let mut routes = n.watch_routes();
        while n.actor_hosts("ledger").len() != count {
            tokio::time::timeout(WAIT, routes.changed()).await.expect("the hosts settle").unwrap();
        }
    }
}

/// Moves an actor homed on A to B, runs `adds` turns there, stops B, and
/// returns what the actor answers next (from C) and which nodes other
/// than A and B hold it (none should).
async fn target_leaves(mesh: Mesh, adds: i64) -> (Value, Vec<&'static str>) {
    let (a, b, c) = (0, 1, 2);
    let actor = mesh.homed_at(a).await;
    mesh.ask(c, &actor, json!({"type": "add", "n": -1})).await;
    assert_eq!(
        mesh.migrate(c, &actor, &mesh.id(b)).await.unwrap(),
        json!({"from": mesh.id(a), "to": mesh.id(b)})
    );
    for n in 0..adds {
        assert_eq!(mesh.ask(c, &actor, json!({"type": "add", "n": n})).await["node"], "b");
    }
    mesh.nodes[b].stop().await;
    until_hosts(&[&mesh.nodes[a], &mesh.nodes[c]], 2).await;
    let answer = mesh.ask(c, &actor, json!({"type": "get"})).await;
    // B's reactor, off the network, may still have it in memory; and A
    // may have put it out of memory already, idle, as the change of hosts
    // reached it after the answer (docs/protocol.md, "No stale copies"): what
    // matters is that no node but A holds it.
    let holders = mesh.holders(&actor).into_iter().filter(|n| *n != "b" && *n != "a").collect();
    mesh.stop().await;
    (answer, holders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_leaves_gives_the_actor_back_to_its_home() {
    // Each node on its own store: the state left with B, so the home starts
    // the actor over, as a new owner does when an owner leaves.
    let (answer, holders) = target_leaves(Mesh::start(false, || Arc::new(MemoryStore::new())).await, 3).await;
    assert_eq!(answer, json!({"node": "a", "count": 0, "seen": []}));
    assert!(holders.is_empty(), "only A holds it: {holders:?}");

    // A durable store the nodes share: the home takes the actor back with
    // every turn B committed.
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ActorStore> = Arc::new(FileStore::open(dir.path().join("actors.redb")).unwrap());
    let (answer, holders) = target_leaves(Mesh::start(false, || shared.clone()).await, 3).await;
    assert_eq!(answer, json!({"node": "a", "count": 4, "seen": [-1, 0, 1, 2]}));
    assert!(holders.is_empty(), "only A holds it: {holders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarding_entry_outlives_its_home_with_a_store_the_nodes_share() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ActorStore> = Arc::new(FileStore::open(dir.path().join("actors.redb")).unwrap());
    let mesh = Mesh::start(false, || shared.clone()).await;
    let (a, b, c) = (0, 1, 2);
    let actor = mesh.homed_at(a).await;
    mesh.migrate(c, &actor, &mesh.id(b)).await.unwrap();
    mesh.ask(c, &actor, json!({"type": "add", "n": 1})).await;

    // The home leaves, and a node with another id joins on the same store:
    // whichever node owns the actor now finds the entry and sends it on to
    // B (or is B), so the actor stays where it was moved, with its state.
    mesh.nodes[a].stop().await;
    until_hosts(&[&mesh.nodes[b], &mesh.nodes[c]], 2).await;
    let answer = mesh.ask(c, &actor, json!({"type": "add", "n": 2})).await;
    assert_eq!((answer["node"].clone(), answer["count"].clone()), (json!("b"), json!(2)), "{answer}");
    let reactor = Reactor::new(ReactorConfig { name: "a2".into(), ..ReactorConfig::default() });
    reactor.actors().set_store(shared.clone()).unwrap();
    reactor.actors().register("ledger", ledger("a2", mesh.gate.clone())).unwrap();
    let (a2, _) = node_with(reactor.clone(), NodeConfig::default()).await;
    a2.connect(&url(mesh.addrs[c])).await.unwrap();
    a2.connect(&url(mesh.addrs[b])).await.unwrap();
    until_hosts(&[&a2, &mesh.nodes[b], &mesh.nodes[c]], 3).await;
    for via in [c, b] {
        let answer = mesh.ask(via, &actor, json!({"type": "get"})).await;
        assert_eq!((answer["node"].clone(), answer["count"].clone()), (json!("b"), json!(2)), "{answer}");
    }
    let answer = reactor.actors().send(&actor, json!({"type": "get"})).await.unwrap();
    assert_eq!(answer["node"], "b");
    a2.stop().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_that_end_on_a_node_that_leaves_leave_no_loop_behind() {
    // A -> B -> C -> A: B and C keep entries for messages still on their
    // way. A (home and last holder) leaves, and B owns the actor then: B's
    // entry leads to C, whose entry leads to A. Each message after that is
    // answered, always by the same node, which starts the actor over.
    let mesh = Mesh::start(false, || Arc::new(MemoryStore::new())).await;
    let (a, b, c) = (0, 1, 2);
    let actor = mesh.ranked([a, b, c]);
    assert_eq!(
        mesh.ask(c, &actor, json!({"type": "get"})).await["node"],
        "a",
        "placed by the documented hash"
    );
    for (via, to) in [(c, b), (a, c), (b, a)] {
        mesh.migrate(via, &actor, &mesh.id(to)).await.unwrap();
        assert_eq!(mesh.ask(via, &actor, json!({"type": "add", "n": to})).await["node"], mesh.names[to]);
    }
    mesh.nodes[a].stop().await;
    until_hosts(&[&mesh.nodes[b], &mesh.nodes[c]], 2).await;
    let first = mesh.ask(b, &actor, json!({"type": "add", "n": 7})).await;
    assert_eq!(first["count"], 1, "started over: {first}");
    for (n, via) in [b, c, b, c].into_iter().enumerate() {
        let answer = mesh.ask(via, &actor, json!({"type": "add", "n": n})).await;
        assert_eq!(answer["node"], first["node"], "one node serves it: {answer}");
        assert_eq!(answer["count"], n + 2, "{answer}");
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_packet_runs_once_wherever_the_actor_moved() {
    let mesh = Mesh::start(true, || Arc::new(MemoryStore::new())).await;
    let (a, b, c) = (0, 1, 2);
    let actor = mesh.homed_at(a).await;
    let add = |packet_id: &str, n: i64| {
        let parts = packetflow::PacketParts {
            id: Some(packet_id.into()),
            data: Some(json!({"type": "add", "n": n})),
            ..Default::default()
        };
        actor.packet_from(packetflow::actor::Op::Send, parts).unwrap()
    };
    // One packet runs on A, the other (sent from B, through A) on B after
    // the move; each is then sent again, from another node.
    let first = mesh.reactors[c].submit(add("before-move", 1)).await.outcome.unwrap();
    assert_eq!(first, json!({"node": "a", "count": 1}));
    mesh.migrate(c, &actor, &mesh.id(b)).await.unwrap();
    let second = mesh.reactors[b].submit(add("after-move", 2)).await.outcome.unwrap();
    assert_eq!(second, json!({"node": "b", "count": 2}));
    for (via, packet_id, n, answer) in [(a, "before-move", 1, &first), (c, "after-move", 2, &second)] {
        let again = mesh.reactors[via].submit(add(packet_id, n)).await.outcome.unwrap();
        assert_eq!(&again, answer, "{packet_id} answered from memory");
    }
    // And after moving back home.
    mesh.migrate(b, &actor, &mesh.id(a)).await.unwrap();
    let again = mesh.reactors[c].submit(add("after-move", 2)).await.outcome.unwrap();
    assert_eq!(again, second, "remembered turns moved back with the actor");
    let state = mesh.ask(c, &actor, json!({"type": "get"})).await;
    assert_eq!(state, json!({"node": "a", "count": 2, "seen": [1, 2]}));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_from_a_client_is_refused_where_it_enters() {
    let mesh = Mesh::start(true, || Arc::new(MemoryStore::new())).await;
    let actor = mesh.homed_at(0).await;
    mesh.ask(2, &actor, json!({"type": "add", "n": 1})).await;
    let hub_url = url(mesh.hub_addr.unwrap());
    let forged = |seq: u64, at: &str| {
        json!({"type": "submit", "seq": seq, "payload": {
            "version": "1.0", "id": format!("forged-{seq}"), "group": "rm", "element": "actor.ledger",
            "data": {"record": {"state": {"seen": [666]}, "recent": []}, "from": "x"},
            "metadata": {"pf.actor_id": actor.id(), "pf.actor_op": "adopt", "pf.actor_at": at}}})
    };
    // A seed-spec client of the hub (which hosts nothing, and would relay
    // it), and of a node hosting the type.
    for (seq, target) in [(1, hub_url), (2, url(mesh.addrs[1]))] {
        let mut client = packetflow_tests::RawPeer::connect(&target).await;
        client.send_json(&forged(seq, &mesh.id(1))).await;
        let answer = client.recv_open().await;
        assert_eq!(answer["payload"]["error"]["code"], "PF403", "{answer}");
        client.close().await;
    }
    let state = mesh.ask(2, &actor, json!({"type": "get"})).await;
    assert_eq!(state, json!({"node": "a", "count": 1, "seen": [1]}), "nothing was handed over");
    mesh.stop().await;
}
