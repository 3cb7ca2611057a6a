//! `cf`: control flow. `seq`, `branch` and `loop` compose steps; their
//! input is checked whole before the first step runs. `gate` waits for an
//! `ed:signal` (see [`waiter`](super::waiter)).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::args::{truthy, Args, MAX_ITEMS};
use super::ed::signal_name;
use super::waiter::{park, Waited};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, MAX_TIMEOUT_MS};
use crate::reactor::{carries_chain, Context, Handler, Reactor, RunNowFn};

/// `cf:seq` `{steps, input?}`: each step's result is the next step's data
/// (unless the step gives its own) -> `{value, steps}`. The first failure
/// ends it with that step's code, the message naming its index.
pub(super) fn seq() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("cf:seq", &data)?;
        let steps = args.steps("steps")?;
        let mut value = args.get("input").cloned().unwrap_or(Value::Null);
        for (i, step) in steps.iter().enumerate() {
            value = step.run(&ctx, value).await.map_err(|e| step.failed(&format!("cf:seq step {i}"), e))?;
        }
        Ok(json!({"value": value, "steps": steps.len()}))
    })
}

/// `cf:seq` at once: when the packet carries no reentrancy chain and a
/// sync handler registered here serves every step's key, the seq runs as
/// a sync handler does, each step in place (`Context::call_in_place`):
/// no future, no child packet. The handlers looked up here are the ones
/// that run. Otherwise (or for input the handler refuses) `None`.
pub(super) fn seq_now() -> Arc<RunNowFn> {
    Arc::new(|packet: &Packet, reactor: &Reactor| {
        if carries_chain(packet.metadata.as_ref()) {
            return None;
        }
        let steps = Args::of("cf:seq", &packet.data).and_then(|args| args.steps("steps")).ok()?;
        let routes = reactor.in_place_routes(steps.iter().map(|step| (step.group, &step.element)))?;
        Some(Box::new(move |mut data: Value, ctx: &Context| {
            // Taken where it is (not removed: that hashes its name).
            let mut value = match &mut data {
                Value::Object(map) => {
                    map.iter_mut().find_map(|(k, v)| (k == "input").then(|| v.take())).unwrap_or(Value::Null)
                }
                _ => Value::Null,
            };
            for (i, (step, route)) in steps.iter().zip(&routes).enumerate() {
                value = step
                    .call_in_place(ctx, route, value)
                    .map_err(|e| step.failed(&format!("cf:seq step {i}"), e))?;
            }
            Ok(json!({"value": value, "steps": steps.len()}))
        }))
    })
}

/// `cf:branch` `{if, then, else?, input?}`: runs `if` with `input`; a
/// truthy result runs `then` with `input`, else `else` (or answers
/// `null`). The answer is the branch's result.
pub(super) fn branch() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("cf:branch", &data)?;
        let (condition, then) = (args.step("if")?, args.step("then")?);
        let otherwise = args.optional_step("else")?;
        let input = args.get("input").cloned().unwrap_or(Value::Null);
        let test =
            condition.run(&ctx, input.clone()).await.map_err(|e| condition.failed("cf:branch if", e))?;
        let (label, chosen) = if truthy(&test) {
            ("cf:branch then", Some(&then))
        } else {
            ("cf:branch else", otherwise.as_ref())
        };
        match chosen {
            Some(step) => step.run(&ctx, input).await.map_err(|e| step.failed(label, e)),
            None => Ok(Value::Null),
        }
    })
}

/// `cf:loop` `{body, while?, max_iterations, input?}`: while `while`
/// (given the carried value) is truthy and fewer than `max_iterations`
/// ran, runs `body` on the carried value, whose result is carried on ->
/// `{value, iterations}`.
pub(super) fn repeat() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("cf:loop", &data)?;
        let body = args.step("body")?;
        let condition = args.optional_step("while")?;
        let max = args
            .int_in("max_iterations", 1, MAX_ITEMS)?
            .ok_or_else(|| args.bad("max_iterations", format!("is required (1-{MAX_ITEMS})")))?;
        let mut value = args.get("input").cloned().unwrap_or(Value::Null);
        let mut iterations = 0;
        while iterations < max {
            if let Some(condition) = &condition {
                let label = format!("cf:loop while, before iteration {iterations}");
                let go = condition.run(&ctx, value.clone()).await.map_err(|e| condition.failed(&label, e))?;
                if !truthy(&go) {
                    break;
                }
            }
            let label = format!("cf:loop body, iteration {iterations}");
            value = body.run(&ctx, value).await.map_err(|e| body.failed(&label, e))?;
            iterations += 1;
        }
        Ok(json!({"value": value, "iterations": iterations}))
    })
}

/// `cf:gate` `{signal, timeout_ms?}`: waits until `ed:signal` fires the
/// name `signal` (anywhere in the mesh) -> its payload. A signal fired
/// before the gate began does not open it. PF408 when `timeout_ms` or the
/// packet's deadline (whichever is first) comes before the signal.
pub(super) fn gate() -> Handler {
    Handler::from_async(|data, ctx| async move {
        let args = Args::of("cf:gate", &data)?;
        let name = signal_name(&args, "signal")?;
        let timeout_ms = args.int_in("timeout_ms", 1, MAX_TIMEOUT_MS)?;
        let started = Instant::now();
        let mut on = Map::new();
        on.insert("signal".into(), json!(name));
        match park(&ctx, on, timeout_ms).await? {
            Waited::Released { payload, .. } => Ok(payload),
            Waited::TimedOut => Err(PfError::new(
                ErrorCode::Timeout,
                format!("cf:gate: signal {name:?} did not fire within {} ms", started.elapsed().as_millis()),
            )),
        }
    })
}
