//! Direct paths (docs/protocol.md, "Direct paths"): when this node sends a
//! busy route's packets through a peer (a hub) to a node it could reach
//! itself, it dials that node and sends them straight there.
//!
//! - **Learning.** A node that accepts direct links says so of itself in
//!   the `direct` member of its `hello` (its addresses and a ticket, the
//!   token its direct listener admits); a hub passes those entries on one
//!   hop, with, for each key it routes, the node ids among which it picks.
//!   All of it only to peers whose `hello` listed the feature `direct`.
//! - **Choosing.** For a packet routed through such a hub, this node picks
//!   the node the hub would pick (the same rendezvous hash of the route
//!   key over the same candidates; for an actor, its owner by placement).
//!   A live direct link to that node, which serves the key itself, takes
//!   the packet; otherwise the hub does, as before.
//! - **Dialing.** Only for a busy target (`busy_packets` within
//!   `busy_window`), at most `max_links` at once, with `dial_timeout`; a
//!   failed dial (or a link lost) is remembered and not tried again for
//!   `retry_after`, doubling. A link nothing was sent on for `idle_after`
//!   is closed. Meanwhile, and whenever a link is missing, the hub carries
//!   the packets: nothing waits for a dial.
//! - **Accepting.** A node with something to serve listens for direct links
//!   on a listener of its own, once a peer that takes part asks: on the
//!   address its connection to that peer leaves from (port chosen by the
//!   OS), unless `listen` says otherwise. That listener admits only the
//!   ticket. A direct link carries the dialer's packets for the dialed
//!   node's own handlers; neither side routes through it nor announces
//!   what it learned from it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use foldhash::HashMap;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::node::NodeInner;
use super::options::ConnectOptions;
use super::peers::{actor_key, rendezvous, ConnId, Peer, PeerTable};
use super::{dialer, listener};
use crate::packet::{Element, Group, Packet, META_ROUTE_KEY};
use crate::wire::{DirectHello, DirectNode};

/// Settings of direct paths, a field of [`NodeConfig`](super::NodeConfig).
#[derive(Debug, Clone)]
pub struct DirectConfig {
    /// Take part in direct paths: list the feature `direct` in `hello`,
    /// dial busy routes' nodes and accept direct links. Default: on. A hub
    /// with it off tells its peers nothing, so none of them goes around it.
    pub enabled: bool,
    /// Where to accept direct links (`HOST:PORT`). `None` (the default):
    /// on the address this node's connection to the first peer that takes
    /// part leaves from, port chosen by the OS (loopback when that peer is
    /// on loopback). The listener starts only once the node serves
    /// something and such a peer is connected.
    pub listen: Option<String>,
    /// The addresses peers are told to dial (`ws://HOST:PORT/packetflow/v1`),
    /// instead of the listener's own: for a node behind NAT or a port
    /// forward. Empty (the default): the listener's address.
    pub advertise: Vec<String>,
    /// A target is busy, worth a direct link, once this many packets for
    /// it went through a hub within `busy_window`. Default 16.
    pub busy_packets: u32,
    /// See `busy_packets`. Default 1 s.
    pub busy_window: Duration,
    /// Most direct links this node dials (those it accepts count against
    /// `max_connections`). Default 16.
    pub max_links: usize,
    /// A dialed direct link nothing was sent on for this long is closed.
    /// Default 60 s.
    pub idle_after: Duration,
    /// Bound on a dial: TCP, the upgrade and the `hello` exchange. Default 2 s.
    pub dial_timeout: Duration,
    /// After a failed dial, or a link lost, the node is not dialed again for
    /// this long, doubling with each failure in a row up to 32 times.
    /// Default 10 s.
    pub retry_after: Duration,
}

impl Default for DirectConfig {
    fn default() -> Self {
        DirectConfig {
            enabled: true,
            listen: None,
            advertise: Vec::new(),
            busy_packets: 16,
            busy_window: Duration::from_secs(1),
            max_links: 16,
            idle_after: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(10),
        }
    }
}

impl DirectConfig {
    /// PF400 naming the field that cannot work.
    pub(super) fn validate(&self) -> Result<(), crate::PfError> {
        let bad = |m: String| Err(crate::PfError::new(crate::ErrorCode::BadRequest, m));
        let zero = [
            ("direct.busy_packets", self.busy_packets == 0),
            ("direct.busy_window", self.busy_window.is_zero()),
            ("direct.idle_after", self.idle_after.is_zero()),
            ("direct.dial_timeout", self.dial_timeout.is_zero()),
            ("direct.retry_after", self.retry_after.is_zero()),
        ];
        if let Some((field, _)) = zero.into_iter().find(|(_, z)| *z) {
            return bad(format!("{field} must be at least 1, got 0"));
        }
        for (i, url) in self.advertise.iter().enumerate() {
            let ok =
                url.starts_with("ws://") && url.len() > 5 && url.len() <= crate::wire::MAX_DIRECT_URL_LEN;
            if !ok {
                return bad(format!("direct.advertise[{i}] must be a ws:// URL, got {url:?}"));
            }
        }
        if self.advertise.len() > crate::wire::MAX_DIRECT_URLS {
            return bad(format!(
                "direct.advertise holds at most {} URLs, got {}",
                crate::wire::MAX_DIRECT_URLS,
                self.advertise.len()
            ));
        }
        Ok(())
    }
}

/// The listener for direct links, as far as it got.
enum Accepting {
    NotYet,
    Starting,
    Listening { urls: Vec<String>, loopback: bool },
    Failed(String),
}

/// A dial in progress, or the memory of failed ones.
enum DialState {
    Dialing,
    Failed { until: Instant, backoff: Duration, why: String },
}

/// Packets counted toward a target in the current window.
struct Busy {
    since: Instant,
    count: u32,
}

/// A direct link this node dialed.
struct DirectLink {
    peer: Arc<Peer>,
    /// Packets sent on it.
    packets: AtomicU64,
    /// Milliseconds from `DirectPaths::epoch` to the last packet sent.
    last_used_ms: AtomicU64,
    up_since: Instant,
}

impl DirectLink {
    /// Whether it takes a packet of `key`: alive, not closing, and its node
    /// serves the key itself (a direct link's `hello` lists only that).
    fn takes(&self, key: &(Group, Element)) -> bool {
        !self.peer.liveness.is_suspect()
            && !self.peer.close_asked()
            && self.peer.hello().is_some_and(|h| h.handlers.contains(key))
    }
}

/// Which end of a direct link a connection is.
#[derive(Debug, Clone)]
pub(crate) enum LinkSide {
    /// This node dialed it, expecting the node `expect` there.
    Dialed { expect: String },
    /// It came in on this node's direct listener.
    Accepted,
}

/// What a node knows and holds of direct paths.
pub(crate) struct DirectPaths {
    node_id: String,
    /// The token this node's direct listener admits.
    ticket: String,
    node: OnceLock<Weak<NodeInner>>,
    runtime: tokio::runtime::Handle,
    epoch: Instant,
    accepting: Mutex<Accepting>,
    links: RwLock<HashMap<String, Arc<DirectLink>>>,
    /// Links taken out of use (idle), closed once nothing is in flight.
    retiring: Mutex<Vec<Arc<DirectLink>>>,
    accepted: Mutex<HashMap<ConnId, Arc<Peer>>>,
    dials: Mutex<HashMap<String, DialState>>,
    busy: Mutex<HashMap<String, Busy>>,
    /// Actor messages this node sent through a hub and not yet answered,
    /// per actor ([`ViaHub`], [`actor_key`]): while any is, that actor's
    /// messages keep going through the hub.
    via_hub: Mutex<HashMap<u64, usize>>,
    sweeping: AtomicBool,
    packets: AtomicU64,
    dials_ok: AtomicU64,
    dials_failed: AtomicU64,
    lost: AtomicU64,
    idle_closed: AtomicU64,
}

/// Most targets whose traffic is counted, or whose failed dials are
/// remembered, at once (the stale ones are forgotten past it).
const MAX_BUSY_TARGETS: usize = 4096;

fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://")).unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether this node may dial `url`, learned over a connection that is
/// TLS (`secure`) or not: a direct link is plain `ws://`, so over a TLS
/// connection only on loopback (packets never leave TLS for the network).
fn may_dial(url: &str, secure: bool) -> bool {
    url.starts_with("ws://") && (!secure || is_loopback_url(url))
}

impl DirectPaths {
    /// Must be made inside a Tokio runtime (dials run on it).
    pub(crate) fn new(node_id: &str) -> DirectPaths {
        let ticket = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        DirectPaths {
            node_id: node_id.to_owned(),
            ticket,
            node: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            epoch: Instant::now(),
            accepting: Mutex::new(Accepting::NotYet),
            links: RwLock::new(HashMap::default()),
            retiring: Mutex::new(Vec::new()),
            accepted: Mutex::new(HashMap::default()),
            dials: Mutex::new(HashMap::default()),
            busy: Mutex::new(HashMap::default()),
            via_hub: Mutex::new(HashMap::default()),
            sweeping: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            dials_ok: AtomicU64::new(0),
            dials_failed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        }
    }

    pub(crate) fn attach(&self, node: Weak<NodeInner>) {
        let _ = self.node.set(node);
    }

    fn node(&self) -> Option<Arc<NodeInner>> {
        self.node.get()?.upgrade()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// This node's own entry for a peer reached over a TLS connection
    /// (`secure`) or not: none before its listener is up, and none over
    /// TLS unless the listener is on loopback (a direct link is plain).
    fn own_entry(&self, secure: bool) -> Option<DirectNode> {
        match &*self.accepting.lock() {
            Accepting::Listening { urls, loopback } if !secure || *loopback => {
                Some(DirectNode { urls: urls.clone(), ticket: self.ticket.clone() })
            }
            _ => None,
        }
    }

    /// Starts the direct listener, once: on `config.listen`, else on the IP
    /// address `local` (this node's end of a connection to a peer that
    /// takes part), port 0. Peers are told once it is up.
    fn ensure_listening(&self, local: Option<IpAddr>) {
        let Some(node) = self.node() else { return };
        let config = &node.config.direct;
        let addr = match (&config.listen, local) {
            (Some(addr), _) => addr.clone(),
            (None, Some(local)) => SocketAddr::new(local, 0).to_string(),
            (None, None) => return,
        };
        {
            let mut accepting = self.accepting.lock();
            if !matches!(*accepting, Accepting::NotYet) {
                return;
            }
            *accepting = Accepting::Starting;
        }
        let ticket = self.ticket.clone();
        self.runtime.spawn(async move {
            let outcome = listener::listen_direct(&node, &addr, &ticket).await;
            let config = &node.config.direct;
            let state = match outcome {
                Ok(bound) => {
                    // A listener on every interface is advertised on the
                    // address peers reached this node from.
                    let ip = match (bound.ip().is_unspecified(), local) {
                        (true, Some(local)) => local,
                        _ => bound.ip(),
                    };
                    let own = SocketAddr::new(ip, bound.port());
                    let urls = if config.advertise.is_empty() {
                        vec![format!("ws://{own}{}", super::WS_PATH)]
                    } else {
                        config.advertise.clone()
                    };
                    let loopback = urls.iter().all(|u| is_loopback_url(u));
                    Accepting::Listening { urls, loopback }
                }
                Err(e) => Accepting::Failed(e.message),
            };
            *node.direct.accepting.lock() = state;
            node.announce_to_all();
        });
    }

    /// The direct link to send `packet` on instead of `via` (the peer
    /// routing chose), if there is one; counts the packet toward its
    /// target and dials a busy one. `actor_owner`: the owner of the actor
    /// the packet is for, by placement.
    pub(crate) fn link_for(
        &self,
        packet: &Packet,
        via: &Peer,
        actor_owner: Option<&str>,
    ) -> Option<Arc<Peer>> {
        if via.is_direct_link() {
            return None;
        }
        let hello = via.hello()?;
        let direct = hello.direct.as_deref()?;
        let key = (packet.group, packet.element.clone());
        let target: &str = match actor_owner {
            Some(owner) => owner,
            None => {
                let candidates = direct.routes.get(&key)?;
                match packet.meta(META_ROUTE_KEY).and_then(Value::as_str) {
                    // The hub's choice: the same hash over the same nodes.
                    Some(route_key) => candidates.iter().max_by_key(|id| rendezvous(route_key, id))?,
                    None => {
                        if let Some(link) = self.least_busy_link(candidates, &key) {
                            return Some(link);
                        }
                        // No link yet: each node aims at its own choice among
                        // those it could dial, so submitters spread.
                        candidates
                            .iter()
                            .filter(|id| direct.nodes.contains_key(*id))
                            .max_by_key(|id| rendezvous(&self.node_id, id))?
                    }
                }
            }
        };
        if hello.node_id == target {
            // `via` is the target itself: a link would only duplicate it.
            return None;
        }
        if let Some(link) = self.links.read().get(target) {
            // An actor's messages stay on the hub's path until those sent
            // that way are answered: one sent direct would overtake them.
            if actor_owner.is_some() && self.waits_for_hub(packet) {
                return None;
            }
            // Linked, but its node does not serve the key itself: the hub.
            return link.takes(&key).then(|| self.use_link(link));
        }
        let entry = direct.nodes.get(target)?;
        self.note_busy(target, entry, via);
        None
    }

    /// Whether messages of `packet`'s actor sent through a hub are still
    /// unanswered ([`ViaHub`]).
    fn waits_for_hub(&self, packet: &Packet) -> bool {
        let counts = self.via_hub.lock();
        !counts.is_empty() && via_hub_key(packet).is_some_and(|key| counts.contains_key(&key))
    }

    fn least_busy_link(&self, candidates: &[String], key: &(Group, Element)) -> Option<Arc<Peer>> {
        let links = self.links.read();
        let link = candidates
            .iter()
            .filter_map(|id| links.get(id))
            .filter(|link| link.takes(key))
            .min_by_key(|link| link.peer.in_flight())?;
        Some(self.use_link(link))
    }

    fn use_link(&self, link: &DirectLink) -> Arc<Peer> {
        link.packets.fetch_add(1, Ordering::Relaxed);
        link.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
        link.peer.clone()
    }

    /// Counts a packet that went through a hub toward `target`; dials it
    /// once it is busy.
    fn note_busy(&self, target: &str, entry: &DirectNode, via: &Peer) {
        let Some(node) = self.node() else { return };
        let config = &node.config.direct;
        let now = Instant::now();
        {
            let mut busy = self.busy.lock();
            if busy.len() >= MAX_BUSY_TARGETS && !busy.contains_key(target) {
                busy.retain(|_, b| now.duration_since(b.since) < config.busy_window);
            }
            let b = busy.entry(target.to_owned()).or_insert(Busy { since: now, count: 0 });
            if now.duration_since(b.since) >= config.busy_window {
                *b = Busy { since: now, count: 0 };
            }
            b.count += 1;
            if b.count < config.busy_packets {
                return;
            }
            *b = Busy { since: now, count: 0 };
        }
        self.start_dial(&node, target, entry, via);
    }

    fn start_dial(&self, node: &Arc<NodeInner>, target: &str, entry: &DirectNode, via: &Peer) {
        let config = &node.config.direct;
        let now = Instant::now();
        let backoff = {
            let links = self.links.read();
            if links.contains_key(target) {
                return;
            }
            let mut dials = self.dials.lock();
            let dialing = dials.values().filter(|d| matches!(d, DialState::Dialing)).count();
            if links.len() + dialing >= config.max_links {
                return;
            }
            let backoff = match dials.get(target) {
                Some(DialState::Dialing) => return,
                Some(DialState::Failed { until, .. }) if now < *until => return,
                Some(DialState::Failed { backoff, .. }) => (*backoff * 2).min(config.retry_after * 32),
                None => config.retry_after,
            };
            dials.insert(target.to_owned(), DialState::Dialing);
            backoff
        };
        let urls: Vec<String> = entry.urls.iter().filter(|u| may_dial(u, via.is_secure())).cloned().collect();
        if urls.is_empty() {
            let why = "no address it advertised may be dialed from here (plain ws:// off loopback over TLS)";
            self.dial_failed(node, target, backoff, why.into());
            return;
        }
        let options = ConnectOptions {
            codec: via.codec(),
            token: Some(entry.ticket.clone()),
            ..ConnectOptions::default()
        };
        let target = target.to_owned();
        let node = node.clone();
        self.runtime.spawn(async move {
            let mut why = String::new();
            for url in &urls {
                let within = node.config.direct.dial_timeout;
                match dialer::dial_direct(&node, url, options.clone(), &target, within).await {
                    Ok(()) => {
                        node.direct.dials_ok.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => why = e.message,
                }
            }
            node.direct.dial_failed(&node, &target, backoff, why);
        });
    }

    /// Remembers a failed dial of `target`: not tried again for `backoff`.
    fn dial_failed(&self, node: &NodeInner, target: &str, backoff: Duration, why: String) {
        self.dials_failed.fetch_add(1, Ordering::Relaxed);
        // A link that came up after all (its hello raced the timeout) stays.
        if self.links.read().contains_key(target) {
            self.dials.lock().remove(target);
            return;
        }
        let now = Instant::now();
        let mut dials = self.dials.lock();
        // Failures of nodes long gone are forgotten once there are many.
        if dials.len() >= MAX_BUSY_TARGETS {
            dials.retain(|_, d| !matches!(d, DialState::Failed { until, .. } if *until <= now));
        }
        dials.insert(target.to_owned(), DialState::Failed { until: now + backoff, backoff, why });
        drop(dials);
        node.routes_changed();
    }

    /// A direct link's peer sent `hello`: a dialed link is put to use if it
    /// reached the node it was dialed for, while that dial still waits.
    /// The error says why the link must close.
    pub(crate) fn link_hello(&self, peer: &Arc<Peer>, side: &LinkSide) -> Result<(), String> {
        let expect = match side {
            LinkSide::Accepted => {
                self.accepted.lock().insert(peer.id, peer.clone());
                return Ok(());
            }
            LinkSide::Dialed { expect } => expect,
        };
        if self.links.read().get(expect).is_some_and(|l| l.peer.id == peer.id) {
            return Ok(()); // a later hello: its handlers changed
        }
        let found = peer.hello().map(|h| h.node_id.clone()).unwrap_or_default();
        if found != *expect {
            return Err(format!(
                "{} is node {found:?}, not the node {expect:?} it was advertised for",
                peer.remote
            ));
        }
        let mut dials = self.dials.lock();
        if !matches!(dials.get(expect), Some(DialState::Dialing)) {
            return Err("the dial was given up".into());
        }
        dials.remove(expect);
        let link = Arc::new(DirectLink {
            peer: peer.clone(),
            packets: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(self.now_ms()),
            up_since: Instant::now(),
        });
        self.links.write().insert(expect.clone(), link);
        drop(dials);
        self.start_sweeping();
        Ok(())
    }

    /// A direct link's connection ended. A dialed one lost (not closed by
    /// this node) is remembered as a failure: its node is not dialed again
    /// for `retry_after`, and the hub carries its packets meanwhile.
    pub(crate) fn link_gone(&self, peer: &Peer) {
        self.accepted.lock().remove(&peer.id);
        let Some(node) = self.node() else { return };
        let removed = {
            let mut links = self.links.write();
            let id = links.iter().find(|(_, l)| l.peer.id == peer.id).map(|(id, _)| id.clone());
            id.and_then(|id| links.remove(&id).map(|_| id))
        };
        self.retiring.lock().retain(|l| l.peer.id != peer.id);
        let Some(target) = removed else { return };
        if !peer.close_asked() {
            self.lost.fetch_add(1, Ordering::Relaxed);
            let backoff = node.config.direct.retry_after;
            let until = Instant::now() + backoff;
            let why = format!("the direct link to {} was lost", peer.remote);
            self.dials.lock().insert(target, DialState::Failed { until, backoff, why });
        }
        node.routes_changed();
    }

    /// Closes every direct link, dialed or accepted; returns how many.
    /// Packets in flight on them are answered PF503; later ones go through
    /// the hub until a route is busy again.
    pub(crate) fn close_all(&self) -> usize {
        let mut peers: Vec<Arc<Peer>> = self.links.write().drain().map(|(_, l)| l.peer.clone()).collect();
        peers.extend(self.retiring.lock().drain(..).map(|l| l.peer.clone()));
        peers.extend(self.accepted.lock().values().cloned());
        for peer in &peers {
            peer.request_close();
        }
        peers.len()
    }

    /// Runs the idle sweep while links exist: every half `idle_after`, links
    /// unused that long leave use, and are closed at the next sweep once
    /// nothing is in flight on them (a packet that picked one just before
    /// is answered first).
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(node) = self.node() else { return };
        let weak = Arc::downgrade(&node);
        let period = node.config.direct.idle_after / 2;
        drop(node);
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(node) = weak.upgrade() else { return };
                if node.is_stopped() || !node.direct.sweep(&node) {
                    node.direct.sweeping.store(false, Ordering::Release);
                    // A link that came up meanwhile restarts the sweep.
                    if !node.direct.links.read().is_empty() {
                        node.direct.start_sweeping();
                    }
                    return;
                }
            }
        });
    }

    /// One idle sweep; false when nothing is left to watch.
    fn sweep(&self, node: &NodeInner) -> bool {
        let idle_ms = node.config.direct.idle_after.as_millis() as u64;
        let now = self.now_ms();
        let mut retiring = self.retiring.lock();
        retiring.retain(|link| {
            if link.peer.in_flight() > 0 {
                return true;
            }
            self.idle_closed.fetch_add(1, Ordering::Relaxed);
            link.peer.request_close();
            false
        });
        {
            let mut links = self.links.write();
            let idle: Vec<String> = links
                .iter()
                .filter(|(_, l)| now.saturating_sub(l.last_used_ms.load(Ordering::Relaxed)) >= idle_ms)
                .map(|(id, _)| id.clone())
                .collect();
            for id in idle {
                if let Some(link) = links.remove(&id) {
                    retiring.push(link);
                }
            }
        }
        !retiring.is_empty() || !self.links.read().is_empty()
    }

    /// The `direct` member of `/health`.
    pub(crate) fn health(&self, node: &NodeInner) -> Value {
        let now = Instant::now();
        let links: Vec<Value> = self
            .links
            .read()
            .iter()
            .map(|(id, l)| {
                json!({
                    "node_id": id,
                    "url": l.peer.remote,
                    "packets": l.packets.load(Ordering::Relaxed),
                    "in_flight": l.peer.in_flight(),
                    "up_ms": now.duration_since(l.up_since).as_millis() as u64,
                })
            })
            .collect();
        let backing_off: Vec<Value> = self
            .dials
            .lock()
            .iter()
            .filter_map(|(id, d)| match d {
                DialState::Failed { until, why, .. } if *until > now => Some(json!({
                    "node_id": id,
                    "retry_in_ms": until.duration_since(now).as_millis() as u64,
                    "why": why,
                })),
                _ => None,
            })
            .collect();
        let (listening, listen_error) = match &*self.accepting.lock() {
            Accepting::Listening { urls, .. } => (urls.clone(), None),
            Accepting::Failed(why) => (Vec::new(), Some(why.clone())),
            _ => (Vec::new(), None),
        };
        json!({
            "enabled": node.config.direct.enabled,
            "listening": listening,
            "listen_error": listen_error,
            "links": links,
            "accepted": self.accepted.lock().len(),
            "packets": self.packets.load(Ordering::Relaxed),
            "dials_ok": self.dials_ok.load(Ordering::Relaxed),
            "dials_failed": self.dials_failed.load(Ordering::Relaxed),
            "lost": self.lost.load(Ordering::Relaxed),
            "idle_closed": self.idle_closed.load(Ordering::Relaxed),
            "backing_off": backing_off,
        })
    }

    /// The Prometheus families of direct paths.
    pub(crate) fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let families: [(&str, &str, &str, u64); 6] = [
            (
                "packetflow_direct_links",
                "gauge",
                "Direct links this node dialed and uses.",
                self.links.read().len() as u64,
            ),
            (
                "packetflow_direct_accepted_links",
                "gauge",
                "Direct links other nodes dialed to this one.",
                self.accepted.lock().len() as u64,
            ),
            (
                "packetflow_direct_packets_total",
                "counter",
                "Packets sent on direct links instead of through a hub.",
                self.packets.load(Ordering::Relaxed),
            ),
            (
                "packetflow_direct_dials_total",
                "counter",
                "Direct links dialed successfully.",
                self.dials_ok.load(Ordering::Relaxed),
            ),
            (
                "packetflow_direct_dial_failures_total",
                "counter",
                "Direct dials that failed (the hub carried the packets).",
                self.dials_failed.load(Ordering::Relaxed),
            ),
            (
                "packetflow_direct_links_lost_total",
                "counter",
                "Direct links lost while in use (not closed for idleness).",
                self.lost.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
}

impl NodeInner {
    /// The `direct` member of the `hello` for `peer`: this node's own entry
    /// and its peers' (one hop), and the candidates of each key it routes
    /// but does not serve. `None` for a peer that does not take part, or
    /// whose token may submit only some keys beyond `mc:*` (going around
    /// the hub would go around the hub's check). `mc:*` keys are never
    /// routed around a hub: a direct listener's ticket does not grant
    /// them. Starts the direct listener when this
    /// node serves something and has none yet.
    pub(crate) fn direct_announcement(&self, peer: &Peer, peers: &PeerTable) -> Option<Box<DirectHello>> {
        if !self.config.direct.enabled || peer.is_direct_link() || !peer.takes_direct() {
            return None;
        }
        let own_keys = self.reactor.handler_keys();
        if !own_keys.is_empty() {
            self.direct.ensure_listening(peer.local_ip());
        }
        if peer.grant().is_some_and(|g| !g.may_submit_all_but_mc()) {
            return None;
        }
        let mut nodes = BTreeMap::new();
        if let Some(own) = self.direct.own_entry(peer.is_secure()) {
            nodes.insert(self.node_id.clone(), own);
        }
        for other in peers.nodes().filter(|p| p.id != peer.id && !p.is_direct_link()) {
            let Some(hello) = other.hello() else { continue };
            if let Some(entry) = hello.direct.as_ref().and_then(|d| d.nodes.get(&hello.node_id)) {
                nodes.insert(hello.node_id.clone(), entry.clone());
            }
        }
        let mut routes = BTreeMap::new();
        for (key, candidates) in peers.candidates_except(peer.id) {
            // Served here: the hub runs it itself, nobody goes around it.
            // Nor around a hub's check of `mc:*`.
            if own_keys.binary_search(key).is_ok() || key.0 == Group::MetaCompute {
                continue;
            }
            if candidates.iter().any(|id| nodes.contains_key(id)) {
                routes.insert(key.clone(), candidates);
            }
        }
        let direct = DirectHello { nodes, routes };
        (!direct.is_empty()).then(|| Box::new(direct))
    }

    /// The direct link to send `packet` on instead of `via`, if any (see
    /// [`DirectPaths::link_for`]).
    pub(crate) fn direct_link_for(
        &self,
        packet: &Packet,
        via: &Peer,
        actor_owner: Option<&str>,
    ) -> Option<Arc<Peer>> {
        if !self.config.direct.enabled {
            return None;
        }
        self.direct.link_for(packet, via, actor_owner)
    }
}

/// An actor message on its way through a hub, counted in [`DirectPaths`]
/// until dropped (once answered): the order of one sender's messages to
/// an actor holds when a direct link to its node comes up, as the later
/// ones wait for the hub's path to empty (docs/protocol.md, "Direct
/// paths").
pub(crate) struct ViaHub {
    node: Arc<NodeInner>,
    key: u64,
}

impl ViaHub {
    /// Counts `packet`, an actor message going through a hub; `None` for
    /// a packet that names no actor.
    pub(crate) fn new(node: Arc<NodeInner>, packet: &Packet) -> Option<ViaHub> {
        let key = via_hub_key(packet)?;
        *node.direct.via_hub.lock().entry(key).or_insert(0) += 1;
        Some(ViaHub { node, key })
    }
}

impl Drop for ViaHub {
    fn drop(&mut self) {
        let mut counts = self.node.direct.via_hub.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What [`ViaHub`] counts `packet` under: its actor.
fn via_hub_key(packet: &Packet) -> Option<u64> {
    let placed = crate::actor::address::placement_of(packet)?;
    Some(actor_key(placed.actor_type, placed.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_and_what_may_be_dialed_over_tls() {
        assert!(is_loopback_url("ws://127.0.0.1:80/packetflow/v1"));
        assert!(is_loopback_url("ws://[::1]:80/packetflow/v1"));
        assert!(is_loopback_url("ws://localhost:9/packetflow/v1"));
        assert!(!is_loopback_url("ws://10.0.0.5:80/packetflow/v1"));
        assert!(may_dial("ws://10.0.0.5:80/packetflow/v1", false));
        assert!(!may_dial("ws://10.0.0.5:80/packetflow/v1", true));
        assert!(may_dial("ws://127.0.0.1:80/packetflow/v1", true));
        assert!(!may_dial("wss://10.0.0.5:80/packetflow/v1", false));
    }

    #[test]
    fn config_is_checked() {
        assert!(DirectConfig::default().validate().is_ok());
        let e = DirectConfig { busy_packets: 0, ..DirectConfig::default() }.validate().unwrap_err();
        assert_eq!(e.message, "direct.busy_packets must be at least 1, got 0");
        let e = DirectConfig { advertise: vec!["http://x".into()], ..DirectConfig::default() }
            .validate()
            .unwrap_err();
        assert!(e.message.starts_with("direct.advertise[0] must be a ws:// URL"));
    }
}
