//! Core futures awaited from Python: `submit`, `call`, `ctx.call`,
//! `listen`, `connect`, `stop` return an asyncio future of the calling
//! loop, resolved by a core future polled on that loop.
//!
//! The core future is polled first inline, inside the call that made it,
//! where a packet answered at once (PF001, PF429, a bad dependency, ...)
//! completes with no thread hand-off at all. Later it is polled when its
//! waker fires: at once if a handler task of the same loop is handing over
//! its answer ([`bridge::answering`]), else from the loop's inbox (a result
//! from the handler pool, a timer of the runtime, another loop). Polling a
//! core future never blocks and never runs Python code: it only moves the
//! packet along. Its output becomes the asyncio future's result or
//! exception through [`Outcome`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::bridge::{self, ActiveGuard, Bridge, Item, Pollable};
use crate::outcome::Outcome;
use crate::runtime;

struct TaskState<T> {
    work: BoxFuture<'static, T>,
    target: Py<PyAny>,
    /// The [`CancelHook`] on `target`, removed before `target` is resolved
    /// (a done-callback left there would cost one more turn of the loop).
    hook: Option<Py<PyAny>>,
}

/// A core future awaited by an asyncio future of one loop, polled on that
/// loop whenever its waker fires.
struct LoopTask<T> {
    bridge: Arc<Bridge>,
    scheduled: AtomicBool,
    state: Mutex<Option<TaskState<T>>>,
}

impl<T: Outcome> Wake for LoopTask<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if !(self.bridge.may_poll_here() && self.poll_here()) {
            self.bridge.push(Item::Poll(self.clone()));
        }
    }
}

impl<T: Outcome> Pollable for LoopTask<T> {
    fn poll_on_loop(self: Arc<Self>, py: Python<'_>) {
        self.run(py);
    }
}

impl<T: Outcome> LoopTask<T> {
    /// Polls the future once (on the loop's thread, with the GIL, the
    /// bridge active); when it ends, resolves the asyncio future.
    fn run(self: &Arc<Self>, py: Python<'_>) {
        self.scheduled.store(false, Ordering::Release);
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else { return };
        let waker = Waker::from(self.clone());
        let mut cx = TaskContext::from_waker(&waker);
        if let Poll::Ready(answer) = state.work.as_mut().poll(&mut cx) {
            let state = guard.take().expect("checked above");
            drop(guard);
            let target = state.target.bind(py);
            if let Some(hook) = &state.hook {
                let _ = target.call_method1(pyo3::intern!(py, "remove_done_callback"), (hook,));
            }
            // The awaiting task may have been cancelled meanwhile.
            if !target.call_method0(pyo3::intern!(py, "done")).and_then(|d| d.is_truthy()).unwrap_or(true) {
                deliver(py, target, answer);
            }
        }
    }

    /// Polls the future now, on the loop's thread, outside any other poll
    /// (see [`Bridge::may_poll_here`]); `false` if it could not be (it is
    /// then left to the inbox).
    fn poll_here(self: &Arc<Self>) -> bool {
        let Ok(rt) = runtime::runtime() else { return false };
        let _runtime = rt.enter();
        let _active = ActiveGuard::enter(&self.bridge);
        Python::attach(|py| self.run(py));
        true
    }
}

/// What [`CancelHook`] reaches: the work of a cancelled asyncio future.
trait Abandon: Send + Sync {
    /// Drops the work (its packet is abandoned, as the core defines).
    fn abandon(&self);
}

impl<T: Outcome> Abandon for LoopTask<T> {
    fn abandon(&self) {
        let state = self.state.lock().take();
        drop(state);
    }
}

/// Resolves `target` with `answer`.
fn deliver(py: Python<'_>, target: &Bound<'_, PyAny>, answer: impl Outcome) {
    let _ = match answer.into_py(py) {
        Ok(value) => target.call_method1(pyo3::intern!(py, "set_result"), (value,)),
        Err(err) => target.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),)),
    };
}

/// Cancels the core work when the asyncio future is cancelled.
#[pyclass(frozen, module = "packetflow._native")]
struct CancelHook {
    task: Weak<dyn Abandon>,
}

#[pymethods]
impl CancelHook {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            if let Some(task) = self.task.upgrade() {
                task.abandon();
            }
        }
        Ok(())
    }
}

/// Runs `work` for an awaiting Python caller on `bridge`'s loop and returns
/// the asyncio future it resolves.
pub(crate) fn spawn<'py, T: Outcome>(
    py: Python<'py>,
    bridge: &Arc<Bridge>,
    work: impl Future<Output = T> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let target = bridge.create_future(py)?;
    let drain_was_pending = bridge.drain_pending();
    let task = Arc::new(LoopTask {
        bridge: bridge.clone(),
        scheduled: AtomicBool::new(false),
        state: Mutex::new(Some(TaskState {
            work: Box::pin(work),
            target: target.clone().unbind(),
            hook: None,
        })),
    });
    let finished = {
        let _active = ActiveGuard::enter(bridge);
        let _runtime = runtime::runtime()?.enter();
        let mut guard = task.state.lock();
        let state = guard.as_mut().expect("just built");
        let waker = Waker::from(task.clone());
        let mut cx = TaskContext::from_waker(&waker);
        match state.work.as_mut().poll(&mut cx) {
            Poll::Ready(answer) => {
                guard.take();
                drop(guard);
                deliver(py, &target, answer);
                true
            }
            Poll::Pending => false,
        }
    };
    if !finished {
        let abandon: Weak<dyn Abandon> = Arc::downgrade(&task) as Weak<dyn Abandon>;
        let hook = Py::new(py, CancelHook { task: abandon })?.into_any();
        target.call_method1(pyo3::intern!(py, "add_done_callback"), (&hook,))?;
        if let Some(state) = task.state.lock().as_mut() {
            state.hook = Some(hook);
        }
    }
    // What the first poll woke (a submit frame, on a connection this loop
    // drives) goes out now rather than at the next turn when nothing else
    // is due in this one: nothing could join it there.
    if !drain_was_pending && bridge.only_this_drain_due(py) {
        bridge.run_pending(py)?;
    }
    if let Some(err) = bridge::take_deferred() {
        return Err(err);
    }
    Ok(target)
}

/// A future that is already resolved with `value`, for awaitable APIs that
/// have nothing to wait for.
pub(crate) fn ready<'py>(
    py: Python<'py>,
    bridge: &Bridge,
    value: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let fut = bridge.create_future(py)?;
    fut.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
    Ok(fut)
}
