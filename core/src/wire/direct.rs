//! The `direct` member of `hello` (docs/protocol.md, "Direct paths"): the
//! nodes a peer may dial directly, and among which nodes the sender picks
//! for each key it routes, so that a node going direct picks the node the
//! sender would have picked.
//!
//! Sent only to peers whose `hello` listed the feature `direct`
//! ([`FEATURE_DIRECT`](super::FEATURE_DIRECT)); a seed-spec peer never sees it.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::error::PfError;
use crate::packet::{bad_request, quote, Element, Group};

/// Most addresses one node may advertise.
pub const MAX_DIRECT_URLS: usize = 8;
/// Longest advertised address, in bytes.
pub const MAX_DIRECT_URL_LEN: usize = 512;
/// Shortest and longest ticket, in bytes (a ticket is a bearer token).
pub const TICKET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// How to open a direct link to one node. `Debug` never shows the ticket.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DirectNode {
    /// Where the node accepts direct links (`ws://HOST:PORT/packetflow/v1`).
    pub urls: Vec<String>,
    /// The token that admits a direct link there.
    pub ticket: String,
}

impl fmt::Debug for DirectNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectNode").field("urls", &self.urls).field("ticket", &"<redacted>").finish()
    }
}

/// The `direct` member of a `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectHello {
    /// Nodes that accept direct links, by node id: the sender itself when
    /// it does, and each of its peers that said so of itself (one hop: an
    /// entry is never passed on further).
    pub nodes: BTreeMap<String, DirectNode>,
    /// For each key the sender routes to its peers rather than serving it
    /// itself: the node ids of those peers, the candidates among which it
    /// chooses (by rendezvous hash of `pf.route_key`).
    pub routes: BTreeMap<(Group, Element), Vec<String>>,
}

impl DirectHello {
    /// Nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.routes.is_empty()
    }
}

struct Urls<'a>(&'a DirectNode);

impl Serialize for Urls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("urls", &self.0.urls)?;
        m.serialize_entry("ticket", &self.0.ticket)?;
        m.end()
    }
}

struct Nodes<'a>(&'a BTreeMap<String, DirectNode>);

impl Serialize for Nodes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, node) in self.0 {
            m.serialize_entry(id, &Urls(node))?;
        }
        m.end()
    }
}

struct Routes<'a>(&'a BTreeMap<(Group, Element), Vec<String>>);

impl Serialize for Routes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for ((group, element), ids) in self.0 {
            m.serialize_entry(&format!("{}:{}", group.as_str(), element.as_str()), ids)?;
        }
        m.end()
    }
}

impl Serialize for DirectHello {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if !self.nodes.is_empty() {
            m.serialize_entry("nodes", &Nodes(&self.nodes))?;
        }
        if !self.routes.is_empty() {
            m.serialize_entry("routes", &Routes(&self.routes))?;
        }
        m.end()
    }
}

/// A value as it is named in a message (cut when long).
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!("{}...", &text[..text.char_indices().nth(37).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// Whether `url` is one a node can dial directly: `ws://` or `wss://` with
/// a host, of bounded length.
fn valid_url(url: &str) -> bool {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
    url.len() <= MAX_DIRECT_URL_LEN && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn parse_node(id: &str, value: Value) -> Result<DirectNode, PfError> {
    let at = || format!("direct.nodes[{}]", quote(id));
    let Value::Object(mut fields) = value else {
        return Err(bad_request(format!(
            "{} must be an object with urls and ticket, got {}",
            at(),
            shown(&value)
        )));
    };
    let urls = match fields.remove("urls") {
        Some(Value::Array(urls)) if urls.len() <= MAX_DIRECT_URLS => urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| match url {
                Value::String(url) if valid_url(&url) => Ok(url),
                other => Err(bad_request(format!(
                    "{}.urls[{i}] must be a ws:// or wss:// URL of at most {MAX_DIRECT_URL_LEN} bytes, got {}",
                    at(),
                    shown(&other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(urls)) => {
            return Err(bad_request(format!(
                "{}.urls must hold at most {MAX_DIRECT_URLS} URLs, got {}",
                at(),
                urls.len()
            )))
        }
        other => {
            let got = other.as_ref().map_or("nothing".to_owned(), shown);
            return Err(bad_request(format!("{}.urls must be an array of URLs, got {got}", at())));
        }
    };
    let ticket = match fields.remove("ticket") {
        Some(Value::String(t)) if TICKET_LEN.contains(&t.len()) => t,
        // Never shown: a ticket is a credential.
        _ => {
            return Err(bad_request(format!(
                "{}.ticket must be a string of {}-{} bytes",
                at(),
                TICKET_LEN.start(),
                TICKET_LEN.end()
            )))
        }
    };
    Ok(DirectNode { urls, ticket })
}

fn parse_route(key: &str, ids: Value) -> Result<((Group, Element), Vec<String>), PfError> {
    let at = || format!("direct.routes[{}]", quote(key));
    let (g, e) = key
        .split_once(':')
        .ok_or_else(|| bad_request(format!("{} must be keyed \"group:element\"", at())))?;
    let prefix = |err: PfError| bad_request(format!("{}: {}", at(), err.message));
    let key = (Group::parse(g).map_err(prefix)?, Element::new(e).map_err(prefix)?);
    let Value::Array(ids) = ids else {
        return Err(bad_request(format!("{} must be an array of node ids, got {}", at(), shown(&ids))));
    };
    let ids = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| match id {
            Value::String(id) => Ok(id),
            other => {
                Err(bad_request(format!("{}[{i}] must be a node id (a string), got {}", at(), shown(&other))))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, ids))
}

/// Reads a `hello`'s `direct` member (PF400 naming the entry that breaks
/// the rules); absent or `null`: `None`.
pub(crate) fn parse(value: Option<Value>) -> Result<Option<DirectHello>, PfError> {
    let mut fields = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            return Err(bad_request(format!("direct must be an object, got {}", shown(&other))));
        }
    };
    let mut direct = DirectHello::default();
    match fields.remove("nodes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(nodes)) => {
            for (id, node) in nodes {
                let node = parse_node(&id, node)?;
                direct.nodes.insert(id, node);
            }
        }
        Some(other) => {
            return Err(bad_request(format!(
                "direct.nodes must be an object of node ids, got {}",
                shown(&other)
            )))
        }
    }
    match fields.remove("routes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(routes)) => {
            for (key, ids) in routes {
                let (key, ids) = parse_route(&key, ids)?;
                direct.routes.insert(key, ids);
            }
        }
        Some(other) => {
            return Err(bad_request(format!(
                "direct.routes must be an object of keys, got {}",
                shown(&other)
            )))
        }
    }
    Ok(Some(direct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> DirectHello {
        let mut d = DirectHello::default();
        d.nodes.insert(
            "n1".into(),
            DirectNode { urls: vec!["ws://127.0.0.1:4000/packetflow/v1".into()], ticket: "t".repeat(32) },
        );
        d.routes.insert((Group::DataFlow, Element::new("x").unwrap()), vec!["n1".into(), "n2".into()]);
        d
    }

    #[test]
    fn round_trips_through_json() {
        let d = sample();
        let text = serde_json::to_value(&d).unwrap();
        assert_eq!(text["routes"]["df:x"], json!(["n1", "n2"]));
        assert_eq!(parse(Some(text)).unwrap(), Some(d));
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(serde_json::to_value(DirectHello::default()).unwrap(), json!({}));
    }

    #[test]
    fn bad_entries_are_named_and_tickets_never_shown() {
        let cases = [
            (json!(3), "direct must be an object, got 3"),
            (json!({"nodes": []}), "direct.nodes must be an object of node ids, got []"),
            (
                json!({"nodes": {"n": {"urls": ["http://x"], "ticket": "t".repeat(16)}}}),
                "direct.nodes[\"n\"].urls[0] must be a ws:// or wss:// URL",
            ),
            (
                json!({"nodes": {"n": {"urls": [], "ticket": "short-secret"}}}),
                "direct.nodes[\"n\"].ticket must be a string of 16-256 bytes",
            ),
            (json!({"routes": {"df": ["a"]}}), "direct.routes[\"df\"] must be keyed \"group:element\""),
            (
                json!({"routes": {"df:x": [1]}}),
                "direct.routes[\"df:x\"][0] must be a node id (a string), got 1",
            ),
        ];
        for (value, expected) in cases {
            let e = parse(Some(value)).unwrap_err();
            assert_eq!(e.code.as_str(), "PF400");
            assert!(e.message.starts_with(expected), "{} / {expected}", e.message);
            assert!(!e.message.contains("short-secret"));
        }
        assert!(!format!("{:?}", sample()).contains("tttt"));
    }
}
