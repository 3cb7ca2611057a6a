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
//! thread would only take CPU from the work. And with none in flight it
//! spins only if the node has not had more than that lately: a pipelined
//! client tends to send its packets in waves, and between two waves the
//! client needs the CPU to take the answers and send the next wave (measured
//! through a hub on two cores, the pipelined packets/s of a Node.js client
//! fell by a fifth while the hub spun between waves).
//!
//! The window may change while the node runs (`mc:tune busy_poll_us`); 0
//! turns spinning off. So a node whose connections run on its Tokio
//! runtime always has one of these, with its task asleep while the window
//! is 0: a burst of frames then costs one relaxed load.

use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// Packets in flight above which the node sleeps between frames as usual.
pub(crate) const MAX_HELD: usize = 8;

/// With no packet in flight, the node spins only if it has not had more
/// than [`MAX_HELD`] in flight for this long.
pub(crate) const CALM: Duration = Duration::from_millis(50);

/// `crowded_at` before the node was ever crowded.
const NEVER: u64 = u64::MAX;

/// How many packets are in flight through the node.
type Held = Box<dyn Fn() -> usize + Send + Sync>;

pub(crate) struct BusyPoll {
    /// The window, in µs; 0: off.
    window_us: AtomicU64,
    held: Held,
    /// Bursts of frames read, over all connections.
    bursts: AtomicU64,
    /// When more than [`MAX_HELD`] packets were last seen in flight, in µs
    /// since `started` ([`NEVER`]: not yet).
    crowded_at: AtomicU64,
    started: Instant,
    asleep: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Spins for `window` after frames while `held()` is at most
    /// [`MAX_HELD`]; a zero window: not until one is set.
    pub(crate) fn new(window: Duration, held: impl Fn() -> usize + Send + Sync + 'static) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            window_us: AtomicU64::new(window.as_micros().min(u128::from(u64::MAX)) as u64),
            held: Box::new(held),
            bursts: AtomicU64::new(0),
            crowded_at: AtomicU64::new(NEVER),
            started: Instant::now(),
            asleep: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// A connection read frames: the window starts again.
    pub(crate) fn frames_arrived(&self) {
        if self.window_us.load(Relaxed) == 0 {
            return;
        }
        // SeqCst on both sides (here and in `run`) so that the spinner
        // either sees this burst or is woken by it; on x86 it costs the same.
        self.bursts.fetch_add(1, SeqCst);
        if self.asleep.load(SeqCst) && self.may_spin() {
            self.wake.notify_one();
        }
    }

    /// Whether spinning may pay now: a few packets in flight (their answers
    /// are coming), or none and no crowd lately (the next request of a
    /// caller that waits for each answer).
    fn may_spin(&self) -> bool {
        let now = self.started.elapsed().as_micros() as u64;
        let held = (self.held)();
        if held > MAX_HELD {
            self.crowded_at.store(now, SeqCst);
            return false;
        }
        let crowded_at = self.crowded_at.load(SeqCst);
        held > 0 || crowded_at == NEVER || now.saturating_sub(crowded_at) >= CALM.as_micros() as u64
    }

    /// Ends [`BusyPoll::run`].
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.wake.notify_one();
    }

    /// The window; zero: off.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_micros(self.window_us.load(Relaxed))
    }

    /// Sets the window (zero: off) and returns the one it replaces. A
    /// spinning task picks it up on its next turn; a sleeping one with the
    /// next burst of frames.
    pub(crate) fn set_window(&self, window: Duration) -> Duration {
        let us = window.as_micros().min(u128::from(u64::MAX)) as u64;
        Duration::from_micros(self.window_us.swap(us, Relaxed))
    }

    /// Whether the task is spinning now (for `/health`).
    pub(crate) fn is_spinning(&self) -> bool {
        !self.asleep.load(SeqCst)
    }

    /// Sleeps until frames arrive while spinning may pay, then spins until
    /// `window` passes with no frame or spinning no longer pays; over again
    /// until closed.
    pub(crate) async fn run(self: Arc<BusyPoll>) {
        let mut seen = self.bursts.load(SeqCst);
        loop {
            let woken = self.wake.notified();
            self.asleep.store(true, SeqCst);
            if self.bursts.load(SeqCst) == seen || !self.may_spin() {
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
                } else if last_burst.elapsed() >= self.window() {
                    break;
                }
                if !self.may_spin() {
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
    async fn does_not_spin_while_many_packets_are_held_nor_between_waves() {
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
        // A crowd just left: no spinning with nothing in flight...
        held.store(0, SeqCst);
        busy.frames_arrived();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            assert!(!busy.is_spinning(), "spinning between two waves of packets");
        }
        // ...but with answers to wait for, yes.
        held.store(MAX_HELD, SeqCst);
        busy.frames_arrived();
        until_spinning(&busy, true).await;
        // And with nothing in flight once it has been calm for a while.
        held.store(MAX_HELD + 1, SeqCst);
        until_spinning(&busy, false).await;
        held.store(0, SeqCst);
        tokio::time::sleep(CALM).await;
        busy.frames_arrived();
        until_spinning(&busy, true).await;
        busy.close();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("close ends the task").unwrap();
    }
}
