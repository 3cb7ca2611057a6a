//! Per-handler counters and a lock-free latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::packet::{Element, Group};

/// Four buckets per power of two (about 19% wide each), from 1 µs up to
/// 2^32 µs (over an hour), which is past any packet's deadline.
const SUB_BUCKETS: u32 = 4;
const BUCKETS: usize = 32 * SUB_BUCKETS as usize;

/// Counters of one `group:element`, updated with relaxed atomics by every
/// packet that runs there; read as a [`HandlerStats`] snapshot.
pub(crate) struct Stats {
    count: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

fn bucket_of(us: u64) -> usize {
    let v = us.max(1);
    let exp = 63 - v.leading_zeros();
    let sub = if exp >= 2 { (v >> (exp - 2)) & 3 } else { (v << (2 - exp)) & 3 };
    ((exp * SUB_BUCKETS) as usize + sub as usize).min(BUCKETS - 1)
}

/// Upper bound (exclusive) of a bucket, in µs.
fn bucket_upper_us(index: usize) -> u64 {
    let exp = index as u32 / SUB_BUCKETS;
    let sub = index as u64 % SUB_BUCKETS as u64;
    // Bucket (exp, sub) holds [2^exp * (4+sub)/4, 2^exp * (5+sub)/4).
    ((1u64 << exp) * (5 + sub)).div_ceil(4)
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn record(&self, micros: u64, failed: bool) {
        self.count.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(micros, Relaxed);
        self.buckets[bucket_of(micros)].fetch_add(1, Relaxed);
    }

    /// A packet cancelled after `micros`: answered with an error, and
    /// counted among the cancelled.
    pub(crate) fn record_cancelled(&self, micros: u64) {
        self.cancelled.fetch_add(1, Relaxed);
        self.record(micros, true);
    }

    pub(crate) fn snapshot(&self, group: Group, element: &Element) -> HandlerStats {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = buckets.iter().sum();
        let quantile = |q: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_upper_us(i);
                }
            }
            bucket_upper_us(BUCKETS - 1)
        };
        HandlerStats {
            group,
            element: element.clone(),
            count: self.count.load(Relaxed),
            errors: self.errors.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            sum_us: self.sum_us.load(Relaxed),
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            latency_buckets: buckets
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (bucket_upper_us(i), *n))
                .collect(),
        }
    }
}

/// A snapshot of one handler's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerStats {
    /// The handler's group.
    pub group: Group,
    /// The handler's element.
    pub element: Element,
    /// Packets answered (successes and errors).
    pub count: u64,
    /// Packets answered with an error.
    pub errors: u64,
    /// Packets cancelled (answered PF499, or abandoned by their submitter
    /// or with the packet that called them); counted among `errors` too.
    pub cancelled: u64,
    /// Sum of latencies, µs (for a mean, or Prometheus' `_sum`).
    pub sum_us: u64,
    /// Median latency, µs (upper bound of its histogram bucket, ≤ 25% over).
    pub p50_us: u64,
    /// 99th-percentile latency, µs (same resolution).
    pub p99_us: u64,
    /// Non-empty histogram buckets: (upper bound in µs, count in bucket).
    pub latency_buckets: Vec<(u64, u64)>,
}

/// A snapshot of a reactor's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactorStats {
    /// The reactor's name.
    pub name: String,
    /// One entry per registered handler.
    pub handlers: Vec<HandlerStats>,
    /// Packets accepted and not yet answered.
    pub in_flight: usize,
    /// Packets waiting for a free slot.
    pub queued: usize,
    /// Packets answered PF001 (no handler).
    pub unrouted: u64,
    /// Packets cancelled while forwarded to a peer (those run here are
    /// counted per handler, in [`HandlerStats::cancelled`]).
    pub forwards_cancelled: u64,
    /// One entry per actor type hosted here.
    pub actors: Vec<crate::actor::ActorTypeStats>,
    /// Packets by the route that took them.
    pub routed: RouteCounts,
    /// The node's connection to NATS; `None` for a reactor whose node did
    /// not join NATS (or that has no node).
    pub nats: Option<NatsStats>,
}

/// Packets by the route that took them (docs/protocol.md, "NATS",
/// "Per route").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCounts {
    /// Answered by a local handler (whoever submitted them).
    pub local: u64,
    /// Sent to a WebSocket peer (forwarded or relayed).
    pub websocket: u64,
    /// Sent as a NATS request.
    pub nats: u64,
}

/// What the reactor's node shows of its routes beyond the reactor: the
/// counts a [`Forwarder`](super::Forwarder) keeps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkStats {
    /// Packets sent to WebSocket peers.
    pub websocket: u64,
    /// The connection to NATS, once joined.
    pub nats: Option<NatsStats>,
}

/// A node's connection to NATS, as `stats()` shows it (`/health`'s `nats`
/// member has more).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsStats {
    /// `connected`, `disconnected` or `connecting`.
    pub state: String,
    /// `host:port` of the server in use.
    pub server: String,
    /// The last round trip to the server, µs.
    pub rtt_us: u64,
    /// Keys served on NATS (the reactor's and the bridged ones).
    pub served_keys: u64,
    /// Of those, the keys of WebSocket peers this node serves there.
    pub bridged_keys: u64,
    /// Packets sent as NATS requests.
    pub requests_sent: u64,
    /// NATS requests this node answered.
    pub requests_served: u64,
    /// The live members of the cluster, this node's id among them, sorted;
    /// `None` unless the node joined with `membership` (or `actor_store`).
    pub members: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_contain_their_values() {
        let mut last = 0;
        for us in [0u64, 1, 2, 3, 4, 5, 7, 8, 100, 1000, 12_345, 1 << 31] {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            assert!(bucket_upper_us(b) >= us.max(1), "{us} -> {b}");
            assert!(bucket_upper_us(b) as f64 <= (us.max(1) as f64) * 1.25 + 1.0, "{us}");
        }
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let s = Stats::new();
        for _ in 0..98 {
            s.record(10, false);
        }
        s.record(5000, true);
        s.record(5000, true);
        let snap = s.snapshot(Group::DataFlow, &Element::new("t").unwrap());
        assert_eq!((snap.count, snap.errors), (100, 2));
        assert!((10..=13).contains(&snap.p50_us), "{}", snap.p50_us);
        assert!((5000..=6250).contains(&snap.p99_us), "{}", snap.p99_us);
    }
}
