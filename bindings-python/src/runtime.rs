//! The one Tokio runtime behind every reactor of the process, and the two
//! process-wide conditions in which it must not be used: after `fork()`
//! (the child has the runtime's memory but none of its threads, so anything
//! given to it would wait forever) and after interpreter shutdown began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static FORKED: AtomicBool = AtomicBool::new(false);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Worker threads of the runtime. Timers, I/O and packets that are not
/// awaited from an event loop run there; handlers never do. Two measured
/// best on the 2-core machine the benchmarks ran on (see bench/python).
const DEFAULT_WORKERS: usize = 2;

extern "C" fn after_fork_in_child() {
    if RUNTIME.get().is_some() {
        FORKED.store(true, Ordering::SeqCst);
    }
}

/// Installs the fork hook; called once when the module is imported.
pub(crate) fn install_fork_hook() {
    // SAFETY: registering a handler that only stores to an atomic.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
}

fn forked_error() -> PyErr {
    PyRuntimeError::new_err(
        "packetflow cannot be used in a child process created by fork() after the parent \
         started using it (its runtime threads do not exist in the child); create reactors \
         after forking, or use the 'spawn' start method of multiprocessing",
    )
}

/// Fails when this process is a fork of one that started the runtime.
pub(crate) fn check_not_forked() -> PyResult<()> {
    if FORKED.load(Ordering::Relaxed) {
        return Err(forked_error());
    }
    Ok(())
}

/// The runtime, started on first use.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    check_not_forked()?;
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let workers = std::env::var("PACKETFLOW_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_WORKERS);
    let built = Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("packetflow-rt")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the packetflow runtime: {e}")))?;
    // Another thread may have won the race; its runtime is the one kept.
    Ok(RUNTIME.get_or_init(|| built))
}

/// Marks the interpreter as shutting down: background threads stop
/// attaching to Python from here on.
pub(crate) fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Whether background threads must leave Python alone.
pub(crate) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Relaxed)
}

/// Runs `f` attached to the interpreter from a background thread, unless
/// the interpreter is going away (then `None`).
pub(crate) fn attach_from_background<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if shutting_down() {
        return None;
    }
    Python::try_attach(f)
}
