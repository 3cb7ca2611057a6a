//! The HTTP side of a node's port: reading the request head, answering
//! `GET /health`, `GET /metrics` and the dashboard (plain responses and a
//! stream of server-sent events), and handing WebSocket upgrades on to
//! tungstenite with the bytes already read replayed in front of the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest request head accepted; longer ones are refused (431).
const MAX_HEAD: usize = 16 * 1024;

/// What a connection asked for.
pub(crate) enum Request {
    /// A WebSocket upgrade (path checked by the handshake callback).
    Upgrade,
    /// A plain `GET` of a path, with its `Authorization` header if any.
    Get {
        /// The path asked for (query included).
        path: String,
        /// The `Authorization` header's value.
        authorization: Option<String>,
    },
    /// Something else; answered 400/405 and closed.
    Bad(u16, &'static str),
}

/// Reads the request head (bounded in size; the caller bounds the time),
/// returning what it asks for and every byte read so far.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Request, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the request head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let upgrade = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("upgrade")
                        && String::from_utf8_lossy(h.value).eq_ignore_ascii_case("websocket")
                });
                let authorization = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                let request = match (req.method, req.path) {
                    _ if upgrade => Request::Upgrade,
                    (Some("GET"), Some(path)) => Request::Get { path: path.to_owned(), authorization },
                    (Some(_), _) => Request::Bad(405, "only GET and WebSocket upgrades are served here"),
                    _ => Request::Bad(400, "malformed request"),
                };
                return Ok((request, buf));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Ok((Request::Bad(431, "request head too large"), buf)),
            Err(_) => return Ok((Request::Bad(400, "malformed request"), buf)),
        }
    }
}

/// Writes a complete HTTP/1.1 response and shuts the write side down.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    respond_with(stream, status, content_type, "", body.as_bytes()).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// [`respond`] with more header lines (`headers`, each ending in CRLF) and
/// a body of any bytes.
pub(crate) async fn respond_with<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    headers: &str,
    body: &[u8],
) -> io::Result<()> {
    let reason = reason(status);
    let challenge = if status == 401 { "www-authenticate: Bearer\r\n" } else { "" };
    // Head and body leave in one write: a WebSocket client (tungstenite)
    // keeps as the refusal's body only what arrived with the head, so a
    // body sent in a second segment would be lost to the dialer's message.
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{challenge}{headers}connection: close\r\n\r\n",
        body.len()
    );
    let mut answer = Vec::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(body);
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

/// Starts a `text/event-stream` response (server-sent events): the head
/// only; the events follow until the connection closes.
pub(crate) async fn start_event_stream<S: AsyncWrite + Unpin>(stream: &mut S) -> io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

/// Writes one server-sent event named `event` whose data is `data` (one
/// line: JSON without newlines).
pub(crate) async fn write_event<S: AsyncWrite + Unpin>(
    stream: &mut S,
    event: &str,
    data: &str,
) -> io::Result<()> {
    let mut frame = String::with_capacity(event.len() + data.len() + 16);
    frame.push_str("event: ");
    frame.push_str(event);
    frame.push_str("\ndata: ");
    frame.push_str(data);
    frame.push_str("\n\n");
    stream.write_all(frame.as_bytes()).await?;
    stream.flush().await
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub(crate) struct Replay<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay { prefix, offset: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset < this.prefix.len() {
            let rest = &this.prefix[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                this.prefix = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

delegate_async_write!(Replay);

impl<S: super::socket::HasSocket> super::socket::HasSocket for Replay<S> {
    fn socket(&mut self) -> Option<&mut super::socket::Socket> {
        self.inner.socket()
    }
}
