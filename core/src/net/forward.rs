//! The two ways a packet with no local handler leaves this node for a peer:
//!
//! - through the reactor's [`Forwarder`] ([`Router`]): a future per packet
//!   awaits the peer's answer. Local submits take this path, and so do
//!   packets for seed peers (whose keys are learned from their answers);
//! - relayed by the connection it came in on ([`NodeInner::relay`]): no
//!   future, the peer's answer goes straight back to that connection. A
//!   submit from a peer for a key another peer announced takes this path.
//!
//! Both mark the packet in flight (PF409), add a hop (PF508 past the limit),
//! pass on what is left of the deadline and answer with the same errors.
//!
//! And both withdraw a packet from its peer when it is cancelled, when its
//! submitter goes away and when its deadline passes: the submit is
//! forgotten here, and a peer that takes cancels is sent one, so work
//! nobody waits for does not run on there (docs/protocol.md,
//! "Cancellation").

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::dashboard::{self, ServedBy};
use super::direct::ViaHub;
use super::mailbox::Mailbox;
use super::node::NodeInner;
use super::peers::{Peer, Placement, RelayAnswer, Reply, ReturnAddress};
use crate::error::ErrorCode;
use crate::packet::{Group, Packet, PacketId, META_HOPS, META_ROUTE_KEY};
use crate::reactor::{Forwarder, Origin};
use crate::result::PacketResult;

/// The reactor's forwarder: routes packets with no local handler to peers.
pub(super) struct Router {
    pub(super) node: Weak<NodeInner>,
}

impl Forwarder for Router {
    fn forward(
        &self,
        packet: Packet,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let node = self.node.upgrade()?;
        let origin = origin.map(|o| o.0);
        // A member of a NATS cluster sends an actor's or a route key's
        // packet to the member that owns it (docs/protocol.md, "Actors and
        // route keys over NATS").
        #[cfg(feature = "nats")]
        let mut packet = match node.forward_in_cluster(packet, deadline, origin) {
            Ok(sent) => return Some(sent),
            Err(packet) => packet,
        };
        #[cfg(not(feature = "nats"))]
        let mut packet = packet;
        if let Some(Placement::Peer { via, beyond }) = node.place_actor(&mut packet, origin) {
            return Some(to_actor(node, packet, via, beyond.as_deref(), deadline, origin));
        }
        let route_key = packet.meta(META_ROUTE_KEY).and_then(Value::as_str);
        let peer = node.peers.read().route_element(packet.group, &packet.element, route_key, origin);
        let Some(peer) = peer else { return node.beyond_peers(packet, deadline, origin) };
        let peer = node.around_hub(&packet, peer);
        Some(Box::pin(observed(node, peer, packet, deadline, origin)))
    }

    fn actor_here(&self, actor_type: &str, id: &str, at: Option<&str>, origin: Option<Origin>) -> bool {
        let Some(node) = self.node.upgrade() else { return true };
        #[cfg(feature = "nats")]
        if let Some(here) = node.actor_here_in_cluster(actor_type, id, at, origin.map(|o| o.0)) {
            return here;
        }
        let own = Some(node.node_id.as_str());
        let placed = node.peers.read().place_actor(actor_type, id, own, origin.map(|o| o.0), at);
        !matches!(placed, Some(Placement::Peer { .. }))
    }

    fn actor_host_ids(&self, actor_type: &str) -> Vec<String> {
        let Some(node) = self.node.upgrade() else { return Vec::new() };
        let mut hosts = node.peers.read().actor_host_ids(actor_type);
        if node.reactor.actor_host(actor_type).is_some() {
            hosts.push(node.node_id.clone());
        }
        #[cfg(feature = "nats")]
        if let Some(cluster) = node.cluster() {
            hosts.extend(cluster.hosts_of(actor_type));
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    fn hosts_actor_type(&self, actor_type: &str, node_id: &str) -> bool {
        let Some(node) = self.node.upgrade() else { return false };
        if node.node_id == node_id {
            return node.reactor.actor_host(actor_type).is_some();
        }
        #[cfg(feature = "nats")]
        if node.cluster().is_some_and(|c| c.hosts(actor_type, node_id)) {
            return true;
        }
        let hosts = node.peers.read().hosts_actor_type(actor_type, node_id);
        hosts
    }

    fn knows_node(&self, node_id: &str) -> bool {
        let Some(node) = self.node.upgrade() else { return false };
        #[cfg(feature = "nats")]
        if node.cluster().is_some_and(|c| c.knows(node_id)) {
            return true;
        }
        node.node_id == node_id || node.peers.read().knows_node(node_id)
    }

    fn route_key_here(&self, group: Group, element: &str, route_key: &str, origin: Option<Origin>) -> bool {
        #[cfg(feature = "nats")]
        if let Some(node) = self.node.upgrade() {
            return node.route_key_here_in_cluster(group, element, route_key, origin.map(|o| o.0));
        }
        let _ = (group, element, route_key, origin);
        true
    }

    fn forward_to_actor_host(
        &self,
        node_id: &str,
        packet: Packet,
        deadline: Instant,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let node = self.node.upgrade()?;
        #[cfg(feature = "nats")]
        let packet = match node.forward_to_member(node_id, packet, deadline) {
            Ok(sent) => return Some(sent),
            Err(packet) => packet,
        };
        let actor_type = crate::actor::address::placement_of(&packet)?.actor_type;
        let placed = node.peers.read().toward_host(actor_type, node_id, None);
        let Some(Placement::Peer { via, beyond }) = placed else { return None };
        Some(to_actor(node, packet, via, beyond.as_deref(), deadline, None))
    }

    fn origin_announces(&self, origin: Origin, group: Group, element: &str) -> bool {
        let Some(node) = self.node.upgrade() else { return false };
        // On NATS, the members are the peer nodes: a handover from there
        // comes from one (the NATS system's own auth decides who publishes).
        #[cfg(feature = "nats")]
        if node.cluster().is_some() && node.came_from_nats(Some(origin.0)) {
            return true;
        }
        let Ok(element) = crate::packet::Element::new(element) else { return false };
        // The peer's own hello, direct links' too (they carry packets for
        // the linked node's handlers, and are kept off the route index).
        let peer = node.peers.read().get(origin.0).cloned();
        peer.and_then(|p| p.hello()).is_some_and(|hello| hello.handlers.contains(&(group, element)))
    }

    fn announced(&self, group: Group, element: &str, origin: Option<Origin>) -> bool {
        let Some(node) = self.node.upgrade() else { return false };
        let peers = node.peers.read();
        peers.announces(group, element, origin.map(|o| o.0))
    }

    fn node_id(&self) -> Option<String> {
        self.node.upgrade().map(|node| node.node_id.clone())
    }

    fn announcers(&self, group: Group, element: &str) -> Vec<String> {
        let Some(node) = self.node.upgrade() else { return Vec::new() };
        let peers = node.peers.read();
        let mut ids: Vec<String> =
            peers.announcing(group, element).filter_map(|p| p.hello().map(|h| h.node_id.clone())).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn forward_to_peer(
        &self,
        node_id: &str,
        packet: Packet,
        deadline: Instant,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let node = self.node.upgrade()?;
        let peer = node
            .peers
            .read()
            .announcing(packet.group, packet.element.as_str())
            .find(|p| p.hello().is_some_and(|h| h.node_id == node_id))?
            .clone();
        Some(Box::pin(observed(node, peer, packet, deadline, None)))
    }

    fn busy_poll_us(&self) -> Option<u64> {
        let node = self.node.upgrade()?;
        node.busy_poll.as_ref().map(|busy| busy.window().as_micros() as u64)
    }

    fn set_busy_poll_us(&self, us: u64) -> Option<u64> {
        let node = self.node.upgrade()?;
        let busy = node.busy_poll.as_ref()?;
        Some(busy.set_window(std::time::Duration::from_micros(us)).as_micros() as u64)
    }

    fn network_stats(&self) -> Option<crate::reactor::NetworkStats> {
        let node = self.node.upgrade()?;
        #[cfg(feature = "nats")]
        let nats = node.nats.get().map(|link| link.stats());
        #[cfg(not(feature = "nats"))]
        let nats = None;
        let websocket = node.sent_to_peers.load(std::sync::atomic::Ordering::Relaxed);
        Some(crate::reactor::NetworkStats { websocket, nats })
    }

    fn cancel_relayed(&self, id: &PacketId) {
        let Some(node) = self.node.upgrade() else { return };
        // Relays go to peers that sent hello only; the id is in flight
        // once on this node, so one of them at most holds it.
        let nodes: Vec<Arc<Peer>> = node.peers.read().nodes().cloned().collect();
        for peer in nodes {
            if let Some((seq, reply)) = peer.take_relayed(id) {
                peer.send_cancel(seq, id);
                // Its mark was cancelled: whatever it is handed, the
                // connection that relayed it answers PF499.
                reply.deliver(PacketResult::failure(id.clone(), crate::reactor::cancelled_error(id), 0));
                return;
            }
        }
    }
}

impl NodeInner {
    /// Where a packet goes that neither a local handler nor a WebSocket
    /// peer takes (docs/protocol.md, "Routing" and "NATS"): on a node on
    /// NATS, a NATS request, unless it came from there; on another, a peer
    /// that is on NATS (its `hello` lists `nats`), which sends it there.
    /// A node on NATS never sends it to such a peer: it reaches the same
    /// servers itself, one hop shorter, and a packet from NATS must not go
    /// back there through a peer.
    fn beyond_peers(
        self: &Arc<Self>,
        packet: Packet,
        deadline: Instant,
        origin: Option<u64>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        if self.on_nats() {
            return self.over_nats(packet, deadline, origin);
        }
        let bridge = self.peers.read().toward_nats(packet.group, packet.element.as_str(), origin)?;
        Some(Box::pin(observed(self.clone(), bridge, packet, deadline, origin)))
    }

    /// The third route, after the local handler and the WebSocket peers: a
    /// NATS request, when the node joined NATS and the packet did not come
    /// from there (docs/protocol.md, "NATS").
    #[cfg(feature = "nats")]
    fn over_nats(
        &self,
        packet: Packet,
        deadline: Instant,
        origin: Option<u64>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let link = self.nats.get()?;
        if origin == Some(link.origin.0) {
            return None;
        }
        Some(Box::pin(link.clone().request(packet, deadline)))
    }

    #[cfg(not(feature = "nats"))]
    fn over_nats(
        &self,
        _packet: Packet,
        _deadline: Instant,
        _origin: Option<u64>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        None
    }

    /// Where the actor `packet` is for lives, for a packet that is not run
    /// here; `None` for any other packet.
    fn place_actor(&self, packet: &mut Packet, origin: Option<u64>) -> Option<Placement> {
        let placed = crate::actor::address::placement(packet)?;
        let own = self.reactor.actor_host(placed.actor_type).map(|_| self.node_id.as_str());
        self.peers.read().place_actor(placed.actor_type, placed.id, own, origin, placed.at)
    }

    /// `via`, the peer routing chose for `packet`, or the direct link to
    /// the node that peer would hand it to (docs/protocol.md, "Direct
    /// paths"). An actor message that placement did not send to a peer
    /// stays with `via`.
    fn around_hub(&self, packet: &Packet, via: Arc<Peer>) -> Arc<Peer> {
        if !self.config.direct.enabled
            || !via.takes_direct()
            || crate::actor::address::placement_of(packet).is_some()
        {
            return via;
        }
        self.direct_link_for(packet, &via, None).unwrap_or(via)
    }

    /// `via`, the peer placement chose for an actor message, or the direct
    /// link to the actor's owner when that is a node `beyond` it (the same
    /// node either way); and whether the message goes through `via` when
    /// a direct link could carry its later ones: its sender then counts it
    /// ([`ViaHub`]) until answered.
    fn around_hub_to_actor(
        &self,
        packet: &Packet,
        via: Arc<Peer>,
        beyond: Option<&str>,
    ) -> (Arc<Peer>, bool) {
        match beyond {
            Some(owner) if self.config.direct.enabled && via.takes_direct() => {
                match self.direct_link_for(packet, &via, Some(owner)) {
                    Some(link) => (link, false),
                    None => (via, true),
                }
            }
            _ => (via, false),
        }
    }
}

/// [`forward`] of an actor message placed on `via`: around the hub to its
/// owner `beyond` when a direct link carries it, else through `via`,
/// counted ([`ViaHub`]) until answered.
fn to_actor(
    node: Arc<NodeInner>,
    packet: Packet,
    via: Arc<Peer>,
    beyond: Option<&str>,
    deadline: Instant,
    origin: Option<u64>,
) -> BoxFuture<'static, PacketResult> {
    let (peer, through_hub) = node.around_hub_to_actor(&packet, via, beyond);
    let counted = if through_hub { ViaHub::new(node.clone(), &packet) } else { None };
    Box::pin(async move {
        let _counted = counted;
        forward(node, peer, packet, deadline, origin).await
    })
}

/// [`forward`], counted for the dashboard: the key's latency, and, for a
/// packet this node's own reactor submitted, its failure (a packet from a
/// peer's connection is recorded where that connection answers it).
async fn observed(
    node: Arc<NodeInner>,
    peer: Arc<Peer>,
    packet: Packet,
    deadline: Instant,
    origin: Option<u64>,
) -> PacketResult {
    let start = Instant::now();
    let key = (packet.group, packet.element.clone());
    // A seed peer that lacks the key hands the packet to the next one.
    let served_by = if peer.has_hello() { ServedBy::Peer(peer.id) } else { ServedBy::DefaultRoute };
    let result = forward(node.clone(), peer, packet, deadline, origin).await;
    let recorder = &node.dashboard.recorder;
    recorder.routed(&key, start.elapsed().as_micros() as u64, !result.is_success());
    if let (Err(e), None) = (&result.outcome, origin) {
        let served =
            || dashboard::recorder::served_by(served_by, &|id| dashboard::connection_name(&node, id));
        recorder.failed(&key, &result.packet_id, e, result.duration_ms, || "this node".into(), served);
    }
    result
}

/// Forwards to `peer`; a seed peer (which announced nothing) that answers
/// PF001 is remembered as lacking the key and the next seed peer is tried,
/// so several seed peers on one node each get the packets they serve.
async fn forward(
    node: Arc<NodeInner>,
    mut peer: Arc<Peer>,
    packet: Packet,
    deadline: Instant,
    origin: Option<u64>,
) -> PacketResult {
    let key = (packet.group, packet.element.clone());
    loop {
        if peer.hello().is_some() {
            return forward_to(&node, &peer, packet, deadline).await;
        }
        let result = forward_to(&node, &peer, packet.clone(), deadline).await;
        let lacks_key = result.err().is_some_and(|e| e.is(ErrorCode::NoHandler));
        if peer.learn(key.clone(), !lacks_key) {
            node.bridged_keys_changed();
        }
        if !lacks_key {
            return result;
        }
        let next = node.peers.read().route_element(key.0, &key.1, None, origin);
        match next {
            Some(next) if next.id != peer.id && next.hello().is_none() => peer = next,
            // No seed peer serves the key: the routes beyond the peers
            // may (a seed peer is a default route, not the last word).
            _ => {
                return match node.beyond_peers(packet, deadline, origin) {
                    Some(beyond) => beyond.await,
                    None => result,
                }
            }
        }
    }
}

async fn forward_to(node: &NodeInner, peer: &Peer, packet: Packet, deadline: Instant) -> PacketResult {
    let start = Instant::now();
    let id = packet.id.clone();
    let fail =
        |code: ErrorCode, message: String| PacketResult::error(id.clone(), code, message, since_ms(start));
    let (reply, answer) = oneshot::channel();
    let seq = match send_to(node, peer, Box::new(packet), start, deadline, Reply::Wait(reply)) {
        Ok(seq) => seq,
        Err((code, message)) => return fail(code, message),
    };
    let mut sent = Outstanding { peer, seq, settled: false };
    let answered = tokio::time::timeout_at(deadline, answer).await;
    // Answered, or failed by the peer leaving: nothing to withdraw.
    sent.settled = answered.is_ok();
    drop(sent);
    match answered {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => fail(ErrorCode::Unavailable, format!("peer {} went away", peer.remote)),
        Err(_) => {
            node.deadline_passed(peer, start);
            fail(ErrorCode::Timeout, format!("no answer from peer {} before the deadline", peer.remote))
        }
    }
}

/// A submit sent to a peer through the forwarder, until its answer came:
/// dropped before (the deadline passed, the packet was cancelled, its
/// submitter went away), the submit is withdrawn from the peer.
struct Outstanding<'a> {
    peer: &'a Peer,
    seq: u64,
    settled: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if !self.settled {
            if let Some((packet_id, _)) = self.peer.abandon_submit(self.seq) {
                self.peer.send_cancel(self.seq, &packet_id);
            }
        }
    }
}

/// Sends `packet` to `peer` as one more hop, with what is left of its
/// deadline, its answer to go to `reply`; returns the submit's `seq` on
/// that peer, or the error that answers the packet (`reply` is dropped).
fn send_to(
    node: &NodeInner,
    peer: &Peer,
    mut packet: Box<Packet>,
    start: Instant,
    deadline: Instant,
    reply: Reply,
) -> Result<u64, (ErrorCode, String)> {
    let hops = packet.meta(META_HOPS).and_then(Value::as_u64).unwrap_or(0) + 1;
    if hops > node.config.max_hops {
        let limit = node.config.max_hops;
        return Err((
            ErrorCode::LoopDetected,
            format!("routing loop: the packet exceeded the hop limit of {limit}"),
        ));
    }
    let remaining_ms = deadline.saturating_duration_since(start).as_millis() as u64;
    if remaining_ms == 0 {
        return Err((ErrorCode::Timeout, "no time left to forward the packet".into()));
    }
    // The peer gets what is left of the deadline, and one more hop (written
    // into the metadata as the frame is encoded).
    packet.timeout_ms = Some(remaining_ms.min(crate::packet::MAX_TIMEOUT_MS));
    let Some(seq) = peer.begin_submit(packet.id.clone(), reply, node.config.max_pending_per_peer) else {
        let limit = node.config.max_pending_per_peer;
        return Err((
            ErrorCode::Overloaded,
            format!("peer {} already has {limit} packets in flight", peer.remote),
        ));
    };
    node.dashboard.recorder.sent(&packet, peer.id, start);
    if !peer.send_forward(seq, packet, hops) {
        peer.abandon_submit(seq);
        return Err((ErrorCode::Unavailable, format!("peer {} went away", peer.remote)));
    }
    node.sent_to_peers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(seq)
}

/// What [`NodeInner::relay`] did with a packet.
// The packet is given back by value (no allocation) when declined.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RelayOutcome {
    /// Sent to `peer` as its submit `seq`; the answer will come through
    /// the connection's relay channel, unless the deadline passes first.
    Sent { peer: Arc<Peer>, seq: u64 },
    /// Answered at once (PF409, PF508, PF408, PF429, PF503).
    Answered(PacketResult),
    /// Not for this path: no route (PF001), or a seed peer (whose keys
    /// the reactor's forwarder learns). Submit it through the reactor.
    Declined(Box<Packet>),
}

impl NodeInner {
    /// Forwards a packet that has no local handler (`Immediate::Elsewhere`)
    /// to a peer that announced its key, without a future: the peer's
    /// answer goes straight to the submitting connection `origin` through
    /// `to`, tagged with its `seq` and `size`. Observably the same as the
    /// reactor's forwarder: the same in-flight mark (PF409), hop count,
    /// remaining timeout and errors; the connection enforces the deadline.
    pub(crate) fn relay(
        &self,
        packet: Box<Packet>,
        deadline: Instant,
        origin: Origin,
        seq: u64,
        size: usize,
        to: &Mailbox<RelayAnswer>,
    ) -> RelayOutcome {
        let mut packet = packet;
        if self.reactor.has_builtin(packet.group, packet.element.as_str()) {
            // The reactor decides between a peer's handler and its own
            // standard element (docs/stdlib.md).
            return RelayOutcome::Declined(packet);
        }
        // Placed over the members of a NATS cluster by the reactor's
        // forwarder (docs/protocol.md, "Actors and route keys over NATS").
        #[cfg(feature = "nats")]
        if self.cluster().is_some()
            && (crate::actor::address::placement_of(&packet).is_some()
                || packet.meta(META_ROUTE_KEY).is_some())
        {
            return RelayOutcome::Declined(packet);
        }
        let peer = match self.place_actor(&mut packet, Some(origin.0)) {
            Some(Placement::Peer { via, beyond }) if via.has_hello() => {
                self.around_hub_to_actor(&packet, via, beyond.as_deref()).0
            }
            Some(Placement::Peer { .. }) => return RelayOutcome::Declined(packet),
            _ => {
                let route_key = packet.meta(META_ROUTE_KEY).and_then(Value::as_str);
                let route =
                    self.peers.read().route_element(packet.group, &packet.element, route_key, Some(origin.0));
                match route {
                    Some(peer) if peer.has_hello() => self.around_hub(&packet, peer),
                    _ => return RelayOutcome::Declined(packet),
                }
            }
        };
        let start = Instant::now();
        let Some(guard) = self.reactor.begin_relay(&packet.id, origin) else {
            let message = format!("a packet with id {} is already in flight", packet.id);
            return RelayOutcome::Answered(PacketResult::error(
                packet.id.clone(),
                ErrorCode::DuplicateId,
                message,
                since_ms(start),
            ));
        };
        let id = packet.id.clone();
        let key = (packet.group, packet.element.clone());
        let reply =
            Reply::Relay(ReturnAddress { to: to.clone(), seq, size, start, guard, key, served_by: peer.id });
        match send_to(self, &peer, packet, start, deadline, reply) {
            Ok(seq) => RelayOutcome::Sent { peer, seq },
            Err((code, message)) => {
                RelayOutcome::Answered(PacketResult::error(id, code, message, since_ms(start)))
            }
        }
    }
}

fn since_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
