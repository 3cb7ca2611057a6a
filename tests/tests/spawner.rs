//! Connections run by a [`ConnectionSpawner`] instead of on the Tokio
//! runtime: both the accepted and the dialed side, handlers included, are
//! polled where the spawner puts them, and they end with the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread::{self, Thread};

use futures_util::future::BoxFuture;
use packetflow::{json, ConnectionSpawner, Node, NodeConfig, Packet, Reactor, ReactorConfig, Value};
use packetflow_tests::*;

/// Wakes the thread that polls a connection.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// How many connections a spawner started and how many ended.
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    ended: AtomicUsize,
}

/// Polls each connection to completion on a thread of its own named
/// `conn-NAME`, with the test's runtime entered (its driver wakes them).
fn thread_spawner(name: &'static str, counts: Arc<Counts>) -> ConnectionSpawner {
    let runtime = tokio::runtime::Handle::current();
    ConnectionSpawner::new(move |mut connection: BoxFuture<'static, ()>| {
        counts.started.fetch_add(1, Ordering::SeqCst);
        let (runtime, counts) = (runtime.clone(), Arc::clone(&counts));
        thread::Builder::new()
            .name(format!("conn-{name}"))
            .spawn(move || {
                let _entered = runtime.enter();
                let waker = Waker::from(Arc::new(Unpark(thread::current())));
                let mut cx = Context::from_waker(&waker);
                while connection.as_mut().poll(&mut cx).is_pending() {
                    thread::park();
                }
                counts.ended.fetch_add(1, Ordering::SeqCst);
            })
            .expect("a connection thread");
    })
}

fn config(spawner: ConnectionSpawner) -> NodeConfig {
    NodeConfig { spawner: Some(spawner), ..NodeConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_run_where_the_spawner_puts_them_and_end_with_the_node() {
    let (served_counts, dialer_counts) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
    let reactor = Reactor::new(ReactorConfig { name: "served".into(), ..ReactorConfig::default() });
    // Where the handler ran: a handler is polled by its connection.
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ran_on);
    reactor
        .register_sync("df", "where", move |data, _| {
            seen.lock().unwrap().push(thread::current().name().unwrap_or("?").to_owned());
            Ok(data)
        })
        .unwrap();
    let (served, addr) = node_with(reactor, config(thread_spawner("served", served_counts.clone()))).await;
    let dialer = Node::new(
        Reactor::new(ReactorConfig { name: "dialer".into(), ..ReactorConfig::default() }),
        config(thread_spawner("dialer", dialer_counts.clone())),
    );
    dialer.connect(&url(addr)).await.expect("connect");

    let answers = futures_util::future::join_all((0..200).map(|i| {
        let reactor = dialer.reactor().clone();
        async move { reactor.call(Packet::build("df", "where", json!(i)).unwrap()).await }
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("answered"), Value::from(i as u64));
    }
    assert_eq!(served_counts.started.load(Ordering::SeqCst), 1, "the accepted connection");
    assert_eq!(dialer_counts.started.load(Ordering::SeqCst), 1, "the dialed connection");
    let threads = ran_on.lock().unwrap().clone();
    assert_eq!(threads.len(), 200);
    assert!(threads.iter().all(|t| t == "conn-served"), "handlers ran on {threads:?}");

    dialer.stop().await;
    until("both connections end", || {
        dialer_counts.ended.load(Ordering::SeqCst) == 1 && served_counts.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    served.stop().await;
}
