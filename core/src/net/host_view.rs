//! What a node last saw of the other hosts of each actor type it hosts:
//! when that set changes, the type's idle actors leave memory
//! (docs/protocol.md, "No stale copies"). Kept once for the hosts a node
//! learns from its WebSocket peers and once for a NATS cluster's members.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::actor::TypeHost;

/// Per actor type, the other nodes seen hosting it at the last look.
#[derive(Default)]
pub(crate) struct HostView(Mutex<HashMap<String, Vec<String>>>);

impl HostView {
    /// Hands over the actors of each type of `hosts` whose other hosts
    /// (`others_of`, this node left out) differ from the last look.
    pub(crate) fn hand_over_changed(
        &self,
        hosts: Vec<Arc<TypeHost>>,
        mut others_of: impl FnMut(&str) -> Vec<String>,
    ) {
        let changed: Vec<_> = {
            let mut view = self.0.lock();
            hosts
                .into_iter()
                .filter(|host| {
                    let mut others = others_of(&host.name);
                    others.sort();
                    others.dedup();
                    // Before the first look, this node was the only host.
                    let known = view.get(&*host.name).map_or(&[][..], Vec::as_slice);
                    if known == others.as_slice() {
                        return false;
                    }
                    view.insert(host.name.to_string(), others);
                    true
                })
                .collect()
        };
        for host in changed {
            host.hand_over();
        }
    }
}
