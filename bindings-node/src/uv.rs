//! Sockets whose readiness comes from node's own event loop (libuv).
//!
//! A reactor's node runs its connections on the JS thread (a
//! `ConnectionSpawner` whose tasks the bridge polls there) and gives the
//! core a [`LoopReadiness`]: once a connection is set up, its socket leaves
//! the Tokio runtime, and when a read or write would block, the connection
//! asks for a libuv poll handle on the socket (`uv_poll_t`, on a duplicate
//! of its descriptor). libuv reports the socket ready from the event loop,
//! on the JS thread, and the callback polls the connection right there
//! ([`bridge::on_socket_ready`]): the frame is read, decoded, handed to its
//! JS handler and answered without any other thread waking. Node exports
//! libuv's functions, so the addon declares and calls them directly.
//!
//! One poll handle per socket, made at the first read or write that would
//! block on the JS thread, closed when the connection drops its watch. A
//! wait made on another thread (the bridge's stand-in polls connections on
//! the runtime's thread while the JS thread is blocked: see
//! `bridge::stand_in`) cannot reach libuv: it wakes the connection at once
//! instead, which stays queued for the JS thread.
//!
//! ```text
//!   wait(direction, waker): the waker is kept; the handle watches every
//!   direction someone waits for (uv_poll_start only when that set grows);
//!   while the waker is kept, the socket is not tried that way again
//!   (may_be_ready is false)
//!         │
//!         ▼ the socket is ready (level-triggered: readiness that came
//!   on_poll  before the wait is reported too)
//!         │ the waker of each ready direction is taken and woken inside
//!         │ bridge::on_socket_ready, which polls the connection at once;
//!         │ a ready direction nobody waits for is no longer watched
//!         │ (the connection reads until it would block again, so the
//!         │ handle usually stays as it is: no system call to re-arm it)
//!         ▼
//!   dropped on the JS thread: uv_close, then the duplicate is closed in
//!   the close callback; dropped on another thread (a connection ended
//!   while the stand-in polled it, or dropped by the runtime as node
//!   exits): queued, and closed at the JS thread's next entry (the drop
//!   asks for a threadsafe call), or when the environment is torn down (a
//!   cleanup hook closes every handle left, as a worker's loop must have
//!   none open when it closes)
//! ```
//!
//! The handles are unreferenced (`uv_unref`): whether node stays up is the
//! reactor's decision (being on the network keeps it up), as before.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::{self, Rc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::thread::{self, ThreadId};

use napi::{sys, Env};
use packetflow::net::{Direction, SocketReadiness, SocketWatch};
use parking_lot::Mutex;

use crate::bridge::{self, Local, Shared};

/// The start of every libuv handle (`UV_HANDLE_FIELDS`): `data` is the one
/// public field, the rest is opaque to the addon.
#[repr(C)]
struct UvHandle {
    data: *mut c_void,
}

/// `uv_loop_t`, opaque.
#[repr(C)]
struct UvLoop {
    _opaque: [u8; 0],
}

/// `UV_POLL` in `uv_handle_type`.
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;
const UV_WRITABLE: c_int = 2;

type PollCallback = unsafe extern "C" fn(handle: *mut UvHandle, status: c_int, events: c_int);
type CloseCallback = unsafe extern "C" fn(handle: *mut UvHandle);

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(event_loop: *mut UvLoop, handle: *mut UvHandle, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut UvHandle, events: c_int, callback: PollCallback) -> c_int;
    fn uv_poll_stop(handle: *mut UvHandle) -> c_int;
    fn uv_close(handle: *mut UvHandle, callback: Option<CloseCallback>);
    fn uv_unref(handle: *mut UvHandle);
    fn uv_strerror(error: c_int) -> *const c_char;
}

fn uv_error(call: &str, code: c_int) -> io::Error {
    // SAFETY: libuv returns a static string for any code.
    let text = unsafe { CStr::from_ptr(uv_strerror(code)) }.to_string_lossy();
    io::Error::other(format!("{call} failed: {text}"))
}

/// Counters of this module, for the tests (`socketStats` in the addon:
/// not exported by index.js).
pub struct Counters {
    /// Poll handles made (one per socket that ever had to wait).
    pub watches: AtomicU64,
    /// Waits for a readable socket, and for a writable one.
    pub read_waits: AtomicU64,
    pub write_waits: AtomicU64,
    /// libuv reported a watched socket ready.
    pub callbacks: AtomicU64,
    /// Poll handles closed.
    pub closed: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    watches: AtomicU64::new(0),
    read_waits: AtomicU64::new(0),
    write_waits: AtomicU64::new(0),
    callbacks: AtomicU64::new(0),
    closed: AtomicU64::new(0),
};

/// The [`SocketReadiness`] of one reactor's node: poll handles are made on
/// the JS thread that owns the reactor, inside one of its entries (where
/// the bridge polls the connections).
pub struct LoopReadiness {
    shared: Weak<Shared>,
    js_thread: ThreadId,
}

impl LoopReadiness {
    /// For the reactor whose bridge is `shared`; made on its JS thread.
    pub fn new(shared: &Arc<Shared>) -> LoopReadiness {
        LoopReadiness { shared: Arc::downgrade(shared), js_thread: thread::current().id() }
    }
}

fn outside_entry() -> io::Error {
    io::Error::other("a connection's socket was polled outside the reactor's entries on the JS thread")
}

impl SocketReadiness for LoopReadiness {
    fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
        // The handle itself is made at the first wait on the JS thread.
        Ok(Box::new(PollWatch {
            poller: None,
            fd: Some(fd),
            shared: self.shared.clone(),
            js_thread: self.js_thread,
        }))
    }
}

/// Makes the poll handle of `fd` on the JS thread, inside an entry of the
/// reactor `shared` (where the bridge polls connections).
fn make_poller(shared: &Weak<Shared>, fd: OwnedFd) -> io::Result<Rc<RefCell<Poller>>> {
    close_orphans();
    let shared = shared.upgrade().ok_or_else(|| io::Error::other("the reactor is gone"))?;
    let (env, local) = bridge::entry_of(&shared).ok_or_else(outside_entry)?;
    let mut event_loop = std::ptr::null_mut();
    // SAFETY: on the JS thread of `env`, a live environment (we are inside
    // one of its entries); N-API only writes the out-pointer.
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut event_loop) };
    if status != sys::Status::napi_ok || event_loop.is_null() {
        return Err(io::Error::other("node's event loop is not reachable"));
    }
    let handle = PollHandle::new()?;
    // SAFETY: `handle` is fresh memory of `uv_poll_t`'s size, and
    // `event_loop` this thread's loop; libuv takes the descriptor as it is
    // (it stays open, owned by the poller, until the handle closes).
    let code = unsafe { uv_poll_init(event_loop.cast(), handle.0, fd.as_raw_fd()) };
    if code != 0 {
        // Never initialised: freed without a close.
        handle.free();
        return Err(uv_error("uv_poll_init", code));
    }
    // SAFETY: an initialised handle of this thread's loop.
    unsafe { uv_unref(handle.0) };
    let poller = Rc::new(RefCell::new(Poller {
        handle: handle.0,
        started: 0,
        readers: None,
        writers: None,
        closed: false,
        fd: Some(fd),
        env,
        shared: Arc::downgrade(&shared),
        local: Rc::downgrade(&local),
    }));
    // The handle holds a reference of its own, given back in `on_closed`.
    // SAFETY: `handle` is live; `data` is its public field.
    unsafe { (*handle.0).data = Rc::into_raw(poller.clone()) as *mut c_void };
    track(&poller, &env);
    COUNTERS.watches.fetch_add(1, Ordering::Relaxed);
    Ok(poller)
}

/// The memory of one `uv_poll_t`.
struct PollHandle(*mut UvHandle);

impl PollHandle {
    fn layout() -> Layout {
        // SAFETY: a pure query of libuv.
        let size = unsafe { uv_handle_size(UV_POLL) };
        Layout::from_size_align(size.max(std::mem::size_of::<UvHandle>()), 16).expect("uv_poll_t's layout")
    }

    fn new() -> io::Result<PollHandle> {
        // SAFETY: a non-zero size (at least a pointer's).
        let memory = unsafe { alloc_zeroed(Self::layout()) };
        if memory.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(PollHandle(memory.cast()))
    }

    /// Frees a handle that libuv no longer knows (never initialised, or
    /// closed).
    fn free(self) {
        // SAFETY: allocated by `new` with the same layout, freed once.
        unsafe { dealloc(self.0.cast(), Self::layout()) };
    }
}

/// One watched socket, on the JS thread.
struct Poller {
    handle: *mut UvHandle,
    /// The events the handle is started with (0: stopped).
    started: c_int,
    readers: Option<Waker>,
    writers: Option<Waker>,
    /// `uv_close` was called: the handle is not touched again.
    closed: bool,
    /// The duplicate watched; closed once the handle is closed.
    fd: Option<OwnedFd>,
    env: Env,
    shared: Weak<Shared>,
    local: rc::Weak<RefCell<Local>>,
}

impl Poller {
    /// Watches exactly `events` (stops the handle for none).
    fn watch_events(&mut self, events: c_int) -> io::Result<()> {
        if events == self.started || self.closed {
            return Ok(());
        }
        // SAFETY: an initialised, unclosed handle of this thread's loop.
        let code = unsafe {
            if events == 0 {
                uv_poll_stop(self.handle)
            } else {
                uv_poll_start(self.handle, events, on_poll)
            }
        };
        if code != 0 {
            return Err(uv_error("uv_poll_start", code));
        }
        self.started = events;
        Ok(())
    }

    /// Closes the handle (once); the duplicate is closed after it, in
    /// `on_closed`. Wakers are dropped unwoken: nothing waits any more.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.readers = None;
        self.writers = None;
        // SAFETY: an initialised handle of this thread's loop, closed once;
        // libuv calls `on_closed` once it is done with it.
        unsafe { uv_close(self.handle, Some(on_closed)) };
    }
}

/// libuv is done with a closed handle: its reference to the poller is
/// given back (closing the duplicate if it was the last) and its memory
/// freed.
unsafe extern "C" fn on_closed(handle: *mut UvHandle) {
    // SAFETY: `data` holds the reference `watch` made for the handle,
    // given back once, here.
    let poller = unsafe { Rc::from_raw((*handle).data as *const RefCell<Poller>) };
    poller.borrow_mut().fd = None;
    drop(poller);
    PollHandle(handle).free();
    COUNTERS.closed.fetch_add(1, Ordering::Relaxed);
}

/// libuv saw a watched socket ready (or failed: `status` < 0).
unsafe extern "C" fn on_poll(handle: *mut UvHandle, status: c_int, events: c_int) {
    COUNTERS.callbacks.fetch_add(1, Ordering::Relaxed);
    close_orphans();
    // SAFETY: the handle holds a reference to its poller until `on_closed`,
    // which cannot run during this callback.
    let poller = unsafe { &*((*handle).data as *const RefCell<Poller>) };
    let Ok(mut watched) = poller.try_borrow_mut() else { return };
    if watched.closed {
        return;
    }
    let ready = if status < 0 { UV_READABLE | UV_WRITABLE } else { events };
    let readers = if ready & UV_READABLE != 0 { watched.readers.take() } else { None };
    let writers = if ready & UV_WRITABLE != 0 { watched.writers.take() } else { None };
    // A direction that is ready with nobody waiting: no longer watched (a
    // level-triggered handle would report it at every turn of the loop).
    let mut idle = 0;
    if ready & UV_READABLE != 0 && readers.is_none() {
        idle |= UV_READABLE;
    }
    if ready & UV_WRITABLE != 0 && writers.is_none() {
        idle |= UV_WRITABLE;
    }
    let remaining = watched.started & !idle;
    let _ = watched.watch_events(remaining);
    let (env, shared, local) = (watched.env, watched.shared.upgrade(), watched.local.upgrade());
    drop(watched);
    if readers.is_none() && writers.is_none() {
        return;
    }
    let wake = move || {
        readers.into_iter().chain(writers).for_each(Waker::wake);
    };
    match (shared, local) {
        (Some(shared), Some(local)) => bridge::on_socket_ready(&env, &shared, &local, wake),
        // The reactor is going away: whatever the wakers do, they do alone.
        _ => wake(),
    }
}

/// The core's handle on one socket's [`Poller`] (see [`SocketWatch`]).
struct PollWatch {
    /// Made at the first wait on the JS thread.
    poller: Option<Rc<RefCell<Poller>>>,
    /// The duplicate, until the poller takes it.
    fd: Option<OwnedFd>,
    shared: Weak<Shared>,
    js_thread: ThreadId,
}

// SAFETY: the `Rc` is only touched on `js_thread` (checked at every use);
// dropped elsewhere, it is not touched but queued for that thread (see
// `Drop`).
unsafe impl Send for PollWatch {}

impl SocketWatch for PollWatch {
    fn wait(&mut self, direction: Direction, waker: &Waker) -> io::Result<()> {
        if thread::current().id() != self.js_thread {
            // Polled by the stand-in while the JS thread is blocked (see
            // `bridge::stand_in`): libuv cannot be reached from here. Woken
            // at once: the task stays queued for the JS thread, and the
            // stand-in polls it again at its next period.
            waker.wake_by_ref();
            return Ok(());
        }
        let poller = match (&self.poller, self.fd.take()) {
            (Some(poller), _) => poller,
            (None, Some(fd)) => self.poller.insert(make_poller(&self.shared, fd)?),
            (None, None) => return Err(io::Error::other("the socket's poll handle could not be made")),
        };
        let mut poller = poller.borrow_mut();
        if poller.closed {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "node's event loop is closing"));
        }
        let (slot, event, counter) = match direction {
            Direction::Read => (&mut poller.readers, UV_READABLE, &COUNTERS.read_waits),
            Direction::Write => (&mut poller.writers, UV_WRITABLE, &COUNTERS.write_waits),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match slot {
            Some(kept) if kept.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        let events = poller.started | event;
        poller.watch_events(events)
    }

    fn may_be_ready(&self, direction: Direction) -> bool {
        // Ready once `on_poll` took the waker (or off the JS thread, where
        // nothing can be known).
        !self.waiting(direction)
    }
}

impl PollWatch {
    /// Whether a waker still waits for `direction` (libuv has not reported
    /// it ready since the last wait).
    fn waiting(&self, direction: Direction) -> bool {
        if thread::current().id() != self.js_thread {
            return false;
        }
        let Some(poller) = &self.poller else { return false };
        let Ok(poller) = poller.try_borrow() else { return false };
        match direction {
            Direction::Read => poller.readers.is_some(),
            Direction::Write => poller.writers.is_some(),
        }
    }
}

impl Drop for PollWatch {
    fn drop(&mut self) {
        let Some(poller) = self.poller.take() else { return };
        if thread::current().id() == self.js_thread {
            poller.borrow_mut().close();
            return;
        }
        // Not on the JS thread: neither libuv nor the `Rc` may be touched
        // here. The JS thread closes it at its next entry (the duplicate
        // keeps the socket open until then): one is asked for.
        ORPHANS.lock().push((self.js_thread, Rc::into_raw(poller) as usize));
        if let Some(shared) = self.shared.upgrade() {
            shared.look_soon();
        }
    }
}

/// Watches dropped off their JS thread: the thread, and a reference to
/// the poller made by `Rc::into_raw`.
static ORPHANS: Mutex<Vec<(ThreadId, usize)>> = Mutex::new(Vec::new());

/// Closes the orphaned watches of this thread (see `PollWatch::drop`).
pub fn close_orphans() {
    let here = thread::current().id();
    let mine: Vec<usize> = {
        let mut orphans = ORPHANS.lock();
        if orphans.is_empty() {
            return;
        }
        let (mine, others) = orphans.drain(..).partition(|(thread, _)| *thread == here);
        *orphans = others;
        mine.into_iter().map(|(_, poller)| poller).collect()
    };
    for poller in mine {
        // SAFETY: made by `Rc::into_raw` on this thread (the watch's own
        // reference), taken back once.
        let poller = unsafe { Rc::from_raw(poller as *const RefCell<Poller>) };
        poller.borrow_mut().close();
    }
}

thread_local! {
    /// The pollers of this thread's environment, for its cleanup hook.
    static LIVE: RefCell<Vec<rc::Weak<RefCell<Poller>>>> = const { RefCell::new(Vec::new()) };
    /// The cleanup hook of this thread's environment is registered.
    static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps `poller` in this thread's list (dropping the entries of pollers
/// gone), and registers the environment's cleanup hook at the first.
fn track(poller: &Rc<RefCell<Poller>>, env: &Env) {
    LIVE.with_borrow_mut(|live| {
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|p| p.strong_count() > 0);
        }
        live.push(Rc::downgrade(poller));
    });
    if !HOOKED.replace(true) {
        // SAFETY: on the JS thread of `env`; the hook takes no argument.
        let status =
            unsafe { sys::napi_add_env_cleanup_hook(env.raw(), Some(on_env_cleanup), std::ptr::null_mut()) };
        if status != sys::Status::napi_ok {
            HOOKED.set(false);
        }
    }
}

/// The environment is torn down (node exiting, a worker ending): every
/// handle still open is closed, so that the loop can close.
unsafe extern "C" fn on_env_cleanup(_arg: *mut c_void) {
    close_orphans();
    let live = LIVE.with_borrow_mut(std::mem::take);
    for poller in live.iter().filter_map(rc::Weak::upgrade) {
        poller.borrow_mut().close();
    }
    HOOKED.set(false);
}
