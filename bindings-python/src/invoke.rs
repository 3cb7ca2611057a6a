//! Calls of Python functions that the core asks for (a handler call, an
//! actor's turn), made where this binding runs Python code:
//!
//! - an `async def` function runs on an event loop (see [`LoopBinding`]), in
//!   an asyncio task of its own started in a fresh, empty
//!   `contextvars.Context`: what it would see behind a network hop. Its task
//!   is never the submitter's, so `asyncio.current_task()`,
//!   `asyncio.timeout()` and cancellation concern the call alone, and no
//!   context variable of the submitter (or of the code that registered the
//!   function) reaches it. The task's first step runs at once, where the call
//!   reaches the loop (inside `submit`, or a drain of the loop's inbox), as
//!   Python 3.12's eager tasks do: a function that answers without
//!   suspending costs no turn of the loop. A call whose task is cancelled
//!   fails with PF500, unless the core stopped waiting first (deadline,
//!   stop: it has answered, and the task was cancelled because of it).
//! - a `def` function runs off the event loop, on a thread of the reactor's
//!   [`Pool`], which takes the GIL once for every call that is ready; each
//!   call runs in a fresh `contextvars.Context`.
//!
//! What a call is (which function, which arguments, what its return value
//! means to the core) is a [`PyCall`]; this module makes it and reports how
//! it ended. Dropping the future of a call (the core stopped waiting)
//! cancels its task or drops it from the pool's queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use packetflow::{ErrorCode, PfError};
use parking_lot::Mutex;
use pyo3::exceptions::{
    PyException, PyGeneratorExit, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use pyo3::PyTraverseError;
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, HomeLoop, Item, LoopJob};
use crate::coroutine::{self, Resumed};
use crate::errors;
use crate::pool::{NextCall, Pool, PoolJob};

/// One call of a Python function for the core.
pub(crate) trait PyCall: Send + 'static {
    /// What the core gets when the function returns.
    type Output: Send + 'static;

    /// What is called, for messages: `df:transform`, `counter.increment`.
    fn label(&self) -> &str;

    /// The name of the asyncio task of an `async def` call.
    fn task_name<'py>(&self, py: Python<'py>) -> Bound<'py, PyString>;

    /// The function and its two arguments, made with the GIL on the thread
    /// that makes the call. Called once.
    fn prepare<'py>(&mut self, py: Python<'py>) -> PyResult<NextCall<'py>>;

    /// What the core gets for the value the function returned (an error:
    /// the value, or what the call left behind, cannot cross).
    fn returned(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Result<Self::Output, PfError>;
}

/// How a call ends for the core.
pub(crate) type CallResult<T> = Result<T, PfError>;

/// Where `async def` functions run.
pub(crate) enum LoopBinding {
    /// The loop that was running when the function was registered.
    Fixed(Arc<Bridge>),
    /// Registered outside a loop: the loop making the call if it is made
    /// on one, else the reactor's home loop.
    Floating(Arc<HomeLoop>),
}

impl LoopBinding {
    /// The binding for a function registered now: the running loop, if any.
    pub(crate) fn for_registration(
        py: Python<'_>,
        home: &Arc<HomeLoop>,
        what: &str,
    ) -> PyResult<LoopBinding> {
        Ok(match bridge::running_loop(py)? {
            Some(_) => LoopBinding::Fixed(bridge::current(py, what)?),
            None => LoopBinding::Floating(home.clone()),
        })
    }

    /// The loop a call made now runs on; `None` when there is none.
    pub(crate) fn target(&self) -> Option<Arc<Bridge>> {
        match self {
            LoopBinding::Fixed(b) => Some(b.clone()),
            LoopBinding::Floating(home) => bridge::active().or_else(|| home.get()),
        }
    }

    /// The loop of a call made for every loop's senders at once (an
    /// actor's turn: one mailbox serves them all): the reactor's home loop
    /// comes first, so that the turns of a floating type do not run on
    /// whichever loop happened to send first (and die with it).
    pub(crate) fn shared_target(&self) -> Option<Arc<Bridge>> {
        match self {
            LoopBinding::Fixed(b) => Some(b.clone()),
            LoopBinding::Floating(home) => home.get().or_else(bridge::active),
        }
    }
}

/// The outcome of a call; cancels its task (if it has one) when dropped
/// first, i.e. when the core stopped waiting for it.
pub(crate) struct CallWait<T> {
    rx: oneshot::Receiver<CallResult<T>>,
    slot: Option<Arc<TaskSlot>>,
}

impl<T> Future for CallWait<T> {
    type Output = CallResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<CallResult<T>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(answer) => {
                self.slot = None;
                Poll::Ready(answer.unwrap_or_else(|_| {
                    Err(PfError::new(ErrorCode::Unavailable, "the Python call ended without an answer"))
                }))
            }
        }
    }
}

impl<T> Drop for CallWait<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if let Some(task) = slot.task.lock().take() {
                slot.bridge.push(Item::Cancel(task));
            }
        }
    }
}

/// Makes `call`, an `async def` function, on `target`'s loop.
pub(crate) fn on_loop<C: PyCall>(call: C, target: Arc<Bridge>) -> CallWait<C::Output> {
    let (tx, rx) = oneshot::channel();
    let slot = Arc::new(TaskSlot { task: Mutex::new(None), bridge: target.clone() });
    if bridge::is_active(&target) {
        // This thread is serving the function's loop right now (an inline
        // poll or a drain), with the GIL: make the task at once.
        Python::attach(|py| start_task(py, &target, call, tx, &slot));
    } else {
        target.push(Item::Job(Box::new(Invocation { call, reply: tx, slot: slot.clone() })));
    }
    CallWait { rx, slot: Some(slot) }
}

/// Makes `call`, a `def` function, on a handler thread of `pool`.
pub(crate) fn on_pool<C: PyCall>(call: C, pool: &Pool) -> CallWait<C::Output> {
    let (tx, rx) = oneshot::channel();
    pool.push(Box::new(ThreadCall { call, reply: Some(tx) }));
    CallWait { rx, slot: None }
}

// ---- `async def`: a task of the loop per call ----

/// Where a call's asyncio task is kept, so that it can be cancelled if the
/// core stops waiting first.
struct TaskSlot {
    task: Mutex<Option<Py<PyAny>>>,
    bridge: Arc<Bridge>,
}

/// An `async def` call on its way to its loop.
struct Invocation<C: PyCall> {
    call: C,
    reply: oneshot::Sender<CallResult<C::Output>>,
    slot: Arc<TaskSlot>,
}

impl<C: PyCall> LoopJob for Invocation<C> {
    fn run(self: Box<Self>, py: Python<'_>, bridge: &Arc<Bridge>) {
        if self.reply.is_closed() {
            return; // the core stopped waiting (deadline, stop)
        }
        let Invocation { call, reply, slot } = *self;
        start_task(py, bridge, call, reply, &slot);
    }

    fn loop_closed(self: Box<Self>) {
        let message = format!("the event loop {} runs on is closed", self.call.label());
        let _ = self.reply.send(Err(PfError::new(ErrorCode::Unavailable, message)));
    }
}

/// What starting an `async def` call needs from Python, looked up once.
struct Support {
    /// `contextvars.Context`.
    new_context: Py<PyAny>,
    /// `asyncio.CancelledError`.
    cancelled_error: Py<PyAny>,
    /// `types.CoroutineType`.
    coroutine_type: Py<PyAny>,
}

static SUPPORT: PyOnceLock<Support> = PyOnceLock::new();

fn support(py: Python<'_>) -> PyResult<&Support> {
    SUPPORT.get_or_try_init(py, || {
        Ok::<_, PyErr>(Support {
            new_context: py.import("contextvars")?.getattr("Context")?.unbind(),
            cancelled_error: py.import("asyncio")?.getattr("CancelledError")?.unbind(),
            coroutine_type: py.import("types")?.getattr("CoroutineType")?.unbind(),
        })
    })
}

/// Starts an `async def` call as a task of `bridge`'s loop, in a fresh
/// context, and runs its first step at once: a call that ends in that step
/// is answered before this returns. The task's coroutine is a
/// [`CallCoroutine`], which reports the call's end itself.
fn start_task<C: PyCall>(
    py: Python<'_>,
    bridge: &Bridge,
    mut call: C,
    reply: oneshot::Sender<CallResult<C::Output>>,
    slot: &TaskSlot,
) {
    let (func, first, second) = match call.prepare(py) {
        Ok(prepared) => prepared,
        Err(err) => {
            let _ = reply.send(Err(not_started(py, call.label(), &err)));
            return;
        }
    };
    let task_name = call.task_name(py);
    let coro = CallCoroutine {
        name: task_name.clone().unbind(),
        state: Mutex::new(CoroutineState::Unstarted(func.unbind(), first.unbind(), second.unbind())),
        pending: Mutex::new(Some(Box::new(Pending { call, reply }))),
    };
    let coro = match Bound::new(py, coro) {
        Ok(coro) => coro,
        // The answer channel went with the failed object: the call ends
        // with "the Python call ended without an answer".
        Err(_) => return,
    };
    let made = support(py)
        .and_then(|support| support.new_context.bind(py).call0())
        .and_then(|context| bridge.tasks().make(py, coro.as_any(), &task_name, &context));
    let made = match made {
        Ok(made) => made,
        Err(err) => {
            if let Err(deferred) = coro.get().not_started(py, &err) {
                // Not raised here: this is a poll or a drain.
                bridge::defer_raise(deferred);
            }
            return;
        }
    };
    *slot.task.lock() = Some(made.task().clone().unbind());
    // Its first step now: a function that does not suspend answers before
    // this returns.
    if let Err(err) = bridge.tasks().run_first_step(py, made) {
        // A KeyboardInterrupt or SystemExit raised by the function goes on
        // once the call is answered; anything else left the step to run on
        // the loop's next turn.
        bridge::defer_raise_unless_exception(py, err);
    }
}

fn not_started(py: Python<'_>, label: &str, err: &PyErr) -> PfError {
    PfError::failed(format!(
        "{label} could not be started on its event loop: {}",
        errors::from_handler_exception(py, err).message
    ))
}

/// How a call ended.
enum Ended<'py> {
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
    Cancelled,
    Failed(PfError),
}

/// A call whose task runs, waiting for its end (type-erased for
/// [`CallCoroutine`], which Python holds).
trait Finish: Send {
    /// What is called, for messages.
    fn label(&self) -> &str;
    /// Whether the core stopped waiting.
    fn abandoned(&self) -> bool;
    /// Hands the call's outcome to the core.
    fn finish(self: Box<Self>, py: Python<'_>, ended: Ended<'_>);
}

struct Pending<C: PyCall> {
    call: C,
    reply: oneshot::Sender<CallResult<C::Output>>,
}

impl<C: PyCall> Finish for Pending<C> {
    fn label(&self) -> &str {
        self.call.label()
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn finish(self: Box<Self>, py: Python<'_>, ended: Ended<'_>) {
        let Pending { mut call, reply } = *self;
        let outcome = match ended {
            Ended::Returned(value) => call.returned(py, &value),
            Ended::Raised(err) => Err(errors::from_handler_exception(py, &err)),
            Ended::Cancelled => Err(PfError::failed(format!("{} was cancelled", call.label()))),
            Ended::Failed(err) => Err(err),
        };
        let _ = reply.send(outcome);
    }
}

/// The coroutine of an `async def` call's task. What
///
/// ```python
/// async def call(fn, data, ctx):
///     try:
///         value = await fn(data, ctx)
///     except Exception as exc:
///         report(exc)             # the packet's error; the task ends well
///     except BaseException as exc:
///         report(exc)             # cancelled, KeyboardInterrupt...
///         raise                   # goes on as asyncio expects
///     else:
///         report(value)
/// ```
///
/// would do, without a Python frame around every step of the function: it
/// calls `fn` in its task's first step (so in the task's context, with the
/// task current), resumes the awaitable `fn` returned at each step, and
/// reports how the call ended from the step that ends it: no done-callback,
/// no extra turn of the loop. A task accepts it as a coroutine (it has
/// `send`, `throw`, `close` and `__await__`); its `__next__` is what the
/// task calls to resume it.
#[pyclass(frozen, module = "packetflow._native")]
struct CallCoroutine {
    /// What is called (`df:transform`, `counter.increment`): its
    /// `__qualname__`, so the task's repr shows `coro=<df:transform()>`.
    name: Py<PyString>,
    state: Mutex<CoroutineState>,
    /// Taken when the call ends.
    pending: Mutex<Option<Box<dyn Finish>>>,
}

enum CoroutineState {
    /// The function and its two arguments, not called yet.
    Unstarted(Py<PyAny>, Py<PyAny>, Py<PyAny>),
    /// Suspended in what the function returned (its iterator).
    Suspended(Py<PyAny>),
    /// Being resumed right now.
    Running,
    Ended,
}

/// How a [`CallCoroutine`] is resumed.
enum Resume<'py> {
    Send(Bound<'py, PyAny>),
    Throw(PyErr),
}

impl CallCoroutine {
    /// Ends the call with the error of a task that could not be started.
    fn not_started(&self, py: Python<'_>, err: &PyErr) -> PyResult<()> {
        // No lock is held while Python code runs (the message reads the
        // exception).
        let Some(label) = self.pending.lock().as_ref().map(|pending| pending.label().to_owned()) else {
            return Ok(());
        };
        self.end(py, Ended::Failed(not_started(py, &label, err)))
    }

    /// Hands `ended` to the core (once), unless it stopped waiting. An
    /// error is a KeyboardInterrupt or SystemExit that the hand-over caught
    /// (see [`bridge::defer_raise`]), to raise from the task's step.
    fn end(&self, py: Python<'_>, ended: Ended<'_>) -> PyResult<()> {
        let pending = self.pending.lock().take();
        if let Some(pending) = pending {
            if !pending.abandoned() {
                // A submitter may be waiting on this loop: let it see the
                // answer now rather than on the loop's next turn.
                bridge::answering(|| pending.finish(py, ended));
            }
        }
        bridge::take_deferred().map_or(Ok(()), Err)
    }

    /// Resumes the call; `Some` is what it yields, `None` that it ended.
    fn resume<'py>(&self, py: Python<'py>, how: Resume<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        // The state is taken out, so that no lock is held while Python
        // code runs (it may resume this object again, or collect it).
        let state = std::mem::replace(&mut *self.state.lock(), CoroutineState::Running);
        let resumed = match (state, how) {
            (CoroutineState::Unstarted(func, first, second), Resume::Send(value)) if value.is_none() => {
                match func.bind(py).call1((first, second)).and_then(|awaitable| iterator_of(py, awaitable)) {
                    Ok(iter) => {
                        let resumed = coroutine::send(&iter, &value);
                        (Some(iter), resumed)
                    }
                    Err(err) => (None, Resumed::Raised(err)),
                }
            }
            (unstarted @ CoroutineState::Unstarted(..), Resume::Send(_)) => {
                *self.state.lock() = unstarted;
                return Err(PyTypeError::new_err("can't send non-None value to a just-started coroutine"));
            }
            // Thrown in before it started: the call ends with it.
            (CoroutineState::Unstarted(..), Resume::Throw(err)) => (None, Resumed::Raised(err)),
            (CoroutineState::Suspended(iter), how) => {
                let iter = iter.into_bound(py);
                let resumed = match how {
                    Resume::Send(value) => coroutine::send(&iter, &value),
                    Resume::Throw(err) => coroutine::throw(&iter, err),
                };
                (Some(iter), resumed)
            }
            (CoroutineState::Running, _) => {
                return Err(PyValueError::new_err("coroutine already executing"));
            }
            (CoroutineState::Ended, _) => {
                *self.state.lock() = CoroutineState::Ended;
                return Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine"));
            }
        };
        let (iter, resumed) = resumed;
        match resumed {
            Resumed::Yielded(value) => {
                if let Some(iter) = iter {
                    *self.state.lock() = CoroutineState::Suspended(iter.unbind());
                }
                Ok(Some(value))
            }
            Resumed::Returned(value) => {
                *self.state.lock() = CoroutineState::Ended;
                self.end(py, Ended::Returned(value)).map(|()| None)
            }
            // The packet's error; the task itself ends well.
            Resumed::Raised(err) if err.is_instance_of::<PyException>(py) => {
                *self.state.lock() = CoroutineState::Ended;
                self.end(py, Ended::Raised(err)).map(|()| None)
            }
            // Cancelled, KeyboardInterrupt, SystemExit: the packet is told,
            // then the exception goes on as asyncio expects.
            Resumed::Raised(err) => {
                *self.state.lock() = CoroutineState::Ended;
                let cancelled = support(py).is_ok_and(|s| err.is_instance(py, s.cancelled_error.bind(py)));
                let ended = if cancelled { Ended::Cancelled } else { Ended::Raised(err.clone_ref(py)) };
                self.end(py, ended)?;
                Err(err)
            }
        }
    }
}

/// What `await awaitable` iterates: a coroutine itself, else what its
/// `__await__` returns.
fn iterator_of<'py>(py: Python<'py>, awaitable: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if awaitable.get_type().is(support(py)?.coroutine_type.bind(py)) {
        return Ok(awaitable);
    }
    match awaitable.getattr(pyo3::intern!(py, "__await__")) {
        Ok(method) => method.call0(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "object {} can't be used in 'await' expression",
            awaitable.get_type().name()?
        ))),
    }
}

#[pymethods]
impl CallCoroutine {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.resume(py, Resume::Send(py.None().into_bound(py)))
    }

    fn send<'py>(&self, py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.resume(py, Resume::Send(value))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (exc, value=None, traceback=None))]
    fn throw<'py>(
        &self,
        py: Python<'py>,
        exc: Bound<'py, PyAny>,
        value: Option<Bound<'py, PyAny>>,
        traceback: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = traceback;
        let err = match value {
            // The old form, `throw(type, value)`.
            Some(value) if !value.is_none() => PyErr::from_value(exc.call1((value,))?),
            _ if exc.is_instance_of::<PyType>() => PyErr::from_value(exc.call0()?),
            _ => PyErr::from_value(exc),
        };
        self.resume(py, Resume::Throw(err))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let state = std::mem::replace(&mut *self.state.lock(), CoroutineState::Ended);
        match state {
            // Closed while suspended: the call ends with GeneratorExit, as
            // it would have raised it at its `await`.
            CoroutineState::Suspended(iter) => {
                let iter = iter.into_bound(py);
                let closed = match iter.getattr(pyo3::intern!(py, "close")) {
                    Ok(close) => close.call0().map(drop),
                    Err(_) => Ok(()),
                };
                let exit = PyGeneratorExit::new_err(());
                self.end(py, Ended::Raised(exit))?;
                closed
            }
            CoroutineState::Running => {
                *self.state.lock() = CoroutineState::Running;
                Err(PyValueError::new_err("coroutine already executing"))
            }
            CoroutineState::Unstarted(..) | CoroutineState::Ended => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Skipped while it runs (the lock is then briefly held, or the
        // state is out): under-reporting only keeps objects alive longer.
        if let Some(state) = self.state.try_lock() {
            match &*state {
                CoroutineState::Unstarted(func, first, second) => {
                    visit.call(func)?;
                    visit.call(first)?;
                    visit.call(second)?;
                }
                CoroutineState::Suspended(iter) => visit.call(iter)?,
                CoroutineState::Running | CoroutineState::Ended => {}
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let state =
            self.state.try_lock().map(|mut state| std::mem::replace(&mut *state, CoroutineState::Ended));
        // Dropped with the lock released: dropping may run Python code.
        drop(state);
    }
}

// ---- `def`: a call on a handler thread ----

/// A `def` call waiting for a handler thread.
struct ThreadCall<C: PyCall> {
    call: C,
    /// Taken when the call is answered.
    reply: Option<oneshot::Sender<CallResult<C::Output>>>,
}

impl<C: PyCall> ThreadCall<C> {
    fn answer(&mut self, outcome: CallResult<C::Output>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

impl<C: PyCall> PoolJob for ThreadCall<C> {
    fn abandoned(&self) -> bool {
        self.reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn start<'py>(&mut self, py: Python<'py>) -> Option<NextCall<'py>> {
        match self.call.prepare(py) {
            Ok(call) => Some(call),
            Err(err) => {
                let error = PfError::failed(format!(
                    "{} could not be called: {}",
                    self.call.label(),
                    errors::from_handler_exception(py, &err).message
                ));
                self.answer(Err(error));
                None
            }
        }
    }

    fn finish(mut self: Box<Self>, py: Python<'_>, outcome: PyResult<Bound<'_, PyAny>>) {
        let outcome = match outcome {
            Ok(value) => match self.call.returned(py, &value) {
                Err(_) if is_awaitable(py, &value) => {
                    let _ = value.call_method0("close");
                    Err(PfError::failed(format!(
                        "{} returned a coroutine: define it with `async def`",
                        self.call.label()
                    )))
                }
                other => other,
            },
            Err(err) => Err(errors::from_handler_exception(py, &err)),
        };
        self.answer(outcome);
    }

    fn refuse(mut self: Box<Self>) {
        self.answer(Err(PfError::new(ErrorCode::Unavailable, "the reactor is stopped")));
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
