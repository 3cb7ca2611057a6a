//! The in-process [`Reactor`]: handler table, scheduler, deadlines,
//! dependencies, in-flight table and stats. It needs no network: this is
//! the embedded default, and a network node is a reactor plus transport.

mod context;
mod handler;
mod in_place;
mod inflight;
mod scheduler;
mod stats;
mod tuning;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use arc_swap::{ArcSwap, ArcSwapOption};
use foldhash::HashMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

pub(crate) use context::mc_refused;
pub(crate) use context::ContextId;
pub(crate) use context::{carries_chain, Call};
pub use context::{late_call_error, CallOptions, Context};
pub use handler::{Handler, HandlerError, HandlerResult};
pub(crate) use in_place::InPlaceRoute;
pub use stats::{HandlerStats, NatsStats, NetworkStats, ReactorStats, RouteCounts};
pub use tuning::{Setting, MAX_CONCURRENCY};
// The same histogram counts the keys a node forwards (its dashboard), and
// the actors of a type.
pub(crate) use stats::Stats;

use crate::actor::{ActorStore, ActorType, Actors, HostSettings, MemoryStore, TypeHost};
use crate::error::{ErrorCode, PfError};
use crate::key_style::KeyStyle;
use crate::packet::{Element, Group, Packet, PacketId, META_ROUTE_KEY};
use crate::result::PacketResult;
pub(crate) use inflight::InflightGuard;
use inflight::{Cancel, DependencyState, Inflight, Outcome};
use scheduler::{Refused, RunSlot, Scheduler};

/// Settings of a [`Reactor`].
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Name shown in stats and announced to peers.
    pub name: String,
    /// Most handlers running at once; more packets wait in the queue.
    pub max_inflight: usize,
    /// Most packets waiting for a slot; past it, submits get PF429.
    pub max_queue: usize,
    /// How many finished packet ids are remembered, so that a packet that
    /// depends on one that already finished does not wait for it.
    pub finished_memory: usize,
    /// How long an actor stays in memory without a message before it is
    /// passivated (its state kept in the store, its memory freed).
    pub actor_passivate_after: Duration,
    /// How many of its last successful turns each actor remembers (packet
    /// id and answer), so that a repeated packet is answered without
    /// running again: the effectively-once window.
    pub actor_remembered_turns: usize,
}

impl ReactorConfig {
    /// Checks the values a user may set: PF400 naming the option as the
    /// option files, Python and Elixir spell it (`max_inflight`,
    /// `actor_passivate_after_ms`).
    pub fn validate(&self) -> Result<(), PfError> {
        self.validate_as(KeyStyle::Snake)
    }

    /// [`validate`](Self::validate), naming the option in `style`
    /// (`maxInflight` and `actorPassivateAfterMs` for JavaScript).
    pub fn validate_as(&self, style: KeyStyle) -> Result<(), PfError> {
        let at_least_one = |name: &str| {
            Err(PfError::new(ErrorCode::BadRequest, format!("{name} must be at least 1, got 0")))
        };
        if self.max_inflight == 0 {
            return at_least_one(style.pick("max_inflight", "maxInflight"));
        }
        if self.actor_passivate_after.is_zero() {
            return at_least_one(style.pick("actor_passivate_after_ms", "actorPassivateAfterMs"));
        }
        Ok(())
    }
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            name: "packetflow".into(),
            max_inflight: 1024,
            max_queue: 65_536,
            finished_memory: 4096,
            actor_passivate_after: Duration::from_secs(600),
            actor_remembered_turns: 32,
        }
    }
}

/// The connection a packet arrived on, as a network node numbers them; a
/// forwarder never sends a packet back where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(pub u64);

/// How the in-flight table records an origin (0: this process; a node
/// numbers its connections from 1).
#[inline]
fn origin_number(origin: Option<Origin>) -> u64 {
    origin.map_or(0, |o| o.0)
}

/// The answer of a cancelled packet (PF499).
pub(crate) fn cancelled_error(id: &PacketId) -> PfError {
    PfError::new(ErrorCode::Cancelled, format!("packet {id} was cancelled"))
}

/// What [`Reactor::try_submit`] did with a packet.
// A packet is given back by value (no allocation) on the slow paths.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Immediate<P> {
    /// Answered at once (a local sync handler).
    Done(PacketResult),
    /// Valid, without dependencies, with no local handler: it goes to a
    /// peer or is answered PF001.
    Elsewhere(P),
    /// Valid, without dependencies, for a local async handler: its route,
    /// for [`Reactor::run_routed`] (no second check or lookup).
    Routed(P, Arc<Route>),
    /// Needs the awaiting path ([`Reactor::submit_waiting`]): dependencies,
    /// an invalid packet, a stopped reactor, an actor that may live on a
    /// peer, a repeated id.
    Later(P),
}

impl Immediate<Packet> {
    /// The packet given back, unless it was answered.
    pub(crate) fn packet(&self) -> Option<&Packet> {
        match self {
            Immediate::Done(_) => None,
            Immediate::Elsewhere(packet) | Immediate::Routed(packet, _) | Immediate::Later(packet) => {
                Some(packet)
            }
        }
    }
}

/// A packet held by value or in a box (as a decoded frame holds it, so that
/// forwarding it needs no new box).
pub(crate) trait OwnedPacket {
    fn packet(&self) -> &Packet;
    fn packet_mut(&mut self) -> &mut Packet;
    fn into_packet(self) -> Packet;
}

impl OwnedPacket for Packet {
    fn packet(&self) -> &Packet {
        self
    }
    fn packet_mut(&mut self) -> &mut Packet {
        self
    }
    fn into_packet(self) -> Packet {
        self
    }
}

impl OwnedPacket for Box<Packet> {
    fn packet(&self) -> &Packet {
        self
    }
    fn packet_mut(&mut self) -> &mut Packet {
        self
    }
    fn into_packet(self) -> Packet {
        *self
    }
}

/// Where packets with no local handler go: a network node's router.
pub trait Forwarder: Send + Sync + 'static {
    /// A future answering `packet` elsewhere, or `None` when no peer can
    /// take it (the reactor then answers PF001).
    fn forward(
        &self,
        packet: Packet,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> Option<BoxFuture<'static, PacketResult>>;

    /// Whether the actor `id` of a type this reactor hosts lives here: on
    /// the node `at` names when its packet names one (`pf.actor_at`, a
    /// message forwarded to an actor that migrated), else on the node
    /// placement picks; `false` sends its packet to
    /// [`forward`](Self::forward) instead. The default: always here.
    fn actor_here(&self, actor_type: &str, id: &str, at: Option<&str>, origin: Option<Origin>) -> bool {
        let _ = (actor_type, id, at, origin);
        true
    }

    /// The nodes known to host `actor_type`, this one included when it
    /// does, sorted. The default: none (no network).
    fn actor_host_ids(&self, actor_type: &str) -> Vec<String> {
        let _ = actor_type;
        Vec::new()
    }

    /// Whether `node_id` is known to host `actor_type` (this node
    /// included). The default: none is.
    fn hosts_actor_type(&self, actor_type: &str, node_id: &str) -> bool {
        let _ = (actor_type, node_id);
        false
    }

    /// Whether `node_id` is this node, a peer node, or a host of some actor
    /// type this node heard of. The default: none is.
    fn knows_node(&self, node_id: &str) -> bool {
        let _ = node_id;
        false
    }

    /// A future answering `packet`, an actor message naming in
    /// `pf.actor_at` the node `node_id` it is delivered at, from that
    /// node: sent toward it as [`forward`](Self::forward) sends a packet
    /// (one hop more, the deadline left, withdrawn if the future is
    /// dropped). The packet's first hop leaves at the future's first poll.
    /// `None` when `node_id` is not known to host the packet's actor type.
    /// The default: none is.
    fn forward_to_actor_host(
        &self,
        node_id: &str,
        packet: Packet,
        deadline: Instant,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let _ = (node_id, packet, deadline);
        None
    }

    /// Whether the connection `origin` is a peer node whose `hello`
    /// announced `group:element` (a host of an actor type, or a node
    /// routing to one, for `rm:actor.T`). The default: none is.
    fn origin_announces(&self, origin: Origin, group: Group, element: &str) -> bool {
        let _ = (origin, group, element);
        false
    }

    /// Cancels `id`, a packet a connection of the node relayed to a peer
    /// without a future (not through [`forward`](Self::forward)): withdraw
    /// it from the peer and answer it (PF499). The default: there are none.
    fn cancel_relayed(&self, id: &PacketId) {
        let _ = id;
    }

    /// The node's counts of packets sent beyond the reactor, and its
    /// connection to NATS, for [`Reactor::stats`]. The default: none.
    fn network_stats(&self) -> Option<NetworkStats> {
        None
    }

    /// Whether a packet for `group:element`, which has a local handler,
    /// runs here given its route key: `false` when the node placing route
    /// keys over its cluster's members (docs/protocol.md, "Actors and route
    /// keys over NATS") picks another member, and the packet goes to
    /// [`forward`](Self::forward) instead. The default: here.
    fn route_key_here(&self, group: Group, element: &str, route_key: &str, origin: Option<Origin>) -> bool {
        let _ = (group, element, route_key, origin);
        true
    }

    /// Whether a peer announced a handler of `group:element` (not counting
    /// `origin`): it then serves the key instead of this reactor's built-in
    /// standard element (docs/stdlib.md, "A user's handler wins"). The
    /// default: none did.
    fn announced(&self, group: Group, element: &str, origin: Option<Origin>) -> bool {
        let _ = (group, element, origin);
        false
    }

    /// This node's id, as its peers know it (`co:broadcast` names each
    /// node's answer by it). The default: none (no network).
    fn node_id(&self) -> Option<String> {
        None
    }

    /// The node ids of the peers that announced a handler of
    /// `group:element`, each once: the peers `co:broadcast` calls. The
    /// default: none.
    fn announcers(&self, group: Group, element: &str) -> Vec<String> {
        let _ = (group, element);
        Vec::new()
    }

    /// A future answering `packet` from the peer `node_id` (one of
    /// [`announcers`](Self::announcers)), sent to that peer alone, as
    /// [`forward`](Self::forward) sends it (one hop more, the deadline
    /// left, withdrawn if the future is dropped); `None` when no such peer
    /// announced the packet's key. The default: none.
    fn forward_to_peer(
        &self,
        node_id: &str,
        packet: Packet,
        deadline: Instant,
    ) -> Option<BoxFuture<'static, PacketResult>> {
        let _ = (node_id, packet, deadline);
        None
    }

    /// The node's busy-poll window in µs (0: off), for `mc:tune`; `None`
    /// when the node cannot busy-poll (its connections run on a
    /// spawner). The default: none.
    fn busy_poll_us(&self) -> Option<u64> {
        None
    }

    /// Sets the node's busy-poll window to `us` µs (0: off) and returns the
    /// one it replaces; `None` (nothing changed) when the node cannot
    /// busy-poll. The default: cannot.
    fn set_busy_poll_us(&self, us: u64) -> Option<u64> {
        let _ = us;
        None
    }
}

/// What serves a `group:element`: a handler, or the host of an actor type.
#[derive(Clone)]
enum Target {
    Handler(Handler),
    Actors(Arc<TypeHost>),
}

/// A registered handler or actor type with its counters.
pub(crate) struct Route {
    target: Target,
    stats: Arc<Stats>,
    /// The key's own concurrency limit (`mc:scale`), if it has one: a
    /// packet takes a slot here before one of the reactor's.
    limit: Option<Arc<Scheduler>>,
    /// For a standard element that can answer some packets at once: how,
    /// tried before its handler.
    now: Option<Now>,
}

/// How a standard element answers a packet at once, without its (async)
/// handler's future.
#[derive(Clone)]
pub(crate) enum Now {
    /// A read it answers before the packet is marked in flight.
    Answer(Arc<NowFn>),
    /// Work it prepared for the packet that runs to its end at once, as a
    /// sync handler does (marked in flight, with the packet's context).
    Run(Arc<RunNowFn>),
}

/// A standard element's answer to `data` when it has one at once and
/// giving it changes nothing (a read); `None`: its handler takes the
/// packet. It runs before the packet is marked in flight.
pub(crate) type NowFn = dyn Fn(&Value, &Reactor) -> Option<HandlerResult> + Send + Sync;

/// A standard element's work for `packet` when it can run to its end at
/// once (a `cf:seq` whose every step runs in place); `None`: its handler
/// takes the packet. It may read the packet only: nothing has run yet.
pub(crate) type RunNowFn = dyn Fn(&Packet, &Reactor) -> Option<Box<NowWork>> + Send + Sync;

/// Prepared work ([`RunNowFn`]): given the packet's data and context.
pub(crate) type NowWork = dyn FnOnce(Value, &Context) -> HandlerResult + Send;

/// Handlers by group, then element. Replaced whole on (un)registration and
/// read without locks; looking up borrows the packet's `&str`, so no key is
/// ever formatted per packet.
#[derive(Default, Clone)]
struct HandlerTable {
    by_group: [HashMap<Element, Arc<Route>>; 6],
}

impl HandlerTable {
    fn get(&self, group: Group, element: &str) -> Option<&Arc<Route>> {
        self.by_group[group.index()].get(element)
    }

    fn sorted_keys(&self) -> Vec<(Group, Element)> {
        let mut keys: Vec<_> = Group::ALL
            .iter()
            .flat_map(|g| self.by_group[g.index()].keys().map(move |e| (*g, e.clone())))
            .collect();
        keys.sort();
        keys
    }
}

pub(crate) struct ReactorInner {
    config: ReactorConfig,
    handlers: ArcSwap<HandlerTable>,
    /// The standard elements this reactor hosts (`crate::stdlib`): they
    /// serve a key only when no handler here or on a peer does.
    builtins: ArcSwap<HandlerTable>,
    /// Serialises writers of `handlers` (readers never take it).
    registering: Mutex<()>,
    forwarder: ArcSwapOption<Box<dyn Forwarder>>,
    inflight: Arc<Inflight>,
    scheduler: Arc<Scheduler>,
    unrouted: AtomicU64,
    /// Packets cancelled while forwarded to a peer.
    forwards_cancelled: AtomicU64,
    stopped: AtomicBool,
    shutdown: Notify,
    /// Bumped on every (un)registration, so a node can re-announce.
    handlers_version: tokio::sync::watch::Sender<u64>,
    /// Where actor state goes; a memory store unless one was set before
    /// the first actor type was registered.
    actor_store: Mutex<Option<Arc<dyn ActorStore>>>,
    /// Whether the passivation sweep runs.
    sweeping: AtomicBool,
    /// What `mc:tune` and `mc:scale` change while the reactor runs (see
    /// `tuning`).
    tuned: tuning::Tuned,
}

/// The in-process runtime: register handlers, submit packets, get results.
///
/// Cheap to clone (a handle). `submit` must run inside a Tokio runtime with
/// its time driver enabled (deadlines are Tokio timers).
#[derive(Clone)]
pub struct Reactor {
    inner: Arc<ReactorInner>,
}

impl Default for Reactor {
    fn default() -> Self {
        Reactor::new(ReactorConfig::default())
    }
}

fn since_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("handler panicked: {text}")
}

impl Reactor {
    /// A reactor with the given settings.
    pub fn new(config: ReactorConfig) -> Reactor {
        Reactor {
            inner: Arc::new(ReactorInner {
                scheduler: Arc::new(Scheduler::new(config.max_inflight, config.max_queue)),
                inflight: Arc::new(Inflight::new(config.finished_memory)),
                handlers: ArcSwap::from_pointee(HandlerTable::default()),
                builtins: ArcSwap::from_pointee(HandlerTable::default()),
                registering: Mutex::new(()),
                forwarder: ArcSwapOption::empty(),
                unrouted: AtomicU64::new(0),
                forwards_cancelled: AtomicU64::new(0),
                stopped: AtomicBool::new(false),
                shutdown: Notify::new(),
                handlers_version: tokio::sync::watch::Sender::new(0),
                actor_store: Mutex::new(None),
                sweeping: AtomicBool::new(false),
                tuned: tuning::Tuned::new(&config),
                config,
            }),
        }
    }

    /// The settings this reactor was made with. Those `mc:tune` changed
    /// since are read with [`setting`](Self::setting).
    pub fn config(&self) -> &ReactorConfig {
        &self.inner.config
    }

    /// Registers (or replaces) the handler of `group:element`.
    pub fn register_handler(&self, group: &str, element: &str, handler: Handler) -> Result<(), PfError> {
        let (group, element) = (Group::parse(group)?, Element::new(element)?);
        self.install(group, element, Target::Handler(handler));
        Ok(())
    }

    /// Puts `target` in the handler table at `group:element`.
    fn install(&self, group: Group, element: Element, target: Target) {
        let _writer = self.inner.registering.lock();
        let mut table = HandlerTable::clone(&self.inner.handlers.load());
        let slot = &mut table.by_group[group.index()];
        // Counters survive a replacement: they describe the key, not the fn.
        let stats = match &target {
            // An actor type's messages are counted by its host, whichever way they come.
            Target::Actors(host) => host.stats.clone(),
            Target::Handler(_) => {
                slot.get(&element).map(|r| r.stats.clone()).unwrap_or_else(|| Arc::new(Stats::new()))
            }
        };
        let limit = self.inner.tuned.limit_of(group, &element);
        slot.insert(element, Arc::new(Route { target, stats, limit, now: None }));
        self.inner.handlers.store(Arc::new(table));
        self.inner.handlers_version.send_modify(|v| *v += 1);
    }

    /// Hosts `handler` as the built-in standard element `group:element`,
    /// below any handler of the same key here or on a peer; `now` answers
    /// the packets it can answer at once.
    pub(crate) fn install_builtin(&self, group: Group, element: Element, handler: Handler, now: Option<Now>) {
        let _writer = self.inner.registering.lock();
        let mut table = HandlerTable::clone(&self.inner.builtins.load());
        let limit = self.inner.tuned.limit_of(group, &element);
        let stats = Arc::new(Stats::new());
        let route = Route { target: Target::Handler(handler), stats, limit, now };
        table.by_group[group.index()].insert(element, Arc::new(route));
        self.inner.builtins.store(Arc::new(table));
        // A node announces its standard elements (`hello.stdlib`).
        self.inner.handlers_version.send_modify(|v| *v += 1);
    }

    /// The `group:element` keys of the standard elements this reactor
    /// hosts (docs/stdlib.md), sorted.
    pub fn builtin_keys(&self) -> Vec<(Group, Element)> {
        self.inner.builtins.load().sorted_keys()
    }

    /// Whether this reactor hosts a standard element for `group:element`.
    pub(crate) fn has_builtin(&self, group: Group, element: &str) -> bool {
        self.inner.builtins.load().get(group, element).is_some()
    }

    /// The built-in standard element that serves `packet` here: one this
    /// reactor hosts, for a key no peer announced.
    fn builtin_for(&self, group: Group, element: &str, origin: Option<Origin>) -> Option<Arc<Route>> {
        let route = self.inner.builtins.load().get(group, element)?.clone();
        let elsewhere =
            self.inner.forwarder.load().as_ref().is_some_and(|f| f.announced(group, element, origin));
        (!elsewhere).then_some(route)
    }

    /// The actor API of this reactor.
    pub fn actors(&self) -> Actors {
        Actors::new(self.clone())
    }

    pub(crate) fn from_inner(inner: Arc<ReactorInner>) -> Reactor {
        Reactor { inner }
    }

    pub(crate) fn set_actor_store(&self, store: Arc<dyn ActorStore>) -> Result<(), PfError> {
        let mut current = self.inner.actor_store.lock();
        if !self.actor_hosts().is_empty() {
            return Err(PfError::new(
                ErrorCode::BadRequest,
                "the actor store must be set before the first actor type is registered",
            ));
        }
        *current = Some(store);
        Ok(())
    }

    /// The actor store set with [`set_actor_store`](Self::set_actor_store)
    /// (or made for the first type registered), if any.
    #[cfg(feature = "nats")]
    pub(crate) fn actor_store(&self) -> Option<Arc<dyn ActorStore>> {
        self.inner.actor_store.lock().clone()
    }

    pub(crate) fn register_actor_type(&self, name: &str, spec: ActorType) -> Result<(), PfError> {
        let store = self.inner.actor_store.lock().get_or_insert_with(|| Arc::new(MemoryStore::new())).clone();
        let store: Arc<dyn ActorStore> = if spec.in_memory { Arc::new(MemoryStore::new()) } else { store };
        let settings = HostSettings { remembered_turns: self.inner.config.actor_remembered_turns };
        let host = TypeHost::new(name, spec, store.clone(), settings, Arc::downgrade(&self.inner));
        if store.durable() {
            // Actors stored before this process started count as passivated.
            if let Some(Ok(ids)) = futures::FutureExt::now_or_never(store.ids(name)) {
                host.counters.dormant.store(ids.len() as u64, Ordering::Relaxed);
            }
        }
        self.install(
            Group::ResourceMgmt,
            crate::actor::address::type_element(name),
            Target::Actors(Arc::new(host)),
        );
        Ok(())
    }

    /// The host of `actor_type` on this reactor.
    pub(crate) fn actor_host(&self, actor_type: &str) -> Option<Arc<TypeHost>> {
        // The element `actor.<type>` is spelled on the stack: no allocation
        // per message.
        let prefix = crate::actor::address::ACTOR_ELEMENT_PREFIX;
        let mut buf = [0u8; 64];
        let len = prefix.len() + actor_type.len();
        if len > buf.len() {
            return None;
        }
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..len].copy_from_slice(actor_type.as_bytes());
        let element = std::str::from_utf8(&buf[..len]).ok()?;
        match &self.inner.handlers.load().get(Group::ResourceMgmt, element)?.target {
            Target::Actors(host) => Some(host.clone()),
            Target::Handler(_) => None,
        }
    }

    /// Whether a network node routes this reactor's packets (placement
    /// then decides where an actor lives).
    pub(crate) fn has_forwarder(&self) -> bool {
        self.inner.forwarder.load().is_some()
    }

    /// The router of this reactor's network node, if it has one.
    pub(crate) fn forwarder(&self) -> Option<Arc<Box<dyn Forwarder>>> {
        self.inner.forwarder.load_full()
    }

    /// A handle that does not keep the reactor alive (for a task that
    /// outlives the call that started it: a standard timer).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<ReactorInner> {
        Arc::downgrade(&self.inner)
    }

    /// Every actor type hosted here.
    pub(crate) fn actor_hosts(&self) -> Vec<Arc<TypeHost>> {
        let table = self.inner.handlers.load();
        table.by_group[Group::ResourceMgmt.index()]
            .values()
            .filter_map(|route| match &route.target {
                Target::Actors(host) => Some(host.clone()),
                Target::Handler(_) => None,
            })
            .collect()
    }

    /// The names of the actor types hosted here.
    pub(crate) fn actor_type_names(&self) -> Vec<String> {
        self.actor_hosts().iter().map(|host| host.name.to_string()).collect()
    }

    pub(crate) fn count_failed_tell(&self, actor_type: &str) {
        if let Some(host) = self.actor_host(actor_type) {
            host.counters.tells_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts the passivation sweep once, from inside the runtime: every
    /// quarter of the idle time, idle actors leave memory.
    pub(crate) fn sweep_actors(&self) {
        // Read first: once started, this is a load per message, not a swap.
        if self.inner.sweeping.load(Ordering::Acquire) || self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let mut idle_time = self.inner.tuned.watch_passivate_after();
        tokio::spawn(async move {
            // The first sweep comes at once, the next ones every quarter.
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    // Read each round: `mc:tune` may change the idle time,
                    // and a change starts a round of the new length at once.
                    let every = (*idle_time.borrow_and_update() / 4)
                        .clamp(Duration::from_millis(10), Duration::from_secs(30));
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        changed = idle_time.changed() => match changed {
                            Ok(()) => continue,
                            Err(_) => return, // the reactor is gone
                        },
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                let reactor = Reactor { inner };
                if reactor.is_stopped() {
                    return;
                }
                for host in reactor.actor_hosts() {
                    host.passivate_idle().await;
                }
            }
        });
    }

    /// Registers an async handler `(data, ctx) -> Result<Value, HandlerError>`.
    pub fn register<F, Fut>(&self, group: &str, element: &str, f: F) -> Result<(), PfError>
    where
        F: Fn(Value, Context) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_handler(group, element, Handler::from_async(f))
    }

    /// Registers a sync handler `(data, &ctx) -> Result<Value, HandlerError>`,
    /// run inline on the submitting task (keep it short and non-blocking).
    pub fn register_sync<F>(&self, group: &str, element: &str, f: F) -> Result<(), PfError>
    where
        F: Fn(Value, &Context) -> HandlerResult + Send + Sync + 'static,
    {
        self.register_handler(group, element, Handler::from_sync(f))
    }

    /// Removes the handler of `group:element`; `false` if there was none.
    pub fn unregister(&self, group: &str, element: &str) -> bool {
        let (Ok(group), Ok(element)) = (Group::parse(group), Element::new(element)) else {
            return false;
        };
        let _writer = self.inner.registering.lock();
        let mut table = HandlerTable::clone(&self.inner.handlers.load());
        let removed = table.by_group[group.index()].remove(&element).is_some();
        if removed {
            self.inner.handlers.store(Arc::new(table));
            self.inner.handlers_version.send_modify(|v| *v += 1);
        }
        removed
    }

    /// The `group:element` keys with a local handler.
    pub fn handler_keys(&self) -> Vec<(Group, Element)> {
        self.inner.handlers.load().sorted_keys()
    }

    /// A receiver that changes whenever a handler is registered or removed.
    pub fn watch_handlers(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.handlers_version.subscribe()
    }

    /// Whether `group:element` has a local handler.
    pub fn has_handler(&self, group: Group, element: &str) -> bool {
        self.inner.handlers.load().get(group, element).is_some()
    }

    /// Installs the router that takes packets with no local handler.
    pub fn set_forwarder(&self, forwarder: Box<dyn Forwarder>) {
        self.inner.forwarder.store(Some(Arc::new(forwarder)));
    }

    /// Packets in flight: running here, or sent to a peer and not answered
    /// (what [`ReactorStats::in_flight`] reports, without the rest).
    pub(crate) fn in_flight(&self) -> usize {
        self.inner.inflight.len()
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Stops the reactor: packets in flight and later submits are answered
    /// PF503. Idempotent.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.shutdown.notify_waiters();
    }

    /// Cancels the packet `id` in flight on this reactor: it is answered
    /// once, PF499, and its submitter's future ends at once. Work it has
    /// not started never starts (waiting for a slot, for a dependency, in
    /// an actor's mailbox); its running handler's future is dropped, after
    /// its context's [`cancelled`](Context::cancelled) signal fired; every
    /// `ctx.call` it has in flight is cancelled with it, here and on peers
    /// that take cancels (docs/protocol.md, "Cancellation"); packets that
    /// depend on it answer PF424.
    ///
    /// Returns whether the packet is in flight (cancelled now, or by an
    /// earlier call: cancelling is idempotent); `false` for a packet that
    /// is not, or no longer: nothing is remembered for a later submit.
    /// A sync handler runs inline and is not interrupted: a packet
    /// cancelled while one runs is still answered PF499.
    pub fn cancel(&self, id: &PacketId) -> bool {
        self.cancel_where(id, None)
    }

    /// [`cancel`](Self::cancel), for a packet that came in on connection
    /// `origin` only (a peer cancels only what it submitted).
    pub(crate) fn cancel_from(&self, id: &PacketId, origin: Origin) -> bool {
        self.cancel_where(id, Some(origin.0))
    }

    fn cancel_where(&self, id: &PacketId, origin: Option<u64>) -> bool {
        match self.inner.inflight.cancel(id, origin) {
            Cancel::NotInFlight => false,
            Cancel::Cancelled => true,
            Cancel::Relayed => {
                self.count_forward_cancelled();
                if let Some(forwarder) = self.inner.forwarder.load_full() {
                    forwarder.cancel_relayed(id);
                }
                true
            }
        }
    }

    /// Counts a packet cancelled while forwarded (relayed by a connection).
    pub(crate) fn count_forward_cancelled(&self) {
        self.inner.forwards_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Submits a packet and waits for its one answer.
    ///
    /// Always completes: with the handler's value, or PF400 (invalid
    /// packet), PF001 (no handler), PF409 (id already in flight), PF424 (a
    /// dependency failed or timed out), PF429 (queue full), PF408 (deadline),
    /// PF500 (handler error or panic), PF499 (cancelled: see
    /// [`cancel`](Self::cancel)) or PF503 (reactor stopped). Dropping the
    /// returned future cancels the packet, as `cancel` does (with no
    /// answer, since nobody waits for it).
    /// The packet's time (its deadline, its duration) counts from this
    /// call; nothing else happens before the future is polled.
    // Not an `async fn`: the future is `submit_from`'s own, one level (and
    // one copy of the packet) smaller.
    pub fn submit(&self, packet: Packet) -> impl std::future::Future<Output = PacketResult> + Send + '_ {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.timeout_of(&packet));
        self.submit_from(packet, start, deadline, None)
    }

    /// Submits a packet and returns its data, or its error.
    pub async fn call(&self, packet: Packet) -> Result<Value, PfError> {
        self.submit(packet).await.outcome
    }

    /// Like [`submit`](Self::submit) with an explicit start and deadline,
    /// for a packet that arrived on connection `origin` (if any).
    pub async fn submit_from(
        &self,
        packet: Packet,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> PacketResult {
        match self.try_submit(packet, start, deadline, origin, false) {
            // Answered at once: no `resume` future is made (the hot path).
            Immediate::Done(result) => result,
            // Boxed: kept inline, the paths that wait would make every
            // submit's future 3.5 KB, copied wherever it is moved.
            first => Box::pin(self.resume(first, start, deadline, origin)).await,
        }
    }

    /// The rest of [`submit_from`](Self::submit_from) for what
    /// [`try_submit`](Self::try_submit) did with a packet: its answer, or
    /// the path it still has to take.
    pub(crate) async fn resume(
        &self,
        first: Immediate<Packet>,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> PacketResult {
        match first {
            Immediate::Done(result) => result,
            Immediate::Routed(packet, route) => {
                self.run_routed(packet, &route, start, deadline, origin, false).await
            }
            Immediate::Elsewhere(packet) | Immediate::Later(packet) => {
                self.submit_waiting(packet, start, deadline, origin).await
            }
        }
    }

    /// Answers a packet without awaiting when it can: a valid packet with
    /// no dependencies for a local sync handler runs here and now (the fast
    /// path of a node's connection: no future, no task). Otherwise the
    /// packet comes back, told apart: one with no local handler
    /// ([`Immediate::Elsewhere`]) is one a node may forward at once.
    ///
    /// `bar_mc`: the packet came with a token that does not grant `mc:*`
    /// (docs/protocol.md, "Authentication"). What runs here knows it
    /// without a mark in the packet (the context's flag; an actor message
    /// is marked, its turn reading its metadata); a packet given back
    /// unmarked is the caller's to mark.
    pub(crate) fn try_submit<P: OwnedPacket>(
        &self,
        owned: P,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
        bar_mc: bool,
    ) -> Immediate<P> {
        let packet = owned.packet();
        if !packet.dependencies.is_empty() || self.is_stopped() || packet.validate().is_err() {
            return Immediate::Later(owned);
        }
        let handlers = self.inner.handlers.load();
        let Some(route) = handlers.get(packet.group, packet.element.as_str()) else {
            drop(handlers);
            // It may be relayed from here: a handover is judged first. (One
            // for an actor hosted here never runs on this path: only the
            // awaiting one runs it, and judges it.)
            if let Some(refused) = self.refuse_handover(packet, origin) {
                return Immediate::Done(PacketResult::failure(packet.id.clone(), refused, since_ms(start)));
            }
            // A standard element hosted here, for a key no peer announced,
            // takes the same path as a handler: no second check or lookup.
            return match self.builtin_for(packet.group, packet.element.as_str(), origin) {
                Some(route) => self.try_route(owned, &route, start, deadline, origin, bar_mc),
                None => Immediate::Elsewhere(owned),
            };
        };
        if matches!(route.target, Target::Handler(_)) && self.route_key_elsewhere(packet, origin) {
            return Immediate::Later(owned); // the slow path forwards it
        }
        self.try_route(owned, route, start, deadline, origin, bar_mc)
    }

    /// Whether `packet`, for a local handler, carries a route key that
    /// another member of the node's cluster owns
    /// ([`Forwarder::route_key_here`]). Only a packet with metadata is
    /// looked at.
    fn route_key_elsewhere(&self, packet: &Packet, origin: Option<Origin>) -> bool {
        let Some(route_key) = packet.metadata.as_ref().and_then(|m| m.get(META_ROUTE_KEY)) else {
            return false;
        };
        let Some(route_key) = route_key.as_str() else { return false };
        let forwarder = self.inner.forwarder.load();
        forwarder
            .as_ref()
            .is_some_and(|f| !f.route_key_here(packet.group, packet.element.as_str(), route_key, origin))
    }

    /// The rest of [`try_submit`](Self::try_submit), for a valid packet
    /// without dependencies and its local `route`.
    #[inline]
    fn try_route<P: OwnedPacket>(
        &self,
        mut owned: P,
        route: &Arc<Route>,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
        bar_mc: bool,
    ) -> Immediate<P> {
        let packet = owned.packet();
        match route.now.as_ref().filter(|_| route.limit.is_none()) {
            Some(Now::Answer(now)) => {
                if let Some(outcome) = now(&packet.data, self) {
                    let Some(mut guard) = self.inner.inflight.begin(&packet.id, 0) else {
                        return Immediate::Later(owned); // the slow path answers PF409
                    };
                    let id = packet.id.clone();
                    return Immediate::Done(self.finish(&route.stats, &mut guard, id, outcome, start));
                }
            }
            Some(Now::Run(prepare)) => {
                if let Some(work) = prepare(packet, self) {
                    let Some(mut guard) = self.inner.inflight.begin(&packet.id, 0) else {
                        return Immediate::Later(owned); // the slow path answers PF409
                    };
                    let id = packet.id.clone();
                    let outcome = self.run_now(work, owned.into_packet(), deadline, bar_mc);
                    return Immediate::Done(self.finish(&route.stats, &mut guard, id, outcome, start));
                }
            }
            None => {}
        }
        let f = match &route.target {
            // A key with a limit of its own may have to wait for a slot.
            Target::Handler(Handler::Sync(f)) if route.limit.is_none() => f,
            Target::Actors(host) => {
                if bar_mc {
                    owned.packet_mut().bar_mc();
                }
                return self.try_actor_now(host, owned, start, deadline, origin, &route.stats);
            }
            Target::Handler(_) => return Immediate::Routed(owned, route.clone()),
        };
        // Answered before anything else runs here: no origin to record.
        let Some(mut guard) = self.inner.inflight.begin(&packet.id, 0) else {
            return Immediate::Later(owned); // the slow path answers PF409
        };
        let id = packet.id.clone();
        let outcome = self.run_sync(f.as_ref(), owned.into_packet(), deadline, bar_mc);
        Immediate::Done(self.finish(&route.stats, &mut guard, id, outcome, start))
    }

    /// PF403 for an actor handover (`pf.actor_op: "adopt"`) that did not
    /// come from a peer node announcing the actor's type: it replaces the
    /// actor's record, so it enters a node only from one that hosts the
    /// type or routes to it (and never from this process's own submits;
    /// a node's moves send it past this check). Checked before a packet is
    /// run or relayed.
    fn refuse_handover(&self, packet: &Packet, origin: Option<Origin>) -> Option<PfError> {
        if !crate::actor::address::is_handover(packet) {
            return None;
        }
        let forwarder = self.inner.forwarder.load();
        let from_peer = origin
            .zip(forwarder.as_ref())
            .is_some_and(|(origin, f)| f.origin_announces(origin, packet.group, packet.element.as_str()));
        if from_peer {
            return None;
        }
        let actor = crate::actor::address::placement_of(packet)
            .and_then(|placed| crate::actor::ActorRef::new(placed.actor_type, placed.id).ok())?;
        Some(crate::actor::refused_adopt(&actor))
    }

    /// The fast path of an actor message: an idle actor in memory whose
    /// turn runs inline answers here. On a node, only an actor placed here
    /// (by the rendezvous hash the awaiting path uses too; `origin` is the
    /// connection the packet came on) runs this way.
    fn try_actor_now<P: OwnedPacket>(
        &self,
        host: &Arc<TypeHost>,
        owned: P,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
        stats: &Stats,
    ) -> Immediate<P> {
        // The address is read once here, for the placement and the claim.
        let Ok(request) = crate::actor::address::Request::read(owned.packet().metadata.as_ref()) else {
            return Immediate::Later(owned); // the slow path answers PF400
        };
        if let (Some(forwarder), Some(id)) = (self.inner.forwarder.load().as_ref(), request.id) {
            if !forwarder.actor_here(&host.name, id, request.at, origin) {
                return Immediate::Later(owned);
            }
        }
        let Some(claim) = host.claim_idle(&request, owned.packet()) else {
            return Immediate::Later(owned);
        };
        let Some(mut guard) = self.inner.inflight.begin(&owned.packet().id, 0) else {
            host.release_claim(&claim);
            return Immediate::Later(owned); // the slow path answers the repeat
        };
        let packet = owned.into_packet();
        let id = packet.id.clone();
        let outcome = host.run_claimed(self, &claim, packet, deadline);
        Immediate::Done(self.finish(stats, &mut guard, id, outcome, start))
    }

    /// Marks a packet that a node relays by itself (not through
    /// [`Forwarder`]) for connection `origin` as in flight, as forwarding
    /// through the reactor does; `None` when its id already is (PF409).
    /// Cancelling it calls [`Forwarder::cancel_relayed`].
    pub(crate) fn begin_relay(&self, id: &PacketId, origin: Origin) -> Option<InflightGuard> {
        self.inner.inflight.begin_relayed(id, origin.0)
    }

    /// Counts a message sent through the actor API as in flight until the
    /// guard is dropped (it has no id in the table unless its turn reads
    /// it: see [`mark_in_flight`](Self::mark_in_flight)).
    pub(crate) fn count_ask(&self) -> inflight::AskCount<'_> {
        self.inner.inflight.count_ask()
    }

    /// Marks the id of an API message's turn as in flight, once the turn
    /// read it, until the guard is dropped (not counted again in
    /// [`in_flight`](Self::in_flight)); `None` if a packet with that id is
    /// in flight already.
    pub(crate) fn mark_in_flight(&self, id: &PacketId) -> Option<InflightGuard> {
        self.inner.inflight.mark(id)
    }

    /// Records the outcome of a local packet, ends it and builds its
    /// result: PF499 if it was cancelled meanwhile.
    fn finish(
        &self,
        stats: &Stats,
        guard: &mut InflightGuard,
        id: PacketId,
        outcome: Result<Value, PfError>,
        start: Instant,
    ) -> PacketResult {
        let elapsed = start.elapsed();
        let micros = elapsed.as_micros() as u64;
        let outcome = if guard.end(outcome.is_ok()) {
            stats.record_cancelled(micros);
            Err(cancelled_error(&id))
        } else {
            stats.record(micros, outcome.is_err());
            outcome
        };
        PacketResult { packet_id: id, outcome, duration_ms: elapsed.as_millis() as u64 }
    }

    /// Runs a sync handler, turning a panic into PF500.
    fn run_sync(
        &self,
        f: &handler::SyncFn,
        packet: Packet,
        deadline: Instant,
        bar_mc: bool,
    ) -> Result<Value, PfError> {
        let Packet { id, data, metadata, priority, .. } = packet;
        let mut ctx = Context::new(self.clone(), ContextId::Given(id), metadata, deadline, priority, false);
        ctx.bar_mc = bar_mc;
        std::panic::catch_unwind(AssertUnwindSafe(|| f(data, &ctx)))
            .unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))
    }

    /// Runs a standard element's prepared work as [`run_sync`](Self::run_sync)
    /// runs a sync handler.
    fn run_now(&self, work: Box<NowWork>, packet: Packet, deadline: Instant, bar_mc: bool) -> HandlerResult {
        let Packet { id, data, metadata, priority, .. } = packet;
        let mut ctx = Context::new(self.clone(), ContextId::Given(id), metadata, deadline, priority, false);
        ctx.bar_mc = bar_mc;
        std::panic::catch_unwind(AssertUnwindSafe(|| work(data, &ctx)))
            .unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))
    }

    /// The slow path of [`submit_from`](Self::submit_from), also for a
    /// packet [`try_submit`](Self::try_submit) gave back (it is not tried
    /// again).
    pub(crate) async fn submit_waiting(
        &self,
        mut packet: Packet,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> PacketResult {
        let fail = |id: PacketId, code: ErrorCode, message: String| {
            PacketResult::error(id, code, message, since_ms(start))
        };
        if let Err(e) = packet.validate() {
            return PacketResult::failure(packet.id, e, 0);
        }
        if let Some(refused) = self.refuse_handover(&packet, origin) {
            return PacketResult::failure(packet.id, refused, since_ms(start));
        }
        if self.is_stopped() {
            return fail(packet.id, ErrorCode::Unavailable, "the reactor is stopped".into());
        }
        let handlers = self.inner.handlers.load();
        let Some(route) = handlers.get(packet.group, packet.element.as_str()).cloned() else {
            drop(handlers);
            return self.forward_or_reject(packet, start, deadline, origin).await;
        };
        drop(handlers);
        let elsewhere = match route.target {
            Target::Actors(_) => !self.actor_lives_here(&mut packet, origin),
            Target::Handler(_) => self.route_key_elsewhere(&packet, origin),
        };
        if elsewhere {
            return self.forward_or_reject(packet, start, deadline, origin).await;
        }
        self.run_routed(packet, &route, start, deadline, origin, false).await
    }

    /// Runs a valid packet on its local `route`, from its in-flight mark
    /// on: the rest of [`submit_waiting`](Self::submit_waiting), and where
    /// [`try_submit`](Self::try_submit) sends a packet for an async handler
    /// (checked there once). `origin` is the connection it came in on.
    ///
    /// Until it is answered the packet may be cancelled: the future then
    /// answers PF499 at once, dropping what it ran. Dropping this future
    /// first cancels the packet too (see [`Running`]). `bar_mc`: as for
    /// [`try_submit`](Self::try_submit), for a handler's packet.
    pub(crate) async fn run_routed(
        &self,
        packet: Packet,
        route: &Route,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
        bar_mc: bool,
    ) -> PacketResult {
        let Some(mut guard) = self.inner.inflight.begin(&packet.id, origin_number(origin)) else {
            if let Target::Actors(host) = &route.target {
                // A repeat of an actor message in flight gets the first one's answer.
                let id = packet.id.clone();
                let outcome = match host.message(packet, deadline) {
                    Ok((actor, message)) => host.join(self, &actor, message).await,
                    Err(e) => Err(e),
                };
                return PacketResult { packet_id: id, outcome, duration_ms: since_ms(start) };
            }
            let message = format!("a packet with id {} is already in flight", packet.id);
            return PacketResult::error(packet.id, ErrorCode::DuplicateId, message, since_ms(start));
        };
        let id = packet.id.clone();
        let running = Unanswered { counted: Counted::Handler(&route.stats), start };
        let outcome = self.run_local(packet, route, deadline, &guard, bar_mc).await;
        running.answered();
        self.finish(&route.stats, &mut guard, id, outcome, start)
    }

    /// Whether this node is the placement of the actor `packet` is for
    /// (always, without a network).
    pub(crate) fn actor_lives_here(&self, packet: &mut Packet, origin: Option<Origin>) -> bool {
        let Some(forwarder) = self.inner.forwarder.load_full() else { return true };
        match crate::actor::address::placement(packet) {
            Some(placed) => forwarder.actor_here(placed.actor_type, placed.id, placed.at, origin),
            None => true,
        }
    }

    async fn forward_or_reject(
        &self,
        packet: Packet,
        start: Instant,
        deadline: Instant,
        origin: Option<Origin>,
    ) -> PacketResult {
        if let Some(route) = self.builtin_for(packet.group, packet.element.as_str(), origin) {
            return self.run_routed(packet, &route, start, deadline, origin, false).await;
        }
        // The key is formatted only if nobody takes the packet (element
        // names up to 24 bytes clone without allocating).
        let (group, element) = (packet.group, packet.element.clone());
        if let Some(forwarder) = self.inner.forwarder.load_full() {
            // The in-flight mark covers forwarded packets too (PF409).
            let Some(mut guard) = self.inner.inflight.begin(&packet.id, origin_number(origin)) else {
                let message = format!("a packet with id {} is already in flight", packet.id);
                return PacketResult::error(packet.id, ErrorCode::DuplicateId, message, since_ms(start));
            };
            let id = packet.id.clone();
            match forwarder.forward(packet, deadline, origin) {
                Some(answer) => {
                    // Cancelled: the answer's future is dropped, which
                    // withdraws the packet from the peer.
                    let forwarding =
                        Unanswered { counted: Counted::Forward(&self.inner.forwards_cancelled), start };
                    let mut answer = answer;
                    let answered = until_cancelled(&guard, answer.as_mut()).await;
                    forwarding.answered();
                    let succeeded = answered.as_ref().is_some_and(PacketResult::is_success);
                    if guard.end(succeeded) {
                        self.count_forward_cancelled();
                        return PacketResult::failure(id.clone(), cancelled_error(&id), since_ms(start));
                    }
                    return answered.expect("only a cancelled packet has no answer");
                }
                None => {
                    guard.end(false);
                    return self.unrouted(id, group, &element, start);
                }
            }
        }
        self.unrouted(packet.id, group, &element, start)
    }

    fn unrouted(&self, id: PacketId, group: Group, element: &Element, start: Instant) -> PacketResult {
        self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
        let message = format!("no handler for {group}:{element}");
        PacketResult::error(id, ErrorCode::NoHandler, message, since_ms(start))
    }

    /// Runs `packet` (marked in flight by `guard`) on its local route.
    /// Each wait ends at once, PF499, when the packet is cancelled: for
    /// its dependencies, for a slot, for its handler, for its actor.
    async fn run_local(
        &self,
        mut packet: Packet,
        route: &Route,
        deadline: Instant,
        guard: &InflightGuard,
        bar_mc: bool,
    ) -> Result<Value, PfError> {
        if !packet.dependencies.is_empty() {
            Box::pin(self.await_dependencies(&packet, deadline, guard)).await?;
        }
        let handler = match &route.target {
            Target::Handler(handler) => handler,
            Target::Actors(host) => {
                if bar_mc {
                    // Its turn knows it from the message's metadata.
                    packet.bar_mc();
                }
                // An actor's mailbox is its own queue: waiting there holds no slot.
                self.sweep_actors();
                let (actor, message) = host.message(packet, deadline)?;
                let mut delivery = Box::pin(host.deliver(self, actor, message));
                return until_cancelled(guard, delivery.as_mut())
                    .await
                    .unwrap_or_else(|| Err(guard.cancelled()));
            }
        };
        // The key's own slot first (`mc:scale`): a packet waiting for it
        // holds none of the reactor's. Boxed: the keys without a limit
        // keep a small future.
        let _key_permit = match &route.limit {
            Some(limit) => {
                Some(Box::pin(self.admit(limit, &packet, deadline, guard, "the queue of this key")).await?)
            }
            None => None,
        };
        if let Handler::Sync(f) = handler {
            // A sync handler runs to completion without yielding, so it never
            // holds a slot while others wait: it needs no admission.
            return self.run_sync(f.as_ref(), packet, deadline, bar_mc);
        }
        let _permit = match self.inner.scheduler.acquire(packet.priority) {
            Ok(RunSlot::Now(permit)) => permit,
            Ok(RunSlot::Later(waiting)) => {
                let late = || {
                    format!("timed out after waiting in the queue for {}:{}", packet.group, packet.element)
                };
                self.bounded_for(guard, waiting.granted(), deadline, late).await?
            }
            Err(Refused::QueueFull) => return Err(queue_full("the queue", &self.inner.scheduler)),
        };
        let Packet { id, group, element, data, metadata, priority, .. } = packet;
        let mut ctx = Context::new(self.clone(), ContextId::Given(id), metadata, deadline, priority, false);
        ctx.bar_mc = bar_mc;
        let Handler::Async(f) = handler else { unreachable!("sync handlers returned above") };
        let running = AssertUnwindSafe(f(data, ctx)).catch_unwind();
        let late = || format!("{group}:{element} did not answer in time");
        let outcome = self.bounded_for(guard, running, deadline, late).await?;
        outcome.unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))
    }

    /// A run slot of `scheduler` for `packet`: at once, or after waiting
    /// in its queue (`queue` names it in a PF429) by priority until the
    /// packet's deadline (PF408), its cancel (PF499) or the reactor's stop.
    async fn admit(
        &self,
        scheduler: &Arc<Scheduler>,
        packet: &Packet,
        deadline: Instant,
        guard: &InflightGuard,
        queue: &str,
    ) -> Result<scheduler::Permit, PfError> {
        match scheduler.acquire(packet.priority) {
            Ok(RunSlot::Now(permit)) => Ok(permit),
            Ok(RunSlot::Later(waiting)) => {
                let late = || {
                    format!("timed out after waiting in the queue for {}:{}", packet.group, packet.element)
                };
                self.bounded_for(guard, waiting.granted(), deadline, late).await
            }
            Err(Refused::QueueFull) => Err(queue_full(queue, scheduler)),
        }
    }

    /// Runs `work` until it ends, the deadline passes (PF408) or the
    /// reactor stops (PF503). Work that is ready at once costs no timer; the
    /// timer and the stop signal live in a box made only when work waits,
    /// which keeps every submit future small (it is moved on each await).
    pub(crate) async fn bounded<F: std::future::Future>(
        &self,
        work: F,
        deadline: Instant,
        late: impl FnOnce() -> String,
    ) -> Result<F::Output, PfError> {
        let mut work = std::pin::pin!(work);
        if let Poll::Ready(out) = futures::poll!(work.as_mut()) {
            return Ok(out);
        }
        let inner = &self.inner;
        Box::pin(async move {
            let stopping = inner.shutdown.notified();
            if inner.stopped.load(Ordering::Acquire) {
                return Err(stopped_error());
            }
            // Stopping is checked first: once the reactor stops, what is in
            // flight is answered PF503, even a handler that ended in the same
            // moment because the stop ended it (its host tore it down).
            tokio::select! {
                biased;
                _ = stopping => Err(stopped_error()),
                out = work => Ok(out),
                _ = tokio::time::sleep_until(deadline) => Err(PfError::new(ErrorCode::Timeout, late())),
            }
        })
        .await
    }

    /// [`bounded`](Self::bounded), for work of the packet `guard` marks:
    /// it also ends, PF499, when the packet is cancelled. The packet's
    /// signal is fetched only when the work waits.
    async fn bounded_for<F: std::future::Future>(
        &self,
        guard: &InflightGuard,
        work: F,
        deadline: Instant,
        late: impl FnOnce() -> String,
    ) -> Result<F::Output, PfError> {
        let mut work = std::pin::pin!(work);
        if let Poll::Ready(out) = futures::poll!(work.as_mut()) {
            return Ok(out);
        }
        let inner = &self.inner;
        Box::pin(async move {
            let signal = guard.signal();
            let stopping = inner.shutdown.notified();
            if inner.stopped.load(Ordering::Acquire) {
                return Err(stopped_error());
            }
            // As in `bounded`; a cancel comes next.
            tokio::select! {
                biased;
                _ = stopping => Err(stopped_error()),
                _ = signal.cancelled() => Err(guard.cancelled()),
                out = work => Ok(out),
                _ = tokio::time::sleep_until(deadline) => Err(PfError::new(ErrorCode::Timeout, late())),
            }
        })
        .await
    }

    async fn await_dependencies(
        &self,
        packet: &Packet,
        deadline: Instant,
        guard: &InflightGuard,
    ) -> Result<(), PfError> {
        let failed = |dep: &PacketId, why: &str| {
            PfError::new(ErrorCode::DependencyFailed, format!("dependency {dep} {why}"))
        };
        for dep in &packet.dependencies {
            if *dep == packet.id {
                return Err(failed(dep, "is the packet itself"));
            }
            let outcome = match self.inner.inflight.watch(dep) {
                DependencyState::Done(outcome) => outcome,
                DependencyState::Pending(rx) => {
                    // Its entry goes when nobody waits for the id any more,
                    // even if this wait is dropped (this packet cancelled).
                    let mut forget = ForgetWaiter { inflight: &self.inner.inflight, id: dep, armed: true };
                    let waited = self.bounded_for(guard, rx, deadline, String::new).await;
                    forget.armed = waited.is_err();
                    drop(forget);
                    match waited {
                        Ok(Ok(outcome)) => outcome,
                        Ok(Err(_)) => Outcome::Failed,
                        Err(e) if e.is(ErrorCode::Timeout) => {
                            return Err(failed(dep, "did not complete before this packet's deadline"))
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            match outcome {
                Outcome::Succeeded => {}
                Outcome::Failed => return Err(failed(dep, "failed")),
                Outcome::Cancelled => return Err(failed(dep, "was cancelled")),
            }
        }
        Ok(())
    }

    /// Looks up the handler of `group:element` and, if it is a sync one,
    /// runs it on `data` with a context for a fresh packet: the dispatch
    /// step alone, without scheduling. For the dispatch benchmark only:
    /// built with the `bench-hooks` feature, which `core/benches` needs.
    #[cfg(feature = "bench-hooks")]
    #[doc(hidden)]
    pub fn dispatch_sync_for_bench(
        &self,
        group: Group,
        element: &str,
        data: Value,
        ctx: &Context,
    ) -> Option<HandlerResult> {
        match &self.inner.handlers.load().get(group, element)?.target {
            Target::Handler(Handler::Sync(f)) => Some(f(data, ctx)),
            _ => None,
        }
    }

    /// A context as a handler of a fresh packet sees it. For benchmarks
    /// only (the `bench-hooks` feature).
    #[cfg(feature = "bench-hooks")]
    #[doc(hidden)]
    pub fn context_for_bench(&self) -> Context {
        Context::new(
            self.clone(),
            ContextId::Given(PacketId::random()),
            None,
            Instant::now() + Duration::from_secs(30),
            crate::packet::Priority::DEFAULT,
            false,
        )
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ReactorStats {
        let table = self.inner.handlers.load();
        let mut handlers: Vec<HandlerStats> = Group::ALL
            .iter()
            .flat_map(|g| table.by_group[g.index()].iter().map(move |(e, route)| route.stats.snapshot(*g, e)))
            .collect();
        handlers.sort_by(|a, b| (a.group, &a.element).cmp(&(b.group, &b.element)));
        let network =
            self.inner.forwarder.load().as_ref().and_then(|f| f.network_stats()).unwrap_or_default();
        let routed = RouteCounts {
            local: handlers.iter().map(|h| h.count).sum(),
            websocket: network.websocket,
            nats: network.nats.as_ref().map_or(0, |n| n.requests_sent),
        };
        ReactorStats {
            name: self.inner.config.name.clone(),
            routed,
            nats: network.nats,
            handlers,
            in_flight: self.inner.inflight.len(),
            queued: self.inner.scheduler.queued() + self.inner.tuned.queued_by_keys(),
            unrouted: self.inner.unrouted.load(Ordering::Relaxed),
            forwards_cancelled: self.inner.forwards_cancelled.load(Ordering::Relaxed),
            actors: self.actors().stats(),
        }
    }
}

/// PF429: `queue` (as `the queue`), `scheduler`'s, is full.
#[cold]
fn queue_full(queue: &str, scheduler: &Scheduler) -> PfError {
    PfError::new(
        ErrorCode::Overloaded,
        format!("{queue} is full ({} packets waiting); retry later", scheduler.max_queued()),
    )
}

fn stopped_error() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the reactor is stopping")
}

/// Polls `work` for the packet `guard` marks until it ends (`Some`), or
/// until the packet is cancelled (`None`; the caller then drops `work`):
/// for work that is not [`bounded`](Reactor::bounded) (an actor's answer,
/// a peer's). Work ready at its first poll never fetches the packet's
/// signal, and the select lives in a box made only when work waits.
async fn until_cancelled<F: std::future::Future + ?Sized>(
    guard: &InflightGuard,
    mut work: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    if let Poll::Ready(out) = futures::poll!(work.as_mut()) {
        return Some(out);
    }
    let signal = guard.signal();
    Box::pin(async move {
        tokio::select! {
            biased;
            _ = signal.cancelled() => None,
            out = work => Some(out),
        }
    })
    .await
}

/// A packet run here or forwarded, until it is answered. If its future is
/// dropped first (its submitter gave up: the packet that called it was
/// cancelled or ended, its connection went away), the packet counts as
/// cancelled where [`Counted`] says (its guard, dropped unended, tells its
/// dependents).
struct Unanswered<'a> {
    counted: Counted<'a>,
    start: Instant,
}

/// Where an [`Unanswered`] packet is counted when it is dropped.
enum Counted<'a> {
    /// Among its local handler's cancelled packets.
    Handler(&'a Stats),
    /// Among the packets cancelled while forwarded.
    Forward(&'a AtomicU64),
}

impl Unanswered<'_> {
    /// The packet has its answer: nothing to count.
    #[inline]
    fn answered(self) {
        std::mem::forget(self);
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        match self.counted {
            Counted::Handler(stats) => stats.record_cancelled(self.start.elapsed().as_micros() as u64),
            Counted::Forward(count) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Forgets the waiter of dependency `id` when dropped armed (see
/// [`Inflight::forget_waiter`]): the wait ended without an answer.
struct ForgetWaiter<'a> {
    inflight: &'a Inflight,
    id: &'a PacketId,
    armed: bool,
}

impl Drop for ForgetWaiter<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inflight.forget_waiter(self.id);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cancel_tests;

#[cfg(test)]
mod in_place_tests;
