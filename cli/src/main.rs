//! `packetflow`: run a hub, submit a packet, read a node's health, open its
//! dashboard, or benchmark any node that speaks the protocol (ours or a seed
//! peer).

mod actor;
mod allocator;
mod bench;
mod builtin;
mod dashboard;
mod fd_limit;
mod health;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use packetflow::{
    packet::META_ROUTE_KEY, Codec, ConnectOptions, Field, ListenOptions, Node, NodeConfig, Packet,
    PacketParts, PacketResult, Reactor, ReactorConfig, Value,
};

/// Environment variable read for the token when `--token` is not given.
const TOKEN_ENV: &str = "PACKETFLOW_TOKEN";

#[derive(Parser)]
#[command(name = "packetflow", version, about = "PacketFlow: polyglot packet routing over WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (a hub) until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Submit one packet to a node and print its Result as JSON.
    ///
    /// Exits 0 on success; on an error result it prints the Result, writes
    /// `PFnnn: message` to stderr and exits 1; exits 2 when the node cannot
    /// be reached or the arguments are wrong.
    Submit(SubmitArgs),
    /// Submit packets read as JSON lines on stdin; print one
    /// `{"id", "result"}` line per packet as its result arrives.
    ///
    /// A request line is `{"id": ANY, "group", "element", "data",
    /// "priority"?, "timeout_ms"?, "metadata"?, "dependencies"?,
    /// "packet_id"?}`; a line that is not a valid request is answered
    /// `{"id", "error": "..."}` naming what is wrong.
    Stream {
        /// The node's URL (ws:// or wss://).
        #[arg(long, default_value = "ws://127.0.0.1:8443/packetflow/v1")]
        url: String,
        /// Speak MessagePack instead of JSON.
        #[arg(long)]
        msgpack: bool,
        #[command(flatten)]
        dial: DialArgs,
    },
    /// Print a node's /health document.
    Health {
        /// The node's URL (ws://HOST:PORT/packetflow/v1 or http://HOST:PORT).
        url: String,
        /// Token to present (a node with auth shows only its status
        /// without one); default: $PACKETFLOW_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
    /// Print the URL of a node's dashboard page, and open it in a browser
    /// when there is a display (xdg-open).
    ///
    /// With auth on, the page asks for a token whose entry has
    /// `dashboard = true` (docs/security.md).
    Dashboard {
        /// The node's URL (ws://HOST:PORT/packetflow/v1 or http://HOST:PORT).
        url: String,
        /// Only print the URL.
        #[arg(long)]
        no_open: bool,
    },
    /// Measure a node: sequential round trips and pipelined throughput.
    Bench(bench::BenchArgs),
    /// Create, message and stop actors on a node.
    #[command(subcommand)]
    Actor(actor::ActorCommand),
}

/// How to dial a node: the token to present and the CA to trust.
#[derive(Args)]
pub struct DialArgs {
    /// Token to present to the node (in the upgrade's Authorization header
    /// and in hello); default: $PACKETFLOW_TOKEN.
    #[arg(long)]
    token: Option<String>,
    /// PEM file of the CA a wss:// node's certificate must chain to
    /// (default: the system's root certificates).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl DialArgs {
    /// The connect options for `codec`.
    pub fn options(&self, codec: Codec) -> ConnectOptions {
        ConnectOptions {
            codec,
            token: token_or_env(&self.token),
            tls_ca: self.ca.clone(),
            ..ConnectOptions::default()
        }
    }
}

/// `--token`, else the environment's token (an empty one counts as none).
pub fn token_or_env(flag: &Option<String>) -> Option<String> {
    flag.clone().or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.is_empty())
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Node name announced to peers.
    #[arg(long, default_value = "packetflow-hub")]
    name: String,
    /// Peers to dial (repeatable).
    #[arg(long = "connect", value_name = "URL")]
    connect: Vec<String>,
    /// Built-in handler to serve, as GROUP:ELEMENT=KIND (repeatable); KIND
    /// is one of: echo, uppercase, count (answers `{"value": n}`, counting
    /// up by `data.by` or 1), sleep (waits `data` ms), fail.
    #[arg(long = "handler", value_name = "KEY=KIND")]
    handlers: Vec<String>,
    /// Built-in actor type to host, as TYPE=KIND (repeatable); KIND is
    /// counter (the seed's: increment by `by`, get_value; any id starts at 0).
    #[arg(long = "actor", value_name = "TYPE=KIND")]
    actors: Vec<String>,
    /// Standard elements to host (docs/stdlib.md): comma-separated keys and
    /// patterns, as 'cf:*,co:gather', or '*' for all. A handler of the same
    /// key here or on a peer serves it instead.
    #[arg(long, value_name = "PATTERNS", default_value = "")]
    stdlib: String,
    /// Keep actor state in this redb file (default: in memory): an
    /// acknowledged turn survives a crash of the process.
    #[arg(long, value_name = "FILE")]
    actor_store: Option<PathBuf>,
    /// Heartbeat interval in ms (a peer silent for 3 is closed).
    #[arg(long, default_value_t = NodeConfig::default().heartbeat_interval.as_millis() as u64)]
    heartbeat_ms: u64,
    /// Heartbeat interval in ms offered to PacketFlow peers in `hello`
    /// (the larger offer wins; a peer silent for 3 is declared dead; 0:
    /// none offered, the seed's rule above applies).
    #[arg(long, default_value_t = NodeConfig::default().peer_heartbeat_interval.as_millis() as u64)]
    peer_heartbeat_ms: u64,
    /// Worker threads (0: a single-threaded runtime).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Most packets running at once; more wait in the queue.
    #[arg(long, default_value_t = ReactorConfig::default().max_inflight)]
    max_inflight: usize,
    /// Most packets waiting; past it, PF429.
    #[arg(long, default_value_t = ReactorConfig::default().max_queue)]
    max_queue: usize,
    /// Require a token from every peer: a tokens file (.toml or .json) with
    /// each token's name and the keys it may submit and serve
    /// (docs/security.md).
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve wss:// with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest frame accepted in bytes; a larger one closes the connection
    /// with 1009 (PF413).
    #[arg(long, default_value_t = NodeConfig::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Most submits in flight per connection; past it, PF429.
    #[arg(long, default_value_t = NodeConfig::default().max_inflight_per_conn)]
    max_inflight_per_conn: usize,
    /// Most connections held at once; past it, HTTP 503. Each takes a file
    /// descriptor: serve raises its descriptor limit to N + 128 (plus one
    /// per --connect peer) and refuses to start when the hard limit is
    /// lower [default: 1024, or what the hard limit allows if lower]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most submits per second per connection; past it, PF429 (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_submits_per_sec: u32,
    /// Most bytes of submits held for packets in flight; past it, PF429.
    #[arg(long, default_value_t = NodeConfig::default().max_queued_bytes)]
    max_queued_bytes: usize,
    /// Keep polling sockets for this many microseconds after frames arrive
    /// instead of sleeping (while at most 8 packets are in flight): lower
    /// latency where wake-ups are slow, such as virtual machines, for up to
    /// a core spinning while traffic is sparse. 0: off.
    #[arg(long, default_value_t = 0, value_name = "MICROSECONDS")]
    busy_poll_us: u64,
    /// Take no part in direct paths (docs/protocol.md): never dial or
    /// accept a direct link, and, as a hub, tell peers nothing that lets
    /// them go around it.
    #[arg(long)]
    no_direct: bool,
    /// Where to accept direct links (HOST:PORT) [default: the address the
    /// connection to the first peer that takes part leaves from, port 0].
    #[arg(long, value_name = "ADDR")]
    direct_listen: Option<String>,
    /// Address peers are told to dial for direct links, instead of the
    /// direct listener's own (behind NAT); repeatable.
    #[arg(long = "direct-advertise", value_name = "URL")]
    direct_advertise: Vec<String>,
    /// Token and CA used for the --connect peers.
    #[command(flatten)]
    dial: DialArgs,
    /// Join NATS (docs/protocol.md, "NATS"): nats://HOST:PORT or
    /// tls://HOST:PORT, several separated by commas. The node serves its
    /// handlers there (and those of its peers off NATS), and sends what
    /// neither it nor a peer serves.
    #[arg(long, value_name = "URLS")]
    nats: Option<String>,
    /// NATS options: subject namespace, credentials and TLS files.
    #[command(flatten)]
    nats_options: NatsArgs,
}

/// How `serve --nats` joins NATS: the fields of `NatsOptions`.
#[derive(Args)]
struct NatsArgs {
    /// Prefix of the NATS subjects, so that several PacketFlow systems can
    /// share one NATS.
    #[arg(long, value_name = "NAME", default_value = packetflow::net::nats::DEFAULT_NAMESPACE)]
    nats_namespace: String,
    /// A NATS .creds file (JWT and NKey seed).
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<std::path::PathBuf>,
    /// NATS user (with --nats-password or PACKETFLOW_NATS_PASSWORD).
    #[arg(long, value_name = "USER")]
    nats_user: Option<String>,
    /// NATS password [env: PACKETFLOW_NATS_PASSWORD].
    #[arg(long, value_name = "PASSWORD")]
    nats_password: Option<String>,
    /// NATS token [env: PACKETFLOW_NATS_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    nats_token: Option<String>,
    /// NATS NKey seed file (its first line is the seed).
    #[arg(long, value_name = "FILE")]
    nats_nkey: Option<std::path::PathBuf>,
    /// PEM file of the CAs a NATS server's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    nats_tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for NATS (with --nats-tls-key).
    #[arg(long, value_name = "FILE")]
    nats_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --nats-tls-cert.
    #[arg(long, value_name = "FILE")]
    nats_tls_key: Option<std::path::PathBuf>,
    /// Refuse NATS servers that do not speak TLS.
    #[arg(long)]
    nats_require_tls: bool,
    /// Join the NATS cluster's members (JetStream bucket <ns>_members):
    /// route keys and actors placed over the live members.
    #[arg(long)]
    nats_membership: bool,
    /// Heartbeat of --nats-membership in ms (10 to 60000), for a node that
    /// makes the members bucket (its TTL is 3 heartbeats).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    nats_heartbeat_ms: u64,
    /// Keep actor state in the JetStream bucket <ns>_actors, shared by the
    /// members (implies --nats-membership; not with --actor-store).
    #[arg(long, conflicts_with = "actor_store")]
    nats_actor_store: bool,
}

impl NatsArgs {
    /// The options, secrets from the environment when not given as flags;
    /// an error naming an unreadable NKey file.
    fn options(&self) -> Result<packetflow::net::NatsOptions, String> {
        let from_env = |flag: &Option<String>, var: &str| {
            flag.clone().or_else(|| std::env::var(var).ok()).filter(|v| !v.is_empty())
        };
        let nkey_seed = match &self.nats_nkey {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--nats-nkey {}: {e}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(packetflow::net::NatsOptions {
            namespace: self.nats_namespace.clone(),
            token: from_env(&self.nats_token, "PACKETFLOW_NATS_TOKEN"),
            user: self.nats_user.clone(),
            password: from_env(&self.nats_password, "PACKETFLOW_NATS_PASSWORD"),
            nkey_seed,
            credentials_file: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            require_tls: self.nats_require_tls,
            membership: self.nats_membership,
            membership_heartbeat: std::time::Duration::from_millis(self.nats_heartbeat_ms),
            actor_store: self.nats_actor_store,
            ..packetflow::net::NatsOptions::default()
        })
    }
}

#[derive(Args)]
struct SubmitArgs {
    /// The node's URL.
    #[arg(long, default_value = "ws://127.0.0.1:8443/packetflow/v1")]
    url: String,
    /// Group: cf, df, ed, co, mc or rm.
    group: String,
    /// Element name.
    element: String,
    /// The packet's data, as JSON.
    data: String,
    /// Priority 1-10 (absent: the protocol's default).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// How long to wait for the result, in ms (absent: the protocol's default).
    #[arg(long, allow_negative_numbers = true)]
    timeout_ms: Option<i64>,
    /// Speak MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    /// Affinity key (`pf.route_key`).
    #[arg(long)]
    route_key: Option<String>,
    #[command(flatten)]
    dial: DialArgs,
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve(args) => args.threads,
        _ => 0,
    };
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Submit(args) => submit(args).await,
            Command::Actor(command) => actor::run(command).await,
            Command::Health { url, token } => health::print(&url, token_or_env(&token)).await,
            Command::Stream { url, msgpack, dial } => {
                stream::run(&url, dial.options(if msgpack { Codec::MsgPack } else { Codec::Json })).await
            }
            Command::Dashboard { url, no_open } => dashboard::run(&url, !no_open),
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    let reactor_config = ReactorConfig {
        name: args.name.clone(),
        max_inflight: args.max_inflight,
        max_queue: args.max_queue,
        ..ReactorConfig::default()
    };
    if let Err(e) = reactor_config.validate() {
        eprintln!("error: {}", e.message);
        return ExitCode::from(2);
    }
    let reactor = Reactor::new(reactor_config);
    for spec in &args.handlers {
        if let Err(e) = builtin::register(&reactor, spec) {
            eprintln!("error: --handler {spec}: {e}");
            return ExitCode::from(2);
        }
    }
    let max_connections = match connection_limit(args.max_connections, args.connect.len()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.actor_store {
        let opened = packetflow::actor::FileStore::open(path)
            .and_then(|store| reactor.actors().set_store(std::sync::Arc::new(store)));
        if let Err(e) = opened {
            eprintln!("error: --actor-store: {}", e.message);
            return ExitCode::from(2);
        }
    }
    if args.nats_options.nats_actor_store {
        // Set before the actor types register; bound when the node joins.
        let store = std::sync::Arc::new(packetflow::net::NatsKvStore::new());
        if let Err(e) = reactor.actors().set_store(store) {
            eprintln!("error: --nats-actor-store: {}", e.message);
            return ExitCode::from(2);
        }
    }
    for spec in &args.actors {
        if let Err(e) = builtin::register_actor(&reactor, spec) {
            eprintln!("error: --actor {spec}: {e}");
            return ExitCode::from(2);
        }
    }
    match packetflow::stdlib::StdlibPatterns::parse(&args.stdlib) {
        Ok(patterns) => {
            reactor.enable_stdlib(&patterns);
        }
        Err(e) => {
            eprintln!("error: --stdlib: {}", e.message);
            return ExitCode::from(2);
        }
    }
    let config = NodeConfig {
        heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_ms),
        peer_heartbeat_interval: std::time::Duration::from_millis(args.peer_heartbeat_ms),
        max_frame_bytes: args.max_frame_bytes,
        max_inflight_per_conn: args.max_inflight_per_conn,
        max_connections,
        max_submits_per_sec: (args.max_submits_per_sec > 0).then_some(args.max_submits_per_sec),
        max_queued_bytes: args.max_queued_bytes,
        busy_poll: (args.busy_poll_us > 0).then(|| std::time::Duration::from_micros(args.busy_poll_us)),
        direct: packetflow::net::DirectConfig {
            enabled: !args.no_direct,
            listen: args.direct_listen.clone(),
            advertise: args.direct_advertise.clone(),
            ..Default::default()
        },
        ..NodeConfig::default()
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {}", e.message);
        return ExitCode::from(2);
    }
    // Read the tokens here too, to say how many (names only, never values).
    let tokens = match &args.auth {
        Some(path) => match packetflow::TokenSpec::load(path) {
            Ok(specs) => specs,
            Err(e) => {
                eprintln!("error: --auth: {}", e.message);
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let auth_summary = (!tokens.is_empty() || args.auth.is_some()).then(|| {
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        format!("auth on, {} tokens ({})", names.len(), names.join(", "))
    });
    let options = ListenOptions {
        auth_file: args.auth.clone(),
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        ..Default::default()
    };
    let scheme = if options.tls_cert.is_some() { "wss" } else { "ws" };
    let node = Node::new(reactor, config);
    let bound = match node.listen_with(&args.listen, options).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: {}", e.message);
            return ExitCode::from(2);
        }
    };
    // The allocator's empty pages go back to the OS even while the node is
    // idle (src/allocator.rs).
    tokio::spawn(allocator::trim_every(std::time::Duration::from_secs(1)));
    eprintln!(
        "packetflow: {} listening on {scheme}://{bound}/packetflow/v1 (node {})",
        args.name,
        node.node_id()
    );
    let page = if scheme == "wss" { "https" } else { "http" };
    eprintln!("packetflow: dashboard at {page}://{bound}/ui/");
    if let Some(summary) = auth_summary {
        eprintln!("packetflow: {summary}");
    }
    for url in &args.connect {
        match node.connect_with(url, args.dial.options(Codec::Json)).await {
            Ok(()) => eprintln!("packetflow: connected to {url}"),
            Err(e) => {
                eprintln!("error: {e}");
                node.stop().await;
                return ExitCode::from(2);
            }
        }
    }
    if let Some(urls) = &args.nats {
        let joined = match args.nats_options.options() {
            Ok(options) => node.connect_nats(urls, options).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match joined {
            Ok(()) => eprintln!("packetflow: joined NATS at {urls}"),
            Err(e) => {
                eprintln!("error: {e}");
                node.stop().await;
                return ExitCode::from(2);
            }
        }
    }
    wait_for_signal().await;
    eprintln!("packetflow: stopping");
    node.stop().await;
    eprintln!("packetflow: stopped");
    ExitCode::SUCCESS
}

/// The connections `serve` may hold: `asked` (or the default), with the
/// file-descriptor limit raised to what they and the `dialed` peers need.
/// Asked for more than the hard limit allows: an error naming both. The
/// default is lowered to what the limit allows, with a warning.
fn connection_limit(asked: Option<usize>, dialed: usize) -> Result<usize, String> {
    let wanted = asked.unwrap_or(NodeConfig::default().max_connections);
    let need = fd_limit::needed(wanted.saturating_add(dialed));
    let limit = fd_limit::raise_to(need)
        .map_err(|e| format!("cannot raise the file descriptor limit to {need}: {e}"))?;
    if limit.soft >= need {
        return Ok(wanted);
    }
    let fits = fd_limit::connections_within(limit.soft).saturating_sub(dialed);
    match asked {
        None if fits > 0 => {
            eprintln!(
                "packetflow: warning: holding at most {fits} connections, not the default {wanted}: this process \
                 may open {} file descriptors (raise its hard limit to {need} for {wanted})",
                limit.soft
            );
            Ok(fits)
        }
        _ => Err(fd_limit::too_low(wanted, dialed, need, limit.hard)),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn build_packet(args: &SubmitArgs) -> Result<Packet, String> {
    let data: Value = serde_json::from_str(&args.data).map_err(|e| format!("DATA is not JSON: {e}"))?;
    let metadata = args.route_key.as_ref().map(|key| serde_json::json!({ META_ROUTE_KEY: key }));
    PacketParts {
        group: Some(args.group.as_str().into()),
        element: Some(args.element.as_str().into()),
        data: Some(data),
        priority: args.priority.map(Field::from),
        timeout_ms: args.timeout_ms.map(Field::from),
        metadata,
        ..Default::default()
    }
    .into_packet()
    .map_err(|e| e.message)
}

async fn submit(args: SubmitArgs) -> ExitCode {
    let packet = match build_packet(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let codec = if args.msgpack { Codec::MsgPack } else { Codec::Json };
    submit_packet(&args.url, args.dial.options(codec), packet).await
}

/// Dials `url`, submits `packet` through it and prints its Result.
///
/// Ctrl-C cancels the packet (the node sends the peer a cancel frame when
/// it takes them, docs/protocol.md "Cancellation"), prints its PF499
/// result and exits with 130, as a command interrupted by SIGINT does.
pub async fn submit_packet(url: &str, options: ConnectOptions, packet: Packet) -> ExitCode {
    let node = Node::new(
        Reactor::new(ReactorConfig { name: "packetflow-cli".into(), ..Default::default() }),
        NodeConfig::default(),
    );
    if let Err(e) = node.connect_with(url, options).await {
        eprintln!("error: {e}");
        node.stop().await;
        return ExitCode::from(2);
    }
    let id = packet.id.clone();
    let reactor = node.reactor().clone();
    let mut submit = std::pin::pin!(reactor.submit(packet));
    let (result, interrupted) = tokio::select! {
        result = &mut submit => (result, false),
        _ = tokio::signal::ctrl_c() => {
            // Answered PF499 at once; the cancel frame is queued before the
            // node stops, and stopping writes what is queued first.
            reactor.cancel(&id);
            (submit.await, true)
        }
    };
    node.stop().await;
    let code = print_result(&result);
    if interrupted {
        ExitCode::from(130)
    } else {
        code
    }
}

fn print_result(result: &PacketResult) -> ExitCode {
    println!("{}", serde_json::to_string(result).expect("a result always encodes"));
    match &result.outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {}", e.code, e.message);
            ExitCode::from(1)
        }
    }
}
