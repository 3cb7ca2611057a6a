//! The reactor resource owned by a `PacketFlow.Reactor` GenServer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use packetflow::{Node, NodeConfig, PacketResult, Reactor, ReactorConfig};
use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, Resource, ResourceArc, Term};

use crate::exec::{inline, send_from, Deliver, Job};
use crate::invocation::{self, Call};
use crate::outbox::{Item, Outbox};
use crate::packet::PacketRes;
use crate::{atoms, runtime, terms};

static LIVE: AtomicU64 = AtomicU64::new(0);

/// A core reactor, its network node once it has one, and the two outboxes
/// that feed its Elixir side.
pub struct ReactorRes {
    reactor: Reactor,
    /// Made by the first `listen` or `connect`.
    node: Mutex<Option<Node>>,
    results: Arc<Outbox<Finished>>,
    calls: Arc<Outbox<Call>>,
}

#[rustler::resource_impl]
impl Resource for ReactorRes {}

// A NIF that panics is turned into an exception by rustler; the state here
// stays consistent across such a panic (parking_lot locks do not poison).
impl std::panic::RefUnwindSafe for ReactorRes {}

impl Drop for ReactorRes {
    /// The last reference went away (the GenServer ended, however it
    /// ended): stop the core so that nothing keeps waiting for it.
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(node) = self.node.get_mut().take() {
            // Closing connections is async; the task owns what it needs.
            runtime::handle().spawn(async move { node.stop().await });
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A submit's result, tagged for the GenServer that holds its caller.
struct Finished {
    tag: u64,
    result: PacketResult,
}

impl Item for Finished {
    fn encode<'a>(self, env: Env<'a>) -> Term<'a> {
        (self.tag, terms::result(env, &self.result)).encode(env)
    }
}

/// A reactor whose results go to `owner` as `{:pf_results, [{tag, result}]}`
/// and whose handler calls go to `dispatcher` as `{:pf_calls, [call]}`.
#[rustler::nif]
fn reactor_new(
    name: String,
    max_inflight: usize,
    max_queue: usize,
    owner: LocalPid,
    dispatcher: LocalPid,
) -> ResourceArc<ReactorRes> {
    let config =
        ReactorConfig { name, max_inflight: max_inflight.max(1), max_queue, ..ReactorConfig::default() };
    LIVE.fetch_add(1, Ordering::Relaxed);
    ResourceArc::new(ReactorRes {
        reactor: Reactor::new(config),
        node: Mutex::new(None),
        results: Outbox::new(owner, atoms::pf_results),
        calls: Outbox::new(dispatcher, atoms::pf_calls),
    })
}

/// Routes `group:element` to the dispatcher's handler `handler_id`:
/// `:ok` or `{:error, %PacketFlow.Error{}}` (PF400 for a bad name).
#[rustler::nif]
fn reactor_register<'a>(
    env: Env<'a>,
    r: ResourceArc<ReactorRes>,
    group: String,
    element: String,
    handler_id: u64,
) -> Term<'a> {
    let handler = invocation::handler(handler_id, Arc::clone(&r.calls));
    match r.reactor.register_handler(&group, &element, handler) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), terms::error(env, &e)).encode(env),
    }
}

/// Removes the handler of `group:element`; `false` if there was none.
#[rustler::nif]
fn reactor_unregister(r: ResourceArc<ReactorRes>, group: String, element: String) -> bool {
    r.reactor.unregister(&group, &element)
}

/// Where a submit's result goes: the reactor's GenServer, tagged.
struct ToOwner {
    tag: u64,
    results: Arc<Outbox<Finished>>,
}

impl Deliver<PacketResult> for ToOwner {
    fn inline(&self, env: Env, result: PacketResult) {
        send_from(env, self.results.pid(), |menv| {
            (atoms::pf_result(), self.tag, terms::result(menv, &result)).encode(menv)
        });
    }

    fn later(&self, result: PacketResult) {
        self.results.push(Finished { tag: self.tag, result });
    }
}

/// Starts a packet. Returns `{:done, result}` when it is answered at once
/// (no handler, duplicate id, queue full...), else `:pending`: the result
/// arrives later as `{:pf_result, tag, result}` (or within a
/// `{:pf_results, [{tag, result}]}` batch). `:taken` if the packet was
/// already submitted once.
#[rustler::nif]
fn reactor_submit<'a>(
    env: Env<'a>,
    r: ResourceArc<ReactorRes>,
    tag: u64,
    packet: ResourceArc<PacketRes>,
) -> Term<'a> {
    let Some(packet) = packet.take() else {
        return atoms::taken().encode(env);
    };
    let reactor = r.reactor.clone();
    let deliver = ToOwner { tag, results: Arc::clone(&r.results) };
    let submit = async move { reactor.submit(packet).await };
    inline::run(env, || match Job::start(submit, deliver) {
        Some(result) => (atoms::done(), terms::result(env, &result)).encode(env),
        None => atoms::pending().encode(env),
    })
}

/// Stops the core: packets in flight and later submits are answered PF503.
/// On the network, connections close (after sending those answers) and
/// listeners stop, in the background.
#[rustler::nif]
fn reactor_stop(r: ResourceArc<ReactorRes>) -> rustler::Atom {
    r.reactor.stop();
    if let Some(node) = r.node.lock().clone() {
        runtime::handle().spawn(async move { node.stop().await });
    }
    atoms::ok()
}

impl ReactorRes {
    /// This reactor's network node, made on first use.
    pub fn node(&self) -> Node {
        self.node
            .lock()
            .get_or_insert_with(|| {
                // `Node::new` spawns a task, so it runs inside the runtime.
                let _runtime = runtime::handle().enter();
                let config = NodeConfig { runtime: "elixir".into(), ..NodeConfig::default() };
                Node::new(self.reactor.clone(), config)
            })
            .clone()
    }

    /// The process that receives this reactor's results (its GenServer).
    pub fn owner(&self) -> &LocalPid {
        self.results.pid()
    }
}

/// A snapshot of the reactor's counters.
#[rustler::nif]
fn reactor_stats<'a>(env: Env<'a>, r: ResourceArc<ReactorRes>) -> Term<'a> {
    terms::stats(env, &r.reactor.stats())
}

/// Reactor resources not yet freed (for tests of resource cleanup).
#[rustler::nif]
fn live_reactors() -> u64 {
    LIVE.load(Ordering::Relaxed)
}
