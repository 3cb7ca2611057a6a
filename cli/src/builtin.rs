//! Handlers a `packetflow serve` hub can offer without any code: enough to
//! benchmark a node and to stand in for a service in tests.

use std::time::Duration;

use packetflow::{PfError, Reactor, Value};

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
        other => return Err(format!("unknown handler kind {other:?}; use echo, uppercase, sleep or fail")),
    };
    registered.map_err(|e| e.message)
}
