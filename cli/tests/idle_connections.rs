//! Many idle connections cost `packetflow serve` little resident memory,
//! every one still answers, and the memory comes back once they close
//! (BENCHMARKS.md, "Idle connections", has the figures at 1,000 to 19,000).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BIN: &str = env!("CARGO_BIN_EXE_packetflow");
/// Idle connections held.
const CONNECTIONS: usize = 2_000;
/// Most resident memory one idle connection may cost the node.
const MAX_BYTES_PER_CONNECTION: u64 = 2_048;
/// Most the node's resident memory may exceed, once they closed, what it
/// was before they came.
const MAX_GROWTH_AFTER_CLOSE: f64 = 0.2;
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// `packetflow serve` on an ephemeral port, killed when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start() -> Serve {
        let max = (CONNECTIONS + 64).to_string();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--max-connections", &max])
            .args(["--handler", "df:transform=uppercase"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start packetflow serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("a piped stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("serve's first line");
        // Keep the pipe drained, so that serve never blocks on it.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Serve { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// File descriptors open now.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("/proc fd").count()
    }

    /// Resident memory once it stops moving: readings 200 ms apart, the
    /// last two seconds of them within 64 KiB of each other. The window
    /// spans at least one of serve's once-a-second allocator collections
    /// (src/allocator.rs), so what a collection gives back is not counted.
    async fn settled_rss_kib(&self) -> u64 {
        const WINDOW: usize = 11;
        let deadline = Instant::now() + WAIT;
        let mut readings = vec![self.rss_kib()];
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            readings.push(self.rss_kib());
            let last = &readings[readings.len().saturating_sub(WINDOW)..];
            let spread = last.iter().max().unwrap() - last.iter().min().unwrap();
            if last.len() == WINDOW && spread <= 64 {
                return *last.last().unwrap();
            }
            assert!(Instant::now() < deadline, "RSS never settled: {readings:?}");
        }
    }

    /// Waits (bounded) until serve holds `fds` descriptors: each connection
    /// takes one, from its accept to its close.
    async fn until_fds(&self, what: &str, done: impl Fn(usize) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self.fds()) {
            assert!(Instant::now() < deadline, "timed out waiting until {what} ({} fds)", self.fds());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets this process open a socket per connection (and some).
fn raise_own_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let need = CONNECTIONS as u64 + 256;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < need) {
        let hard = limit.maximum.unwrap_or(u64::MAX);
        assert!(hard >= need, "this test holds {CONNECTIONS} connections: it needs {need} descriptors, the hard limit is {hard}");
        setrlimit(Resource::Nofile, Rlimit { current: Some(need), maximum: limit.maximum })
            .expect("raise the soft limit");
    }
}

async fn open(url: &str) -> WebSocketStream<TcpStream> {
    let addr = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).expect("ws://HOST:PORT/...");
    let stream = TcpStream::connect(addr).await.expect("connect");
    // Small buffers: this process holds as many connections as serve.
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0);
    let (ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async_with_config(url, stream, Some(config)))
            .await
            .expect("a handshake in time")
            .expect("a handshake");
    ws
}

/// One submit and its result (a heartbeat that comes first is skipped).
async fn round_trip(ws: &mut WebSocketStream<TcpStream>, n: usize) {
    let submit = serde_json::json!({"type": "submit", "seq": 1, "payload": {
        "version": "1.0", "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "group": "df", "element": "transform", "data": "hello world", "priority": 5}});
    ws.send(Message::Text(submit.to_string().into())).await.expect("send a submit");
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if !text.as_str().contains("\"heartbeat\"") => break text,
                Some(Ok(_)) => {}
                other => panic!("connection {n} ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer in time");
    let answer: serde_json::Value = serde_json::from_str(answer.as_str()).expect("JSON");
    assert_eq!(answer["payload"]["data"], "HELLO WORLD", "connection {n}: {answer}");
}

async fn close(mut ws: WebSocketStream<TcpStream>) {
    let _ = tokio::time::timeout(WAIT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// `count` connections, opened 64 at a time.
async fn open_many(url: &str, count: usize) -> Vec<WebSocketStream<TcpStream>> {
    futures_util::stream::iter(0..count).map(|_| open(url)).buffer_unordered(64).collect().await
}

#[tokio::test(flavor = "current_thread")]
async fn two_thousand_idle_connections_cost_at_most_2_kb_each_and_their_memory_comes_back() {
    raise_own_fd_limit();
    let serve = Serve::start();
    // Its own descriptors: the fewest seen over a moment (the dashboard's
    // sampler opens /proc files for a moment every second).
    let mut fds_alone = serve.fds();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        fds_alone = fds_alone.min(serve.fds());
    }
    // Warm-up: the code a connection runs is paged in before the baseline.
    let mut warm = open_many(&serve.url, 16).await;
    for (n, ws) in warm.iter_mut().enumerate() {
        round_trip(ws, n).await;
    }
    futures_util::future::join_all(warm.into_iter().map(close)).await;
    serve.until_fds("the warm-up connections closed", |fds| fds <= fds_alone).await;
    let before = serve.settled_rss_kib().await;

    let mut conns = open_many(&serve.url, CONNECTIONS).await;
    serve.until_fds("serve holds every connection", |fds| fds >= fds_alone + CONNECTIONS).await;
    let held = serve.settled_rss_kib().await;
    let per_connection = held.saturating_sub(before) * 1024 / CONNECTIONS as u64;
    assert!(
        per_connection <= MAX_BYTES_PER_CONNECTION,
        "{CONNECTIONS} idle connections cost {per_connection} bytes each (RSS {before} KiB -> {held} KiB)"
    );

    // Every one still answers (an idle connection wakes up for its frame).
    futures_util::future::join_all(conns.iter_mut().enumerate().map(|(n, ws)| round_trip(ws, n))).await;

    futures_util::future::join_all(conns.into_iter().map(close)).await;
    serve.until_fds("every connection closed", |fds| fds <= fds_alone).await;
    let after = serve.settled_rss_kib().await;
    eprintln!("RSS {before} KiB, {held} KiB holding {CONNECTIONS} idle connections ({per_connection} B each), {after} KiB once they closed");
    let limit = before as f64 * (1.0 + MAX_GROWTH_AFTER_CLOSE);
    assert!(
        after as f64 <= limit,
        "RSS {after} KiB once the connections closed, {before} KiB before they came (held: {held} KiB)"
    );
}
