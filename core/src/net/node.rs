//! The [`Node`] handle and the state its connections share
//! ([`NodeInner`]): the peer table, counters, the stop signal, and what the
//! node announces to its peers in `hello`.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout, Duration, Instant};

use super::config::NodeConfig;
use super::direct::DirectPaths;
use super::forward::Router;
use super::host_view::HostView;
use super::liveness::PeerEvents;
use super::options::{ConnectOptions, ListenOptions};
use super::peers::{Announcement, Peer, PeerTable};
use super::socket::HasSocket;
use super::{busy_poll, dashboard, dialer, listener, metrics};
use crate::error::PfError;
use crate::packet::{Element, Group, PROTOCOL_VERSION};
use crate::reactor::Reactor;
use crate::wire::{
    Hello, Message, FEATURE_BATCH, FEATURE_CANCEL, FEATURE_DEFAULT_ROUTE, FEATURE_DIRECT, FEATURE_MSGPACK,
    FEATURE_NATS,
};

/// Ready when a connection is over.
pub(super) type Ended = BoxFuture<'static, ()>;

/// What every part of a node shares: its connections, listeners, dialers
/// and router each hold one.
pub(crate) struct NodeInner {
    pub(crate) reactor: Reactor,
    pub(crate) config: NodeConfig,
    pub(crate) node_id: String,
    pub(crate) peers: RwLock<PeerTable>,
    conn_ids: AtomicU64,
    stopped: AtomicBool,
    stop_signal: Notify,
    live_connections: AtomicUsize,
    all_closed: Notify,
    pub(super) started: Instant,
    pub(super) listening: Mutex<Vec<SocketAddr>>,
    /// Bumped whenever a peer's announced routes change.
    routes_version: tokio::sync::watch::Sender<u64>,
    /// Connections the listeners hold (bounded by `max_connections`).
    pub(super) accepted: AtomicUsize,
    /// Connections being answered 503 (bounded by `MAX_REFUSING`).
    pub(super) refusing: AtomicUsize,
    /// Bytes of submits held for packets in flight (`max_queued_bytes`).
    pub(crate) queued_bytes: AtomicUsize,
    /// Set unless the connections run on a spawner; spinning only while
    /// its window (`NodeConfig::busy_poll`, `mc:tune busy_poll_us`) is not
    /// zero.
    pub(crate) busy_poll: Option<Arc<busy_poll::BusyPoll>>,
    /// Suspicions and deaths of peers.
    pub(crate) peer_events: PeerEvents,
    /// What the dashboard shows, and its record of failures and hops.
    pub(crate) dashboard: dashboard::Dashboard,
    /// Per actor type this node hosts, the other hosting nodes it last
    /// knew of (sorted): a change hands actors over (see `routes_changed`).
    actor_host_view: HostView,
    /// Direct links and what this node knows to make them (see `direct`).
    pub(crate) direct: DirectPaths,
    /// The locks and leases granted to each connection's peer (see `holds`).
    pub(crate) holds: super::holds::NodeHolds,
    /// Submits sent to WebSocket peers (forwarded or relayed), for
    /// `/metrics`' count per route.
    pub(crate) sent_to_peers: AtomicU64,
    /// The connection to NATS, once joined (see `nats`).
    #[cfg(feature = "nats")]
    pub(crate) nats: std::sync::OnceLock<Arc<super::nats::NatsLink>>,
}

/// A reactor on the network: listens, dials, routes. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// Puts `reactor` on the network. Must be called inside a Tokio runtime
    /// (a task re-announces handlers to peers when they change).
    pub fn new(reactor: Reactor, config: NodeConfig) -> Node {
        // Off (a zero window) unless configured; `mc:tune` may turn it on.
        let busy_poll = match (config.busy_poll, &config.spawner) {
            (window, None) => {
                let reactor = reactor.clone();
                Some(busy_poll::BusyPoll::new(window.unwrap_or_default(), move || reactor.in_flight()))
            }
            _ => None,
        };
        if let Some(busy) = &busy_poll {
            tokio::spawn(busy.clone().run());
        }
        let node_id = crate::packet::PacketId::random().to_string();
        let direct = DirectPaths::new(&node_id);
        let inner = Arc::new(NodeInner {
            reactor: reactor.clone(),
            config,
            node_id,
            peers: RwLock::new(PeerTable::default()),
            conn_ids: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            stop_signal: Notify::new(),
            live_connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            started: Instant::now(),
            listening: Mutex::new(Vec::new()),
            routes_version: tokio::sync::watch::Sender::new(0),
            accepted: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            busy_poll,
            peer_events: PeerEvents::default(),
            dashboard: dashboard::Dashboard::default(),
            actor_host_view: HostView::default(),
            direct,
            holds: Default::default(),
            sent_to_peers: AtomicU64::new(0),
            #[cfg(feature = "nats")]
            nats: std::sync::OnceLock::new(),
        });
        inner.direct.attach(Arc::downgrade(&inner));
        reactor.set_forwarder(Box::new(Router { node: Arc::downgrade(&inner) }));
        let weak = Arc::downgrade(&inner);
        let mut changes = reactor.watch_handlers();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                match weak.upgrade() {
                    Some(node) if !node.is_stopped() => node.announce_to_all(),
                    _ => break,
                }
            }
        });
        Node { inner }
    }

    /// The reactor this node serves.
    pub fn reactor(&self) -> &Reactor {
        &self.inner.reactor
    }

    /// This node's id, as announced in `hello`.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Accepts peers on `addr` (`HOST:PORT`; port 0 picks a free one) and
    /// returns the address bound. No auth, no TLS: see
    /// [`listen_with`](Self::listen_with).
    pub async fn listen(&self, addr: &str) -> Result<SocketAddr, PfError> {
        self.listen_with(addr, ListenOptions::default()).await
    }

    /// Accepts peers on `addr` as [`listen`](Self::listen) does, requiring
    /// a token when `options` give tokens and speaking `wss://` when they
    /// give a certificate and key.
    ///
    /// The tokens file and the TLS files are read here, before binding: a
    /// missing or malformed one is a PF400 naming the file (and, for a
    /// tokens file, the entry and field; never a token's value).
    pub async fn listen_with(&self, addr: &str, options: ListenOptions) -> Result<SocketAddr, PfError> {
        listener::listen(&self.inner, addr, &options).await
    }

    /// Serves one already-connected byte stream as a listener with
    /// `options` serves an accepted connection (TLS when `options` give a
    /// certificate, then the HTTP request, then the WebSocket peer), and
    /// returns when that connection ends. It counts against
    /// `max_connections` like an accepted socket. For driving a node
    /// through an in-memory stream (fuzzing, tests); errors as
    /// [`listen_with`](Self::listen_with). Built with the `fuzz-hooks`
    /// feature only (`core/fuzz` and the tests' fuzz regressions).
    #[cfg(feature = "fuzz-hooks")]
    #[doc(hidden)]
    pub async fn serve_stream<S>(&self, stream: S, options: ListenOptions) -> Result<(), PfError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        listener::serve_stream(&self.inner, stream, &options).await
    }

    /// Dials a peer (`ws://HOST:PORT/packetflow/v1`, or `wss://` verified
    /// against the system roots) speaking JSON, with no token; or, for a
    /// `nats://` or `tls://` URL (a comma-separated list of servers), joins
    /// NATS as [`connect_nats`](Self::connect_nats) does with default
    /// options. See [`connect_with`](Self::connect_with).
    pub async fn connect(&self, url: &str) -> Result<(), PfError> {
        self.connect_with(url, ConnectOptions::default()).await
    }

    /// Joins a NATS system (docs/protocol.md, "NATS"): connects to one of
    /// `urls` (`nats://HOST:PORT` or `tls://HOST:PORT`, comma-separated),
    /// serves each handler key of the reactor as a queue-group endpoint of
    /// the node's ADR-32 service (kept in step with registrations), and
    /// sends packets that neither a local handler nor a WebSocket peer
    /// takes as NATS requests. It also bridges its WebSocket peers: it
    /// serves on NATS the keys of those that are not on NATS themselves
    /// (seed peers' once seen served), and tells its peers it is on NATS
    /// so that those off NATS send it what nothing else takes
    /// (docs/protocol.md, "NATS", "Bridging"). Returns once the
    /// subscriptions are in place; after a loss the client reconnects (to
    /// any server of the cluster) until the node stops.
    ///
    /// Errors: PF400 for a malformed URL, namespace or option, or a node
    /// already on NATS; PF401 when the server refuses the credentials;
    /// PF503 when no server can be reached or TLS fails.
    #[cfg(feature = "nats")]
    pub async fn connect_nats(&self, urls: &str, options: super::nats::NatsOptions) -> Result<(), PfError> {
        super::nats::connect(&self.inner, urls, options, crate::KeyStyle::Snake).await
    }

    /// Dials a peer with the given options (or just a [`Codec`](crate::Codec)). Returns
    /// once the connection is up (and, for a PacketFlow peer, its routes are
    /// known); after a loss it redials with jittered exponential backoff
    /// until the node stops.
    ///
    /// Errors: PF400 for a malformed URL, an unreadable CA file or an
    /// option of NATS URLs (naming it); PF401 when the node refuses the
    /// token (or wanted one); PF429 when it has reached its connection
    /// limit; PF503 when it cannot be reached or the TLS handshake fails
    /// (the message says why, e.g. an unknown issuer).
    ///
    /// A `nats://` or `tls://` URL joins NATS instead
    /// ([`connect_nats`](Self::connect_nats)) with the options' NATS fields
    /// (see [`ConnectOptions`]); MessagePack is PF400 there.
    pub async fn connect_with(&self, url: &str, options: impl Into<ConnectOptions>) -> Result<(), PfError> {
        let options = options.into();
        #[cfg(feature = "nats")]
        if super::nats::is_nats_url(url) {
            super::nats::check_connect_options(&options)?;
            let style = options.key_style;
            return super::nats::connect(&self.inner, url, options.into(), style).await;
        }
        options.check_websocket(url)?;
        dialer::connect(&self.inner, url, options).await
    }

    /// Stops the node: work in flight is answered PF503, every connection
    /// is closed with code 1001, listeners stop. Waits (a bounded time) for
    /// the connections to close.
    pub async fn stop(&self) {
        let node = &self.inner;
        // The reactor first: work in flight resolves to PF503, which the
        // connections then send before they close.
        node.reactor.stop();
        node.stopped.store(true, Ordering::Release);
        node.stop_signal.notify_waiters();
        if let Some(busy) = &node.busy_poll {
            busy.close();
        }
        #[cfg(feature = "nats")]
        if let Some(nats) = node.nats.get() {
            nats.close().await;
        }
        let all_closed = node.all_closed.notified();
        if node.live_connections.load(Ordering::Acquire) > 0 {
            let _ = timeout(Duration::from_secs(5), all_closed).await;
        }
    }

    /// The `GET /health` document.
    pub fn health(&self) -> Value {
        metrics::health(&self.inner)
    }

    /// The `GET /metrics` document (Prometheus text format).
    pub fn metrics(&self) -> String {
        metrics::prometheus(&self.inner)
    }

    /// Whether some peer announced `group:element` (a submit would be
    /// forwarded there).
    pub fn can_route(&self, group: Group, element: &str) -> bool {
        self.inner.peers.read().route(group, element, None, None).is_some_and(|p| p.hello().is_some())
    }

    /// A receiver that changes whenever the routes peers announced change
    /// (a peer's hello, a peer leaving).
    pub fn watch_routes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.routes_version.subscribe()
    }

    /// The nodes this node knows to host `actor_type` (itself included
    /// when it does), sorted: the set its placement hashes over.
    pub fn actor_hosts(&self, actor_type: &str) -> Vec<String> {
        let mut hosts = self.inner.peers.read().actor_host_ids(actor_type);
        if self.inner.reactor.actor_host(actor_type).is_some() {
            hosts.push(self.inner.node_id.clone());
        }
        #[cfg(feature = "nats")]
        if let Some(cluster) = self.inner.cluster() {
            hosts.extend(cluster.hosts_of(actor_type));
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The live members of the NATS cluster this node joined with
    /// `membership` (itself included), sorted; empty without membership
    /// (docs/protocol.md, "Membership").
    #[cfg(feature = "nats")]
    pub fn nats_members(&self) -> Vec<String> {
        self.inner.cluster().map(|c| c.member_ids()).unwrap_or_default()
    }

    /// How many peers are connected (direct links, which only carry
    /// packets around a hub, not counted: see `/health`'s `direct`).
    pub fn peer_count(&self) -> usize {
        self.inner.peers.read().all().filter(|p| !p.is_direct_link()).count()
    }

    /// Closes every direct link this node dialed or accepted
    /// (docs/protocol.md, "Direct paths") and returns how many. Packets in
    /// flight on them are answered PF503; the next ones go through the hub,
    /// and a node whose link was closed from the other end dials it again
    /// only after `DirectConfig::retry_after`.
    pub fn close_direct_links(&self) -> usize {
        self.inner.direct.close_all()
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Some(busy) = &self.busy_poll {
            busy.close();
        }
    }
}

impl NodeInner {
    /// Runs a connection where the config says (see [`ConnectionSpawner`](super::ConnectionSpawner));
    /// the future returned is ready when it is over.
    pub(super) fn spawn_connection(&self, connection: impl Future<Output = ()> + Send + 'static) -> Ended {
        match &self.config.spawner {
            None => {
                let task = tokio::spawn(connection);
                Box::pin(async move {
                    let _ = task.await;
                })
            }
            Some(spawner) => {
                // Dropped when the connection ends (or its future is dropped).
                let (over_tx, over_rx) = oneshot::channel::<()>();
                // `map` rather than an async block, which would hold the
                // connection twice over (moved in, then awaited).
                (spawner.spawn)(Box::pin(futures::FutureExt::map(connection, move |()| drop(over_tx))));
                Box::pin(async move {
                    let _ = over_rx.await;
                })
            }
        }
    }

    /// Hands the socket under `stream` to the host when the node's spawner
    /// takes readiness from it (see
    /// [`ConnectionSpawner::with_readiness`](super::ConnectionSpawner::with_readiness)):
    /// for a connection about to be given to [`spawn_connection`](Self::spawn_connection).
    pub(super) fn hand_socket_to_host(&self, stream: &mut impl HasSocket) {
        #[cfg(unix)]
        if let Some(readiness) = self.config.spawner.as_ref().and_then(|s| s.readiness.as_ref()) {
            if let Some(socket) = stream.socket() {
                socket.hand_to_host(readiness);
            }
        }
        #[cfg(not(unix))]
        let _ = stream;
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves once the node stops.
    pub(crate) async fn stopping(&self) {
        let notified = self.stop_signal.notified();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    pub(crate) fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// What this node tells `peer` it can serve: its own handlers and the
    /// routes other peers announced (never the peer's own back to it), and
    /// whether another peer is a seed peer it can send anything to.
    ///
    /// Over a direct link, only what this node serves itself: its dialer
    /// sends it nothing else, and routes nothing through it.
    fn routes_for(&self, peer: &Peer) -> Announcement {
        let mut keys: BTreeSet<(Group, Element)> = self.reactor.handler_keys().into_iter().collect();
        let own_actor_hosts = || {
            let mut hosts = crate::wire::ActorHosts::new();
            for actor_type in self.reactor.actor_type_names() {
                hosts.entry(actor_type).or_default().insert(self.node_id.clone(), 0);
            }
            hosts
        };
        let mut stdlib: BTreeSet<(Group, Element)> = self.reactor.builtin_keys().into_iter().collect();
        if peer.is_direct_link() {
            let actor_hosts = own_actor_hosts();
            let nats = false;
            return Announcement { keys, stdlib, default_route: false, nats, actor_hosts, direct: None };
        }
        let peers = self.peers.read();
        keys.extend(peers.keys_except(peer.id).cloned());
        stdlib.extend(peers.stdlib_keys_except(peer.id).cloned());
        let mut actor_hosts = peers.actor_hosts_for(peer, self.config.max_hops);
        for (actor_type, own) in own_actor_hosts() {
            actor_hosts.entry(actor_type).or_default().extend(own);
        }
        let direct = self.direct_announcement(peer, &peers);
        let default_route = peers.has_seed_except(peer.id);
        Announcement { keys, stdlib, default_route, nats: self.on_nats(), actor_hosts, direct }
    }

    /// Sends `hello` to `peer` if it speaks hello (or `force`) and what we
    /// announce changed since last time.
    pub(crate) fn announce_to(&self, peer: &Peer, force: bool) {
        if !force && peer.hello().is_none() {
            return;
        }
        let announcement = self.routes_for(peer);
        if !peer.note_announced(&announcement) && !force {
            return;
        }
        let mut features = vec![FEATURE_BATCH.into(), FEATURE_MSGPACK.into(), FEATURE_CANCEL.into()];
        if announcement.default_route {
            features.push(FEATURE_DEFAULT_ROUTE.into());
        }
        if self.config.direct.enabled {
            features.push(FEATURE_DIRECT.into());
        }
        if announcement.nats {
            features.push(FEATURE_NATS.into());
        }
        let hello = Hello {
            node_id: self.node_id.clone(),
            name: self.reactor.config().name.clone(),
            runtime: self.config.runtime.clone(),
            protocol: PROTOCOL_VERSION.into(),
            handlers: announcement.keys.into_iter().collect(),
            stdlib: announcement.stdlib.into_iter().collect(),
            features,
            max_inflight: self.config.max_inflight_per_conn as u64,
            heartbeat_ms: self.config.peer_heartbeat_interval.as_millis() as u64,
            max_frame_bytes: self.config.max_frame_bytes as u64,
            actor_hosts: announcement.actor_hosts,
            direct: announcement.direct,
            // Only in the first hello of a connection this node dialed.
            token: if force { peer.take_hello_token() } else { None },
        };
        peer.send(Message::Hello { seq: 0, hello: Box::new(hello) });
    }

    /// Ends what `peer` held at once: it said nothing for three heartbeat
    /// intervals. It leaves the routing table now and every packet waiting
    /// on it is answered PF503, without waiting for its socket to close
    /// (a frozen peer may never read the close frame).
    pub(crate) fn declare_dead(&self, peer: &Peer) {
        self.peer_events.died(&peer.remote);
        let silent = peer.liveness.last_heard_age(Instant::now());
        let removed = self.peers.write().remove(peer.id);
        let why = format!("peer {} declared dead: nothing heard for {} ms", peer.remote, silent.as_millis());
        peer.fail_all(|packet_id| {
            crate::result::PacketResult::error(
                packet_id,
                crate::error::ErrorCode::Unavailable,
                why.clone(),
                0,
            )
        });
        if removed.is_some_and(|p| p.hello().is_some()) {
            self.routes_changed();
        }
        self.announce_to_all();
    }

    /// A packet sent to `peer` at `sent` passed its deadline unanswered:
    /// the peer turns suspect if nothing came from it since (see
    /// [`Liveness`](super::liveness::Liveness)).
    pub(crate) fn deadline_passed(&self, peer: &Peer, sent: Instant) {
        if peer.liveness.deadline_passed(sent, Instant::now()) {
            self.peer_events.suspected();
            self.routes_changed();
        }
    }

    /// Tells watchers that peers' routes changed, once the actors whose
    /// hosts changed were handed over (so that a watcher sees what the
    /// actors will: forwarding entries of a shared store looked for again,
    /// among other things).
    pub(crate) fn routes_changed(&self) {
        self.hand_over_actors();
        self.routes_version.send_modify(|v| *v += 1);
    }

    /// When the nodes hosting one of this node's actor types change, every
    /// actor of that type not running a turn leaves memory (its record
    /// saved to the store). A node that joins takes the actors it now owns,
    /// and a node that lost sight of another (which may have taken this
    /// node's actors meanwhile) must not serve them from a stale copy: each
    /// comes back from the store, on its owner, on its next message
    /// (docs/protocol.md, "Actors": placement).
    fn hand_over_actors(&self) {
        let hosts = self.reactor.actor_hosts();
        if hosts.is_empty() {
            return;
        }
        let peers = self.peers.read();
        self.actor_host_view.hand_over_changed(hosts, |actor_type| peers.actor_host_ids(actor_type));
    }

    /// Whether this node joined NATS.
    pub(crate) fn on_nats(&self) -> bool {
        #[cfg(feature = "nats")]
        return self.nats.get().is_some();
        #[cfg(not(feature = "nats"))]
        false
    }

    /// The keys its peers serve that a node on NATS serves there for them
    /// changed, or may have (a seed peer served a new key or left): its
    /// subscriptions follow, soon, from its NATS task.
    pub(crate) fn bridged_keys_changed(&self) {
        #[cfg(feature = "nats")]
        if let Some(link) = self.nats.get() {
            link.keys_changed();
        }
    }

    /// A receiver that changes whenever the routes peers announced change.
    pub(crate) fn watch_routes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.routes_version.subscribe()
    }

    /// Re-announces to every peer that speaks hello.
    pub(crate) fn announce_to_all(&self) {
        let peers: Vec<Arc<Peer>> = self.peers.read().nodes().cloned().collect();
        for peer in peers {
            self.announce_to(&peer, false);
        }
    }
}

/// Keeps the count of live connections (and listening sockets), waking
/// `stop` at zero.
pub(super) struct LiveConnection(Arc<NodeInner>);

impl LiveConnection {
    pub(super) fn new(node: &Arc<NodeInner>) -> LiveConnection {
        node.live_connections.fetch_add(1, Ordering::AcqRel);
        LiveConnection(node.clone())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        if self.0.live_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}
