//! [`Outbox`]: messages from Tokio threads to one Erlang process, batched.
//!
//! Crossing into the BEAM (`enif_send`, plus copying the message into the
//! receiver's heap and waking it) is the expensive step, so an outbox sends
//! everything that is ready in one `{tag, [item, ...]}` message. There is
//! no timer: the first item pushed into an empty outbox schedules a flush
//! task that first yields once, so the Tokio tasks that are already ready
//! (other results, other invocations) add their items before it sends. At
//! low load that yield costs nothing and the message leaves at once.

use std::sync::Arc;

use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};

use crate::runtime;

/// Something that becomes one list element of an outbox message.
pub trait Item: Send + 'static {
    /// The item as a term of `env`.
    fn encode<'a>(self, env: Env<'a>) -> Term<'a>;
}

/// A batched channel to one process.
pub struct Outbox<T: Item> {
    pid: LocalPid,
    tag: fn() -> Atom,
    queue: Mutex<Vec<T>>,
}

impl<T: Item> Outbox<T> {
    /// An outbox sending `{tag(), [items]}` to `pid`.
    pub fn new(pid: LocalPid, tag: fn() -> Atom) -> Arc<Outbox<T>> {
        Arc::new(Outbox { pid, tag, queue: Mutex::new(Vec::new()) })
    }

    /// The process this outbox sends to.
    pub fn pid(&self) -> &LocalPid {
        &self.pid
    }

    /// Queues `item`; the message leaves once the ready Tokio tasks ran.
    pub fn push(self: &Arc<Self>, item: T) {
        let first = {
            let mut queue = self.queue.lock();
            queue.push(item);
            queue.len() == 1
        };
        // Only the push into an empty queue schedules a flush: the flush
        // empties the queue under the lock, so the next push after it sees
        // an empty queue again and schedules the next flush.
        if first {
            let outbox = Arc::clone(self);
            runtime::handle().spawn(async move {
                tokio::task::yield_now().await;
                outbox.flush();
            });
        }
    }

    /// Sends what is queued. Runs on a Tokio thread, never on a scheduler
    /// thread, where `send_and_clear` is not allowed.
    fn flush(&self) {
        let batch = std::mem::take(&mut *self.queue.lock());
        if batch.is_empty() {
            return;
        }
        let mut env = OwnedEnv::new();
        // A failed send means the receiver is gone; what it would have got
        // has no one left to read it.
        let _ = env.send_and_clear(&self.pid, |env| {
            let items: Vec<Term> = batch.into_iter().map(|item| item.encode(env)).collect();
            ((self.tag)(), items).encode(env)
        });
    }
}
