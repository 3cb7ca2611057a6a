//! The blocking face of the async API (`submit_sync`, `call_sync`, ...):
//! the same core future, run on the runtime while the calling thread waits
//! with the GIL released.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::{bridge, runtime, sockets};

/// How often a waiting main thread looks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Runs `work` to completion and returns its output. `what` names the API
/// and `instead` its async twin, for the error raised when this would block
/// a running event loop.
pub(crate) fn wait<T: Send + 'static>(
    py: Python<'_>,
    what: &str,
    instead: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    if bridge::running_loop(py)?.is_some() {
        return Err(PyRuntimeError::new_err(format!(
            "{what} would block the running event loop (and any handler that needs it); \
             use `await {instead}` instead"
        )));
    }
    // No loop runs on this thread: connections run by a loop of this
    // thread would wait for it (see `sockets`).
    sockets::release_on_this_thread();
    let rt = runtime::runtime()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(work.await);
    });
    let mut rx = rx;
    loop {
        // Wait without the GIL, waking now and then so that Ctrl-C (a
        // Python signal handler, run only by the main thread) is seen.
        let (back, got) = py.detach(move || {
            let got = rx.recv_timeout(SIGNAL_CHECK);
            (rx, got)
        });
        rx = back;
        match got {
            Ok(out) => return Ok(out),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    task.abort();
                    return Err(interrupt);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("the packetflow runtime dropped the operation"));
            }
        }
    }
}
