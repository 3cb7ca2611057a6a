//! Python handlers as core handlers: each packet is a call of the handler
//! with `(data, ctx)`, made by [`invoke`] (an `async def` handler in a task
//! of its own on its loop, a `def` handler on a handler thread).

use std::sync::Arc;

use futures::future::{self, BoxFuture, FutureExt};
use packetflow::{Context, Handler, HandlerResult, PfError, Value};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::context::PyContext;
use crate::convert;
use crate::invoke::{self, LoopBinding, PyCall};
use crate::pool::{NextCall, Pool};

/// A registered Python callable.
pub(crate) struct PyHandler {
    func: Py<PyAny>,
    /// `group:element`, for messages.
    key: String,
    /// The same as a `str`: the name of an `async def` handler's tasks.
    task_name: Py<PyString>,
}

impl PyHandler {
    pub(crate) fn new(py: Python<'_>, func: Py<PyAny>, key: String) -> PyHandler {
        let task_name = PyString::new(py, &key).unbind();
        PyHandler { func, key, task_name }
    }
}

/// One packet for a handler.
struct HandlerCall {
    handler: Arc<PyHandler>,
    data: Value,
    /// Taken when the call is made.
    ctx: Option<Context>,
}

impl PyCall for HandlerCall {
    type Output = Value;

    fn label(&self) -> &str {
        &self.handler.key
    }

    fn task_name<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.handler.task_name.bind(py).clone()
    }

    fn prepare<'py>(&mut self, py: Python<'py>) -> PyResult<NextCall<'py>> {
        let ctx = self.ctx.take().expect("a call is prepared once");
        let data = convert::to_py(py, &self.data)?;
        let ctx = Bound::new(py, PyContext::new(ctx))?.into_any();
        Ok((self.handler.func.bind(py).clone(), data, ctx))
    }

    fn returned(&mut self, _py: Python<'_>, value: &Bound<'_, PyAny>) -> Result<Value, PfError> {
        convert::try_to_value(value).map_err(|e| {
            PfError::failed(format!(
                "{} returned a value that cannot cross as JSON: {}",
                self.handler.key,
                e.describe("result")
            ))
        })
    }
}

/// The core handler for an `async def` Python handler.
pub(crate) fn async_handler(handler: Arc<PyHandler>, binding: LoopBinding) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let Some(target) = binding.target() else {
            return future::ready(Err(PfError::failed(format!(
                "async handler {} has no event loop to run on: register it while a loop \
                 runs, or use the reactor from async code first",
                handler.key
            ))))
            .boxed();
        };
        let call = HandlerCall { handler: handler.clone(), data, ctx: Some(ctx) };
        invoke::on_loop(call, target).boxed()
    }))
}

/// The core handler for a `def` Python handler.
pub(crate) fn sync_handler(handler: Arc<PyHandler>, pool: Arc<Pool>) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let call = HandlerCall { handler: handler.clone(), data, ctx: Some(ctx) };
        invoke::on_pool(call, &pool).boxed()
    }))
}
