//! The standard library (`docs/stdlib.md`): the seed's standard elements,
//! built once here as handlers any reactor can host, so that every
//! language, the CLI and a seed-spec peer reach them with an ordinary
//! `submit`.
//!
//! They are opt-in per reactor and per pattern ([`StdlibPatterns`],
//! [`Reactor::enable_stdlib`]) and never take a key from a user: a
//! standard element serves its key only when no handler of that key is
//! registered here and no peer announced one (the reactor checks, per
//! packet, in `forward_or_reject`). They are not announced to peers.
//!
//! `args` checks an element's input and names the field of any error;
//! `step` is the call an element makes (as `ctx.call` makes it); `cf`,
//! `df`, `ed` and `co` are the groups. Stateful elements keep their state
//! in actors of reserved types (`pf.` and a name), registered with them;
//! `waiter` is how `cf:gate` and `co:sync` wait without holding one.

mod args;
mod cache;
mod cf;
mod co;
mod df;
mod ed;
mod mc;
mod migrate;
pub(crate) mod rm;
mod step;
mod waiter;
mod watch;

use crate::actor::ActorType;
use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group};
use crate::reactor::{Handler, Reactor};

pub use cache::CacheStats;
pub use step::Step;

/// One standard element: its key and how to make its handler.
struct Standard {
    group: Group,
    element: &'static str,
    handler: fn() -> Handler,
}

/// How `group:element` answers the packets it can answer at once, for the
/// elements that can.
fn answering_now(group: Group, element: &str) -> Option<crate::reactor::Now> {
    match (group, element) {
        (Group::ResourceMgmt, "cache") => Some(crate::reactor::Now::Answer(cache::answer_now())),
        (Group::ControlFlow, "seq") => Some(crate::reactor::Now::Run(cf::seq_now())),
        _ => None,
    }
}

/// Every standard element this build offers, in the order of
/// `docs/stdlib.md`.
const STANDARD: &[Standard] = &[
    Standard { group: Group::ControlFlow, element: "seq", handler: cf::seq },
    Standard { group: Group::ControlFlow, element: "branch", handler: cf::branch },
    Standard { group: Group::ControlFlow, element: "loop", handler: cf::repeat },
    Standard { group: Group::ControlFlow, element: "gate", handler: cf::gate },
    Standard { group: Group::DataFlow, element: "produce", handler: df::produce },
    Standard { group: Group::DataFlow, element: "consume", handler: df::consume },
    Standard { group: Group::DataFlow, element: "transform", handler: df::transform },
    Standard { group: Group::DataFlow, element: "reduce", handler: df::reduce },
    Standard { group: Group::EventDriven, element: "signal", handler: ed::signal },
    Standard { group: Group::EventDriven, element: "timer", handler: ed::timer },
    Standard { group: Group::EventDriven, element: "react", handler: ed::react },
    Standard { group: Group::Collective, element: "broadcast", handler: co::broadcast },
    Standard { group: Group::Collective, element: "gather", handler: co::gather },
    Standard { group: Group::Collective, element: "vote", handler: co::vote },
    Standard { group: Group::Collective, element: "sync", handler: co::sync },
    Standard { group: Group::ResourceMgmt, element: "lock", handler: rm::lock },
    Standard { group: Group::ResourceMgmt, element: "alloc", handler: rm::alloc },
    Standard { group: Group::ResourceMgmt, element: "free", handler: rm::free },
    Standard { group: Group::ResourceMgmt, element: "cache", handler: cache::cache },
    Standard { group: Group::EventDriven, element: "watch", handler: watch::watch },
    Standard { group: Group::MetaCompute, element: "spawn", handler: mc::spawn },
    Standard { group: Group::MetaCompute, element: "scale", handler: mc::scale },
    Standard { group: Group::MetaCompute, element: "tune", handler: mc::tune },
    Standard { group: Group::MetaCompute, element: "migrate", handler: migrate::migrate },
];

/// An element (`group`, `element`) and an actor type it uses (its name,
/// and how to make it).
type UsedType = (Group, &'static str, &'static str, fn() -> ActorType);

/// The actor types the stateful elements keep their state in, by element:
/// an element hosts the types it uses, so that every name has an owner
/// among the nodes hosting the element.
const ACTOR_TYPES: &[UsedType] = &[
    (Group::ControlFlow, "gate", waiter::WAITER_TYPE, waiter::waiter_type),
    (Group::ControlFlow, "gate", ed::SIGNAL_TYPE, ed::signal_type),
    (Group::EventDriven, "signal", ed::SIGNAL_TYPE, ed::signal_type),
    (Group::EventDriven, "signal", ed::REACT_TYPE, ed::react_type),
    (Group::EventDriven, "react", ed::REACT_TYPE, ed::react_type),
    (Group::EventDriven, "timer", ed::TIMER_TYPE, ed::timer_type),
    (Group::Collective, "sync", waiter::WAITER_TYPE, waiter::waiter_type),
    (Group::Collective, "sync", co::BARRIER_TYPE, co::barrier_type),
    (Group::ResourceMgmt, "lock", waiter::WAITER_TYPE, waiter::waiter_type),
    (Group::ResourceMgmt, "lock", rm::LOCK_TYPE, rm::lock_type),
    (Group::ResourceMgmt, "alloc", waiter::WAITER_TYPE, waiter::waiter_type),
    (Group::ResourceMgmt, "alloc", rm::RESOURCE_TYPE, rm::resource_type),
    (Group::ResourceMgmt, "free", rm::RESOURCE_TYPE, rm::resource_type),
    (Group::ResourceMgmt, "cache", cache::CACHE_TYPE, cache::cache_type),
    (Group::EventDriven, "watch", cache::CACHE_TYPE, cache::cache_type),
];

/// The `group:element` keys of every standard element this build offers.
pub fn standard_keys() -> Vec<(Group, &'static str)> {
    STANDARD.iter().map(|s| (s.group, s.element)).collect()
}

/// Which standard elements a reactor hosts: a comma-separated list of
/// `group:element` keys and patterns, `group:*` for a whole group and `*`
/// for all (`packetflow serve --stdlib 'cf:*,co:gather'`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdlibPatterns {
    patterns: Vec<(Option<Group>, Option<String>)>,
}

impl StdlibPatterns {
    /// No standard element (the default).
    pub fn none() -> StdlibPatterns {
        StdlibPatterns::default()
    }

    /// Every standard element.
    pub fn all() -> StdlibPatterns {
        StdlibPatterns { patterns: vec![(None, None)] }
    }

    /// Parses `spec`; PF400 naming the pattern that is not one, or that
    /// matches no standard element (a misspelt key would otherwise be
    /// silently left out). Empty: none.
    pub fn parse(spec: &str) -> Result<StdlibPatterns, PfError> {
        let mut patterns = Vec::new();
        for (i, item) in spec.split(',').map(str::trim).enumerate().filter(|(_, s)| !s.is_empty()) {
            let bad = |why: &str| PfError::new(ErrorCode::BadRequest, format!("stdlib[{i}] {item:?}: {why}"));
            let pattern = if item == "*" {
                (None, None)
            } else {
                let (group, element) =
                    item.split_once(':').ok_or_else(|| bad("expected group:element, group:* or *"))?;
                let group = Group::parse(group).map_err(|_| bad("not a group (cf, df, ed, co, mc or rm)"))?;
                (Some(group), (element != "*").then(|| element.to_owned()))
            };
            let matches = STANDARD.iter().any(|s| Self::matches_one(&pattern, s.group, s.element));
            if !matches {
                return Err(bad("no standard element matches it (docs/stdlib.md lists them)"));
            }
            patterns.push(pattern);
        }
        Ok(StdlibPatterns { patterns })
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `group:element` is one of the chosen keys.
    pub fn matches(&self, group: Group, element: &str) -> bool {
        self.patterns.iter().any(|p| Self::matches_one(p, group, element))
    }

    fn matches_one(pattern: &(Option<Group>, Option<String>), group: Group, element: &str) -> bool {
        pattern.0.is_none_or(|g| g == group) && pattern.1.as_deref().is_none_or(|e| e == element)
    }
}

impl Reactor {
    /// Hosts the standard elements `patterns` chooses (docs/stdlib.md).
    /// Each serves its key only while no handler of that key is
    /// registered here and no peer announced one. Returns the keys now
    /// hosted; calling it again adds to them.
    ///
    /// The stateful elements (`cf:gate`, `ed:signal`, `ed:react`,
    /// `ed:timer`, `co:sync`, `rm:lock`, `rm:alloc`, `rm:free`) register
    /// the actor types they keep their state in (`pf.waiter`, `pf.signal`,
    /// `pf.react`, `pf.timer`, `pf.barrier`, `pf.lock`, `pf.resource`)
    /// unless registered already: set the actor store
    /// ([`Actors::set_store`](crate::actor::Actors::set_store)) before, as
    /// for any actor type. Enabling `ed:timer` inside a Tokio runtime
    /// re-arms the timers the store holds (a durable store's survive a
    /// restart).
    ///
    /// `rm:cache` and `ed:watch` register `pf.cache`, the type that places
    /// each cache key on its owner; its actors keep nothing and live in
    /// memory whatever the store (the cache and its watches do not
    /// survive a restart).
    ///
    /// `mc:spawn`, `mc:scale` and `mc:tune` change the running system:
    /// `scale` and `tune` this reactor's limits and settings
    /// ([`set_concurrency_limit`](Self::set_concurrency_limit),
    /// [`tune`](Self::tune)). Hosting them on a node without auth lets
    /// every peer do so; with auth, only a token naming `mc` (`mc:*`,
    /// `mc:tune`) reaches them, and only a token granting `mc:*` lets the
    /// calls made for its packets reach them (docs/protocol.md,
    /// "Authentication").
    pub fn enable_stdlib(&self, patterns: &StdlibPatterns) -> Vec<(Group, Element)> {
        for standard in STANDARD.iter().filter(|s| patterns.matches(s.group, s.element)) {
            if self.has_builtin(standard.group, standard.element) {
                continue;
            }
            let element = Element::new(standard.element).expect("standard element names are valid");
            let now = answering_now(standard.group, standard.element);
            self.install_builtin(standard.group, element, (standard.handler)(), now);
        }
        for (group, element, actor_type, spec) in ACTOR_TYPES {
            if patterns.matches(*group, element) && self.actor_host(actor_type).is_none() {
                self.register_actor_type(actor_type, spec()).expect("reserved actor type names are valid");
                if *actor_type == ed::TIMER_TYPE {
                    ed::rearm_stored_timers(self);
                }
            }
        }
        self.builtin_keys()
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cache;
#[cfg(test)]
mod tests_ed;
#[cfg(test)]
mod tests_mc;
#[cfg(test)]
mod tests_migrate;
#[cfg(test)]
mod tests_rm;
