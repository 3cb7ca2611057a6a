//! A reactor's network connections run on the asyncio loop it lives on,
//! their sockets watched by that loop's selector (the `sockets` option:
//! by default, and with `"loop"`; [`Sockets`] decides).
//!
//! The node made by a reactor's first `listen`/`connect` from a running
//! loop whose selector watches file descriptors gets a
//! [`ConnectionSpawner`] whose connections are [`Detached`] futures of
//! that loop, and a [`SocketReadiness`] made of the loop's
//! `add_reader`/`add_writer`: once a connection is set up, its socket
//! leaves the Tokio runtime (see the core's `net/socket.rs`), and a read or
//! write that would block registers the loop's callback on a duplicate of
//! its descriptor. The callback runs in the loop's own turn, on its thread,
//! with the GIL: it polls the connection at once ([`bridge::socket_ready`]),
//! which reads and decodes the frames and starts their `async def`
//! handlers right there (their first step too), then serves what the
//! frames woke (submitters of this loop, [`Bridge::run_pending`]). Answers
//! are written by the poll that has them: no other thread wakes between a
//! frame arriving and its handler running, nor between the answer and its
//! write.
//!
//! One watch per socket, made at its first read or write that would
//! block; each direction is registered with the loop once and kept while
//! someone waits that way:
//!
//! ```text
//!   wait(direction, waker), on the loop's thread: the waker is kept;
//!   add_reader/add_writer only if that direction is not registered
//!         │
//!         ▼ the loop sees the socket ready (level-triggered: readiness
//!   callback  that came before the wait is reported too)
//!         │ a waker waits: taken and woken inside socket_ready (the
//!         │   connection is polled at once), then run_pending
//!         │ none waits (the connection stopped reading, a write that no
//!         │   longer blocks): remove_reader/remove_writer
//!         ▼
//!   the watch is dropped (the connection ended): remove_reader/remove_writer
//!   on the loop's thread, or queued for it from another thread; the
//!   duplicate descriptor is closed once the loop holds no callback of it
//! ```
//!
//! Where the loop cannot drive a connection, the runtime does, with Tokio's
//! own watch on the descriptor (a second duplicate):
//!
//! - the loop is closed (`asyncio.run` returned): its selector drops the
//!   callbacks, which wake their connections, which the closed bridge hands
//!   to the runtime; connections made from then on start there;
//! - by default, a `_sync` method of the reactor is called
//!   ([`Sockets::used_blocking`]): its blocking caller waits less for a
//!   connection of the runtime's;
//! - whatever the option, a `_sync` method is called on the loop's thread,
//!   the loop not running (`run_until_complete` returned):
//!   [`release_on_this_thread`] moves to the runtime the connections of
//!   every node that loop drives, so the call does not wait for a loop that
//!   nobody runs.
//!
//! Either way a connection moves for good: the connections of a node never
//! go back to the loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use futures::future::BoxFuture;
use packetflow::net::{Direction, SocketReadiness, SocketWatch};
use packetflow::ConnectionSpawner;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::io::unix::AsyncFd;

use crate::bridge::{self, Bridge, Item, LoopJob};
use crate::detached::{Detached, Place};
use crate::runtime;

/// What this module did since the process started (`_native._socket_stats()`).
struct Counters {
    /// Watches made (one per socket that ever had to wait).
    watches: AtomicU64,
    /// Waits for a readable socket, and for a writable one.
    read_waits: AtomicU64,
    write_waits: AtomicU64,
    /// `add_reader`/`add_writer` calls, and `remove_reader`/`remove_writer`.
    registered: AtomicU64,
    removed: AtomicU64,
    /// The loop reported a watched socket ready.
    callbacks: AtomicU64,
    /// Watches that moved to the runtime (the loop could not drive them).
    on_runtime: AtomicU64,
}

static COUNTERS: Counters = Counters {
    watches: AtomicU64::new(0),
    read_waits: AtomicU64::new(0),
    write_waits: AtomicU64::new(0),
    registered: AtomicU64::new(0),
    removed: AtomicU64::new(0),
    callbacks: AtomicU64::new(0),
    on_runtime: AtomicU64::new(0),
};

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Every node whose connections run on a loop, for [`release_on_this_thread`].
static HOMES: Mutex<Vec<Weak<LoopSockets>>> = Mutex::new(Vec::new());

/// The connections of one node, run on one loop.
pub(crate) struct LoopSockets {
    bridge: Arc<Bridge>,
    /// The runtime drives this node's connections from now on.
    released: AtomicBool,
    /// The connections started on the loop (to move them when released).
    connections: Mutex<Vec<Weak<Detached>>>,
}

/// A reactor's `sockets` option.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `None`: on the loop, unless busy-polling, or once the reactor is
    /// used through its `_sync` methods.
    Auto,
    /// `"loop"`: on the loop whenever one can drive them.
    Loop,
    /// `"thread"`: on the runtime's threads.
    Thread,
}

impl Mode {
    /// The option as given (`sockets=`), with busy-polling on or not.
    pub(crate) fn parse(sockets: Option<&str>, busy_poll: bool) -> PyResult<Mode> {
        match sockets {
            // Busy-polling is the runtime's threads spinning on their
            // sockets: it needs the connections there.
            None if busy_poll => Ok(Mode::Thread),
            None => Ok(Mode::Auto),
            Some("thread") => Ok(Mode::Thread),
            Some("loop") if busy_poll => Err(PyValueError::new_err(
                "sockets='loop' cannot busy-poll (busy-polling is the runtime threads'): use \
                 sockets='thread' with busy_poll_us",
            )),
            Some("loop") => Ok(Mode::Loop),
            Some(other) => {
                Err(PyValueError::new_err(format!("sockets must be 'loop' or 'thread', got {other:?}")))
            }
        }
    }
}

/// Where one reactor's node runs its connections: its option, and what
/// the reactor's use decided.
pub(crate) struct Sockets {
    mode: Mode,
    /// A `_sync` method of the reactor was called.
    used_blocking: AtomicBool,
    /// The connections of its node, if they run on a loop.
    home: Mutex<Option<Arc<LoopSockets>>>,
}

impl Sockets {
    pub(crate) fn new(mode: Mode) -> Arc<Sockets> {
        Arc::new(Sockets { mode, used_blocking: AtomicBool::new(false), home: Mutex::new(None) })
    }

    /// The spawner of a node made now, on the loop of `bridge` (the loop
    /// running here, if any): `None` leaves its connections to the runtime.
    pub(crate) fn spawner(&self, bridge: Option<Arc<Bridge>>) -> Option<ConnectionSpawner> {
        let on_loop = match self.mode {
            Mode::Thread => false,
            Mode::Loop => true,
            Mode::Auto => !self.used_blocking.load(Ordering::SeqCst),
        };
        let bridge = bridge.filter(|b| on_loop && b.watches_sockets())?;
        let home = Arc::new(LoopSockets {
            bridge,
            released: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        {
            let mut homes = HOMES.lock();
            homes.retain(|h| h.strong_count() > 0);
            homes.push(Arc::downgrade(&home));
        }
        *self.home.lock() = Some(home.clone());
        let readiness = Arc::new(LoopReadiness { home: home.clone() });
        Some(ConnectionSpawner::new(move |connection| home.spawn(connection)).with_readiness(readiness))
    }

    /// A `_sync` method of the reactor is called (from a thread other than
    /// the loop's, or while the loop does not run): with `sockets=None`, the
    /// node's connections move to the runtime's threads for good, and a
    /// node made later starts there. A blocking caller of another thread
    /// waits less for a connection of the runtime's than for one of a loop,
    /// whose thread must take the GIL to write and to read
    /// (bench/python/RESULTS.md, "Where the connections run").
    pub(crate) fn used_blocking(&self) {
        if self.mode != Mode::Auto || self.used_blocking.swap(true, Ordering::SeqCst) {
            return;
        }
        let home = self.home.lock().take();
        if let Some(home) = home {
            home.release();
        }
    }
}

/// Moves to the runtime the connections of every node whose loop runs on
/// this thread: called by the `_sync` methods, which run only where no loop
/// runs, so that loop is not running and would not drive them.
pub(crate) fn release_on_this_thread() {
    let homes: Vec<Arc<LoopSockets>> = {
        let homes = HOMES.lock();
        if homes.is_empty() {
            return;
        }
        homes.iter().filter_map(Weak::upgrade).collect()
    };
    for home in homes {
        if home.bridge.on_loop_thread() {
            home.release();
        }
    }
}

impl LoopSockets {
    fn spawn(&self, connection: BoxFuture<'static, ()>) {
        let mut connections = self.connections.lock();
        if self.released.load(Ordering::SeqCst) || self.bridge.is_closed() {
            drop(connections);
            if let Ok(rt) = runtime::runtime() {
                rt.spawn(connection);
            }
            return;
        }
        let task = Detached::new(Place::Loop(self.bridge.clone()), connection);
        connections.retain(|c| c.strong_count() > 0);
        connections.push(Arc::downgrade(&task));
        drop(connections);
        task.start();
    }

    fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let connections = std::mem::take(&mut *self.connections.lock());
        for connection in connections.iter().filter_map(Weak::upgrade) {
            connection.move_to_runtime();
        }
    }

    /// Whether the calling thread may watch a socket with the loop.
    fn on_loop(&self) -> bool {
        !self.released.load(Ordering::SeqCst) && self.bridge.on_loop_thread() && !self.bridge.is_closed()
    }
}

struct LoopReadiness {
    home: Arc<LoopSockets>,
}

impl SocketReadiness for LoopReadiness {
    fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
        count(&COUNTERS.watches);
        let registration = Arc::new(Registration { fd, watched: Mutex::new(Watched::default()) });
        Ok(Box::new(LoopWatch { home: self.home.clone(), registration, runtime: None }))
    }
}

/// A socket's duplicate descriptor as the loop watches it. Held by the
/// watch and by each callback registered with the loop, so that the
/// descriptor is closed (and its number free for reuse) only once the loop
/// holds no callback of it.
struct Registration {
    fd: OwnedFd,
    watched: Mutex<Watched>,
}

/// Who waits, each way, and which ways are registered with the loop.
#[derive(Default)]
struct Watched {
    reader: Option<Waker>,
    writer: Option<Waker>,
    reading: bool,
    writing: bool,
}

impl Watched {
    fn parts(&mut self, direction: Direction) -> (&mut Option<Waker>, &mut bool) {
        match direction {
            Direction::Read => (&mut self.reader, &mut self.reading),
            Direction::Write => (&mut self.writer, &mut self.writing),
        }
    }
}

/// One connection's watch (see the module docs).
struct LoopWatch {
    home: Arc<LoopSockets>,
    registration: Arc<Registration>,
    /// Tokio's watch, once the runtime drives the connection.
    runtime: Option<AsyncFd<OwnedFd>>,
}

impl SocketWatch for LoopWatch {
    fn wait(&mut self, direction: Direction, waker: &Waker) -> io::Result<()> {
        count(match direction {
            Direction::Read => &COUNTERS.read_waits,
            Direction::Write => &COUNTERS.write_waits,
        });
        if self.runtime.is_none() && self.home.on_loop() && self.wait_on_loop(direction, waker) {
            return Ok(());
        }
        self.wait_on_runtime(direction, waker)
    }
}

impl LoopWatch {
    /// Has the loop wake `waker`; `false` if the loop refused the watch
    /// (it is closing).
    fn wait_on_loop(&mut self, direction: Direction, waker: &Waker) -> bool {
        let mut watched = self.registration.watched.lock();
        let (slot, registered) = watched.parts(direction);
        match slot {
            Some(kept) if kept.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        if *registered {
            return true;
        }
        *registered = true;
        drop(watched);
        let bridge = &self.home.bridge;
        let added = Python::attach(|py| -> PyResult<()> {
            let callback = SocketReady {
                registration: self.registration.clone(),
                read: direction == Direction::Read,
                bridge: Arc::downgrade(bridge),
            };
            let method = match direction {
                Direction::Read => pyo3::intern!(py, "add_reader"),
                Direction::Write => pyo3::intern!(py, "add_writer"),
            };
            bridge.event_loop(py).call_method1(method, (self.registration.fd.as_raw_fd(), callback))?;
            Ok(())
        });
        if added.is_err() {
            let mut watched = self.registration.watched.lock();
            let (slot, registered) = watched.parts(direction);
            *slot = None;
            *registered = false;
            return false;
        }
        count(&COUNTERS.registered);
        true
    }

    /// Has Tokio's I/O driver wake `waker` (the loop cannot).
    fn wait_on_runtime(&mut self, direction: Direction, waker: &Waker) -> io::Result<()> {
        let watch = match &mut self.runtime {
            Some(watch) => watch,
            None => {
                unwatch(&self.home.bridge, &self.registration);
                let rt = runtime::runtime().map_err(|e| io::Error::other(e.to_string()))?;
                let _runtime = rt.enter();
                count(&COUNTERS.on_runtime);
                let fd = self.registration.fd.try_clone()?;
                // SAFETY: the `AsyncFd` owns `fd`, a duplicate of its own,
                // open and the same until the `AsyncFd` is dropped.
                let watch = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
                self.runtime.insert(watch)
            }
        };
        let mut cx = TaskContext::from_waker(waker);
        // The socket just said WouldBlock: readiness the driver cached from
        // before is stale, cleared once; readiness seen after that is real.
        for _ in 0..2 {
            let ready = match direction {
                Direction::Read => watch.poll_read_ready(&mut cx),
                Direction::Write => watch.poll_write_ready(&mut cx),
            };
            match ready {
                Poll::Pending => return Ok(()),
                Poll::Ready(guard) => guard?.clear_ready(),
            }
        }
        waker.wake_by_ref();
        Ok(())
    }
}

impl Drop for LoopWatch {
    fn drop(&mut self) {
        unwatch(&self.home.bridge, &self.registration);
    }
}

/// Gives up the loop's watch of `registration`: at once on the loop's
/// thread, else queued for it (a loop that closes first drops its watches
/// itself).
fn unwatch(bridge: &Arc<Bridge>, registration: &Arc<Registration>) {
    let (reading, writing) = {
        let mut watched = registration.watched.lock();
        watched.reader = None;
        watched.writer = None;
        (std::mem::take(&mut watched.reading), std::mem::take(&mut watched.writing))
    };
    if !reading && !writing {
        return;
    }
    let unwatch = Box::new(Unwatch { registration: registration.clone(), reading, writing });
    if bridge.on_loop_thread() && !bridge.is_closed() {
        // (Nothing to do once the interpreter is going away.)
        runtime::attach_from_background(|py| unwatch.remove(py, bridge));
    } else {
        bridge.push(Item::Job(unwatch));
    }
}

/// Removes a registration's callbacks from the loop.
struct Unwatch {
    registration: Arc<Registration>,
    reading: bool,
    writing: bool,
}

impl Unwatch {
    fn remove(&self, py: Python<'_>, bridge: &Bridge) {
        let fd = self.registration.fd.as_raw_fd();
        if self.reading {
            remove(py, bridge, fd, Direction::Read);
        }
        if self.writing {
            remove(py, bridge, fd, Direction::Write);
        }
    }
}

impl LoopJob for Unwatch {
    fn run(self: Box<Self>, py: Python<'_>, bridge: &Arc<Bridge>) {
        self.remove(py, bridge);
    }

    fn loop_closed(self: Box<Self>) {}
}

fn remove(py: Python<'_>, bridge: &Bridge, fd: i32, direction: Direction) {
    let method = match direction {
        Direction::Read => pyo3::intern!(py, "remove_reader"),
        Direction::Write => pyo3::intern!(py, "remove_writer"),
    };
    // A closed loop has let go of its watches already.
    let _ = bridge.event_loop(py).call_method1(method, (fd,));
    count(&COUNTERS.removed);
}

/// The loop's callback for one direction of one socket.
#[pyclass(frozen, module = "packetflow._native")]
struct SocketReady {
    registration: Arc<Registration>,
    /// The reader's callback (else the writer's).
    read: bool,
    bridge: Weak<Bridge>,
}

impl SocketReady {
    fn direction(&self) -> Direction {
        if self.read {
            Direction::Read
        } else {
            Direction::Write
        }
    }
}

#[pymethods]
impl SocketReady {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        count(&COUNTERS.callbacks);
        let Some(bridge) = self.bridge.upgrade() else { return Ok(()) };
        let waker = {
            let mut watched = self.registration.watched.lock();
            let (slot, registered) = watched.parts(self.direction());
            let waker = slot.take();
            if waker.is_none() {
                // Nobody waits this way: a level-triggered watch would call
                // again at every turn of the loop.
                *registered = false;
            }
            waker
        };
        let Some(waker) = waker else {
            remove(py, &bridge, self.registration.fd.as_raw_fd(), self.direction());
            return Ok(());
        };
        bridge::socket_ready(|| waker.wake());
        bridge.run_pending(py)?;
        match bridge::take_deferred() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl Drop for SocketReady {
    fn drop(&mut self) {
        // Still registered: the loop let go of the callback without being
        // asked (it is closing, its selector drops every watch). Whoever
        // waits is woken, and finds the loop gone.
        let waker = {
            let mut watched = self.registration.watched.lock();
            let (slot, registered) = watched.parts(self.direction());
            if !std::mem::take(registered) {
                return;
            }
            slot.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What the loop-driven sockets did since the process started: watches
/// made, waits each way, registrations with loops and removals, callbacks,
/// watches moved to the runtime, and the wake-ups of loops written from
/// other threads (`cross_thread_wakes`, any loop's). For tests and
/// benchmarks.
#[pyfunction]
pub(crate) fn _socket_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    out.set_item("watches", load(&COUNTERS.watches))?;
    out.set_item("read_waits", load(&COUNTERS.read_waits))?;
    out.set_item("write_waits", load(&COUNTERS.write_waits))?;
    out.set_item("registered", load(&COUNTERS.registered))?;
    out.set_item("removed", load(&COUNTERS.removed))?;
    out.set_item("callbacks", load(&COUNTERS.callbacks))?;
    out.set_item("on_runtime", load(&COUNTERS.on_runtime))?;
    out.set_item("cross_thread_wakes", load(&bridge::CROSS_THREAD_WAKES))?;
    Ok(out)
}
