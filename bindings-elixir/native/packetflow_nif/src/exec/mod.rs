//! The generic executor: where core futures run, on the thread that wakes
//! them. It knows futures, processes and messages, nothing of handlers.
//!
//! A submit is a core future. Handing every one to Tokio would cost two
//! cross-thread wake-ups per packet (BEAM → Tokio for the submit, and again
//! for the handler's answer), the most expensive step on a small machine.
//! Instead a submit is a [`Job`]: a future with a waker that polls it where
//! it is woken.
//!
//! - Inside one of this library's NIFs (submit, a handler's reply, a child
//!   call) an [`inline`] scope is active: a job woken there is polled before
//!   the NIF returns, and what it produces (a result, and whatever the
//!   layers above collected meanwhile, such as handler invocations) is sent
//!   with the calling process's environment, `enif_send` between processes,
//!   no other thread involved. Polling never blocks: a core future only
//!   takes short locks and registers timers.
//! - Anywhere else (an answer read from the network or a deadline timer
//!   firing on the Tokio thread, a resource destructor) the job waits in
//!   the queue of its [`Home`], a process that polls it from a scheduler
//!   when woken ([`Home::run_queued`]): one wake-up for every job woken
//!   meanwhile, each output sent between processes. Should that process be
//!   gone, the job is polled on the Tokio thread and its output leaves from
//!   there (`enif_send` with no caller environment).
//!
//! The files are layered, each using only those listed before it:
//! [`inline`] (the scope, [`send_from`]) → [`home`] (the queue and its
//! process) → [`job`] (the future and its waker, with its state machine
//! drawn).

pub mod home;
pub mod inline;
pub mod job;

pub use home::Home;
pub use inline::send_from;
pub use job::{spawn, start_detached, Deliver, Job, Withdraw};

use rustler::Env;
use std::sync::Arc;

/// Work the executor polls, type-erased: a scheduled [`Job`], or anything
/// a layer above queues with a [`Home`] to run from its process.
pub trait Runnable: Send + Sync {
    /// Runs inside an inline scope of the NIF whose environment is `env`.
    fn run_inline(self: Arc<Self>, env: Env);
    /// Runs outside the schedulers (the home's process is gone).
    fn run_later(self: Arc<Self>);
    /// Queues the work with its home, whose process runs it.
    fn defer(self: Arc<Self>);
    /// Whether the work is always left to its home, even when woken inside
    /// a NIF.
    fn lazy(&self) -> bool;
}
