//! Nodes forming a cluster over NATS (docs/protocol.md, "Membership",
//! "Actors and route keys over NATS", "Actor state in a key-value
//! bucket"), through real `nats-server` processes with JetStream on: a
//! cluster of three servers, a node on each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use packetflow::actor::{ActorRef, Op};
use packetflow::net::{NatsKvStore, NatsOptions};
use packetflow::{json, Map, Node, Packet, PacketParts, Value};
use packetflow_tests::nats_node::{bare_node as node, submit_in_time as submit};
use packetflow_tests::nats_server::NatsServer;
use packetflow_tests::{ChildNode, WAIT};
use tokio::time::{timeout, Instant};
use xxhash_rust::xxh3::xxh3_64;

const FAULT_NODE: &str = env!("CARGO_BIN_EXE_fault-node");

/// The members' heartbeat in these tests: a member that dies leaves the
/// others' views within three of them.
const HEARTBEAT: Duration = Duration::from_millis(250);

fn member_options() -> NatsOptions {
    NatsOptions { membership: true, membership_heartbeat: HEARTBEAT, ..NatsOptions::default() }
}

/// Polls `ready` every 20 ms until it holds, for at most [`WAIT`]; returns
/// how long it took.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < WAIT, "{what}: not in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Waits until every node lists exactly `members` as the cluster's live
/// members.
async fn wait_members(nodes: &[&Node], members: &[String]) {
    let mut expected = members.to_vec();
    expected.sort();
    for node in nodes {
        wait_until(&format!("{} sees {expected:?}", node.node_id()), || node.nats_members() == expected)
            .await;
    }
}

/// Waits until a plain client on every server gets an answer on each
/// node's subject (the node's PF400 for a body that is not a submit
/// frame): the server learns a subscription made through another server of
/// its cluster a moment after the member's entry may be read.
async fn wait_node_subjects(servers: &[NatsServer], ids: &[String]) {
    for server in servers {
        let client = async_nats::connect(server.url()).await.unwrap();
        for id in ids {
            let subject = format!("pf.node.{id}");
            let until = Instant::now() + WAIT;
            loop {
                let asked = timeout(WAIT, client.request(subject.clone(), "probe".into())).await;
                if matches!(asked, Ok(Ok(_))) {
                    break;
                }
                assert!(Instant::now() < until, "{subject} never answered through {}", server.name);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The member a route key belongs to: the highest rendezvous score
/// (xxh3 of the key, a zero byte and the node id).
fn route_owner<'a>(route_key: &str, ids: &'a [String]) -> &'a String {
    ids.iter().max_by_key(|id| xxh3_64(format!("{route_key}\0{id}").as_bytes())).unwrap()
}

/// The member an actor belongs to: the highest score of `type/id`, a zero
/// byte and the node id.
fn actor_owner<'a>(actor_type: &str, id: &str, ids: &'a [String]) -> &'a String {
    ids.iter().max_by_key(|node| xxh3_64(format!("{actor_type}/{id}\0{node}").as_bytes())).unwrap()
}

fn with_route_key(route_key: &str) -> Packet {
    let mut meta = Map::new();
    meta.insert("pf.route_key".into(), json!(route_key));
    Packet::build("df", "whoami", Value::Null).unwrap().with_metadata(meta)
}

/// An `increment` of counter `id` under packet id `packet_id` (the same id
/// when retried: a turn is applied at most once).
fn increment(id: &str, packet_id: &str) -> Packet {
    ActorRef::new("counter", id)
        .unwrap()
        .packet_from(
            Op::Send,
            PacketParts {
                id: Some(packet_id.into()),
                data: Some(json!({"type": "increment"})),
                ..Default::default()
            },
        )
        .unwrap()
}

/// Submits `packet` until it succeeds (a client's retry of the same
/// packet), for at most [`WAIT`]: while a member that died is noticed,
/// its actors' messages may be answered PF503 or PF408.
async fn until_answered(node: &Node, packet: &Packet) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let result = submit(node, packet.clone()).await;
        match result.outcome {
            Ok(value) => return value,
            Err(e) => assert!(Instant::now() < until, "packet {} never answered: {e:?}", packet.id),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_key_reaches_the_same_member_from_every_node() {
    let servers = NatsServer::jetstream_cluster(3).await;
    let mut nodes = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let node = node(&format!("member-{i}"));
        let id = node.node_id().to_owned();
        node.reactor().register_sync("df", "whoami", move |_, _| Ok(json!(id.clone()))).unwrap();
        node.connect_nats(&server.url(), member_options()).await.unwrap();
        nodes.push(node);
    }
    // A member serving nothing, through the second server: it sends only.
    let client = node("client");
    client.connect_nats(&servers[1].url(), member_options()).await.unwrap();
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id().to_owned()).collect();
    let mut everyone = ids.clone();
    everyone.push(client.node_id().to_owned());
    let all: Vec<&Node> = nodes.iter().chain([&client]).collect();
    wait_members(&all, &everyone).await;
    wait_node_subjects(&servers, &everyone).await;
    // stats() shows the same members, sorted.
    everyone.sort();
    for node in &all {
        let nats = node.reactor().stats().nats.expect("on NATS");
        assert_eq!(nats.members.as_ref(), Some(&everyone), "{}", node.node_id());
    }

    let mut owners = HashSet::new();
    for k in 0..24 {
        let route_key = format!("key-{k}");
        let owner = route_owner(&route_key, &ids);
        owners.insert(owner.clone());
        for from in &all {
            let answer = submit(from, with_route_key(&route_key)).await;
            assert_eq!(answer.outcome, Ok(json!(owner)), "{route_key} from {}", from.node_id());
        }
    }
    assert!(owners.len() > 1, "24 keys all on one member: {owners:?}");

    // A member that stops leaves every view at once (its entry deleted),
    // and its keys move to their next choice; the others' stay.
    let leaving = nodes.pop().unwrap();
    let left = leaving.node_id().to_owned();
    leaving.stop().await;
    let entry = bucket(&servers[0], "pf_members").await.entry(left.clone()).await.unwrap();
    assert!(
        entry.is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put),
        "a stopped member's entry is deleted as it stops"
    );
    let staying: Vec<String> = ids.iter().filter(|id| **id != left).cloned().collect();
    let mut now = staying.clone();
    now.push(client.node_id().to_owned());
    let all: Vec<&Node> = nodes.iter().chain([&client]).collect();
    wait_members(&all, &now).await;
    for k in 0..24 {
        let route_key = format!("key-{k}");
        let owner = route_owner(&route_key, &staying);
        for from in &all {
            let answer = submit(from, with_route_key(&route_key)).await;
            assert_eq!(answer.outcome, Ok(json!(owner)), "{route_key} from {} after a stop", from.node_id());
        }
    }
    for node in all {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_actors_come_back_on_the_others_with_their_state() {
    let servers = NatsServer::jetstream_cluster(3).await;
    let heartbeat_ms = HEARTBEAT.as_millis().to_string();
    let mut members: Vec<(String, ChildNode)> = servers
        .iter()
        .map(|server| {
            let child = ChildNode::start(
                FAULT_NODE,
                &["member", "--nats", &server.url(), "--heartbeat-ms", &heartbeat_ms],
            );
            let id = child.first_line.strip_prefix("ready ").expect("a member's first line").to_owned();
            (id, child)
        })
        .collect();
    let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
    let client = node("client");
    client.connect_nats(&servers[0].url(), member_options()).await.unwrap();
    let mut everyone = ids.clone();
    everyone.push(client.node_id().to_owned());
    wait_members(&[&client], &everyone).await;
    wait_node_subjects(&servers, &everyone).await;

    // Twelve counters, three increments each, each on its owner.
    let actors: Vec<String> = (0..12).map(|n| format!("c{n}")).collect();
    for id in &actors {
        for n in 1..=3 {
            let answer = until_answered(&client, &increment(id, &format!("{id}-inc-{n}"))).await;
            let owner = actor_owner("counter", id, &ids);
            assert_eq!(answer, json!({"value": n, "node": owner}), "counter {id}");
        }
    }

    // The owner of c0 is killed: no chance to say goodbye.
    let victim = actor_owner("counter", "c0", &ids).clone();
    let at = members.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, child) = members.remove(at);
    child.kill();
    let survivors: Vec<String> = ids.iter().filter(|id| **id != victim).cloned().collect();
    let mut now = survivors.clone();
    now.push(client.node_id().to_owned());
    now.sort();
    let dropped =
        wait_until("the killed member leaves the client's view", || client.nats_members() == now).await;
    // Three heartbeats (the TTL), plus the polling's and the watch's slack.
    assert!(dropped < HEARTBEAT * 3 + Duration::from_millis(500), "the dead member stayed {dropped:?}");
    println!("a killed member left the view after {dropped:?} (heartbeat {HEARTBEAT:?})");

    // Every counter goes on from its state, on its owner among the
    // survivors, the victim's included.
    for id in &actors {
        let answer = until_answered(&client, &increment(id, &format!("{id}-inc-4"))).await;
        let owner = actor_owner("counter", id, &survivors);
        assert_eq!(answer, json!({"value": 4, "node": owner}), "counter {id} after the kill");
        // A repeat of the same packet is answered from the remembered
        // turns, not applied again.
        let again = until_answered(&client, &increment(id, &format!("{id}-inc-4"))).await;
        assert_eq!(again["value"], json!(4), "counter {id}: a repeat applied twice");
    }
    client.stop().await;
    for (_, child) in members {
        child.kill();
    }
}

/// A node hosting `counter` on a [`NatsKvStore`] (its answers name the
/// node), joined as a member through `url`.
async fn kv_member(name: &str, url: &str) -> Node {
    let node = node(name);
    let actors = node.reactor().actors();
    actors.set_store(Arc::new(NatsKvStore::new())).unwrap();
    let id = node.node_id().to_owned();
    let counter = packetflow::ActorType::new(move |kind: &str, _: &Value, state: &mut Value, _: &_| {
        if kind == "increment" {
            state["value"] = json!(state["value"].as_i64().unwrap_or(0) + 1);
        }
        Ok(packetflow::Reply::Value(json!({"value": state["value"], "node": id})))
    });
    actors.register("counter", counter.with_initial_state(json!({"value": 0}))).unwrap();
    let options = NatsOptions { actor_store: true, ..member_options() };
    node.connect_nats(url, options).await.unwrap();
    node
}

/// A plain client's handle on a bucket of the cluster.
async fn bucket(server: &NatsServer, name: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client).get_key_value(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_claimed_by_a_live_member_is_served_there_and_a_stale_write_is_refused() {
    let server = NatsServer::start_jetstream().await;
    let a = kv_member("a", &server.url()).await;
    let b = kv_member("b", &server.url()).await;
    let ids = vec![a.node_id().to_owned(), b.node_id().to_owned()];
    wait_members(&[&a, &b], &ids).await;
    wait_node_subjects(std::slice::from_ref(&server), &ids).await;
    // An actor `a` owns by placement, whose activation `b` claimed first
    // (as while their views disagree): `a` sends its messages to `b`.
    let id = (0..).map(|n| format!("x{n}")).find(|x| actor_owner("counter", x, &ids) == a.node_id()).unwrap();
    let owners = bucket(&server, "pf_actor_owners").await;
    owners.create(format!("counter.{id}"), b.node_id().to_owned().into()).await.unwrap();
    let answer = until_answered(&a, &increment(&id, "claimed-1")).await;
    assert_eq!(answer, json!({"value": 1, "node": b.node_id()}));

    // `b` is the only activation; a record written behind its back (by
    // another activation) makes its next turn fail uncommitted, PF503,
    // and the actor is read again: the retry applies on what was written.
    let records = bucket(&server, "pf_actors").await;
    let written = records.entry(format!("counter.{id}")).await.unwrap().expect("the record is in the bucket");
    let mut record: Value = rmp_serde::from_slice(&written.value).unwrap();
    record["state"] = json!({"value": 10});
    records.put(format!("counter.{id}"), rmp_serde::to_vec_named(&record).unwrap().into()).await.unwrap();
    let refused = submit(&a, increment(&id, "claimed-2")).await;
    let e = refused.err().expect("a write over a newer revision is refused");
    assert_eq!(e.code, "PF503", "{e:?}");
    assert!(e.message.contains("another activation"), "{}", e.message);
    let answer = until_answered(&a, &increment(&id, "claimed-2")).await;
    assert_eq!(answer, json!({"value": 11, "node": b.node_id()}));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_without_jetstream_is_pf503_and_bad_options_are_pf400() {
    let plain = NatsServer::start().await;
    let n = node("member");
    let e = n.connect_nats(&plain.url(), member_options()).await.unwrap_err();
    assert_eq!(e.code, "PF503", "{e:?}");
    assert!(e.message.contains("pf_members") && e.message.contains("JetStream"), "{}", e.message);

    let server = NatsServer::start_jetstream().await;
    let too_fast = NatsOptions { membership_heartbeat: Duration::from_millis(5), ..member_options() };
    let e = n.connect_nats(&server.url(), too_fast).await.unwrap_err();
    assert_eq!(e.code, "PF400", "{e:?}");
    assert!(e.message.starts_with("membership_heartbeat"), "{}", e.message);
    // Actor types already on another store cannot move to the bucket.
    n.reactor()
        .actors()
        .register_fn("counter", |_, _, _, _| Ok(packetflow::Reply::Value(Value::Null)))
        .unwrap();
    let e = n
        .connect_nats(&server.url(), NatsOptions { actor_store: true, ..member_options() })
        .await
        .unwrap_err();
    assert_eq!(e.code, "PF400", "{e:?}");
    assert!(e.message.starts_with("actor_store"), "{}", e.message);
    // Nothing of the failed joins is left: the node joins as it should.
    n.connect_nats(&server.url(), member_options()).await.unwrap();
    assert_eq!(n.nats_members(), [n.node_id()]);
    assert_eq!(n.health()["nats"]["membership"]["ttl_ms"], json!(3 * HEARTBEAT.as_millis() as u64));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_takes_the_cluster_options_and_names_them_as_spelled() {
    use packetflow::net::{ConnectOptions, KeyStyle};
    let server = NatsServer::start_jetstream().await;
    let camel = |heartbeat_ms: Option<u64>, actor_store: bool| ConnectOptions {
        membership: !actor_store,
        membership_heartbeat_ms: heartbeat_ms,
        actor_store,
        key_style: KeyStyle::Camel,
        ..ConnectOptions::default()
    };
    let a = node("camel-a");
    let e = a.connect_with(&server.url(), camel(Some(0), false)).await.unwrap_err();
    assert_eq!(e.code, "PF400", "{e:?}");
    assert_eq!(e.message, "membershipHeartbeatMs must be from 10 to 60000 ms, got 0 ms");
    a.connect_with(&server.url(), camel(Some(HEARTBEAT.as_millis() as u64), false)).await.unwrap();
    assert_eq!(a.nats_members(), [a.node_id()]);
    let membership = &a.health()["nats"]["membership"];
    assert_eq!(membership["heartbeat_ms"], json!(HEARTBEAT.as_millis() as u64), "{membership}");
    assert_eq!(membership["ttl_ms"], json!(3 * HEARTBEAT.as_millis() as u64), "{membership}");

    // A reactor whose first actor type made the memory store cannot move
    // to the bucket: PF400 naming the option as the caller spells it.
    let b = node("camel-b");
    let noop = |_: &str, _: &Value, _: &mut Value, _: &_| Ok(packetflow::Reply::Value(Value::Null));
    b.reactor().actors().register_fn("other", noop).unwrap();
    let e = b.connect_with(&server.url(), camel(None, true)).await.unwrap_err();
    assert_eq!(e.code, "PF400", "{e:?}");
    assert!(e.message.starts_with("actorStore: "), "{}", e.message);

    // `actorStore` alone joins the members and keeps the state of the
    // types registered afterwards in the bucket.
    let c = node("camel-c");
    c.connect_with(&server.url(), camel(None, true)).await.unwrap();
    let id = c.node_id().to_owned();
    let counter = packetflow::ActorType::new(move |kind: &str, _: &Value, state: &mut Value, _: &_| {
        if kind == "increment" {
            state["value"] = json!(state["value"].as_i64().unwrap_or(0) + 1);
        }
        Ok(packetflow::Reply::Value(json!({"value": state["value"], "node": id})))
    });
    c.reactor().actors().register("counter", counter.with_initial_state(json!({"value": 0}))).unwrap();
    let ids = vec![a.node_id().to_owned(), c.node_id().to_owned()];
    wait_members(&[&a, &c], &ids).await;
    let answer = until_answered(&c, &increment("kept", "kept-1")).await;
    assert_eq!(answer, json!({"value": 1, "node": c.node_id()}));
    let record = bucket(&server, "pf_actors").await.entry("counter.kept").await.unwrap();
    assert!(record.is_some(), "the turn's record is in the members' bucket");
    for n in [a, b, c] {
        n.stop().await;
    }
}
