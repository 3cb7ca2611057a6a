//! Python handlers as core handlers.
//!
//! - A `def` handler runs off the event loop, on a thread of the reactor's
//!   [`Pool`](crate::pool::Pool), which takes the GIL once for every call
//!   that is ready.
//! - An `async def` handler runs on the loop that registered it (or, when it
//!   was registered outside any loop, on the loop that submits the packet,
//!   else the reactor's home loop). On that loop the coroutine is started at
//!   once: one that finishes without suspending costs no task at all; one
//!   that suspends continues in an asyncio task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::{self, BoxFuture, FutureExt};
use packetflow::{Context, ErrorCode, Handler, HandlerResult, PfError, Value};
use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, Item};
use crate::context::PyContext;
use crate::pool::{Pool, SyncCall};
use crate::reactor::Shared;
use crate::{convert, coroutine, errors};

/// A registered Python callable.
pub(crate) struct PyHandler {
    pub(crate) func: Py<PyAny>,
    /// `group:element`, for messages.
    pub(crate) key: String,
    /// How many of the last eager starts of this `async def` handler
    /// suspended (saturating at [`SUSPEND_LIMIT`]).
    suspended: AtomicU32,
    /// Calls counted while eager starts are off, to try one now and then.
    skipped: AtomicU32,
}

/// After this many eager starts in a row that suspended, a handler's
/// coroutine goes straight into a task: starting it eagerly only pays off
/// when it can finish without suspending.
const SUSPEND_LIMIT: u32 = 4;
/// While eager starts are off, one call in this many still tries one, so a
/// handler whose behaviour changes gets them back.
const PROBE_EVERY: u32 = 128;

impl PyHandler {
    pub(crate) fn new(func: Py<PyAny>, key: String) -> PyHandler {
        PyHandler { func, key, suspended: AtomicU32::new(0), skipped: AtomicU32::new(0) }
    }

    fn start_eagerly(&self) -> bool {
        if self.suspended.load(Ordering::Relaxed) < SUSPEND_LIMIT {
            return true;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1
    }

    fn note_eager_start(&self, suspended: bool) {
        if suspended {
            let n = self.suspended.load(Ordering::Relaxed);
            if n < SUSPEND_LIMIT {
                self.suspended.store(n + 1, Ordering::Relaxed);
            }
        } else {
            self.suspended.store(0, Ordering::Relaxed);
        }
    }
}

/// An `async def` handler call waiting for its loop.
pub(crate) struct Invocation {
    handler: Arc<PyHandler>,
    data: Value,
    ctx: Context,
    reply: oneshot::Sender<HandlerResult>,
    slot: Arc<TaskSlot>,
}

impl Invocation {
    /// Answers the call without running it.
    pub(crate) fn refuse(self, err: PfError) {
        let _ = self.reply.send(Err(err));
    }
}

/// Where a suspended handler's asyncio task is kept, so that the packet can
/// cancel it if it ends first.
pub(crate) struct TaskSlot {
    task: Mutex<Option<Py<PyAny>>>,
    bridge: Arc<Bridge>,
}

/// Waits for a handler's answer; cancels its task if dropped first.
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

fn interrupt(py: Python<'_>, err: &PyErr) -> bool {
    // KeyboardInterrupt, SystemExit and the like: not a handler failure the
    // packet can absorb; the packet fails, then the exception goes on.
    !err.is_instance_of::<PyException>(py)
}

/// The packet's outcome for what a handler returned.
fn outcome_of(py: Python<'_>, handler: &PyHandler, returned: PyResult<Bound<'_, PyAny>>) -> HandlerResult {
    match returned {
        Ok(value) => convert::try_to_value(&value).map_err(|e| {
            PfError::failed(format!(
                "{} returned a value that cannot cross as JSON: {}",
                handler.key,
                e.describe("result")
            ))
        }),
        Err(err) => {
            let failure = errors::from_handler_exception(py, &err);
            if interrupt(py, &err) {
                bridge::defer_raise(err);
            }
            Err(failure)
        }
    }
}

fn make_context(py: Python<'_>, ctx: Context) -> PyResult<Bound<'_, PyContext>> {
    Bound::new(py, PyContext::new(ctx))
}

/// What starting an `async def` handler gave.
enum Started {
    Done(HandlerResult),
    Suspended,
}

/// `packetflow._support.run_handler` and its not-started marker.
static SUPPORT: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

/// Calls the handler and runs its coroutine up to its first suspension.
/// When it suspends, the rest runs in an asyncio task whose result goes to
/// `reply`; when it does not, the result is returned and `reply` is unused.
fn start_async(
    py: Python<'_>,
    bridge: &Arc<Bridge>,
    handler: &Arc<PyHandler>,
    data: &Value,
    ctx: Context,
    reply: &mut Option<oneshot::Sender<HandlerResult>>,
    slot: &Arc<TaskSlot>,
) -> Started {
    let called = (|| {
        let data = convert::to_py(py, data)?;
        let ctx = make_context(py, ctx)?;
        handler.func.bind(py).call1((data, ctx))
    })();
    let coro = match called {
        Ok(coro) => coro,
        Err(err) => return Started::Done(outcome_of(py, handler, Err(err))),
    };
    let eager = handler.start_eagerly();
    let pending = if eager {
        let pending = match coroutine::step(&coro) {
            coroutine::Step::Yielded(pending) => pending,
            coroutine::Step::Returned(value) => {
                handler.note_eager_start(false);
                return Started::Done(outcome_of(py, handler, Ok(value)));
            }
            coroutine::Step::NotACoroutine => {
                // A function that returned a plain value: that is the answer.
                return Started::Done(outcome_of(py, handler, Ok(coro)));
            }
            coroutine::Step::Raised(err) => {
                handler.note_eager_start(false);
                return Started::Done(outcome_of(py, handler, Err(err)));
            }
        };
        handler.note_eager_start(true);
        Some(pending)
    } else {
        None
    };
    let task = (|| {
        let support = SUPPORT.get_or_try_init(py, || {
            let module = py.import("packetflow._support")?;
            Ok::<_, PyErr>((module.getattr("run_handler")?.unbind(), module.getattr("NOT_STARTED")?.unbind()))
        })?;
        let pending = match pending {
            Some(pending) => pending,
            None => support.1.bind(py).clone(),
        };
        let reply = Py::new(py, Reply { reply: Mutex::new(reply.take()), handler: handler.clone() })?;
        let wrapper = support.0.bind(py).call1((&coro, pending, reply))?;
        bridge.event_loop().bind(py).call_method1(pyo3::intern!(py, "create_task"), (wrapper,))
    })();
    match task {
        Ok(task) => {
            *slot.task.lock() = Some(task.unbind());
            Started::Suspended
        }
        Err(err) => {
            let _ = coro.call_method0("close");
            Started::Done(Err(PfError::failed(format!(
                "{} could not be scheduled on its event loop: {}",
                handler.key,
                errors::from_handler_exception(py, &err).message
            ))))
        }
    }
}

/// How a suspended handler's task reports its end (called by
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
            let _ = reply.send(outcome());
        }
    }
}

static CANCELLED_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Reply {
    /// The handler returned `value`.
    fn done(&self, py: Python<'_>, value: Bound<'_, PyAny>) {
        self.send(|| outcome_of(py, &self.handler, Ok(value)));
    }

    /// The handler raised `exc` (re-raised by the caller if it is not an
    /// `Exception`, so it is not raised a second time here).
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = CANCELLED_ERROR.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("CancelledError")?.unbind())
        })?;
        let was_cancelled = exc.is_instance(cancelled.bind(py))?;
        let err = PyErr::from_value(exc);
        self.send(|| {
            if was_cancelled {
                Err(PfError::new(ErrorCode::Unavailable, format!("{} was cancelled", self.handler.key)))
            } else {
                Err(errors::from_handler_exception(py, &err))
            }
        });
        Ok(())
    }
}

/// Runs an invocation that reached its loop's inbox.
pub(crate) fn run_invocation(py: Python<'_>, bridge: &Arc<Bridge>, inv: Invocation) {
    if inv.reply.is_closed() {
        return; // the packet already ended (deadline, stop)
    }
    let Invocation { handler, data, ctx, reply, slot } = inv;
    let mut reply = Some(reply);
    if let Started::Done(outcome) = start_async(py, bridge, &handler, &data, ctx, &mut reply, &slot) {
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Where an `async def` handler runs.
pub(crate) enum LoopBinding {
    /// The loop that was running when it was registered.
    Fixed(Arc<Bridge>),
    /// Registered outside a loop: the submitting loop, else the home loop.
    Floating,
}

/// The core handler for an `async def` Python handler.
pub(crate) fn async_handler(handler: Arc<PyHandler>, binding: LoopBinding, shared: Arc<Shared>) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let target = match &binding {
            LoopBinding::Fixed(b) => Some(b.clone()),
            LoopBinding::Floating => bridge::active().or_else(|| shared.home()),
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
            // poll or a drain), with the GIL: start the coroutine at once.
            let mut reply = Some(tx);
            let started =
                Python::attach(|py| start_async(py, &target, &handler, &data, ctx, &mut reply, &slot));
            match started {
                Started::Done(outcome) => future::ready(outcome).boxed(),
                Started::Suspended => HandlerWait { rx, slot: Some(slot) }.boxed(),
            }
        } else {
            let inv = Invocation { handler: handler.clone(), data, ctx, reply: tx, slot: slot.clone() };
            target.push(Item::Invoke(inv));
            HandlerWait { rx, slot: Some(slot) }.boxed()
        }
    }))
}

/// The core handler for a `def` Python handler.
pub(crate) fn sync_handler(handler: Arc<PyHandler>, pool: Arc<Pool>) -> Handler {
    Handler::Async(Arc::new(move |data: Value, ctx: Context| -> BoxFuture<'static, HandlerResult> {
        let (tx, rx) = oneshot::channel();
        pool.push(SyncCall { handler: handler.clone(), data, ctx, reply: tx });
        HandlerWait { rx, slot: None }.boxed()
    }))
}

/// The packet's outcome for what a `def` handler returned or raised (on
/// its handler thread).
pub(crate) fn sync_outcome(
    py: Python<'_>,
    handler: &PyHandler,
    returned: PyResult<Bound<'_, PyAny>>,
) -> HandlerResult {
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
            Err(e) => Err(PfError::failed(format!(
                "{} returned a value that cannot cross as JSON: {}",
                handler.key,
                e.describe("result")
            ))),
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
