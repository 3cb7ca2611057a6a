//! What may change while a reactor runs: a key's own concurrency limit
//! (`mc:scale`) and the runtime settings `mc:tune` names ([`Setting`]).
//!
//! A key's limit is a [`Scheduler`] of its own, kept here by key (the
//! source of truth, so that a limit set before its handler is registered
//! applies once it is) and handed to the key's [`Route`](super::Route)
//! whenever the route is made: a packet of a key without a limit finds
//! `None` there and pays nothing else.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::Mutex;
use tokio::time::Duration;

use super::scheduler::Scheduler;
use super::{HandlerTable, Reactor, ReactorConfig, Route};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Packet, MAX_TIMEOUT_MS};

/// Most packets of one key, or of the reactor, that a limit lets run at
/// once (`mc:scale`, `max_inflight`).
pub const MAX_CONCURRENCY: u64 = 1 << 20;
/// Most packets the reactor's queue (or a key's) may hold (`max_queue`).
const MAX_QUEUE: u64 = 1 << 24;
/// Longest busy-poll window, in µs: a second.
const MAX_BUSY_POLL_US: u64 = 1_000_000;
/// Shortest and longest idle time before an actor is passivated, in ms.
const PASSIVATE_AFTER_MS: (u64, u64) = (100, 86_400_000);

/// A runtime setting `mc:tune` changes ([`Reactor::tune`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `default_timeout_ms`: the timeout of a packet that names none,
    /// counted from when this node accepts it (1-86 400 000; 30 000 at
    /// start).
    DefaultTimeoutMs,
    /// `max_inflight`: most handlers running at once
    /// ([`ReactorConfig::max_inflight`], 1-1 048 576).
    MaxInflight,
    /// `max_queue`: most packets waiting for a slot, in the reactor's
    /// queue and in each limited key's ([`ReactorConfig::max_queue`],
    /// 0-16 777 216).
    MaxQueue,
    /// `actor_passivate_after_ms`: how long an actor stays in memory
    /// without a message ([`ReactorConfig::actor_passivate_after`],
    /// 100-86 400 000).
    ActorPassivateAfterMs,
    /// `busy_poll_us`: the busy-poll window of a network node
    /// (`NodeConfig::busy_poll`), 0 (off) to 1 000 000. Only on a node
    /// whose connections run on its Tokio runtime.
    BusyPollUs,
}

impl Setting {
    /// Every setting, in the order error messages list them.
    pub const ALL: [Setting; 5] = [
        Setting::DefaultTimeoutMs,
        Setting::MaxInflight,
        Setting::MaxQueue,
        Setting::ActorPassivateAfterMs,
        Setting::BusyPollUs,
    ];

    /// Its name, as `mc:tune` and the option files spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Setting::DefaultTimeoutMs => "default_timeout_ms",
            Setting::MaxInflight => "max_inflight",
            Setting::MaxQueue => "max_queue",
            Setting::ActorPassivateAfterMs => "actor_passivate_after_ms",
            Setting::BusyPollUs => "busy_poll_us",
        }
    }

    /// The setting named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The lowest and highest value it takes.
    pub const fn bounds(self) -> (u64, u64) {
        match self {
            Setting::DefaultTimeoutMs => (1, MAX_TIMEOUT_MS),
            Setting::MaxInflight => (1, MAX_CONCURRENCY),
            Setting::MaxQueue => (0, MAX_QUEUE),
            Setting::ActorPassivateAfterMs => PASSIVATE_AFTER_MS,
            Setting::BusyPollUs => (0, MAX_BUSY_POLL_US),
        }
    }
}

/// The changeable state of a reactor.
pub(super) struct Tuned {
    default_timeout_ms: AtomicU64,
    /// The passivation sweep watches it.
    passivate_after: tokio::sync::watch::Sender<Duration>,
    /// The keys with a limit of their own.
    key_limits: Mutex<HashMap<(Group, Element), Arc<Scheduler>>>,
}

impl Tuned {
    pub(super) fn new(config: &ReactorConfig) -> Tuned {
        Tuned {
            default_timeout_ms: AtomicU64::new(crate::packet::DEFAULT_TIMEOUT_MS),
            passivate_after: tokio::sync::watch::Sender::new(config.actor_passivate_after),
            key_limits: Mutex::new(HashMap::default()),
        }
    }

    /// The limit of `group:element`, for a route being made.
    pub(super) fn limit_of(&self, group: Group, element: &Element) -> Option<Arc<Scheduler>> {
        self.key_limits.lock().get(&(group, element.clone())).cloned()
    }

    /// Packets waiting in the keys' own queues.
    pub(super) fn queued_by_keys(&self) -> usize {
        self.key_limits.lock().values().map(|s| s.queued()).sum()
    }

    pub(super) fn watch_passivate_after(&self) -> tokio::sync::watch::Receiver<Duration> {
        self.passivate_after.subscribe()
    }
}

impl Reactor {
    /// The timeout of `packet` on this reactor, in ms: its own, or the
    /// reactor's default ([`Setting::DefaultTimeoutMs`]).
    #[inline]
    pub fn timeout_of(&self, packet: &Packet) -> u64 {
        packet.timeout_ms.unwrap_or_else(|| self.timeout_of_unset())
    }

    /// The timeout of a packet that names none: the reactor's default.
    #[inline]
    pub(crate) fn timeout_of_unset(&self) -> u64 {
        self.inner.tuned.default_timeout_ms.load(Relaxed)
    }

    /// The current value of `setting`; `None` where it does not apply
    /// (`busy_poll_us` without a network node that can busy-poll).
    pub fn setting(&self, setting: Setting) -> Option<u64> {
        let tuned = &self.inner.tuned;
        Some(match setting {
            Setting::DefaultTimeoutMs => tuned.default_timeout_ms.load(Relaxed),
            Setting::MaxInflight => self.inner.scheduler.max_running() as u64,
            Setting::MaxQueue => self.inner.scheduler.max_queued() as u64,
            Setting::ActorPassivateAfterMs => tuned.passivate_after.borrow().as_millis() as u64,
            Setting::BusyPollUs => return self.forwarder()?.busy_poll_us(),
        })
    }

    /// Sets `setting` to `value` from now on and returns the value it
    /// replaces. PF400 naming the bounds when `value` is outside them, or
    /// when the setting does not apply here.
    ///
    /// What runs already is not cut short: a lowered `max_inflight` lets
    /// the running handlers finish, a lowered `max_queue` keeps the
    /// waiting packets, a new default timeout applies to packets accepted
    /// after it.
    pub fn tune(&self, setting: Setting, value: u64) -> Result<u64, PfError> {
        let (min, max) = setting.bounds();
        if !(min..=max).contains(&value) {
            return Err(PfError::new(
                ErrorCode::BadRequest,
                format!("{} must be {min}-{max}, got {value}", setting.name()),
            ));
        }
        let tuned = &self.inner.tuned;
        let previous = match setting {
            Setting::DefaultTimeoutMs => tuned.default_timeout_ms.swap(value, Relaxed),
            Setting::MaxInflight => self.inner.scheduler.set_max_running(value as usize) as u64,
            Setting::MaxQueue => {
                for limit in tuned.key_limits.lock().values() {
                    limit.set_max_queued(value as usize);
                }
                self.inner.scheduler.set_max_queued(value as usize) as u64
            }
            Setting::ActorPassivateAfterMs => {
                tuned.passivate_after.send_replace(Duration::from_millis(value)).as_millis() as u64
            }
            Setting::BusyPollUs => {
                self.forwarder().and_then(|f| f.set_busy_poll_us(value)).ok_or_else(|| {
                    PfError::new(
                        ErrorCode::BadRequest,
                        "busy_poll_us applies to a network node whose connections run on its Tokio \
                         runtime; this reactor has none",
                    )
                })?
            }
        };
        Ok(previous)
    }

    /// How many packets of `group:element` may run at once here; `None`:
    /// as many as the reactor's `max_inflight` lets run.
    pub fn concurrency_limit(&self, group: Group, element: &str) -> Option<usize> {
        let element = Element::new(element).ok()?;
        self.inner.tuned.limit_of(group, &element).map(|s| s.max_running())
    }

    /// Lets at most `limit` packets of `group:element` run at once on this
    /// reactor (`None`: lifts the limit); returns the limit it replaces.
    ///
    /// Packets beyond it wait in the key's own queue, by priority, then
    /// arrival, until a slot frees, their deadline passes (PF408) or they
    /// are cancelled; at most the reactor's `max_queue` wait (PF429
    /// beyond). A waiting packet holds none of the reactor's slots; once
    /// it has its key's slot it takes one of those as any packet does. It
    /// covers the packets of the key run on this reactor (a handler, sync
    /// or async, or a standard element), whenever it is registered; not
    /// those it forwards to a peer. An actor type's key is refused (PF400):
    /// each actor already runs one turn at a time. Lowering a limit lets
    /// what runs finish; lifting it lets every waiting packet run.
    pub fn set_concurrency_limit(
        &self,
        group: Group,
        element: &str,
        limit: Option<usize>,
    ) -> Result<Option<usize>, PfError> {
        let bad = |why: String| PfError::new(ErrorCode::BadRequest, why);
        let element = Element::new(element)?;
        if group == crate::actor::address::ACTOR_GROUP
            && element.as_str().starts_with(crate::actor::address::ACTOR_ELEMENT_PREFIX)
        {
            return Err(bad(format!(
                "{group}:{element} is an actor type: each of its actors runs one turn at a time already"
            )));
        }
        if let Some(n) = limit.filter(|n| !(1..=MAX_CONCURRENCY as usize).contains(n)) {
            return Err(bad(format!("a key's limit must be 1-{MAX_CONCURRENCY}, got {n}")));
        }
        // Under the registration lock: the routes are rebuilt with the
        // limit, and no registration runs in between.
        let _writer = self.inner.registering.lock();
        let key = (group, element.clone());
        let (previous, lifted) = {
            let mut limits = self.inner.tuned.key_limits.lock();
            match (limits.get(&key).cloned(), limit) {
                (Some(current), Some(n)) => (Some(current.set_max_running(n)), None),
                (None, Some(n)) => {
                    let queue = self.inner.scheduler.max_queued();
                    limits.insert(key, Arc::new(Scheduler::new(n, queue)));
                    (None, None)
                }
                (Some(current), None) => {
                    limits.remove(&key);
                    (Some(current.max_running()), Some(current))
                }
                (None, None) => (None, None),
            }
        };
        let limit = self.inner.tuned.limit_of(group, &element);
        for table in [&self.inner.handlers, &self.inner.builtins] {
            if let Some(updated) = with_limit(&table.load(), group, &element, &limit) {
                table.store(Arc::new(updated));
            }
        }
        if let Some(old) = lifted {
            // Its waiters run now; later packets no longer come here.
            old.release_all();
        }
        Ok(previous)
    }
}

/// `table` with the route of `group:element` given `limit`; `None` when
/// it has no such route.
fn with_limit(
    table: &HandlerTable,
    group: Group,
    element: &Element,
    limit: &Option<Arc<Scheduler>>,
) -> Option<HandlerTable> {
    let route = table.get(group, element.as_str())?;
    let route = Route {
        target: route.target.clone(),
        stats: route.stats.clone(),
        limit: limit.clone(),
        now: route.now.clone(),
    };
    let mut table = table.clone();
    table.by_group[group.index()].insert(element.clone(), Arc::new(route));
    Some(table)
}
