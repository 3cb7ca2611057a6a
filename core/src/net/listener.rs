//! The accepting side: a listening socket, the connection limit, and what
//! each accepted connection gets: TLS when the listener has a certificate,
//! then one HTTP request, answered (`GET /health`, `GET /metrics`, the
//! dashboard under `/ui/`) or upgraded to a WebSocket peer after the auth
//! check of its headers.
//!
//! That first part runs in a task of its own on the Tokio runtime; a peer's
//! connection then runs in another, sized for it alone (and put where the
//! node's spawner says): the handshake's state, some 13 KiB, is freed once
//! the peer is in.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::{timeout_at, Duration, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::auth::{self, AuthTable};
use super::conn::{self, AuthVerdict, Setup};
use super::direct::LinkSide;
use super::link::{Link, Tallied};
use super::node::{LiveConnection, NodeInner};
use super::options::{ListenOptions, TokenSpec};
use super::socket::{HasSocket, Socket};
use super::{dashboard, http, metrics, tls, NODE_HEADER, WS_PATH};
use crate::error::{ErrorCode, PfError};
use crate::wire::Codec;

/// Most connections answered HTTP 503 at once; more are dropped unanswered.
const MAX_REFUSING: usize = 64;

/// What a listener asks of its connections: a token (when it has
/// tokens), TLS (when it has a certificate).
struct ListenerSecurity {
    auth: Option<Arc<AuthTable>>,
    tls: Option<tls::Acceptor>,
    /// This node's direct listener: every connection is a direct link.
    direct: bool,
}

impl ListenerSecurity {
    /// Reads the tokens and TLS files `options` name.
    fn new(options: &ListenOptions) -> Result<ListenerSecurity, PfError> {
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
        Ok(ListenerSecurity { auth, tls, direct: false })
    }
}

/// Binds `addr` and accepts peers there until the node stops (see
/// [`Node::listen_with`](super::Node::listen_with)); returns the address
/// bound.
pub(super) async fn listen(
    node: &Arc<NodeInner>,
    addr: &str,
    options: &ListenOptions,
) -> Result<SocketAddr, PfError> {
    let context = Arc::new(ListenerSecurity::new(options)?);
    let local = accept_on(node, addr, context).await?;
    node.listening.lock().push(local);
    dashboard::start_sampler(node);
    Ok(local)
}

/// Binds `addr` for direct links (docs/protocol.md, "Direct paths"):
/// plain `ws://`, admitting only `ticket`, every connection a direct link.
/// Not listed among the node's listeners, and no dashboard sampling. The
/// ticket grants everything but `mc:*`, which never goes around a hub.
pub(super) async fn listen_direct(
    node: &Arc<NodeInner>,
    addr: &str,
    ticket: &str,
) -> Result<SocketAddr, PfError> {
    let table = AuthTable::new(&[TokenSpec::allow_all("direct link", ticket)])?;
    let context = Arc::new(ListenerSecurity { auth: Some(Arc::new(table)), tls: None, direct: true });
    accept_on(node, addr, context).await
}

/// Binds `addr` and accepts connections there with `context` until the
/// node stops.
async fn accept_on(
    node: &Arc<NodeInner>,
    addr: &str,
    context: Arc<ListenerSecurity>,
) -> Result<SocketAddr, PfError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| PfError::new(ErrorCode::Unavailable, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| PfError::new(ErrorCode::Unavailable, format!("cannot listen on {addr}: {e}")))?;
    let live = LiveConnection::new(node);
    let node = node.clone();
    // `stop` waits for the listening socket too: once it returns, the
    // address can be bound again.
    tokio::spawn(async move {
        let mut stopping = std::pin::pin!(node.stopping());
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        if let Some(slot) = Slot::take(&node) {
                            let _ = stream.set_nodelay(true);
                            let ends = (remote, stream.local_addr().ok());
                            tokio::spawn(accept(node.clone(), Socket::from(stream), ends, context.clone(), slot));
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

/// Serves one already-connected byte stream as an accepted socket (see
/// `Node::serve_stream`, a `fuzz-hooks` item).
#[cfg(feature = "fuzz-hooks")]
pub(super) async fn serve_stream<S>(
    node: &Arc<NodeInner>,
    stream: S,
    options: &ListenOptions,
) -> Result<(), PfError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = Arc::new(ListenerSecurity::new(options)?);
    if let Some(slot) = Slot::take(node) {
        // The connection, if the stream becomes one, runs on its own: its
        // end is when it drops the stream.
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        let remote = SocketAddr::from(([127, 0, 0, 1], 0));
        let stream = Foreign { inner: stream, _on_drop: ended_tx };
        accept(node.clone(), stream, (remote, None), listener, slot).await;
        let _ = ended.await;
    }
    Ok(())
}

/// A stream given to `Node::serve_stream`: no socket of this node's under it.
/// It tells when it is dropped, with its connection. (The hook lives here
/// and not in the `Slot` so that a build with `fuzz-hooks`, which a
/// workspace build of the tests gives every crate, keeps a connection's
/// size: `cli/tests/idle_connections.rs` measures that build.)
#[cfg(feature = "fuzz-hooks")]
struct Foreign<S> {
    inner: S,
    _on_drop: tokio::sync::oneshot::Sender<()>,
}

#[cfg(feature = "fuzz-hooks")]
impl<S: AsyncRead + Unpin> AsyncRead for Foreign<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(feature = "fuzz-hooks")]
delegate_async_write!(Foreign);

#[cfg(feature = "fuzz-hooks")]
impl<S> HasSocket for Foreign<S> {
    fn socket(&mut self) -> Option<&mut Socket> {
        None
    }
}

/// A place among the connections a node's listeners hold, or, past the
/// limit, among those being refused.
pub(super) struct Slot {
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
        let refusing = taken.is_err();
        if refusing {
            let counted = node
                .refusing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_REFUSING).then_some(n + 1));
            counted.ok()?;
        }
        Some(Slot { node: node.clone(), refusing })
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
async fn accept<S>(
    node: Arc<NodeInner>,
    stream: S,
    ends: (SocketAddr, Option<SocketAddr>),
    listener: Arc<ListenerSecurity>,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + HasSocket + Unpin + Send + 'static,
{
    let deadline = Instant::now() + node.config.handshake_timeout;
    match &listener.tls {
        None => serve_request(node, stream, ends, &listener, slot, deadline).await,
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            let Ok(Ok(stream)) = timeout_at(deadline, acceptor.accept(stream)).await else {
                return; // not TLS, or a failed handshake: nothing to answer in
            };
            serve_request(node, stream, ends, &listener, slot, deadline).await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    }
}

/// Reads the connection's one HTTP request and answers it: `/health`,
/// `/metrics`, an error, or the WebSocket upgrade (HTTP 503 instead past
/// the connection limit).
async fn serve_request<S>(
    node: Arc<NodeInner>,
    mut stream: S,
    ends: (SocketAddr, Option<SocketAddr>),
    listener: &ListenerSecurity,
    slot: Slot,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + HasSocket + Unpin + Send + 'static,
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
            let (path, query) = path.split_once('?').unwrap_or((&path, ""));
            if dashboard::serves(path) {
                let auth = listener.auth.as_deref();
                dashboard::serve(node, stream, path, query, authorization.as_deref(), auth).await;
                return;
            }
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
        http::Request::Upgrade => upgrade(node, stream, head, ends, listener, slot, deadline).await,
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
fn auth_verdict(auth: Option<&Arc<AuthTable>>, request: &WsRequest) -> AuthVerdict {
    let Some(table) = auth else { return AuthVerdict::Open };
    let Some(header) = request.headers().get("authorization") else {
        return AuthVerdict::AwaitHello(table.clone());
    };
    match header.to_str().ok().and_then(auth::bearer).map(|t| table.check(t)) {
        Some(Some(grant)) => AuthVerdict::Granted(grant),
        Some(None) => AuthVerdict::Refused("the token presented in Authorization is not valid"),
        None => AuthVerdict::Refused("the Authorization header must be `Bearer TOKEN`"),
    }
}

/// Answers the upgrade (path, subprotocol, the auth verdict, the
/// `x-packetflow-node` header) and runs the peer's connection until it ends.
async fn upgrade<S>(
    node: Arc<NodeInner>,
    stream: S,
    head: Vec<u8>,
    (remote, local): (SocketAddr, Option<SocketAddr>),
    listener: &ListenerSecurity,
    slot: Slot,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + HasSocket + Unpin + Send + 'static,
{
    let decided = Arc::new(Mutex::new((Codec::Json, AuthVerdict::Open)));
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
        *decided_in_callback.lock() = (codec, auth_verdict(auth.as_ref(), request));
        let headers = response.headers_mut();
        if let Some(protocol) = echo {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }
        if let Ok(id) = HeaderValue::from_str(&node_id) {
            headers.insert(NODE_HEADER, id);
        }
        Ok(response)
    };
    let config = node.config.websocket_config();
    let request_alone = holds_one_head(&head);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        Tallied::new(http::Replay::new(head, stream)),
        callback,
        Some(config),
    );
    let Ok(Ok(mut ws)) = timeout_at(deadline, handshake).await else { return };
    let (codec, verdict) = std::mem::replace(&mut *decided.lock(), (Codec::Json, AuthVerdict::Open));
    node.hand_socket_to_host(ws.get_mut());
    let live = LiveConnection::new(&node);
    // With nothing behind the request, tungstenite read nothing past it:
    // the frames that follow can be tallied from the first (see `link`).
    let link = Link::new(ws, Role::Server, node.config.max_frame_bytes, request_alone);
    let setup = Setup {
        codec,
        remote: remote.to_string(),
        send_hello: false,
        ready: None,
        verdict,
        token: None,
        seed_grace: Some(node.config.seed_peer_grace),
        local,
        secure: listener.tls.is_some(),
        link: listener.direct.then_some(LinkSide::Accepted),
    };
    let connection = conn::start(node.clone(), link, setup).keeping((live, slot));
    drop(node.spawn_connection(connection));
}

/// Whether `head`, the bytes read up to the end of the request head, holds
/// nothing after it (a client sends frames only once it has the 101).
fn holds_one_head(head: &[u8]) -> bool {
    head.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|at| at + 4 == head.len())
}
