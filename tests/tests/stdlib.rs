//! The stateful and collective standard elements across nodes:
//! `co:broadcast` calls every node serving a key, a barrier's parties sit
//! on different nodes, a gate on one node opens to a signal fired on
//! another (through a hub), a timer survives the restart of its mesh, a
//! lock has one holder at a time across three nodes, a lease and a lock
//! end with their holder's connection, a lock's fence survives a restart,
//! a cache key set on one node is read and watched from the others.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use packetflow::actor::{ActorStore, FileStore};
use packetflow::stdlib::StdlibPatterns;
use packetflow::{json, Group, Node, NodeConfig, Packet, Reactor, ReactorConfig, Value};
use packetflow_tests::{node, node_with, url, WAIT};

/// Waits until `test` holds, re-checking whenever `node`'s routes change.
async fn until(node: &Node, what: &str, test: impl Fn() -> bool) {
    let mut routes = node.watch_routes();
    while !test() {
        tokio::time::timeout(WAIT, routes.changed())
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
            .unwrap();
    }
}

/// Three nodes hosting `patterns`, `b` and `c` dialed into `a` (their
/// hub); returns once each knows all three hosts of `actor_types`.
async fn mesh(patterns: &str, actor_types: &[&str]) -> [Node; 3] {
    let patterns = StdlibPatterns::parse(patterns).unwrap();
    let (a, a_addr) = node("a", NodeConfig::default()).await;
    let (b, _) = node("b", NodeConfig::default()).await;
    let (c, _) = node("c", NodeConfig::default()).await;
    for n in [&a, &b, &c] {
        n.reactor().enable_stdlib(&patterns);
    }
    b.connect(&url(a_addr)).await.unwrap();
    c.connect(&url(a_addr)).await.unwrap();
    for n in [&a, &b, &c] {
        for actor_type in actor_types {
            until(n, "every node knows the three hosts", || n.actor_hosts(actor_type).len() == 3).await;
        }
    }
    [a, b, c]
}

async fn call(node: &Node, key: &str, data: Value) -> Result<Value, packetflow::PfError> {
    let (group, element) = key.split_once(':').unwrap();
    node.reactor().call(Packet::build(group, element, data).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_calls_this_node_and_every_peer_serving_the_key() {
    let (a, a_addr) = node("a", NodeConfig::default()).await;
    let (b, _) = node("b", NodeConfig::default()).await;
    let (c, _) = node("c", NodeConfig::default()).await;
    a.reactor().enable_stdlib(&StdlibPatterns::parse("co:broadcast").unwrap());
    for (n, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        n.reactor().register_sync("df", "whoami", move |d, _| Ok(json!({"me": name, "got": d}))).unwrap();
    }
    // A key only one peer serves.
    c.reactor().register_sync("df", "only_c", |_, _| Ok(json!("c"))).unwrap();
    b.connect(&url(a_addr)).await.unwrap();
    c.connect(&url(a_addr)).await.unwrap();
    let peers_serving = |a: &Node| {
        let health = a.health();
        let peers = health["peers"].as_array().cloned().unwrap_or_default();
        peers
            .iter()
            .filter(|p| p["handlers"].as_array().is_some_and(|h| h.contains(&json!("df:whoami"))))
            .count()
    };
    until(&a, "both peers announced df:whoami", || peers_serving(&a) == 2).await;

    let answer = call(&a, "co:broadcast", json!({"to": "df:whoami", "data": 5})).await.unwrap();
    let results = answer["results"].as_object().unwrap();
    let expected: Vec<(String, Value)> = [(&a, "a"), (&b, "b"), (&c, "c")]
        .iter()
        .map(|(n, name)| (n.node_id().to_owned(), json!({"ok": true, "value": {"me": name, "got": 5}})))
        .collect();
    let mut got: Vec<(String, Value)> = results.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut expected = expected;
    got.sort_by(|x, y| x.0.cmp(&y.0));
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, expected, "{answer}");

    // Only the nodes serving the key are called: here, none but one peer.
    let answer = call(&a, "co:broadcast", json!({"to": "df:only_c"})).await.unwrap();
    assert_eq!(answer, json!({"results": {c.node_id(): {"ok": true, "value": "c"}}}));
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barriers_parties_on_three_nodes_go_together() {
    let nodes = mesh("co:sync", &["pf.waiter", "pf.barrier"]).await;
    for round in 0..2 {
        let parties: Vec<_> = nodes
            .iter()
            .map(|n| {
                let reactor = n.reactor().clone();
                tokio::spawn(async move {
                    let data = json!({"barrier": "deploy", "parties": 3});
                    reactor.call(Packet::build("co", "sync", data).unwrap()).await
                })
            })
            .collect();
        for party in parties {
            let answer = tokio::time::timeout(WAIT, party).await.unwrap().unwrap();
            assert_eq!(answer, Ok(json!({"arrived": 3})), "round {round}");
        }
    }
    // Two parties of three, on two nodes, time out together.
    let mut waits = Vec::new();
    for n in &nodes[1..] {
        let mut packet = Packet::build("co", "sync", json!({"barrier": "short", "parties": 3})).unwrap();
        packet.timeout_ms = Some(300);
        let reactor = n.reactor().clone();
        waits.push(tokio::spawn(async move { reactor.submit(packet).await }));
    }
    for wait in waits {
        let result = tokio::time::timeout(WAIT, wait).await.unwrap().unwrap();
        assert_eq!(result.err().map(|e| e.code.as_str()), Some("PF408"), "{result:?}");
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_on_one_node_opens_to_a_signal_fired_on_another() {
    let [a, b, c] = mesh("cf:gate,ed:signal", &["pf.waiter", "pf.signal"]).await;
    let gate = {
        let reactor = b.reactor().clone();
        tokio::spawn(async move {
            reactor.call(Packet::build("cf", "gate", json!({"signal": "go"})).unwrap()).await
        })
    };
    // The gate registers with the signal's owner a moment after it starts:
    // fire (from c, through the hub) until it is reached.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = call(&c, "ed:signal", json!({"name": "go", "payload": "from c"})).await.unwrap();
        if answer["delivered"] == json!(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gate was never reached: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let opened = tokio::time::timeout(WAIT, gate).await.unwrap().unwrap();
    assert_eq!(opened, Ok(json!("from c")));
    assert!(a.can_route(Group::ResourceMgmt, "actor.pf.waiter"));
    for n in [a, b, c] {
        n.stop().await;
    }
}

/// Three nodes on one shared `store` hosting `ed:timer`, each counting its
/// `df:tick` calls in `ticks`; `b` and `c` dialed into `a`. Returns once
/// each knows the three hosts of `pf.timer`.
async fn timer_mesh(store: &Arc<dyn ActorStore>, ticks: &Arc<AtomicUsize>) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut hub = None;
    for name in ["a", "b", "c"] {
        let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
        reactor.actors().set_store(store.clone()).unwrap();
        let counted = ticks.clone();
        reactor
            .register_sync("df", "tick", move |_, _| Ok(json!(counted.fetch_add(1, Ordering::SeqCst))))
            .unwrap();
        // Enabled before connecting, as a restarted node does: each node
        // re-arms what the store holds, and placement picks one to fire it.
        reactor.enable_stdlib(&StdlibPatterns::parse("ed:timer").unwrap());
        let (node, addr) = node_with(reactor, NodeConfig::default()).await;
        match &hub {
            None => hub = Some(url(addr)),
            Some(hub) => node.connect(hub).await.unwrap(),
        }
        nodes.push(node);
    }
    for n in &nodes {
        until(n, "every node knows the three timer hosts", || n.actor_hosts("pf.timer").len() == 3).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_after_its_mesh_restarts_on_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let ticks = Arc::new(AtomicUsize::new(0));
    {
        let store: Arc<dyn ActorStore> = Arc::new(FileStore::open(&path).unwrap());
        let nodes = timer_mesh(&store, &ticks).await;
        let data = json!({"after_ms": 1500, "do": {"group": "df", "element": "tick"}});
        let answer = call(&nodes[1], "ed:timer", data).await.unwrap();
        assert!(answer["timer_id"].is_string(), "{answer}");
        for n in nodes {
            n.stop().await;
        }
    }
    assert_eq!(ticks.load(Ordering::SeqCst), 0, "stopped before the timer was due");
    // The same store, opened again once the stopped nodes let it go.
    let deadline = tokio::time::Instant::now() + WAIT;
    let store: Arc<dyn ActorStore> = loop {
        match FileStore::open(&path) {
            Ok(store) => break Arc::new(store),
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{}", e.message),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let nodes = timer_mesh(&store, &ticks).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ticks.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the timer never fired after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Three nodes re-armed it; its owner let it fire once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_has_one_holder_at_a_time_across_three_nodes_under_growing_tokens() {
    let nodes = mesh("rm:lock", &["pf.waiter", "pf.lock"]).await;
    let held = Arc::new(AtomicBool::new(false));
    // Pushed by each holder while it holds the lock: the order of the
    // holds.
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut contenders = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let (reactor, held, tokens) = (n.reactor().clone(), held.clone(), tokens.clone());
            contenders.push(tokio::spawn(async move {
                for _ in 0..8 {
                    let data = json!({"name": "shared", "ttl_ms": 30_000, "wait_ms": 8_000});
                    let got = reactor.call(Packet::build("rm", "lock", data).unwrap()).await.unwrap();
                    assert_eq!(got["acquired"], json!(true), "{got}");
                    assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                    tokens.lock().unwrap().push(got["token"].as_u64().unwrap());
                    // Hold it across a few turns of the runtime.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    held.store(false, Ordering::SeqCst);
                    let unlock = json!({"unlock": "shared", "token": got["token"]});
                    let released = reactor.call(Packet::build("rm", "lock", unlock).unwrap()).await;
                    assert_eq!(released, Ok(json!({"released": true})));
                }
            }));
        }
    }
    for contender in contenders {
        tokio::time::timeout(WAIT * 3, contender).await.unwrap().unwrap();
    }
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 48);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens out of order: {tokens:?}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_and_a_lock_end_when_their_holders_connection_drops() {
    let (server, addr) = node("server", NodeConfig::default()).await;
    server.reactor().enable_stdlib(&StdlibPatterns::parse("rm:*").unwrap());
    let (holder, _) = node("holder", NodeConfig::default()).await;
    holder.connect(&url(addr)).await.unwrap();
    let (other, _) = node("other", NodeConfig::default()).await;
    other.connect(&url(addr)).await.unwrap();

    let lease = json!({"resource": "gpu", "capacity": 1, "ttl_ms": 600_000});
    let lease = call(&holder, "rm:alloc", lease).await.unwrap();
    assert!(lease["lease_id"].is_string(), "{lease}");
    let lock = call(&holder, "rm:lock", json!({"name": "db", "ttl_ms": 600_000})).await.unwrap();
    assert_eq!(lock["acquired"], json!(true), "{lock}");
    // Held: the other node gets neither.
    let mut short = Packet::build("rm", "alloc", json!({"resource": "gpu", "ttl_ms": 1000})).unwrap();
    short.timeout_ms = Some(200);
    let refused = other.reactor().submit(short).await;
    assert_eq!(refused.err().map(|e| e.code.as_str()), Some("PF408"), "{refused:?}");
    let tried = call(&other, "rm:lock", json!({"name": "db", "ttl_ms": 1000})).await.unwrap();
    assert_eq!(tried["acquired"], json!(false));

    // The holder goes: its connection to the server closes, and the server
    // gives back what was granted over it, long before the TTLs.
    let waiting_lease = {
        let reactor = other.reactor().clone();
        let data = json!({"resource": "gpu", "ttl_ms": 1000});
        tokio::spawn(async move { reactor.call(Packet::build("rm", "alloc", data).unwrap()).await })
    };
    let waiting_lock = {
        let reactor = other.reactor().clone();
        let data = json!({"name": "db", "ttl_ms": 1000, "wait_ms": 20_000});
        tokio::spawn(async move { reactor.call(Packet::build("rm", "lock", data).unwrap()).await })
    };
    holder.stop().await;
    let got = tokio::time::timeout(WAIT, waiting_lease).await.unwrap().unwrap().unwrap();
    assert!(got["lease_id"].is_string() && got["lease_id"] != lease["lease_id"], "{got}");
    let got = tokio::time::timeout(WAIT, waiting_lock).await.unwrap().unwrap().unwrap();
    assert_eq!(got["acquired"], json!(true), "{got}");
    assert!(got["token"].as_u64() > lock["token"].as_u64(), "{got} after {lock}");
    for n in [server, other] {
        n.stop().await;
    }
}

/// A node on `store` hosting `rm:lock`, and a client node dialed into it.
async fn lock_server(store: Arc<dyn ActorStore>) -> (Node, Node) {
    let reactor = Reactor::new(ReactorConfig { name: "server".into(), ..ReactorConfig::default() });
    reactor.actors().set_store(store).unwrap();
    reactor.enable_stdlib(&StdlibPatterns::parse("rm:lock").unwrap());
    let (server, addr) = node_with(reactor, NodeConfig::default()).await;
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&url(addr)).await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locks_fence_survives_a_restart_on_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actors.redb");
    let last = {
        let (server, client) = lock_server(Arc::new(FileStore::open(&path).unwrap())).await;
        let mut last = 0;
        for _ in 0..3 {
            let got = call(&client, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await.unwrap();
            let token = got["token"].as_u64().unwrap();
            assert!(token > last, "{got} after {last}");
            last = token;
            let unlock = json!({"unlock": "db", "token": token});
            assert_eq!(call(&client, "rm:lock", unlock).await, Ok(json!({"released": true})));
        }
        client.stop().await;
        server.stop().await;
        last
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let store: Arc<dyn ActorStore> = loop {
        match FileStore::open(&path) {
            Ok(store) => break Arc::new(store),
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{}", e.message),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let (server, client) = lock_server(store).await;
    // The fence came back: the last token is known as given (and ended),
    // not taken for one never given (PF409), as by a lock with no state.
    let again = call(&client, "rm:lock", json!({"unlock": "db", "token": last})).await;
    assert_eq!(again, Ok(json!({"released": false})));
    let got = call(&client, "rm:lock", json!({"name": "db", "ttl_ms": 60_000})).await.unwrap();
    let token = got["token"].as_u64().unwrap();
    assert!(token > last, "{got} after {last}");
    let stale = call(&client, "rm:lock", json!({"unlock": "db", "token": last})).await;
    assert_eq!(stale.err().map(|e| e.code), Some("PF409".to_owned()));
    let never = call(&client, "rm:lock", json!({"unlock": "db", "token": token + 1})).await;
    assert_eq!(never.err().map(|e| e.code), Some("PF409".to_owned()));
    for n in [client, server] {
        n.stop().await;
    }
}

/// Three nodes hosting `rm:cache` and `ed:watch`, each counting its
/// `df:load` calls in `loads` (answering `{"loaded": data}`).
async fn cache_mesh(loads: &Arc<AtomicUsize>) -> [Node; 3] {
    let nodes = mesh("rm:cache,ed:watch", &["pf.cache"]).await;
    for n in &nodes {
        let loads = loads.clone();
        n.reactor()
            .register_sync("df", "load", move |d, _| {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"loaded": d}))
            })
            .unwrap();
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_key_set_on_one_node_is_read_on_the_others() {
    let loads = Arc::new(AtomicUsize::new(0));
    let [a, b, c] = cache_mesh(&loads).await;
    let keys: Vec<String> = (0..20).map(|i| format!("user:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let set = call(&b, "rm:cache", json!({"op": "set", "key": key, "value": {"n": i}})).await.unwrap();
        assert_eq!(set["hit"], false, "{set}");
    }
    for n in [&a, &b, &c] {
        for (i, key) in keys.iter().enumerate() {
            let got = call(n, "rm:cache", json!({"op": "get", "key": key})).await.unwrap();
            assert_eq!((got["hit"].clone(), got["value"].clone()), (json!(true), json!({"n": i})), "{key}");
        }
    }
    // Each key is held once, by its owner, and the keys spread over the nodes.
    let held: Vec<u64> = [&a, &b, &c].iter().map(|n| n.reactor().cache_stats().entries).collect();
    assert_eq!(held.iter().sum::<u64>(), 20, "{held:?}");
    assert!(held.iter().filter(|h| **h > 0).count() >= 2, "{held:?}");
    // A delete on one node is seen on another.
    let deleted = call(&c, "rm:cache", json!({"op": "del", "key": "user:3"})).await.unwrap();
    assert_eq!(deleted["value"], json!({"n": 3}));
    let got = call(&a, "rm:cache", json!({"op": "get", "key": "user:3"})).await.unwrap();
    assert_eq!(got["hit"], false);

    // Misses of one key on two nodes at once run one step, at its owner.
    let request = json!({"op": "get_or_call", "key": "report", "ttl_ms": 60_000,
        "step": {"group": "df", "element": "load"}});
    let (from_a, from_c) = tokio::join!(call(&a, "rm:cache", request.clone()), call(&c, "rm:cache", request));
    let (from_a, from_c) = (from_a.unwrap(), from_c.unwrap());
    assert_eq!(from_a["value"], json!({"loaded": {"key": "report"}}));
    assert_eq!(
        (from_a["value"].clone(), from_a["revision"].clone()),
        (from_c["value"].clone(), from_c["revision"].clone())
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let got = call(&b, "rm:cache", json!({"op": "get", "key": "report"})).await.unwrap();
    assert_eq!(got["value"], json!({"loaded": {"key": "report"}}));
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_registered_on_one_node_fires_for_a_set_on_another() {
    let loads = Arc::new(AtomicUsize::new(0));
    let [a, b, c] = cache_mesh(&loads).await;
    // `df:seen` is served by b only: the key's owner calls it over the mesh.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    b.reactor()
        .register_sync("df", "seen", move |d, _| {
            let _ = tx.send(d.clone());
            Ok(Value::Null)
        })
        .unwrap();
    for n in [&a, &c] {
        until(n, "df:seen is announced", || n.can_route(Group::DataFlow, "seen")).await;
    }
    let mut watch_ids = Vec::new();
    for i in 0..3 {
        let key = format!("config:{i}");
        let data = json!({"key": key, "do": {"group": "df", "element": "seen"}});
        let watch = call(&b, "ed:watch", data).await.unwrap();
        watch_ids.push(watch["watch_id"].as_str().unwrap().to_owned());
        let set = call(&c, "rm:cache", json!({"op": "set", "key": key, "value": i})).await.unwrap();
        let called =
            tokio::time::timeout(WAIT, seen.recv()).await.expect("the watch was not called").unwrap();
        assert_eq!(called, json!({"key": key, "value": i, "revision": set["revision"], "change": "set"}));
    }
    // Held where the keys live: on their owners, together three watches.
    let watches: u64 = [&a, &b, &c].iter().map(|n| n.reactor().cache_stats().watches).sum();
    assert_eq!(watches, 3);
    let deleted = call(&a, "rm:cache", json!({"op": "del", "key": "config:0"})).await.unwrap();
    let called = tokio::time::timeout(WAIT, seen.recv()).await.expect("the watch was not called").unwrap();
    assert_eq!(
        called,
        json!({"key": "config:0", "value": null, "revision": deleted["revision"], "change": "del"})
    );
    // Cancelled from another node.
    for id in &watch_ids {
        let cancelled = call(&a, "ed:watch", json!({"cancel": id})).await.unwrap();
        assert_eq!(cancelled, json!({"cancelled": true}));
    }
    let watches: u64 = [&a, &b, &c].iter().map(|n| n.reactor().cache_stats().watches).sum();
    assert_eq!(watches, 0);
    for n in [a, b, c] {
        n.stop().await;
    }
}
