//! The documents served on a node's port: `/health` (JSON) and `/metrics`
//! (Prometheus text format).

use std::fmt::Write;

use serde_json::{json, Value};

use super::node::NodeInner;
use crate::actor::ActorTypeStats;
use crate::reactor::HandlerStats;
use crate::wire::Codec;

/// Upper bounds of the exported latency buckets, in seconds. The reactor's
/// own histogram is finer (about 19% per bucket); each of its buckets is
/// counted under the first bound not below its upper edge.
const LE_SECONDS: [f64; 14] =
    [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// `ok`, or `stopping` once the node stops.
pub(crate) fn status(node: &NodeInner) -> &'static str {
    if node.is_stopped() {
        "stopping"
    } else {
        "ok"
    }
}

/// Packets by the route that took them (docs/protocol.md, "NATS",
/// "Per route"): answered by a local handler, sent to a WebSocket peer
/// (forwarded or relayed), sent as a NATS request.
fn routed(stats: &crate::reactor::ReactorStats) -> [(&'static str, u64); 3] {
    let r = stats.routed;
    [("local", r.local), ("websocket", r.websocket), ("nats", r.nats)]
}

pub(crate) fn health(node: &NodeInner) -> Value {
    let stats = node.reactor.stats();
    let routed: serde_json::Map<String, Value> =
        routed(&stats).into_iter().map(|(route, n)| (route.to_owned(), n.into())).collect();
    let now = tokio::time::Instant::now();
    let wall_ms = super::conn::epoch_ms();
    let peers: Vec<Value> = node
        .peers
        .read()
        .all()
        .map(|p| {
            let hello = p.hello();
            json!({
                "remote": p.remote,
                "node_id": hello.as_ref().map(|h| h.node_id.clone()),
                "name": hello.as_ref().map(|h| h.name.clone()),
                "runtime": hello.as_ref().map(|h| h.runtime.clone()),
                "handlers": hello.as_ref().map(|h| h.handlers.iter().map(|(g, e)| format!("{g}:{e}")).collect::<Vec<_>>()),
                "encoding": if p.codec() == Codec::MsgPack { "msgpack" } else { "json" },
                "connected_at_ms": wall_ms - p.connected.elapsed().as_millis() as u64,
                "in_flight": p.in_flight(),
                "state": if p.liveness.is_suspect() { "suspect" } else { "alive" },
                "last_heard_ms": p.liveness.last_heard_age(now).as_millis() as u64,
                "heartbeat_ms": p.liveness.interval().as_millis() as u64,
                "submitted": p.submitted(),
                "direct_link": p.is_direct_link(),
            })
        })
        .collect();
    // Peers declared dead lately: gone from the table, listed a while.
    let dead: Vec<Value> = node
        .peer_events
        .recent_deaths()
        .into_iter()
        .map(
            |(remote, ago)| json!({"remote": remote, "state": "dead", "dead_for_ms": ago.as_millis() as u64}),
        )
        .collect();
    let handlers: Vec<String> = node.reactor.handler_keys().iter().map(|(g, e)| format!("{g}:{e}")).collect();
    // The connection to NATS (docs/protocol.md, "NATS"); null off NATS.
    #[cfg(feature = "nats")]
    let nats = node.nats.get().map(|link| link.health());
    #[cfg(not(feature = "nats"))]
    let nats: Option<Value> = None;
    json!({
        "status": status(node),
        "node_id": node.node_id,
        "name": stats.name,
        "runtime": node.config.runtime,
        "protocol": crate::packet::PROTOCOL_VERSION,
        "listening": node.listening.lock().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "uptime_s": node.started.elapsed().as_secs(),
        "handlers": handlers,
        "peers": peers,
        "dead_peers": dead,
        "actors": stats.actors,
        "in_flight": stats.in_flight,
        "queued": stats.queued,
        "unrouted": stats.unrouted,
        "forwards_cancelled": stats.forwards_cancelled,
        "routed": routed,
        "connections": node.accepted_connections(),
        "queued_bytes": node.queued_bytes.load(std::sync::atomic::Ordering::Relaxed),
        "direct": node.direct.health(node),
        "nats": nats,
        "busy_poll": node.busy_poll.as_ref().filter(|b| !b.window().is_zero()).map(|b| json!({
            "window_us": b.window().as_micros() as u64,
            "spinning": b.is_spinning(),
        })),
    })
}

/// A per-actor-type metric: name, kind, help, and how to read it.
type PerType = (&'static str, &'static str, &'static str, fn(&ActorTypeStats) -> u64);

fn labels(h: &HandlerStats) -> String {
    format!("group=\"{}\",element=\"{}\"", h.group, h.element)
}

pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) fn prometheus(node: &NodeInner) -> String {
    let stats = node.reactor.stats();
    let mut out = String::with_capacity(1024 + stats.handlers.len() * 1200);
    family(&mut out, "packetflow_packets_total", "counter", "Packets answered by local handlers.");
    for h in &stats.handlers {
        let _ = writeln!(out, "packetflow_packets_total{{{}}} {}", labels(h), h.count);
    }
    family(
        &mut out,
        "packetflow_errors_total",
        "counter",
        "Packets answered with an error by local handlers.",
    );
    for h in &stats.handlers {
        let _ = writeln!(out, "packetflow_errors_total{{{}}} {}", labels(h), h.errors);
    }
    family(
        &mut out,
        "packetflow_cancelled_total",
        "counter",
        "Packets for local handlers cancelled (also counted in packetflow_errors_total).",
    );
    for h in &stats.handlers {
        let _ = writeln!(out, "packetflow_cancelled_total{{{}}} {}", labels(h), h.cancelled);
    }
    family(&mut out, "packetflow_latency_seconds", "histogram", "Time from acceptance to answer.");
    for h in &stats.handlers {
        let l = labels(h);
        let mut cumulative = 0u64;
        let mut buckets = h.latency_buckets.iter().peekable();
        for le in LE_SECONDS {
            while let Some((upper_us, n)) = buckets.peek() {
                if (*upper_us as f64) / 1e6 > le {
                    break;
                }
                cumulative += n;
                buckets.next();
            }
            let _ = writeln!(out, "packetflow_latency_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "packetflow_latency_seconds_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "packetflow_latency_seconds_sum{{{l}}} {}", h.sum_us as f64 / 1e6);
        let _ = writeln!(out, "packetflow_latency_seconds_count{{{l}}} {}", h.count);
    }
    let gauges = [
        ("packetflow_in_flight", "gauge", "Packets accepted and not yet answered.", stats.in_flight as u64),
        ("packetflow_queued", "gauge", "Packets waiting for a free slot.", stats.queued as u64),
        ("packetflow_peers", "gauge", "Connected peers.", node.peers.read().len() as u64),
        (
            "packetflow_connections",
            "gauge",
            "Connections the listeners hold (peers and HTTP requests).",
            node.accepted_connections() as u64,
        ),
        (
            "packetflow_queued_bytes",
            "gauge",
            "Bytes of submits held for packets in flight.",
            node.queued_bytes.load(std::sync::atomic::Ordering::Relaxed) as u64,
        ),
        ("packetflow_unrouted_total", "counter", "Packets answered PF001.", stats.unrouted),
        (
            "packetflow_forwards_cancelled_total",
            "counter",
            "Packets cancelled while forwarded to a peer.",
            stats.forwards_cancelled,
        ),
        (
            "packetflow_peer_suspicions_total",
            "counter",
            "Times a peer turned suspect (a packet's deadline passed in its silence).",
            node.peer_events.suspicions.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "packetflow_peer_deaths_total",
            "counter",
            "Peers declared dead (silent for 3 heartbeat intervals).",
            node.peer_events.deaths.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "packetflow_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
            node.started.elapsed().as_secs(),
        ),
    ];
    for (name, kind, help, value) in gauges {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "packetflow_routed_total",
        "counter",
        "Packets by route: answered by a local handler (local), sent to a WebSocket peer (websocket), \
         sent as a NATS request (nats).",
    );
    for (route, n) in routed(&stats) {
        let _ = writeln!(out, "packetflow_routed_total{{route=\"{route}\"}} {n}");
    }
    let per_type: [PerType; 5] = [
        ("packetflow_actors_active", "gauge", "Actors in memory, per type.", |a| a.active),
        ("packetflow_actors_passivated", "gauge", "Actors in the store and not in memory, per type.", |a| {
            a.passivated
        }),
        (
            "packetflow_actor_activations_total",
            "counter",
            "Times an actor came into memory, per type.",
            |a| a.activations,
        ),
        (
            "packetflow_actor_passivations_total",
            "counter",
            "Times an idle actor left memory, per type.",
            |a| a.passivations,
        ),
        (
            "packetflow_actor_tells_failed_total",
            "counter",
            "Told messages whose turn failed, per type.",
            |a| a.tells_failed,
        ),
    ];
    if !stats.actors.is_empty() {
        for (name, kind, help, value) in per_type {
            family(&mut out, name, kind, help);
            for a in &stats.actors {
                let _ = writeln!(out, "{name}{{actor_type=\"{}\"}} {}", a.actor_type, value(a));
            }
        }
    }
    node.direct.prometheus(&mut out);
    #[cfg(feature = "nats")]
    if let Some(link) = node.nats.get() {
        link.prometheus(&mut out);
    }
    out
}
