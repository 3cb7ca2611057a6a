//! Busy-polling ([`NodeConfig::busy_poll`](super::NodeConfig::busy_poll)):
//! after frames arrive, a task keeps the runtime polling its sockets
//! instead of sleeping, for a short window.
//!
//! Why: on a virtual machine, waking a thread that sleeps in `epoll_wait`
//! takes tens of microseconds, and a round trip through a hub pays it at
//! both of the hub's hops. A node that is still polling when the next frame
//! comes reads it at once. The task spins by yielding: between a yielded
//! task's turns Tokio polls its I/O driver without blocking; and it yields
//! its core to the OS scheduler on every turn, so that it never stands in
//! the way of a thread with work.
//!
//! It spins only while traffic is sparse, where wake-ups make up the
//! latency: once more than [`MAX_HELD`] packets are in flight through the
//! node (the reactor's count: running here, submitted to a peer or relayed,
//! not answered yet), frames come back to back anyway, and a spinning
//! thread would only take CPU from the work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// Packets in flight above which the node sleeps between frames as usual.
pub(crate) const MAX_HELD: usize = 8;

/// How many packets are in flight through the node.
type Held = Box<dyn Fn() -> usize + Send + Sync>;

pub(crate) struct BusyPoll {
    window: Duration,
    held: Held,
    /// Bursts of frames read, over all connections.
    bursts: AtomicU64,
    asleep: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Spins for `window` after frames while `held()` is at most [`MAX_HELD`].
    pub(crate) fn new(window: Duration, held: impl Fn() -> usize + Send + Sync + 'static) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window,
            held: Box::new(held),
            bursts: AtomicU64::new(0),
            asleep: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// A connection read frames: the window starts again.
    pub(crate) fn frames_arrived(&self) {
        // SeqCst on both sides (here and in `run`) so that the spinner
        // either sees this burst or is woken by it; on x86 it costs the same.
        self.bursts.fetch_add(1, SeqCst);
        if self.asleep.load(SeqCst) && (self.held)() <= MAX_HELD {
            self.wake.notify_one();
        }
    }

    /// Ends [`BusyPoll::run`].
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Whether the task is spinning now (for `/health`).
    pub(crate) fn is_spinning(&self) -> bool {
        !self.asleep.load(SeqCst)
    }

    /// Sleeps until frames arrive while few packets are held, then spins
    /// until `window` passes with no frame or too many packets are held;
    /// over again until closed.
    pub(crate) async fn run(self: Arc<BusyPoll>) {
        let mut seen = self.bursts.load(SeqCst);
        loop {
            let woken = self.wake.notified();
            self.asleep.store(true, SeqCst);
            if self.bursts.load(SeqCst) == seen || (self.held)() > MAX_HELD {
                woken.await;
            }
            self.asleep.store(false, SeqCst);
            let mut last_burst = Instant::now();
            loop {
                if self.closed.load(SeqCst) {
                    return;
                }
                let bursts = self.bursts.load(SeqCst);
                if bursts != seen {
                    seen = bursts;
                    last_burst = Instant::now();
                } else if last_burst.elapsed() >= self.window {
                    break;
                }
                if (self.held)() > MAX_HELD {
                    break;
                }
                // Let any thread with work have this core first (when none
                // waits for it, the call returns at once): with more busy
                // threads than cores, spinners that keep their core starve
                // the very threads whose frames they wait for (measured: p50
                // 65 µs instead of 371 with three spinning processes on two
                // cores).
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until the task's state is `spinning`.
    async fn until_spinning(busy: &BusyPoll, spinning: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while busy.is_spinning() != spinning {
            assert!(Instant::now() < deadline, "the task never became spinning = {spinning}");
            tokio::task::yield_now().await;
        }
    }

    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn spins_after_frames_and_sleeps_when_the_window_passes() {
        let busy = BusyPoll::new(Duration::from_millis(20), || 0);
        let task = tokio::spawn(busy.clone().run());
        until_spinning(&busy, false).await;
        busy.frames_arrived();
        until_spinning(&busy, true).await;
        // No more frames: asleep again once the window passed.
        let started = Instant::now();
        until_spinning(&busy, false).await;
        assert!(started.elapsed() >= Duration::from_millis(15), "slept before its window passed");
        busy.close();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("close ends the task").unwrap();
    }

    #[tokio::test]
    async fn does_not_spin_while_many_packets_are_held() {
        let held = Arc::new(AtomicUsize::new(0));
        let count = held.clone();
        let busy = BusyPoll::new(Duration::from_secs(3600), move || count.load(SeqCst));
        let task = tokio::spawn(busy.clone().run());
        busy.frames_arrived();
        until_spinning(&busy, true).await;
        held.store(MAX_HELD + 1, SeqCst);
        // A window of an hour, yet it stops: too many packets held.
        until_spinning(&busy, false).await;
        busy.frames_arrived();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            assert!(!busy.is_spinning(), "frames woke it while {} packets are held", MAX_HELD + 1);
        }
        held.store(MAX_HELD, SeqCst);
        busy.frames_arrived();
        until_spinning(&busy, true).await;
        busy.close();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("close ends the task").unwrap();
    }
}
