//! The unit of work, [`Packet`], and the validated types of its fields.
//!
//! Every field type checks its PROTOCOL.md rule when it is built, so a
//! `Packet` in hand is valid except for the two rules that span fields
//! (the number of dependencies and the types of reserved metadata keys),
//! which [`Packet::validate`] checks.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{ErrorCode, PfError};

pub(crate) mod parts;
pub use parts::{Field, PacketParts};

/// The protocol version every packet carries.
pub const PROTOCOL_VERSION: &str = "1.0";
/// Longest packet id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest element name, in bytes.
pub const MAX_ELEMENT_LEN: usize = 64;
/// Most dependencies one packet may name.
pub const MAX_DEPENDENCIES: usize = 64;
/// Longest allowed `timeout_ms` (one day).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// `timeout_ms` used when a packet names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Reserved metadata key: how many nodes forwarded the packet so far.
pub const META_HOPS: &str = "pf.hops";
/// Reserved metadata key: affinity key for rendezvous routing.
pub const META_ROUTE_KEY: &str = "pf.route_key";
/// Reserved metadata key: trace id shared by a packet and its child calls.
pub const META_TRACE_ID: &str = "pf.trace_id";
/// Reserved metadata key: absolute deadline, ms since the Unix epoch.
pub const META_DEADLINE_MS: &str = "pf.deadline_ms";
/// Reserved metadata key: `true` when the calls made on the packet's
/// behalf may not reach `mc:*` (it came with a token that does not grant
/// `mc:*`; docs/protocol.md, "Authentication"). Calls inherit it.
pub const META_NO_MC: &str = "pf.no_mc";

/// Whether `metadata` holds the mark of [`Packet::bar_mc`].
pub(crate) fn bars_mc(metadata: Option<&Map<String, Value>>) -> bool {
    metadata.and_then(|m| m.get(META_NO_MC)) == Some(&Value::Bool(true))
}

pub(crate) fn bad_request(message: String) -> PfError {
    PfError::new(ErrorCode::BadRequest, message)
}

/// The six behavioural groups of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// `cf`: control flow.
    ControlFlow,
    /// `df`: data flow.
    DataFlow,
    /// `ed`: event driven.
    EventDriven,
    /// `co`: collective.
    Collective,
    /// `mc`: meta-compute.
    MetaCompute,
    /// `rm`: resource management.
    ResourceMgmt,
}

impl Group {
    /// All groups, in the order of their index.
    pub const ALL: [Group; 6] = [
        Group::ControlFlow,
        Group::DataFlow,
        Group::EventDriven,
        Group::Collective,
        Group::MetaCompute,
        Group::ResourceMgmt,
    ];

    /// The two-letter wire code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Group::ControlFlow => "cf",
            Group::DataFlow => "df",
            Group::EventDriven => "ed",
            Group::Collective => "co",
            Group::MetaCompute => "mc",
            Group::ResourceMgmt => "rm",
        }
    }

    /// A dense index 0..6, for tables keyed by group.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a wire code, naming the expected values when it is wrong.
    #[inline]
    pub fn parse(code: &str) -> Result<Group, PfError> {
        // A match on the bytes: two comparisons where a search of `ALL`
        // calls `memcmp` for each group (every packet's group is parsed).
        match code.as_bytes() {
            b"cf" => Ok(Group::ControlFlow),
            b"df" => Ok(Group::DataFlow),
            b"ed" => Ok(Group::EventDriven),
            b"co" => Ok(Group::Collective),
            b"mc" => Ok(Group::MetaCompute),
            b"rm" => Ok(Group::ResourceMgmt),
            _ => Err(Group::unknown(code)),
        }
    }

    #[cold]
    #[inline(never)]
    fn unknown(code: &str) -> PfError {
        bad_request(format!("group must be one of cf, df, ed, co, mc, rm, got {}", quote(code)))
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An element name: 1–64 bytes of `[A-Za-z0-9_.-]`. Names up to 24 bytes
/// (nearly all) are stored inline: decoding one allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element(compact_str::CompactString);

impl Element {
    /// Validates `name` as an element name.
    pub fn new(name: &str) -> Result<Element, PfError> {
        let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name.is_empty() || name.len() > MAX_ELEMENT_LEN || !valid_chars {
            return Err(bad_request(format!(
                "element must be 1-64 characters of [A-Za-z0-9_.-], got {}",
                quote(name)
            )));
        }
        Ok(Element(compact_str::CompactString::new(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Element {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A packet id: 1–128 bytes, cheap to clone (it is shared by the in-flight
/// table, the handler's context and the result).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(Arc<str>);

impl PacketId {
    /// Validates `id` as a packet id.
    pub fn new(id: &str) -> Result<PacketId, PfError> {
        Self::checked(id, || "id".into())
    }

    /// A fresh UUID v4 id, the default.
    pub fn random() -> PacketId {
        let mut buf = uuid::Uuid::encode_buffer();
        PacketId(Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, shared rather than copied.
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The id, if its length is valid; `field` names it in the error (and is
    /// only formatted then).
    fn checked(id: &str, field: impl FnOnce() -> String) -> Result<PacketId, PfError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(bad_request(format!(
                "{} must be a string of 1-128 bytes, got {} bytes",
                field(),
                id.len()
            )));
        }
        Ok(PacketId(id.into()))
    }
}

impl Borrow<str> for PacketId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A priority 1–10; 10 is most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    /// The priority a packet gets when its builder names none.
    pub const DEFAULT: Priority = Priority(5);
    /// Least urgent.
    pub const MIN: Priority = Priority(1);
    /// Most urgent.
    pub const MAX: Priority = Priority(10);

    /// Validates `value` as a priority.
    pub fn new(value: i64) -> Result<Priority, PfError> {
        if (1..=10).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(bad_request(format!("priority must be an integer 1-10, got {value}")))
        }
    }

    /// The value 1–10.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

/// A unit of work addressed to `group:element`.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Unique among packets in flight on a node.
    pub id: PacketId,
    /// Behavioural group.
    pub group: Group,
    /// Element within the group.
    pub element: Element,
    /// Any JSON value, `null` included.
    pub data: Value,
    /// Scheduling priority.
    pub priority: Priority,
    /// How long the submitter waits for a result, in ms (1..=86 400 000);
    /// `None` means [`DEFAULT_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
    /// Ids of packets that must complete successfully before this one runs.
    pub dependencies: Vec<PacketId>,
    /// Free-form metadata; `pf.*` keys are reserved for the runtime.
    pub metadata: Option<Map<String, Value>>,
}

impl Packet {
    /// A packet with a fresh id, default priority and no options.
    pub fn new(group: Group, element: Element, data: Value) -> Packet {
        Packet {
            id: PacketId::random(),
            group,
            element,
            data,
            priority: Priority::DEFAULT,
            timeout_ms: None,
            dependencies: Vec::new(),
            metadata: None,
        }
    }

    /// Builds a packet from wire-style strings, validating each.
    pub fn build(group: &str, element: &str, data: Value) -> Result<Packet, PfError> {
        Ok(Packet::new(Group::parse(group)?, Element::new(element)?, data))
    }

    /// Sets the priority (1–10).
    pub fn with_priority(mut self, priority: Priority) -> Packet {
        self.priority = priority;
        self
    }

    /// Sets `timeout_ms`.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Packet {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Sets the dependencies.
    pub fn with_dependencies(mut self, dependencies: Vec<PacketId>) -> Packet {
        self.dependencies = dependencies;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Packet {
        self.metadata = Some(metadata);
        self
    }

    /// The effective timeout in ms.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.metadata.as_ref()?.get(key)
    }

    /// Marks the packet so that the calls made on its behalf cannot reach
    /// `mc:*` ([`META_NO_MC`]).
    pub fn bar_mc(&mut self) {
        self.metadata.get_or_insert_with(Map::new).insert(META_NO_MC.to_owned(), Value::Bool(true));
    }

    /// Whether [`bar_mc`](Self::bar_mc) marked it.
    pub fn bars_mc(&self) -> bool {
        bars_mc(self.metadata.as_ref())
    }

    /// Checks the rules a field type cannot hold alone: `timeout_ms` range,
    /// the dependency count, and the types of reserved metadata keys.
    pub fn validate(&self) -> Result<(), PfError> {
        if let Some(t) = self.timeout_ms {
            check_timeout(t)?;
        }
        if self.dependencies.len() > MAX_DEPENDENCIES {
            return Err(bad_request(format!(
                "dependencies must list at most 64 packet ids, got {}",
                self.dependencies.len()
            )));
        }
        if let Some(meta) = &self.metadata {
            check_reserved_metadata(meta)?;
        }
        Ok(())
    }
}

pub(crate) fn check_timeout(t: u64) -> Result<(), PfError> {
    if t == 0 || t > MAX_TIMEOUT_MS {
        return Err(bad_request(format!("timeout_ms must be a positive integer <= 86400000, got {t}")));
    }
    Ok(())
}

/// The reserved keys this version knows, with the JSON type each must have.
pub(crate) fn check_reserved_metadata(meta: &Map<String, Value>) -> Result<(), PfError> {
    for (key, value) in meta.iter().filter(|(k, _)| k.starts_with("pf.")) {
        let ok = match key.as_str() {
            META_HOPS | META_DEADLINE_MS => value.is_u64(),
            META_ROUTE_KEY | META_TRACE_ID => value.is_string(),
            // Unknown reserved keys belong to newer runtimes: keep them as they are.
            _ => true,
        };
        if !ok {
            let expected = if value_is_key_for_integer(key) { "a non-negative integer" } else { "a string" };
            return Err(bad_request(format!(
                "metadata[\"{key}\"] must be {expected}, got {}",
                describe(value)
            )));
        }
    }
    Ok(())
}

fn value_is_key_for_integer(key: &str) -> bool {
    key == META_HOPS || key == META_DEADLINE_MS
}

/// A short rendering of a value for error messages: small scalars in full,
/// containers and long strings by their kind.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Quotes a string for an error message, cutting it at 40 characters.
pub(crate) fn quote(s: &str) -> String {
    const LIMIT: usize = 40;
    match s.char_indices().nth(LIMIT) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_parse_and_reject() {
        for g in Group::ALL {
            assert_eq!(Group::parse(g.as_str()).unwrap(), g);
        }
        let e = Group::parse("zz").unwrap_err();
        assert_eq!(e.message, "group must be one of cf, df, ed, co, mc, rm, got \"zz\"");
    }

    #[test]
    fn element_rules() {
        assert!(Element::new("transform").is_ok());
        assert!(Element::new("a.b-c_9").is_ok());
        assert!(Element::new(&"x".repeat(64)).is_ok());
        for bad in ["", "has space", "colon:no", "é", &"x".repeat(65)] {
            let e = Element::new(bad).unwrap_err();
            assert!(e.message.starts_with("element must be"), "{}", e.message);
            assert!(e.is(ErrorCode::BadRequest));
        }
    }

    #[test]
    fn priority_rules() {
        assert_eq!(Priority::new(10).unwrap().get(), 10);
        assert_eq!(Priority::new(11).unwrap_err().message, "priority must be an integer 1-10, got 11");
        assert!(Priority::new(0).is_err());
    }

    #[test]
    fn id_rules() {
        assert!(PacketId::new("a").is_ok());
        assert!(PacketId::new(&"i".repeat(128)).is_ok());
        assert!(PacketId::new("").is_err());
        assert!(PacketId::new(&"i".repeat(129)).is_err());
        let a = PacketId::random();
        assert_eq!(a.as_str().len(), 36);
        assert_ne!(a, PacketId::random());
    }

    #[test]
    fn validate_checks_cross_field_rules() {
        let p = Packet::build("df", "t", json!(1)).unwrap();
        assert!(p.validate().is_ok());
        let many = (0..65).map(|i| PacketId::new(&i.to_string()).unwrap()).collect();
        let e = p.clone().with_dependencies(many).validate().unwrap_err();
        assert_eq!(e.message, "dependencies must list at most 64 packet ids, got 65");
        let e = p.clone().with_timeout_ms(0).validate().unwrap_err();
        assert!(e.message.starts_with("timeout_ms must be a positive integer"));
        let meta = json!({"pf.hops": "three", "pf.custom": [1]});
        let e = p.clone().with_metadata(meta.as_object().unwrap().clone()).validate().unwrap_err();
        assert_eq!(e.message, "metadata[\"pf.hops\"] must be a non-negative integer, got \"three\"");
        let meta = json!({"pf.trace_id": 7});
        let e = p.with_metadata(meta.as_object().unwrap().clone()).validate().unwrap_err();
        assert_eq!(e.message, "metadata[\"pf.trace_id\"] must be a string, got 7");
    }

    #[test]
    fn quote_cuts_long_strings_on_char_boundaries() {
        let long = "é".repeat(50);
        let q = quote(&long);
        assert!(q.ends_with("..."));
        assert_eq!(q.chars().filter(|c| *c == 'é').count(), 40);
    }
}
