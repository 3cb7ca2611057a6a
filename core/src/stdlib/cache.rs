//! `rm:cache`: a bounded key-value cache with one owner per key across a
//! mesh, and the single-flight `get_or_call`.
//!
//! Each key has one owner: the node that placement picks for the actor
//! `pf.cache/<key>` (the rendezvous hash over the nodes hosting the type,
//! as for any actor). The owner keeps the key's entry in its node-local
//! [`NodeCache`], an LRU map in memory. A request for a key this node owns
//! is served from that map with no actor turn and no copy of any state,
//! before the handler's future is first polled (a get costs 2.5-2.8x a
//! submit of a trivial handler: bench/stdlib/RESULTS-rm-cache.md). A
//! request for a key
//! another node owns is sent there as a message to `pf.cache/<key>`,
//! whose turn serves it from the owner's map the same way; those turns
//! keep nothing (each has its actor stopped) and the type lives in memory
//! whatever the node's actor store, so routing a request never writes.
//! Requests reaching an owner from other nodes run one at a time per key
//! (the actor's mailbox): one that arrives while a routed `get_or_call`
//! of its key runs its step waits for it.
//!
//! Nothing of the cache survives a restart, and entries do not move when
//! the owner of a key changes (a node joins or leaves): a key is then a
//! miss on its new owner. `ed:watch` keeps its watches with the same
//! owner ([`watch`](super::watch)).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::{self, BoxFuture, Either};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use super::args::Args;
use super::step::Step;
use super::waiter::ask;
use crate::actor::{ActorRef, ActorType, Op, Reply, TurnInput, TurnOutput};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, DEFAULT_TIMEOUT_MS};
use crate::reactor::{Context, Handler, Reactor, ReactorInner};

/// The actor type that places keys on their owner (id: the key).
pub(super) const CACHE_TYPE: &str = "pf.cache";
/// Longest key, in bytes: an actor id.
pub(super) const MAX_KEY_LEN: usize = crate::actor::address::MAX_ID_LEN;
/// Largest value, as JSON.
pub(super) const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most entries one owner keeps; past it the least recently used go.
pub(super) const MAX_ENTRIES: usize = 100_000;
/// Most bytes of keys and values (as JSON) one owner keeps; past it the
/// least recently used entries go.
pub(super) const MAX_BYTES: usize = 64 << 20;
/// Longest `ttl_ms`: a year.
pub(super) const MAX_TTL_MS: u64 = 365 * 86_400_000;
/// Most watches on one key.
pub(super) const MAX_WATCHES_PER_KEY: usize = 1_000;
/// Most watches one owner keeps.
pub(super) const MAX_WATCHES: usize = 100_000;

const ELEMENT: &str = "rm:cache";
const OPS: &[&str] = &["get", "set", "del", "get_or_call"];

/// Counters of the `rm:cache` entries and `ed:watch` watches a node owns
/// ([`Reactor::cache_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries held now.
    pub entries: u64,
    /// Bytes of their keys and values (as JSON).
    pub bytes: u64,
    /// `get` and `get_or_call` requests that found their key.
    pub hits: u64,
    /// `get` and `get_or_call` requests that did not.
    pub misses: u64,
    /// Entries let go to stay within the bounds (least recently used first).
    pub evictions: u64,
    /// Entries gone at their `ttl_ms`.
    pub expirations: u64,
    /// Steps a `get_or_call` ran (one per miss, however many callers waited).
    pub step_calls: u64,
    /// Watches registered now.
    pub watches: u64,
    /// Calls of watches' `do` steps started.
    pub watch_calls: u64,
    /// Those that failed (their changes were made all the same).
    pub watch_failures: u64,
}

impl Reactor {
    /// Counters of the `rm:cache` keys and `ed:watch` watches this node
    /// owns (all zero on a node that never served one).
    pub fn cache_stats(&self) -> CacheStats {
        node_cache(self).stats()
    }
}

/// A key's entry.
struct Entry {
    /// What a `get` that finds it answers, `{hit: true, value, revision}`,
    /// made once when it is stored: a hit is one clone.
    found: Value,
    expires_at: Option<Instant>,
    /// Bytes counted for it: its key and its value as JSON.
    size: usize,
    /// When the key's expiry timer wakes (only a watched key has one):
    /// the timer armed for that time is the key's, any other ends.
    timer: Option<Instant>,
}

impl Entry {
    /// When to arm a new expiry timer for this entry of a watched key: at
    /// its expiry, unless the running timer wakes by then (it then goes
    /// on to the expiry). The entry counts it armed.
    fn timer_needed(&mut self) -> Option<Instant> {
        let at = self.expires_at?;
        if self.timer.is_some_and(|wakes| wakes <= at) {
            return None;
        }
        self.timer = Some(at);
        Some(at)
    }

    fn new(value: Value, revision: u64, expires_at: Option<Instant>, size: usize) -> Entry {
        Entry { found: answer(true, value, Some(revision)), expires_at, size, timer: None }
    }

    /// The value, taken out.
    fn into_value(self) -> Value {
        match self.found {
            Value::Object(mut found) => found.remove("value").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

const NIL: usize = usize::MAX;

struct Slot {
    key: Box<str>,
    entry: Entry,
    newer: usize,
    older: usize,
}

/// Entries by key in order of use, in a slab of slots linked newest to
/// oldest: a lookup, a touch, an insert and an eviction are each O(1).
struct Lru {
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
}

impl Lru {
    fn new() -> Lru {
        Lru {
            index: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn slot(&mut self, i: usize) -> &mut Slot {
        self.slots[i].as_mut().expect("a linked slot is filled")
    }

    /// The slot of `key`, made the most recently used.
    fn touch(&mut self, key: &str) -> Option<usize> {
        let i = *self.index.get(key)?;
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
        Some(i)
    }

    fn entry_at(&mut self, i: usize) -> &mut Entry {
        &mut self.slot(i).entry
    }

    /// The entry of `key`, its place in the order unchanged.
    fn peek(&mut self, key: &str) -> Option<&mut Entry> {
        let i = *self.index.get(key)?;
        Some(&mut self.slot(i).entry)
    }

    /// Puts `entry` as the most recently used; the one it replaces.
    fn insert(&mut self, key: &str, entry: Entry) -> Option<Entry> {
        if let Some(&i) = self.index.get(key) {
            self.unlink(i);
            self.link_newest(i);
            return Some(std::mem::replace(&mut self.slot(i).entry, entry));
        }
        let slot = Slot { key: key.into(), entry, newer: NIL, older: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key.into(), i);
        self.link_newest(i);
        None
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.index.remove(key)?;
        Some(self.take(i).1)
    }

    /// Removes the least recently used entry.
    fn pop_oldest(&mut self) -> Option<(Box<str>, Entry)> {
        let i = self.oldest;
        if i == NIL {
            return None;
        }
        let (key, entry) = self.take(i);
        self.index.remove(&key);
        Some((key, entry))
    }

    fn take(&mut self, i: usize) -> (Box<str>, Entry) {
        self.unlink(i);
        self.free.push(i);
        let slot = self.slots[i].take().expect("a linked slot is filled");
        (slot.key, slot.entry)
    }

    fn unlink(&mut self, i: usize) {
        let (newer, older) = {
            let slot = self.slot(i);
            (slot.newer, slot.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slot(n).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slot(o).newer = newer,
        }
    }

    fn link_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        {
            let slot = self.slot(i);
            slot.newer = NIL;
            slot.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.slot(n).newer = i,
        }
        self.newest = i;
    }
}

/// A watch on a key: its id (as `ed:watch` answered it) and its step.
#[derive(Clone)]
pub(super) struct Watch {
    pub(super) id: String,
    pub(super) step: Step,
}

/// A change of a watched key, to tell its watches once the lock is let go.
struct Change {
    key: String,
    value: Value,
    revision: u64,
    change: &'static str,
    watches: Vec<Watch>,
}

/// How a running `get_or_call` step ended.
#[derive(Clone)]
enum Landed {
    /// Its value, and the revision it was stored with (`None`: not stored).
    Filled { value: Value, revision: Option<u64> },
    /// It failed: every caller waiting for it gets this error.
    Failed(PfError),
    /// Its caller went away (cancelled) before it ended: a waiting caller
    /// takes over.
    Abandoned,
}

/// A `get_or_call` step running for a key.
struct Flight {
    id: u64,
    /// The key was set or deleted since the step began: its value is
    /// answered but not stored over the newer change.
    stale: bool,
    done: watch::Sender<Option<Landed>>,
}

/// What a `get_or_call` found.
enum Begun {
    /// The key's entry: the answer of a hit.
    Hit(Value),
    /// No entry and no step running: this caller runs it.
    Lead(Lead),
    /// A step runs for the key: wait for it.
    Follow(watch::Receiver<Option<Landed>>),
}

/// The caller running a key's step. Dropped before it lands (its caller
/// cancelled), the flight is abandoned and a waiting caller takes over.
struct Lead {
    cache: Arc<NodeCache>,
    key: String,
    id: u64,
    landed: bool,
}

impl Lead {
    fn land(mut self, landed: Landed, ttl_ms: u64) -> Landed {
        self.landed = true;
        self.cache.land(&self.key, self.id, landed, ttl_ms)
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.landed {
            self.cache.land(&self.key, self.id, Landed::Abandoned, 0);
        }
    }
}

struct State {
    entries: Lru,
    bytes: usize,
    flights: HashMap<Box<str>, Flight, foldhash::fast::RandomState>,
    watches: HashMap<Box<str>, Vec<Watch>, foldhash::fast::RandomState>,
    watch_count: usize,
    last_revision: u64,
    next_flight: u64,
    stats: CacheStats,
}

impl State {
    /// The next revision: the owner's clock in µs, or one more than the
    /// last when changes come faster, so revisions keep growing across
    /// evictions and restarts.
    fn next_revision(&mut self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.last_revision = now.max(self.last_revision + 1);
        self.last_revision
    }

    /// A change of `key`, for its watches (none: nothing to tell).
    fn change(&mut self, key: &str, value: &Value, change: &'static str, changes: &mut Vec<Change>) -> u64 {
        let revision = self.next_revision();
        if let Some(watches) = self.watches.get(key) {
            changes.push(Change {
                key: key.to_owned(),
                value: value.clone(),
                revision,
                change,
                watches: watches.clone(),
            });
        }
        if let Some(flight) = self.flights.get_mut(key) {
            flight.stale = true;
        }
        revision
    }

    /// The live entry of `key` (an expired one goes now), touched.
    fn live(&mut self, key: &str, changes: &mut Vec<Change>) -> Option<&mut Entry> {
        let i = self.entries.touch(key)?;
        // The clock is read only for an entry that can expire.
        if self.entries.entry_at(i).expires_at.is_some_and(|at| at <= Instant::now()) {
            self.expire(key, changes);
            return None;
        }
        Some(self.entries.entry_at(i))
    }

    fn expire(&mut self, key: &str, changes: &mut Vec<Change>) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.size;
            self.stats.expirations += 1;
            self.change(key, &Value::Null, "expire", changes);
        }
    }

    /// Stores `value` (of `size` bytes counted) for `key`: the live value
    /// it replaces, and the new revision. The time to arm the key's
    /// expiry timer for comes back too, when it needs one.
    fn store(
        &mut self,
        key: &str,
        value: Value,
        size: usize,
        ttl_ms: Option<u64>,
        changes: &mut Vec<Change>,
    ) -> (Option<Value>, u64, Option<Instant>) {
        let now = Instant::now();
        let revision = self.change(key, &value, "set", changes);
        let expires_at = ttl_ms.map(|ms| now + Duration::from_millis(ms));
        let mut entry = Entry::new(value, revision, expires_at, size);
        let previous = self.entries.remove(key);
        if let Some(old) = &previous {
            self.bytes -= old.size;
            entry.timer = old.timer;
        }
        let arm = if self.watches.contains_key(key) { entry.timer_needed() } else { None };
        self.entries.insert(key, entry);
        self.bytes += size;
        self.evict(changes);
        let previous = match previous {
            Some(old) if old.expired(now) => {
                self.stats.expirations += 1;
                None
            }
            other => other.map(Entry::into_value),
        };
        (previous, revision, arm)
    }

    /// Lets the least recently used entries go until within the bounds
    /// (the newest stays: a value fits the bounds on its own).
    fn evict(&mut self, changes: &mut Vec<Change>) {
        while self.entries.len() > 1 && (self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES) {
            let Some((key, entry)) = self.entries.pop_oldest() else { return };
            self.bytes -= entry.size;
            self.stats.evictions += 1;
            self.change(&key, &Value::Null, "evict", changes);
        }
    }
}

/// The entries and watches one node owns, and the steps running for them.
pub(super) struct NodeCache {
    reactor: Weak<ReactorInner>,
    state: Mutex<State>,
}

impl NodeCache {
    fn new(reactor: Weak<ReactorInner>) -> NodeCache {
        let state = State {
            entries: Lru::new(),
            bytes: 0,
            flights: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            watches: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            watch_count: 0,
            last_revision: 0,
            next_flight: 0,
            stats: CacheStats::default(),
        };
        NodeCache { reactor, state: Mutex::new(state) }
    }

    pub(super) fn stats(&self) -> CacheStats {
        let st = self.state.lock();
        let mut stats = st.stats.clone();
        stats.entries = st.entries.len() as u64;
        stats.bytes = st.bytes as u64;
        stats.watches = st.watch_count as u64;
        stats
    }

    /// The answer of a `get` of `key` that finds it (see [`Entry`]).
    fn get(self: &Arc<Self>, key: &str) -> Option<Value> {
        let mut changes = Vec::new();
        let found = {
            let mut st = self.state.lock();
            let found = st.live(key, &mut changes).map(|e| e.found.clone());
            match found {
                Some(_) => st.stats.hits += 1,
                None => st.stats.misses += 1,
            }
            found
        };
        self.tell(changes);
        found
    }

    /// Sets `key`: the live value it replaced, and the new revision.
    fn set(
        self: &Arc<Self>,
        key: &str,
        value: Value,
        size: usize,
        ttl_ms: Option<u64>,
    ) -> (Option<Value>, u64) {
        let mut changes = Vec::new();
        let (previous, revision, arm) = self.state.lock().store(key, value, size, ttl_ms, &mut changes);
        if let Some(at) = arm {
            self.arm_expiry(key, at);
        }
        self.tell(changes);
        (previous, revision)
    }

    /// Deletes `key`: its live value and the revision of the deletion
    /// (`None`: there was no entry, and nothing changed).
    fn del(self: &Arc<Self>, key: &str) -> Option<(Value, u64)> {
        let mut changes = Vec::new();
        let removed = {
            let mut st = self.state.lock();
            let live = st.live(key, &mut changes).is_some();
            match live.then(|| st.entries.remove(key)).flatten() {
                Some(entry) => {
                    st.bytes -= entry.size;
                    let revision = st.change(key, &Value::Null, "del", &mut changes);
                    Some((entry.into_value(), revision))
                }
                None => None,
            }
        };
        self.tell(changes);
        removed
    }

    /// A `get_or_call` of `key`: its live value, or the step to run, or
    /// the running step to wait for.
    fn begin(self: &Arc<Self>, key: &str) -> Begun {
        let mut changes = Vec::new();
        let begun = {
            let mut st = self.state.lock();
            match st.live(key, &mut changes).map(|e| e.found.clone()) {
                Some(found) => {
                    st.stats.hits += 1;
                    Begun::Hit(found)
                }
                None => match st.flights.get(key) {
                    Some(flight) => Begun::Follow(flight.done.subscribe()),
                    None => {
                        st.stats.misses += 1;
                        st.stats.step_calls += 1;
                        st.next_flight += 1;
                        let id = st.next_flight;
                        let (done, _) = watch::channel(None);
                        st.flights.insert(key.into(), Flight { id, stale: false, done });
                        Begun::Lead(Lead { cache: self.clone(), key: key.to_owned(), id, landed: false })
                    }
                },
            }
        };
        self.tell(changes);
        begun
    }

    /// Ends the flight `id` of `key` with `landed` (a value is stored
    /// unless the key changed meanwhile or the value is too large) and
    /// hands it to the callers waiting for it; what they are handed.
    fn land(self: &Arc<Self>, key: &str, id: u64, landed: Landed, ttl_ms: u64) -> Landed {
        let mut changes = Vec::new();
        let mut arm = None;
        // Measured before the lock: it writes the value out.
        let size = match &landed {
            Landed::Filled { value, .. } => json_size(value),
            _ => None,
        };
        let (landed, done) = {
            let mut st = self.state.lock();
            if st.flights.get(key).is_none_or(|f| f.id != id) {
                return landed;
            }
            let Some(flight) = st.flights.remove(key) else { return landed };
            let landed = match landed {
                Landed::Filled { value, .. } if !flight.stale => match size {
                    Some(size) => {
                        let (_, revision, at) =
                            st.store(key, value.clone(), key.len() + size, Some(ttl_ms), &mut changes);
                        arm = at;
                        Landed::Filled { value, revision: Some(revision) }
                    }
                    None => Landed::Filled { value, revision: None },
                },
                other => other,
            };
            (landed, flight.done)
        };
        done.send_replace(Some(landed.clone()));
        if let Some(at) = arm {
            self.arm_expiry(key, at);
        }
        self.tell(changes);
        landed
    }

    /// How many callers wait for the step running for `key` (tests).
    #[cfg(test)]
    pub(super) fn waiting(&self, key: &str) -> usize {
        self.state.lock().flights.get(key).map_or(0, |f| f.done.receiver_count())
    }

    /// Adds `watch` to `key`; PF429 past the bounds.
    pub(super) fn watch(self: &Arc<Self>, key: &str, watch: Watch) -> Result<(), PfError> {
        let arm = {
            let mut st = self.state.lock();
            let on_key = st.watches.get(key).map_or(0, Vec::len);
            if on_key >= MAX_WATCHES_PER_KEY || st.watch_count >= MAX_WATCHES {
                let why = if on_key >= MAX_WATCHES_PER_KEY {
                    format!(
                        "ed:watch: key {key:?} has {MAX_WATCHES_PER_KEY} watches already; cancel some first"
                    )
                } else {
                    format!(
                        "ed:watch: this key's owner holds {MAX_WATCHES} watches already; cancel some first"
                    )
                };
                return Err(PfError::new(ErrorCode::Overloaded, why));
            }
            st.watches.entry(key.into()).or_default().push(watch);
            st.watch_count += 1;
            st.entries.peek(key).and_then(Entry::timer_needed)
        };
        if let Some(at) = arm {
            self.arm_expiry(key, at);
        }
        Ok(())
    }

    /// Removes the watch `id` of `key`; whether it was there.
    pub(super) fn unwatch(&self, key: &str, id: &str) -> bool {
        let mut st = self.state.lock();
        let Some(watches) = st.watches.get_mut(key) else { return false };
        let before = watches.len();
        watches.retain(|w| w.id != id);
        let removed = before - watches.len();
        if watches.is_empty() {
            st.watches.remove(key);
        }
        st.watch_count -= removed;
        removed > 0
    }

    /// Runs an expiry timer of the watched `key`, waking at `at`: an
    /// entry whose time is up then goes, and its watches are told; a newer
    /// entry that expires later keeps the timer going. A timer that is no
    /// longer the key's (a newer entry expires sooner: a timer of its own
    /// wakes then) ends when it wakes.
    fn arm_expiry(self: &Arc<Self>, key: &str, at: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (cache, key) = (Arc::downgrade(self), key.to_owned());
        runtime.spawn(async move {
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                let Some(cache) = cache.upgrade() else { return };
                match cache.expiry_due(&key, at) {
                    Some(later) => at = later,
                    None => return,
                }
            }
        });
    }

    /// An expiry timer of `key` armed for `woke` went off: the entry goes
    /// if its time is up; the next time to wake, if the timer goes on.
    fn expiry_due(self: &Arc<Self>, key: &str, woke: Instant) -> Option<Instant> {
        let mut changes = Vec::new();
        let later = {
            let mut st = self.state.lock();
            let watched = st.watches.contains_key(key);
            let entry = st.entries.peek(key)?;
            if entry.expired(Instant::now()) {
                st.expire(key, &mut changes);
                None
            } else if entry.timer != Some(woke) {
                None
            } else {
                entry.timer = entry.expires_at.filter(|_| watched);
                entry.timer
            }
        };
        self.tell(changes);
        later
    }

    /// Calls the watches of each change with `{key, value, revision,
    /// change}` (or their step's own data), each as a new packet of this
    /// node, without waiting: a failure is counted, never answered.
    fn tell(self: &Arc<Self>, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let reactor = self.reactor.upgrade().map(Reactor::from_inner);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(reactor), Some(runtime)) = (reactor, runtime) else { return };
        for change in changes {
            let mut data = Map::new();
            data.insert("key".into(), Value::String(change.key));
            data.insert("value".into(), change.value);
            data.insert("revision".into(), Value::from(change.revision));
            data.insert("change".into(), Value::String(change.change.into()));
            let data = Value::Object(data);
            for watch in change.watches {
                let step = watch.step;
                let input = step.data.clone().unwrap_or_else(|| data.clone());
                let mut packet = Packet::new(step.group, step.element.clone(), input)
                    .with_timeout_ms(step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
                if let Some(priority) = step.priority {
                    packet = packet.with_priority(priority);
                }
                self.state.lock().stats.watch_calls += 1;
                let (reactor, cache) = (reactor.clone(), self.clone());
                runtime.spawn(async move {
                    if !Box::pin(reactor.submit(packet)).await.is_success() {
                        cache.state.lock().stats.watch_failures += 1;
                    }
                });
            }
        }
    }
}

/// The caches of the reactors in this process (each reactor's own, found
/// by its address; one whose reactor is gone is dropped on the next add).
static NODE_CACHES: LazyLock<Mutex<Vec<Arc<NodeCache>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// `reactor`'s cache.
pub(super) fn node_cache(reactor: &Reactor) -> Arc<NodeCache> {
    let weak = reactor.downgrade();
    let mut all = NODE_CACHES.lock();
    if let Some(cache) = all.iter().find(|c| c.reactor.ptr_eq(&weak)) {
        return cache.clone();
    }
    all.retain(|c| c.reactor.strong_count() > 0);
    let cache = Arc::new(NodeCache::new(weak));
    all.push(cache.clone());
    cache
}

/// Whether this node owns `key` (always, without a network).
pub(super) fn owned_here(reactor: &Reactor, key: &str) -> bool {
    if !reactor.has_forwarder() {
        return true;
    }
    reactor.forwarder().is_none_or(|f| f.actor_here(CACHE_TYPE, key, None, None))
}

/// Sends `message` (its `type` names what to do) for `key` to the key's
/// owner, whose `pf.cache` turn serves it.
pub(super) async fn on_owner(ctx: &Context, key: &str, message: Value) -> Result<Value, PfError> {
    ask(ctx, &ActorRef::new(CACHE_TYPE, key)?, Op::Send, message, None).await
}

/// The JSON size of `value` in bytes; `None` past [`MAX_VALUE_BYTES`].
fn json_size(value: &Value) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_VALUE_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).ok().map(|()| count.0)
}

/// What an `rm:cache` request asks, checked.
enum Request {
    Get,
    Set { value: Value, size: usize, ttl_ms: Option<u64> },
    Del,
    GetOrCall { step: Step, ttl_ms: u64 },
}

/// Reads `{op, key, ...}`: the key and the request, or PF400 naming the
/// field. A field the op does not take is an error too (a `ttl_ms` on a
/// `get` is a mistake, not a wish).
fn read<'a>(args: &Args<'a>) -> Result<(&'a str, Request), PfError> {
    let op = args
        .choice("op", OPS)?
        .ok_or_else(|| args.bad("op", "is required (get, set, del or get_or_call)"))?;
    let key = args.text("key", MAX_KEY_LEN)?;
    let takes: &[&str] = match op {
        "set" => &["value", "ttl_ms"],
        "get_or_call" => &["step", "ttl_ms"],
        _ => &[],
    };
    // `{op, key}` holds nothing else: no lookups (a get is the hot path).
    let mut unwanted = ["value", "ttl_ms", "step"].into_iter().filter(|f| !takes.contains(f));
    if let Some(other) = unwanted.find(|f| args.len() > 2 && args.get(f).is_some()) {
        return Err(args.bad(other, format!("is not taken by op {op}")));
    }
    let request = match op {
        "get" => Request::Get,
        "del" => Request::Del,
        "set" => {
            let value = args.get("value").ok_or_else(|| {
                args.bad("value", "is required (null is not a value: op del removes a key)")
            })?;
            let size = json_size(value).ok_or_else(|| {
                args.bad("value", format!("must be at most {MAX_VALUE_BYTES} bytes as JSON"))
            })?;
            let ttl_ms = args.int_in("ttl_ms", 1, MAX_TTL_MS)?;
            Request::Set { value: value.clone(), size: key.len() + size, ttl_ms }
        }
        _ => {
            let step = args.step("step")?;
            let ttl_ms = args
                .int_in("ttl_ms", 1, MAX_TTL_MS)?
                .ok_or_else(|| args.bad("ttl_ms", format!("is required (1-{MAX_TTL_MS})")))?;
            Request::GetOrCall { step, ttl_ms }
        }
    };
    Ok((key, request))
}

/// `{hit, value, revision}`.
fn answer(hit: bool, value: Value, revision: Option<u64>) -> Value {
    let mut map = Map::with_capacity(3);
    map.insert("hit".into(), Value::Bool(hit));
    map.insert("value".into(), value);
    map.insert("revision".into(), revision.map_or(Value::Null, Value::from));
    Value::Object(map)
}

/// Serves a `get`, `set` or `del` of `key` from this node's cache (this
/// node owns the key), at once; a `get_or_call` comes back, its step and
/// `ttl_ms`, for [`get_or_call`].
fn serve_now(cache: &Arc<NodeCache>, key: &str, request: Request) -> Served {
    match request {
        Request::Get => Served::Now(cache.get(key).unwrap_or_else(|| answer(false, Value::Null, None))),
        Request::Set { value, size, ttl_ms } => {
            let (previous, revision) = cache.set(key, value, size, ttl_ms);
            Served::Now(answer(previous.is_some(), previous.unwrap_or(Value::Null), Some(revision)))
        }
        Request::Del => Served::Now(match cache.del(key) {
            Some((value, revision)) => answer(true, value, Some(revision)),
            None => answer(false, Value::Null, None),
        }),
        Request::GetOrCall { step, ttl_ms } => Served::Later { step, ttl_ms },
    }
}

/// What [`serve_now`] did.
enum Served {
    /// The answer.
    Now(Value),
    /// Nothing yet: a `get_or_call`, with its step and `ttl_ms`.
    Later { step: Step, ttl_ms: u64 },
}

/// `get_or_call`: the live value, or the value of one step run for all
/// the callers that missed the key meanwhile.
async fn get_or_call(
    cache: &Arc<NodeCache>,
    key: &str,
    step: &Step,
    ttl_ms: u64,
    ctx: &Context,
) -> Result<Value, PfError> {
    let landed = loop {
        let mut waiting = match cache.begin(key) {
            Begun::Hit(found) => return Ok(found),
            Begun::Lead(lead) => {
                let input = serde_json::json!({"key": key});
                let landed = match step.run(ctx, input).await {
                    Ok(value) => Landed::Filled { value, revision: None },
                    Err(e) => Landed::Failed(step.failed("rm:cache get_or_call step", e)),
                };
                break lead.land(landed, ttl_ms);
            }
            Begun::Follow(waiting) => waiting,
        };
        let late = || {
            PfError::new(
                ErrorCode::Timeout,
                format!("{ELEMENT}: the step running for key {key:?} did not end before the deadline"),
            )
        };
        let landed = match tokio::time::timeout_at(ctx.deadline(), waiting.wait_for(Option::is_some)).await {
            Err(_) => return Err(late()),
            // The flight's sender went without a word: take over.
            Ok(Err(_)) => continue,
            Ok(Ok(landed)) => landed.clone(),
        };
        match landed {
            Some(Landed::Abandoned) | None => continue,
            Some(landed) => break landed,
        }
    };
    match landed {
        Landed::Filled { value, revision } => Ok(answer(false, value, revision)),
        Landed::Failed(e) => Err(e),
        Landed::Abandoned => Err(PfError::new(ErrorCode::Cancelled, format!("{ELEMENT}: cancelled"))),
    }
}

/// What a `rm:cache` request needs, once read.
enum Next {
    /// Its answer, now: a bad input, or a `get`, `set` or `del` this node
    /// served.
    Answer(Result<Value, PfError>),
    /// A `get_or_call` of a key this node owns.
    Call { key: String, step: Step, ttl_ms: u64 },
    /// A request for a key another node owns.
    Route { key: String },
}

fn next(cache: &Arc<NodeCache>, data: &Value, reactor: &Reactor) -> Next {
    let read = Args::of(ELEMENT, data).and_then(|args| read(&args));
    let (key, request) = match read {
        Ok(read) => read,
        Err(e) => return Next::Answer(Err(e)),
    };
    if !owned_here(reactor, key) {
        return Next::Route { key: key.to_owned() };
    }
    match serve_now(cache, key, request) {
        Served::Now(answer) => Next::Answer(Ok(answer)),
        Served::Later { step, ttl_ms } => Next::Call { key: key.to_owned(), step, ttl_ms },
    }
}

/// `rm:cache` `{op, key, ...}`: `get` -> `{hit, value, revision}`; `set`
/// `{value, ttl_ms?}` and `del` -> `{hit, value, revision}` of what was
/// there before and the revision of the change; `get_or_call` `{step,
/// ttl_ms}` -> the live value, or the step's (see docs/stdlib.md).
///
/// A `get`, `set` or `del` of a key this node owns is answered before the
/// handler's future is first polled, by a future that holds only the
/// answer: what waits (a step, a routed request) is boxed apart.
pub(super) fn cache() -> Handler {
    let mine: OnceLock<Arc<NodeCache>> = OnceLock::new();
    Handler::from_async(move |data, ctx| {
        let cache = mine.get_or_init(|| node_cache(&ctx.reactor)).clone();
        let waits: BoxFuture<'static, Result<Value, PfError>> = match next(&cache, &data, &ctx.reactor) {
            Next::Answer(answer) => return Either::Left(future::ready(answer)),
            Next::Call { key, step, ttl_ms } => {
                Box::pin(async move { get_or_call(&cache, &key, &step, ttl_ms, &ctx).await })
            }
            Next::Route { key } => Box::pin(async move {
                let mut message = data;
                message["type"] = message["op"].clone();
                on_owner(&ctx, &key, message).await
            }),
        };
        Either::Right(waits)
    })
}

/// `rm:cache`'s answer to a `get` of a key this node owns, given before the
/// handler would run (no future, no context): a read, so answering it
/// first changes nothing. Anything else is the handler's.
pub(super) fn answer_now() -> Arc<crate::reactor::NowFn> {
    let mine: OnceLock<Arc<NodeCache>> = OnceLock::new();
    Arc::new(move |data: &Value, reactor: &Reactor| {
        let args = Args::of(ELEMENT, data).ok()?;
        let Ok((key, Request::Get)) = read(&args) else { return None };
        if !owned_here(reactor, key) {
            return None;
        }
        match serve_now(mine.get_or_init(|| node_cache(reactor)), key, Request::Get) {
            Served::Now(answer) => Some(Ok(answer)),
            Served::Later { .. } => None,
        }
    })
}

/// The `pf.cache` type: the turn of a request routed to a key's owner
/// (its id: the key). It serves `get`, `set`, `del` and `get_or_call` as
/// `rm:cache` does here, and `watch` and `unwatch` for `ed:watch`; it
/// keeps nothing, and its actor is stopped after each message.
pub(super) fn cache_type() -> ActorType {
    ActorType::from_async(|input: TurnInput| async move {
        let TurnInput { message_type, message, state, ctx } = input;
        let cache = node_cache(&ctx.reactor);
        let key = ctx.actor().id();
        let served = match message_type.as_str() {
            "watch" | "unwatch" => super::watch::serve_routed(&cache, &message, key),
            _ => match Args::of(ELEMENT, &message).and_then(|args| read(&args).map(|(k, r)| (k == key, r))) {
                Ok((true, request)) => match serve_now(&cache, key, request) {
                    Served::Now(answer) => Ok(answer),
                    Served::Later { step, ttl_ms } => get_or_call(&cache, key, &step, ttl_ms, &ctx).await,
                },
                Ok((false, _)) => Err(PfError::new(
                    ErrorCode::BadRequest,
                    format!("{ELEMENT}: key must be the id of the {CACHE_TYPE} actor it is sent to"),
                )),
                Err(e) => Err(e),
            },
        };
        // The actor stops after this turn (a stop told, not the reply's: a
        // failed turn cannot stop it, nor can one nested in a turn of the
        // same key, as a step's request for its own key is).
        let actor = ctx.actor();
        let _ = ctx.reactor.actors().tell_packet(actor, actor.packet(Op::Stop, Value::Null));
        served.map(|answer| TurnOutput { reply: Reply::Value(answer), state })
    })
    .with_initial_state(Value::Null)
    .with_message_types(["get", "set", "del", "get_or_call", "watch", "unwatch"])
    .in_memory()
}
