//! `mc:migrate` (`--only migrate`): three nodes over loopback on one
//! current-thread runtime (one core), each hosting a counter type. What a
//! moved actor costs its messages, beside the same messages to an actor
//! where placement put it, and what a move costs:
//!
//! 1. an ask from C to an actor on its home A (one hop), against the same
//!    ask once the actor moved to B (C -> A -> B: target at most 2.5x);
//! 2. an ask from A to an actor moved from A to B, against one from A to
//!    an actor placed on B (the same path, A -> B: target at most 1.3x);
//! 3. a move (mc:migrate there and back), per move, against an ask that
//!    crosses the same nodes (C -> A -> B).

use std::hint::black_box;

use packetflow::stdlib::StdlibPatterns;
use packetflow::{json, ActorRef, ActorType, Node, NodeConfig, Packet, Reactor, ReactorConfig, Reply, Value};

use super::common::{measure, Args};
use super::report;

/// A node named `name` on loopback hosting `counter` and `mc:migrate`.
async fn host(name: &str) -> (Node, String) {
    let reactor = Reactor::new(ReactorConfig { name: name.into(), ..ReactorConfig::default() });
    let counter = ActorType::new(|_: &str, _: &Value, state: &mut Value, _: &packetflow::ActorContext| {
        *state = json!(state.as_i64().unwrap_or(0) + 1);
        Ok(Reply::Value(state.clone()))
    })
    .with_initial_state(json!(0));
    reactor.actors().register("counter", counter).unwrap();
    reactor.enable_stdlib(&StdlibPatterns::parse("mc:migrate").unwrap());
    let node = Node::new(reactor, NodeConfig::default());
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    (node, format!("ws://{addr}/packetflow/v1"))
}

/// The first of `counter/<prefix>0..` whose home is node `i`.
async fn homed_at(nodes: &[Node], i: usize, prefix: &str) -> ActorRef {
    for k in 0..1000 {
        let actor = ActorRef::new("counter", &format!("{prefix}{k}")).unwrap();
        nodes[2].reactor().actors().send(&actor, json!({"type": "get"})).await.unwrap();
        if nodes[i].reactor().actors().active_ids("counter").iter().any(|id| id == actor.id()) {
            return actor;
        }
    }
    panic!("no actor placed on node {i}");
}

async fn migrate(via: &Node, actor: &ActorRef, to: &str) {
    let data = json!({"actor": {"type": "counter", "id": actor.id()}, "to": to});
    via.reactor().call(Packet::build("mc", "migrate", data).unwrap()).await.unwrap();
}

pub fn run(a: &Args) {
    println!("## 3. mc:migrate: three nodes over loopback, one core");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n = (a.n / 10).max(200);
    let (nodes, actors) = rt.block_on(async {
        let mut nodes = Vec::new();
        let mut urls: Vec<String> = Vec::new();
        for name in ["a", "b", "c"] {
            let (node, url) = host(name).await;
            for earlier in &urls {
                node.connect(earlier).await.unwrap();
            }
            urls.push(url);
            nodes.push(node);
        }
        for node in &nodes {
            while node.actor_hosts("counter").len() < 3 {
                node.watch_routes().changed().await.unwrap();
            }
        }
        let at_home = homed_at(&nodes, 0, "home").await;
        let moved = homed_at(&nodes, 0, "moved").await;
        let placed_on_b = homed_at(&nodes, 1, "b").await;
        migrate(&nodes[2], &moved, nodes[1].node_id()).await;
        (nodes, [at_home, moved, placed_on_b])
    });
    let [at_home, moved, placed_on_b] = &actors;
    let asks = |via: usize, actor: &ActorRef| {
        let actors = nodes[via].reactor().actors();
        measure(n, a.reps, |n| {
            rt.block_on(async {
                for _ in 0..n {
                    black_box(actors.send(actor, json!({"type": "inc"})).await.unwrap());
                }
            })
        })
    };
    let home = report("ask C -> A, the actor on its home A", asks(2, at_home));
    let forwarded = report("ask C -> A -> B, the actor moved from A to B", asks(2, moved));
    println!("moved / at home: {:.2}x (target <= 2.5x)\n", forwarded / home);
    let placed = report("ask A -> B, the actor placed on B", asks(0, placed_on_b));
    let from_home = report("ask A -> B, the actor moved from A to B", asks(0, moved));
    println!("moved / placed there: {:.2}x (target <= 1.3x)\n", from_home / placed);
    let (a_id, b_id) = (nodes[0].node_id().to_owned(), nodes[1].node_id().to_owned());
    let moves = report(
        "a move (mc:migrate from C, B -> A, then A -> B), per move",
        measure((n / 10).max(20), a.reps, |n| {
            rt.block_on(async {
                for i in 0..n {
                    migrate(&nodes[2], moved, if i % 2 == 0 { &a_id } else { &b_id }).await;
                }
                if n % 2 == 1 {
                    migrate(&nodes[2], moved, &b_id).await;
                }
            })
        }),
    );
    println!("a move / a forwarded ask: {:.2}x\n", moves / forwarded);
    rt.block_on(async {
        for node in nodes {
            node.stop().await;
        }
    });
}
