//! Whether a peer is alive, suspect or dead (docs/protocol.md, "Liveness").
//!
//! Every frame from a peer is a sign of life. Two PacketFlow nodes agree on
//! a short heartbeat in their `hello`s (the larger of the two offers), so a
//! peer that says nothing for three of those intervals is declared dead
//! within seconds; seed peers keep the seed's 30 s rule.
//!
//! Before that, a peer can turn *suspect*: a packet forwarded to it passed
//! its deadline and nothing at all came from the peer since the packet was
//! sent, for at least one heartbeat interval. A peer that is busy but alive
//! still heartbeats (and answers other packets), so a slow handler never
//! makes its node suspect; a frozen or cut-off one does. Routing skips
//! suspect peers while another peer can take the packet, and any frame from
//! the peer clears the suspicion.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// A peer's signs of life, shared by its connection and the router.
pub(crate) struct Liveness {
    /// The reference point of the millisecond fields.
    epoch: Instant,
    /// When the last frame came, in ms since `epoch`.
    last_heard_ms: AtomicU64,
    /// The heartbeat interval in force with this peer, in ms.
    interval_ms: AtomicU64,
    suspect: AtomicBool,
}

impl Liveness {
    pub(crate) fn new(interval: Duration) -> Liveness {
        Liveness {
            epoch: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            interval_ms: AtomicU64::new(interval.as_millis() as u64),
            suspect: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A frame came at `now`; true if that ended a suspicion.
    pub(crate) fn heard(&self, now: Instant) -> bool {
        self.last_heard_ms.store(self.ms(now), Ordering::Relaxed);
        self.suspect.load(Ordering::Relaxed) && self.suspect.swap(false, Ordering::Relaxed)
    }

    /// A packet sent to the peer at `sent` passed its deadline unanswered;
    /// true if that made the peer suspect (it was not before).
    pub(crate) fn deadline_passed(&self, sent: Instant, now: Instant) -> bool {
        let silent_since_sent = self.last_heard_ms.load(Ordering::Relaxed) <= self.ms(sent);
        let waited = now.saturating_duration_since(sent) >= self.interval();
        silent_since_sent && waited && !self.suspect.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }

    /// The heartbeat interval in force with this peer.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_interval(&self, interval: Duration) {
        self.interval_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// How long ago the last frame came (since the connection opened, if
    /// none did).
    pub(crate) fn last_heard_age(&self, now: Instant) -> Duration {
        Duration::from_millis(self.ms(now).saturating_sub(self.last_heard_ms.load(Ordering::Relaxed)))
    }
}

/// The interval two nodes beat at: the larger of the two offers, or `None`
/// when either side offers none (then the seed's rule applies).
pub(crate) fn agreed_interval(ours: Duration, theirs_ms: u64) -> Option<Duration> {
    (!ours.is_zero() && theirs_ms > 0).then(|| ours.max(Duration::from_millis(theirs_ms)))
}

/// Node-wide counts, and the peers declared dead lately (for `/health`).
#[derive(Default)]
pub(crate) struct PeerEvents {
    pub(crate) suspicions: AtomicU64,
    pub(crate) deaths: AtomicU64,
    recent_deaths: Mutex<VecDeque<(String, Instant)>>,
}

/// How many dead peers `/health` remembers.
const RECENT_DEATHS: usize = 16;

impl PeerEvents {
    pub(crate) fn suspected(&self) {
        self.suspicions.fetch_add(1, Ordering::Relaxed);
    }

    /// A peer at `remote` was declared dead (silent for 3 intervals).
    pub(crate) fn died(&self, remote: &str) {
        self.deaths.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent_deaths.lock();
        if recent.len() == RECENT_DEATHS {
            recent.pop_front();
        }
        recent.push_back((remote.to_owned(), Instant::now()));
    }

    /// The peers declared dead lately, newest last, with how long ago.
    pub(crate) fn recent_deaths(&self) -> Vec<(String, Duration)> {
        self.recent_deaths.lock().iter().map(|(remote, at)| (remote.clone(), at.elapsed())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_turns_suspect_and_a_frame_clears_it() {
        let l = Liveness::new(Duration::from_secs(1));
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(500)).await;
        // Not yet an interval since the packet was sent.
        assert!(!l.deadline_passed(sent, Instant::now()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(l.deadline_passed(sent, Instant::now()));
        assert!(l.is_suspect());
        assert!(!l.deadline_passed(sent, Instant::now()), "suspected once");
        assert!(l.heard(Instant::now()));
        assert!(!l.is_suspect());
        assert!(!l.heard(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_heard_after_the_packet_left_is_not_suspect() {
        let l = Liveness::new(Duration::from_secs(1));
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        l.heard(Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        // Slow to answer, but alive: its heartbeat came after the packet.
        assert!(!l.deadline_passed(sent, Instant::now()));
        assert_eq!(l.last_heard_age(Instant::now()), Duration::from_secs(2));
    }

    #[test]
    fn the_larger_offer_wins_and_none_means_the_seed_rule() {
        let second = Duration::from_secs(1);
        assert_eq!(agreed_interval(second, 2500), Some(Duration::from_millis(2500)));
        assert_eq!(agreed_interval(second, 200), Some(second));
        assert_eq!(agreed_interval(second, 0), None);
        assert_eq!(agreed_interval(Duration::ZERO, 1000), None);
    }

    #[test]
    fn recent_deaths_are_bounded() {
        let events = PeerEvents::default();
        for i in 0..20 {
            events.died(&format!("peer{i}"));
        }
        let recent = events.recent_deaths();
        assert_eq!(recent.len(), RECENT_DEATHS);
        assert_eq!(recent.last().unwrap().0, "peer19");
        assert_eq!(events.deaths.load(Ordering::Relaxed), 20);
    }
}
