//! Python handlers as core handlers.
//!
//! - A `def` handler runs off the event loop, on a thread of the reactor's
//!   [`Pool`], which takes the GIL once for every call that is ready; each
//!   call runs in a fresh `contextvars.Context`.
//! - An `async def` handler runs on the loop that registered it (or, when it
//!   was registered outside any loop, on the loop that submits the packet,
//!   else the reactor's [`HomeLoop`]), in an asyncio task of its own started
//!   in a fresh, empty `contextvars.Context`: what it would see behind a
//!   network hop. Its task is never the submitter's, so
//!   `asyncio.current_task()`, `asyncio.timeout()` and cancellation concern
//!   the handler alone, and no context variable of the submitter (or of the
//!   code that registered it) reaches it. The task's first step runs at
//!   once, where the call reaches the loop (inside `submit`, or a drain of
//!   the loop's inbox), as Python 3.12's eager tasks do: a handler that
//!   answers without suspending costs no turn of the loop. A handler whose
//!   task is cancelled fails its packet with PF500, unless the packet ended
//!   first (deadline, stop: the core has answered, and the task was
//!   cancelled because of it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::{self, BoxFuture, FutureExt};
use packetflow::{Context, ErrorCode, Handler, HandlerResult, PfError, Value};
use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, HomeLoop, Item, LoopJob};
use crate::context::PyContext;
use crate::pool::{NextCall, Pool, PoolJob};
use crate::{convert, errors};

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

    /// The packet's error for a value the handler returned that JSON
    /// cannot carry.
    fn not_json(&self, e: &convert::ConvertError) -> PfError {
        PfError::failed(format!(
            "{} returned a value that cannot cross as JSON: {}",
            self.key,
            e.describe("result")
        ))
    }
}

/// Waits for a handler's answer; cancels its task (if it has one) when
/// dropped first, i.e. when the packet ended without it.
struct HandlerWait {
    rx: oneshot::Receiver<HandlerResult>,
    slot: Option<Arc<TaskSlot>>,
}

impl Future for HandlerWait {
    type Output = HandlerResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<HandlerResult> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(answer) => {
                self.slot = None;
                Poll::Ready(answer.unwrap_or_else(|_| {
                    Err(PfError::new(ErrorCode::Unavailable, "the handler ended without an answer"))
                }))
            }
        }
    }
}

impl Drop for HandlerWait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if let Some(task) = slot.task.lock().take() {
                slot.bridge.push(Item::Cancel(task));
            }
        }
    }
}

// ---- `async def` handlers: a task of their loop per call ----

/// Where a handler call's asyncio task is kept, so that the packet can
/// cancel it if it ends first.
struct TaskSlot {
    task: Mutex<Option<Py<PyAny>>>,
    bridge: Arc<Bridge>,
}

/// An `async def` handler call on its way to its loop.
struct Invocation {
    handler: Arc<PyHandler>,
    data: Value,
    ctx: Context,
    reply: oneshot::Sender<HandlerResult>,
    slot: Arc<TaskSlot>,
}

impl LoopJob for Invocation {
    fn run(self: Box<Self>, py: Python<'_>, bridge: &Arc<Bridge>) {
        if self.reply.is_closed() {
            return; // the packet already ended (deadline, stop)
        }
        let Invocation { handler, data, ctx, reply, slot } = *self;
        start_task(py, bridge, &handler, &data, ctx, reply, &slot);
    }

    fn loop_closed(self: Box<Self>) {
        let message = format!("the event loop {} runs on is closed", self.handler.key);
        let _ = self.reply.send(Err(PfError::new(ErrorCode::Unavailable, message)));
    }
}

/// `packetflow._support.run_handler` and `contextvars.Context`.
struct Support {
    run_handler: Py<PyAny>,
    new_context: Py<PyAny>,
    /// Whether `create_task` takes `context=` (Python 3.11 and later).
    context_keyword: bool,
}

static SUPPORT: PyOnceLock<Support> = PyOnceLock::new();

fn support(py: Python<'_>) -> PyResult<&Support> {
    SUPPORT.get_or_try_init(py, || {
        Ok::<_, PyErr>(Support {
            run_handler: py.import("packetflow._support")?.getattr("run_handler")?.unbind(),
            new_context: py.import("contextvars")?.getattr("Context")?.unbind(),
            context_keyword: py.version_info() >= (3, 11),
        })
    })
}

/// Starts an `async def` handler call as a task of `bridge`'s loop, in a
/// fresh context; the task reports its outcome to `reply` itself.
fn start_task(
    py: Python<'_>,
    bridge: &Bridge,
    handler: &Arc<PyHandler>,
    data: &Value,
    ctx: Context,
    reply: oneshot::Sender<HandlerResult>,
    slot: &TaskSlot,
) {
    let report = match Py::new(py, Reply { reply: Mutex::new(Some(reply)), handler: handler.clone() }) {
        Ok(report) => report,
        // The answer channel went with the failed object: the packet ends
        // with "the handler ended without an answer".
        Err(_) => return,
    };
    let started = (|| {
        let support = support(py)?;
        let data = convert::to_py(py, data)?;
        let ctx = Bound::new(py, PyContext::new(ctx))?;
        let coro = support.run_handler.bind(py).call1((&handler.func, data, ctx, &report))?;
        let context = support.new_context.bind(py).call0()?;
        let task = if support.context_keyword {
            let kwargs = PyDict::new(py);
            kwargs.set_item(pyo3::intern!(py, "name"), &handler.task_name)?;
            kwargs.set_item(pyo3::intern!(py, "context"), context)?;
            bridge.create_task(py).call((&coro,), Some(&kwargs))
        } else {
            // A task copies the context that is current when it is made.
            context.call_method1(pyo3::intern!(py, "run"), (bridge.create_task(py), &coro)).and_then(|task| {
                task.call_method1(pyo3::intern!(py, "set_name"), (&handler.task_name,)).map(|_| task)
            })
        };
        if task.is_err() {
            let _ = coro.call_method0(pyo3::intern!(py, "close"));
        }
        task
    })();
    match started {
        Ok(task) => {
            *slot.task.lock() = Some(task.clone().unbind());
            // Its first step now: a handler that does not suspend answers
            // before this returns.
            if let Err(err) = bridge.start_eagerly(py, &task) {
                // A KeyboardInterrupt or SystemExit raised by the handler
                // goes on once the packet is answered; anything else left
                // the step to run on the loop's next turn.
                if !err.is_instance_of::<PyException>(py) {
                    bridge::defer_raise(err);
                }
            }
        }
        Err(err) => report.get().send(|| {
            Err(PfError::failed(format!(
                "{} could not be started on its event loop: {}",
                handler.key,
                errors::from_handler_exception(py, &err).message
            )))
        }),
    }
}

/// How a handler's task reports its end (called by
/// `packetflow._support.run_handler` inside the task, so no done-callback
/// round through the loop is needed).
#[pyclass(frozen, module = "packetflow._native")]
struct Reply {
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    handler: Arc<PyHandler>,
}

impl Reply {
    fn send(&self, outcome: impl FnOnce() -> HandlerResult) {
        let Some(reply) = self.reply.lock().take() else { return };
        if !reply.is_closed() {
            // The submitter may be waiting on this loop: let it see the
            // answer now rather than on the loop's next turn.
            bridge::answering(|| {
                let _ = reply.send(outcome());
            });
        }
    }
}

static CANCELLED_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Reply {
    /// The handler returned `value`.
    fn done(&self, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.send(|| convert::try_to_value(&value).map_err(|e| self.handler.not_json(&e)));
        bridge::take_deferred().map_or(Ok(()), Err)
    }

    /// The handler raised `exc` (re-raised by the caller if it is not an
    /// `Exception`, so it is not raised a second time here). A cancelled
    /// task is a handler failure like any other: when the packet ended
    /// first (deadline, stop), nobody waits for this answer any more.
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = CANCELLED_ERROR.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("CancelledError")?.unbind())
        })?;
        let was_cancelled = exc.is_instance(cancelled.bind(py))?;
        let err = PyErr::from_value(exc);
        self.send(|| {
            if was_cancelled {
                Err(PfError::failed(format!("{} was cancelled", self.handler.key)))
            } else {
                Err(errors::from_handler_exception(py, &err))
            }
        });
        bridge::take_deferred().map_or(Ok(()), Err)
    }
}

/// Where an `async def` handler runs.
pub(crate) enum LoopBinding {
    /// The loop that was running when it was registered.
    Fixed(Arc<Bridge>),
    /// Registered outside a loop: the submitting loop, else the reactor's
    /// home loop.
    Floating(Arc<HomeLoop>),
}

/// The core handler for an `async def` Python handler.
pub(crate) fn async_handler(handler: Arc<PyHandler>, binding: LoopBinding) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let target = match &binding {
            LoopBinding::Fixed(b) => Some(b.clone()),
            LoopBinding::Floating(home) => bridge::active().or_else(|| home.get()),
        };
        let Some(target) = target else {
            return future::ready(Err(PfError::failed(format!(
                "async handler {} has no event loop to run on: register it while a loop \
                 runs, or use the reactor from async code first",
                handler.key
            ))))
            .boxed();
        };
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(TaskSlot { task: Mutex::new(None), bridge: target.clone() });
        if bridge::is_active(&target) {
            // This thread is serving the handler's loop right now (an inline
            // poll or a drain), with the GIL: make the task at once.
            Python::attach(|py| start_task(py, &target, &handler, &data, ctx, tx, &slot));
        } else {
            let call = Invocation { handler: handler.clone(), data, ctx, reply: tx, slot: slot.clone() };
            target.push(Item::Job(Box::new(call)));
        }
        HandlerWait { rx, slot: Some(slot) }.boxed()
    }))
}

// ---- `def` handlers: a call on a handler thread ----

/// A `def` handler call waiting for a handler thread.
struct SyncCall {
    handler: Arc<PyHandler>,
    data: Value,
    /// Taken when the call is made.
    ctx: Option<Context>,
    /// Taken when the call is answered.
    reply: Option<oneshot::Sender<HandlerResult>>,
}

impl SyncCall {
    fn answer(&mut self, outcome: HandlerResult) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

impl PoolJob for SyncCall {
    fn abandoned(&self) -> bool {
        self.reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn start<'py>(&mut self, py: Python<'py>) -> Option<NextCall<'py>> {
        let ctx = self.ctx.take()?;
        let made = (|| {
            let data = convert::to_py(py, &self.data)?;
            let ctx = Bound::new(py, PyContext::new(ctx))?.into_any();
            Ok::<_, PyErr>((self.handler.func.bind(py).clone(), data, ctx))
        })();
        match made {
            Ok(call) => Some(call),
            Err(e) => {
                self.answer(Err(PfError::failed(format!("could not convert the data: {e}"))));
                None
            }
        }
    }

    fn finish(mut self: Box<Self>, py: Python<'_>, outcome: PyResult<Bound<'_, PyAny>>) {
        let outcome = sync_outcome(py, &self.handler, outcome);
        self.answer(outcome);
    }

    fn refuse(mut self: Box<Self>) {
        self.answer(Err(PfError::new(ErrorCode::Unavailable, "the reactor is stopped")));
    }
}

/// The core handler for a `def` Python handler.
pub(crate) fn sync_handler(handler: Arc<PyHandler>, pool: Arc<Pool>) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let (tx, rx) = oneshot::channel();
        pool.push(Box::new(SyncCall { handler: handler.clone(), data, ctx: Some(ctx), reply: Some(tx) }));
        HandlerWait { rx, slot: None }.boxed()
    }))
}

/// The packet's outcome for what a `def` handler returned or raised (on
/// its handler thread).
fn sync_outcome(py: Python<'_>, handler: &PyHandler, returned: PyResult<Bound<'_, PyAny>>) -> HandlerResult {
    match returned {
        Ok(value) => match convert::try_to_value(&value) {
            Ok(v) => Ok(v),
            Err(_) if is_awaitable(py, &value) => {
                let _ = value.call_method0("close");
                Err(PfError::failed(format!(
                    "{} returned a coroutine: register it as an `async def` function",
                    handler.key
                )))
            }
            Err(e) => Err(handler.not_json(&e)),
        },
        Err(err) => Err(errors::from_handler_exception(py, &err)),
    }
}

static ISAWAITABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn is_awaitable(py: Python<'_>, value: &Bound<'_, PyAny>) -> bool {
    let Ok(check) = ISAWAITABLE
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("inspect")?.getattr("isawaitable")?.unbind()))
    else {
        return false;
    };
    check.bind(py).call1((value,)).and_then(|r| r.is_truthy()).unwrap_or(false)
}

static ISCOROUTINEFUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `func` is an `async def` function (or an object whose
/// `__call__` is one).
pub(crate) fn is_async(py: Python<'_>, func: &Bound<'_, PyAny>) -> PyResult<bool> {
    let check = ISCOROUTINEFUNCTION
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("inspect")?.getattr("iscoroutinefunction")?.unbind())
        })?
        .bind(py);
    if check.call1((func,))?.is_truthy()? {
        return Ok(true);
    }
    if func.hasattr("__func__")? || !func.hasattr("__call__")? {
        return Ok(false);
    }
    let call = func.getattr("__call__")?;
    check.call1((call,))?.is_truthy()
}
