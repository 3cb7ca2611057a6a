//! The peers a node is connected to, what each announced, and the routing
//! decision of PROTOCOL.md: peers that announced `group:element` (rendezvous
//! hash of `pf.route_key`, else least in flight), else a seed peer (one that
//! never sent `hello`), never the connection the packet came from.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use foldhash::HashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use xxhash_rust::xxh3::xxh3_64;

use super::auth::Grant;
use super::dashboard::recorder::Key;
use super::liveness::Liveness;
use super::mailbox::Mailbox;
use crate::packet::{Element, Group, Packet, PacketId};
use crate::reactor::InflightGuard;
use crate::result::PacketResult;
use crate::wire::{
    ActorHosts, Codec, Hello, Message, Outgoing, FEATURE_CANCEL, FEATURE_DEFAULT_ROUTE, FEATURE_DIRECT,
    FEATURE_NATS,
};

/// Identifies one connection of this node.
pub(crate) type ConnId = u64;

/// A forwarded submit waiting for the peer's answer.
struct PendingSubmit {
    packet_id: PacketId,
    reply: Reply,
}

/// Where the answer to a forwarded submit goes.
pub(crate) enum Reply {
    /// To a future awaiting it (a packet forwarded through the reactor).
    Wait(oneshot::Sender<PacketResult>),
    /// Straight to the connection the packet came in on (a packet relayed
    /// without a future: see `NodeInner::relay`).
    Relay(ReturnAddress),
    /// Nowhere: the connection that relayed the packet is gone (the answer
    /// is still awaited, and dropped when it comes).
    Orphaned,
}

/// Where the answer to a packet relayed for a connection goes back: what
/// that connection needs to answer it, and the in-flight mark the packet
/// holds in the reactor until then.
pub(crate) struct ReturnAddress {
    /// The submitting connection's answers.
    pub(crate) to: Mailbox<RelayAnswer>,
    /// The submit's `seq` on that connection.
    pub(crate) seq: u64,
    /// Bytes charged to the node's queued bytes for it.
    pub(crate) size: usize,
    /// When it was forwarded.
    pub(crate) start: tokio::time::Instant,
    pub(crate) guard: InflightGuard,
    /// Its `group:element` and the peer it went to (for the dashboard).
    pub(crate) key: Key,
    pub(crate) served_by: ConnId,
}

/// The answer to a relayed packet, for the connection it came in on.
pub(crate) struct RelayAnswer {
    pub(crate) seq: u64,
    pub(crate) size: usize,
    pub(crate) result: PacketResult,
    /// When it was forwarded, its key and the peer that answered.
    pub(crate) start: tokio::time::Instant,
    pub(crate) key: Key,
    pub(crate) served_by: ConnId,
}

impl Reply {
    /// Drops a reply whose submitter is gone: a relayed packet's mark ends
    /// as a cancellation (see [`InflightGuard::abandon`]).
    pub(crate) fn abandon(self) {
        if let Reply::Relay(mut address) = self {
            address.guard.abandon();
        }
    }

    /// Hands `result` on. A relayed packet leaves the reactor's in-flight
    /// table here, succeeded or failed as its result says; one cancelled
    /// meanwhile is answered PF499 whatever the peer said.
    pub(crate) fn deliver(self, result: PacketResult) {
        match self {
            Reply::Wait(tx) => {
                let _ = tx.send(result);
            }
            Reply::Relay(ReturnAddress { to, seq, size, mut guard, start, key, served_by }) => {
                let result = if guard.end(result.is_success()) {
                    let error = crate::reactor::cancelled_error(&result.packet_id);
                    PacketResult::failure(result.packet_id, error, start.elapsed().as_millis() as u64)
                } else {
                    result
                };
                // A closed connection released its charged bytes when it ended.
                to.send(RelayAnswer { seq, size, result, start, key, served_by });
            }
            Reply::Orphaned => {}
        }
    }
}

/// The keys a seed peer was seen to serve (true) or to lack (false).
type Learned = HashMap<(Group, Element), bool>;

/// Submits this node sent to the peer and not yet answered, by `seq`, and
/// by packet id for peers that answer with `seq: 0` (the seed's reactor).
#[derive(Default)]
struct Pending {
    by_seq: HashMap<u64, PendingSubmit>,
    by_id: HashMap<PacketId, u64>,
}

/// One connected peer, shared by its connection tasks and the router.
///
/// What only some peers need (submits forwarded to it, what it was last
/// announced, the keys a seed peer was seen to serve) is allocated at its
/// first use: a hub may hold tens of thousands of peers that never need it.
pub(crate) struct Peer {
    pub(crate) id: ConnId,
    /// Where it is: the remote address, or the URL dialed.
    pub(crate) remote: Box<str>,
    /// Frames for the connection's task to write (from other tasks).
    pub(crate) outbox: Mailbox<Outgoing>,
    hello: RwLock<Option<Arc<Hello>>>,
    /// What was last announced to this peer (to skip repeats).
    announced: Mutex<Option<Box<Announcement>>>,
    /// A peer without hello that has sent something, or nothing within
    /// `NodeConfig::seed_peer_grace` of connecting: a seed peer (a
    /// PacketFlow node's first frame is its hello). A later hello still
    /// makes it a node.
    proven_seed: AtomicBool,
    /// For a seed peer (which announces nothing): the keys it was seen to
    /// serve (true) or to lack (false, it answered PF001).
    learned: Mutex<Option<Box<Learned>>>,
    pending: Mutex<Option<Box<Pending>>>,
    in_flight: AtomicUsize,
    next_seq: AtomicU64,
    /// What the peer's token allows, on a listener with auth (unset: all).
    grant: OnceLock<Arc<Grant>>,
    /// The token to put in the first `hello` this node sends (dialed
    /// connections); taken when sent.
    hello_token: Mutex<Option<Box<str>>>,
    /// Alive, suspect or dead, and since when it was heard.
    pub(crate) liveness: Liveness,
    /// When the connection was made (shown by `/health`).
    pub(crate) connected: tokio::time::Instant,
    /// The encoding spoken on the connection (shown by `/health`).
    codec: Codec,
    /// The address of this node's end of the connection, when it is a TCP
    /// socket (an `IpAddr`, not the `SocketAddr`: a peer is kept small).
    local_ip: Option<std::net::IpAddr>,
    /// The connection is TLS.
    secure: bool,
    /// A direct link (docs/protocol.md, "Direct paths"): nothing is routed
    /// through it and what it announces is not passed on.
    direct_link: bool,
    /// Someone asked the connection to close (see `request_close`).
    close_asked: AtomicBool,
    /// Submits this node sent the peer (shown by `/health`).
    submitted: AtomicU64,
}

impl Peer {
    pub(crate) fn new(id: ConnId, remote: String, codec: Codec, outbox: Mailbox<Outgoing>) -> Peer {
        Peer {
            id,
            remote: remote.into_boxed_str(),
            outbox,
            hello: RwLock::new(None),
            announced: Mutex::new(None),
            proven_seed: AtomicBool::new(false),
            learned: Mutex::new(None),
            pending: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            next_seq: AtomicU64::new(1),
            grant: OnceLock::new(),
            hello_token: Mutex::new(None),
            liveness: Liveness::new(tokio::time::Duration::from_secs(30)),
            connected: tokio::time::Instant::now(),
            codec,
            local_ip: None,
            secure: false,
            direct_link: false,
            close_asked: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
        }
    }

    /// What is known of the connection when it starts: this node's end of
    /// it, whether it is TLS, whether it is a direct link.
    pub(crate) fn set_link_facts(
        &mut self,
        local: Option<std::net::SocketAddr>,
        secure: bool,
        direct_link: bool,
    ) {
        self.local_ip = local.map(|a| a.ip());
        self.secure = secure;
        self.direct_link = direct_link;
    }

    pub(crate) fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.local_ip
    }

    pub(crate) fn is_secure(&self) -> bool {
        self.secure
    }

    /// Whether the connection is a direct link (see `direct`).
    pub(crate) fn is_direct_link(&self) -> bool {
        self.direct_link
    }

    /// Asks the connection to close (1001) once what is queued is written;
    /// what the peer still holds is then answered PF503.
    pub(crate) fn request_close(&self) {
        if !self.close_asked.swap(true, Ordering::AcqRel) {
            // Wakes the connection's task, which then sees the request.
            self.send(Message::Heartbeat { seq: 0, timestamp: super::conn::epoch_ms() });
        }
    }

    pub(crate) fn close_asked(&self) -> bool {
        self.close_asked.load(Ordering::Acquire)
    }

    /// Submits this node sent the peer so far.
    pub(crate) fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Whether the peer takes part in direct paths (its `hello` lists the
    /// feature `direct`).
    pub(crate) fn takes_direct(&self) -> bool {
        self.hello.read().as_ref().is_some_and(|h| h.has_feature(FEATURE_DIRECT))
    }

    /// The connection's encoding.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// Records what the peer's token allows (once, when it is admitted).
    pub(crate) fn set_grant(&self, grant: Arc<Grant>) {
        let _ = self.grant.set(grant);
    }

    pub(crate) fn grant(&self) -> Option<&Arc<Grant>> {
        self.grant.get()
    }

    /// Whether this peer may be sent `group:element` to serve.
    pub(crate) fn may_serve(&self, group: Group, element: &str) -> bool {
        self.grant.get().is_none_or(|g| g.may_serve(group, element))
    }

    pub(crate) fn set_hello_token(&self, token: Option<String>) {
        *self.hello_token.lock() = token.map(String::into_boxed_str);
    }

    pub(crate) fn take_hello_token(&self) -> Option<String> {
        self.hello_token.lock().take().map(String::from)
    }

    pub(crate) fn hello(&self) -> Option<Arc<Hello>> {
        self.hello.read().clone()
    }

    /// Whether the peer sent `hello` (a PacketFlow node, not a seed peer).
    pub(crate) fn has_hello(&self) -> bool {
        self.hello.read().is_some()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn send(&self, message: Message) -> bool {
        self.outbox.send(Outgoing::Message(message))
    }

    /// Whether the peer takes `cancel` frames (its `hello` lists the
    /// feature; a seed peer never does).
    pub(crate) fn takes_cancel(&self) -> bool {
        self.hello.read().as_ref().is_some_and(|h| h.has_feature(FEATURE_CANCEL))
    }

    /// Withdraws our submit `seq` of `packet_id` on the peer, if it takes
    /// cancels (the submit must already be forgotten here: its PF499
    /// answer finds nothing waiting).
    pub(crate) fn send_cancel(&self, seq: u64, packet_id: &PacketId) {
        if self.takes_cancel() {
            self.send(Message::Cancel { seq, packet_id: packet_id.clone() });
        }
    }

    /// Sends `packet` as submit `seq` with `metadata["pf.hops"] = hops`.
    pub(crate) fn send_forward(&self, seq: u64, packet: Box<Packet>, hops: u64) -> bool {
        self.outbox.send(Outgoing::Forward { seq, packet, hops })
    }

    /// Registers a forwarded submit and returns its `seq`, or `None` when
    /// the peer already has `limit` of ours in flight.
    pub(crate) fn begin_submit(&self, packet_id: PacketId, reply: Reply, limit: usize) -> Option<u64> {
        let mut pending = self.pending.lock();
        let pending = pending.get_or_insert_with(Box::default);
        if pending.by_seq.len() >= limit {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        pending.by_id.insert(packet_id.clone(), seq);
        pending.by_seq.insert(seq, PendingSubmit { packet_id, reply });
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.submitted.fetch_add(1, Ordering::Relaxed);
        Some(seq)
    }

    /// The packet id of the pending submit with this `seq`.
    pub(crate) fn pending_id(&self, seq: u64) -> Option<PacketId> {
        self.pending.lock().as_ref()?.by_seq.get(&seq).map(|p| p.packet_id.clone())
    }

    /// Forgets a forwarded submit whose submitter stopped waiting; gives
    /// back its packet id and reply, if it was still pending.
    pub(crate) fn abandon_submit(&self, seq: u64) -> Option<(PacketId, Reply)> {
        let mut guard = self.pending.lock();
        let pending = guard.as_mut()?;
        let p = pending.by_seq.remove(&seq)?;
        pending.by_id.remove(&p.packet_id);
        drop(guard);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        Some((p.packet_id, p.reply))
    }

    /// Detaches the submit `seq` from the connection that relayed it (which
    /// is gone): its in-flight mark in the reactor ends now, a cancellation
    /// to its dependents, as when a forwarding future is dropped. A peer
    /// that takes cancels is sent one and the submit is forgotten; with
    /// another, it stays pending until answered. Returns whether it was
    /// still pending.
    pub(crate) fn orphan(&self, seq: u64) -> bool {
        if self.takes_cancel() {
            let Some((packet_id, reply)) = self.abandon_submit(seq) else { return false };
            self.send_cancel(seq, &packet_id);
            reply.abandon();
            return true;
        }
        let detached = match self.pending.lock().as_mut().and_then(|p| p.by_seq.get_mut(&seq)) {
            Some(p) if matches!(p.reply, Reply::Relay(_)) => std::mem::replace(&mut p.reply, Reply::Orphaned),
            _ => return false,
        };
        detached.abandon();
        true
    }

    /// Takes the pending submit of `packet_id` if it was relayed for a
    /// connection (see `NodeInner::relay`): its `seq` and its way back.
    pub(crate) fn take_relayed(&self, packet_id: &PacketId) -> Option<(u64, Reply)> {
        let mut guard = self.pending.lock();
        let pending = guard.as_mut()?;
        let seq = *pending.by_id.get(packet_id)?;
        if !pending.by_seq.get(&seq).is_some_and(|p| matches!(p.reply, Reply::Relay(_))) {
            return None;
        }
        let p = pending.by_seq.remove(&seq)?;
        pending.by_id.remove(packet_id);
        drop(guard);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        Some((seq, p.reply))
    }

    /// Whether the forwarded submit `seq` still waits for its answer.
    pub(crate) fn is_pending(&self, seq: u64) -> bool {
        self.pending.lock().as_ref().is_some_and(|p| p.by_seq.contains_key(&seq))
    }

    /// Delivers an answer. The `seq` wins when it names a pending submit of
    /// that packet; otherwise (seq 0, or a peer that does not echo it) the
    /// packet id decides. Returns false when nothing was waiting.
    pub(crate) fn complete(&self, seq: u64, packet_id: Option<&PacketId>, result: PacketResult) -> bool {
        match self.take_pending(seq, packet_id) {
            Some(reply) => {
                reply.deliver(result);
                true
            }
            None => false,
        }
    }

    /// [`complete`](Self::complete) with the packet id the result carries.
    pub(crate) fn complete_result(&self, seq: u64, result: PacketResult) -> bool {
        match self.take_pending(seq, Some(&result.packet_id)) {
            Some(reply) => {
                reply.deliver(result);
                true
            }
            None => false,
        }
    }

    /// Removes the pending submit an answer (`seq`, `packet_id`) is for.
    fn take_pending(&self, seq: u64, packet_id: Option<&PacketId>) -> Option<Reply> {
        let mut guard = self.pending.lock();
        let pending = guard.as_mut()?;
        let by_seq_matches =
            pending.by_seq.get(&seq).is_some_and(|p| packet_id.is_none_or(|id| *id == p.packet_id));
        let seq = if by_seq_matches { seq } else { *packet_id.and_then(|id| pending.by_id.get(id))? };
        let p = pending.by_seq.remove(&seq)?;
        pending.by_id.remove(&p.packet_id);
        drop(guard);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        Some(p.reply)
    }

    /// Answers every pending submit with `make(packet_id)` (peer lost).
    pub(crate) fn fail_all(&self, make: impl Fn(PacketId) -> PacketResult) {
        let taken = self.pending.lock().take();
        self.in_flight.store(0, Ordering::Relaxed);
        let Some(pending) = taken else { return };
        for PendingSubmit { packet_id, reply } in pending.by_seq.into_values() {
            reply.deliver(make(packet_id));
        }
    }

    /// Gives back the table of forwarded submits if none waits (its
    /// connection went idle).
    pub(crate) fn release_idle_memory(&self) {
        let mut pending = self.pending.lock();
        if pending.as_ref().is_some_and(|p| p.by_seq.is_empty()) {
            *pending = None;
        }
    }

    /// Records what this node last announced to the peer; false if it is
    /// the same as before (no need to send it again).
    pub(crate) fn note_announced(&self, announcement: &Announcement) -> bool {
        let mut last = self.announced.lock();
        if last.as_deref() == Some(announcement) {
            return false;
        }
        *last = Some(Box::new(announcement.clone()));
        true
    }

    /// Notes that the peer showed itself as a seed peer (a frame before any
    /// hello, or no hello within the grace period); true the first time,
    /// for a peer still without hello (it just became a proven seed peer).
    pub(crate) fn note_seed(&self) -> bool {
        !self.direct_link
            && !self.proven_seed.load(Ordering::Relaxed)
            && self.hello.read().is_none()
            && !self.proven_seed.swap(true, Ordering::Relaxed)
    }

    /// Remembers whether this seed peer serves `key` (bounded: forgets
    /// everything past 4096 keys and starts over). True when the keys it
    /// is known to serve changed (a node on NATS serves those there).
    pub(crate) fn learn(&self, key: (Group, Element), serves: bool) -> bool {
        let mut learned = self.learned.lock();
        let learned = learned.get_or_insert_with(Box::default);
        if learned.len() >= 4096 && !learned.contains_key(&key) {
            let had_serving = learned.values().any(|s| *s);
            learned.clear();
            learned.insert(key, serves);
            return had_serving || serves;
        }
        let served_before = learned.insert(key, serves) == Some(true);
        served_before != serves
    }

    /// Whether this seed peer was seen to serve some key.
    pub(crate) fn serves_some_key(&self) -> bool {
        self.learned.lock().as_ref().is_some_and(|l| l.values().any(|s| *s))
    }

    /// Whether the peer is a node on NATS (its `hello` lists the feature
    /// `nats`).
    pub(crate) fn is_on_nats(&self) -> bool {
        self.hello.read().as_ref().is_some_and(|h| h.has_feature(FEATURE_NATS))
    }

    fn serves(&self, key: &(Group, Element)) -> Option<bool> {
        self.learned.lock().as_ref()?.get(key).copied()
    }

    pub(crate) fn is_proven_seed(&self) -> bool {
        self.proven_seed.load(Ordering::Relaxed) && self.hello.read().is_none()
    }
}

/// What a node announces to one peer: the keys it can serve or route,
/// whether it has a default route (a seed peer) for everything else, and
/// the actor hosts reachable through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    pub(crate) keys: BTreeSet<(Group, Element)>,
    /// Standard elements hosted here or reached through other peers.
    pub(crate) stdlib: BTreeSet<(Group, Element)>,
    pub(crate) default_route: bool,
    /// This node is on NATS (the feature `nats`).
    pub(crate) nats: bool,
    pub(crate) actor_hosts: ActorHosts,
    /// What it may dial directly (docs/protocol.md, "Direct paths").
    pub(crate) direct: Option<Box<crate::wire::DirectHello>>,
}

/// A node hosting an actor type, as reached through one peer.
struct HostPath {
    node_id: String,
    via: ConnId,
    /// Hops from this node (1: the peer itself).
    hops: u64,
}

/// Where an actor lives, as this node sees the hosts of its type.
pub(crate) enum Placement {
    /// On this node.
    Here,
    /// On a node reached through this peer; `beyond` names that node when
    /// it is not the peer itself (a hub between them: a direct path may go
    /// around it).
    Peer { via: Arc<Peer>, beyond: Option<Box<str>> },
}

/// Every connected peer and the route index built from their hellos.
///
/// The peers that sent `hello` (nodes) are also kept apart: a hub may hold
/// tens of thousands of clients that never do, and what concerns nodes only
/// (announcing routes, indexing them) must not walk those each time one
/// connects.
#[derive(Default)]
pub(crate) struct PeerTable {
    peers: HashMap<ConnId, Arc<Peer>>,
    nodes: HashMap<ConnId, Arc<Peer>>,
    by_key: HashMap<(Group, Element), Vec<ConnId>>,
    /// The peers offering each standard element (their `hello.stdlib`).
    by_stdlib: HashMap<(Group, Element), Vec<ConnId>>,
    /// Per actor type, the hosting nodes reachable through each peer.
    actor_paths: HashMap<String, Vec<HostPath>>,
}

impl PeerTable {
    pub(crate) fn insert(&mut self, peer: Arc<Peer>) {
        self.peers.insert(peer.id, peer);
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Arc<Peer>> {
        let peer = self.peers.remove(&id)?;
        if self.nodes.remove(&id).is_some() {
            self.reindex();
        }
        // Sized on demand: once most of the peers that grew the table are
        // gone, its memory goes too (halving at a quarter full keeps the
        // cost amortized).
        if self.peers.capacity() > 64 && self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to(self.peers.len() * 2);
        }
        Some(peer)
    }

    /// Stores a peer's (new) hello and rebuilds the route index.
    pub(crate) fn set_hello(&mut self, id: ConnId, hello: Hello) {
        if let Some(peer) = self.peers.get(&id) {
            *peer.hello.write() = Some(Arc::new(hello));
            self.nodes.insert(id, peer.clone());
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.by_key.clear();
        self.by_stdlib.clear();
        self.actor_paths.clear();
        // A direct link's announcements stay off the routes: it carries
        // only its dialer's packets for its node's own handlers.
        for peer in self.nodes.values().filter(|p| !p.direct_link) {
            if let Some(hello) = peer.hello.read().as_ref() {
                for key in &hello.handlers {
                    self.by_key.entry(key.clone()).or_default().push(peer.id);
                }
                for key in &hello.stdlib {
                    self.by_stdlib.entry(key.clone()).or_default().push(peer.id);
                }
                for (actor_type, nodes) in &hello.actor_hosts {
                    let paths = self.actor_paths.entry(actor_type.clone()).or_default();
                    for (node_id, hops) in nodes {
                        paths.push(HostPath {
                            node_id: node_id.clone(),
                            via: peer.id,
                            hops: hops.saturating_add(1),
                        });
                    }
                }
            }
        }
    }

    /// The actor hosts to announce to `peer`: every host learned from the
    /// other peers, at its nearest distance, except `peer`'s own node and
    /// those past `max_hops` (so a host that left is forgotten after a
    /// bounded number of rounds, whatever the topology).
    pub(crate) fn actor_hosts_for(&self, peer: &Peer, max_hops: u64) -> ActorHosts {
        let peer_node = peer.hello().map(|h| h.node_id.clone()).unwrap_or_default();
        let mut hosts = ActorHosts::new();
        for (actor_type, paths) in &self.actor_paths {
            for path in
                paths.iter().filter(|p| p.via != peer.id && p.node_id != peer_node && p.hops <= max_hops)
            {
                let hops = hosts
                    .entry(actor_type.clone())
                    .or_default()
                    .entry(path.node_id.clone())
                    .or_insert(path.hops);
                *hops = (*hops).min(path.hops);
            }
        }
        hosts
    }

    /// The node ids known to host `actor_type` through some peer.
    pub(crate) fn actor_host_ids(&self, actor_type: &str) -> Vec<String> {
        self.actor_paths.get(actor_type).into_iter().flatten().map(|p| p.node_id.clone()).collect()
    }

    /// Places the actor `actor_type/id`: the host of highest rendezvous
    /// score among every node known to host its type (this one too, as
    /// `own`, when it does), and the nearest peer toward it (never
    /// `origin`). A message forwarded to an actor that migrated names the
    /// node it is delivered at (`at`): that node instead, while it is known
    /// to host the type. `None` when no host is known, or the owner can
    /// only be reached back through `origin` and this node does not host
    /// the type (views disagree while announcements travel).
    pub(crate) fn place_actor(
        &self,
        actor_type: &str,
        id: &str,
        own: Option<&str>,
        origin: Option<ConnId>,
        at: Option<&str>,
    ) -> Option<Placement> {
        if let Some(node) = at {
            if Some(node) == own {
                return Some(Placement::Here);
            }
            if let Some(placed) = self.toward_host(actor_type, node, origin) {
                return Some(placed);
            }
            // Not (or no longer) known to host the type: placement decides.
        }
        let owner = self.actor_owner(actor_type, id, own)?;
        if Some(owner) == own {
            return Some(Placement::Here);
        }
        match self.toward_host(actor_type, owner, origin) {
            Some(placed) => Some(placed),
            None if own.is_some() => Some(Placement::Here),
            None => None,
        }
    }

    /// The nearest peer (not `origin`) through which `node`, a host of
    /// `actor_type`, is reached; `None` when there is none.
    pub(crate) fn toward_host(
        &self,
        actor_type: &str,
        node: &str,
        origin: Option<ConnId>,
    ) -> Option<Placement> {
        let paths = self.actor_paths.get(actor_type).map(Vec::as_slice).unwrap_or_default();
        let (hops, peer) = paths
            .iter()
            .filter(|p| p.node_id == node && Some(p.via) != origin)
            .filter_map(|p| self.peers.get(&p.via).map(|peer| (p.hops, peer)))
            .min_by_key(|(hops, peer)| (peer.liveness.is_suspect(), *hops, peer.in_flight()))?;
        let beyond = (hops > 1).then(|| Box::from(node));
        Some(Placement::Peer { via: peer.clone(), beyond })
    }

    /// Whether `node` is known, through some peer, to host `actor_type`.
    pub(crate) fn hosts_actor_type(&self, actor_type: &str, node: &str) -> bool {
        self.actor_paths.get(actor_type).is_some_and(|paths| paths.iter().any(|p| p.node_id == node))
    }

    /// Whether `node` is a peer's (that sent hello) or a host of some actor
    /// type known through a peer: a node this one has heard of.
    pub(crate) fn knows_node(&self, node: &str) -> bool {
        self.nodes.values().any(|p| p.hello().is_some_and(|h| h.node_id == node))
            || self.actor_paths.values().flatten().any(|p| p.node_id == node)
    }

    /// The node that owns the actor `actor_type/id`: the host of highest
    /// rendezvous score among every node known to host its type (`own`
    /// too, this node's id when it hosts the type).
    pub(crate) fn actor_owner<'a>(
        &'a self,
        actor_type: &str,
        id: &str,
        own: Option<&'a str>,
    ) -> Option<&'a str> {
        let paths = self.actor_paths.get(actor_type).map(Vec::as_slice).unwrap_or_default();
        let hosts = || paths.iter().map(|p| p.node_id.as_str()).chain(own);
        let first = hosts().next()?;
        // One host (the usual case with one node per type, however many
        // paths lead to it) owns every actor: nothing to score.
        if hosts().all(|node| node == first) {
            return Some(first);
        }
        hosts().max_by_key(|node| host_score(actor_type, id, node))
    }

    /// The connected peer `id`.
    pub(crate) fn get(&self, id: ConnId) -> Option<&Arc<Peer>> {
        self.peers.get(&id)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.peers.values()
    }

    /// The peers that sent `hello`.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.nodes.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Keys announced by any peer other than `except`.
    pub(crate) fn keys_except(&self, except: ConnId) -> impl Iterator<Item = &(Group, Element)> {
        self.by_key.iter().filter(move |(_, ids)| ids.iter().any(|id| *id != except)).map(|(k, _)| k)
    }

    /// The standard elements peers other than `except` offer.
    pub(crate) fn stdlib_keys_except(&self, except: ConnId) -> impl Iterator<Item = &(Group, Element)> {
        self.by_stdlib.iter().filter(move |(_, ids)| ids.iter().any(|id| *id != except)).map(|(k, _)| k)
    }

    /// Picks the peer for `group:element` (see the module docs).
    pub(crate) fn route(
        &self,
        group: Group,
        element: &str,
        route_key: Option<&str>,
        origin: Option<ConnId>,
    ) -> Option<Arc<Peer>> {
        self.route_element(group, &Element::new(element).ok()?, route_key, origin)
    }

    /// Whether a peer other than `origin` announced `group:element`.
    pub(crate) fn announces(&self, group: Group, element: &str, origin: Option<ConnId>) -> bool {
        let Ok(element) = Element::new(element) else { return false };
        self.by_key.get(&(group, element)).is_some_and(|ids| ids.iter().any(|id| Some(*id) != origin))
    }

    /// The peers that announced `group:element` (direct links never do).
    pub(crate) fn announcing(&self, group: Group, element: &str) -> impl Iterator<Item = &Arc<Peer>> {
        let ids = Element::new(element).ok().and_then(|e| self.by_key.get(&(group, e)));
        ids.into_iter().flatten().filter_map(|id| self.peers.get(id))
    }

    /// [`route`](Self::route) for an element already checked (a packet's).
    pub(crate) fn route_element(
        &self,
        group: Group,
        element: &Element,
        route_key: Option<&str>,
        origin: Option<ConnId>,
    ) -> Option<Arc<Peer>> {
        let key = (group, element.clone());
        let element = element.as_str();
        let announced = self
            .by_key
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|id| Some(**id) != origin)
            .filter_map(|id| self.peers.get(id));
        // A suspect peer gets nothing while another can take the packet:
        // a route key then moves to its next rendezvous choice.
        let any_trusted = announced.clone().any(|p| !p.liveness.is_suspect());
        let candidates = announced.filter(|p| !any_trusted || !p.liveness.is_suspect());
        let chosen = match route_key {
            Some(rk) => candidates.max_by_key(|p| rendezvous_score(rk, p)),
            None => candidates.min_by_key(|p| p.in_flight()),
        };
        chosen
            .or_else(|| {
                // A standard element a peer offers (docs/stdlib.md): only
                // for a key no peer announced a handler of.
                self.by_stdlib
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|id| Some(**id) != origin)
                    .filter_map(|id| self.peers.get(id))
                    .min_by_key(|p| (p.liveness.is_suspect(), p.in_flight()))
            })
            .or_else(|| {
                // The default route: a peer that never announced anything.
                // One seen serving the key first, one that answered PF001
                // for it never, the least busy among the rest.
                // A peer without hello serves only what its token allows
                // (announced keys were filtered when its hello arrived).
                self.peers
                    .values()
                    .filter(|p| Some(p.id) != origin && !p.direct_link && p.hello.read().is_none())
                    .filter(|p| p.may_serve(group, element))
                    .filter_map(|p| match p.serves(&key) {
                        Some(false) => None,
                        Some(true) => Some((0, p.in_flight(), p)),
                        None => Some((1, p.in_flight(), p)),
                    })
                    .min_by_key(|(rank, in_flight, p)| (p.liveness.is_suspect(), *rank, *in_flight))
                    .map(|(_, _, p)| p)
            })
            .or_else(|| {
                // Else a node that has such a default route itself (a hub
                // with seed peers), so spokes reach seed peers through it.
                self.nodes
                    .values()
                    .filter(|p| Some(p.id) != origin && !p.direct_link)
                    .filter(|p| p.hello.read().as_ref().is_some_and(|h| h.has_feature(FEATURE_DEFAULT_ROUTE)))
                    .filter(|p| p.may_serve(group, element))
                    .min_by_key(|p| (p.liveness.is_suspect(), p.in_flight()))
            })
            .cloned()
    }

    /// The keys this node serves on NATS for its peers (docs/protocol.md,
    /// "NATS", "Bridging"): those announced by peers that are not on NATS
    /// themselves (their `hello` lacks the feature `nats`), and those seed
    /// peers were seen to serve. Direct links carry only their dialer's
    /// packets: never theirs.
    pub(crate) fn bridged_keys(&self) -> BTreeSet<(Group, Element)> {
        let mut keys = BTreeSet::new();
        for peer in self.nodes.values().filter(|p| !p.direct_link && !p.is_on_nats()) {
            if let Some(hello) = peer.hello.read().as_ref() {
                keys.extend(hello.handlers.iter().cloned());
            }
        }
        for peer in self.peers.values().filter(|p| !p.direct_link && !p.has_hello()) {
            if let Some(learned) = peer.learned.lock().as_ref() {
                let served = learned.iter().filter(|(_, serves)| **serves).map(|(key, _)| key);
                keys.extend(served.filter(|(g, e)| peer.may_serve(*g, e.as_str())).cloned());
            }
        }
        keys
    }

    /// A node on NATS (its `hello` lists `nats`) to send a packet nothing
    /// else takes, for a node that is not on NATS itself: the least busy
    /// one, never `origin`, never a direct link.
    pub(crate) fn toward_nats(
        &self,
        group: Group,
        element: &str,
        origin: Option<ConnId>,
    ) -> Option<Arc<Peer>> {
        self.nodes
            .values()
            .filter(|p| Some(p.id) != origin && !p.direct_link && p.is_on_nats())
            .filter(|p| p.may_serve(group, element))
            .min_by_key(|p| (p.liveness.is_suspect(), p.in_flight()))
            .cloned()
    }

    /// For each announced key, the node ids of the peers other than
    /// `except` that announced it: the candidates routing picks among.
    pub(crate) fn candidates_except(&self, except: ConnId) -> Vec<(&(Group, Element), Vec<String>)> {
        self.by_key
            .iter()
            .filter_map(|(key, ids)| {
                let nodes: Vec<String> = ids
                    .iter()
                    .filter(|id| **id != except)
                    .filter_map(|id| self.peers.get(id)?.hello().map(|h| h.node_id.clone()))
                    .collect();
                (!nodes.is_empty()).then_some((key, nodes))
            })
            .collect()
    }

    /// Whether a proven seed peer other than `except` is connected.
    pub(crate) fn has_seed_except(&self, except: ConnId) -> bool {
        self.peers.values().any(|p| p.id != except && p.is_proven_seed())
    }
}

/// Highest random weight of (placement key `type/id`, host node id): every
/// node that knows the same hosts picks the same one, and an actor moves
/// only when its host leaves (or a new host outscores it).
pub(crate) fn host_score(actor_type: &str, id: &str, node_id: &str) -> u64 {
    hash_parts(&[actor_type.as_bytes(), b"/", id.as_bytes(), b"\0", node_id.as_bytes()])
}

/// Highest random weight of (route key, peer): the same key keeps going to
/// the same peer while it is connected, and moves only if that peer leaves.
fn rendezvous_score(route_key: &str, peer: &Peer) -> u64 {
    let hello = peer.hello.read();
    rendezvous(route_key, hello.as_ref().map_or("", |h| h.node_id.as_str()))
}

/// The rendezvous weight of (route key, node id): what a node going
/// direct computes to pick the node its hub would pick.
pub(crate) fn rendezvous(route_key: &str, node_id: &str) -> u64 {
    hash_parts(&[route_key.as_bytes(), b"\0", node_id.as_bytes()])
}

/// A number that stands for the actor `actor_type`/`id` (collisions only
/// make two actors share what is counted under it).
pub(crate) fn actor_key(actor_type: &str, id: &str) -> u64 {
    hash_parts(&[actor_type.as_bytes(), b"\0", id.as_bytes()])
}

/// The xxh3 hash of `parts` laid end to end, put together on the stack
/// when they fit (a placement is computed for every actor packet).
fn hash_parts(parts: &[&[u8]]) -> u64 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut stack = [0u8; 512];
    let mut heap;
    let bytes = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap = vec![0u8; len];
        &mut heap[..]
    };
    let mut at = 0;
    for part in parts {
        bytes[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection has a peer, in an `Arc`: at most 240 bytes with
    /// the `Arc`'s counts take an allocation of 256, one byte more 320
    /// (`cli/tests/idle_connections.rs`).
    #[test]
    fn a_peer_fits_an_allocation_of_256_bytes() {
        let size = std::mem::size_of::<Peer>();
        assert!(size <= 240, "a peer takes {size} bytes");
    }

    fn peer(id: ConnId, handlers: Option<&[&str]>, table: &mut PeerTable) -> Arc<Peer> {
        let (tx, _rx) = crate::net::mailbox::mailbox();
        let p = Arc::new(Peer::new(id, format!("peer{id}"), Codec::Json, tx));
        table.insert(p.clone());
        if let Some(keys) = handlers {
            let handlers = keys
                .iter()
                .map(|k| {
                    let (g, e) = k.split_once(':').unwrap();
                    (Group::parse(g).unwrap(), Element::new(e).unwrap())
                })
                .collect();
            table.set_hello(id, Hello { node_id: format!("node-{id}"), handlers, ..Hello::default() });
        }
        p
    }

    #[test]
    fn announced_peers_first_then_seed_peers_never_the_origin() {
        let mut t = PeerTable::default();
        peer(1, Some(&["df:a"]), &mut t);
        peer(2, None, &mut t);
        assert_eq!(t.route(Group::DataFlow, "a", None, None).unwrap().id, 1);
        assert_eq!(t.route(Group::DataFlow, "b", None, None).unwrap().id, 2);
        assert_eq!(t.route(Group::DataFlow, "a", None, Some(1)).unwrap().id, 2);
        assert!(t.route(Group::DataFlow, "b", None, Some(2)).is_none());
    }

    #[test]
    fn keys_of_peers_off_nats_and_served_by_seed_peers_are_bridged() {
        let mut t = PeerTable::default();
        peer(1, Some(&["df:a"]), &mut t);
        peer(2, Some(&["df:b"]), &mut t);
        let on_nats = Hello {
            node_id: "node-2".into(),
            handlers: vec![(Group::DataFlow, Element::new("b").unwrap())],
            features: vec![FEATURE_NATS.into()],
            ..Hello::default()
        };
        t.set_hello(2, on_nats);
        let seed = peer(3, None, &mut t);
        let key = |e: &str| (Group::DataFlow, Element::new(e).unwrap());
        assert!(seed.learn(key("c"), true), "a key served is news");
        assert!(!seed.learn(key("c"), true), "the same again is not");
        assert!(!seed.learn(key("d"), false), "a key lacked changes nothing served");
        assert!(seed.serves_some_key());
        let bridged: Vec<_> = t.bridged_keys().into_iter().collect();
        assert_eq!(bridged, [key("a"), key("c")]);
        assert!(seed.learn(key("c"), false), "a key no longer served is news");
        assert_eq!(t.bridged_keys().into_iter().collect::<Vec<_>>(), [key("a")]);

        // Off NATS, what nothing else takes goes to the peer on NATS,
        // never back where it came from.
        assert_eq!(t.toward_nats(Group::DataFlow, "z", None).unwrap().id, 2);
        assert!(t.toward_nats(Group::DataFlow, "z", Some(2)).is_none());
    }

    #[test]
    fn least_in_flight_without_a_route_key() {
        let mut t = PeerTable::default();
        let a = peer(1, Some(&["df:a"]), &mut t);
        peer(2, Some(&["df:a"]), &mut t);
        let (tx, _rx) = oneshot::channel();
        a.begin_submit(PacketId::new("x").unwrap(), Reply::Wait(tx), 10).unwrap();
        assert_eq!(t.route(Group::DataFlow, "a", None, None).unwrap().id, 2);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_keys_of_a_leaving_peer() {
        let mut t = PeerTable::default();
        for id in 1..=4 {
            peer(id, Some(&["df:a"]), &mut t);
        }
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let before: Vec<ConnId> =
            keys.iter().map(|k| t.route(Group::DataFlow, "a", Some(k), None).unwrap().id).collect();
        let again: Vec<ConnId> =
            keys.iter().map(|k| t.route(Group::DataFlow, "a", Some(k), None).unwrap().id).collect();
        assert_eq!(before, again);
        assert!((1..=4).all(|id| before.contains(&id)), "keys spread over all peers");
        t.remove(3);
        for (k, old) in keys.iter().zip(&before) {
            let new = t.route(Group::DataFlow, "a", Some(k), None).unwrap().id;
            if *old != 3 {
                assert_eq!(new, *old, "a key whose peer stayed does not move");
            }
        }
    }

    #[test]
    fn answers_match_by_seq_or_by_packet_id() {
        let mut t = PeerTable::default();
        let p = peer(1, None, &mut t);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let id1 = PacketId::new("one").unwrap();
        let id2 = PacketId::new("two").unwrap();
        let s1 = p.begin_submit(id1.clone(), Reply::Wait(tx1), 10).unwrap();
        p.begin_submit(id2.clone(), Reply::Wait(tx2), 10).unwrap();
        // A seed peer answers with seq 0: matched by packet id.
        assert!(p.complete(0, Some(&id2), PacketResult::success(id2.clone(), 2.into(), 0)));
        assert_eq!(rx2.try_recv().unwrap().outcome, Ok(2.into()));
        assert!(p.complete(s1, Some(&id1), PacketResult::success(id1.clone(), 1.into(), 0)));
        assert!(rx1.try_recv().is_ok());
        assert!(!p.complete(s1, Some(&id1), PacketResult::success(id1.clone(), 1.into(), 0)));
        assert_eq!(p.in_flight(), 0);
    }
}
