//! The dashboard every listening node serves on its own port
//! (`docs/dashboard.md`): one page with its assets embedded in the binary
//! (the charting library, uPlot, vendored from its npm package by
//! `scripts/vendor-uplot.sh`), and the node's state pushed to it as
//! server-sent events, at most once a second.
//!
//! | path | what | auth on |
//! |---|---|---|
//! | `/`, `/ui` | redirect to `/ui/` | open |
//! | `/ui/` and its assets | the page (the same static files on every node) | open |
//! | `/ui/api/events` | `snapshot` event, then a `tick` event each second | token with `dashboard` |
//! | `/ui/api/snapshot` | the `snapshot` event's document, once | token with `dashboard` |
//! | `/ui/api/trace?id=ID` | the hops of trace `ID` this node saw | token with `dashboard` |
//!
//! The data is `/health`'s document ([`metrics::health`]: peers, handlers,
//! actors per type) plus the process's CPU and memory, per-key series ([`history`]), errors by code,
//! the last failed packets and traces ([`recorder`]). One sampler task per
//! node takes a sample each second and, only while someone watches, builds
//! the `tick` event once for every open stream.

mod history;
mod process;
pub(crate) mod recorder;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{timeout, Duration, Instant, MissedTickBehavior};

use super::auth::{self, AuthTable};
use super::node::NodeInner;
use super::peers::Peer;
use super::{http, metrics};
use history::{History, Served};
pub(crate) use recorder::{Recorder, ServedBy};

/// How often the sampler samples and open streams get an event.
const TICK: Duration = Duration::from_secs(1);
/// Event streams open at once; more are answered 503.
const MAX_STREAMS: usize = 64;
/// A stream whose client does not take an event within this time is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed packets sent with each event.
const FAILURES_SHOWN: usize = 50;

/// The dashboard's state in a node.
pub(crate) struct Dashboard {
    pub(crate) recorder: Recorder,
    history: Mutex<History>,
    process: Mutex<ProcessSample>,
    /// The latest `tick` event, for every open stream.
    ticks: watch::Sender<Option<Arc<str>>>,
    sampling: AtomicBool,
    streams: AtomicUsize,
}

#[derive(Default, Clone, Copy)]
struct ProcessSample {
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            recorder: Recorder::default(),
            history: Mutex::new(History::default()),
            process: Mutex::new(ProcessSample::default()),
            ticks: watch::Sender::new(None),
            sampling: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
        }
    }
}

/// Starts the node's sampler (once; it ends when the node stops).
pub(crate) fn start_sampler(node: &Arc<NodeInner>) {
    if node.dashboard.sampling.swap(true, Ordering::AcqRel) {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping = std::pin::pin!(node.stopping());
        let mut last = Instant::now();
        let mut last_cpu = process::cpu_time_us();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stopping => break,
            }
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(last);
            last = now;
            let cpu = process::cpu_time_us();
            sample(&node, elapsed, last_cpu, cpu);
            last_cpu = cpu;
        }
    });
}

fn sample(node: &NodeInner, elapsed: Duration, cpu_before: Option<u64>, cpu_now: Option<u64>) {
    let board = &node.dashboard;
    board.recorder.refill_budgets();
    let mut keys: Vec<(Served, _)> =
        node.reactor.stats().handlers.into_iter().map(|h| (Served::Local, h)).collect();
    keys.extend(board.recorder.routed_stats().into_iter().map(|h| (Served::Routed, h)));
    let at_s = super::conn::epoch_ms() / 1000;
    board.history.lock().sample(at_s, elapsed.as_secs_f64(), keys);
    let cpu_percent = match (cpu_before, cpu_now) {
        (Some(a), Some(b)) if !elapsed.is_zero() => {
            Some((b.saturating_sub(a) as f64 / elapsed.as_micros() as f64 * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    *board.process.lock() = ProcessSample { cpu_percent, rss_bytes: process::rss_bytes() };
    // Built once for all the open streams, and only when there are some.
    if board.ticks.receiver_count() > 0 {
        let tick: Arc<str> = document(node, true).to_string().into();
        board.ticks.send_replace(Some(tick));
    }
}

/// How a peer is named in failures and traces.
pub(crate) fn peer_label(peer: &Peer) -> String {
    match peer.hello() {
        Some(hello) => format!("{} ({}, {})", hello.name, hello.runtime, peer.remote),
        None => format!("seed peer ({})", peer.remote),
    }
}

/// Names connection `id`, if it is still a peer.
pub(crate) fn connection_name(node: &NodeInner, id: u64) -> String {
    let peer = node.peers.read().all().find(|p| p.id == id).cloned();
    peer.map_or_else(|| format!("connection {id} (closed)"), |p| peer_label(&p))
}

/// The dashboard's document: `/health`'s, and what only the dashboard
/// shows. `latest_only`: each key's newest point instead of its series.
fn document(node: &NodeInner, latest_only: bool) -> Value {
    let board = &node.dashboard;
    let process = *board.process.lock();
    json!({
        "at_ms": super::conn::epoch_ms(),
        "health": metrics::health(node),
        "process": {
            "cpu_percent": process.cpu_percent,
            "rss_bytes": process.rss_bytes,
            "uptime_s": node.started.elapsed().as_secs(),
        },
        "keys": board.history.lock().to_json(latest_only),
        "errors_by_code": board.recorder.errors_by_code(),
        "failures": board.recorder.failures(FAILURES_SHOWN),
    })
}

/// Whether a request may read the dashboard's data.
enum Access {
    Allowed,
    /// 401: no token, or not one of the node's.
    Unauthorized(&'static str),
    /// 403: a valid token without the `dashboard` permission.
    Forbidden,
}

fn access(auth: Option<&AuthTable>, authorization: Option<&str>) -> Access {
    let Some(table) = auth else { return Access::Allowed };
    let Some(header) = authorization else {
        return Access::Unauthorized(
            "this node requires a token with the dashboard permission (Authorization: Bearer)",
        );
    };
    match auth::bearer(header).and_then(|t| table.check(t)) {
        Some(grant) if grant.dashboard => Access::Allowed,
        Some(_) => Access::Forbidden,
        None => Access::Unauthorized("the token presented is not valid"),
    }
}

/// One embedded file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        path: "/ui/vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/ui/vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/vendor/uPlot.min.css"),
    },
    Asset {
        path: "/ui/vendor/uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("assets/vendor/uPlot.LICENSE"),
    },
];

/// Headers of every dashboard answer: nothing but this node's own files
/// may run or load in the page, no framing, no referrer.
const PAGE_HEADERS: &str = "content-security-policy: default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n";
const DATA_HEADERS: &str = "cache-control: no-store\r\nx-content-type-options: nosniff\r\n";

/// Whether `path` (without its query) is one the dashboard serves.
pub(crate) fn serves(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Answers a dashboard request (`path` as [`serves`] accepted it, `query`
/// the part after `?`).
pub(crate) async fn serve<S>(
    node: Arc<NodeInner>,
    mut stream: S,
    path: &str,
    query: &str,
    authorization: Option<&str>,
    auth: Option<&AuthTable>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if path == "/" || path == "/ui" {
        let _ = http::respond_with(&mut stream, 302, "text/plain", "location: /ui/\r\n", b"see /ui/\n").await;
        return;
    }
    if let Some(asset) = ASSETS.iter().find(|a| a.path == path) {
        let headers = format!("{PAGE_HEADERS}cache-control: no-cache\r\n");
        let _ = http::respond_with(&mut stream, 200, asset.content_type, &headers, asset.body).await;
        return;
    }
    if !path.starts_with("/ui/api/") {
        let _ = http::respond(&mut stream, 404, "text/plain", "not found\n").await;
        return;
    }
    match access(auth, authorization) {
        Access::Allowed => {}
        Access::Unauthorized(why) => {
            let _ = http::respond_with(
                &mut stream,
                401,
                "text/plain",
                DATA_HEADERS,
                format!("{why}\n").as_bytes(),
            )
            .await;
            return;
        }
        Access::Forbidden => {
            let why = "this token may not open the dashboard (its entry needs dashboard = true)\n";
            let _ = http::respond_with(&mut stream, 403, "text/plain", DATA_HEADERS, why.as_bytes()).await;
            return;
        }
    }
    match path {
        "/ui/api/events" => stream_events(node, stream).await,
        "/ui/api/snapshot" => {
            let body = document(&node, false).to_string();
            let _ =
                http::respond_with(&mut stream, 200, "application/json", DATA_HEADERS, body.as_bytes()).await;
        }
        "/ui/api/trace" => {
            let Some(id) = query_param(query, "id").filter(|id| !id.is_empty()) else {
                let why = "trace wants ?id=TRACE_ID (a packet's pf.trace_id, or the id of the packet that began it)\n";
                let _ = http::respond(&mut stream, 400, "text/plain", why).await;
                return;
            };
            let name = |conn: u64| connection_name(&node, conn);
            let body = node.dashboard.recorder.trace(&id, &name).to_string();
            let _ =
                http::respond_with(&mut stream, 200, "application/json", DATA_HEADERS, body.as_bytes()).await;
        }
        _ => {
            let _ = http::respond(&mut stream, 404, "text/plain", "not found\n").await;
        }
    }
}

/// Counts an open event stream while it lives.
struct StreamSlot<'a>(&'a AtomicUsize);

impl<'a> StreamSlot<'a> {
    fn take(count: &'a AtomicUsize) -> Option<StreamSlot<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_STREAMS).then_some(n + 1))
            .ok()
            .map(|_| StreamSlot(count))
    }
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends the `snapshot` event, then each `tick` as the sampler makes it,
/// until the client goes away, stops reading, or the node stops.
async fn stream_events<S>(node: Arc<NodeInner>, mut stream: S)
where
    S: AsyncWrite + Unpin,
{
    let Some(_slot) = StreamSlot::take(&node.dashboard.streams) else {
        let why = format!("this node serves at most {MAX_STREAMS} dashboard streams at once; retry later\n");
        let _ = http::respond(&mut stream, 503, "text/plain", &why).await;
        return;
    };
    let mut ticks = node.dashboard.ticks.subscribe();
    ticks.mark_unchanged();
    let snapshot = document(&node, false).to_string();
    let opened = async {
        http::start_event_stream(&mut stream).await?;
        http::write_event(&mut stream, "snapshot", &snapshot).await
    };
    if !matches!(timeout(WRITE_TIMEOUT, opened).await, Ok(Ok(()))) {
        return;
    }
    drop(snapshot);
    let mut stopping = std::pin::pin!(node.stopping());
    loop {
        tokio::select! {
            changed = ticks.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(tick) = ticks.borrow_and_update().clone() else { continue };
                if !matches!(timeout(WRITE_TIMEOUT, http::write_event(&mut stream, "tick", &tick)).await, Ok(Ok(()))) {
                    break;
                }
            }
            _ = &mut stopping => break,
        }
    }
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(query_param("id=abc", "id").as_deref(), Some("abc"));
        assert_eq!(query_param("x=1&id=a%2Fb+c", "id").as_deref(), Some("a/b c"));
        assert_eq!(query_param("id=100%", "id").as_deref(), Some("100%"));
        assert_eq!(query_param("ids=1", "id"), None);
        assert_eq!(query_param("id=%ff", "id"), None, "not UTF-8");
    }

    #[test]
    fn every_asset_is_embedded_and_the_page_names_only_its_own() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..ASSETS.len() - 1] {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            assert!(page.contains(asset.path), "the page loads {}", asset.path);
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "nothing from elsewhere");
    }
}
