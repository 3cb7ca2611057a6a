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
//! `df` and `co` are the groups.

mod args;
mod cf;
mod co;
mod df;
mod step;

use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group};
use crate::reactor::{Handler, Reactor};

pub use step::Step;

/// One standard element: its key and how to make its handler.
struct Standard {
    group: Group,
    element: &'static str,
    handler: fn() -> Handler,
}

/// Every standard element this build offers, in the order of
/// `docs/stdlib.md`.
const STANDARD: &[Standard] = &[
    Standard { group: Group::ControlFlow, element: "seq", handler: cf::seq },
    Standard { group: Group::ControlFlow, element: "branch", handler: cf::branch },
    Standard { group: Group::ControlFlow, element: "loop", handler: cf::repeat },
    Standard { group: Group::DataFlow, element: "produce", handler: df::produce },
    Standard { group: Group::DataFlow, element: "consume", handler: df::consume },
    Standard { group: Group::DataFlow, element: "transform", handler: df::transform },
    Standard { group: Group::DataFlow, element: "reduce", handler: df::reduce },
    Standard { group: Group::Collective, element: "gather", handler: co::gather },
    Standard { group: Group::Collective, element: "vote", handler: co::vote },
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
    pub fn enable_stdlib(&self, patterns: &StdlibPatterns) -> Vec<(Group, Element)> {
        for standard in STANDARD.iter().filter(|s| patterns.matches(s.group, s.element)) {
            let element = Element::new(standard.element).expect("standard element names are valid");
            self.install_builtin(standard.group, element, (standard.handler)());
        }
        self.builtin_keys()
    }
}

#[cfg(test)]
mod tests;
