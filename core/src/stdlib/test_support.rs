//! What the standard library's tests share: submitting a packet by its
//! key, reading its answer or its failure, a recording handler, waits.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::actor::FileStore;
use crate::packet::Packet;
use crate::reactor::Reactor;
use crate::result::PacketResult;

/// How long any wait of these tests may take before it fails.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A step calling `df:<element>`.
pub(super) fn step(element: &str) -> Value {
    json!({"group": "df", "element": element})
}

/// Submits `key` (`group:element`) with `data`.
pub(super) async fn run(r: &Reactor, key: &str, data: Value) -> PacketResult {
    let (group, element) = key.split_once(':').unwrap();
    r.submit(Packet::build(group, element, data).unwrap()).await
}

/// [`run`] with a timeout of `timeout_ms`.
pub(super) async fn run_within(r: &Reactor, key: &str, data: Value, timeout_ms: u64) -> PacketResult {
    let (group, element) = key.split_once(':').unwrap();
    r.submit(Packet::build(group, element, data).unwrap().with_timeout_ms(timeout_ms)).await
}

/// [`run`]'s answer, which must be a success.
pub(super) async fn ok(r: &Reactor, key: &str, data: Value) -> Value {
    let result = run(r, key, data.clone()).await;
    result.outcome.unwrap_or_else(|e| panic!("{key} {data}: {} {}", e.code, e.message))
}

/// The error's code and message, for asserts.
pub(super) fn failure(result: &PacketResult) -> (String, String) {
    let e = result.err().unwrap_or_else(|| panic!("expected a failure, got {result:?}"));
    (e.code.clone(), e.message.clone())
}

/// [`run`] in a task of its own.
pub(super) fn spawn_run(r: &Reactor, key: &'static str, data: Value) -> JoinHandle<PacketResult> {
    let r = r.clone();
    tokio::spawn(async move { run(&r, key, data).await })
}

/// The answer of a task [`spawn_run`] started, within [`WAIT`].
pub(super) async fn joined(task: JoinHandle<PacketResult>) -> PacketResult {
    tokio::time::timeout(WAIT, task).await.expect("the call did not end in time").unwrap()
}

/// What a recording handler (`df:seen`, [`Seen::register`]) saw, and a
/// signal for each call.
#[derive(Clone, Default)]
pub(super) struct Seen {
    calls: Arc<Mutex<Vec<Value>>>,
    called: Arc<Notify>,
}

impl Seen {
    /// Registers `df:seen` on `r`: records its data, answers `null`.
    pub(super) fn register(&self, r: &Reactor) {
        let seen = self.clone();
        r.register_sync("df", "seen", move |d, _| {
            seen.calls.lock().push(d.clone());
            seen.called.notify_waiters();
            Ok(Value::Null)
        })
        .unwrap();
    }

    pub(super) fn count(&self) -> usize {
        self.calls.lock().len()
    }

    pub(super) fn all(&self) -> Vec<Value> {
        self.calls.lock().clone()
    }

    /// Waits until `n` calls were seen.
    pub(super) async fn until(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let called = self.called.notified();
            if self.count() >= n {
                return;
            }
            tokio::time::timeout_at(deadline, called)
                .await
                .unwrap_or_else(|_| panic!("{} calls seen, not {n}", self.count()));
        }
    }
}

/// Opens the store at `path` once the reactor that had it let it go (its
/// last tasks end shortly after it stopped).
pub(super) async fn reopen(path: &std::path::Path) -> FileStore {
    let deadline = Instant::now() + WAIT;
    loop {
        match FileStore::open(path) {
            Ok(store) => return store,
            Err(e) => assert!(Instant::now() < deadline, "{}", e.message),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
