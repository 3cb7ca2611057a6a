//! A home: the process that runs, from a scheduler, the work woken off the
//! schedulers (a reactor's dispatcher).
//!
//! Work woken on the library's network and timer thread waits in the
//! home's queue, and the process is woken once for all of it
//! (`:pf_route`); it then calls a NIF that runs [`Home::run_queued`].
//! Sending each output from that thread instead would cost a cross-thread
//! wake-up per message; from the process, a message to another process
//! wakes no thread.
//!
//! ```text
//!   queue empty ── defer ──▶ queue not empty ── :pf_route handled ──▶ queue empty
//!                 (wakes the                   (run_queued takes
//!                  process once)                 everything)
//! ```
//!
//! How the process is woken depends on where the first work came from: on
//! a thread of the runtime, by a message sent from there; inside a NIF, by
//! a message sent with its environment as it ends; on a scheduler outside
//! any NIF of this library (a resource destructor), by a task of the
//! runtime.

use std::cell::RefCell;
use std::sync::Arc;

use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv};

use super::inline::{self, send_from, Outbox};
use super::Runnable;
use crate::{atoms, runtime};

/// A process and the work waiting for it.
pub struct Home {
    process: LocalPid,
    queue: Mutex<Vec<Arc<dyn Runnable>>>,
}

impl Home {
    /// A home whose work `process` runs when it receives `:pf_route`.
    pub fn new(process: LocalPid) -> Arc<Home> {
        Arc::new(Home { process, queue: Mutex::new(Vec::new()) })
    }

    /// The process that runs the queued work.
    pub fn process(&self) -> &LocalPid {
        &self.process
    }

    /// Queues `work` for the process, waking it when the queue was empty
    /// (otherwise a wake-up is already on its way).
    pub fn defer(self: &Arc<Self>, work: Arc<dyn Runnable>) {
        let first = {
            let mut queue = self.queue.lock();
            queue.push(work);
            queue.len() == 1
        };
        if !first {
            return;
        }
        if !rustler::thread::is_scheduler_thread() {
            self.wake();
        } else if !wake_at_end(self) {
            // Only a NIF's own environment can send from a scheduler.
            self.wake_soon();
        }
    }

    /// Runs what waits in the queue, from inside the home process's NIF
    /// whose environment is `env`.
    pub fn run_queued(&self, env: Env) {
        let work = std::mem::take(&mut *self.queue.lock());
        if !work.is_empty() {
            inline::run(env, || work.into_iter().for_each(|w| w.run_inline(env)));
        }
    }

    /// The process is gone (its reactor stopped). What waits runs in a task
    /// of the runtime (never nested in the poll that queued it), so that
    /// every submitter hears back; work queued later finds the process gone
    /// when waking it, and comes here too.
    pub fn gone(&self) {
        let work = std::mem::take(&mut *self.queue.lock());
        if !work.is_empty() {
            runtime::handle().spawn(async move { work.into_iter().for_each(Runnable::run_later) });
        }
    }

    /// Wakes the process from a thread of the runtime.
    fn wake(&self) {
        let woken = THREAD_ENV.with(|slot| {
            let mut slot = slot.borrow_mut();
            let owned = slot.get_or_insert_with(OwnedEnv::new);
            owned.send_and_clear(&self.process, |env| atoms::pf_route().encode(env)).is_ok()
        });
        if !woken {
            self.gone();
        }
    }

    /// Wakes the process from a task of the runtime.
    fn wake_soon(self: &Arc<Self>) {
        let home = Arc::clone(self);
        runtime::handle().spawn(async move { home.wake() });
    }

    /// Wakes the process from inside a NIF whose environment is `env`.
    fn wake_from(&self, env: Env) {
        if !send_from(env, &self.process, |m| atoms::pf_route().encode(m)) {
            self.gone();
        }
    }
}

thread_local! {
    /// A message environment per runtime thread, reused for every send.
    static THREAD_ENV: RefCell<Option<OwnedEnv>> = const { RefCell::new(None) };
    /// Homes to wake as the running NIF ends.
    static TO_WAKE: RefCell<Vec<Arc<Home>>> = const { RefCell::new(Vec::new()) };
}

static WAKE_OUTBOX: Outbox = Outbox { send: wake_all, abandon: wake_all_soon };

/// Wakes `home` with the running NIF's environment as it ends; `false`
/// when no NIF of this library is running.
fn wake_at_end(home: &Arc<Home>) -> bool {
    if !inline::active() {
        return false;
    }
    let first = TO_WAKE.with(|w| {
        let mut w = w.borrow_mut();
        w.push(Arc::clone(home));
        w.len() == 1
    });
    if first {
        inline::at_end(&WAKE_OUTBOX);
    }
    true
}

fn wake_all(env: Env) {
    for home in TO_WAKE.with(|w| std::mem::take(&mut *w.borrow_mut())) {
        home.wake_from(env);
    }
}

fn wake_all_soon() {
    for home in TO_WAKE.with(|w| std::mem::take(&mut *w.borrow_mut())) {
        home.wake_soon();
    }
}
