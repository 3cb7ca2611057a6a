//! Handlers and actor types a `packetflow serve` hub can offer without any
//! code: enough to benchmark a node and to stand in for a service in tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use packetflow::{json, ActorType, PfError, Reactor, Reply, Value};

/// Registers `GROUP:ELEMENT=KIND`.
pub fn register(reactor: &Reactor, spec: &str) -> Result<(), String> {
    let (key, kind) = spec.split_once('=').ok_or("expected GROUP:ELEMENT=KIND")?;
    let (group, element) = key.split_once(':').ok_or("expected GROUP:ELEMENT before '='")?;
    let registered = match kind {
        "echo" => reactor.register_sync(group, element, |data, _| Ok(data)),
        "uppercase" => reactor.register_sync(group, element, |data, _| match data {
            Value::String(s) => Ok(Value::String(s.to_uppercase())),
            other => Err(PfError::failed(format!("uppercase needs a string, got {other}"))),
        }),
        "sleep" => reactor.register(group, element, |data, _| async move {
            let ms = data.as_u64().ok_or_else(|| PfError::failed("sleep needs a number of ms"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(data)
        }),
        "fail" => reactor.register_sync(group, element, |data, _| {
            Err(PfError::failed(format!("failed on purpose with {data}")))
        }),
        "count" => {
            // The counter actor's shape without an actor: one count shared
            // by every packet, so that a benchmark compares like with like.
            let count = Arc::new(AtomicI64::new(0));
            reactor.register_sync(group, element, move |data, _| {
                let by = increment_by(&data)?;
                Ok(json!({"value": count.fetch_add(by, Ordering::Relaxed) + by}))
            })
        }
        other => {
            return Err(format!("unknown handler kind {other:?}; use echo, uppercase, count, sleep or fail"))
        }
    };
    registered.map_err(|e| e.message)
}

/// Registers actor type `TYPE=KIND`.
pub fn register_actor(reactor: &Reactor, spec: &str) -> Result<(), String> {
    let (actor_type, kind) = spec.split_once('=').ok_or("expected TYPE=KIND")?;
    let spec = match kind {
        "counter" => counter(),
        other => return Err(format!("unknown actor kind {other:?}; use counter")),
    };
    reactor.actors().register(actor_type, spec).map_err(|e| e.message)
}

/// The seed's counter: `increment` adds `by` (default 1), `get_value`
/// reads; both answer `{"value": n}`. Virtual: any id starts at 0.
fn counter() -> ActorType {
    ActorType::new(|kind: &str, message: &Value, state: &mut Value, _: &_| {
        if kind == "increment" {
            let by = increment_by(message)?;
            // Changed in place when the state has its value (the usual
            // case): the key is neither looked up twice nor hashed to insert.
            match state.get_mut("value") {
                Some(value) => *value = json!(value.as_i64().unwrap_or(0) + by),
                None => state["value"] = json!(by),
            }
        }
        Ok(Reply::Value(json!({"value": state["value"]})))
    })
    .with_initial_state(json!({"value": 0}))
    .with_message_types(["increment", "get_value"])
}

/// An increment's `by` (default 1).
fn increment_by(message: &Value) -> Result<i64, PfError> {
    match message.get("by") {
        None | Some(Value::Null) => Ok(1),
        Some(by) => by.as_i64().ok_or_else(|| PfError::failed(format!("by must be an integer, got {by}"))),
    }
}
