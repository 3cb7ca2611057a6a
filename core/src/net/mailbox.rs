//! What other tasks hand a connection's task: frames to write (the peer's
//! outbox) and answers to the packets it relayed.
//!
//! A queue that holds no memory while nothing waits in it: a `Vec` behind a
//! lock, drained whole by the connection, whose capacity the connection gives
//! back when it goes idle. (Tokio's unbounded channel allocates a block of 32
//! slots when it is made, some 3.5 KiB for these items, and keeps it for the
//! life of the connection; with many idle peers that was most of what a
//! connection cost.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

struct Shared<T> {
    queue: Mutex<Vec<T>>,
    /// The connection's task, woken by each send.
    waker: AtomicWaker,
    /// The connection is gone: sends fail.
    closed: AtomicBool,
}

/// The sending side: cheap to clone, one per task that writes to the
/// connection.
pub(crate) struct Mailbox<T> {
    shared: Arc<Shared<T>>,
}

/// The connection's side: there is one.
pub(crate) struct Inbox<T> {
    shared: Arc<Shared<T>>,
}

/// A new mailbox and the connection's inbox.
pub(crate) fn mailbox<T>() -> (Mailbox<T>, Inbox<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
    });
    (Mailbox { shared: shared.clone() }, Inbox { shared })
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox { shared: self.shared.clone() }
    }
}

impl<T> Mailbox<T> {
    /// Queues `item` for the connection and wakes it; false (the item is
    /// dropped) once the connection is gone.
    pub(crate) fn send(&self, item: T) -> bool {
        {
            let mut queue = self.shared.queue.lock();
            // Checked under the lock: the inbox drains the queue under it
            // once it is closed, so nothing is left behind in it.
            if self.shared.closed.load(Ordering::Acquire) {
                return false;
            }
            queue.push(item);
        }
        self.shared.waker.wake();
        true
    }
}

impl<T> Inbox<T> {
    /// Moves everything queued to the end of `into`: Ready when something
    /// was, Pending otherwise (the task is then woken by the next send).
    pub(crate) fn poll_drain(&mut self, cx: &mut Context<'_>, into: &mut Vec<T>) -> Poll<()> {
        // Registered before looking, so a send after the look wakes us.
        self.shared.waker.register(cx.waker());
        let mut queue = self.shared.queue.lock();
        if queue.is_empty() {
            return Poll::Pending;
        }
        if into.is_empty() {
            // Swap rather than copy; the capacity moves with it.
            std::mem::swap(&mut *queue, into);
        } else {
            into.append(&mut queue);
        }
        Poll::Ready(())
    }

    /// Gives the queue's memory back if it is empty (the connection is
    /// idle).
    pub(crate) fn release_memory(&mut self) {
        let mut queue = self.shared.queue.lock();
        if queue.is_empty() {
            *queue = Vec::new();
        }
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        // Items still queued are dropped here, and later sends fail, as
        // when a channel's receiver goes away.
        let left = {
            let mut queue = self.shared.queue.lock();
            self.shared.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    #[test]
    fn items_arrive_in_order_and_an_empty_inbox_is_pending() {
        let (tx, mut rx) = mailbox();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        assert!(rx.poll_drain(&mut cx, &mut got).is_pending());
        assert!(tx.send(1));
        assert!(tx.clone().send(2));
        assert!(rx.poll_drain(&mut cx, &mut got).is_ready());
        assert!(tx.send(3));
        assert!(rx.poll_drain(&mut cx, &mut got).is_ready());
        assert_eq!(got, [1, 2, 3]);
        assert!(rx.poll_drain(&mut cx, &mut got).is_pending());
    }

    #[test]
    fn a_send_wakes_the_inbox_task() {
        let (tx, mut rx) = mailbox::<u8>();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(me: &Arc<Self>) {
                me.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = futures::task::waker(Arc::new(Count(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_drain(&mut cx, &mut Vec::new()).is_pending());
        tx.send(7);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn sends_fail_once_the_inbox_is_gone_and_queued_items_are_dropped() {
        let (tx, rx) = mailbox();
        let item = Arc::new(());
        assert!(tx.send(item.clone()));
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "the queued item was dropped with the inbox");
        assert!(!tx.send(item.clone()));
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn an_idle_inbox_gives_its_memory_back() {
        let (tx, mut rx) = mailbox();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        for i in 0..100 {
            tx.send(i);
        }
        let mut got = Vec::with_capacity(1);
        got.push(-1);
        assert!(rx.poll_drain(&mut cx, &mut got).is_ready());
        assert_eq!(got.len(), 101);
        assert!(rx.shared.queue.lock().capacity() >= 100);
        rx.release_memory();
        assert_eq!(rx.shared.queue.lock().capacity(), 0);
    }
}
