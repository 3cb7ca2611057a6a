//! The TCP socket under a connection, and the hook that lets a host's own
//! event loop drive it ([`SocketReadiness`]).
//!
//! Every socket a node accepts or dials starts on the Tokio runtime: its
//! readiness comes from Tokio's I/O driver, whose thread then wakes the
//! task that reads. A binding that runs connections on its host's event
//! loop thread (a [`ConnectionSpawner`](super::ConnectionSpawner)) would
//! still pay that hand-off for every frame: the driver's thread wakes, then
//! wakes the loop's. With a [`SocketReadiness`] given to the spawner, a
//! connection's socket is handed to the host once the WebSocket upgrade is
//! done: reads and writes are plain non-blocking calls made where the
//! connection is polled, and when one would block the host is asked to
//! wake the connection once the socket is ready again (an asyncio loop's
//! `add_reader`, a libuv poll handle). Nothing else changes: TLS, frames,
//! timers (still the runtime's) and every rule are the same code.
//!
//! ```text
//!   poll_read / poll_write (on the host's thread)
//!     │ the call succeeds ──────────────────────────▶ Ready
//!     │ WouldBlock: the watch is made (first time),
//!     │ SocketWatch::wait(direction, waker) ───────▶ Pending
//!     ▼
//!   the host sees the descriptor ready: wakes the waker; the spawner polls
//!   the connection again, which reads or writes again
//! ```

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which way a socket would block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A read returned `WouldBlock`: nothing to read yet.
    Read,
    /// A write returned `WouldBlock`: the send buffer is full.
    Write,
}

#[cfg(unix)]
/// Tells connections run by a [`ConnectionSpawner`](super::ConnectionSpawner)
/// when their sockets are ready, from the host's own event loop (see
/// [`ConnectionSpawner::with_readiness`](super::ConnectionSpawner::with_readiness)).
///
/// Called from where the spawner polls connections: [`watch`](Self::watch)
/// at the first read or write of a connection's socket that would block,
/// [`SocketWatch::wait`] at each one after. Where an implementation cannot
/// reach its loop (a spawner that sometimes polls a connection on another
/// thread), `wait` may wake the waker at once (a spurious wake: the
/// connection is polled again wherever its spawner polls it next) or answer
/// an error, which ends that connection as a broken socket would.
pub trait SocketReadiness: Send + Sync {
    /// Starts watching `fd`, a duplicate of a connection's socket made for
    /// the watch: the watch owns it and closes it once done with it (when
    /// it is dropped, or later if it is dropped off the loop's thread), so
    /// the descriptor's number is never reused while the host still watches
    /// it. The socket itself is closed by the connection.
    fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>>;
}

/// The host's watch over one socket (see [`SocketReadiness`]).
#[cfg(unix)]
pub trait SocketWatch: Send {
    /// A read or write of the socket returned `WouldBlock` in `direction`:
    /// wake `waker` once the socket is ready that way (or has failed).
    /// Each call replaces the waker of its direction; a waker is woken at
    /// most once per call. A spurious wake is harmless (the call is made
    /// again and would block again), a missed one is not: readiness that
    /// came between the `WouldBlock` and this call must still wake it (as
    /// the level-triggered watches of event loops do).
    fn wait(&mut self, direction: Direction, waker: &Waker) -> io::Result<()>;

    /// Whether the socket may have become ready in `direction` since the
    /// last [`wait`](Self::wait) for it: the host reported it ready, or
    /// cannot tell. Until then the connection does not try the socket again
    /// (a connection polls its reads several times per wake-up, and each try
    /// would be a system call that fails); it only waits again. The
    /// default, `true`, always tries.
    fn may_be_ready(&self, direction: Direction) -> bool {
        let _ = direction;
        true
    }
}

/// A connection's TCP socket: on the Tokio runtime, or handed to the host
/// (see the module docs).
pub(crate) enum Socket {
    Runtime(TcpStream),
    /// Boxed: most connections stay on the runtime, and an idle one
    /// should cost no more than its socket.
    #[cfg(unix)]
    Host(Box<HostSocket>),
    /// Only if taking the socket off the runtime failed (the connection
    /// then ends at its first read or write).
    Gone,
}

impl From<TcpStream> for Socket {
    fn from(tcp: TcpStream) -> Socket {
        Socket::Runtime(tcp)
    }
}

impl Socket {
    #[cfg(unix)]
    /// Takes the socket off the Tokio runtime: from now on its readiness
    /// comes from `readiness`. Call it before the connection's first poll
    /// by its spawner. Nothing happens to a socket handed over already.
    pub(crate) fn hand_to_host(&mut self, readiness: &Arc<dyn SocketReadiness>) {
        if !matches!(self, Socket::Runtime(_)) {
            return;
        }
        let Socket::Runtime(tcp) = std::mem::replace(self, Socket::Gone) else { return };
        // Deregisters it from the runtime's driver; it stays non-blocking.
        if let Ok(stream) = tcp.into_std() {
            *self = Socket::Host(Box::new(HostSocket {
                watch: None,
                read_blocked: false,
                write_blocked: false,
                readiness: readiness.clone(),
                stream,
            }));
        }
    }

    /// Whether the host drives it.
    #[cfg(all(test, unix))]
    pub(crate) fn is_host_driven(&self) -> bool {
        matches!(self, Socket::Host(_))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket could not be taken off the runtime")
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Runtime(tcp) => Pin::new(tcp).poll_read(cx, buf),
            #[cfg(unix)]
            Socket::Host(host) => host.poll_read(cx, buf),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Runtime(tcp) => Pin::new(tcp).poll_write(cx, buf),
            #[cfg(unix)]
            Socket::Host(host) => host.poll_write(cx, |mut s| s.write(buf)),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Runtime(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Socket::Host(host) => host.poll_write(cx, |mut s| s.write_vectored(bufs)),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Runtime(tcp) => tcp.is_write_vectored(),
            _ => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Runtime(tcp) => Pin::new(tcp).poll_flush(cx),
            // A TCP socket buffers nothing of its own to flush.
            #[cfg(unix)]
            Socket::Host(_) => Poll::Ready(Ok(())),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Runtime(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(unix)]
            Socket::Host(host) => Poll::Ready(match host.stream.shutdown(Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            }),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// A socket whose readiness the host reports.
#[cfg(unix)]
pub(crate) struct HostSocket {
    /// Made at the first call that would block (on the host's thread).
    /// Declared first: dropped (and its duplicate released) before the
    /// socket closes.
    watch: Option<Box<dyn SocketWatch>>,
    /// The last read, and the last write, would have blocked: the socket is
    /// tried again only once the watch says it may be ready.
    read_blocked: bool,
    write_blocked: bool,
    readiness: Arc<dyn SocketReadiness>,
    stream: std::net::TcpStream,
}

#[cfg(unix)]
impl HostSocket {
    /// Asks the host to wake `cx` once the socket is ready in `direction`.
    fn wait(&mut self, direction: Direction, cx: &mut Context<'_>) -> io::Result<()> {
        let watch = match &mut self.watch {
            Some(watch) => watch,
            None => self.watch.insert(self.readiness.watch(self.stream.as_fd().try_clone_to_owned()?)?),
        };
        watch.wait(direction, cx.waker())
    }

    /// Whether `direction` blocked last time and the host has not said
    /// since that it may be ready.
    fn still_blocked(&self, direction: Direction) -> bool {
        let blocked = match direction {
            Direction::Read => self.read_blocked,
            Direction::Write => self.write_blocked,
        };
        blocked && self.watch.as_ref().is_some_and(|w| !w.may_be_ready(direction))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.still_blocked(Direction::Read) {
            return match self.wait(Direction::Read, cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        loop {
            match (&self.stream).read(buf.initialize_unfilled()) {
                Ok(n) => {
                    self.read_blocked = false;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_blocked = true;
                    return match self.wait(Direction::Read, cx) {
                        Ok(()) => Poll::Pending,
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&std::net::TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.still_blocked(Direction::Write) {
            return match self.wait(Direction::Write, cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        loop {
            match write(&self.stream) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return match self.wait(Direction::Write, cx) {
                        Ok(()) => Poll::Pending,
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
                done => {
                    self.write_blocked = false;
                    return Poll::Ready(done);
                }
            }
        }
    }
}

/// A stream with, somewhere under its layers (TLS, a replayed request
/// head, the frame tally), one of this node's TCP sockets: the way to hand
/// it to the host once the connection is set up.
pub(crate) trait HasSocket {
    /// The TCP socket under this stream, if it has one.
    fn socket(&mut self) -> Option<&mut Socket>;
}

impl HasSocket for Socket {
    fn socket(&mut self) -> Option<&mut Socket> {
        Some(self)
    }
}

impl<S: HasSocket> HasSocket for Box<S> {
    fn socket(&mut self) -> Option<&mut Socket> {
        (**self).socket()
    }
}

#[cfg(feature = "tls")]
impl<S: HasSocket> HasSocket for tokio_rustls::server::TlsStream<S> {
    fn socket(&mut self) -> Option<&mut Socket> {
        self.get_mut().0.socket()
    }
}

#[cfg(feature = "tls")]
impl<S: HasSocket> HasSocket for tokio_rustls::client::TlsStream<S> {
    fn socket(&mut self) -> Option<&mut Socket> {
        self.get_mut().0.socket()
    }
}

#[cfg(feature = "tls")]
impl<A: HasSocket, B: HasSocket> HasSocket for tokio_util::either::Either<A, B> {
    fn socket(&mut self) -> Option<&mut Socket> {
        match self {
            tokio_util::either::Either::Left(a) => a.socket(),
            tokio_util::either::Either::Right(b) => b.socket(),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A host for the tests whose loop is the test's runtime: a watch is an
    /// `AsyncFd` over the duplicate, and it counts what it was asked.
    #[derive(Default)]
    struct Counts {
        watches: AtomicUsize,
        reads: AtomicUsize,
        writes: AtomicUsize,
    }

    struct Host(Arc<Counts>);

    struct Watch(Arc<Counts>, AsyncFd<OwnedFd>);

    impl SocketReadiness for Host {
        fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
            self.0.watches.fetch_add(1, Ordering::SeqCst);
            // SAFETY: the `AsyncFd` owns `fd`, which stays open and the same
            // until the `AsyncFd` is dropped.
            let watched = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
            Ok(Box::new(Watch(self.0.clone(), watched)))
        }
    }

    impl SocketWatch for Watch {
        fn wait(&mut self, direction: Direction, waker: &Waker) -> io::Result<()> {
            let mut cx = Context::from_waker(waker);
            let counter = if direction == Direction::Read { &self.0.reads } else { &self.0.writes };
            counter.fetch_add(1, Ordering::SeqCst);
            // The socket just said WouldBlock: readiness cached from before
            // is stale. Cleared once; readiness seen after that is real.
            for _ in 0..2 {
                let ready = match direction {
                    Direction::Read => self.1.poll_read_ready(&mut cx),
                    Direction::Write => self.1.poll_write_ready(&mut cx),
                };
                match ready {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(guard) => guard?.clear_ready(),
                }
            }
            waker.wake_by_ref();
            Ok(())
        }
    }

    async fn pair() -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (Socket::from(dialed), accepted)
    }

    fn host() -> (Arc<Counts>, Arc<dyn SocketReadiness>) {
        let counts = Arc::new(Counts::default());
        (counts.clone(), Arc::new(Host(counts)))
    }

    const WAIT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_handed_over_socket_waits_on_the_host_both_ways() {
        let (counts, readiness) = host();
        let (mut socket, mut peer) = pair().await;
        socket.hand_to_host(&readiness);
        assert!(socket.is_host_driven());

        // Nothing to read yet: the read waits on the host, then ends when
        // the peer writes.
        let mut buf = [0u8; 64];
        let mut read = std::pin::pin!(socket.read(&mut buf));
        assert!(futures::poll!(read.as_mut()).is_pending());
        assert_eq!((counts.watches.load(Ordering::SeqCst), counts.reads.load(Ordering::SeqCst)), (1, 1));
        peer.write_all(b"hello").await.unwrap();
        let n = tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"hello");

        // More than both socket buffers hold: the writes block until the
        // peer reads, and each WouldBlock waits on the host.
        const BIG: usize = 32 << 20;
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; BIG];
            peer.read_exact(&mut got).await.unwrap();
            (got, peer)
        });
        tokio::time::timeout(WAIT, socket.write_all(&vec![7u8; BIG])).await.unwrap().unwrap();
        let (got, _peer) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert!(got.iter().all(|b| *b == 7));
        assert!(counts.writes.load(Ordering::SeqCst) > 0, "a full send buffer waits on the host");
        assert_eq!(counts.watches.load(Ordering::SeqCst), 1, "one watch for the socket's life");
    }

    #[tokio::test]
    async fn the_end_of_the_stream_and_shutdown_go_through() {
        let (_counts, readiness) = host();
        let (mut socket, mut peer) = pair().await;
        socket.hand_to_host(&readiness);
        socket.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, peer.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty(), "the peer reads the end");
        peer.write_all(b"bye").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, socket.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn after_a_would_block_the_socket_is_tried_again_only_once_the_host_says_so() {
        use std::sync::atomic::AtomicBool;
        /// A host whose readiness the test sets by hand.
        struct Manual(Arc<AtomicBool>);
        struct ManualWatch(Arc<AtomicBool>, #[allow(dead_code)] OwnedFd);
        impl SocketReadiness for Manual {
            fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
                Ok(Box::new(ManualWatch(self.0.clone(), fd)))
            }
        }
        impl SocketWatch for ManualWatch {
            fn wait(&mut self, _direction: Direction, _waker: &Waker) -> io::Result<()> {
                self.0.store(false, Ordering::SeqCst);
                Ok(())
            }
            fn may_be_ready(&self, _direction: Direction) -> bool {
                self.0.load(Ordering::SeqCst)
            }
        }
        let ready = Arc::new(AtomicBool::new(false));
        let readiness: Arc<dyn SocketReadiness> = Arc::new(Manual(ready.clone()));
        let (mut socket, mut peer) = pair().await;
        socket.hand_to_host(&readiness);
        let mut buf = [0u8; 16];
        let mut read = std::pin::pin!(socket.read(&mut buf));
        assert!(futures::poll!(read.as_mut()).is_pending(), "nothing to read");
        peer.write_all(b"data").await.unwrap();
        peer.flush().await.unwrap();
        // The bytes are there, but the host has not said so: not read.
        for _ in 0..3 {
            assert!(futures::poll!(read.as_mut()).is_pending(), "tried before the host said ready");
        }
        ready.store(true, Ordering::SeqCst);
        let n = tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"data");
    }

    #[tokio::test]
    async fn a_host_that_cannot_watch_fails_the_call_instead_of_hanging() {
        struct Refusing;
        impl SocketReadiness for Refusing {
            fn watch(&self, _fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
                Err(io::Error::other("not on the loop's thread"))
            }
        }
        let readiness: Arc<dyn SocketReadiness> = Arc::new(Refusing);
        let (mut socket, _peer) = pair().await;
        socket.hand_to_host(&readiness);
        let mut buf = [0u8; 8];
        let e = socket.read(&mut buf).await.unwrap_err();
        assert_eq!(e.to_string(), "not on the loop's thread");
    }
}
