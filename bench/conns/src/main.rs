//! Opens many idle WebSocket connections to a node and measures what they
//! cost it: resident memory per connection, how fast they open, a round
//! trip on a sample of them and on every one at the end, and how much of the
//! memory comes back once they close.
//!
//! ```text
//! conns-bench URL --n N --pid PID [--sources K] [--parallel P] [--sample M]
//! ```
//!
//! `URL` is `ws://127.0.0.1:PORT/PATH`; the server must serve `df:transform`
//! (uppercase) with the PacketFlow submit/result frames. Connections are
//! bound to the source addresses 127.0.0.2 .. 127.0.0.(K+1) in turn, so that
//! N may exceed one address's ephemeral port range. Each connection answers
//! the server's heartbeats with one of its own (as the seed's clients beat),
//! and sends nothing else until the round trips at the end.
//!
//! Memory is the server's `VmRSS` (`/proc/PID/status`), read once it has
//! settled (four readings in a row, 250 ms apart, within 0.5% or 64 KiB of
//! each other; at most `--settle-s`). The starting figure is read after a
//! warm-up (16 connections opened, one round trip each, closed), so that
//! the code a connection runs is already paged in. Prints one JSON object.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long one handshake, one round trip or one close may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Descriptors this process needs besides one per connection.
const SPARE_FDS: u64 = 64;

struct Args {
    url: String,
    addr: SocketAddr,
    n: usize,
    pid: u32,
    sources: u8,
    parallel: usize,
    sample: usize,
    settle: Duration,
}

fn usage() -> String {
    "usage: conns-bench ws://127.0.0.1:PORT/PATH --n N --pid PID [--sources K] [--parallel P] [--sample M] [--settle-s S]"
        .into()
}

fn parse_args() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let url = argv.next().ok_or_else(usage)?;
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("URL must be ws://HOST:PORT/PATH, got {url:?}"))?;
    let addr: SocketAddr = host.parse().map_err(|e| format!("URL host {host:?}: {e}"))?;
    let mut args = Args {
        url: url.clone(),
        addr,
        n: 0,
        pid: 0,
        sources: 8,
        parallel: 128,
        sample: 200,
        settle: Duration::from_secs(20),
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--n" => args.n = number(&value)?,
            "--pid" => args.pid = number(&value)? as u32,
            "--sources" => args.sources = number(&value)?.clamp(1, 250) as u8,
            "--parallel" => args.parallel = number(&value)?.max(1),
            "--sample" => args.sample = number(&value)?,
            "--settle-s" => args.settle = Duration::from_secs(number(&value)? as u64),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    if args.n == 0 || args.pid == 0 {
        return Err(usage());
    }
    Ok(args)
}

/// Raises this process's descriptor limit to what `n` connections need;
/// an error naming both numbers when the hard limit is lower.
fn raise_fd_limit(n: usize) -> Result<(), String> {
    let need = n as u64 + SPARE_FDS;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur >= need {
        return Ok(());
    }
    if limit.rlim_max < need {
        return Err(format!(
            "{n} connections need {need} descriptors; this client may open at most {} (hard limit)",
            limit.rlim_max
        ));
    }
    limit.rlim_cur = need;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The server's RSS once it stops moving (bounded by `limit`).
async fn settled_rss(pid: u32, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = rss_kib(pid);
    let mut steady = 0;
    while steady < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        let close = now.abs_diff(last) <= (last / 200).max(64);
        steady = if close { steady + 1 } else { 0 };
        last = now;
    }
    last
}

/// Waits (bounded) until the server holds at most `fds` descriptors.
async fn until_fds_at_most(pid: u32, fds: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let now = fd_count(pid);
        if now <= fds || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Command {
    /// One submit; the round trip's duration, or why it failed.
    Probe(oneshot::Sender<Result<Duration, String>>),
    /// Close the connection; answered once it is closed.
    Close(oneshot::Sender<()>),
}

fn heartbeat() -> Message {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Message::Text(json!({"type": "heartbeat", "seq": 0, "timestamp": ms}).to_string().into())
}

fn submit(seq: u64, conn: usize) -> Message {
    let frame = json!({"type": "submit", "seq": seq, "payload": {
        "version": "1.0", "id": format!("00000000-0000-4000-8000-{conn:012x}"),
        "group": "df", "element": "transform", "data": "hello world", "priority": 5}});
    Message::Text(frame.to_string().into())
}

async fn open(args: &Args, i: usize) -> Result<WebSocketStream<TcpStream>, String> {
    let source = Ipv4Addr::new(127, 0, 0, 2 + (i % args.sources as usize) as u8);
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::new(source.into(), 0)).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(args.addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Small buffers: the client holds as many connections as the server.
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(args.url.as_str(), stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// One connection: answers heartbeats, runs the commands it is sent.
async fn hold(mut ws: WebSocketStream<TcpStream>, conn: usize, mut commands: mpsc::Receiver<Command>, lost: Arc<AtomicUsize>) {
    let mut seq = 0u64;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Probe(reply)) => {
                    seq += 1;
                    let outcome = tokio::time::timeout(STEP_TIMEOUT, round_trip(&mut ws, seq, conn)).await;
                    let failed = !matches!(outcome, Ok(Ok(_)));
                    let _ = reply.send(outcome.unwrap_or_else(|_| Err("no answer in time".into())));
                    if failed {
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Some(Command::Close(done)) => {
                    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) if text.as_str().contains("\"heartbeat\"") => {
                    if ws.send(heartbeat()).await.is_err() {
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One submit and its result (heartbeats in between are answered).
async fn round_trip(ws: &mut WebSocketStream<TcpStream>, seq: u64, conn: usize) -> Result<Duration, String> {
    let start = Instant::now();
    ws.send(submit(seq, conn)).await.map_err(|e| format!("send: {e}"))?;
    loop {
        let frame = ws.next().await.ok_or("closed")?.map_err(|e| format!("read: {e}"))?;
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).map_err(|e| format!("bad JSON: {e}"))?;
        match v["type"].as_str() {
            Some("heartbeat") => ws.send(heartbeat()).await.map_err(|e| format!("send: {e}"))?,
            Some("result") if v["seq"] == seq => {
                let elapsed = start.elapsed();
                let ok = v["payload"]["status"] == "success" && v["payload"]["data"] == "HELLO WORLD";
                return if ok { Ok(elapsed) } else { Err(format!("unexpected result: {text}")) };
            }
            _ => {}
        }
    }
}

/// A few connections, one round trip each, closed: the server's code for
/// all of it is then paged in before the starting RSS is read.
async fn warm_up(args: &Args, lost: Arc<AtomicUsize>) -> Result<(), String> {
    let mut conns = Vec::new();
    for i in 0..16 {
        let ws = open(args, i).await.map_err(|e| format!("warm-up: {e}"))?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(hold(ws, i, rx, lost.clone()));
        conns.push(tx);
    }
    for conn in &conns {
        let (tx, rx) = oneshot::channel();
        let _ = conn.send(Command::Probe(tx)).await;
        rx.await.map_err(|_| "warm-up: connection ended".to_string())??;
    }
    for conn in &conns {
        let (tx, rx) = oneshot::channel();
        let _ = conn.send(Command::Close(tx)).await;
        let _ = rx.await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i].as_micros() as u64)
}

async fn run(args: Args) -> Result<Value, String> {
    raise_fd_limit(args.n)?;
    let pid = args.pid;
    let fds_start = fd_count(pid);
    let args = Arc::new(args);
    let lost = Arc::new(AtomicUsize::new(0));
    warm_up(&args, lost.clone()).await?;
    until_fds_at_most(pid, fds_start, Duration::from_secs(30)).await;
    let rss_start = settled_rss(pid, args.settle).await;

    // Open: `parallel` handshakes at a time.
    let gate = Arc::new(Semaphore::new(args.parallel));
    let started = Instant::now();
    let mut opening = Vec::with_capacity(args.n);
    for i in 0..args.n {
        let permit = gate.clone().acquire_owned().await.expect("the semaphore stays open");
        let args = args.clone();
        let lost = lost.clone();
        opening.push(tokio::spawn(async move {
            let ws = tokio::time::timeout(STEP_TIMEOUT, open(&args, i)).await;
            drop(permit);
            let ws = ws.map_err(|_| "handshake timed out".to_string())??;
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(hold(ws, i, rx, lost));
            Ok::<_, String>(tx)
        }));
    }
    let mut conns = Vec::with_capacity(args.n);
    let mut first_error = None;
    for task in opening {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(tx) => conns.push(tx),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let opened = conns.len();
    let fds_held = fd_count(pid);
    let rss_held = settled_rss(pid, args.settle).await;

    // Round trips: a timed sample one at a time, then every connection.
    let mut sample = Vec::new();
    let stride = (opened / args.sample.max(1)).max(1);
    for conn in conns.iter().step_by(stride).take(args.sample) {
        let (tx, rx) = oneshot::channel();
        if conn.send(Command::Probe(tx)).await.is_ok() {
            if let Ok(Ok(d)) = rx.await {
                sample.push(d);
            }
        }
    }
    sample.sort();
    let mut answered = 0;
    let mut probe_error = None;
    for wave in conns.chunks(1024) {
        let mut waiting = Vec::with_capacity(wave.len());
        for conn in wave {
            let (tx, rx) = oneshot::channel();
            if conn.send(Command::Probe(tx)).await.is_ok() {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            match rx.await {
                Ok(Ok(_)) => answered += 1,
                Ok(Err(e)) => {
                    probe_error.get_or_insert(e);
                }
                Err(_) => {
                    probe_error.get_or_insert("connection task ended".to_string());
                }
            }
        }
    }
    let rss_after_traffic = rss_kib(pid);

    // Close every connection, then see what the server gives back.
    let mut closing = Vec::with_capacity(opened);
    for conn in &conns {
        let (tx, rx) = oneshot::channel();
        if conn.send(Command::Close(tx)).await.is_ok() {
            closing.push(rx);
        }
    }
    for rx in closing {
        let _ = rx.await;
    }
    drop(conns);
    let fds_after = until_fds_at_most(pid, fds_start, Duration::from_secs(30)).await;
    let rss_after = settled_rss(pid, args.settle).await;

    let grown = rss_held.saturating_sub(rss_start);
    Ok(json!({
        "n": args.n,
        "opened": opened,
        "first_error": first_error,
        "sources": args.sources,
        "connect_s": connect_s,
        "connects_per_s": opened as f64 / connect_s,
        "fds_start": fds_start,
        "fds_held": fds_held,
        "fds_after_close": fds_after,
        "rss_start_kib": rss_start,
        "rss_held_kib": rss_held,
        "bytes_per_conn": if opened > 0 { (grown * 1024) as f64 / opened as f64 } else { 0.0 },
        "rss_after_traffic_kib": rss_after_traffic,
        "rss_after_close_kib": rss_after,
        "after_close_vs_start": rss_after as f64 / rss_start.max(1) as f64,
        "rtt_sample": sample.len(),
        "rtt_p50_us": percentile(&sample, 0.5),
        "rtt_p99_us": percentile(&sample, 0.99),
        "answered": answered,
        "probe_error": probe_error,
        "lost_while_held": lost.load(Ordering::Relaxed),
    }))
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    match rt.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
