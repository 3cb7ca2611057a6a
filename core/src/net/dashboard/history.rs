//! Per-key time series for the dashboard's charts: once a second, the
//! counters of every key (the reactor's handlers and the keys this node
//! forwarded) are compared with the second before, giving packets per
//! second and the p50/p99 latency of that second's packets. The last
//! [`POINTS_KEPT`] seconds are kept, for at most [`KEYS_CHARTED`] keys; when
//! they are all taken, a key idle for [`IDLE_EVICTED_S`] seconds makes room
//! for a new one.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

use crate::reactor::HandlerStats;

/// Seconds of history kept per key (five minutes).
pub(crate) const POINTS_KEPT: usize = 300;
/// Keys charted; further keys are listed without a series.
pub(crate) const KEYS_CHARTED: usize = 32;
/// Seconds without a packet after which a key gives its place to a new one.
pub(crate) const IDLE_EVICTED_S: usize = 60;

/// One second of one key: when, packets per second, latency quantiles of
/// the packets answered in that second (`None` when there were none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub(crate) at_s: u64,
    pub(crate) rate: f32,
    pub(crate) p50_us: Option<u32>,
    pub(crate) p99_us: Option<u32>,
}

impl Point {
    fn to_json(self) -> Value {
        json!([self.at_s, self.rate, self.p50_us, self.p99_us])
    }
}

struct Series {
    /// The counters at the last sample.
    last: HandlerStats,
    points: VecDeque<Point>,
    /// The last second it had packets (or was first seen).
    active_s: u64,
}

/// Where a key is served, as the sampler found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Served {
    /// A handler of this node's reactor.
    Local,
    /// Forwarded to peers.
    Routed,
}

/// The series of every charted key.
#[derive(Default)]
pub(crate) struct History {
    series: BTreeMap<(String, Served), Series>,
}

/// The `q` quantile of the packets counted between `before` and `now`.
fn quantile(before: &HandlerStats, now: &HandlerStats, q: f64) -> Option<u32> {
    let earlier =
        |upper: u64| before.latency_buckets.iter().find(|(u, _)| *u == upper).map_or(0, |(_, n)| *n);
    let delta: Vec<(u64, u64)> =
        now.latency_buckets.iter().map(|(upper, n)| (*upper, n.saturating_sub(earlier(*upper)))).collect();
    let total: u64 = delta.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (upper, n) in &delta {
        seen += n;
        if seen >= rank {
            return Some((*upper).min(u32::MAX as u64) as u32);
        }
    }
    delta.last().map(|(u, _)| (*u).min(u32::MAX as u64) as u32)
}

fn key_of(stats: &HandlerStats) -> String {
    format!("{}:{}", stats.group, stats.element)
}

impl History {
    /// Adds the sample taken at `at_s` (Unix seconds), `elapsed_s` after
    /// the one before.
    pub(crate) fn sample(&mut self, at_s: u64, elapsed_s: f64, keys: Vec<(Served, HandlerStats)>) {
        let elapsed_s = elapsed_s.max(0.001);
        for (served, now) in keys {
            let id = (key_of(&now), served);
            let room =
                self.series.len() < KEYS_CHARTED || (!self.series.contains_key(&id) && self.evict_idle(at_s));
            match self.series.get_mut(&id) {
                Some(series) => {
                    let count = now.count.saturating_sub(series.last.count);
                    let point = Point {
                        at_s,
                        rate: (count as f64 / elapsed_s) as f32,
                        p50_us: quantile(&series.last, &now, 0.50),
                        p99_us: quantile(&series.last, &now, 0.99),
                    };
                    if series.points.len() == POINTS_KEPT {
                        series.points.pop_front();
                    }
                    series.points.push_back(point);
                    series.last = now;
                    if count > 0 {
                        series.active_s = at_s;
                    }
                }
                None if room => {
                    self.series.insert(id, Series { last: now, points: VecDeque::new(), active_s: at_s });
                }
                None => {}
            }
        }
    }

    /// Drops one series without a packet in the last [`IDLE_EVICTED_S`]
    /// seconds before `at_s` (idle, or gone from the samples); false when
    /// every series had traffic.
    fn evict_idle(&mut self, at_s: u64) -> bool {
        let idle = self.series.iter().find(|(_, s)| at_s.saturating_sub(s.active_s) >= IDLE_EVICTED_S as u64);
        match idle.map(|(id, _)| id.clone()) {
            Some(id) => {
                self.series.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Every key with its totals and its whole series (`points: [[at_s,
    /// rate, p50_us, p99_us], ...]`, oldest first), or only its newest
    /// point when `latest_only`.
    pub(crate) fn to_json(&self, latest_only: bool) -> Value {
        let keys: Vec<Value> = self
            .series
            .iter()
            .map(|((key, served), s)| {
                let points: Vec<Value> = if latest_only {
                    s.points.back().map(|p| p.to_json()).into_iter().collect()
                } else {
                    s.points.iter().map(|p| p.to_json()).collect()
                };
                json!({
                    "key": key,
                    "served": match served { Served::Local => "local", Served::Routed => "routed" },
                    "count": s.last.count,
                    "errors": s.last.errors,
                    "p50_us": s.last.p50_us,
                    "p99_us": s.last.p99_us,
                    "points": points,
                })
            })
            .collect();
        Value::Array(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Element, Group};

    fn stats(count: u64, buckets: Vec<(u64, u64)>) -> HandlerStats {
        HandlerStats {
            group: Group::DataFlow,
            element: Element::new("x").unwrap(),
            count,
            errors: 0,
            cancelled: 0,
            sum_us: 0,
            p50_us: 0,
            p99_us: 0,
            latency_buckets: buckets,
        }
    }

    #[test]
    fn a_point_is_the_rate_and_quantiles_of_the_last_second() {
        let mut h = History::default();
        h.sample(100, 1.0, vec![(Served::Local, stats(10, vec![(10, 10)]))]);
        assert_eq!(h.to_json(false)[0]["points"], json!([]), "the first sample is only a baseline");
        // 100 more: 98 at 20 µs, 2 at 5000 µs.
        h.sample(101, 0.5, vec![(Served::Local, stats(110, vec![(10, 10), (20, 98), (5000, 2)]))]);
        let p = h.series.values().next().unwrap().points[0];
        assert_eq!(p, Point { at_s: 101, rate: 200.0, p50_us: Some(20), p99_us: Some(5000) });
        h.sample(102, 1.0, vec![(Served::Local, stats(110, vec![(10, 10), (20, 98), (5000, 2)]))]);
        assert_eq!(h.to_json(true)[0]["points"], json!([[102, 0.0, null, null]]), "an idle second");
    }

    #[test]
    fn series_and_keys_are_bounded() {
        let mut h = History::default();
        for t in 0..(POINTS_KEPT as u64 + 10) {
            h.sample(t, 1.0, vec![(Served::Routed, stats(t, vec![]))]);
        }
        assert_eq!(h.series.values().next().unwrap().points.len(), POINTS_KEPT);
        let many: Vec<(Served, HandlerStats)> = (0..KEYS_CHARTED + 5)
            .map(|i| {
                let mut s = stats(0, vec![]);
                s.element = Element::new(&format!("k{i}")).unwrap();
                (Served::Local, s)
            })
            .collect();
        h.sample(1000, 1.0, many.clone());
        assert_eq!(h.series.len(), KEYS_CHARTED);
        // Every key but k0 keeps getting packets; the routed df:x stopped
        // long ago: k31, left out so far, takes its place at once.
        let busy: Vec<(Served, HandlerStats)> = many[1..KEYS_CHARTED].to_vec();
        for t in 0..IDLE_EVICTED_S as u64 {
            let ticking = busy.iter().map(|(s, h)| (*s, stats_of(h, t + 1))).collect();
            h.sample(1001 + t, 1.0, ticking);
        }
        let charted = |h: &History, key: &str| h.series.keys().any(|(k, _)| k == key);
        assert!(charted(&h, "df:k31") && !charted(&h, "df:x"));
        // A minute on, k0 is idle too, and makes room for a new key.
        let mut newcomer = stats(5, vec![]);
        newcomer.element = Element::new("new").unwrap();
        h.sample(1000 + IDLE_EVICTED_S as u64, 1.0, vec![(Served::Local, newcomer.clone())]);
        assert!(charted(&h, "df:new") && !charted(&h, "df:k0"), "the idle key made room");
        // Nothing else is idle: a further key waits.
        newcomer.element = Element::new("newer").unwrap();
        h.sample(1001 + IDLE_EVICTED_S as u64, 1.0, vec![(Served::Local, newcomer)]);
        assert!(!charted(&h, "df:newer"));
        assert_eq!(h.series.len(), KEYS_CHARTED);
    }

    fn stats_of(h: &HandlerStats, count: u64) -> HandlerStats {
        HandlerStats { count, ..h.clone() }
    }
}
