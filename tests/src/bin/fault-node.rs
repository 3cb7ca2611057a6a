//! A node in its own process, for the fault tests (`tests/tests/faults.rs`)
//! that need a peer they can kill outright (SIGKILL) or whose memory they
//! can read from `/proc`.
//!
//! ```text
//! fault-node hub [--listen ADDR] [--heartbeat-ms N] [--handshake-ms N] [--max-inflight-per-conn N]
//!                [--actor-store FILE]
//! fault-node service --connect URL
//! fault-node member --nats URL [--heartbeat-ms N]
//! ```
//!
//! Both serve `df:upper` (uppercase a string) and `df:big` (a string of
//! `data` bytes); a service also serves `df:stuck` (never answers) and
//! `df:work` (answers its data after a millisecond) and `df:whoami` (its
//! process id, so a test can tell which service took a packet). With
//! `--actor-store FILE`, a hub also hosts the actor type `counter`
//! (`increment` adds `data.by` or 1 and answers `{"value": n}`, anything
//! else reads; virtual, from `{"value": 0}`) on a redb file. A hub prints
//! `listening ws://ADDR/packetflow/v1`, a service `ready` once connected,
//! each as its first line on stdout. Either exits when its stdin closes,
//! so a test that dies takes its children with it.
//!
//! A member joins NATS with membership and its actor state in the
//! cluster's key-value bucket (`tests/nats_cluster.rs`): it hosts
//! `counter` as a hub's, its answers naming the node
//! (`{"value": n, "node": id}`), serves `df:whoami` (its node id), and
//! prints `ready <node id>`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use packetflow::{Node, NodeConfig, PfError, Reactor, ReactorConfig, Value};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: fault-node hub|service [options]");
        return ExitCode::from(2);
    };
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: u64| match option(name) {
        Some(v) => v.parse::<u64>().unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}")),
        None => default,
    };
    let config = NodeConfig {
        heartbeat_interval: Duration::from_millis(number("--heartbeat-ms", 30_000)),
        handshake_timeout: Duration::from_millis(number("--handshake-ms", 10_000)),
        max_inflight_per_conn: number("--max-inflight-per-conn", 4096) as usize,
        max_redial_backoff: Duration::from_millis(200),
        ..NodeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async move {
        let reactor =
            Reactor::new(ReactorConfig { name: format!("fault-{mode}"), ..ReactorConfig::default() });
        register_common(&reactor);
        if let Some(path) = option("--actor-store") {
            if let Err(e) = host_counter(&reactor, &path) {
                eprintln!("error: {}", e.message);
                return ExitCode::from(1);
            }
        }
        let node = Node::new(reactor.clone(), config);
        let first_line = match mode.as_str() {
            "hub" => {
                let listen = option("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
                match node.listen(&listen).await {
                    Ok(addr) => format!("listening ws://{addr}/packetflow/v1"),
                    Err(e) => {
                        eprintln!("error: {}", e.message);
                        return ExitCode::from(1);
                    }
                }
            }
            "service" => {
                register_service(&reactor);
                let Some(url) = option("--connect") else {
                    eprintln!("service needs --connect URL");
                    return ExitCode::from(2);
                };
                if let Err(e) = node.connect(&url).await {
                    eprintln!("error: {}", e.message);
                    return ExitCode::from(1);
                }
                "ready".to_owned()
            }
            "member" => {
                let Some(url) = option("--nats") else {
                    eprintln!("member needs --nats URL");
                    return ExitCode::from(2);
                };
                let heartbeat = Duration::from_millis(number("--heartbeat-ms", 1000));
                if let Err(e) = join_as_member(&node, &url, heartbeat).await {
                    eprintln!("error: {}", e.message);
                    return ExitCode::from(1);
                }
                format!("ready {}", node.node_id())
            }
            other => {
                eprintln!("unknown mode {other:?}: use hub, service or member");
                return ExitCode::from(2);
            }
        };
        println!("{first_line}");
        let _ = std::io::stdout().flush();
        // Until the parent closes stdin (or kills this process).
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            while lock.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                line.clear();
            }
        })
        .await;
        node.stop().await;
        ExitCode::SUCCESS
    })
}

fn host_counter(reactor: &Reactor, path: &str) -> Result<(), PfError> {
    let actors = reactor.actors();
    actors.set_store(std::sync::Arc::new(packetflow::actor::FileStore::open(path)?))?;
    let counter = packetflow::ActorType::new(|kind: &str, message: &Value, state: &mut Value, _: &_| {
        if kind == "increment" {
            let value = state["value"].as_i64().unwrap_or(0) + message["by"].as_i64().unwrap_or(1);
            state["value"] = Value::from(value);
        }
        Ok(packetflow::Reply::Value(serde_json::json!({"value": state["value"]})))
    });
    actors.register("counter", counter.with_initial_state(serde_json::json!({"value": 0})))
}

/// Hosts `counter` (naming this node in its answers) on the cluster's
/// key-value store, serves `df:whoami`, and joins NATS at `url` as a member.
async fn join_as_member(node: &Node, url: &str, heartbeat: Duration) -> Result<(), PfError> {
    let reactor = node.reactor();
    let id = node.node_id().to_owned();
    let whoami = id.clone();
    reactor.register_sync("df", "whoami", move |_, _| Ok(Value::from(whoami.clone())))?;
    let actors = reactor.actors();
    actors.set_store(std::sync::Arc::new(packetflow::net::NatsKvStore::new()))?;
    let counter = packetflow::ActorType::new(move |kind: &str, message: &Value, state: &mut Value, _: &_| {
        if kind == "increment" {
            let value = state["value"].as_i64().unwrap_or(0) + message["by"].as_i64().unwrap_or(1);
            state["value"] = Value::from(value);
        }
        Ok(packetflow::Reply::Value(serde_json::json!({"value": state["value"], "node": id})))
    });
    actors.register("counter", counter.with_initial_state(serde_json::json!({"value": 0})))?;
    let options = packetflow::net::NatsOptions {
        membership: true,
        actor_store: true,
        membership_heartbeat: heartbeat,
        ..Default::default()
    };
    node.connect_nats(url, options).await
}

fn register_common(reactor: &Reactor) {
    reactor
        .register_sync("df", "upper", |data, _| {
            Ok(Value::String(data.as_str().unwrap_or_default().to_uppercase()))
        })
        .unwrap();
    reactor
        .register_sync("df", "big", |data, _| {
            let size = data.as_u64().ok_or_else(|| PfError::failed("big needs a size"))?.min(1 << 20);
            Ok(Value::String("x".repeat(size as usize)))
        })
        .unwrap();
}

fn register_service(reactor: &Reactor) {
    reactor
        .register("df", "stuck", |_, _| async move {
            std::future::pending::<()>().await;
            Ok(Value::Null)
        })
        .unwrap();
    reactor.register_sync("df", "whoami", |_, _| Ok(Value::from(std::process::id()))).unwrap();
    reactor
        .register("df", "work", |data, _| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(data)
        })
        .unwrap();
}
