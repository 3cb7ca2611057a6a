//! `mc:migrate` on one reactor: its input errors, the target checks, the
//! no-op move, and the handover op refused to anything but a peer node
//! (moves between nodes: tests/tests/migrate.rs).

use serde_json::{json, Value};

use super::test_support::failure;
use super::*;
use crate::actor::{ActorRef, Op, Reply};
use crate::packet::{Packet, PacketParts};
use crate::result::PacketResult;

/// A reactor named `solo` with every standard element and a virtual
/// `counter` type (its turns also report the metadata they see).
fn reactor() -> Reactor {
    let r = Reactor::new(crate::reactor::ReactorConfig { name: "solo".into(), ..Default::default() });
    r.enable_stdlib(&StdlibPatterns::all());
    r.actors()
        .register(
            "counter",
            ActorType::new(|kind: &str, _: &Value, state: &mut Value, ctx: &crate::actor::ActorContext| {
                if kind == "increment" {
                    state["value"] = json!(state["value"].as_i64().unwrap_or(0) + 1);
                }
                Ok(Reply::Value(json!({"value": state["value"], "metadata": ctx.metadata()})))
            })
            .with_initial_state(json!({"value": 0})),
        )
        .unwrap();
    r
}

async fn run(r: &Reactor, data: Value) -> PacketResult {
    r.submit(Packet::build("mc", "migrate", data).unwrap()).await
}

#[tokio::test]
async fn bad_input_is_pf400_naming_the_field() {
    let r = reactor();
    let actor = json!({"type": "counter", "id": "c1"});
    let cases = [
        (json!(7), "mc:migrate: data must be an object, got a number"),
        (json!({"to": "solo"}), "mc:migrate: actor is required"),
        (json!({"actor": "counter/c1", "to": "solo"}), "mc:migrate: actor must be an object {type, id}, got a string"),
        (json!({"actor": {"id": "c1"}, "to": "solo"}), "mc:migrate: actor.type is required"),
        (
            json!({"actor": {"type": 5, "id": "c1"}, "to": "solo"}),
            "mc:migrate: actor.type must be a string, got a number",
        ),
        (
            json!({"actor": {"type": "no spaces", "id": "c1"}, "to": "solo"}),
            "mc:migrate: actor.type must be an actor type, 1-58 characters of [A-Za-z0-9_.-], got \"no spaces\"",
        ),
        (
            json!({"actor": {"type": "t".repeat(59), "id": "c1"}, "to": "solo"}),
            "mc:migrate: actor.type must be a string of 1-58 bytes, got 59 bytes",
        ),
        (
            json!({"actor": {"type": "pf.timer", "id": "t1"}, "to": "solo"}),
            "mc:migrate: actor.type \"pf.timer\" is the standard library's own (pf.*): its actors stay on the \
             node placement gives them",
        ),
        (json!({"actor": {"type": "counter"}, "to": "solo"}), "mc:migrate: actor.id is required"),
        (
            json!({"actor": {"type": "counter", "id": ""}, "to": "solo"}),
            "mc:migrate: actor.id must be a string of 1-128 bytes, got 0 bytes",
        ),
        (
            json!({"actor": {"type": "counter", "id": ["c1"]}, "to": "solo"}),
            "mc:migrate: actor.id must be a string, got an array",
        ),
        (json!({"actor": actor}), "mc:migrate: to is required"),
        (json!({"actor": actor, "to": 3}), "mc:migrate: to must be a string, got a number"),
        (
            json!({"actor": actor, "to": "n".repeat(129)}),
            "mc:migrate: to must be a string of 1-128 bytes, got 129 bytes",
        ),
    ];
    for (data, expected) in cases {
        let result = run(&r, data.clone()).await;
        assert_eq!(failure(&result), ("PF400".to_owned(), expected.to_owned()), "{data}");
    }
}

#[tokio::test]
async fn a_target_that_does_not_host_the_type_is_pf404_naming_it() {
    let r = reactor();
    let unknown = run(&r, json!({"actor": {"type": "counter", "id": "c1"}, "to": "elsewhere"})).await;
    assert_eq!(
        failure(&unknown),
        (
            "PF404".to_owned(),
            "mc:migrate: to: no node \"elsewhere\" is known here (the hosts of actor type counter: solo)"
                .to_owned()
        )
    );
    let unhosted = run(&r, json!({"actor": {"type": "ledger", "id": "l1"}, "to": "solo"})).await;
    assert_eq!(
        failure(&unhosted),
        (
            "PF404".to_owned(),
            "mc:migrate: actor.type: no node this one reaches hosts actor type ledger".to_owned()
        )
    );
}

#[tokio::test]
async fn migrating_to_the_node_it_is_on_changes_nothing() {
    let r = reactor();
    let c1 = ActorRef::new("counter", "c1").unwrap();
    r.actors().send(&c1, json!({"type": "increment"})).await.unwrap();
    let answer = run(&r, json!({"actor": {"type": "counter", "id": "c1"}, "to": "solo"})).await;
    assert_eq!(answer.outcome.unwrap(), json!({"from": "solo", "to": "solo"}));
    let after = r.actors().send(&c1, json!({"type": "increment"})).await.unwrap();
    assert_eq!(after["value"], json!(2), "the actor kept its state");

    // An actor that does not exist (its type has no initial state) is PF404.
    r.actors().register_fn("ledger", |_, _, _, _| Ok(Reply::Value(Value::Null))).unwrap();
    let missing = run(&r, json!({"actor": {"type": "ledger", "id": "l9"}, "to": "solo"})).await;
    assert_eq!(failure(&missing), ("PF404".to_owned(), "no actor ledger/l9: create it first".to_owned()));
}

#[tokio::test]
async fn a_handover_is_refused_to_anything_but_a_peer_node() {
    let r = reactor();
    let c1 = ActorRef::new("counter", "c1").unwrap();
    r.actors().send(&c1, json!({"type": "increment"})).await.unwrap();
    let forged = json!({"record": {"state": {"value": 1000}, "recent": []}, "from": "x"});
    let expected = "counter/c1: metadata[\"pf.actor_op\"] \"adopt\" hands an actor over between nodes and is \
                    accepted only from a peer node that hosts or routes actor type counter; move an actor with \
                    mc:migrate";
    // As a packet (what a client or a seed-spec peer would send)...
    let packet = c1.packet(Op::Adopt, forged.clone());
    assert_eq!(failure(&r.submit(packet).await), ("PF403".to_owned(), expected.to_owned()));
    // ...through the API's direct way, and as a tell.
    let asked =
        r.actors().ask_with(&c1, Op::Adopt, PacketParts { data: Some(forged.clone()), ..Default::default() });
    let e = asked.unwrap().await.unwrap_err();
    assert_eq!((e.code.as_str(), e.message.as_str()), ("PF403", expected));
    let told = r.actors().tell_packet(&c1, c1.packet(Op::Adopt, forged)).unwrap_err();
    assert_eq!((told.code.as_str(), told.message.as_str()), ("PF403", expected));
    let after = r.actors().send(&c1, json!({"type": "get"})).await.unwrap();
    assert_eq!(after["value"], json!(1), "the record was not replaced");
}

#[tokio::test]
async fn a_turn_does_not_see_the_node_a_message_was_delivered_at() {
    let r = reactor();
    let c1 = ActorRef::new("counter", "c1").unwrap();
    let mut packet = c1.packet(Op::Send, json!({"type": "get"}));
    let meta = packet.metadata.as_mut().unwrap();
    meta.insert(crate::actor::META_ACTOR_AT.into(), json!("solo"));
    meta.insert("trace".into(), json!("t-1"));
    let answer = r.submit(packet).await.outcome.unwrap();
    assert_eq!(answer["metadata"], json!({"trace": "t-1"}));
    let mut bad = c1.packet(Op::Send, json!({"type": "get"}));
    bad.metadata.as_mut().unwrap().insert(crate::actor::META_ACTOR_AT.into(), json!(7));
    assert_eq!(
        failure(&r.submit(bad).await),
        (
            "PF400".to_owned(),
            "metadata[\"pf.actor_at\"] must be a node id, a string of 1-128 bytes, got 7".to_owned()
        )
    );
}
