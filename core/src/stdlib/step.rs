//! A step: a call a standard element makes, as `ctx.call` makes it.

use serde_json::{Map, Value};

use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Priority, MAX_TIMEOUT_MS};
use crate::reactor::{Call, CallOptions, Context, InPlaceRoute};

/// `{"group", "element", "data"?, "priority"?, "timeout_ms"?}`: what a
/// standard element calls. It runs as a `ctx.call` of the element's
/// packet: it inherits the deadline (at most `timeout_ms` of what is left),
/// the trace id and cancellation.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The group called.
    pub group: Group,
    /// The element called.
    pub element: Element,
    /// The data the call carries; `None`: the value the element hands the
    /// step (the previous step's result in `cf:seq`, the item in `df:*`).
    pub data: Option<Value>,
    /// The call's priority; `None`: the element's packet's.
    pub priority: Option<Priority>,
    /// At most this much of what is left of the deadline.
    pub timeout_ms: Option<u64>,
}

impl Step {
    /// Reads a step from `value`; PF400 naming `field` (as `steps[2]`) and
    /// the member at fault.
    pub fn parse(value: &Value, field: impl std::fmt::Display) -> Result<Step, PfError> {
        let bad = |what: String| PfError::new(ErrorCode::BadRequest, what);
        let Value::Object(map) = value else {
            return Err(bad(format!(
                "{field} must be a step object {{group, element, ...}}, got {}",
                kind(value)
            )));
        };
        // One pass over the members: a step is parsed for every item of a
        // gather or a transform, and a lookup per member hashes its name.
        let (mut group, mut element, mut data, mut priority, mut timeout_ms) = (None, None, None, None, None);
        for (name, v) in map {
            match name.as_str() {
                "group" => group = Some(v),
                "element" => element = Some(v),
                "data" => data = Some(v),
                "priority" => priority = Some(v),
                "timeout_ms" => timeout_ms = Some(v),
                _ => {}
            }
        }
        fn text<'v>(
            field: &dyn std::fmt::Display,
            name: &str,
            v: Option<&'v Value>,
        ) -> Result<&'v str, PfError> {
            match v {
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(PfError::new(
                    ErrorCode::BadRequest,
                    format!("{field}.{name} must be a string, got {}", kind(other)),
                )),
                None => Err(PfError::new(ErrorCode::BadRequest, format!("{field}.{name} is required"))),
            }
        }
        let group = Group::parse(text(&field, "group", group)?)
            .map_err(|e| bad(format!("{field}.group: {}", e.message)))?;
        let element = Element::new(text(&field, "element", element)?)
            .map_err(|e| bad(format!("{field}.element: {}", e.message)))?;
        let priority = match priority {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or(())
                    .and_then(|p| Priority::new(p).map_err(|_| ()))
                    .map_err(|()| bad(format!("{field}.priority must be an integer 1-10, got {v}")))?,
            ),
        };
        let timeout_ms = match timeout_ms {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|t| (1..=MAX_TIMEOUT_MS).contains(t)).ok_or_else(|| {
                bad(format!("{field}.timeout_ms must be an integer 1-{MAX_TIMEOUT_MS}, got {v}"))
            })?),
        };
        Ok(Step { group, element, data: data.cloned(), priority, timeout_ms })
    }

    /// Calls the step with its own data, or `input` when it has none.
    pub async fn run(&self, ctx: &Context, input: Value) -> Result<Value, PfError> {
        self.run_barring(ctx, input, false).await
    }

    /// [`run`](Self::run); `bar_mc`: the call may not reach `mc:*` even if
    /// `ctx`'s packet may (a step stored by a packet that could not).
    pub(crate) async fn run_barring(
        &self,
        ctx: &Context,
        input: Value,
        bar_mc: bool,
    ) -> Result<Value, PfError> {
        match self.start_barring(ctx, input, bar_mc) {
            Call::Answered(answer) => answer,
            Call::Pending(call) => call.answer().await,
        }
    }

    /// Starts the call here and now ([`Context::start_call`]): a step to
    /// a local sync handler is answered before this returns.
    pub(crate) fn start<'c>(&self, ctx: &'c Context, input: Value) -> Call<'c> {
        self.start_barring(ctx, input, false)
    }

    fn start_barring<'c>(&self, ctx: &'c Context, input: Value, bar_mc: bool) -> Call<'c> {
        let data = self.data.clone().unwrap_or(input);
        ctx.start_call_to(self.group, &self.element, data, self.options(bar_mc))
    }

    /// Calls the step in place on `route` (its key's handler, looked up
    /// by `InPlaceRoute`), with its own data or `input`.
    pub(crate) fn call_in_place(
        &self,
        ctx: &Context,
        route: &InPlaceRoute,
        input: Value,
    ) -> Result<Value, PfError> {
        let data = self.data.clone().unwrap_or(input);
        ctx.call_in_place(route, self.group, &self.element, data, self.options(false))
    }

    /// The options of this step's call.
    fn options(&self, bar_mc: bool) -> CallOptions {
        let options = CallOptions { priority: self.priority, bar_mc, ..CallOptions::default() };
        match self.timeout_ms {
            Some(ms) => options.with_timeout_ms(ms),
            None => options,
        }
    }

    /// PF403 when this step calls `mc:*` and `ctx`'s packet may not reach
    /// it: for a step an element keeps to call later (`ed:timer`,
    /// `ed:react`), refused when it is given rather than left to fail
    /// each time it runs.
    pub(crate) fn reachable_from(&self, ctx: &Context, field: &str) -> Result<(), PfError> {
        if self.group == Group::MetaCompute && ctx.bars_mc() {
            let e = crate::reactor::mc_refused(self.group.as_str(), self.element.as_str());
            return Err(PfError { code: e.code, message: format!("{field}: {}", e.message) });
        }
        Ok(())
    }

    /// `error`, the failure of this step at `label` (as `step 2`), with its
    /// code kept and the step named in its message.
    pub(crate) fn failed(&self, label: &str, error: PfError) -> PfError {
        PfError {
            code: error.code,
            message: format!("{label} ({}:{}) failed: {}", self.group, self.element, error.message),
        }
    }

    /// This step as JSON (the shape [`parse`](Self::parse) reads).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("group".into(), Value::String(self.group.as_str().into()));
        map.insert("element".into(), Value::String(self.element.as_str().into()));
        if let Some(data) = &self.data {
            map.insert("data".into(), data.clone());
        }
        if let Some(p) = self.priority {
            map.insert("priority".into(), Value::from(p.get()));
        }
        if let Some(t) = self.timeout_ms {
            map.insert("timeout_ms".into(), Value::from(t));
        }
        Value::Object(map)
    }
}

/// The JSON type of `value`, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
