//! A node's settings: [`NodeConfig`] (every bound with its default) and
//! [`ConnectionSpawner`] (where connections run).

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Duration;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use super::direct::DirectConfig;
#[cfg(unix)]
use super::socket::SocketReadiness;

/// Settings of a [`Node`](super::Node); every bound has a safe default
/// (the table in `docs/protocol.md`, "Liveness and limits", lists them).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Host runtime announced in `hello` (`rust`, `python`, `node`, `elixir`).
    pub runtime: String,
    /// Interval between heartbeats towards seed peers (and nodes that
    /// offer no interval of their own); a peer silent for 3 is closed.
    /// Default 30 s, the seed's rule.
    pub heartbeat_interval: Duration,
    /// The heartbeat interval offered to PacketFlow peers in `hello`: two
    /// nodes that both offer one beat at the larger of the two, and a peer
    /// silent for 3 of those intervals is declared dead (its packets are
    /// answered PF503). Zero offers none (the 30 s rule then applies).
    /// Default 1 s.
    pub peer_heartbeat_interval: Duration,
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
    /// How long a peer that dialed this node has, after its upgrade, to
    /// send `hello` before it is taken for a seed peer: a default route
    /// here, announced to the other peers as `default-route`. A PacketFlow
    /// dialer sends `hello` first, so this only needs to cover a round
    /// trip; a seed peer may say nothing for its first 30 s. A `hello`
    /// that comes later still makes the peer a node (the default route is
    /// then withdrawn). Zero: every peer is taken for a seed peer until its
    /// hello arrives. Default 500 ms.
    pub seed_peer_grace: Duration,
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
    /// Direct paths: busy routes' packets sent straight to the node that
    /// serves them instead of through a hub (docs/protocol.md, "Direct
    /// paths"). On by default.
    pub direct: DirectConfig,
}

/// Runs a node's connections somewhere other than on the Tokio runtime's
/// own threads: a binding may poll them on its host's threads (the BEAM's
/// schedulers, for instance), so that reading a frame, running its handler
/// and writing the answer need no hand-off between threads. The function
/// is given each peer's connection (accepted, once upgraded to WebSocket,
/// or dialed) as a future and must poll it to completion with a Tokio
/// runtime's context entered (its timers belong to that runtime). What
/// comes before the upgrade (TLS, the HTTP request, `/health` and
/// `/metrics`) runs on the Tokio runtime.
///
/// The sockets' readiness still comes from the runtime's I/O driver, whose
/// thread then wakes the connection, unless the spawner also gives a
/// [`SocketReadiness`] ([`with_readiness`](Self::with_readiness)): then the
/// host's own event loop reports it, and a connection polled on that loop's
/// thread reads, decodes, runs its handlers and writes without any other
/// thread waking (see `core/src/net/socket.rs`).
#[derive(Clone)]
pub struct ConnectionSpawner {
    pub(super) spawn: Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>,
    #[cfg(unix)]
    pub(super) readiness: Option<Arc<dyn SocketReadiness>>,
}

impl ConnectionSpawner {
    /// A spawner that hands each connection's future to `spawn`.
    pub fn new(spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static) -> Self {
        ConnectionSpawner {
            spawn: Arc::new(spawn),
            #[cfg(unix)]
            readiness: None,
        }
    }

    #[cfg(unix)]
    /// The same spawner, whose connections take their sockets' readiness
    /// from `readiness` (the host's event loop) instead of the Tokio
    /// runtime's driver, from the end of the WebSocket upgrade on (plain
    /// and TLS connections alike). `spawn` must then poll each connection
    /// only where `readiness` can watch sockets (the loop's thread): a
    /// watch refused there ends the connection.
    pub fn with_readiness(mut self, readiness: Arc<dyn SocketReadiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }
}

impl std::fmt::Debug for ConnectionSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSpawner")
    }
}

impl NodeConfig {
    /// Checks the values a user may set: each bound must let something
    /// through (a zero here would refuse everything or spin). PF400 naming
    /// the field.
    pub fn validate(&self) -> Result<(), crate::PfError> {
        let positive = [
            ("heartbeat_interval", self.heartbeat_interval.is_zero()),
            ("handshake_timeout", self.handshake_timeout.is_zero()),
            ("max_frame_bytes", self.max_frame_bytes == 0),
            ("max_inflight_per_conn", self.max_inflight_per_conn == 0),
            ("max_connections", self.max_connections == 0),
            ("max_queued_bytes", self.max_queued_bytes == 0),
            ("max_pending_per_peer", self.max_pending_per_peer == 0),
            ("max_hops", self.max_hops == 0),
        ];
        match positive.into_iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(crate::PfError::new(
                crate::ErrorCode::BadRequest,
                format!("{field} must be at least 1, got 0"),
            )),
            None => self.direct.validate(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            runtime: "rust".into(),
            heartbeat_interval: Duration::from_secs(30),
            peer_heartbeat_interval: Duration::from_secs(1),
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
            seed_peer_grace: Duration::from_millis(500),
            spawner: None,
            busy_poll: None,
            direct: DirectConfig::default(),
        }
    }
}

impl NodeConfig {
    /// The WebSocket settings of this node's connections, accepted and
    /// dialed alike: frames bounded by `max_frame_bytes`.
    pub(super) fn websocket_config(&self) -> WebSocketConfig {
        websocket_config(self.max_frame_bytes)
    }
}

/// The WebSocket settings of a node's connections whose frames are bounded
/// by `max_frame_bytes` (a parked connection makes its WebSocket again
/// from this).
pub(super) fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    // tungstenite zeroes its read buffer before each read: 16 KiB holds a
    // burst of small frames without paying for 128 KiB of memset per read
    // (larger frames still arrive whole; the buffer only bounds one read).
    // It exists only while the connection is busy (see `link`).
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_must_let_something_through() {
        assert!(NodeConfig::default().validate().is_ok());
        let e = NodeConfig { max_connections: 0, ..NodeConfig::default() }.validate().unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("PF400", "max_connections must be at least 1, got 0")
        );
        let e = NodeConfig { heartbeat_interval: Duration::ZERO, ..NodeConfig::default() }
            .validate()
            .unwrap_err();
        assert_eq!(e.message, "heartbeat_interval must be at least 1, got 0");
    }
}
