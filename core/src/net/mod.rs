//! The network [`Node`]: a [`Reactor`] plus WebSocket transport.
//!
//! Both ends of a connection are the same: either side can submit and
//! either can serve. `listen` accepts peers (and answers `GET /health` and
//! `GET /metrics` on the same port); `connect` dials one and redials with
//! jittered backoff after a loss. Packets with no local handler are routed
//! to peers as PROTOCOL.md says (see `docs/protocol.md`, "Routing").
//!
//! Hello exchange: a node answers the upgrade with an `x-packetflow-node`
//! header. A dialer that sees it sends `hello` first and waits for the
//! answering `hello` before `connect` returns, so routes are known as soon
//! as the call ends. A peer that never sends `hello` (a seed peer) is never
//! sent one either (the seed's reactors do not know the type).
//!
//! Security (`docs/security.md`): [`Node::listen_with`] takes
//! [`ListenOptions`] (tokens with per-token permissions, a TLS certificate),
//! [`Node::connect_with`] takes [`ConnectOptions`] (the token to present, a
//! CA file for `wss://`); the limits are fields of [`NodeConfig`].

mod auth;
mod busy_poll;
mod conn;
mod http;
mod metrics;
mod options;
mod peers;
mod tls;

pub use options::{ConnectOptions, KeyStyle, ListenOptions, TokenSpec, MIN_TOKEN_LEN};

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout, timeout_at, Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Packet, META_HOPS, META_ROUTE_KEY, PROTOCOL_VERSION};
use crate::reactor::{Forwarder, Origin, Reactor};
use crate::result::PacketResult;
use crate::wire::{Codec, Hello, Message, FEATURE_BATCH, FEATURE_DEFAULT_ROUTE, FEATURE_MSGPACK};
use auth::AuthTable;
use conn::{Admission, Setup};
use peers::{Announcement, Peer, PeerTable, Reply};

/// The WebSocket path every node serves.
pub const WS_PATH: &str = "/packetflow/v1";
/// Default port of a node.
pub const DEFAULT_PORT: u16 = 8443;
/// Response header by which a node tells a dialer it speaks `hello`.
pub const NODE_HEADER: &str = "x-packetflow-node";

/// Settings of a [`Node`]; every bound has a safe default (the table in
/// `docs/protocol.md`, "Liveness and limits", lists them).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Host runtime announced in `hello` (`rust`, `python`, `node`, `elixir`).
    pub runtime: String,
    /// Interval between heartbeats; a peer silent for 3 is closed.
    pub heartbeat_interval: Duration,
    /// Largest frame accepted; larger ones close the connection with 1009
    /// (reason `PF413`). Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Most submits from one connection in flight (or answered but not yet
    /// written) at once; past it they are answered PF429. Default 4096.
    pub max_inflight_per_conn: usize,
    /// Most connections this node's listeners hold at once (WebSocket
    /// peers and HTTP requests alike; connections it dialed are not
    /// counted). Past it a new one is answered HTTP 503 and closed.
    /// Default 1024.
    pub max_connections: usize,
    /// Most submits one connection may send per second (a bucket holding
    /// one second's worth); past it they are answered PF429. `None` (the
    /// default): no rate limit, the in-flight window bounds a connection.
    pub max_submits_per_sec: Option<u32>,
    /// Most bytes of submit frames the node holds, over all connections,
    /// for packets still running or forwarded (answered-at-once packets
    /// are not counted); past it submits are answered PF429. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Most submits this node forwards to one peer at once (PF429 past it).
    pub max_pending_per_peer: usize,
    /// Unparsable or invalid frames in a row before closing with 1008.
    pub max_bad_frames: u32,
    /// Hop limit (`pf.hops`); past it a packet is answered PF508.
    pub max_hops: u64,
    /// Bound on an upgrade handshake, either way (slow clients are dropped),
    /// and on a close: a connection this node decided to close is dropped
    /// this long after, even if its close frame could not be written (a
    /// peer that stopped reading).
    pub handshake_timeout: Duration,
    /// Longest pause between redials of a lost peer.
    pub max_redial_backoff: Duration,
    /// Where connections run; `None` (the default): on the Tokio runtime.
    pub spawner: Option<ConnectionSpawner>,
    /// Keep polling the sockets, without sleeping, for this long after
    /// frames arrive, while at most 8 packets are in flight (running here,
    /// submitted to a peer or relayed, not answered yet), and, with none in
    /// flight, only once 50 ms passed without more. Trades
    /// CPU (up to a core spinning while traffic is sparse) for latency
    /// where waking a sleeping thread is slow, as on virtual machines.
    /// Meant for a single-threaded runtime (on a multi-threaded one it
    /// keeps one worker busy); no effect on connections a `spawner` runs.
    /// `None` (the default): the node sleeps whenever it has nothing to do.
    pub busy_poll: Option<Duration>,
}

/// Runs a node's connections somewhere other than on the Tokio runtime's
/// own threads: a binding may poll them on its host's threads (the BEAM's
/// schedulers, for instance), so that reading a frame, running its handler
/// and writing the answer need no hand-off between threads. The function
/// is given each connection as a future and must poll it to completion
/// with a Tokio runtime's context entered (its timers and sockets belong to
/// that runtime, whose I/O driver still wakes it).
#[derive(Clone)]
pub struct ConnectionSpawner(Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>);

impl ConnectionSpawner {
    /// A spawner that hands each connection's future to `spawn`.
    pub fn new(spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static) -> Self {
        ConnectionSpawner(Arc::new(spawn))
    }
}

impl std::fmt::Debug for ConnectionSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSpawner")
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            runtime: "rust".into(),
            heartbeat_interval: Duration::from_secs(30),
            max_frame_bytes: 1 << 20,
            max_inflight_per_conn: 4096,
            max_connections: 1024,
            max_submits_per_sec: None,
            max_queued_bytes: 64 << 20,
            max_pending_per_peer: 65_536,
            max_bad_frames: 100,
            max_hops: 8,
            handshake_timeout: Duration::from_secs(10),
            max_redial_backoff: Duration::from_secs(5),
            spawner: None,
            busy_poll: None,
        }
    }
}

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
    started: Instant,
    listening: Mutex<Vec<SocketAddr>>,
    /// Bumped whenever a peer's announced routes change.
    routes_version: tokio::sync::watch::Sender<u64>,
    /// Connections the listeners hold (bounded by `max_connections`).
    accepted: AtomicUsize,
    /// Connections being answered 503 (bounded by `MAX_REFUSING`).
    refusing: AtomicUsize,
    /// Bytes of submits held for packets in flight (`max_queued_bytes`).
    pub(crate) queued_bytes: AtomicUsize,
    /// Set with `NodeConfig::busy_poll`.
    pub(crate) busy_poll: Option<Arc<busy_poll::BusyPoll>>,
}

/// Most connections answered HTTP 503 at once; more are dropped unanswered.
const MAX_REFUSING: usize = 64;

/// What a listener asks of its connections.
struct Listener {
    auth: Option<Arc<AuthTable>>,
    tls: Option<tls::Acceptor>,
}

impl Listener {
    /// Reads the tokens and TLS files `options` name.
    fn new(options: &ListenOptions) -> Result<Listener, PfError> {
        let auth = if options.requires_auth() {
            let mut specs = match &options.auth_file {
                Some(path) => TokenSpec::load(path)?,
                None => Vec::new(),
            };
            specs.extend(options.tokens.iter().cloned());
            Some(Arc::new(AuthTable::new(&specs)?))
        } else {
            None
        };
        let tls = tls::listener_acceptor(options.tls_cert.as_deref(), options.tls_key.as_deref())?;
        Ok(Listener { auth, tls })
    }
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
        let busy_poll = match (config.busy_poll, &config.spawner) {
            (Some(window), None) if !window.is_zero() => {
                let reactor = reactor.clone();
                Some(busy_poll::BusyPoll::new(window, move || reactor.in_flight()))
            }
            _ => None,
        };
        if let Some(busy) = &busy_poll {
            tokio::spawn(busy.clone().run());
        }
        let inner = Arc::new(NodeInner {
            reactor: reactor.clone(),
            config,
            node_id: crate::packet::PacketId::random().to_string(),
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
        });
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
        let context = Arc::new(Listener::new(&options)?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| PfError::new(ErrorCode::Unavailable, format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| PfError::new(ErrorCode::Unavailable, format!("cannot listen on {addr}: {e}")))?;
        self.inner.listening.lock().push(local);
        let node = self.inner.clone();
        // `stop` waits for the listening socket too: once it returns, the
        // address can be bound again.
        let live = LiveConnection::new(&self.inner);
        tokio::spawn(async move {
            let mut stopping = std::pin::pin!(node.stopping());
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, remote)) => {
                            if let Some(slot) = Slot::take(&node) {
                                let _ = stream.set_nodelay(true);
                                let accepted = accept(node.clone(), stream, remote, context.clone(), slot);
                                drop(node.spawn_connection(accepted));
                            }
                        }
                        // Out of descriptors and the like: pause instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                    _ = &mut stopping => break,
                }
            }
            drop(listener);
            drop(live);
        });
        Ok(local)
    }

    /// Serves one already-connected byte stream as a listener with
    /// `options` serves an accepted connection (TLS when `options` give a
    /// certificate, then the HTTP request, then the WebSocket peer), and
    /// returns when that connection ends. It counts against
    /// `max_connections` like an accepted socket. For driving a node
    /// through an in-memory stream (fuzzing, tests); errors as
    /// [`listen_with`](Self::listen_with).
    #[doc(hidden)]
    pub async fn serve_stream<S>(&self, stream: S, options: ListenOptions) -> Result<(), PfError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = Arc::new(Listener::new(&options)?);
        if let Some(slot) = Slot::take(&self.inner) {
            let remote = SocketAddr::from(([127, 0, 0, 1], 0));
            accept(self.inner.clone(), stream, remote, listener, slot).await;
        }
        Ok(())
    }

    /// Dials a peer (`ws://HOST:PORT/packetflow/v1`, or `wss://` verified
    /// against the system roots) speaking JSON, with no token; see
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(&self, url: &str) -> Result<(), PfError> {
        self.connect_with(url, ConnectOptions::default()).await
    }

    /// Dials a peer with the given options (or just a [`Codec`]). Returns
    /// once the connection is up (and, for a PacketFlow peer, its routes are
    /// known); after a loss it redials with jittered exponential backoff
    /// until the node stops.
    ///
    /// Errors: PF400 for a malformed URL or an unreadable CA file; PF401
    /// when the node refuses the token (or wanted one); PF429 when it has
    /// reached its connection limit; PF503 when it cannot be reached or the
    /// TLS handshake fails (the message says why, e.g. an unknown issuer).
    pub async fn connect_with(&self, url: &str, options: impl Into<ConnectOptions>) -> Result<(), PfError> {
        let options = options.into();
        let dialing = Arc::new(Dialing::new(url, options)?);
        let mut connection = dial(self.inner.clone(), &dialing).await?;
        let node = self.inner.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let _ = connection.await;
                loop {
                    if node.is_stopped() {
                        return;
                    }
                    let jittered = backoff.mul_f64(0.5 + fastrand::f64());
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = node.stopping() => return,
                    }
                    match dial(node.clone(), &dialing).await {
                        Ok(handle) => {
                            connection = handle;
                            backoff = Duration::from_millis(50);
                            break;
                        }
                        Err(_) => backoff = (backoff * 2).min(node.config.max_redial_backoff),
                    }
                }
            }
        });
        Ok(())
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

    /// How many peers are connected.
    pub fn peer_count(&self) -> usize {
        self.inner.peers.read().len()
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
    /// Runs a connection where the config says (see [`ConnectionSpawner`]);
    /// the future returned is ready when it is over.
    fn spawn_connection(&self, connection: impl Future<Output = ()> + Send + 'static) -> Ended {
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
                (spawner.0)(Box::pin(async move {
                    connection.await;
                    drop(over_tx);
                }));
                Box::pin(async move {
                    let _ = over_rx.await;
                })
            }
        }
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
    fn routes_for(&self, peer: &Peer) -> Announcement {
        let mut keys: BTreeSet<(Group, Element)> = self.reactor.handler_keys().into_iter().collect();
        let peers = self.peers.read();
        keys.extend(peers.keys_except(peer.id).cloned());
        Announcement { keys, default_route: peers.has_seed_except(peer.id) }
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
        let mut features = vec![FEATURE_BATCH.into(), FEATURE_MSGPACK.into()];
        if announcement.default_route {
            features.push(FEATURE_DEFAULT_ROUTE.into());
        }
        let hello = Hello {
            node_id: self.node_id.clone(),
            name: self.reactor.config().name.clone(),
            runtime: self.config.runtime.clone(),
            protocol: PROTOCOL_VERSION.into(),
            handlers: announcement.keys.into_iter().collect(),
            features,
            max_inflight: self.config.max_inflight_per_conn as u64,
            // Only in the first hello of a connection this node dialed.
            token: if force { peer.take_hello_token() } else { None },
        };
        peer.send(Message::Hello { seq: 0, hello: Box::new(hello) });
    }

    /// Tells watchers that peers' routes changed.
    pub(crate) fn routes_changed(&self) {
        self.routes_version.send_modify(|v| *v += 1);
    }

    /// Re-announces to every peer that speaks hello.
    pub(crate) fn announce_to_all(&self) {
        let peers: Vec<Arc<Peer>> = self.peers.read().all().cloned().collect();
        for peer in peers {
            self.announce_to(&peer, false);
        }
    }
}

fn ws_config(node: &NodeInner) -> WebSocketConfig {
    // tungstenite zeroes its read buffer before each read: 16 KiB holds a
    // burst of small frames without paying for 128 KiB of memset per read
    // (larger frames still arrive whole; the buffer only bounds one read).
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(node.config.max_frame_bytes))
        .max_frame_size(Some(node.config.max_frame_bytes))
}

/// Keeps the count of live connections (and listening sockets), waking
/// `stop` at zero.
struct LiveConnection(Arc<NodeInner>);

impl LiveConnection {
    fn new(node: &Arc<NodeInner>) -> LiveConnection {
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

/// A place among the connections a node's listeners hold, or, past the
/// limit, among those being refused.
struct Slot {
    node: Arc<NodeInner>,
    refusing: bool,
}

impl Slot {
    /// `None` when even the refusals are at their bound (the connection is
    /// then dropped unanswered).
    fn take(node: &Arc<NodeInner>) -> Option<Slot> {
        let limit = node.config.max_connections;
        let taken =
            node.accepted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1));
        if taken.is_ok() {
            return Some(Slot { node: node.clone(), refusing: false });
        }
        let refusing = node
            .refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_REFUSING).then_some(n + 1));
        refusing.is_ok().then(|| Slot { node: node.clone(), refusing: true })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.refusing { &self.node.refusing } else { &self.node.accepted };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one accepted connection: TLS first when the listener has a
/// certificate, then HTTP endpoints or a WebSocket peer. The handshake
/// timeout bounds all of it.
async fn accept<S>(node: Arc<NodeInner>, stream: S, remote: SocketAddr, listener: Arc<Listener>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = Instant::now() + node.config.handshake_timeout;
    match &listener.tls {
        None => serve(node, stream, remote, &listener, slot, deadline).await,
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            let Ok(Ok(stream)) = timeout_at(deadline, acceptor.accept(stream)).await else {
                return; // not TLS, or a failed handshake: nothing to answer in
            };
            serve(node, stream, remote, &listener, slot, deadline).await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    }
}

async fn serve<S>(
    node: Arc<NodeInner>,
    mut stream: S,
    remote: SocketAddr,
    listener: &Listener,
    slot: Slot,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(Ok((request, head))) = timeout_at(deadline, http::read_head(&mut stream)).await else {
        return; // slow or broken client: dropped without an answer
    };
    if slot.refusing {
        let limit = node.config.max_connections;
        let why = format!("this node holds its limit of {limit} connections; retry later (PF429)\n");
        let _ = timeout_at(deadline, http::respond(&mut stream, 503, "text/plain", &why)).await;
        return;
    }
    match request {
        http::Request::Get { path, authorization } => {
            // With auth on, only a valid token sees more than the status.
            let authorized = match &listener.auth {
                None => true,
                Some(table) => {
                    authorization.as_deref().and_then(auth::bearer).and_then(|t| table.check(t)).is_some()
                }
            };
            let path = path.split('?').next().unwrap_or_default();
            let _ = match path {
                "/health" if authorized => {
                    let body = metrics::health(&node).to_string();
                    http::respond(&mut stream, 200, "application/json", &body).await
                }
                "/health" => {
                    let body = serde_json::json!({"status": metrics::status(&node)}).to_string();
                    http::respond(&mut stream, 200, "application/json", &body).await
                }
                "/metrics" if authorized => {
                    let body = metrics::prometheus(&node);
                    http::respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
                }
                "/metrics" => {
                    let why = "this node requires a token (Authorization: Bearer) for /metrics\n";
                    http::respond(&mut stream, 401, "text/plain", why).await
                }
                _ => http::respond(&mut stream, 404, "text/plain", "not found\n").await,
            };
        }
        http::Request::Bad(status, why) => {
            let _ = http::respond(&mut stream, status, "text/plain", &format!("{why}\n")).await;
        }
        http::Request::Upgrade => upgrade(node, stream, head, remote, listener, slot, deadline).await,
    }
}

/// Picks the first encoding the client offered that this node speaks.
fn choose_codec(request: &WsRequest) -> Result<(Codec, Option<&'static str>), String> {
    let offered: Vec<String> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok((Codec::Json, None));
    }
    offered
        .iter()
        .find_map(|p| Codec::from_subprotocol(Some(p)))
        .map(|c| (c, Some(c.subprotocol())))
        .ok_or_else(|| {
            format!(
                "unsupported subprotocol {}; this node speaks packetflow.v1.json and packetflow.v1.msgpack",
                offered.join(", ")
            )
        })
}

fn reject(status: StatusCode, why: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why));
    *response.status_mut() = status;
    response
}

/// Decides, from the upgrade's headers, whether a connection is let in
/// (the decision is taken once per connection: here or at its first frame).
fn admission(auth: Option<&Arc<AuthTable>>, request: &WsRequest) -> Admission {
    let Some(table) = auth else { return Admission::Open };
    let Some(header) = request.headers().get("authorization") else {
        return Admission::AwaitHello(table.clone());
    };
    match header.to_str().ok().and_then(auth::bearer).map(|t| table.check(t)) {
        Some(Some(grant)) => Admission::Granted(grant),
        Some(None) => Admission::Refused("the token presented in Authorization is not valid"),
        None => Admission::Refused("the Authorization header must be `Bearer TOKEN`"),
    }
}

async fn upgrade<S>(
    node: Arc<NodeInner>,
    stream: S,
    head: Vec<u8>,
    remote: SocketAddr,
    listener: &Listener,
    slot: Slot,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let decided = Arc::new(Mutex::new((Codec::Json, Admission::Open)));
    let decided_in_callback = decided.clone();
    let node_id = node.node_id.clone();
    let auth = listener.auth.clone();
    // The error side is tungstenite's HTTP response type, large by nature;
    // it is built only to refuse an upgrade.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &WsRequest, mut response: Response| {
        let path = request.uri().path();
        if path != WS_PATH {
            return Err(reject(
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint at {path}; use {WS_PATH}"),
            ));
        }
        let (codec, echo) = choose_codec(request).map_err(|why| reject(StatusCode::BAD_REQUEST, why))?;
        *decided_in_callback.lock() = (codec, admission(auth.as_ref(), request));
        let headers = response.headers_mut();
        if let Some(protocol) = echo {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }
        if let Ok(id) = HeaderValue::from_str(&node_id) {
            headers.insert(NODE_HEADER, id);
        }
        Ok(response)
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        http::Replay::new(head, stream),
        callback,
        Some(ws_config(&node)),
    );
    let Ok(Ok(ws)) = timeout_at(deadline, handshake).await else { return };
    let (codec, admission) = std::mem::replace(&mut *decided.lock(), (Codec::Json, Admission::Open));
    let _live = LiveConnection::new(&node);
    let _slot = slot;
    let setup =
        Setup { codec, remote: remote.to_string(), send_hello: false, ready: None, admission, token: None };
    conn::run(node, ws, setup).await;
}

fn dial_error(url: &str, why: impl std::fmt::Display) -> PfError {
    PfError::new(ErrorCode::Unavailable, format!("cannot connect to {url}: {why}"))
}

/// A `connect_with` call's settings, kept for its redials.
struct Dialing {
    url: String,
    codec: Codec,
    token: Option<String>,
    /// Set for `wss://` URLs.
    tls: Option<(tls::Connector, String)>,
    host: String,
    port: u16,
}

impl Dialing {
    fn new(url: &str, options: ConnectOptions) -> Result<Dialing, PfError> {
        let invalid =
            |why: String| PfError::new(ErrorCode::BadRequest, format!("invalid peer URL {url:?}: {why}"));
        let request = url.into_client_request().map_err(|e| invalid(e.to_string()))?;
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => return Err(invalid(format!("the scheme must be ws or wss, got {other:?}"))),
        };
        let host = uri.host().ok_or_else(|| invalid("no host".into()))?;
        // An IPv6 literal comes bracketed; sockets and TLS want it bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        if let Some(token) = &options.token {
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() || token.is_empty() {
                return Err(PfError::new(
                    ErrorCode::BadRequest,
                    "the token must be non-empty visible ASCII (it travels in an HTTP header)",
                ));
            }
        }
        let tls = if secure {
            #[cfg(feature = "tls")]
            let name = {
                tls::server_name(&host)?;
                host.clone()
            };
            #[cfg(not(feature = "tls"))]
            let name = host.clone();
            Some((tls::connector(options.tls_ca.as_deref())?, name))
        } else {
            None
        };
        Ok(Dialing { url: url.to_owned(), codec: options.codec, token: options.token, tls, host, port })
    }

    fn request(&self) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, PfError> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| {
            PfError::new(ErrorCode::BadRequest, format!("invalid peer URL {:?}: {e}", self.url))
        })?;
        let headers = request.headers_mut();
        // JSON is the default: asking for it explicitly would make a seed
        // server (which echoes no subprotocol) fail the handshake.
        if self.codec == Codec::MsgPack {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(self.codec.subprotocol()));
        }
        if let Some(token) = &self.token {
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert("authorization", value);
            }
        }
        Ok(request)
    }
}

/// A refused upgrade or a failed handshake, as the dialer reports it.
fn handshake_error(url: &str, e: tokio_tungstenite::tungstenite::Error) -> PfError {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let why = format!("the node answered HTTP {status}: {}", body.trim());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                PfError::new(ErrorCode::Overloaded, format!("cannot connect to {url}: {why}"))
            } else {
                dial_error(url, why)
            }
        }
        other => dial_error(url, other),
    }
}

/// Ready when a connection is over.
type Ended = BoxFuture<'static, ()>;

/// Dials once; returns a future ready when the connection is over.
async fn dial(node: Arc<NodeInner>, dialing: &Dialing) -> Result<Ended, PfError> {
    if node.is_stopped() {
        return Err(dial_error(&dialing.url, "the node is stopped"));
    }
    let deadline = Instant::now() + node.config.handshake_timeout;
    let (ws, response) = dialing.open(deadline, ws_config(&node)).await?;
    start_dialed(node, ws, response, dialing).await
}

impl Dialing {
    /// TCP, then TLS for `wss://`, then the WebSocket upgrade, all before
    /// `deadline`.
    async fn open(
        &self,
        deadline: Instant,
        config: WebSocketConfig,
    ) -> Result<
        (WebSocketStream<ClientStream>, tokio_tungstenite::tungstenite::handshake::client::Response),
        PfError,
    > {
        let url = self.url.as_str();
        let request = self.request()?;
        let tcp = timeout_at(deadline, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| dial_error(url, "connecting timed out"))?
            .map_err(|e| dial_error(url, e))?;
        let _ = tcp.set_nodelay(true);
        let stream: ClientStream = match &self.tls {
            #[cfg(feature = "tls")]
            None => tokio_util::either::Either::Left(tcp),
            #[cfg(not(feature = "tls"))]
            None => tcp,
            #[cfg(feature = "tls")]
            Some((connector, name)) => {
                let server_name = tls::server_name(name)?;
                let stream = timeout_at(deadline, connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| dial_error(url, "TLS handshake timed out"))?
                    .map_err(|e| dial_error(url, format!("TLS handshake failed: {e}")))?;
                tokio_util::either::Either::Right(Box::new(stream))
            }
            #[cfg(not(feature = "tls"))]
            Some((never, _)) => match *never {},
        };
        timeout_at(deadline, tokio_tungstenite::client_async_with_config(request, stream, Some(config)))
            .await
            .map_err(|_| dial_error(url, "handshake timed out"))?
            .map_err(|e| handshake_error(url, e))
    }
}

/// Opens a bare WebSocket to `url` (`ws://` or `wss://`) with the token and
/// CA of `options`, as a node dials, but without a node: for tools that
/// speak frames themselves (a load generator, tests). `config` bounds
/// frame sizes and buffers as a node's own connections do by default.
/// Errors as [`Node::connect_with`]. The handshake is bounded to 10 s.
pub async fn open_websocket(
    url: &str,
    options: ConnectOptions,
    config: Option<WebSocketConfig>,
) -> Result<WebSocketStream<ClientStream>, PfError> {
    let dialing = Dialing::new(url, options)?;
    let deadline = Instant::now() + NodeConfig::default().handshake_timeout;
    Ok(dialing.open(deadline, config.unwrap_or_default()).await?.0)
}

/// The stream under a dialed connection: plain TCP for `ws://`, TLS for
/// `wss://`.
#[cfg(feature = "tls")]
pub type ClientStream =
    tokio_util::either::Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;
/// The stream under a dialed connection (built without TLS: plain TCP).
#[cfg(not(feature = "tls"))]
pub type ClientStream = TcpStream;

/// Runs a dialed connection; for a PacketFlow node, waits for its hello.
async fn start_dialed<S>(
    node: Arc<NodeInner>,
    ws: WebSocketStream<S>,
    response: tokio_tungstenite::tungstenite::handshake::client::Response,
    dialing: &Dialing,
) -> Result<Ended, PfError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = dialing.url.as_str();
    let speaks_hello = response.headers().contains_key(NODE_HEADER);
    let (ready_tx, ready_rx) = oneshot::channel();
    let live = LiveConnection::new(&node);
    let setup = Setup {
        codec: dialing.codec,
        remote: url.to_owned(),
        send_hello: speaks_hello,
        ready: speaks_hello.then_some(ready_tx),
        admission: Admission::Open,
        token: dialing.token.clone(),
    };
    let running = conn::run(node.clone(), ws, setup);
    let handle = node.spawn_connection(async move {
        let _live = live;
        running.await;
    });
    if speaks_hello {
        match timeout(node.config.handshake_timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(refused))) => {
                return Err(PfError::new(
                    ErrorCode::Unauthorized,
                    format!("{url} refused: {}", refused.message),
                ))
            }
            _ => return Err(dial_error(url, "the peer did not answer hello")),
        }
    }
    Ok(handle)
}

/// The reactor's forwarder: routes packets with no local handler to peers.
struct Router {
    node: Weak<NodeInner>,
}

impl Forwarder for Router {
    fn forward(
        &self,
        packet: Packet,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let node = self.node.upgrade()?;
        let route_key = packet.meta(META_ROUTE_KEY).and_then(Value::as_str);
        let origin = origin.map(|o| o.0);
        let peer = node.peers.read().route_element(packet.group, &packet.element, route_key, origin)?;
        Some(Box::pin(forward(node, peer, packet, deadline, origin)))
    }
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
        peer.learn(key.clone(), !lacks_key);
        if !lacks_key {
            return result;
        }
        let next = node.peers.read().route_element(key.0, &key.1, None, origin);
        match next {
            Some(next) if next.id != peer.id && next.hello().is_none() => peer = next,
            _ => return result,
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
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => fail(ErrorCode::Unavailable, format!("peer {} went away", peer.remote)),
        Err(_) => {
            peer.abandon_submit(seq);
            fail(ErrorCode::Timeout, format!("no answer from peer {} before the deadline", peer.remote))
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
    if !peer.send_forward(seq, packet, hops) {
        peer.abandon_submit(seq);
        return Err((ErrorCode::Unavailable, format!("peer {} went away", peer.remote)));
    }
    Ok(seq)
}

/// What [`NodeInner::relay`] did with a packet.
// The packet is given back by value (no allocation) when declined.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Relaying {
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
        to: &tokio::sync::mpsc::UnboundedSender<peers::Relayed>,
    ) -> Relaying {
        let route_key = packet.meta(META_ROUTE_KEY).and_then(Value::as_str);
        let route = self.peers.read().route_element(packet.group, &packet.element, route_key, Some(origin.0));
        let peer = match route {
            Some(peer) if peer.has_hello() => peer,
            _ => return Relaying::Declined(packet),
        };
        let start = Instant::now();
        let Some(guard) = self.reactor.begin_forward(&packet.id) else {
            let message = format!("a packet with id {} is already in flight", packet.id);
            return Relaying::Answered(PacketResult::error(
                packet.id.clone(),
                ErrorCode::DuplicateId,
                message,
                since_ms(start),
            ));
        };
        let id = packet.id.clone();
        let reply = Reply::Relay(peers::Relay { to: to.clone(), seq, size, start, guard });
        match send_to(self, &peer, packet, start, deadline, reply) {
            Ok(seq) => Relaying::Sent { peer, seq },
            Err((code, message)) => {
                Relaying::Answered(PacketResult::error(id, code, message, since_ms(start)))
            }
        }
    }
}

fn since_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
