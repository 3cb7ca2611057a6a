//! The network [`Node`]: a [`Reactor`](crate::Reactor) plus WebSocket transport.
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
//!
//! Modules, from the outside in: [`Node`] (`node`) is the handle, its
//! settings are in `config` and `options`; `listener` accepts sockets
//! (HTTP endpoints, the upgrade, the connection limit) and `dialer` opens
//! them; `conn` runs one connection, over a `link` (its WebSocket, parked
//! while idle) with `mailbox`es for what other tasks send it; `peers` is
//! the peer table and the routing decision; `forward` sends packets to
//! peers; `direct` sends busy routes' packets around a hub, straight to the
//! node that serves them; `holds` gives back the locks and leases of a
//! peer whose connection closed; `dashboard` serves the page on `/ui/` and records what it shows;
//! `nats` joins a NATS system (a third route, after peers);
//! `socket` is the TCP socket under a connection (on the runtime, or driven
//! by the host's event loop); `auth`, `tls`, `http`, `metrics` and
//! `busy_poll` are what their names say.

/// `AsyncWrite` for a stream wrapper that only watches or replays the read
/// side: every write call goes to its `inner` stream unchanged.
macro_rules! delegate_async_write {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

mod auth;
mod busy_poll;
mod config;
mod conn;
mod dashboard;
mod dialer;
mod direct;
mod forward;
mod holds;
mod host_view;
mod http;
mod link;
mod listener;
mod liveness;
mod mailbox;
mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
mod node;
mod options;
mod peers;
mod rate_limit;
mod relay_deadlines;
mod socket;
mod tls;

pub use config::{ConnectionSpawner, DirectConfig, NodeConfig};
pub use dialer::{open_websocket, ClientStream};
#[cfg(feature = "nats")]
pub use nats::{NatsKvStore, NatsOptions};
pub use node::Node;
pub use options::{ConnectOptions, KeyStyle, ListenOptions, TokenSpec, MIN_TOKEN_LEN};
#[cfg(unix)]
pub use socket::{Direction, SocketReadiness, SocketWatch};

/// The WebSocket path every node serves.
pub const WS_PATH: &str = "/packetflow/v1";
/// Default port of a node.
pub const DEFAULT_PORT: u16 = 8443;
/// Response header by which a node tells a dialer it speaks `hello`.
pub const NODE_HEADER: &str = "x-packetflow-node";
