//! How an actor is named and addressed on the wire: the one place that maps
//! (type, id) to a packet's `group:element` and reserved metadata.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::turn_id::TurnId;
use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group, Packet, PacketId};

/// The group every actor type is addressed in.
pub const ACTOR_GROUP: Group = Group::ResourceMgmt;
/// The element of type `T` is `actor.T`.
pub const ACTOR_ELEMENT_PREFIX: &str = "actor.";
/// Metadata key naming the actor a packet is for.
pub const META_ACTOR_ID: &str = "pf.actor_id";
/// Metadata key naming what a packet asks of the actor (`send` when absent).
pub const META_ACTOR_OP: &str = "pf.actor_op";
/// Metadata key listing the ids of the actor turns waiting on this packet
/// (the reentrancy chain, see [`Op`] and docs/protocol.md).
pub const META_TURNS: &str = "pf.turns";
/// Metadata key naming the node an actor message is delivered at, instead
/// of the node placement picks: set on what is forwarded to an actor that
/// migrated (docs/protocol.md, "Migration").
pub const META_ACTOR_AT: &str = "pf.actor_at";
/// Metadata key naming the packet id an actor message was first sent with,
/// on a message a node sends on to an actor that moved (under a packet id
/// of its own: the packet may pass a node it passed before): the actor
/// remembers the turn by it (docs/protocol.md, "Migration").
pub const META_ACTOR_PACKET_ID: &str = "pf.actor_packet_id";
/// Longest node id `pf.actor_at` may name, in bytes.
pub const MAX_NODE_ID_LEN: usize = 128;
/// Longest actor type name: the element (`actor.` + type) is at most 64 bytes.
pub const MAX_TYPE_LEN: usize = 64 - ACTOR_ELEMENT_PREFIX.len();
/// Longest actor id, in bytes (the same bound as a packet id).
pub const MAX_ID_LEN: usize = 128;

/// An actor's address: its type and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorRef {
    actor_type: Arc<str>,
    id: Arc<str>,
}

impl ActorRef {
    /// Checks both parts: PF400 naming the one that breaks its rule.
    pub fn new(actor_type: &str, id: &str) -> Result<ActorRef, PfError> {
        check_type(actor_type)?;
        check_id(id)?;
        Ok(ActorRef { actor_type: Arc::from(actor_type), id: Arc::from(id) })
    }

    /// From parts already checked (a host's type name, a table's key).
    pub(crate) fn from_parts(actor_type: Arc<str>, id: Arc<str>) -> ActorRef {
        ActorRef { actor_type, id }
    }

    /// A new actor of `actor_type` with a fresh UUID v4 id.
    pub fn generate(actor_type: &str) -> Result<ActorRef, PfError> {
        check_type(actor_type)?;
        Ok(ActorRef { actor_type: Arc::from(actor_type), id: Arc::from(PacketId::random().as_str()) })
    }

    /// The type name (`counter`).
    pub fn actor_type(&self) -> &str {
        &self.actor_type
    }

    /// The id within the type.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The type name, shared (a map key or a store key costs no copy).
    pub(crate) fn type_arc(&self) -> &Arc<str> {
        &self.actor_type
    }

    /// The id, shared.
    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The `group:element` its messages are submitted to (`rm:actor.counter`).
    pub fn element(&self) -> Element {
        type_element(&self.actor_type)
    }

    /// A packet carrying `op` with `data` to this actor.
    pub fn packet(&self, op: Op, data: Value) -> Packet {
        let mut meta = Map::new();
        meta.insert(META_ACTOR_ID.to_owned(), Value::String(self.id.to_string()));
        if op != Op::Send {
            meta.insert(META_ACTOR_OP.to_owned(), Value::String(op.as_str().to_owned()));
        }
        Packet::new(ACTOR_GROUP, self.element(), data).with_metadata(meta)
    }

    /// A packet carrying `op` to this actor with the options a binding was
    /// given: `parts` supplies the data (the message, or a create's initial
    /// state), the id, priority, timeout and metadata, checked with the
    /// decoder's rules and words; its group and element are this actor's.
    pub fn packet_from(&self, op: Op, mut parts: crate::packet::PacketParts<'_>) -> Result<Packet, PfError> {
        parts.group = Some(ACTOR_GROUP.as_str().into());
        parts.element = Some(self.element().as_str().to_owned().into());
        let mut packet = parts.into_packet()?;
        let meta = packet.metadata.get_or_insert_with(Map::new);
        meta.insert(META_ACTOR_ID.to_owned(), Value::String(self.id.to_string()));
        if op != Op::Send {
            meta.insert(META_ACTOR_OP.to_owned(), Value::String(op.as_str().to_owned()));
        }
        Ok(packet)
    }

    /// The key the store and the rendezvous hash use: `type/id`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.actor_type, self.id)
    }
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.actor_type, self.id)
    }
}

/// What an actor packet asks for (`metadata["pf.actor_op"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create the actor with `data` as its initial state (PF409 if it exists).
    Create,
    /// A message for the behaviour (the default).
    Send,
    /// Stop the actor and delete its state, after the messages before it.
    Stop,
    /// Move the actor to the node `data.to` names, between its turns, with
    /// its state, its remembered turns and the messages waiting for it
    /// (what `mc:migrate` sends; docs/protocol.md, "Migration").
    Migrate,
    /// A node hands the actor over to this one: `data.record` becomes its
    /// record. Accepted only from a peer node that routes the actor's type.
    Adopt,
}

impl Op {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Send => "send",
            Op::Stop => "stop",
            Op::Migrate => "migrate",
            Op::Adopt => "adopt",
        }
    }

    /// Whether the op moves the actor between nodes (it never runs inline
    /// on its sender: it waits for the network).
    pub(crate) fn moves(self) -> bool {
        matches!(self, Op::Migrate | Op::Adopt)
    }

    fn parse(value: Option<&Value>) -> Result<Op, PfError> {
        match value {
            None | Some(Value::Null) => Ok(Op::Send),
            Some(Value::String(s)) if s == "send" => Ok(Op::Send),
            Some(Value::String(s)) if s == "create" => Ok(Op::Create),
            Some(Value::String(s)) if s == "stop" => Ok(Op::Stop),
            Some(Value::String(s)) if s == "migrate" => Ok(Op::Migrate),
            Some(Value::String(s)) if s == "adopt" => Ok(Op::Adopt),
            Some(other) => Err(bad(format!(
                "metadata[\"{META_ACTOR_OP}\"] must be one of \"create\", \"send\", \"stop\", \"migrate\", \"adopt\", got {}",
                describe(other)
            ))),
        }
    }
}

/// The element actors of `actor_type` are addressed at (type already checked).
pub(crate) fn type_element(actor_type: &str) -> Element {
    Element::new(&format!("{ACTOR_ELEMENT_PREFIX}{actor_type}"))
        .expect("a checked type name makes a valid element")
}

/// Where an actor packet is to be delivered: its actor's type and id, and
/// the node `pf.actor_at` names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed<'a> {
    pub(crate) actor_type: &'a str,
    pub(crate) id: &'a str,
    /// The node the message is delivered at (forwarded to an actor that
    /// migrated); `None`: the node placement picks.
    pub(crate) at: Option<&'a str>,
}

/// For a packet addressed to an actor: where it goes, after giving a
/// create without an id its generated id (so that every node places it the
/// same way). `None` for any other packet, and for an actor packet whose
/// metadata is invalid (its host answers PF400 for it).
pub(crate) fn placement(packet: &mut Packet) -> Option<Placed<'_>> {
    actor_type_of(packet)?;
    if Request::read(packet.metadata.as_ref()).ok()?.id.is_none() {
        let id = PacketId::random().to_string();
        packet.metadata.get_or_insert_with(Map::new).insert(META_ACTOR_ID.to_owned(), Value::String(id));
    }
    placement_of(packet)
}

/// [`placement`] of a packet that names its actor (`pf.actor_id`); `None`
/// for one that does not (a create that lets the id be made).
pub(crate) fn placement_of(packet: &Packet) -> Option<Placed<'_>> {
    let actor_type = actor_type_of(packet)?;
    let request = Request::read(packet.metadata.as_ref()).ok()?;
    Some(Placed { actor_type, id: request.id?, at: request.at })
}

/// Whether `packet` hands an actor over to the node it is delivered at
/// (`pf.actor_op` is `"adopt"`).
pub(crate) fn is_handover(packet: &Packet) -> bool {
    actor_type_of(packet).is_some()
        && packet.metadata.as_ref().is_some_and(
            |m| matches!(addressing_values(m).op, Some(Value::String(op)) if op == Op::Adopt.as_str()),
        )
}

/// The actor type a packet is addressed to (`rm:actor.TYPE`).
fn actor_type_of(packet: &Packet) -> Option<&str> {
    if packet.group != ACTOR_GROUP {
        return None;
    }
    packet.element.as_str().strip_prefix(ACTOR_ELEMENT_PREFIX).filter(|t| !t.is_empty())
}

/// PF400 unless `name` is a valid actor type name.
pub fn check_type(name: &str) -> Result<(), PfError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TYPE_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "actor type must be 1-{MAX_TYPE_LEN} characters of [A-Za-z0-9_.-], got {}",
            describe(&Value::String(name.to_owned()))
        )))
    }
}

/// PF400 unless `id` is a valid actor id.
pub fn check_id(id: &str) -> Result<(), PfError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(bad(format!(
            "metadata[\"{META_ACTOR_ID}\"] must be a string of 1-{MAX_ID_LEN} bytes, got {} bytes",
            id.len()
        )));
    }
    Ok(())
}

/// What an actor packet asks, read from its metadata.
pub(crate) struct Request<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) op: Op,
    /// The node `pf.actor_at` names: the message is delivered there.
    pub(crate) at: Option<&'a str>,
    /// The id the message was first sent with (`pf.actor_packet_id`): its
    /// turn is remembered by it.
    pub(crate) first_id: Option<&'a str>,
    /// How many of the addressing keys (`pf.actor_id`, `pf.actor_op`,
    /// `pf.actor_at`, `pf.actor_packet_id`) the metadata holds: the turn
    /// sees none of them, and a map that holds nothing else is dropped
    /// whole.
    pub(crate) addressing_keys: usize,
}

impl<'a> Request<'a> {
    /// Reads `pf.actor_id`, `pf.actor_op` and `pf.actor_at`: PF400 naming
    /// the key.
    pub(crate) fn read(metadata: Option<&'a Map<String, Value>>) -> Result<Request<'a>, PfError> {
        let Addressing { id: id_value, op: op_value, at: at_value, first_id: first_value } =
            metadata.map_or(Addressing::default(), addressing_values);
        let addressing_keys = usize::from(op_value.is_some())
            + usize::from(id_value.is_some())
            + usize::from(at_value.is_some())
            + usize::from(first_value.is_some());
        let op = Op::parse(op_value)?;
        let at = match at_value {
            None | Some(Value::Null) => None,
            Some(Value::String(node)) if !node.is_empty() && node.len() <= MAX_NODE_ID_LEN => Some(node.as_str()),
            Some(other) => {
                return Err(bad(format!(
                    "metadata[\"{META_ACTOR_AT}\"] must be a node id, a string of 1-{MAX_NODE_ID_LEN} bytes, got {}",
                    describe(other)
                )))
            }
        };
        let id = match id_value {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                check_id(id)?;
                Some(id.as_str())
            }
            Some(other) => {
                return Err(bad(format!(
                    "metadata[\"{META_ACTOR_ID}\"] must be a string of 1-{MAX_ID_LEN} bytes, got {}",
                    describe(other)
                )))
            }
        };
        let first_id = match first_value {
            None | Some(Value::Null) => None,
            Some(Value::String(first)) if !first.is_empty() && first.len() <= MAX_ID_LEN => {
                Some(first.as_str())
            }
            Some(other) => {
                return Err(bad(format!(
                    "metadata[\"{META_ACTOR_PACKET_ID}\"] must be a packet id, a string of 1-{MAX_ID_LEN} \
                     bytes, got {}",
                    describe(other)
                )))
            }
        };
        if id.is_none() && op != Op::Create {
            return Err(bad(format!(
                "metadata[\"{META_ACTOR_ID}\"] is required to {} (only a create may leave it out)",
                op.as_str()
            )));
        }
        Ok(Request { id, op, at, first_id, addressing_keys })
    }
}

/// Maps up to this many keys are searched by a scan, not a lookup.
const SCAN_LIMIT: usize = 8;

/// Whether `key` is one of the metadata keys that address an actor message
/// (a turn does not see them).
pub(crate) fn is_addressing_key(key: &str) -> bool {
    matches!(key, META_ACTOR_ID | META_ACTOR_OP | META_ACTOR_AT | META_ACTOR_PACKET_ID)
}

/// What every addressing key begins with.
const ADDRESSING_PREFIX: &str = "pf.actor_";

/// The addressing values of an actor packet's metadata.
#[derive(Default)]
struct Addressing<'a> {
    id: Option<&'a Value>,
    op: Option<&'a Value>,
    at: Option<&'a Value>,
    first_id: Option<&'a Value>,
}

/// The values of `pf.actor_id`, `pf.actor_op`, `pf.actor_at` and
/// `pf.actor_packet_id` in `metadata`. A small map (the usual: the address, a relay's hop count, a
/// trace id) is scanned once: a lookup would hash each key first (the
/// map's hasher is SipHash), which costs more than comparing a few short
/// keys.
#[inline]
fn addressing_values(metadata: &Map<String, Value>) -> Addressing<'_> {
    if metadata.len() > SCAN_LIMIT {
        return Addressing {
            id: metadata.get(META_ACTOR_ID),
            op: metadata.get(META_ACTOR_OP),
            at: metadata.get(META_ACTOR_AT),
            first_id: metadata.get(META_ACTOR_PACKET_ID),
        };
    }
    let mut found = Addressing::default();
    for (key, value) in metadata {
        // Every addressing key starts so; others are passed over at once.
        let Some(name) = key.strip_prefix(ADDRESSING_PREFIX) else { continue };
        match name {
            "id" => found.id = Some(value),
            "op" => found.op = Some(value),
            "at" => found.at = Some(value),
            "packet_id" => found.first_id = Some(value),
            _ => {}
        }
    }
    found
}

/// The message type of an actor message: `data.type`, a string.
pub(crate) fn message_type(data: &Value) -> Result<&str, PfError> {
    match data.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t),
        Some(other) => Err(bad(format!(
            "data.type must be a non-empty string naming the message, got {}",
            describe(other)
        ))),
        None if data.is_object() => {
            Err(bad("data.type is required: the message's type names the behaviour to run"))
        }
        None => Err(bad(format!(
            "data must be an object with a \"type\" naming the message, got {}",
            describe(data)
        ))),
    }
}

/// Whether `metadata["pf.turns"]` lists `turn`.
pub(crate) fn chain_holds(metadata: Option<&Map<String, Value>>, turn: &TurnId) -> bool {
    metadata
        .and_then(|m| m.get(META_TURNS))
        .and_then(Value::as_array)
        .is_some_and(|turns| turns.iter().any(|t| t.as_str().is_some_and(|t| turn.is_str(t))))
}

fn bad(message: impl Into<String>) -> PfError {
    PfError::new(ErrorCode::BadRequest, message)
}

/// A value as an error message shows it: short, with its kind.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        let cut = (0..=40).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_and_ids_follow_their_rules() {
        assert!(ActorRef::new("counter", "c1").is_ok());
        let long = "t".repeat(MAX_TYPE_LEN + 1);
        assert_eq!(
            ActorRef::new(&long, "c1").unwrap_err().message,
            format!("actor type must be 1-58 characters of [A-Za-z0-9_.-], got \"{}...", &long[..39])
        );
        assert_eq!(
            ActorRef::new("counter", "").unwrap_err().message,
            "metadata[\"pf.actor_id\"] must be a string of 1-128 bytes, got 0 bytes"
        );
        assert!(ActorRef::new("bad type", "x").unwrap_err().is(ErrorCode::BadRequest));
        let made = ActorRef::generate("counter").unwrap();
        assert_eq!(made.id().len(), 36);
        assert_eq!(made.element().as_str(), "actor.counter");
    }

    #[test]
    fn a_packet_names_its_actor_in_reserved_metadata() {
        let actor = ActorRef::new("counter", "c1").unwrap();
        let packet = actor.packet(Op::Send, json!({"type": "increment"}));
        assert_eq!((packet.group, packet.element.as_str()), (Group::ResourceMgmt, "actor.counter"));
        assert_eq!(packet.meta(META_ACTOR_ID), Some(&json!("c1")));
        assert_eq!(packet.meta(META_ACTOR_OP), None);
        let stop = actor.packet(Op::Stop, Value::Null);
        assert_eq!(stop.meta(META_ACTOR_OP), Some(&json!("stop")));
    }

    #[test]
    fn a_bindings_options_are_checked_by_the_decoders_rules() {
        use crate::packet::PacketParts;
        let actor = ActorRef::new("counter", "c1").unwrap();
        let parts = PacketParts {
            priority: Some(9i64.into()),
            data: Some(json!({"type": "inc"})),
            ..Default::default()
        };
        let packet = actor.packet_from(Op::Send, parts).unwrap();
        assert_eq!((packet.priority.get(), packet.element.as_str()), (9, "actor.counter"));
        assert_eq!(packet.meta(META_ACTOR_ID), Some(&json!("c1")));
        let parts = PacketParts { timeout_ms: Some(0i64.into()), ..Default::default() };
        let err = actor.packet_from(Op::Stop, parts).unwrap_err();
        assert!(err.message.starts_with("timeout_ms must be a positive integer"), "{}", err.message);
    }

    #[test]
    fn requests_name_the_key_they_break() {
        let meta = |v: Value| v.as_object().cloned().unwrap();
        let m = meta(json!({"pf.actor_op": "explode", "pf.actor_id": "a"}));
        assert_eq!(
            Request::read(Some(&m)).err().unwrap().message,
            "metadata[\"pf.actor_op\"] must be one of \"create\", \"send\", \"stop\", \"migrate\", \"adopt\", got \"explode\""
        );
        let m = meta(json!({"pf.actor_id": 7}));
        assert_eq!(
            Request::read(Some(&m)).err().unwrap().message,
            "metadata[\"pf.actor_id\"] must be a string of 1-128 bytes, got 7"
        );
        assert_eq!(
            Request::read(None).err().unwrap().message,
            "metadata[\"pf.actor_id\"] is required to send (only a create may leave it out)"
        );
        let m = meta(json!({"pf.actor_op": "create"}));
        let create = Request::read(Some(&m)).unwrap();
        assert_eq!((create.id, create.op), (None, Op::Create));
        assert_eq!(message_type(&json!({"type": "inc"})).unwrap(), "inc");
        assert_eq!(
            message_type(&json!(3)).unwrap_err().message,
            "data must be an object with a \"type\" naming the message, got 3"
        );
        assert_eq!(
            message_type(&json!({"type": 1})).unwrap_err().message,
            "data.type must be a non-empty string naming the message, got 1"
        );
    }

    #[test]
    fn small_and_large_metadata_read_the_same_request() {
        for extra in [0, 2, SCAN_LIMIT, SCAN_LIMIT + 5] {
            let mut m = Map::new();
            for i in 0..extra {
                m.insert(format!("k{i}"), json!(i));
            }
            m.insert(META_ACTOR_OP.into(), json!("stop"));
            m.insert(META_ACTOR_ID.into(), json!("c1"));
            let request = Request::read(Some(&m)).unwrap();
            assert_eq!(
                (request.id, request.op, request.addressing_keys),
                (Some("c1"), Op::Stop, 2),
                "{extra} keys"
            );
            m.remove(META_ACTOR_OP);
            let request = Request::read(Some(&m)).unwrap();
            assert_eq!(
                (request.id, request.op, request.addressing_keys),
                (Some("c1"), Op::Send, 1),
                "{extra} keys"
            );
            m.insert(META_ACTOR_AT.into(), json!("n2"));
            m.insert(META_ACTOR_PACKET_ID.into(), json!("p1"));
            m.insert("pf.actor_other".into(), json!(1));
            let request = Request::read(Some(&m)).unwrap();
            assert_eq!(
                (request.at, request.first_id, request.addressing_keys),
                (Some("n2"), Some("p1"), 3),
                "{extra} keys"
            );
            assert!(is_addressing_key(META_ACTOR_AT) && !is_addressing_key("pf.actor_other"));
            m.remove("pf.actor_other");
            m.remove(META_ACTOR_AT);
            m.remove(META_ACTOR_PACKET_ID);
        }
    }
}
