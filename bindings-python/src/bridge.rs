//! The bridge between one asyncio event loop and the core's threads.
//!
//! Each loop that uses PacketFlow gets one [`Bridge`]: an inbox of work that
//! must happen on that loop's thread, with the GIL (core futures to poll,
//! jobs such as starting a handler's call or cancelling it), and a way to
//! wake the loop. Other threads wake it by writing a byte to a socket the
//! loop watches (`add_reader`), so waking needs no GIL; the loop's own
//! thread schedules a drain with `call_soon`. One wake covers everything
//! pushed until the drain runs, so many handler calls and results cross
//! into Python under one GIL hold, and a lone one crosses at once (no
//! timers).
//!
//! This module knows loops, threads and the inbox, nothing about packets or
//! handlers: what is polled ([`Pollable`]) and what a job does ([`LoopJob`])
//! belongs to the layers above ([`awaitable`](crate::awaitable),
//! [`handler`](crate::handler)).

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::eager::EagerTasks;
use crate::runtime;

/// Something the loop's thread polls when its waker fired (a core future
/// awaited from Python).
pub(crate) trait Pollable: Send + Sync {
    /// Polls once, on the loop's thread, with the GIL, inside a drain.
    fn poll_on_loop(self: Arc<Self>, py: Python<'_>);
}

/// A piece of work that must run on the loop's thread.
pub(crate) trait LoopJob: Send {
    /// Runs it, on the loop's thread, with the GIL, inside a drain.
    fn run(self: Box<Self>, py: Python<'_>, bridge: &Arc<Bridge>);
    /// The loop closed before it could run: answer whoever waits for it.
    fn loop_closed(self: Box<Self>);
}

/// Work for the loop's thread.
pub(crate) enum Item {
    /// A core future whose waker fired.
    Poll(Arc<dyn Pollable>),
    /// A job to run there.
    Job(Box<dyn LoopJob>),
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
    /// How tasks of this loop are started (a handler's call).
    tasks: EagerTasks,
    call_soon: Py<PyAny>,
    /// The loop's queue of callbacks ready to run (`BaseEventLoop._ready`),
    /// if it has one (see [`Bridge::only_this_drain_due`]).
    ready: Option<Py<PyAny>>,
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
    /// drain or an inline poll of a core future), if any: work for that
    /// loop may be done at once instead of through its inbox.
    static ACTIVE: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
    /// The bridge of the loop this thread ran last.
    static CURRENT: RefCell<Option<Arc<Bridge>>> = const { RefCell::new(None) };
    /// Set while a handler's task hands its answer over (see [`answering`]).
    static ANSWERING: Cell<bool> = const { Cell::new(false) };
    /// Set while a readiness callback of the loop wakes what waits for a
    /// socket (see [`socket_ready`]).
    static SOCKET_READY: Cell<bool> = const { Cell::new(false) };
    /// A KeyboardInterrupt or SystemExit raised by Python code run inside a
    /// poll or a drain (a handler's first step), raised again once that
    /// poll or drain is over.
    static DEFERRED: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Keeps an exception that must not be lost but cannot be raised where it
/// was caught (inside a poll of a core future), for [`take_deferred`].
pub(crate) fn defer_raise(err: PyErr) {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(err);
        }
    });
}

/// [`defer_raise`] for `err` if it is no `Exception` (a KeyboardInterrupt,
/// a SystemExit: what must go on); an `Exception` is dropped.
pub(crate) fn defer_raise_unless_exception(py: Python<'_>, err: PyErr) {
    if !err.is_instance_of::<pyo3::exceptions::PyException>(py) {
        defer_raise(err);
    }
}

/// Takes the exception kept by [`defer_raise`], if any.
pub(crate) fn take_deferred() -> Option<PyErr> {
    DEFERRED.with(|d| d.borrow_mut().take())
}

/// A cheap, stable identity for the calling thread.
fn thread_key() -> usize {
    THREAD_MARK.with(|m| m as *const u8 as usize)
}

/// Marks `bridge` active on this thread for the guard's life.
pub(crate) struct ActiveGuard {
    previous: Option<Arc<Bridge>>,
}

impl ActiveGuard {
    pub(crate) fn enter(bridge: &Arc<Bridge>) -> ActiveGuard {
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

/// Runs `send`, the hand-over of a handler's answer on the thread of the
/// handler's loop. A core future of this loop that the answer wakes may be
/// polled at once, inside `send` (see [`Bridge::may_poll_here`]), instead
/// of on the loop's next turn: a handler answering a submitter of its own
/// loop costs no drain.
pub(crate) fn answering<R>(send: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ANSWERING.with(|a| a.set(self.0));
        }
    }
    let _reset = Reset(ANSWERING.with(|a| a.replace(true)));
    send()
}

/// Runs `wake`, the wake-up of work waiting for a socket, from the loop's
/// own readiness callback (`add_reader`/`add_writer`): a detached future
/// of this loop that it wakes (a connection) is polled at once, inside
/// `wake` (see [`Bridge::may_poll_woken_here`]), instead of on the loop's
/// next turn: a frame is read, decoded and handed to its handler in the
/// turn that saw the socket ready.
pub(crate) fn socket_ready<R>(wake: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SOCKET_READY.with(|a| a.set(self.0));
        }
    }
    let _reset = Reset(SOCKET_READY.with(|a| a.replace(true)));
    wake()
}

/// Wake-ups of a loop written to its socket by another thread, since the
/// process started: each is one thread waking the loop's (for the tests
/// and benchmarks, `_native._socket_stats()`).
pub(crate) static CROSS_THREAD_WAKES: AtomicU64 = AtomicU64::new(0);

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
        // The reader's callback is held by the loop alone: when the loop is
        // closed, it lets go of it, and the bridge learns it (see
        // `Drainer`'s `Drop`), so that work pushed from other threads from
        // then on is answered instead of waiting for a drain that will never
        // come.
        let reader = Py::new(py, Drainer { bridge: Arc::downgrade(&bridge), watches_loop: true })?;
        match lp.call_method1("add_reader", (fd, reader)) {
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
            tasks: EagerTasks::new(py, lp)?,
            call_soon: lp.getattr("call_soon")?.unbind(),
            ready: lp.getattr("_ready").ok().filter(|r| r.len().is_ok()).map(Bound::unbind),
            drain_callback: PyOnceLock::new(),
            thread: thread_key(),
            inbox: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            wakeup,
            closed: AtomicBool::new(false),
        });
        let callback =
            Py::new(py, Drainer { bridge: Arc::downgrade(&bridge), watches_loop: false })?.into_any();
        let _ = bridge.drain_callback.set(py, callback);
        Ok(bridge)
    }

    /// Whether the loop is known to be closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the loop closed: work pushed from now on is refused, and what
    /// waits in the inbox is answered (jobs) or dropped (polls, cancels).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.tasks.clear_parked();
        let items = std::mem::take(&mut *self.inbox.lock());
        for item in items {
            if let Item::Job(job) = item {
                job.loop_closed();
            }
        }
    }

    /// Whether the calling thread runs this loop.
    pub(crate) fn on_loop_thread(&self) -> bool {
        thread_key() == self.thread
    }

    /// Whether a core future of this loop that was just woken may be polled
    /// at once, on the calling thread: it is the loop's thread, inside
    /// [`answering`] and outside any other poll (so no lock of a future
    /// being polled is held).
    pub(crate) fn may_poll_here(&self) -> bool {
        ANSWERING.with(Cell::get) && self.on_loop_thread() && active().is_none() && !self.is_closed()
    }

    /// Whether a detached future of this loop that was just woken may be
    /// polled at once, on the calling thread: it is the loop's thread,
    /// inside [`socket_ready`] and outside any other poll.
    pub(crate) fn may_poll_woken_here(&self) -> bool {
        SOCKET_READY.with(Cell::get) && self.on_loop_thread() && active().is_none() && !self.is_closed()
    }

    /// Whether the drain just scheduled is all the loop has due in this
    /// turn: the caller, the loop's thread serving none of its work, has
    /// just set the drain on its way (`drain_pending` was false before) and
    /// the loop's ready queue holds at most that drain. What the caller's
    /// core future woke may then be served at once
    /// ([`run_pending`](Self::run_pending)) instead of at the loop's next
    /// turn, where nothing could join it. `false` on a loop whose ready
    /// queue is not known (uvloop).
    pub(crate) fn only_this_drain_due(&self, py: Python<'_>) -> bool {
        self.wake_pending.load(Ordering::Acquire)
            && self.on_loop_thread()
            && active().is_none()
            && self.ready.as_ref().is_some_and(|r| r.bind(py).len().is_ok_and(|n| n <= 1))
    }

    /// Whether a drain of the inbox is on its way (something was pushed
    /// since the last one).
    pub(crate) fn drain_pending(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire)
    }

    /// Whether the loop's selector watches file descriptors (`add_reader`):
    /// false for a loop without one, such as the Windows proactor.
    pub(crate) fn watches_sockets(&self) -> bool {
        matches!(self.wakeup, Wakeup::Socket { .. })
    }

    /// The asyncio loop.
    pub(crate) fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.event_loop.bind(py)
    }

    /// A new asyncio future of this loop.
    pub(crate) fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.create_future.bind(py).call0()
    }

    /// How tasks of this loop are started.
    pub(crate) fn tasks(&self) -> &EagerTasks {
        &self.tasks
    }

    /// Queues `item` for the loop and wakes it if no wake-up is pending.
    pub(crate) fn push(&self, item: Item) {
        if self.is_closed() {
            if let Item::Job(job) = item {
                job.loop_closed();
            }
            return;
        }
        self.inbox.lock().push(item);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.signal();
        }
    }

    fn signal(&self) {
        if self.on_loop_thread() {
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
                CROSS_THREAD_WAKES.fetch_add(1, Ordering::Relaxed);
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

    /// Runs everything queued so far, on the loop's thread: called by the
    /// wake-up socket's reader (`woken_by_byte`), or as scheduled by
    /// `call_soon` from the loop's own thread.
    fn drain(self: &Arc<Self>, py: Python<'_>, woken_by_byte: bool) -> PyResult<()> {
        // Order matters. The wake-up bytes are consumed first, then the
        // flag is cleared, then the inbox is taken: a push that lands after
        // the flag is cleared writes a new byte (another drain follows); one
        // that lands before it is in the inbox taken below. Clearing the
        // flag before reading the socket could eat the byte of a push whose
        // flag stays set, and every later push would then skip its wake-up.
        // A wake-up is either a byte or a `call_soon`, one per setting of
        // the flag: a drain that `call_soon` scheduled has no byte to read.
        if let (true, Wakeup::Socket { read, .. }) = (woken_by_byte, &self.wakeup) {
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
        self.run_pending(py)
    }

    /// Runs what waits in the inbox now, on the loop's thread, with the GIL,
    /// outside any poll (a drain, or the end of a readiness callback: what
    /// the frames it read woke is then served in the same turn). A drain
    /// that was scheduled for these items still comes, and finds less to do.
    pub(crate) fn run_pending(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
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
                Item::Poll(task) => task.poll_on_loop(py),
                Item::Job(job) => job.run(py, self),
            }
        }
        *self.spare.lock() = items;
        match take_deferred() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// The drain as a callable for the loop: the reader callback of the
/// wake-up socket, or what `call_soon` schedules.
#[pyclass(frozen, module = "packetflow._native")]
struct Drainer {
    bridge: Weak<Bridge>,
    /// Registered with `add_reader`, and held by the loop alone: dropped
    /// when the loop is closed (its selector lets go of its readers).
    watches_loop: bool,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if self.watches_loop {
            if let Some(bridge) = self.bridge.upgrade() {
                bridge.close();
            }
        }
    }
}

#[pymethods]
impl Drainer {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        match self.bridge.upgrade() {
            Some(bridge) => bridge.drain(py, self.watches_loop),
            None => Ok(()),
        }
    }
}

/// The loop a reactor falls back on for `async def` handlers registered
/// outside any loop, when their packet does not come from a loop: the loop
/// the reactor was last used from.
#[derive(Default)]
pub(crate) struct HomeLoop {
    bridge: Mutex<Option<Arc<Bridge>>>,
}

impl HomeLoop {
    /// The home loop's bridge, unless that loop is closed.
    pub(crate) fn get(&self) -> Option<Arc<Bridge>> {
        self.bridge.lock().clone().filter(|b| !b.is_closed())
    }

    /// Makes `bridge` the home loop if there is none (or it closed).
    pub(crate) fn adopt(&self, bridge: &Arc<Bridge>) {
        let mut home = self.bridge.lock();
        if home.as_ref().is_none_or(|b| b.is_closed()) {
            *home = Some(bridge.clone());
        }
    }
}
