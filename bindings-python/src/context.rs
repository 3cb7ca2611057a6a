//! `packetflow.Context`: what a handler knows about the packet it serves.

use packetflow::reactor::CallOptions;
use packetflow::{Context, Element, Group};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::{actor_ref, awaitable, blocking, bridge, convert, errors, pystr};

/// Passed to every handler with the packet's data: the packet's id,
/// metadata, trace id, priority and time left, whether it was cancelled,
/// ``call`` to submit child packets on its behalf, and ``send``/``tell`` to
/// message actors (a child inherits what is left of the deadline, the
/// priority and the trace id, so a chain of calls never outlives the first
/// submit, and is cancelled with it).
///
/// An actor's turn gets an :class:`ActorContext`, a subclass.
#[pyclass(frozen, subclass, name = "Context", module = "packetflow")]
pub(crate) struct PyContext {
    inner: Context,
}

impl PyContext {
    pub(crate) fn new(inner: Context) -> PyContext {
        PyContext { inner }
    }

    /// The fields its `repr` shows.
    pub(crate) fn describe(&self) -> String {
        format!(
            "packet_id={:?}, trace_id={:?}, remaining_ms={}",
            self.inner.packet_id().as_str(),
            self.inner.trace_id(),
            self.inner.remaining().as_millis()
        )
    }
}

/// Checks `group:element` at the call site (PF400 raises at once).
pub(crate) fn target(
    py: Python<'_>,
    group: &Bound<'_, PyString>,
    element: &Bound<'_, PyString>,
) -> PyResult<(String, String)> {
    let g = pystr::as_str(group)?;
    let e = pystr::as_str(element)?;
    Group::parse(g).map_err(|err| errors::to_pyerr(py, &err))?;
    Element::new(e).map_err(|err| errors::to_pyerr(py, &err))?;
    Ok((g.to_owned(), e.to_owned()))
}

fn data_value(data: Option<&Bound<'_, PyAny>>) -> PyResult<packetflow::Value> {
    match data {
        Some(d) => convert::to_value(d, "data"),
        None => Ok(packetflow::Value::Null),
    }
}

/// The options of a `ctx.call`, `send` or `tell`: the child's priority
/// and timeout when given (`None`: the calling packet's priority, and all
/// of what is left of its deadline), judged by the core as the same fields
/// of a packet are (PF400 naming the field).
fn call_options(
    py: Python<'_>,
    priority: Option<&Bound<'_, PyAny>>,
    timeout_ms: Option<&Bound<'_, PyAny>>,
) -> PyResult<CallOptions> {
    let (priority, timeout_ms) = (priority.map(convert::to_field), timeout_ms.map(convert::to_field));
    CallOptions::from_fields(priority.as_ref(), timeout_ms.as_ref()).map_err(|e| errors::to_pyerr(py, &e))
}

#[pymethods]
impl PyContext {
    /// The id of the packet being handled.
    #[getter]
    fn packet_id(&self) -> &str {
        self.inner.packet_id().as_str()
    }

    /// The packet's metadata (a new dict on each access), or ``None``.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.metadata().map(|m| convert::object_to_py(py, m)).transpose()
    }

    /// The trace id shared by this packet and its child calls.
    #[getter]
    fn trace_id(&self) -> &str {
        self.inner.trace_id()
    }

    /// Milliseconds left before the packet's deadline (0 once it passed).
    #[getter]
    fn remaining_ms(&self) -> u64 {
        self.inner.remaining().as_millis() as u64
    }

    /// The packet's priority (1-10), which its calls inherit.
    #[getter]
    fn priority(&self) -> u8 {
        self.inner.priority().get()
    }

    /// Whether the packet's answer is no longer wanted: it was cancelled
    /// (its submitter gave up, ``Reactor.cancel``, the packet that called
    /// it was cancelled, the connection it came on went away), its deadline
    /// passed, or the reactor stopped. A ``def`` handler polls it to stop
    /// early; an ``async def`` handler is cancelled instead (its task gets
    /// ``asyncio.CancelledError``). Once true it stays true; whatever the
    /// handler returns then, its submitter has its answer already (PF499
    /// for a cancelled packet).
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Submits a child packet to ``group:element`` and returns an awaitable
    /// of its data; it raises :class:`PacketFlowError` if the child fails.
    /// The child has this packet's priority unless ``priority`` names one,
    /// and all of what is left of its deadline unless ``timeout_ms`` is
    /// shorter;
    /// it is cancelled if this packet is (the call then raises
    /// :class:`PacketCancelledError`, PF499), and cancelling the awaiting
    /// task cancels the child. Use it from ``async def`` handlers; ``def``
    /// handlers use :meth:`call_sync`.
    #[pyo3(signature = (group, element, data=None, *, priority=None, timeout_ms=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyString>,
        element: &Bound<'py, PyString>,
        data: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "ctx.call()")?;
        let (group, element) = target(py, group, element)?;
        let data = data_value(data)?;
        let options = call_options(py, priority, timeout_ms)?;
        let ctx = self.inner.clone();
        awaitable::spawn(py, &bridge, async move { ctx.call_with(&group, &element, data, options).await })
    }

    /// Like :meth:`call`, blocking the calling thread (with the GIL
    /// released) until the child answers; for ``def`` handlers. If this
    /// packet is cancelled meanwhile, the child is cancelled and this
    /// raises :class:`PacketCancelledError` (PF499).
    #[pyo3(signature = (group, element, data=None, *, priority=None, timeout_ms=None))]
    fn call_sync<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyString>,
        element: &Bound<'py, PyString>,
        data: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (group, element) = target(py, group, element)?;
        let data = data_value(data)?;
        let options = call_options(py, priority, timeout_ms)?;
        let ctx = self.inner.clone();
        let out = blocking::wait(py, "ctx.call_sync()", "ctx.call()", None, async move {
            ctx.call_with(&group, &element, data, options).await
        })?;
        match out {
            Ok(value) => convert::to_py(py, &value),
            Err(err) => Err(errors::to_pyerr(py, &err)),
        }
    }

    /// Sends ``message`` to ``actor`` on behalf of this packet and returns
    /// an awaitable of the turn's answer, as :meth:`call` does for a handler
    /// (same deadline, trace and reentrancy chain, and the same
    /// ``priority`` and ``timeout_ms``); it raises :class:`PacketFlowError`
    /// if the turn fails. ``def`` functions use :meth:`send_sync`.
    #[pyo3(signature = (actor, message, *, priority=None, timeout_ms=None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        actor: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bridge = bridge::current(py, "ctx.send()")?;
        let message = convert::to_value(message, "message")?;
        let (ctx, actor) = (self.inner.clone(), actor_ref::address(actor, "actor")?);
        let options = call_options(py, priority, timeout_ms)?;
        awaitable::spawn(py, &bridge, async move { ctx.send_with(&actor, message, options).await })
    }

    /// Like :meth:`send`, blocking the calling thread (with the GIL
    /// released) until the turn answers; for ``def`` functions.
    #[pyo3(signature = (actor, message, *, priority=None, timeout_ms=None))]
    fn send_sync<'py>(
        &self,
        py: Python<'py>,
        actor: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
        priority: Option<&Bound<'py, PyAny>>,
        timeout_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = convert::to_value(message, "message")?;
        let (ctx, actor) = (self.inner.clone(), actor_ref::address(actor, "actor")?);
        let options = call_options(py, priority, timeout_ms)?;
        let out = blocking::wait(py, "ctx.send_sync()", "ctx.send()", None, async move {
            ctx.send_with(&actor, message, options).await
        })?;
        match out {
            Ok(value) => convert::to_py(py, &value),
            Err(err) => Err(errors::to_pyerr(py, &err)),
        }
    }

    /// Sends ``message`` to ``actor`` without waiting for its turn (a
    /// tell): the message has its place in the actor's mailbox when this
    /// returns, in the order of its ``priority`` (this packet's unless
    /// named); ``timeout_ms`` bounds how long it may wait there. Raises at
    /// once for a message the core refuses.
    #[pyo3(signature = (actor, message, *, priority=None, timeout_ms=None))]
    fn tell(
        &self,
        py: Python<'_>,
        actor: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        priority: Option<&Bound<'_, PyAny>>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let actor = actor_ref::address(actor, "actor")?;
        let message = convert::to_value(message, "message")?;
        let options = call_options(py, priority, timeout_ms)?;
        let _runtime = crate::runtime::runtime()?.enter();
        self.inner.tell_with(&actor, message, options).map_err(|e| errors::to_pyerr(py, &e))
    }

    fn __repr__(&self) -> String {
        format!("Context({})", self.describe())
    }
}
