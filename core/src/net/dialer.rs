//! The dialing side: opening a connection to a peer (TCP, TLS for
//! `wss://`, the WebSocket upgrade with the token and subprotocol), the
//! `hello` exchange with a PacketFlow node, and redialing after a loss.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout, timeout_at, Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::config::NodeConfig;
use super::conn::{self, AuthVerdict, Setup};
use super::direct::LinkSide;
use super::link::{Link, Tallied};
use super::node::{Ended, LiveConnection, NodeInner};
use super::options::ConnectOptions;
use super::peers::Peer;
use super::socket::Socket;
use super::{tls, NODE_HEADER};
use crate::error::{ErrorCode, PfError};
use crate::wire::Codec;

/// Dials `url` (see [`Node::connect_with`](super::Node::connect_with)) and,
/// once connected, keeps redialing it after every loss, with jittered
/// exponential backoff, until the node stops.
pub(super) async fn connect(
    node: &Arc<NodeInner>,
    url: &str,
    options: ConnectOptions,
) -> Result<(), PfError> {
    let dialing = Arc::new(Dialing::new(url, options)?);
    let mut connection = dial(node.clone(), &dialing).await?;
    let node = node.clone();
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

/// Dials once; returns a future ready when the connection is over.
async fn dial(node: Arc<NodeInner>, dialing: &Dialing) -> Result<Ended, PfError> {
    if node.is_stopped() {
        return Err(dial_error(&dialing.url, "the node is stopped"));
    }
    let deadline = Instant::now() + node.config.handshake_timeout;
    let config = node.config.websocket_config();
    let (mut ws, response, local) = dialing.open(deadline, config, Socket::from, Tallied::new).await?;
    node.hand_socket_to_host(ws.get_mut());
    // tungstenite may hold frames that came behind the 101, unseen by the
    // tally: a dialed link never parks (see `link`).
    let link = Link::new(ws, Role::Client, node.config.max_frame_bytes, false);
    let wait = node.config.handshake_timeout;
    Ok(start_dialed(node, link, response, dialing, local, None, wait).await?.0)
}

/// Opens a direct link to `url`, where the node `expect` was advertised
/// (docs/protocol.md, "Direct paths"): TCP, the upgrade with the ticket
/// as token, and the `hello` exchange, all within `within`. No redial: a
/// lost link is given up (its packets go through the hub). On an error
/// the half-made connection is closed.
pub(super) async fn dial_direct(
    node: &Arc<NodeInner>,
    url: &str,
    options: ConnectOptions,
    expect: &str,
    within: Duration,
) -> Result<(), PfError> {
    if node.is_stopped() {
        return Err(dial_error(url, "the node is stopped"));
    }
    let dialing = Dialing::new(url, options)?;
    let within = within.min(node.config.handshake_timeout);
    let deadline = Instant::now() + within;
    let config = node.config.websocket_config();
    let (mut ws, response, local) = dialing.open(deadline, config, Socket::from, Tallied::new).await?;
    node.hand_socket_to_host(ws.get_mut());
    if !response.headers().contains_key(NODE_HEADER) {
        return Err(dial_error(url, "not a PacketFlow node (no node header)"));
    }
    let link = Link::new(ws, Role::Client, node.config.max_frame_bytes, false);
    let side = Some(LinkSide::Dialed { expect: expect.to_owned() });
    let wait = deadline.saturating_duration_since(Instant::now());
    start_dialed(node.clone(), link, response, &dialing, local, side, wait).await.map(|_| ())
}

impl Dialing {
    /// TCP (as `socket(tcp)`), then TLS for `wss://`, then the WebSocket
    /// upgrade over `wrap(stream)`, all before `deadline`. Also gives this
    /// end's address of the socket.
    async fn open<Io, T>(
        &self,
        deadline: Instant,
        config: WebSocketConfig,
        socket: impl FnOnce(TcpStream) -> Io,
        wrap: impl FnOnce(Dialed<Io>) -> T,
    ) -> Result<
        (WebSocketStream<T>, tokio_tungstenite::tungstenite::handshake::client::Response, Option<SocketAddr>),
        PfError,
    >
    where
        Io: AsyncRead + AsyncWrite + Unpin,
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let url = self.url.as_str();
        let request = self.request()?;
        let tcp = timeout_at(deadline, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| dial_error(url, "connecting timed out"))?
            .map_err(|e| dial_error(url, e))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let tcp = socket(tcp);
        let stream: Dialed<Io> = match &self.tls {
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
        let (ws, response) = timeout_at(
            deadline,
            tokio_tungstenite::client_async_with_config(request, wrap(stream), Some(config)),
        )
        .await
        .map_err(|_| dial_error(url, "handshake timed out"))?
        .map_err(|e| handshake_error(url, e))?;
        Ok((ws, response, local))
    }
}

/// Opens a bare WebSocket to `url` (`ws://` or `wss://`) with the token and
/// CA of `options`, as a node dials, but without a node: for tools that
/// speak frames themselves (a load generator, tests). `config` bounds
/// frame sizes and buffers as a node's own connections do by default.
/// Errors as [`Node::connect_with`](super::Node::connect_with). The handshake is bounded to 10 s.
pub async fn open_websocket(
    url: &str,
    options: ConnectOptions,
    config: Option<WebSocketConfig>,
) -> Result<WebSocketStream<ClientStream>, PfError> {
    let dialing = Dialing::new(url, options)?;
    let deadline = Instant::now() + NodeConfig::default().handshake_timeout;
    Ok(dialing.open(deadline, config.unwrap_or_default(), |tcp| tcp, |stream| stream).await?.0)
}

/// The stream under a dialed connection: plain TCP for `ws://`, TLS for
/// `wss://`.
pub type ClientStream = Dialed<TcpStream>;

/// A dialed stream over the TCP socket `Io`: the socket itself for
/// `ws://`, TLS over it for `wss://`.
#[cfg(feature = "tls")]
pub type Dialed<Io> = tokio_util::either::Either<Io, Box<tokio_rustls::client::TlsStream<Io>>>;
/// A dialed stream over the TCP socket `Io` (built without TLS: the socket).
#[cfg(not(feature = "tls"))]
pub type Dialed<Io> = Io;

/// Runs a dialed connection; for a PacketFlow node, waits for its hello
/// (for up to `wait`). Gives the connection's end and its peer.
async fn start_dialed<S>(
    node: Arc<NodeInner>,
    link: Link<S>,
    response: tokio_tungstenite::tungstenite::handshake::client::Response,
    dialing: &Dialing,
    local: Option<SocketAddr>,
    side: Option<LinkSide>,
    wait: Duration,
) -> Result<(Ended, Arc<Peer>), PfError>
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
        verdict: AuthVerdict::Open,
        token: dialing.token.clone(),
        // A node that did not send the node header is a seed peer.
        seed_grace: (!speaks_hello).then_some(Duration::ZERO),
        local,
        secure: dialing.tls.is_some(),
        link: side,
    };
    let connection = conn::start(node.clone(), link, setup);
    let peer = connection.peer().clone();
    let handle = node.spawn_connection(connection.keeping(live));
    if speaks_hello {
        let failed = match timeout(wait, ready_rx).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(refused))) if refused.is(ErrorCode::Unauthorized) => {
                Some(PfError::new(ErrorCode::Unauthorized, format!("{url} refused: {}", refused.message)))
            }
            Ok(Ok(Err(refused))) => Some(dial_error(url, refused.message)),
            _ => Some(dial_error(url, "the peer did not answer hello")),
        };
        if let Some(error) = failed {
            // Not left half-made (a direct link would otherwise linger).
            if peer.is_direct_link() {
                peer.request_close();
            }
            return Err(error);
        }
    }
    Ok((handle, peer))
}
