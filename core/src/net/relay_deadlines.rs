//! The deadlines of the packets one connection relayed to peers (see
//! `NodeInner::relay`), with one timer for all of them.

use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;

use tokio::time::{Instant, Sleep};

use super::peers::Peer;

/// The packets a connection relayed to peers and that are not answered
/// yet: how many, and their deadlines, with one timer for all of them.
///
/// Deadlines are kept in arrival order (with one `timeout_ms` for all
/// packets, the usual case, that is deadline order) and in a heap for the
/// packets whose deadline is earlier than the last one's. An entry is not
/// removed when its answer comes: at its deadline the peer says whether it
/// still waits (then it is answered PF408). Entries of answered packets are
/// dropped in bulk once they outnumber the unanswered ones, so memory stays
/// proportional to the packets in flight.
#[derive(Default)]
pub(super) struct RelayDeadlines {
    /// Relayed packets not answered yet.
    open: usize,
    in_order: VecDeque<Expiry>,
    early: BinaryHeap<std::cmp::Reverse<Expiry>>,
    timer: Option<Pin<Box<Sleep>>>,
    /// When the timer fires (`None`: disarmed).
    armed: Option<Instant>,
}

/// When a relayed packet (submit `seq` on `peer`) expires.
pub(super) struct Expiry {
    pub(super) deadline: Instant,
    pub(super) seq: u64,
    pub(super) peer: Arc<Peer>,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq && self.peer.id == other.peer.id
    }
}
impl Eq for Expiry {}
impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Expiry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.peer.id, self.seq).cmp(&(other.deadline, other.peer.id, other.seq))
    }
}

impl RelayDeadlines {
    /// Relayed packets not answered yet.
    pub(super) fn open(&self) -> usize {
        self.open
    }

    /// Counts `n` relayed packets as answered (their entries stay until
    /// their deadline or the next bulk drop).
    pub(super) fn answered(&mut self, n: usize) {
        self.open -= n;
    }

    /// Records a packet relayed as submit `seq` to `peer`.
    pub(super) fn push(&mut self, deadline: Instant, peer: Arc<Peer>, seq: u64) {
        self.open += 1;
        let expiry = Expiry { deadline, seq, peer };
        if self.in_order.back().is_none_or(|last| last.deadline <= deadline) {
            self.in_order.push_back(expiry);
        } else {
            self.early.push(std::cmp::Reverse(expiry));
        }
        if self.armed.is_none_or(|at| deadline < at) {
            self.arm(deadline);
        }
        if self.in_order.len() + self.early.len() > 2 * self.open + 1024 {
            self.in_order.retain(|e| e.peer.is_pending(e.seq));
            self.early.retain(|e| e.0.peer.is_pending(e.0.seq));
        }
    }

    fn arm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = Some(at);
    }

    /// The entries past their deadline once the timer fired (re-armed for
    /// the next one); empty while it has not.
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> Vec<Expiry> {
        let mut due = Vec::new();
        let Some(timer) = self.timer.as_mut() else { return due };
        if self.armed.is_none() || timer.as_mut().poll(cx).is_pending() {
            return due;
        }
        self.armed = None;
        let now = Instant::now();
        while self.in_order.front().is_some_and(|e| e.deadline <= now) {
            due.extend(self.in_order.pop_front());
        }
        while self.early.peek().is_some_and(|e| e.0.deadline <= now) {
            due.extend(self.early.pop().map(|e| e.0));
        }
        let next = match (self.in_order.front(), self.early.peek()) {
            (Some(a), Some(b)) => Some(a.deadline.min(b.0.deadline)),
            (Some(a), None) => Some(a.deadline),
            (None, Some(b)) => Some(b.0.deadline),
            (None, None) => None,
        };
        if let Some(at) = next {
            self.arm(at);
        }
        due
    }

    /// The connection that relayed these packets is gone: nobody waits for
    /// their answers any more (see `Peer::orphan`). Returns how many were
    /// still pending.
    pub(super) fn orphan_all(&self) -> usize {
        if self.open == 0 {
            return 0;
        }
        self.in_order.iter().chain(self.early.iter().map(|e| &e.0)).filter(|e| e.peer.orphan(e.seq)).count()
    }
}
