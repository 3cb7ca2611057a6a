//! The blocking face of the async API (`submit_sync`, `call_sync`, ...):
//! the same core future, polled by the calling thread itself while it waits
//! with the GIL released.
//!
//! Polled where it is awaited, the future needs no thread in between: what
//! it wakes on a peer's connection (its submit frame) goes straight to the
//! thread that drives that connection (a runtime thread, or the loop that
//! runs it: see [`sockets`]), and the answer wakes the caller directly.
//! Spawned on the runtime, each call cost a hop to a runtime thread and
//! back, on top of the connection's own (bench/python/RESULTS.md, "Where
//! the connections run").

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::{bridge, runtime, sockets};

/// How often a waiting main thread looks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Wakes the thread that waits for a future.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `work` to completion and returns its output. `what` names the API
/// and `instead` its async twin, for the error raised when this would block
/// a running event loop; `sockets`, the calling reactor's (its node's
/// connections may move to the runtime, see [`sockets::Sockets::used_blocking`]).
pub(crate) fn wait<T: Send + 'static>(
    py: Python<'_>,
    what: &str,
    instead: &str,
    sockets: Option<&sockets::Sockets>,
    work: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    if bridge::running_loop(py)?.is_some() {
        return Err(PyRuntimeError::new_err(format!(
            "{what} would block the running event loop (and any handler that needs it); \
             use `await {instead}` instead"
        )));
    }
    if let Some(sockets) = sockets {
        sockets.used_blocking();
    }
    // No loop runs on this thread: connections run by a loop of this
    // thread would wait for it (see `sockets`).
    sockets::release_on_this_thread();
    let rt = runtime::runtime()?;
    let mut work: BoxFuture<'static, T> = Box::pin(work);
    loop {
        // Poll and park without the GIL, waking now and then so that
        // Ctrl-C (a Python signal handler, run only by the main thread) is
        // seen.
        let (back, got) = py.detach(move || {
            // Timers and tasks the future makes belong to the runtime.
            let _runtime = rt.enter();
            let waker = Waker::from(Arc::new(Unpark(thread::current())));
            let mut cx = Context::from_waker(&waker);
            let until = Instant::now() + SIGNAL_CHECK;
            loop {
                if let Poll::Ready(out) = work.as_mut().poll(&mut cx) {
                    return (work, Some(out));
                }
                let now = Instant::now();
                if now >= until {
                    return (work, None);
                }
                // A wake that came before this park leaves its token: the
                // park returns at once and the future is polled again.
                thread::park_timeout(until - now);
            }
        });
        work = back;
        match got {
            Some(out) => return Ok(out),
            None => {
                if let Err(interrupt) = py.check_signals() {
                    // Dropping the future cancels the packet.
                    drop(work);
                    return Err(interrupt);
                }
            }
        }
    }
}
