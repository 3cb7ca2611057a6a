//! Calls of Python functions that the core asks for (a handler call, an
//! actor's turn), made where this binding runs Python code:
//!
//! - an `async def` function runs on an event loop (see [`LoopBinding`]), in
//!   an asyncio task of its own and a fresh, empty `contextvars.Context`:
//!   what it would see behind a network hop ([`call_task`] tells how). A
//!   call whose task is cancelled fails with PF500, unless the core stopped
//!   waiting first (deadline, stop: it has answered, and the task was
//!   cancelled because of it).
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
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use tokio::sync::oneshot;

use crate::bridge::{self, Bridge, HomeLoop, Item, LoopJob};
use crate::call_task::{self, CallStart, Ended, Finish};
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
            // Cancelled on the loop's thread, if it is still served then.
            if slot.task.lock().is_some() {
                slot.bridge.push(Item::Job(Box::new(CancelCall(slot.clone()))));
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
        Python::attach(|py| start_on_loop(py, &target, call, tx, slot.clone()));
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

// ---- `async def`: a call served by a task of the loop ----

/// Where the task serving a call is kept while it serves it, so that the
/// call can be cancelled if the core stops waiting first.
struct TaskSlot {
    task: Mutex<Option<Py<PyAny>>>,
    bridge: Arc<Bridge>,
}

/// Cancels the task serving a call, if it still serves it (a task serves
/// calls one after another: once the call ended, its task is left alone).
struct CancelCall(Arc<TaskSlot>);

impl LoopJob for CancelCall {
    fn run(self: Box<Self>, py: Python<'_>, _bridge: &Arc<Bridge>) {
        let task = self.0.task.lock().take();
        if let Some(task) = task {
            let _ = task.bind(py).call_method0(pyo3::intern!(py, "cancel"));
        }
    }

    fn loop_closed(self: Box<Self>) {}
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
        start_on_loop(py, bridge, call, reply, slot);
    }

    fn loop_closed(self: Box<Self>) {
        let message = format!("the event loop {} runs on is closed", self.call.label());
        let _ = self.reply.send(Err(PfError::new(ErrorCode::Unavailable, message)));
    }
}

/// Starts an `async def` call on `bridge`'s loop (see [`call_task`]).
fn start_on_loop<C: PyCall>(
    py: Python<'_>,
    bridge: &Arc<Bridge>,
    mut call: C,
    reply: oneshot::Sender<CallResult<C::Output>>,
    slot: Arc<TaskSlot>,
) {
    let (func, first, second) = match call.prepare(py) {
        Ok(prepared) => prepared,
        Err(err) => {
            let _ = reply.send(Err(not_started(py, call.label(), &err)));
            return;
        }
    };
    let name = call.task_name(py).unbind();
    let finish = Box::new(Pending { call, reply, slot });
    let start =
        CallStart { func: func.unbind(), first: first.unbind(), second: second.unbind(), name, finish };
    call_task::start(py, bridge, start);
}

fn not_started(py: Python<'_>, label: &str, err: &PyErr) -> PfError {
    PfError::failed(format!(
        "{label} could not be started on its event loop: {}",
        errors::from_handler_exception(py, err).message
    ))
}

/// An `async def` call being served, waiting for its end.
struct Pending<C: PyCall> {
    call: C,
    reply: oneshot::Sender<CallResult<C::Output>>,
    slot: Arc<TaskSlot>,
}

impl<C: PyCall> Finish for Pending<C> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn served_by(&self, task: &Bound<'_, PyAny>) {
        let old = self.slot.task.lock().replace(task.clone().unbind());
        drop(old);
    }

    fn finish(self: Box<Self>, py: Python<'_>, ended: Ended<'_>) {
        let Pending { mut call, reply, slot } = *self;
        // Its task no longer serves it.
        let task = slot.task.lock().take();
        drop(task);
        let outcome = match ended {
            Ended::Returned(value) => call.returned(py, &value),
            Ended::Raised(err) => Err(errors::from_handler_exception(py, &err)),
            Ended::Cancelled => Err(PfError::failed(format!("{} was cancelled", call.label()))),
            Ended::NotStarted(err) => Err(not_started(py, call.label(), &err)),
        };
        let _ = reply.send(outcome);
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
