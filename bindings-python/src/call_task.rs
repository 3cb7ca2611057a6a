//! `async def` calls, each run by an asyncio task of its own; a task whose
//! call has ended waits for the next one and serves it.
//!
//! A call runs as it would behind a network hop: in a task that is not the
//! submitter's (so `asyncio.current_task()`, `asyncio.timeout()` and
//! cancellation concern the call alone) and in a fresh, empty
//! `contextvars.Context` (no context variable of the submitter, or of the
//! code that registered the function, reaches it). Its first step runs at
//! once, where the call reaches the loop (inside `submit`, or a drain of the
//! loop's inbox), as Python 3.12's eager tasks do: a function that answers
//! without suspending costs no turn of the loop.
//!
//! Making an `asyncio.Task` is most of what such a call costs on CPython
//! 3.11 (its registration in `asyncio.all_tasks()` and its step wrapper are
//! Python code there), so tasks are kept for the next call rather than made
//! per call:
//!
//! ```text
//!   a call reaches its loop
//!     a task of this loop is parked (plain loops only, see eager.rs)?
//!       yes: the call's first step runs now, as that task (it is made the
//!            loop's current task, the submitter steps aside), in the
//!            call's own fresh context
//!              ended (returned, raised)  answered; the task stays parked
//!              suspended                 handed to the task: its waiter is
//!                                        resolved, and at its next step it
//!                                        takes the call over
//!       no:  a new task is made for it (eager.rs: its first step at once)
//!   a task whose call ends inside one of its steps parks: it waits on a
//!   fresh future of the loop and is kept for the next call (at most
//!   eager::PARKED_MAX per loop; beyond that, or when a cancellation of it
//!   is pending, it ends)
//!   cancelled while it serves a call: the call ends with PF500 and the
//!   task ends cancelled; cancelled while parked: it ends
//! ```
//!
//! A parked task is pending, so it is listed by `asyncio.all_tasks()` (named
//! after the last call it served) and cancelled by `asyncio.run` at its end
//! like any other; it does not log "Task was destroyed but it is pending"
//! when its loop is closed without cancelling it.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::exceptions::{
    PyException, PyGeneratorExit, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use pyo3::PyTraverseError;

use crate::bridge::{self, Bridge};
use crate::coroutine::{self, Resumed};

/// How a call ended.
pub(crate) enum Ended<'py> {
    Returned(Bound<'py, PyAny>),
    Raised(PyErr),
    Cancelled,
    /// It could not be started.
    NotStarted(PyErr),
}

/// Whoever waits for a call: told which task serves it and how it ended.
pub(crate) trait Finish: Send {
    /// Whether nobody waits any more.
    fn abandoned(&self) -> bool;
    /// The call is served by `task` from now on: cancelling `task`
    /// cancels the call.
    fn served_by(&self, task: &Bound<'_, PyAny>);
    /// Hands the call's outcome over.
    fn finish(self: Box<Self>, py: Python<'_>, ended: Ended<'_>);
}

/// A call to start: the function, its two arguments, the name of its task
/// (`df:transform`, `counter.increment`) and whoever waits.
pub(crate) struct CallStart {
    pub(crate) func: Py<PyAny>,
    pub(crate) first: Py<PyAny>,
    pub(crate) second: Py<PyAny>,
    pub(crate) name: Py<PyString>,
    pub(crate) finish: Box<dyn Finish>,
}

/// What serving calls needs from Python, looked up once.
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

fn is_cancelled_error(py: Python<'_>, err: &PyErr) -> bool {
    support(py).is_ok_and(|s| err.is_instance(py, s.cancelled_error.bind(py)))
}

/// Starts `call` on `bridge`'s loop (on its thread, with the GIL, inside a
/// poll or a drain): by a parked task if there is one, else by a new task.
/// A call that ends in its first step is answered before this returns.
pub(crate) fn start(py: Python<'_>, bridge: &Arc<Bridge>, mut call: CallStart) {
    while let Some((task, coro)) = bridge.tasks().unpark(py) {
        let Ok(coro) = coro.into_bound(py).cast_into::<CallCoroutine>() else { continue };
        match serve_parked(&coro, bridge, &task.into_bound(py), call) {
            Ok(()) => return,
            Err(back) => call = back,
        }
    }
    start_in_new_task(py, bridge, call);
}

/// Makes a task for `call` and runs its first step at once.
fn start_in_new_task(py: Python<'_>, bridge: &Arc<Bridge>, call: CallStart) {
    let CallStart { func, first, second, name, finish } = call;
    let coro = CallCoroutine {
        name: Mutex::new(name.clone_ref(py)),
        state: Mutex::new(State::Unstarted(Unstarted { func, first, second, finish })),
        bridge: Arc::downgrade(bridge),
        spare_context: Mutex::new(None),
    };
    let coro = match Bound::new(py, coro) {
        Ok(coro) => coro,
        // The waiter went with the failed object: the call ends with "the
        // Python call ended without an answer".
        Err(_) => return,
    };
    let made = support(py)
        .and_then(|support| support.new_context.bind(py).call0())
        .and_then(|context| bridge.tasks().make(py, coro.as_any(), name.bind(py), &context));
    let made = match made {
        Ok(made) => made,
        Err(err) => {
            if let Err(deferred) = coro.get().not_started(py, err) {
                // Not raised here: this is a poll or a drain.
                bridge::defer_raise(deferred);
            }
            return;
        }
    };
    let task = made.task().clone();
    // Not logged if its loop is closed while it is parked.
    let _ = task.setattr(pyo3::intern!(py, "_log_destroy_pending"), false);
    if let State::Unstarted(unstarted) = &*coro.get().state.lock() {
        unstarted.finish.served_by(&task);
    }
    // Its first step now: a function that does not suspend answers before
    // this returns.
    if let Err(err) = bridge.tasks().run_first_step(py, made) {
        // A KeyboardInterrupt or SystemExit raised by the function goes on
        // once the call is answered; anything else left the step to run on
        // the loop's next turn.
        bridge::defer_raise_unless_exception(py, err);
    }
}

/// Runs `call`'s first step as `task`, which is parked; `Err` gives the
/// call back when `task` cannot take it (it was cancelled while parked).
fn serve_parked(
    coro: &Bound<'_, CallCoroutine>,
    bridge: &Arc<Bridge>,
    task: &Bound<'_, PyAny>,
    call: CallStart,
) -> Result<(), CallStart> {
    let py = coro.py();
    let this = coro.get();
    let state = std::mem::replace(&mut *this.state.lock(), State::Running);
    let waiter = match state {
        State::Parked(waiter) => waiter.into_bound(py),
        other => {
            *this.state.lock() = other;
            return Err(call);
        }
    };
    let spare = this.spare_context.lock().take().map(|context| context.into_bound(py));
    let context = spare.map_or_else(|| support(py).and_then(|s| s.new_context.bind(py).call0()), Ok);
    let (Ok(context), false) = (context, is_done(&waiter)) else {
        // Cancelled while parked: it ends at its next step.
        *this.state.lock() = State::Parked(waiter.unbind());
        return Err(call);
    };
    let CallStart { func, first, second, name, finish } = call;
    this.rename(task, name);
    let ran = bridge.tasks().run_as(py, task, || {
        coroutine::in_context(&context, || start_call(py, func.bind(py), first.bind(py), second.bind(py)))
    });
    let (iter, resumed) = match ran.and_then(|ran| ran) {
        Ok(ran) => ran,
        Err(err) => (None, Resumed::Raised(err)),
    };
    let ended = match (resumed, iter) {
        (Resumed::Yielded(yielded), Some(iter)) => {
            // Suspended: the task takes the call over at its next step,
            // which resolving its waiter schedules. (A waiter cancelled
            // meanwhile, by the call cancelling its task, schedules that
            // step already: the call is then thrown CancelledError.)
            // Only now can the call be cancelled from outside (nobody
            // could give up on it while its first step ran on this thread,
            // but a waiter on another thread may have): from here on,
            // cancelling the task cancels it.
            finish.served_by(task);
            let abandoned = finish.abandoned();
            let serving = Serving { iter: iter.unbind(), context: Some(context.unbind()), finish };
            *this.state.lock() = State::Handed(serving, yielded.unbind());
            if !is_done(&waiter) {
                if let Err(err) = waiter.call_method1(pyo3::intern!(py, "set_result"), (py.None(),)) {
                    bridge::defer_raise_unless_exception(py, err);
                }
            }
            if abandoned {
                let _ = task.call_method0(pyo3::intern!(py, "cancel"));
            }
            return Ok(());
        }
        (Resumed::Yielded(_), None) => unreachable!("only a started call suspends"),
        (Resumed::Returned(value), _) => Ended::Returned(value),
        (Resumed::Raised(err), _) if err.is_instance_of::<PyException>(py) => Ended::Raised(err),
        // The call's own BaseException: its task is not concerned (it never
        // went through a step of the task). A KeyboardInterrupt or
        // SystemExit goes on once the call is answered.
        (Resumed::Raised(err), _) if is_cancelled_error(py, &err) => Ended::Cancelled,
        (Resumed::Raised(err), _) => {
            let ended = Ended::Raised(err.clone_ref(py));
            bridge::defer_raise(err);
            ended
        }
    };
    // A context the call left empty is as fresh as a new one: kept for the
    // next call. (No Python code can hold the Context object itself:
    // `copy_context()` copies it.)
    if context.len().is_ok_and(|len| len == 0) {
        *this.spare_context.lock() = Some(context.unbind());
    }
    *this.state.lock() = State::Parked(waiter.clone().unbind());
    if let Err(deferred) = end(py, finish, ended) {
        bridge::defer_raise(deferred);
    }
    // Parked again, unless the call cancelled its task.
    if !is_done(&waiter) {
        bridge.tasks().park_again(task.clone().unbind(), coro.clone().into_any().unbind());
    }
    Ok(())
}

/// Whether `future` is done (a future that cannot say is taken as done).
fn is_done(future: &Bound<'_, PyAny>) -> bool {
    let py = future.py();
    future.call_method0(pyo3::intern!(py, "done")).and_then(|done| done.is_truthy()).unwrap_or(true)
}

/// Calls `func(first, second)` and runs the awaitable it returns up to its
/// first suspension: the iterator, if there is one, and how it went.
fn start_call<'py>(
    py: Python<'py>,
    func: &Bound<'py, PyAny>,
    first: &Bound<'py, PyAny>,
    second: &Bound<'py, PyAny>,
) -> (Option<Bound<'py, PyAny>>, Resumed<'py>) {
    match func.call1((first, second)).and_then(|awaitable| iterator_of(py, awaitable)) {
        Ok(iter) => {
            let resumed = coroutine::send(&iter, &py.None().into_bound(py));
            (Some(iter), resumed)
        }
        Err(err) => (None, Resumed::Raised(err)),
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

/// Hands `ended` to whoever waits (once), unless nobody does. An error is
/// a KeyboardInterrupt or SystemExit that the hand-over caught (see
/// [`bridge::defer_raise`]), to raise from the task's step.
fn end(py: Python<'_>, finish: Box<dyn Finish>, ended: Ended<'_>) -> PyResult<()> {
    if !finish.abandoned() {
        // A submitter may be waiting on this loop: let it see the answer
        // now rather than on the loop's next turn.
        bridge::answering(|| finish.finish(py, ended));
    }
    bridge::take_deferred().map_or(Ok(()), Err)
}

/// The coroutine of a task that serves calls. For one call it does what
///
/// ```python
/// async def call(fn, data, ctx):
///     try:
///         value = await fn(data, ctx)
///     except Exception as exc:
///         report(exc)             # the packet's error; the task goes on
///     except BaseException as exc:
///         report(exc)             # cancelled, KeyboardInterrupt...
///         raise                   # the task ends, as asyncio expects
///     else:
///         report(value)
/// ```
///
/// would do, without a Python frame around every step of the function: it
/// calls `fn` in its task's first step (so in the task's context, with the
/// task current), resumes the awaitable `fn` returned at each step, and
/// reports how the call ended from the step that ends it: no done-callback,
/// no extra turn of the loop. Then it parks (see the module's
/// documentation). A task accepts it as a coroutine (it has `send`,
/// `throw`, `close` and `__await__`); its `__next__` is what the task calls
/// to resume it.
#[pyclass(frozen, module = "packetflow._native")]
pub(crate) struct CallCoroutine {
    /// The name of the call it serves (or served last): its
    /// `__qualname__`, so the task's repr shows `coro=<df:transform()>`;
    /// the task carries it as its name.
    name: Mutex<Py<PyString>>,
    state: Mutex<State>,
    bridge: Weak<Bridge>,
    /// An empty context left by the last call it served, for the next.
    spare_context: Mutex<Option<Py<PyAny>>>,
}

enum State {
    /// The task's first call, not started yet (the task's first step
    /// starts it, in the task's own context).
    Unstarted(Unstarted),
    /// A call started while the task was parked, suspended in its first
    /// step with this value: the task's next step yields it and takes the
    /// call over.
    Handed(Serving, Py<PyAny>),
    /// Serving a call, suspended inside it.
    Suspended(Serving),
    /// Between calls: the task waits on this future of its loop, which is
    /// resolved when a call is handed over (or cancelled with the task).
    Parked(Py<PyAny>),
    /// Being resumed right now.
    Running,
    Ended,
}

struct Unstarted {
    func: Py<PyAny>,
    first: Py<PyAny>,
    second: Py<PyAny>,
    finish: Box<dyn Finish>,
}

/// A call being served.
struct Serving {
    /// What the function returned (its iterator).
    iter: Py<PyAny>,
    /// The call's own context, entered around each of its steps; `None`
    /// for the task's first call, which runs in the task's context.
    context: Option<Py<PyAny>>,
    finish: Box<dyn Finish>,
}

/// How a [`CallCoroutine`] is resumed.
enum Resume<'py> {
    Send(Bound<'py, PyAny>),
    Throw(PyErr),
}

impl CallCoroutine {
    /// Ends the task's first call with the error of a task that could not
    /// be made.
    fn not_started(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        let state = std::mem::replace(&mut *self.state.lock(), State::Ended);
        match state {
            State::Unstarted(unstarted) => end(py, unstarted.finish, Ended::NotStarted(err)),
            other => {
                *self.state.lock() = other;
                Ok(())
            }
        }
    }

    /// Names the task (and this coroutine) after the call it serves now.
    fn rename(&self, task: &Bound<'_, PyAny>, name: Py<PyString>) {
        let py = task.py();
        if self.name.lock().is(&name) {
            return;
        }
        let _ = task.call_method1(pyo3::intern!(py, "set_name"), (&name,));
        let old = std::mem::replace(&mut *self.name.lock(), name);
        // Dropped with the lock released: dropping may run Python code.
        drop(old);
    }

    /// Resumes the task's coroutine; `Some` is what it yields, `None` that
    /// it ended.
    fn resume<'py>(slf: &Bound<'py, Self>, how: Resume<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        // The state is taken out, so that no lock is held while Python
        // code runs (it may resume this object again, or collect it).
        let state = std::mem::replace(&mut *this.state.lock(), State::Running);
        match (state, how) {
            (State::Unstarted(u), Resume::Send(value)) if value.is_none() => {
                let (iter, resumed) = start_call(py, u.func.bind(py), u.first.bind(py), u.second.bind(py));
                Self::stepped(slf, iter, None, u.finish, resumed)
            }
            (unstarted @ State::Unstarted(_), Resume::Send(_)) => {
                *this.state.lock() = unstarted;
                Err(PyTypeError::new_err("can't send non-None value to a just-started coroutine"))
            }
            // Thrown in before it started: the call ends with it.
            (State::Unstarted(u), Resume::Throw(err)) => {
                Self::stepped(slf, None, None, u.finish, Resumed::Raised(err))
            }
            (State::Handed(serving, yielded), Resume::Send(_)) => {
                *this.state.lock() = State::Suspended(serving);
                Ok(Some(yielded.into_bound(py)))
            }
            (State::Handed(serving, yielded), Resume::Throw(err)) => {
                // The task was cancelled before it took the call over: what
                // the call awaits is cancelled with it, as the task would
                // have done, and the call is thrown the error.
                let yielded = yielded.into_bound(py);
                if yielded.hasattr(pyo3::intern!(py, "cancel")).unwrap_or(false) {
                    let _ = yielded.call_method0(pyo3::intern!(py, "cancel"));
                }
                Self::serve(slf, serving, Resume::Throw(err))
            }
            (State::Suspended(serving), how) => Self::serve(slf, serving, how),
            // Parked, and woken without a call: nothing more to do.
            (State::Parked(_), Resume::Send(_)) => {
                *this.state.lock() = State::Ended;
                Ok(None)
            }
            // Cancelled while parked: the task ends.
            (State::Parked(_), Resume::Throw(err)) => {
                *this.state.lock() = State::Ended;
                Err(err)
            }
            (State::Running, _) => {
                *this.state.lock() = State::Running;
                Err(PyValueError::new_err("coroutine already executing"))
            }
            (State::Ended, _) => {
                *this.state.lock() = State::Ended;
                Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine"))
            }
        }
    }

    /// Resumes the call being served, in its context.
    fn serve<'py>(
        slf: &Bound<'py, Self>,
        serving: Serving,
        how: Resume<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let Serving { iter, context, finish } = serving;
        let iter = iter.into_bound(py);
        let resume = || match how {
            Resume::Send(value) => coroutine::send(&iter, &value),
            Resume::Throw(err) => coroutine::throw(&iter, err),
        };
        let resumed = match &context {
            Some(context) => coroutine::in_context(context.bind(py), resume).unwrap_or_else(Resumed::Raised),
            None => resume(),
        };
        Self::stepped(slf, Some(iter), context, finish, resumed)
    }

    /// Settles a step of the call being served, inside a step of the task.
    fn stepped<'py>(
        slf: &Bound<'py, Self>,
        iter: Option<Bound<'py, PyAny>>,
        context: Option<Py<PyAny>>,
        finish: Box<dyn Finish>,
        resumed: Resumed<'py>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        match (resumed, iter) {
            (Resumed::Yielded(value), Some(iter)) => {
                *this.state.lock() = State::Suspended(Serving { iter: iter.unbind(), context, finish });
                Ok(Some(value))
            }
            (Resumed::Yielded(_), None) => unreachable!("only a started call suspends"),
            (Resumed::Returned(value), _) => {
                *this.state.lock() = State::Ended;
                end(py, finish, Ended::Returned(value))?;
                Self::park(slf)
            }
            // The packet's error; the task goes on.
            (Resumed::Raised(err), _) if err.is_instance_of::<PyException>(py) => {
                *this.state.lock() = State::Ended;
                end(py, finish, Ended::Raised(err))?;
                Self::park(slf)
            }
            // Cancelled, KeyboardInterrupt, SystemExit: the call is told,
            // then the exception goes on as asyncio expects (the task ends).
            (Resumed::Raised(err), _) => {
                *this.state.lock() = State::Ended;
                let ended = if is_cancelled_error(py, &err) {
                    Ended::Cancelled
                } else {
                    Ended::Raised(err.clone_ref(py))
                };
                end(py, finish, ended)?;
                Err(err)
            }
        }
    }

    /// Parks the task after its call ended inside its step: the future it
    /// waits on, or `None` (the task ends) when it is not kept.
    fn park<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let Some(bridge) = slf.get().bridge.upgrade() else { return Ok(None) };
        if !coroutine::can_enter_contexts() {
            return Ok(None);
        }
        let Ok(Some(task)) = bridge.tasks().current_task(py) else { return Ok(None) };
        // A cancellation requested and not withdrawn (`Task.cancelling()`,
        // Python 3.11 and later) is for this task: let it end with it.
        let cancelling = task
            .call_method0(pyo3::intern!(py, "cancelling"))
            .and_then(|count| count.extract::<usize>())
            .unwrap_or(0);
        if cancelling > 0 {
            return Ok(None);
        }
        let Ok(waiter) = bridge.create_future(py) else { return Ok(None) };
        // What `await waiter` would set: the task waits on it.
        if waiter.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true).is_err() {
            return Ok(None);
        }
        *slf.get().state.lock() = State::Parked(waiter.clone().unbind());
        if !bridge.tasks().park(py, task.unbind(), slf.clone().into_any().unbind()) {
            *slf.get().state.lock() = State::Ended;
            return Ok(None);
        }
        Ok(Some(waiter))
    }
}

#[pymethods]
impl CallCoroutine {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> Py<PyString> {
        self.name.lock().clone_ref(py)
    }

    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        Self::resume(slf, Resume::Send(py.None().into_bound(py)))
    }

    fn send<'py>(slf: &Bound<'py, Self>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        Self::resume(slf, Resume::Send(value))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (exc, value=None, traceback=None))]
    fn throw<'py>(
        slf: &Bound<'py, Self>,
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
        Self::resume(slf, Resume::Throw(err))?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let state = std::mem::replace(&mut *self.state.lock(), State::Ended);
        match state {
            // Closed while serving a call: the call ends with
            // GeneratorExit, as it would have raised it at its `await`.
            State::Suspended(Serving { iter, finish, .. })
            | State::Handed(Serving { iter, finish, .. }, _) => {
                let iter = iter.into_bound(py);
                let closed = match iter.getattr(pyo3::intern!(py, "close")) {
                    Ok(close) => close.call0().map(drop),
                    Err(_) => Ok(()),
                };
                end(py, finish, Ended::Raised(PyGeneratorExit::new_err(())))?;
                closed
            }
            State::Running => {
                *self.state.lock() = State::Running;
                Err(PyValueError::new_err("coroutine already executing"))
            }
            State::Unstarted(_) | State::Parked(_) | State::Ended => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Skipped while it runs (the lock is then briefly held, or the
        // state is out): under-reporting only keeps objects alive longer.
        if let Some(state) = self.state.try_lock() {
            match &*state {
                State::Unstarted(Unstarted { func, first, second, .. }) => {
                    visit.call(func)?;
                    visit.call(first)?;
                    visit.call(second)?;
                }
                State::Handed(serving, yielded) => {
                    visit.call(&serving.iter)?;
                    visit.call(&serving.context)?;
                    visit.call(yielded)?;
                }
                State::Suspended(serving) => {
                    visit.call(&serving.iter)?;
                    visit.call(&serving.context)?;
                }
                State::Parked(waiter) => visit.call(waiter)?,
                State::Running | State::Ended => {}
            }
        }
        if let Some(spare) = self.spare_context.try_lock() {
            visit.call(&*spare)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let state = self.state.try_lock().map(|mut state| std::mem::replace(&mut *state, State::Ended));
        // Dropped with the lock released: dropping may run Python code.
        drop(state);
    }
}
