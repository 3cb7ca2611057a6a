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
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, HomeLoop, Item, LoopJob};
use crate::eager;
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

    /// Whether calling `func`, the function of an `async def` call just
    /// prepared, only makes its coroutine and runs none of its code (a
    /// plain `async def` function or a method of one, see
    /// [`coroutine_function`]): then the call is made before its task
    /// exists, and the coroutine is the task's own; any other function is
    /// called inside the task (`packetflow._support.call_in_task`).
    fn only_makes_coroutine(&self, py: Python<'_>, func: &Bound<'_, PyAny>) -> bool;

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
    /// `packetflow._support.call_in_task`: the coroutine of a call whose
    /// function is not a plain `async def` function.
    call_in_task: Py<PyAny>,
    /// `contextvars.Context`.
    new_context: Py<PyAny>,
    /// `asyncio.CancelledError`.
    cancelled_error: Py<PyAny>,
}

static SUPPORT: PyOnceLock<Support> = PyOnceLock::new();

fn support(py: Python<'_>) -> PyResult<&Support> {
    SUPPORT.get_or_try_init(py, || {
        Ok::<_, PyErr>(Support {
            call_in_task: py.import("packetflow._support")?.getattr("call_in_task")?.unbind(),
            new_context: py.import("contextvars")?.getattr("Context")?.unbind(),
            cancelled_error: py.import("asyncio")?.getattr("CancelledError")?.unbind(),
        })
    })
}

/// Starts an `async def` call as a task of `bridge`'s loop, in a fresh
/// context, and runs its first step at once. A call that ends in that step
/// is answered before this returns, straight from the task's outcome; one
/// that suspends is answered by a done-callback of its task.
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
    let direct = call.only_makes_coroutine(py, &func);
    let task_name = call.task_name(py);
    let pending = Pending { call, reply };
    let support = match support(py) {
        Ok(support) => support,
        Err(err) => {
            let error = not_started(py, pending.call.label(), &err);
            return report(py, Box::new(pending), Ended::Failed(error));
        }
    };
    let coro = if direct {
        // Only makes the coroutine: an exception here (arguments that do
        // not fit) is the one the task would have raised.
        match func.call1((first, second)) {
            Ok(coro) => coro,
            Err(err) => return raised_outside_task(py, Box::new(pending), err),
        }
    } else {
        match support.call_in_task.bind(py).call1((func, first, second)) {
            Ok(coro) => coro,
            Err(err) => {
                let error = not_started(py, pending.call.label(), &err);
                return report(py, Box::new(pending), Ended::Failed(error));
            }
        }
    };
    let made = support
        .new_context
        .bind(py)
        .call0()
        .and_then(|context| bridge.tasks().make(py, &coro, &task_name, &context));
    let made = match made {
        Ok(made) => made,
        Err(err) => {
            let _ = coro.call_method0(pyo3::intern!(py, "close"));
            let error = not_started(py, pending.call.label(), &err);
            return report(py, Box::new(pending), Ended::Failed(error));
        }
    };
    let task = made.task().clone();
    *slot.task.lock() = Some(task.clone().unbind());
    // Its first step now: a function that does not suspend ends before this
    // returns.
    let stepped = bridge.tasks().run_first_step(py, made);
    match outcome(py, support, &task) {
        Some(ended) => report(py, Box::new(pending), ended),
        None => {
            let callback = Py::new(py, TaskReply { pending: Mutex::new(Some(Box::new(pending))) })
                .and_then(|callback| task.call_method1(pyo3::intern!(py, "add_done_callback"), (callback,)));
            if let Err(err) = callback {
                // Nothing would ever report this task's end: stop it (the
                // call ends with "the Python call ended without an answer").
                let _ = task.call_method0(pyo3::intern!(py, "cancel"));
                bridge::defer_raise_unless_exception(py, err);
            }
        }
    }
    if let Err(err) = stepped {
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

/// The call of a plain `async def` function raised before its task was
/// made: the call ends as if its task had raised it.
fn raised_outside_task(py: Python<'_>, pending: Box<dyn Finish>, err: PyErr) {
    let again = (!err.is_instance_of::<PyException>(py)).then(|| err.clone_ref(py));
    report(py, pending, Ended::Raised(err));
    if let Some(err) = again {
        bridge::defer_raise(err);
    }
}

/// How a call's task ended.
enum Ended<'py> {
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
    Cancelled,
    Failed(PfError),
}

/// How `task` ended; `None` while it runs. Reading it marks an exception
/// as retrieved (asyncio logs none for it).
fn outcome<'py>(py: Python<'py>, support: &Support, task: &Bound<'py, PyAny>) -> Option<Ended<'py>> {
    Some(match eager::outcome(py, task)? {
        Ok(value) => Ended::Returned(value),
        // A task whose coroutine raises CancelledError is cancelled, so
        // this is only ever raised for a cancelled task.
        Err(err) if err.is_instance(py, support.cancelled_error.bind(py)) => Ended::Cancelled,
        Err(err) => Ended::Raised(err),
    })
}

/// Hands `ended` to the core, unless it stopped waiting.
fn report(py: Python<'_>, pending: Box<dyn Finish>, ended: Ended<'_>) {
    if !pending.abandoned() {
        // A submitter may be waiting on this loop: let it see the answer
        // now rather than on the loop's next turn.
        bridge::answering(|| pending.finish(py, ended));
    }
}

/// A call whose task runs, waiting for its end (type-erased for
/// [`TaskReply`], which Python holds).
trait Finish: Send {
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

/// The done-callback of a call's task that suspended in its first step:
/// reports how the task ended.
#[pyclass(frozen, module = "packetflow._native")]
struct TaskReply {
    pending: Mutex<Option<Box<dyn Finish>>>,
}

#[pymethods]
impl TaskReply {
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) -> PyResult<()> {
        let Some(pending) = self.pending.lock().take() else { return Ok(()) };
        let ended = outcome(py, support(py)?, &task).unwrap_or_else(|| {
            Ended::Failed(PfError::failed("the call's task reported its end while still running"))
        });
        report(py, pending, ended);
        bridge::take_deferred().map_or(Ok(()), Err)
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

static COROUTINE_FUNCTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The plain `async def` function `func` is, or is a bound method of (see
/// `packetflow._support.coroutine_function`); `None` for anything else, or
/// if that cannot be told (its calls are then made inside their tasks).
pub(crate) fn coroutine_function<'py>(
    py: Python<'py>,
    func: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    let check = COROUTINE_FUNCTION
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("packetflow._support")?.getattr("coroutine_function")?.unbind())
        })
        .ok()?;
    check.bind(py).call1((func,)).ok().filter(|found| !found.is_none())
}

static METHOD_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `func` is `function` or a method bound to it.
pub(crate) fn is_or_binds(py: Python<'_>, func: &Bound<'_, PyAny>, function: &Bound<'_, PyAny>) -> bool {
    if func.is(function) {
        return true;
    }
    let Ok(method_type) = METHOD_TYPE
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("types")?.getattr("MethodType")?.unbind()))
    else {
        return false;
    };
    func.get_type().is(method_type.bind(py))
        && func.getattr(pyo3::intern!(py, "__func__")).is_ok_and(|bound| bound.is(function))
}
