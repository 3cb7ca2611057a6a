//! The bridge between one asyncio event loop and the core.
//!
//! Each loop that uses PacketFlow gets one [`Bridge`]: an inbox of work that
//! must happen on that loop (core futures to poll, `async def` handlers to
//! start, handler tasks to cancel) and a way to wake the loop. Other threads
//! wake it by writing a byte to a socket the loop watches (`add_reader`), so
//! waking needs no GIL; the loop's own thread schedules a drain with
//! `call_soon`. One wake covers everything pushed until the drain runs, so
//! many handler calls and results cross into Python under one GIL hold, and
//! a lone one crosses at once (no timers).
//!
//! A future awaited from Python (`submit`, `call`, `ctx.call`) is polled on
//! the loop that awaits it: first inline, inside the `submit` call itself,
//! where a packet whose handler answers at once (an `async def` on this loop
//! that does not suspend, PF001, PF429, ...) completes with no thread
//! hand-off at all; later from the inbox, when its waker fires (a result from
//! the handler pool, a timer of the runtime, another loop). Polling a core
//! future never blocks: it only moves the packet along.

use std::cell::RefCell;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures::future::BoxFuture;
use packetflow::{ErrorCode, PacketResult, PfError, Value};
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::handler::{self, Invocation};
use crate::result::PyPacketResult;
use crate::{convert, errors, runtime};

/// What a future awaited from Python ends with; converted to Python objects
/// on the loop, with the GIL.
pub(crate) enum Answer {
    /// `submit`: a `Result` object.
    Result(PacketResult),
    /// `call`, `ctx.call`: the data, or the error raised.
    Data(Result<Value, PfError>),
    /// An operation with no value: `None`, or the error raised.
    Unit(Result<(), PfError>),
}

/// Work for the loop's thread.
pub(crate) enum Item {
    /// A core future whose waker fired.
    Poll(Arc<LoopTask>),
    /// An `async def` handler to start on this loop.
    Invoke(Invocation),
    /// A handler task whose packet ended without it (deadline, stop).
    Cancel(Py<PyAny>),
}

enum Wakeup {
    /// The loop watches `read`; any thread writes a byte to `write`.
    Socket { read: UnixStream, write: UnixStream },
    /// The loop has no `add_reader`: wake it with `call_soon_threadsafe`.
    Threadsafe,
}

/// One event loop's end of the bridge.
pub(crate) struct Bridge {
    event_loop: Py<PyAny>,
    create_future: Py<PyAny>,
    call_soon: Py<PyAny>,
    drain_callback: PyOnceLock<Py<PyAny>>,
    /// Identifies the thread that runs the loop (see [`thread_key`]).
    thread: usize,
    inbox: Mutex<Vec<Item>>,
    /// The emptied vector of the last drain, swapped in at the next one so
    /// the inbox keeps its capacity instead of regrowing every time.
    spare: Mutex<Vec<Item>>,
    wake_pending: AtomicBool,
    wakeup: Wakeup,
    closed: AtomicBool,
}

thread_local! {
    static THREAD_MARK: u8 = const { 0 };
    /// The bridge whose loop this thread is serving right now (inside a
    /// drain or an inline poll), if any: handlers of that loop may run at once.
    static ACTIVE: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
    /// The bridge of the loop this thread ran last.
    static CURRENT: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
    /// A KeyboardInterrupt or SystemExit raised by a handler run inline,
    /// re-raised once the packet has been answered.
    static DEFERRED: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// A cheap, stable identity for the calling thread.
fn thread_key() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// Marks `bridge` active on this thread for the guard's life.
struct ActiveGuard {
    previous: Option<Arc<Bridge>>,
}

impl ActiveGuard {
    fn enter(bridge: &Arc<Bridge>) -> ActiveGuard {
        let previous = ACTIVE.with(|a| a.borrow_mut().replace(bridge.clone()));
        ActiveGuard { previous }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

/// The bridge this thread is serving right now, if any.
pub(crate) fn active() -> Option<Arc<Bridge>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// Whether the calling thread is serving `bridge` right now.
pub(crate) fn is_active(bridge: &Arc<Bridge>) -> bool {
    ACTIVE.with(|a| a.borrow().as_ref().is_some_and(|b| Arc::ptr_eq(b, bridge)))
}

/// Keeps a KeyboardInterrupt/SystemExit raised by a handler for later.
pub(crate) fn defer_raise(err: PyErr) {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(err);
        }
    });
}

/// Takes the interrupt kept by [`defer_raise`], if any.
pub(crate) fn take_deferred() -> Option<PyErr> {
    DEFERRED.with(|d| d.borrow_mut().take())
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The running loop of this thread, or `None`.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let get = GET_RUNNING_LOOP.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?;
    match get.bind(py).call0() {
        Ok(lp) => Ok(Some(lp)),
        Err(e) if e.is_instance_of::<PyRuntimeError>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The bridge of the loop running on this thread; `what` names the API for
/// the error raised when no loop runs.
pub(crate) fn current(py: Python<'_>, what: &str) -> PyResult<Arc<Bridge>> {
    let Some(lp) = running_loop(py)? else {
        return Err(PyRuntimeError::new_err(format!(
            "{what} must be called from code running in an asyncio event loop (it \
             returns an awaitable of that loop); without a running loop, use its _sync variant"
        )));
    };
    let cached =
        CURRENT.with(|c| c.borrow().as_ref().filter(|b| b.event_loop.as_ptr() == lp.as_ptr()).cloned());
    if let Some(bridge) = cached {
        return Ok(bridge);
    }
    let bridge = Bridge::attach(py, &lp)?;
    let previous = CURRENT.with(|c| c.borrow_mut().replace(bridge.clone()));
    if let Some(old) = previous {
        // A thread runs one loop at a time: if the previous one is closed
        // (asyncio.run returned), nothing will drain it again.
        let closed = old.event_loop.bind(py).call_method0("is_closed").and_then(|v| v.is_truthy());
        if closed.unwrap_or(false) {
            old.close();
        }
    }
    Ok(bridge)
}

impl Bridge {
    fn attach(py: Python<'_>, lp: &Bound<'_, PyAny>) -> PyResult<Arc<Bridge>> {
        runtime::check_not_forked()?;
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let fd = read.as_raw_fd();
        let bridge = Bridge::build(py, lp, Wakeup::Socket { read, write })?;
        let callback = bridge.drain_callback.get(py).expect("set by build").clone_ref(py);
        match lp.call_method1("add_reader", (fd, callback)) {
            Ok(_) => Ok(bridge),
            // No readers on this loop (e.g. a proactor loop): use the
            // threadsafe wake-up instead.
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => {
                Bridge::build(py, lp, Wakeup::Threadsafe)
            }
            Err(e) => Err(e),
        }
    }

    fn build(py: Python<'_>, lp: &Bound<'_, PyAny>, wakeup: Wakeup) -> PyResult<Arc<Bridge>> {
        let bridge = Arc::new(Bridge {
            event_loop: lp.clone().unbind(),
            create_future: lp.getattr("create_future")?.unbind(),
            call_soon: lp.getattr("call_soon")?.unbind(),
            drain_callback: PyOnceLock::new(),
            thread: thread_key(),
            inbox: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            wakeup,
            closed: AtomicBool::new(false),
        });
        let callback = Py::new(py, Drainer { bridge: Arc::downgrade(&bridge) })?.into_any();
        let _ = bridge.drain_callback.set(py, callback);
        Ok(bridge)
    }

    /// The loop this bridge serves.
    pub(crate) fn event_loop(&self) -> &Py<PyAny> {
        &self.event_loop
    }

    /// Whether the loop is known to be closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the loop closed: work pushed from now on is refused, and what
    /// waits in the inbox is answered (handler calls) or dropped (polls).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let items = std::mem::take(&mut *self.inbox.lock());
        for item in items {
            if let Item::Invoke(inv) = item {
                inv.refuse(loop_closed_error());
            }
        }
    }

    /// A new asyncio future of this loop.
    pub(crate) fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.create_future.bind(py).call0()
    }

    /// Queues `item` for the loop and wakes it if no wake-up is pending.
    pub(crate) fn push(&self, item: Item) {
        if self.is_closed() {
            if let Item::Invoke(inv) = item {
                inv.refuse(loop_closed_error());
            }
            return;
        }
        self.inbox.lock().push(item);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.signal();
        }
    }

    fn signal(&self) {
        if thread_key() == self.thread {
            // The loop's own thread (a handler's done-callback, a drain):
            // it holds the GIL, so schedule the drain directly.
            Python::attach(|py| {
                if let Some(cb) = self.drain_callback.get(py) {
                    if let Err(e) = self.call_soon.bind(py).call1((cb,)) {
                        // The loop is closed: nothing will ever drain it.
                        if e.is_instance_of::<PyRuntimeError>(py) {
                            self.close();
                        }
                    }
                }
            });
            return;
        }
        match &self.wakeup {
            Wakeup::Socket { write, .. } => {
                // A full socket buffer already holds a wake-up: ignore it.
                let _ = (&*write).write(&[1]);
            }
            Wakeup::Threadsafe => {
                runtime::attach_from_background(|py| {
                    if let Some(cb) = self.drain_callback.get(py) {
                        let lp = self.event_loop.bind(py);
                        if lp.call_method1("call_soon_threadsafe", (cb,)).is_err() {
                            self.close();
                        }
                    }
                });
            }
        }
    }

    /// Runs everything queued so far, on the loop's thread.
    fn drain(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        // Order matters. The wake-up bytes are consumed first, then the
        // flag is cleared, then the inbox is taken: a push that lands after
        // the flag is cleared writes a new byte (another drain follows); one
        // that lands before it is in the inbox taken below. Clearing the
        // flag before reading the socket could eat the byte of a push whose
        // flag stays set, and every later push would then skip its wake-up.
        if let Wakeup::Socket { read, .. } = &self.wakeup {
            let mut sink = [0u8; 256];
            loop {
                match (&*read).read(&mut sink) {
                    Ok(n) if n == sink.len() => continue,
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        self.wake_pending.store(false, Ordering::SeqCst);
        // Timers and I/O of the core futures polled below belong to the
        // runtime (checked before anything is taken from the inbox).
        let _runtime = runtime::runtime()?.enter();
        let mut items = std::mem::take(&mut *self.spare.lock());
        std::mem::swap(&mut items, &mut *self.inbox.lock());
        if items.is_empty() {
            *self.spare.lock() = items;
            return Ok(());
        }
        let _active = ActiveGuard::enter(self);
        for item in items.drain(..) {
            match item {
                Item::Poll(task) => task.run(py),
                Item::Invoke(inv) => handler::run_invocation(py, self, inv),
                Item::Cancel(task) => {
                    let _ = task.bind(py).call_method0("cancel");
                }
            }
        }
        *self.spare.lock() = items;
        match take_deferred() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

fn loop_closed_error() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the event loop this handler runs on is closed")
}

/// The loop's reader callback.
#[pyclass(frozen, module = "packetflow._native")]
struct Drainer {
    bridge: Weak<Bridge>,
}

#[pymethods]
impl Drainer {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        match self.bridge.upgrade() {
            Some(bridge) => bridge.drain(py),
            None => Ok(()),
        }
    }
}

struct TaskState {
    work: BoxFuture<'static, Answer>,
    target: Py<PyAny>,
    /// The [`CancelHook`] on `target`, removed before `target` is resolved
    /// (a done-callback left there would cost one more turn of the loop).
    hook: Option<Py<PyAny>>,
}

/// A core future awaited by an asyncio future of one loop, polled on that
/// loop whenever its waker fires.
pub(crate) struct LoopTask {
    bridge: Arc<Bridge>,
    scheduled: AtomicBool,
    state: Mutex<Option<TaskState>>,
}

impl Wake for LoopTask {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.bridge.push(Item::Poll(self.clone()));
        }
    }
}

impl LoopTask {
    /// Polls the future once (on the loop's thread, with the GIL); when it
    /// ends, resolves the asyncio future.
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
            if !target.call_method0("done").and_then(|d| d.is_truthy()).unwrap_or(true) {
                deliver(py, target, answer);
            }
        }
    }

    /// Drops the work (its packet is abandoned, as the core defines).
    fn abandon(&self) {
        let state = self.state.lock().take();
        drop(state);
    }
}

/// Resolves `target` with `answer`.
fn deliver(py: Python<'_>, target: &Bound<'_, PyAny>, answer: Answer) {
    let outcome: PyResult<Bound<'_, PyAny>> = match answer {
        Answer::Result(result) => {
            Py::new(py, PyPacketResult::from_core(py, result)).map(|r| r.into_bound(py).into_any())
        }
        Answer::Data(Ok(value)) => convert::to_py(py, &value),
        Answer::Data(Err(e)) | Answer::Unit(Err(e)) => Err(errors::to_pyerr(py, &e)),
        Answer::Unit(Ok(())) => Ok(py.None().into_bound(py)),
    };
    let _ = match outcome {
        Ok(value) => target.call_method1(pyo3::intern!(py, "set_result"), (value,)),
        Err(err) => target.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),)),
    };
}

/// Cancels the core work when the asyncio future is cancelled.
#[pyclass(frozen, module = "packetflow._native")]
struct CancelHook {
    task: Weak<LoopTask>,
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
pub(crate) fn spawn<'py>(
    py: Python<'py>,
    bridge: &Arc<Bridge>,
    work: impl Future<Output = Answer> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let target = bridge.create_future(py)?;
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
        let hook = Py::new(py, CancelHook { task: Arc::downgrade(&task) })?.into_any();
        target.call_method1(pyo3::intern!(py, "add_done_callback"), (&hook,))?;
        if let Some(state) = task.state.lock().as_mut() {
            state.hook = Some(hook);
        }
    }
    if let Some(err) = take_deferred() {
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
