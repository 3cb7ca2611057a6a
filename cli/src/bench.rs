//! `packetflow bench`: a load generator for any node that speaks the
//! protocol. It talks plain WebSocket (no node of its own), so it measures
//! the server and nothing else; it accepts answers with `seq: 0` (seed
//! peers) by matching on the packet id.
//!
//! - seq: round trips one at a time on one connection; RTT percentiles.
//! - pipe: N packets over C connections with a window of W in flight each;
//!   packets/s, and with `--pid` the server's CPU per packet and peak RSS.
//!
//! With `--node` it submits through a node of its own instead (a reactor
//! that dials the URL, as a binding's reactor does): what an application
//! node sees, direct paths included.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use packetflow::{Codec, Message, Packet, PacketId, PacketParts, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Sequential round trips only.
    Seq,
    /// Pipelined throughput only.
    Pipe,
    /// Both, sequential first.
    Both,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The node's URL.
    #[arg(long, default_value = "ws://127.0.0.1:8443/packetflow/v1")]
    url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "both")]
    mode: Mode,
    /// Connections for the pipelined run.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Packets in flight per connection in the pipelined run.
    #[arg(long, default_value_t = 100)]
    inflight: usize,
    /// Packets in the pipelined run (all connections together).
    #[arg(long, default_value_t = 200_000)]
    n: usize,
    /// Measured round trips in the sequential run.
    #[arg(long, default_value_t = 2000)]
    seq_n: usize,
    /// Unmeasured warm-up round trips (and a tenth of n before the pipelined run).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Speak MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    /// Group of the packets sent.
    #[arg(long, default_value = "df")]
    group: String,
    /// Element of the packets sent.
    #[arg(long, default_value = "transform")]
    element: String,
    /// Data of the packets sent, as JSON.
    #[arg(long, default_value = "\"hello world\"")]
    data: String,
    /// Metadata of the packets sent, as a JSON object (e.g.
    /// `{"pf.actor_id": "c1"}` to message an actor at `rm:actor.TYPE`).
    #[arg(long)]
    metadata: Option<String>,
    /// The data every answer must carry, as JSON (default: not checked).
    #[arg(long)]
    expect: Option<String>,
    /// Server process to sample for CPU time and RSS during the pipelined run.
    #[arg(long)]
    pid: Option<u32>,
    /// Also print one JSON line with every figure.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Submit through a node of its own dialing the URL (one connection),
    /// as an application's reactor does, rather than plain frames.
    #[arg(long)]
    node: bool,
    /// With --node: take no part in direct paths.
    #[arg(long, requires = "node")]
    no_direct: bool,
    #[command(flatten)]
    dial: crate::DialArgs,
}

/// Makes a connection's frames from one copy of the template whose seq and
/// id change from frame to frame: a frame costs the generator no copy of
/// the packet's data and metadata.
struct Frames {
    codec: Codec,
    message: Message,
}

impl Frames {
    fn next(&mut self, seq: u64) -> WsMessage {
        if let Message::Submit { seq: at, packet } = &mut self.message {
            *at = seq;
            packet.id = PacketId::new(&format!("b{seq}")).expect("generated ids are short");
        }
        let bytes = self.codec.encode_to_vec(&self.message);
        match self.codec {
            Codec::Json => WsMessage::Text(String::from_utf8(bytes).expect("JSON is UTF-8").into()),
            Codec::MsgPack => WsMessage::Binary(bytes.into()),
        }
    }
}

struct Work {
    codec: Codec,
    /// What every packet sent is, but its id.
    template: Packet,
    expect: Option<Value>,
}

impl Work {
    /// A connection's maker of frames from the template.
    fn frames(&self) -> Frames {
        Frames {
            codec: self.codec,
            message: Message::Submit { seq: 0, packet: Box::new(self.template.clone()) },
        }
    }

    /// The answers in a frame: (seq, ok). Heartbeats and hellos yield none.
    fn answers(&self, frame: &WsMessage) -> Result<Vec<(u64, bool)>, String> {
        let decoded = match frame {
            WsMessage::Text(t) => Codec::Json.decode(t.as_bytes()),
            WsMessage::Binary(b) => Codec::MsgPack.decode(b),
            WsMessage::Close(c) => return Err(format!("the node closed the connection: {c:?}")),
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for item in decoded {
            match item.map_err(|e| format!("undecodable answer: {}", e.error))? {
                Message::Result { seq, result } => {
                    let seq = if seq == 0 { seq_from_id(result.packet_id.as_str()) } else { seq };
                    let ok = match (&result.outcome, &self.expect) {
                        (Ok(data), Some(expected)) => data == expected,
                        (Ok(_), None) => true,
                        (Err(_), _) => false,
                    };
                    out.push((seq, ok));
                }
                Message::Error { seq, .. } => out.push((seq, false)),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Ids are "b<seq>", so a seed peer's `seq: 0` answer still names its packet.
fn seq_from_id(id: &str) -> u64 {
    id.strip_prefix('b').and_then(|s| s.parse().ok()).unwrap_or(0)
}

type Ws = tokio_tungstenite::WebSocketStream<packetflow::net::ClientStream>;

/// A bare WebSocket (no node: no hello is sent), with the token, if any, in
/// the upgrade's Authorization header, over TLS for `wss://`.
async fn open(url: &str, args: &BenchArgs, codec: Codec) -> Result<Ws, String> {
    packetflow::net::open_websocket(url, args.dial.options(codec), None).await.map_err(|e| e.to_string())
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_s);
    match tokio::time::timeout(timeout, measure(args)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("error: gave up after {}s", timeout.as_secs());
            ExitCode::from(1)
        }
    }
}

async fn measure(args: BenchArgs) -> Result<(), String> {
    let codec = if args.msgpack { Codec::MsgPack } else { Codec::Json };
    let data: Value = serde_json::from_str(&args.data).map_err(|e| format!("--data is not JSON: {e}"))?;
    let metadata: Option<Value> = args
        .metadata
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("--metadata is not JSON: {e}"))?;
    // The core's rules, as for any submit (a reserved or mistyped field is
    // refused here, naming it, rather than by the node on every packet).
    let template = PacketParts {
        group: Some(args.group.as_str().into()),
        element: Some(args.element.as_str().into()),
        data: Some(data),
        metadata,
        ..Default::default()
    }
    .into_packet()
    .map_err(|e| e.message)?;
    let work = Arc::new(Work {
        codec,
        template,
        expect: args
            .expect
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("--expect is not JSON: {e}"))?,
    });
    let mut summary = serde_json::Map::new();
    summary.insert("url".into(), args.url.clone().into());
    summary.insert("codec".into(), codec.subprotocol().into());
    let submitter = if args.node { Some(Submitter::start(&args, codec).await?) } else { None };
    if args.mode != Mode::Pipe {
        let rtts = match &submitter {
            Some(node) => node.sequential(&args, &work).await?,
            None => sequential(&args, &work).await?,
        };
        let pct = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
        println!(
            "seq  n={}: p50 {:.1} µs  p95 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
            rtts.len(),
            pct(0.50),
            pct(0.95),
            pct(0.99),
            rtts[rtts.len() - 1]
        );
        for (k, q) in [("seq_p50_us", 0.5), ("seq_p95_us", 0.95), ("seq_p99_us", 0.99)] {
            summary.insert(k.into(), pct(q).into());
        }
    }
    if args.mode != Mode::Seq {
        let figures = match &submitter {
            Some(node) => node.pipelined(&args, &work).await?,
            None => pipelined(&args, &work).await?,
        };
        print!("pipe {}x{} n={}: {:.0} packets/s", args.conns, args.inflight, figures.answered, figures.rate);
        summary.insert("conns".into(), args.conns.into());
        summary.insert("inflight".into(), args.inflight.into());
        summary.insert("pipe_packets_per_s".into(), figures.rate.round().into());
        summary.insert("errors".into(), figures.errors.into());
        if let Some((cpu_us, rss_kib)) = figures.server {
            print!("  server cpu {cpu_us:.2} µs/packet  peak rss {:.1} MiB", rss_kib as f64 / 1024.0);
            summary.insert("server_cpu_us_per_packet".into(), cpu_us.into());
            summary.insert("server_peak_rss_kib".into(), rss_kib.into());
        }
        println!("  errors {}", figures.errors);
        if figures.errors > 0 {
            return Err(format!("{} answers were errors or carried unexpected data", figures.errors));
        }
    }
    if let Some(submitter) = submitter {
        let direct = submitter.node.health()["direct"]["packets"].as_u64().unwrap_or(0);
        summary.insert("direct_packets".into(), direct.into());
        submitter.node.stop().await;
    }
    if args.json {
        println!("{}", Value::Object(summary));
    }
    Ok(())
}

/// `--node`: a node of the bench's own, connected to the URL.
struct Submitter {
    node: packetflow::Node,
}

impl Submitter {
    async fn start(args: &BenchArgs, codec: Codec) -> Result<Submitter, String> {
        if args.conns != 1 {
            return Err("--node submits over its node's one connection: --conns must be 1".into());
        }
        let reactor = packetflow::Reactor::new(packetflow::ReactorConfig {
            name: "packetflow-bench".into(),
            ..Default::default()
        });
        let config = packetflow::NodeConfig {
            direct: packetflow::net::DirectConfig { enabled: !args.no_direct, ..Default::default() },
            ..Default::default()
        };
        let node = packetflow::Node::new(reactor, config);
        node.connect_with(&args.url, args.dial.options(codec)).await.map_err(|e| e.to_string())?;
        Ok(Submitter { node })
    }

    fn packet(&self, work: &Work) -> Packet {
        let mut packet = work.template.clone();
        packet.id = PacketId::random();
        packet
    }

    fn check(&self, work: &Work, result: &packetflow::PacketResult) -> bool {
        match (&result.outcome, &work.expect) {
            (Ok(data), Some(expected)) => data == expected,
            (Ok(_), None) => true,
            (Err(_), _) => false,
        }
    }

    async fn sequential(&self, args: &BenchArgs, work: &Work) -> Result<Vec<f64>, String> {
        let reactor = self.node.reactor();
        let mut rtts = Vec::with_capacity(args.seq_n);
        for i in 0..args.warmup + args.seq_n {
            let packet = self.packet(work);
            let start = Instant::now();
            let result = reactor.submit(packet).await;
            let elapsed = start.elapsed();
            if !self.check(work, &result) {
                return Err(format!("round trip {}: unexpected answer {:?}", i + 1, result.outcome));
            }
            if i >= args.warmup {
                rtts.push(elapsed.as_secs_f64() * 1e6);
            }
        }
        rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(rtts)
    }

    /// `n` packets with `inflight` in flight; the errors among them.
    async fn round(&self, args: &BenchArgs, work: &Work, n: usize) -> usize {
        let reactor = self.node.reactor();
        let mut running = futures_util::stream::FuturesUnordered::new();
        let (mut sent, mut errors) = (0, 0);
        loop {
            while sent < n && running.len() < args.inflight.max(1) {
                running.push(reactor.submit(self.packet(work)));
                sent += 1;
            }
            match running.next().await {
                Some(result) => errors += usize::from(!self.check(work, &result)),
                None => return errors,
            }
        }
    }

    async fn pipelined(&self, args: &BenchArgs, work: &Work) -> Result<PipeFigures, String> {
        if args.warmup > 0 {
            self.round(args, work, args.n / 10).await;
        }
        let start = Instant::now();
        let errors = self.round(args, work, args.n).await;
        Ok(PipeFigures {
            answered: args.n,
            errors,
            rate: args.n as f64 / start.elapsed().as_secs_f64(),
            server: None,
        })
    }
}

async fn next_answers(ws: &mut Ws, work: &Work) -> Result<Vec<(u64, bool)>, String> {
    loop {
        let frame = ws.next().await.ok_or("the node closed the connection")?.map_err(|e| e.to_string())?;
        let answers = work.answers(&frame)?;
        if !answers.is_empty() {
            return Ok(answers);
        }
    }
}

async fn sequential(args: &BenchArgs, work: &Work) -> Result<Vec<f64>, String> {
    let mut ws = open(&args.url, args, work.codec).await?;
    let mut frames = work.frames();
    let mut rtts = Vec::with_capacity(args.seq_n);
    for i in 0..(args.warmup + args.seq_n) as u64 {
        let seq = i + 1;
        let frame = frames.next(seq);
        let start = Instant::now();
        ws.send(frame).await.map_err(|e| e.to_string())?;
        let answers = next_answers(&mut ws, work).await?;
        let elapsed = start.elapsed();
        if answers != [(seq, true)] {
            return Err(format!("round trip {seq}: unexpected answer {answers:?}"));
        }
        if i as usize >= args.warmup {
            rtts.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    let _ = ws.close(None).await;
    rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(rtts)
}

struct PipeFigures {
    answered: usize,
    errors: usize,
    rate: f64,
    /// Server CPU µs per packet and peak RSS in KiB, when `--pid` was given.
    server: Option<(f64, u64)>,
}

/// One connection's share: keeps `window` packets in flight until `quota`
/// are answered; returns how many answers were errors.
async fn pipe_connection(
    mut ws: Ws,
    work: Arc<Work>,
    conn: usize,
    quota: usize,
    window: usize,
    done: Arc<AtomicUsize>,
) -> Result<usize, String> {
    let (mut sent, mut answered, mut errors) = (0usize, 0usize, 0usize);
    let mut frames = work.frames();
    // Seqs are unique across connections so that ids never collide.
    let base = (conn as u64) << 40;
    while answered < quota {
        let mut fed = false;
        while sent < quota && sent - answered < window {
            sent += 1;
            let seq = base + sent as u64;
            ws.feed(frames.next(seq)).await.map_err(|e| e.to_string())?;
            fed = true;
        }
        if fed {
            ws.flush().await.map_err(|e| e.to_string())?;
        }
        let answers = next_answers(&mut ws, &work).await?;
        done.fetch_add(answers.len(), Ordering::Relaxed);
        for (_, ok) in answers {
            answered += 1;
            errors += usize::from(!ok);
        }
    }
    let _ = ws.close(None).await;
    Ok(errors)
}

async fn pipe_round(
    args: &BenchArgs,
    work: &Arc<Work>,
    n: usize,
    done: &Arc<AtomicUsize>,
) -> Result<(usize, Duration), String> {
    let mut conns = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        conns.push(open(&args.url, args, work.codec).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let quota = n / args.conns + usize::from(i < n % args.conns);
            tokio::spawn(pipe_connection(ws, work.clone(), i, quota, args.inflight.max(1), done.clone()))
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.map_err(|e| e.to_string())??;
    }
    Ok((errors, start.elapsed()))
}

async fn pipelined(args: &BenchArgs, work: &Arc<Work>) -> Result<PipeFigures, String> {
    let done = Arc::new(AtomicUsize::new(0));
    if args.warmup > 0 {
        pipe_round(args, work, (args.n / 10).max(args.conns), &done).await?;
    }
    done.store(0, Ordering::Relaxed);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = args.pid.map(|pid| {
        let sampling = sampling.clone();
        std::thread::spawn(move || sample_server(pid, &sampling))
    });
    let progress = {
        let done = done.clone();
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            while sampling.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_secs(1));
                let now = done.load(Ordering::Relaxed);
                if sampling.load(Ordering::Relaxed) {
                    eprint!("\r  ... {now} answered ({}/s)   ", now - last);
                }
                last = now;
            }
        })
    };
    let outcome = pipe_round(args, work, args.n, &done).await;
    sampling.store(false, Ordering::Relaxed);
    progress.thread().unpark();
    let _ = progress.join();
    eprint!("\r");
    let server = sampler.and_then(|s| s.join().ok()).flatten();
    let (errors, elapsed) = outcome?;
    Ok(PipeFigures {
        answered: args.n,
        errors,
        rate: args.n as f64 / elapsed.as_secs_f64(),
        server: server.map(|(cpu_s, rss)| (cpu_s * 1e6 / args.n as f64, rss)),
    })
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the server while the run lasts: CPU seconds used and peak RSS.
fn sample_server(pid: u32, sampling: &AtomicBool) -> Option<(f64, u64)> {
    let cpu_before = cpu_seconds(pid)?;
    let mut peak = rss_kib(pid)?;
    while sampling.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(rss) = rss_kib(pid) {
            peak = peak.max(rss);
        }
    }
    Some((cpu_seconds(pid)? - cpu_before, peak))
}
