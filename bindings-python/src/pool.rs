//! The threads that run `def` handlers, off the event loop.
//!
//! Calls wait in one queue. A thread that wakes takes the GIL once and runs
//! every call it finds before letting go, so a burst of packets costs one GIL
//! acquisition, not one per packet. While a thread drains, one more is kept
//! on standby (waiting for the GIL): if a handler blocks and releases the GIL
//! (`time.sleep`, I/O), the standby thread takes over the queue, so one slow
//! handler does not hold up the others. Threads are started on demand, up to
//! the reactor's `handler_threads`.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use packetflow::{Context, ErrorCode, HandlerResult, PfError, Value};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::handler::{self, PyHandler};
use crate::runtime;

/// One `def` handler call.
pub(crate) struct SyncCall {
    pub(crate) handler: Arc<PyHandler>,
    pub(crate) data: Value,
    pub(crate) ctx: Context,
    pub(crate) reply: oneshot::Sender<HandlerResult>,
}

struct State {
    queue: VecDeque<SyncCall>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Wake-ups sent that no thread has taken yet.
    notified: usize,
    /// Threads awake (waiting for the GIL or running calls).
    active: usize,
    /// A helper was woken while another thread drains.
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

fn stopped_error() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the reactor is stopped")
}

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

    /// Queues a call and makes sure a thread will run it.
    pub(crate) fn push(&self, call: SyncCall) {
        let mut st = self.state.lock();
        if st.stopped {
            drop(st);
            let _ = call.reply.send(Err(stopped_error()));
            return;
        }
        st.queue.push_back(call);
        let wanted = if st.active == 0 {
            st.notified == 0
        } else if !st.standby {
            st.standby = true;
            true
        } else {
            false
        };
        if wanted {
            self.wake_or_spawn(&mut st);
        }
    }

    fn wake_or_spawn(&self, st: &mut State) {
        if st.idle > st.notified {
            st.notified += 1;
            self.wake.notify_one();
        } else if st.threads < self.max_threads {
            let Some(pool) = self.this.upgrade() else { return };
            let spawned = std::thread::Builder::new()
                .name("packetflow-handler".into())
                .spawn(move || pool.work());
            if spawned.is_ok() {
                st.threads += 1;
            }
        }
    }

    fn work(&self) {
        let mut st = self.state.lock();
        loop {
            if st.queue.is_empty() {
                if st.stopped {
                    st.threads -= 1;
                    return;
                }
                // Nothing left for a helper to take over: the next drain
                // may want a new one.
                st.standby = false;
                st.idle += 1;
                self.wake.wait(&mut st);
                st.idle -= 1;
                st.notified = st.notified.saturating_sub(1);
                continue;
            }
            st.active += 1;
            drop(st);
            let attached = runtime::attach_from_background(|py| {
                self.state.lock().standby = false;
                loop {
                    let next = self.state.lock().queue.pop_front();
                    match next {
                        Some(call) => handler::run_sync(py, call),
                        None => break,
                    }
                }
            });
            st = self.state.lock();
            st.active -= 1;
            if attached.is_none() {
                // The interpreter is going away: answer what is left and go.
                st.stopped = true;
                let left: Vec<_> = st.queue.drain(..).collect();
                st.threads -= 1;
                drop(st);
                for call in left {
                    let _ = call.reply.send(Err(stopped_error()));
                }
                return;
            }
        }
    }

    /// Stops the threads once the queue is empty; later calls get PF503.
    pub(crate) fn stop(&self) {
        let mut st = self.state.lock();
        st.stopped = true;
        let left: Vec<_> = st.queue.drain(..).collect();
        self.wake.notify_all();
        drop(st);
        for call in left {
            let _ = call.reply.send(Err(stopped_error()));
        }
    }
}

/// Stops every pool (the interpreter is exiting).
pub(crate) fn stop_all() {
    let pools: Vec<_> = POOLS.lock().iter().filter_map(Weak::upgrade).collect();
    for pool in pools {
        pool.stop();
    }
}
