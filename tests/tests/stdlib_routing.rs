//! The standard elements on a network: a user's handler anywhere in the
//! mesh wins over a node's built-in, other nodes reach a node's built-ins
//! through its hello, and a seed-spec peer with a plain frame.

use packetflow::stdlib::StdlibPatterns;
use packetflow::{json, NodeConfig, Packet};
use packetflow_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_handler_on_a_peer_wins_and_steps_reach_handlers_on_peers() {
    let (user, user_addr) = node("user", NodeConfig::default()).await;
    let (hosting, hosting_addr) = node("hosting", NodeConfig::default()).await;
    hosting.reactor().enable_stdlib(&StdlibPatterns::parse("cf:*,df:*").unwrap());
    // The seed's own example: df:transform as a user's handler.
    user.reactor().register_sync("df", "transform", |d, _| Ok(json!({"user": d}))).unwrap();
    register_upper(user.reactor());
    hosting.reactor().register_sync("df", "local", |d, _| Ok(d)).unwrap();
    hosting.connect(&url(user_addr)).await.unwrap();
    until("the hosting node knows the user's keys", || {
        hosting.can_route(packetflow::Group::DataFlow, "upper")
    })
    .await;

    // From the hosting node's own reactor and from a seed-spec client of
    // it: df:transform goes to the user's handler, not the built-in.
    let r = hosting.reactor().call(Packet::build("df", "transform", json!(1)).unwrap()).await;
    assert_eq!(r, Ok(json!({"user": 1})));
    let mut seed = RawPeer::connect(&url(hosting_addr)).await;
    seed.send_json(&submit_frame(1, "t1", "df", "transform", json!(2))).await;
    assert_eq!(seed.recv_open().await["payload"]["data"], json!({"user": 2}));

    // cf:seq, which nobody announced, runs on the hosting node; its steps
    // reach the user's handlers over the connection.
    let steps = json!([{"group": "df", "element": "upper"}, {"group": "df", "element": "transform"}]);
    seed.send_json(&submit_frame(2, "s1", "cf", "seq", json!({"steps": steps, "input": "hi"}))).await;
    let answer = seed.recv_open().await;
    assert_eq!(answer["payload"]["data"], json!({"value": {"user": "HI"}, "steps": 2}), "{answer}");

    // The built-ins are not announced as handlers: the hosting node's hello
    // lists its own handler (and the actor types its stateful elements
    // keep their state in), no standard element.
    let health = user.health();
    let handlers: Vec<&str> =
        health["peers"][0]["handlers"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(handlers.contains(&"df:local"), "{health}");
    assert!(handlers.iter().all(|k| *k == "df:local" || k.starts_with("rm:actor.pf.")), "{health}");

    // A node that hosts no standard element reaches the hosting node's
    // through its hello's `stdlib` member, as any program dialing it does.
    let (client, _) = node("client", NodeConfig::default()).await;
    client.connect(&url(hosting_addr)).await.unwrap();
    let data = json!({"steps": [{"group": "df", "element": "upper"}], "input": "via a client"});
    let r = client.reactor().call(Packet::build("cf", "seq", data).unwrap()).await;
    assert_eq!(r, Ok(json!({"value": "VIA A CLIENT", "steps": 1})));
    // Still below a handler: df:transform from the client reaches the user's.
    let r = client.reactor().call(Packet::build("df", "transform", json!(3)).unwrap()).await;
    assert_eq!(r, Ok(json!({"user": 3})));
    client.stop().await;

    // Once the user's node leaves, the hosting node's own df:transform serves.
    user.stop().await;
    until("the user's routes are gone", || !hosting.can_route(packetflow::Group::DataFlow, "transform"))
        .await;
    hosting.reactor().register_sync("df", "inc", |d, _| Ok(json!(d.as_i64().unwrap() + 1))).unwrap();
    let data = json!({"items": [1, 2], "fn": {"group": "df", "element": "inc"}});
    seed.send_json(&submit_frame(3, "t2", "df", "transform", data)).await;
    assert_eq!(seed.recv_open().await["payload"]["data"], json!([2, 3]));
    hosting.stop().await;
}
