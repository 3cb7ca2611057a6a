//! Connections whose sockets a host drives ([`ConnectionSpawner::with_readiness`]):
//! each connection is polled on a thread of its own (the host's loop
//! thread, in a binding), and whenever its socket would block it asks the
//! host's watch to wake it. Here the "host" is a separate runtime whose I/O
//! driver watches the descriptors, so every readiness the connections see
//! comes through the hook, never through the node's runtime.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use futures_util::future::BoxFuture;
use packetflow::net::{Direction, SocketReadiness, SocketWatch};
use packetflow::{json, ConnectionSpawner, Node, NodeConfig, Packet, Reactor, ReactorConfig, Value};
use packetflow_tests::*;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Wakes the thread that polls a connection.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// What the host was asked, and from which threads.
#[derive(Default)]
struct Seen {
    watches: AtomicUsize,
    read_waits: AtomicUsize,
    write_waits: AtomicUsize,
    started: AtomicUsize,
    ended: AtomicUsize,
    /// Threads that called the hook.
    threads: Mutex<Vec<String>>,
    /// While set, the host holds back every read readiness (a loop busy
    /// elsewhere): the wakers wait here until [`Seen::open_reads`].
    held_reads: Mutex<Option<Vec<Waker>>>,
}

impl Seen {
    fn hold_reads(&self) {
        *self.held_reads.lock().unwrap() = Some(Vec::new());
    }

    fn open_reads(&self) {
        for waker in self.held_reads.lock().unwrap().take().unwrap_or_default() {
            waker.wake();
        }
    }

    fn note_thread(&self) {
        let name = thread::current().name().unwrap_or("?").to_owned();
        let mut threads = self.threads.lock().unwrap();
        if !threads.contains(&name) {
            threads.push(name);
        }
    }
}

/// The host: its own runtime on its own thread, whose driver watches the
/// sockets handed to it.
struct Host {
    seen: Arc<Seen>,
    runtime: tokio::runtime::Handle,
}

struct Watch {
    seen: Arc<Seen>,
    fd: AsyncFd<OwnedFd>,
}

impl SocketReadiness for Host {
    fn watch(&self, fd: OwnedFd) -> io::Result<Box<dyn SocketWatch>> {
        self.seen.note_thread();
        self.seen.watches.fetch_add(1, Ordering::SeqCst);
        let _host = self.runtime.enter();
        // SAFETY: the `AsyncFd` owns `fd` until it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Box::new(Watch { seen: self.seen.clone(), fd }))
    }
}

impl SocketWatch for Watch {
    fn wait(&mut self, direction: Direction, waker: &Waker) -> io::Result<()> {
        self.seen.note_thread();
        let counter = match direction {
            Direction::Read => &self.seen.read_waits,
            Direction::Write => &self.seen.write_waits,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if direction == Direction::Read {
            if let Some(held) = self.seen.held_reads.lock().unwrap().as_mut() {
                held.push(waker.clone());
                return Ok(());
            }
        }
        let mut cx = Context::from_waker(waker);
        // The socket just said WouldBlock: what the driver cached is stale,
        // cleared once; readiness seen after that is real.
        for _ in 0..2 {
            let ready = match direction {
                Direction::Read => self.fd.poll_read_ready(&mut cx),
                Direction::Write => self.fd.poll_write_ready(&mut cx),
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

/// A host loop on its own thread, and a spawner that polls each
/// connection on a thread named `conn-NAME` (with the node's runtime
/// entered for its timers), taking readiness from that host.
fn host_spawner(name: &'static str, seen: Arc<Seen>) -> ConnectionSpawner {
    let host_runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let host_handle = host_runtime.handle().clone();
    thread::Builder::new()
        .name(format!("host-{name}"))
        .spawn(move || host_runtime.block_on(std::future::pending::<()>()))
        .unwrap();
    let node_runtime = tokio::runtime::Handle::current();
    let readiness = Arc::new(Host { seen: seen.clone(), runtime: host_handle });
    ConnectionSpawner::new(move |mut connection: BoxFuture<'static, ()>| {
        seen.started.fetch_add(1, Ordering::SeqCst);
        let (node_runtime, seen) = (node_runtime.clone(), Arc::clone(&seen));
        thread::Builder::new()
            .name(format!("conn-{name}"))
            .spawn(move || {
                let _entered = node_runtime.enter();
                let waker = Waker::from(Arc::new(Unpark(thread::current())));
                let mut cx = Context::from_waker(&waker);
                while connection.as_mut().poll(&mut cx).is_pending() {
                    thread::park();
                }
                seen.ended.fetch_add(1, Ordering::SeqCst);
            })
            .expect("a connection thread");
    })
    .with_readiness(readiness)
}

fn config(spawner: ConnectionSpawner) -> NodeConfig {
    // Frames up to 16 MiB: more than both socket buffers of a loopback
    // connection can hold.
    NodeConfig { spawner: Some(spawner), max_frame_bytes: 16 << 20, ..NodeConfig::default() }
}

/// An echo node and a dialer, both with host-driven sockets.
async fn pair(served_seen: &Arc<Seen>, dialer_seen: &Arc<Seen>) -> (Node, Node) {
    let reactor = Reactor::new(ReactorConfig { name: "served".into(), ..ReactorConfig::default() });
    reactor.register_sync("df", "echo", |data, _| Ok(data)).unwrap();
    let (served, addr) = node_with(reactor, config(host_spawner("served", served_seen.clone()))).await;
    let dialer = Node::new(
        Reactor::new(ReactorConfig { name: "dialer".into(), ..ReactorConfig::default() }),
        config(host_spawner("dialer", dialer_seen.clone())),
    );
    dialer.connect(&url(addr)).await.expect("connect");
    (served, dialer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_over_sockets_the_host_drives_both_sides() {
    let (served_seen, dialer_seen) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let (served, dialer) = pair(&served_seen, &dialer_seen).await;

    let answers = futures_util::future::join_all((0..300).map(|i| {
        let reactor = dialer.reactor().clone();
        async move { reactor.call(Packet::build("df", "echo", json!(i)).unwrap()).await }
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("answered"), Value::from(i as u64));
    }
    // One after another too: each waits for its answer, so each read would
    // block first.
    for i in 0..50 {
        let answer = dialer.reactor().call(Packet::build("df", "echo", json!(i)).unwrap()).await;
        assert_eq!(answer.expect("answered"), Value::from(i));
    }
    for (side, seen) in [("served", &served_seen), ("dialer", &dialer_seen)] {
        assert_eq!(seen.watches.load(Ordering::SeqCst), 1, "{side}: one watch, for its one connection");
        assert!(seen.read_waits.load(Ordering::SeqCst) >= 50, "{side}: reads waited on the host");
        let threads = seen.threads.lock().unwrap().clone();
        assert_eq!(
            threads,
            vec![format!("conn-{side}")],
            "{side}: the hook is called where the spawner polls"
        );
    }

    // Stopping a node with its connection open ends both sides.
    dialer.stop().await;
    until("both connections end", || {
        dialer_seen.ended.load(Ordering::SeqCst) == 1 && served_seen.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_waits_on_the_host_when_the_send_buffer_is_full() {
    let (served_seen, dialer_seen) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let (served, dialer) = pair(&served_seen, &dialer_seen).await;
    // A 12 MB frame while the served side's loop does not read: the
    // dialer's writes fill both socket buffers and wait on its host; once
    // reads resume, the frame arrives in many reads, and the echo goes
    // back the same way.
    served_seen.hold_reads();
    let text = "x".repeat(12 << 20);
    let reactor = dialer.reactor().clone();
    let packet = Packet::build("df", "echo", json!(text.clone())).unwrap();
    let call = tokio::spawn(async move { reactor.call(packet).await });
    until("the dialer's writes wait on its host", || dialer_seen.write_waits.load(Ordering::SeqCst) > 0)
        .await;
    let reads_before = served_seen.read_waits.load(Ordering::SeqCst);
    served_seen.open_reads();
    let answer = tokio::time::timeout(WAIT, call).await.expect("answered in time").unwrap();
    assert_eq!(answer.expect("answered"), Value::String(text));
    assert!(
        served_seen.read_waits.load(Ordering::SeqCst) > reads_before,
        "the frame came in pieces, with reads that waited between them"
    );
    dialer.stop().await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_mid_frame_ends_its_connection() {
    let seen = Arc::new(Seen::default());
    let reactor = Reactor::new(ReactorConfig::default());
    register_upper(&reactor);
    let (served, addr) = node_with(reactor, config(host_spawner("served", seen.clone()))).await;

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let upgrade = format!(
        "GET /packetflow/v1 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tokio::time::timeout(WAIT, tcp.read(&mut byte)).await.unwrap().unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "upgraded: {}", String::from_utf8_lossy(&head));
    until("the connection runs on the host", || seen.started.load(Ordering::SeqCst) == 1).await;
    // A masked text frame announcing 1000 bytes, of which 10 come.
    let mut frame = vec![0x81, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
    frame.extend_from_slice(&[b'x'; 10]);
    tcp.write_all(&frame).await.unwrap();
    drop(tcp);
    until("the connection ends", || seen.ended.load(Ordering::SeqCst) == 1).await;
    until("the peer is gone", || served.peer_count() == 0).await;
    served.stop().await;
}
