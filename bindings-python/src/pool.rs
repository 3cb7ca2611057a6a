//! The threads that run `def` handlers, off the event loop.
//!
//! They are Python daemon threads running `packetflow._support.
//! handler_thread`, a short loop that asks [`PoolHandle::next`] for a call,
//! makes it, and reports the outcome. What a call is (which function, what
//! arguments, where its outcome goes) is the [`PoolJob`]'s business: this
//! module only queues jobs and runs threads. Making the call from Python (rather
//! than from Rust holding the GIL) keeps Rust frames off the stack while
//! user code runs: when the interpreter exits with a handler still running,
//! CPython ends that thread as it ends any daemon thread, which it could not
//! do safely through Rust frames.
//!
//! Calls wait in one queue. `next` hands out the next call without letting
//! go of the GIL while there is one, so a burst of packets is served under
//! one GIL acquisition; it releases the GIL only to wait. While a thread
//! works, one more is kept on standby (woken, waiting for the GIL): if a
//! handler blocks and releases the GIL (`time.sleep`, I/O), the standby
//! thread takes over the queue, so one slow handler does not hold up the
//! others. Threads are started on demand, up to the reactor's
//! `handler_threads`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::runtime;

/// A call for a handler thread: a callable and its two arguments.
pub(crate) type NextCall<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

/// One call to make on a handler thread.
pub(crate) trait PoolJob: Send + 'static {
    /// Whether nobody waits for the outcome any more (the job is dropped
    /// unrun).
    fn abandoned(&self) -> bool;
    /// The call to make, built on the handler thread with the GIL; `None`
    /// when there is none: it could not be built (the job has answered its
    /// caller), or the job's work was done here (a poll of a detached core
    /// future, see [`detached`](crate::detached)).
    fn start<'py>(&mut self, py: Python<'py>) -> Option<NextCall<'py>>;
    /// Reports what the call returned or raised.
    fn finish(self: Box<Self>, py: Python<'_>, outcome: PyResult<Bound<'_, PyAny>>);
    /// Answers without running: the pool is stopped.
    fn refuse(self: Box<Self>);
}

struct State {
    queue: VecDeque<Box<dyn PoolJob>>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Wake-ups sent that no thread has taken yet.
    notified: usize,
    /// Threads awake (running a call, or woken and waiting for the GIL).
    active: usize,
    /// A helper was woken while another thread works.
    standby: bool,
    stopped: bool,
}

/// The handler threads of one reactor.
pub(crate) struct Pool {
    state: Mutex<State>,
    wake: Condvar,
    max_threads: usize,
    this: Weak<Pool>,
}

static POOLS: Mutex<Vec<Weak<Pool>>> = Mutex::new(Vec::new());

thread_local! {
    /// The call a handler thread is making: where its outcome goes.
    static CURRENT: RefCell<Option<Box<dyn PoolJob>>> = const { RefCell::new(None) };
    /// Whether this handler thread asked for work before.
    static STARTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static START_THREAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl Pool {
    pub(crate) fn new(max_threads: usize) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|this| Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                notified: 0,
                active: 0,
                standby: false,
                stopped: false,
            }),
            wake: Condvar::new(),
            max_threads: max_threads.max(1),
            this: this.clone(),
        });
        let mut pools = POOLS.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Queues a call and makes sure a thread will make it.
    pub(crate) fn push(&self, job: Box<dyn PoolJob>) {
        let mut st = self.state.lock();
        if st.stopped {
            drop(st);
            job.refuse();
            return;
        }
        st.queue.push_back(job);
        let wanted = if st.active == 0 {
            st.notified == 0
        } else if !st.standby {
            st.standby = true;
            true
        } else {
            false
        };
        if wanted {
            self.wake_or_start(st);
        }
    }

    /// Wakes an idle thread, or starts a new one (up to the limit).
    fn wake_or_start(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if st.idle > st.notified {
            st.notified += 1;
            self.wake.notify_one();
        } else if st.threads < self.max_threads {
            st.threads += 1;
            st.active += 1; // the new thread starts awake
            drop(st);
            if !self.start_thread() {
                let mut st = self.state.lock();
                st.threads -= 1;
                st.active -= 1;
            }
        }
    }

    /// Starts one more handler thread; `false` if it could not be.
    fn start_thread(&self) -> bool {
        let Some(pool) = self.this.upgrade() else { return false };
        runtime::attach_from_background(|py| {
            let start = START_THREAD.get_or_try_init(py, || {
                Ok::<_, PyErr>(py.import("packetflow._support")?.getattr("start_handler_thread")?.unbind())
            });
            match start.and_then(|start| start.bind(py).call1((PoolHandle { pool },))) {
                Ok(interruption) if interruption.is_none() => true,
                Ok(interruption) => {
                    hand_back(py, PyErr::from_value(interruption));
                    true
                }
                Err(error) => {
                    hand_back(py, error);
                    false
                }
            }
        })
        .unwrap_or(false)
    }

    /// Stops the threads; queued and later calls are refused.
    pub(crate) fn stop(&self) {
        let mut st = self.state.lock();
        st.stopped = true;
        let left: Vec<_> = st.queue.drain(..).collect();
        self.wake.notify_all();
        drop(st);
        for job in left {
            job.refuse();
        }
    }
}

/// An exception raised in the Python code a pool runs for itself (starting
/// a thread), which would otherwise be lost there: Ctrl-C is made pending
/// again, so that the interrupted caller's next check raises it (a blocking
/// call checks every 50 ms); anything else is reported as unraisable.
fn hand_back(py: Python<'_>, error: PyErr) {
    if error.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        // SAFETY: takes no arguments; callable with or without the GIL.
        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
    } else {
        error.write_unraisable(py, None);
    }
}

/// Stops every pool (the interpreter is exiting).
pub(crate) fn stop_all() {
    let pools: Vec<_> = POOLS.lock().iter().filter_map(Weak::upgrade).collect();
    for pool in pools {
        pool.stop();
    }
}

/// A handler thread's view of its pool.
#[pyclass(frozen, module = "packetflow._native")]
pub(crate) struct PoolHandle {
    pool: Arc<Pool>,
}

#[pymethods]
impl PoolHandle {
    /// The next call as `(fn, data, ctx)`, waiting (GIL released) while
    /// there is none; `None` once the pool is stopped.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Option<NextCall<'py>>> {
        // A call left unanswered (the loop around this was interrupted)
        // ends here, as a failure.
        CURRENT.with(|c| c.borrow_mut().take());
        let pool = &self.pool;
        if !STARTED.with(|s| s.replace(true)) {
            // A new thread: it was the standby its starter asked for.
            pool.state.lock().standby = false;
        }
        loop {
            let mut st = pool.state.lock();
            if let Some(mut job) = st.queue.pop_front() {
                if !st.queue.is_empty() && !st.standby {
                    // More calls wait: keep a helper ready in case this
                    // one blocks.
                    st.standby = true;
                    pool.wake_or_start(st);
                } else {
                    drop(st);
                }
                if job.abandoned() {
                    continue; // its packet already ended (deadline, stop)
                }
                let Some(call) = job.start(py) else { continue };
                CURRENT.with(|c| *c.borrow_mut() = Some(job));
                return Ok(Some(call));
            }
            if st.stopped {
                st.threads -= 1;
                st.active -= 1;
                return Ok(None);
            }
            // Nothing to do: wait without the GIL. Nothing is left for a
            // helper to take over either, so the next push may want one.
            st.active -= 1;
            st.standby = false;
            drop(st);
            py.detach(|| {
                let mut st = pool.state.lock();
                while st.queue.is_empty() && !st.stopped {
                    st.idle += 1;
                    pool.wake.wait(&mut st);
                    st.idle -= 1;
                    st.notified = st.notified.saturating_sub(1);
                }
                st.active += 1;
            });
            // Holding the GIL again: if this thread was the standby, the
            // one it stood by for has let go of it.
            pool.state.lock().standby = false;
        }
    }

    /// Reports the value the current call's handler returned.
    fn finish(&self, py: Python<'_>, value: Bound<'_, PyAny>) {
        if let Some(job) = CURRENT.with(|c| c.borrow_mut().take()) {
            job.finish(py, Ok(value));
        }
    }

    /// Reports the exception the current call's handler raised.
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        if let Some(job) = CURRENT.with(|c| c.borrow_mut().take()) {
            job.finish(py, Err(PyErr::from_value(exc)));
        }
    }
}
