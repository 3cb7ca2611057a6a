//! The reactor resource owned by a `PacketFlow.Reactor` GenServer, and the
//! submit path, which any process takes without going through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use packetflow::stdlib::StdlibPatterns;
use packetflow::{ConnectionSpawner, Node, NodeConfig, Packet, PacketId, PfError, Reactor, ReactorConfig};
use parking_lot::{Mutex, RwLock};
use rustler::env::SavedTerm;
use rustler::sys::enif_send;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};

use crate::exec::{self, inline, Deliver, Job, Withdraw};
use crate::invocation;
use crate::pool::{Pool, PoolRes};
use crate::{atoms, packet, runtime, store, terms};

static LIVE: AtomicU64 = AtomicU64::new(0);

type Registry = RwLock<HashMap<LocalPid, (Reactor, Arc<Pool>)>>;

/// The running reactors (and their pools) by the pid of their GenServer,
/// so that a submit reaches the core straight from the calling process.
/// Entries hold the core's handle, not the resource: the GenServer's
/// resource still goes when the GenServer does, and its destructor removes
/// the entry.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// A core reactor, its network node once it has one, and the worker pool
/// of its handlers.
pub struct ReactorRes {
    reactor: Reactor,
    /// Made by the first `listen` or `connect`.
    node: Mutex<Option<Node>>,
    pool: Arc<Pool>,
    /// The GenServer: network answers go there, and it is the key of this
    /// reactor in the registry.
    owner: LocalPid,
    /// Its actor store file, if it has one: closed when it stops.
    store: Option<Arc<store::Closable>>,
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
        registry().write().remove(&self.owner);
        self.reactor.stop();
        if let Some(store) = &self.store {
            store.close();
        }
        if let Some(node) = self.node.get_mut().take() {
            // Closing connections is async; the task owns what it needs.
            runtime::handle().spawn(async move { node.stop().await });
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reactor settings given in Elixir, `nil` where not given.
#[derive(rustler::NifTuple)]
struct Settings {
    name: Option<String>,
    max_inflight: Option<usize>,
    max_queue: Option<usize>,
    actor_passivate_after_ms: Option<u64>,
    actor_remembered_turns: Option<usize>,
    /// The standard elements to host, as patterns (`"cf:*,co:gather"`).
    stdlib: Option<String>,
}

/// The core's reactor settings and the standard elements to host: its
/// defaults for what is not given (`nil`), checked by the core (PF400
/// naming the option, or the bad pattern).
fn config(settings: Settings) -> Result<(ReactorConfig, StdlibPatterns), PfError> {
    let defaults = ReactorConfig::default();
    let config = ReactorConfig {
        name: settings.name.unwrap_or(defaults.name),
        max_inflight: settings.max_inflight.unwrap_or(defaults.max_inflight),
        max_queue: settings.max_queue.unwrap_or(defaults.max_queue),
        actor_passivate_after: settings
            .actor_passivate_after_ms
            .map_or(defaults.actor_passivate_after, Duration::from_millis),
        actor_remembered_turns: settings.actor_remembered_turns.unwrap_or(defaults.actor_remembered_turns),
        ..defaults
    };
    config.validate()?;
    let stdlib = StdlibPatterns::parse(settings.stdlib.as_deref().unwrap_or_default())?;
    Ok((config, stdlib))
}

/// Whether the core accepts these reactor settings (`{name, max_inflight,
/// max_queue, actor_passivate_after_ms, actor_remembered_turns, stdlib}`):
/// `:ok` or `{:error, %PacketFlow.Error{}}`.
#[rustler::nif]
fn reactor_check_config(env: Env, settings: Settings) -> Term {
    match config(settings) {
        Ok(_) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), terms::error(env, &e)).encode(env),
    }
}

/// A reactor owned by the calling process (its GenServer), whose handler
/// calls go to `pool`'s workers: `{:ok, reactor}` or `{:error,
/// %PacketFlow.Error{}}` for settings the core refuses, or an actor store
/// (a file, `actor_store`) it cannot open.
#[rustler::nif]
fn reactor_new<'a>(
    env: Env<'a>,
    settings: Settings,
    actor_store: Option<String>,
    pool: ResourceArc<PoolRes>,
) -> Term<'a> {
    let made = config(settings).and_then(|(config, stdlib)| {
        let reactor = Reactor::new(config);
        let store = match actor_store {
            Some(path) => {
                let store = Arc::new(store::Closable::open(&path)?);
                reactor.actors().set_store(store.clone())?;
                Some(store)
            }
            None => None,
        };
        // After the store: stateful elements keep their state in actors.
        reactor.enable_stdlib(&stdlib);
        Ok((reactor, store))
    });
    let (reactor, store) = match made {
        Ok(made) => made,
        Err(e) => return (atoms::error(), terms::error(env, &e)).encode(env),
    };
    LIVE.fetch_add(1, Ordering::Relaxed);
    let owner = env.pid();
    registry().write().insert(owner, (reactor.clone(), Arc::clone(&pool.0)));
    let resource = ResourceArc::new(ReactorRes {
        reactor,
        node: Mutex::new(None),
        pool: Arc::clone(&pool.0),
        owner,
        store,
    });
    (atoms::ok(), resource).encode(env)
}

/// Routes `group:element` to the workers' handler `handler_id`, a new id
/// for every registration: `:ok` or `{:error, %PacketFlow.Error{}}` (PF400
/// for a bad name). The function of a registration the core lets go of (a
/// refused one, or one replaced or removed once its packets are answered)
/// is forgotten by the dispatcher (see `invocation`).
#[rustler::nif]
fn reactor_register<'a>(
    env: Env<'a>,
    r: ResourceArc<ReactorRes>,
    group: String,
    element: String,
    handler_id: u64,
) -> Term<'a> {
    let handler = invocation::handler(handler_id, Arc::clone(&r.pool));
    // In an inline scope, so that a registration dropped here (refused, or
    // replaced with nothing left in flight) is forgotten with this NIF's
    // environment.
    inline::run(env, || match r.reactor.register_handler(&group, &element, handler) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), terms::error(env, &e)).encode(env),
    })
}

/// Removes the handler of `group:element`; `false` if there was none.
/// Packets already routed to it still run it.
#[rustler::nif]
fn reactor_unregister(env: Env, r: ResourceArc<ReactorRes>, group: String, element: String) -> bool {
    inline::run(env, || r.reactor.unregister(&group, &element))
}

/// Where an answer goes: `{:pf_result, ref, answer}` to the process that
/// asked, built in an environment made for it when it asked (which holds
/// the caller's `ref`); `encode` makes `answer`. A caller that is gone by
/// then is no concern: the send fails and the environment is freed.
pub struct ToCaller<T> {
    caller: LocalPid,
    message: Mutex<(OwnedEnv, SavedTerm)>,
    encode: for<'m> fn(Env<'m>, &T) -> Term<'m>,
}

impl<T> ToCaller<T> {
    /// The answer for the calling process of `env`, tagged `tag`.
    pub fn new(env: Env, tag: Term, encode: for<'m> fn(Env<'m>, &T) -> Term<'m>) -> ToCaller<T> {
        let owned = OwnedEnv::new();
        let saved = owned.save(tag);
        ToCaller { caller: env.pid(), message: Mutex::new((owned, saved)), encode }
    }

    fn send(&self, from: Option<Env>, value: &T) {
        let slot = self.message.lock();
        let (owned, tag) = &*slot;
        owned.run(|menv| {
            let message = (atoms::pf_result(), tag.load(menv), (self.encode)(menv, value)).encode(menv);
            let from = from.map_or(std::ptr::null_mut(), |env| env.as_c_arg());
            // SAFETY: `from` is the running NIF's environment or null (on a
            // runtime thread); `menv` is process-independent and holds the
            // whole message. It is not used again after this send; the
            // `OwnedEnv` frees it when this value is dropped.
            unsafe { enif_send(from, self.caller.as_c_arg(), menv.as_c_arg(), message.as_c_arg()) };
        });
    }
}

impl<T: Send + 'static> Deliver<T> for ToCaller<T> {
    fn inline(&self, env: Env, value: T) {
        self.send(Some(env), &value);
    }

    fn later(&self, value: T) {
        self.send(None, &value);
    }
}

/// The running reactor (and its pool) whose GenServer is `reactor`, if
/// that is the pid of one.
pub fn find(reactor: Term) -> Option<(Reactor, Arc<Pool>)> {
    let pid = reactor.decode::<LocalPid>().ok()?;
    registry().read().get(&pid).cloned()
}

/// Builds a packet from `fields` (a map) and submits it to the reactor
/// whose GenServer is `reactor`, on behalf of the calling process, whose
/// [`Submitter`] is `submitter`:
///
/// - `{:pending, timeout_ms}`: the result will arrive as
///   `{:pf_result, tag, %PacketFlow.Result{}}`;
/// - `{:done, result}`: answered at once (no handler, duplicate id, queue
///   full, or a field that breaks a protocol rule: PF400);
/// - `{:badarg, message}`: a field of the wrong type;
/// - `:noproc`: `reactor` is not the pid of a running reactor.
#[rustler::nif]
fn reactor_submit<'a>(
    env: Env<'a>,
    reactor: Term<'a>,
    fields: Term<'a>,
    tag: Term<'a>,
    submitter: Term<'a>,
) -> Term<'a> {
    match packet::build(fields) {
        Ok(Ok(packet)) => submit(env, reactor, packet, tag, submitter),
        Ok(Err(result)) => (atoms::done(), terms::result(env, &result)).encode(env),
        Err(message) => (atoms::badarg(), message).encode(env),
    }
}

/// Submits `packet` to the reactor whose GenServer is `reactor`, for the
/// calling process: `{:pending, timeout_ms}`, `{:done, result}` or
/// `:noproc`, as [`reactor_submit`] answers.
pub fn submit<'a>(
    env: Env<'a>,
    reactor: Term<'a>,
    packet: Packet,
    tag: Term<'a>,
    submitter: Term<'a>,
) -> Term<'a> {
    let Some((reactor, pool)) = find(reactor) else {
        return atoms::noproc().encode(env);
    };
    let timeout_ms = reactor.timeout_of(&packet);
    let deliver = ToCaller::new(env, tag, terms::result);
    let submit = async move { reactor.submit(packet).await };
    inline::run(env, || match Job::launch(submit, deliver, pool.home()) {
        Ok(result) => (atoms::done(), terms::result(env, &result)).encode(env),
        Err(job) => {
            Submitter::waits_for(submitter, &job);
            (atoms::pending(), timeout_ms).encode(env)
        }
    })
}

/// A process that submits, as the NIFs know it: a resource kept in its
/// process dictionary (`PacketFlow.Reactor.submitter/0`), pointing at the
/// submit it waits for. The Elixir API waits for one submit at a time, so:
///
/// - when the process ends, the BEAM frees its dictionary and with it this
///   resource, whose drop withdraws the submit it was waiting for;
/// - a new submit withdraws the one before if that one still runs (its
///   caller stopped waiting for it: a timeout it caught).
///
/// Withdrawing drops the submit's core future where its job is polled next
/// (the reactor's dispatcher, from here), and dropping a submit's future
/// cancels its packet (docs/protocol.md, "Cancellation"). One resource per
/// process, made on its first submit; per submit, a weak reference stored.
pub struct Submitter {
    waiting: Mutex<Option<Weak<dyn Withdraw>>>,
}

#[rustler::resource_impl]
impl Resource for Submitter {}

impl std::panic::RefUnwindSafe for Submitter {}

impl Submitter {
    /// The process whose submitter is `submitter` waits for `job` now.
    /// Not a submitter (a caller of these NIFs that passes something else):
    /// nothing is watched.
    pub fn waits_for<J: Withdraw + 'static>(submitter: Term, job: &Arc<J>) {
        let Ok(submitter) = submitter.decode::<ResourceArc<Submitter>>() else {
            return;
        };
        let job: Weak<dyn Withdraw> = Arc::downgrade(job) as Weak<dyn Withdraw>;
        let before = submitter.waiting.lock().replace(job);
        if let Some(before) = before.and_then(|job| job.upgrade()) {
            // Answered already (the usual case): nothing happens.
            before.withdraw();
        }
    }
}

impl Drop for Submitter {
    /// The process ended (or let go of its dictionary entry). Runs where its
    /// heap is freed, a scheduler outside any NIF: the withdrawn job is
    /// polled by the reactor's dispatcher.
    fn drop(&mut self) {
        if let Some(job) = self.waiting.get_mut().take().and_then(|job| job.upgrade()) {
            job.withdraw();
        }
    }
}

/// A new [`Submitter`], for the calling process's dictionary.
#[rustler::nif]
fn submitter_new() -> ResourceArc<Submitter> {
    ResourceArc::new(Submitter { waiting: Mutex::new(None) })
}

/// Cancels the packet `id` in flight on the reactor whose GenServer is
/// `reactor` (`Reactor::cancel`): its submitter is answered PF499 and its
/// handler told before this returns. `true` if it was in flight, `false`
/// if not (an id that is not a valid packet id never is); `:noproc` when
/// `reactor` is not the pid of a running reactor.
#[rustler::nif]
fn reactor_cancel<'a>(env: Env<'a>, reactor: Term<'a>, id: &str) -> Term<'a> {
    let Some((reactor, _pool)) = find(reactor) else {
        return atoms::noproc().encode(env);
    };
    let Ok(id) = PacketId::new(id) else {
        return false.encode(env);
    };
    // In an inline scope: what the cancel wakes (the submitter's future,
    // its handler's withdrawal) runs before this returns.
    inline::run(env, || reactor.cancel(&id)).encode(env)
}

/// Stops the core: packets in flight and later submits are answered PF503.
/// On the network, connections close (after sending those answers) and
/// listeners stop, in the background.
#[rustler::nif]
fn reactor_stop(env: Env, r: ResourceArc<ReactorRes>) -> rustler::Atom {
    registry().write().remove(&r.owner);
    // Submits answered PF503 here are polled and answered before this
    // returns (the dispatcher, which would otherwise, is stopping too).
    inline::run(env, || r.reactor.stop());
    // So that a reactor started next on the same file finds it free.
    if let Some(store) = &r.store {
        store.close();
    }
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
                // Connections run as jobs of this reactor: read, handled and
                // answered on the schedulers (see `exec`).
                let pool = Arc::clone(&self.pool);
                let spawner = ConnectionSpawner::new(move |connection| exec::spawn(connection, pool.home()));
                let config =
                    NodeConfig { runtime: "elixir".into(), spawner: Some(spawner), ..NodeConfig::default() };
                Node::new(self.reactor.clone(), config)
            })
            .clone()
    }

    /// The process that receives this reactor's network answers (its
    /// GenServer).
    pub fn owner(&self) -> &LocalPid {
        &self.owner
    }

    /// The core reactor.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The worker pool of its handlers and actor turns.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

/// A snapshot of the reactor's counters.
#[rustler::nif]
fn reactor_stats<'a>(env: Env<'a>, r: ResourceArc<ReactorRes>) -> Term<'a> {
    // Off the network, or not on NATS: `nats: nil`.
    let nats = r.node.lock().as_ref().and_then(Node::nats_stats);
    terms::stats(env, &r.reactor.stats(), nats.as_ref())
}

/// Reactor resources not yet freed (for tests of resource cleanup).
#[rustler::nif]
fn live_reactors() -> u64 {
    LIVE.load(Ordering::Relaxed)
}
