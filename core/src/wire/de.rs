//! Tolerant decoding: a well-formed frame always decodes to either a
//! [`Message`] or a [`FrameError`] that names the broken rule; only bytes
//! that are not a JSON/MessagePack document at all make serde fail.
//!
//! Every visitor here works for both codecs (they go through serde's data
//! model), and for a buffered [`serde_json::Value`] when a frame puts its
//! `payload` before its `type`.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{FrameError, Hello, Message, MessageKind};
use crate::error::PfError;
use crate::packet::{
    bad_request, quote, Element, Field, Group, Packet, PacketId, PacketParts, PROTOCOL_VERSION,
};
use crate::result::PacketResult;

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Field<'de>, E> {
        Ok(Field::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(Field::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Field<'de>, E> {
        Ok(Field::Bytes)
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        // No capacity from the size hint: a hostile length prefix must not
        // reserve memory that the input does not back.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Field<'de>>()? {
            items.push(item);
        }
        Ok(Field::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object)
    }
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// A payload read from a map, for each payload type.
trait FromMap: Sized {
    type Out;
    fn read_map<'de, A: MapAccess<'de>>(self, map: A) -> Result<Self::Out, A::Error>;
}

/// Accepts any value: a map goes to `T`, anything else is kept as [`Field`]
/// so the caller can say "payload must be an object, got 3".
struct ObjectOr<T>(T);

macro_rules! delegate_to_loose {
    ($($name:ident($($arg:ident: $ty:ty)?)),* $(,)?) => {$(
        fn $name<E: de::Error>(self, $($arg: $ty)?) -> Result<Self::Value, E> {
            FieldVisitor.$name($($arg)?).map(Err)
        }
    )*};
}

impl<'de, T: FromMap> Visitor<'de> for ObjectOr<T> {
    type Value = Result<T::Out, Field<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.read_map(map).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        FieldVisitor.visit_seq(seq).map(Err)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    delegate_to_loose!(
        visit_bool(v: bool),
        visit_i64(v: i64),
        visit_u64(v: u64),
        visit_i128(v: i128),
        visit_f64(v: f64),
        visit_str(v: &str),
        visit_bytes(v: &[u8]),
        visit_unit(),
        visit_none(),
    );
}

fn object_or<'de, T: FromMap, D: Deserializer<'de>>(
    d: D,
    reader: T,
) -> Result<Result<T::Out, Field<'de>>, D::Error> {
    d.deserialize_any(ObjectOr(reader))
}

/// Reads a map key as a field name of `F`; keys that are not strings, or
/// not known, become `F::default()` (ignored), as PROTOCOL.md asks.
struct Key<F>(F);

impl<'de, F: FieldName> de::Deserialize<'de> for Key<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<F>(PhantomData<F>);
        impl<'de, F: FieldName> Visitor<'de> for KeyVisitor<F> {
            type Value = Key<F>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<F>, E> {
                Ok(Key(F::from_name(v)))
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
            fn visit_unit<E>(self) -> Result<Key<F>, E> {
                Ok(Key(F::default()))
            }
        }
        d.deserialize_identifier(KeyVisitor(PhantomData))
    }
}

trait FieldName: Default {
    fn from_name(name: &str) -> Self;
}

// ---------------------------------------------------------------- packet

#[derive(Default)]
enum PacketField {
    Version,
    Id,
    Group,
    Element,
    Data,
    Priority,
    Timeout,
    Dependencies,
    Metadata,
    #[default]
    Other,
}

impl FieldName for PacketField {
    fn from_name(name: &str) -> Self {
        // Full names and the compact ("atom") forms are both accepted.
        match name {
            "version" | "v" => PacketField::Version,
            "id" => PacketField::Id,
            "group" | "g" => PacketField::Group,
            "element" | "e" => PacketField::Element,
            "data" | "d" => PacketField::Data,
            "priority" | "p" => PacketField::Priority,
            "timeout_ms" | "t" => PacketField::Timeout,
            "dependencies" | "deps" => PacketField::Dependencies,
            "metadata" | "m" => PacketField::Metadata,
            _ => PacketField::Other,
        }
    }
}

/// A packet, or the first rule it breaks (with its id when that was valid).
pub(super) type CheckedPacket = Result<Box<Packet>, (PfError, Option<PacketId>)>;

/// A packet's fields as read: the parts the core judges, and the version,
/// which only a frame carries. Read straight into the parts, so that they
/// are not moved again before being judged.
#[derive(Default)]
struct PacketFields<'de> {
    version: Option<Field<'de>>,
    parts: PacketParts<'de>,
}

struct PacketMap;

impl FromMap for PacketMap {
    type Out = CheckedPacket;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<CheckedPacket, A::Error> {
        let mut f = PacketFields::default();
        let p = &mut f.parts;
        while let Some(Key(field)) = map.next_key::<Key<PacketField>>()? {
            match field {
                PacketField::Version => f.version = Some(map.next_value()?),
                PacketField::Id => p.id = Some(map.next_value()?),
                PacketField::Group => p.group = Some(map.next_value()?),
                PacketField::Element => p.element = Some(map.next_value()?),
                PacketField::Data => p.data = Some(map.next_value()?),
                PacketField::Priority => p.priority = Some(map.next_value()?),
                PacketField::Timeout => p.timeout_ms = Some(map.next_value()?),
                PacketField::Dependencies => p.dependencies = Some(map.next_value()?),
                PacketField::Metadata => p.metadata = Some(map.next_value()?),
                PacketField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(f.into_packet())
    }
}

fn required<'de>(field: Option<Field<'de>>, name: &str) -> Result<Field<'de>, PfError> {
    field.ok_or_else(|| bad_request(format!("{name} is required")))
}

impl PacketFields<'_> {
    fn into_packet(mut self) -> CheckedPacket {
        // The id is read first so that every later error can carry it.
        let id = match &self.parts.id {
            None => return Err((bad_request("id is required".into()), None)),
            Some(v) => crate::packet::parts::packet_id(v).map_err(|e| (e, None))?,
        };
        match required(self.version, "version") {
            Ok(Field::Str(v)) if v == PROTOCOL_VERSION => {}
            Ok(other) => {
                let e = bad_request(format!("version must be \"1.0\", got {}", other.describe()));
                return Err((e, Some(id)));
            }
            Err(e) => return Err((e, Some(id))),
        }
        // Boxed: a decoded message stays small however big a packet is.
        self.parts.with_id(id).map(Box::new).map_err(|(e, id)| (e, Some(id)))
    }
}

impl<'de> de::Deserialize<'de> for Packet {
    /// Decodes and validates a packet (full or compact keys).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match object_or(d, PacketMap)? {
            Ok(Ok(packet)) => Ok(*packet),
            Ok(Err((e, _))) => Err(de::Error::custom(e.message)),
            Err(other) => {
                Err(de::Error::custom(format!("packet must be an object, got {}", other.describe())))
            }
        }
    }
}

// ---------------------------------------------------------------- result

#[derive(Default)]
enum ResultField {
    PacketId,
    Status,
    Data,
    Error,
    Duration,
    #[default]
    Other,
}

impl FieldName for ResultField {
    fn from_name(name: &str) -> Self {
        match name {
            "packet_id" => ResultField::PacketId,
            "status" => ResultField::Status,
            "data" => ResultField::Data,
            "error" => ResultField::Error,
            "duration_ms" => ResultField::Duration,
            _ => ResultField::Other,
        }
    }
}

type CheckedResult = Result<PacketResult, (PfError, Option<PacketId>)>;

struct ResultMap;

impl FromMap for ResultMap {
    type Out = CheckedResult;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<CheckedResult, A::Error> {
        let (mut id, mut status, mut data, mut error, mut duration) = (None, None, None, None, None);
        while let Some(Key(field)) = map.next_key::<Key<ResultField>>()? {
            match field {
                ResultField::PacketId => id = Some(map.next_value::<Field<'de>>()?),
                ResultField::Status => status = Some(map.next_value::<Field<'de>>()?),
                ResultField::Data => data = Some(map.next_value::<Value>()?),
                ResultField::Error => error = Some(map.next_value::<ErrorObject>()?),
                ResultField::Duration => duration = Some(map.next_value::<Field<'de>>()?),
                ResultField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let packet_id = match id {
            None => return Ok(Err((bad_request("packet_id is required".into()), None))),
            Some(v) => {
                match v.into_str("packet_id", "a string of 1-128 bytes").and_then(|s| PacketId::new(&s)) {
                    Ok(id) => id,
                    Err(e) => return Ok(Err((e, None))),
                }
            }
        };
        let fail = |e: PfError| Ok(Err((e, Some(packet_id.clone()))));
        let duration_ms = match duration {
            None | Some(Field::Null) => 0,
            // A float duration from a peer that measures in fractions is rounded down.
            Some(Field::Float(f)) if f >= 0.0 && f.is_finite() => f as u64,
            Some(v) => match v.as_u64() {
                Some(d) => d,
                None => {
                    return fail(bad_request(format!(
                        "duration_ms must be a non-negative integer, got {}",
                        v.describe()
                    )))
                }
            },
        };
        let outcome = match status {
            Some(Field::Str(s)) if s == "success" => Ok(data.unwrap_or(Value::Null)),
            Some(Field::Str(s)) if s == "error" => match error {
                Some(ErrorObject(Ok(e))) => Err(e),
                Some(ErrorObject(Err(e))) => return fail(e),
                None => return fail(bad_request("error is required when status is \"error\"".into())),
            },
            Some(other) => {
                return fail(bad_request(format!(
                    "status must be \"success\" or \"error\", got {}",
                    other.describe()
                )))
            }
            None => return fail(bad_request("status is required".into())),
        };
        Ok(Ok(PacketResult { packet_id, outcome, duration_ms }))
    }
}

/// The `{code, message}` object of a failed result.
struct ErrorObject(Result<PfError, PfError>);

impl<'de> de::Deserialize<'de> for ErrorObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ErrorObject(match object_or(d, ErrorMap)? {
            Ok(checked) => checked.map(|(e, _)| e).map_err(|(e, _)| e),
            Err(other) => Err(bad_request(format!(
                "error must be an object with code and message, got {}",
                other.describe()
            ))),
        }))
    }
}

// ---------------------------------------------------------------- error

#[derive(Default)]
enum ErrorField {
    Code,
    Message,
    PacketId,
    #[default]
    Other,
}

impl FieldName for ErrorField {
    fn from_name(name: &str) -> Self {
        match name {
            "code" => ErrorField::Code,
            "message" => ErrorField::Message,
            "packet_id" => ErrorField::PacketId,
            _ => ErrorField::Other,
        }
    }
}

type CheckedError = Result<(PfError, Option<PacketId>), (PfError, Option<PacketId>)>;

struct ErrorMap;

impl FromMap for ErrorMap {
    type Out = CheckedError;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<CheckedError, A::Error> {
        let (mut code, mut message, mut packet_id) = (None, None, None);
        while let Some(Key(field)) = map.next_key::<Key<ErrorField>>()? {
            match field {
                ErrorField::Code => code = Some(map.next_value::<Field<'de>>()?),
                ErrorField::Message => message = Some(map.next_value::<Field<'de>>()?),
                ErrorField::PacketId => packet_id = Some(map.next_value::<Field<'de>>()?),
                ErrorField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let packet_id = match packet_id {
            None | Some(Field::Null) => None,
            Some(v) => match v.into_str("packet_id", "a string").and_then(|s| PacketId::new(&s)) {
                Ok(id) => Some(id),
                Err(e) => return Ok(Err((e, None))),
            },
        };
        let code = match code {
            None => return Ok(Err((bad_request("code is required".into()), packet_id))),
            Some(v) => match v.into_str("code", "a string such as \"PF500\"") {
                Ok(c) => c,
                Err(e) => return Ok(Err((e, packet_id))),
            },
        };
        let message = match message {
            None | Some(Field::Null) => String::new(),
            Some(v) => match v.into_str("message", "a string") {
                Ok(m) => m.into_owned(),
                Err(e) => return Ok(Err((e, packet_id))),
            },
        };
        Ok(Ok((PfError { code: code.into_owned(), message }, packet_id)))
    }
}

// ---------------------------------------------------------------- hello

#[derive(Default)]
enum HelloField {
    NodeId,
    Name,
    Runtime,
    Protocol,
    Handlers,
    Features,
    MaxInflight,
    HeartbeatMs,
    MaxFrameBytes,
    Stdlib,
    Token,
    ActorHosts,
    Direct,
    #[default]
    Other,
}

impl FieldName for HelloField {
    fn from_name(name: &str) -> Self {
        match name {
            "node_id" => HelloField::NodeId,
            "name" => HelloField::Name,
            "runtime" => HelloField::Runtime,
            "protocol" => HelloField::Protocol,
            "handlers" => HelloField::Handlers,
            "features" => HelloField::Features,
            "max_inflight" => HelloField::MaxInflight,
            "heartbeat_ms" => HelloField::HeartbeatMs,
            "max_frame_bytes" => HelloField::MaxFrameBytes,
            "stdlib" => HelloField::Stdlib,
            "token" => HelloField::Token,
            "actor_hosts" => HelloField::ActorHosts,
            "direct" => HelloField::Direct,
            _ => HelloField::Other,
        }
    }
}

struct HelloMap;

fn optional_string(v: Option<Field<'_>>, field: &str) -> Result<String, PfError> {
    match v {
        None | Some(Field::Null) => Ok(String::new()),
        Some(v) => v.into_str(field, "a string").map(Cow::into_owned),
    }
}

fn string_list(v: Option<Field<'_>>, field: &str) -> Result<Vec<String>, PfError> {
    match v {
        None | Some(Field::Null) => Ok(Vec::new()),
        Some(Field::List(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| item.into_str(&format!("{field}[{i}]"), "a string").map(Cow::into_owned))
            .collect(),
        Some(other) => {
            Err(bad_request(format!("{field} must be an array of strings, got {}", other.describe())))
        }
    }
}

fn parse_handler_key(key: &str, field: &str, index: usize) -> Result<(Group, Element), PfError> {
    let (g, e) = key.split_once(':').ok_or_else(|| {
        bad_request(format!("{field}[{index}] must be \"group:element\", got {}", quote(key)))
    })?;
    let prefix = |err: PfError| bad_request(format!("{field}[{index}]: {}", err.message));
    Ok((Group::parse(g).map_err(prefix)?, Element::new(e).map_err(prefix)?))
}

/// `actor_hosts`: an object of actor types, each an object of node ids
/// with their distance in hops (PF400 naming the entry that breaks it).
fn parse_actor_hosts(value: Option<serde_json::Value>) -> Result<crate::wire::ActorHosts, PfError> {
    use serde_json::Value;
    let mut hosts = crate::wire::ActorHosts::new();
    let types = match value {
        None | Some(Value::Null) => return Ok(hosts),
        Some(Value::Object(types)) => types,
        Some(other) => {
            return Err(bad_request(format!(
                "actor_hosts must be an object of actor types, got {}",
                kind(&other)
            )))
        }
    };
    for (actor_type, nodes) in types {
        crate::actor::address::check_type(&actor_type)
            .map_err(|e| bad_request(format!("actor_hosts[{}]: {}", quote(&actor_type), e.message)))?;
        let Value::Object(nodes) = nodes else {
            return Err(bad_request(format!(
                "actor_hosts[{}] must be an object of node ids and hops, got {}",
                quote(&actor_type),
                kind(&nodes)
            )));
        };
        let mut by_node = std::collections::BTreeMap::new();
        for (node, hops) in nodes {
            let Some(hops) = hops.as_u64() else {
                return Err(bad_request(format!(
                    "actor_hosts[{}][{}] must be a non-negative integer, got {}",
                    quote(&actor_type),
                    quote(&node),
                    kind(&hops)
                )));
            };
            by_node.insert(node, hops);
        }
        hosts.insert(actor_type, by_node);
    }
    Ok(hosts)
}

/// How an unexpected JSON value is named in a message.
fn kind(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!("{}...", &text[..text.char_indices().nth(37).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

impl FromMap for HelloMap {
    type Out = Result<Hello, PfError>;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut raw: [Option<Field<'de>>; 11] = Default::default();
        let mut actor_hosts = None;
        let mut direct = None;
        while let Some(Key(field)) = map.next_key::<Key<HelloField>>()? {
            let slot = match field {
                HelloField::ActorHosts => {
                    actor_hosts = Some(map.next_value::<serde_json::Value>()?);
                    continue;
                }
                HelloField::Direct => {
                    direct = Some(map.next_value::<serde_json::Value>()?);
                    continue;
                }
                HelloField::NodeId => 0,
                HelloField::Name => 1,
                HelloField::Runtime => 2,
                HelloField::Protocol => 3,
                HelloField::Handlers => 4,
                HelloField::Features => 5,
                HelloField::MaxInflight => 6,
                HelloField::Token => 7,
                HelloField::HeartbeatMs => 8,
                HelloField::MaxFrameBytes => 9,
                HelloField::Stdlib => 10,
                HelloField::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            raw[slot] = Some(map.next_value()?);
        }
        let [node_id, name, runtime, protocol, handlers, features, max_inflight, token, heartbeat_ms, max_frame_bytes, stdlib] =
            raw;
        Ok((|| {
            let handlers = string_list(handlers, "handlers")?
                .iter()
                .enumerate()
                .map(|(i, key)| parse_handler_key(key, "handlers", i))
                .collect::<Result<Vec<_>, _>>()?;
            let stdlib = string_list(stdlib, "stdlib")?
                .iter()
                .enumerate()
                .map(|(i, key)| parse_handler_key(key, "stdlib", i))
                .collect::<Result<Vec<_>, _>>()?;
            let count = |v: Option<Field<'_>>, field: &str| match v {
                None | Some(Field::Null) => Ok(0),
                Some(v) => v.as_u64().ok_or_else(|| {
                    bad_request(format!("{field} must be a non-negative integer, got {}", v.describe()))
                }),
            };
            let max_inflight = count(max_inflight, "max_inflight")?;
            let heartbeat_ms = count(heartbeat_ms, "heartbeat_ms")?;
            let max_frame_bytes = count(max_frame_bytes, "max_frame_bytes")?;
            let token = match token {
                None | Some(Field::Null) => None,
                Some(v) => Some(v.into_str("token", "a string")?.into_owned()),
            };
            Ok(Hello {
                node_id: optional_string(node_id, "node_id")?,
                name: optional_string(name, "name")?,
                runtime: optional_string(runtime, "runtime")?,
                protocol: optional_string(protocol, "protocol")?,
                handlers,
                stdlib,
                features: string_list(features, "features")?,
                max_inflight,
                heartbeat_ms,
                max_frame_bytes,
                token,
                actor_hosts: parse_actor_hosts(actor_hosts)?,
                direct: super::direct::parse(direct)?.map(Box::new),
            })
        })())
    }
}

// ---------------------------------------------------------------- cancel

#[derive(Default)]
enum CancelField {
    PacketId,
    #[default]
    Other,
}

impl FieldName for CancelField {
    fn from_name(name: &str) -> Self {
        if name == "packet_id" {
            CancelField::PacketId
        } else {
            CancelField::Other
        }
    }
}

/// A cancel's payload: the id of the packet it withdraws.
struct CancelMap;

impl FromMap for CancelMap {
    type Out = Result<PacketId, PfError>;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut packet_id = None;
        while let Some(Key(field)) = map.next_key::<Key<CancelField>>()? {
            match field {
                CancelField::PacketId => packet_id = Some(map.next_value::<Field<'de>>()?),
                CancelField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match packet_id {
            None | Some(Field::Null) => Err(bad_request("packet_id is required".into())),
            Some(v) => v.into_str("packet_id", "a string of 1-128 bytes").and_then(|s| {
                // PacketId::new names the field `id`: this one is `packet_id`.
                PacketId::new(&s).map_err(|e| match e.message.strip_prefix("id ") {
                    Some(rest) => bad_request(format!("packet_id {rest}")),
                    None => e,
                })
            }),
        })
    }
}

// ---------------------------------------------------------------- heartbeat

struct HeartbeatMap;

impl FromMap for HeartbeatMap {
    type Out = Result<u64, PfError>;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut timestamp = None;
        while let Some(key) = map.next_key::<Key<TimestampField>>()? {
            match key.0 {
                TimestampField::Timestamp => timestamp = Some(map.next_value::<Field<'de>>()?),
                TimestampField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match timestamp {
            None | Some(Field::Null) => Ok(0),
            // Some runtimes send fractional milliseconds.
            Some(Field::Float(f)) if f >= 0.0 && f.is_finite() => Ok(f as u64),
            Some(v) => v.as_u64().ok_or_else(|| {
                bad_request(format!(
                    "timestamp must be a non-negative integer (ms since epoch), got {}",
                    v.describe()
                ))
            }),
        })
    }
}

#[derive(Default)]
enum TimestampField {
    Timestamp,
    #[default]
    Other,
}

impl FieldName for TimestampField {
    fn from_name(name: &str) -> Self {
        if name == "timestamp" {
            TimestampField::Timestamp
        } else {
            TimestampField::Other
        }
    }
}

// ---------------------------------------------------------------- frame

#[derive(Default)]
enum FrameField {
    Type,
    Seq,
    Payload,
    #[default]
    Other,
}

impl FieldName for FrameField {
    fn from_name(name: &str) -> Self {
        match name {
            "type" => FrameField::Type,
            "seq" => FrameField::Seq,
            "payload" => FrameField::Payload,
            _ => FrameField::Other,
        }
    }
}

/// A decoded payload, before the frame's `seq` is attached.
enum Body {
    /// The message, its `seq` still 0.
    Message(Message),
    Invalid(PfError, Option<PacketId>),
}

/// Decodes a payload for a known frame type.
struct PayloadSeed(MessageKind);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Body;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        let kind = self.0;
        let not_object = |other: Field| {
            Body::Invalid(
                bad_request(format!(
                    "payload of a {} frame must be an object, got {}",
                    kind.as_str(),
                    other.describe()
                )),
                None,
            )
        };
        Ok(match kind {
            MessageKind::Submit => match object_or(d, PacketMap)? {
                Ok(Ok(packet)) => Body::Message(Message::Submit { seq: 0, packet }),
                Ok(Err((e, id))) => Body::Invalid(e, id),
                Err(other) => not_object(other),
            },
            MessageKind::Result => match object_or(d, ResultMap)? {
                Ok(Ok(result)) => Body::Message(Message::Result { seq: 0, result }),
                Ok(Err((e, id))) => Body::Invalid(e, id),
                Err(other) => not_object(other),
            },
            MessageKind::Error => match object_or(d, ErrorMap)? {
                Ok(Ok((error, packet_id))) => Body::Message(Message::Error { seq: 0, error, packet_id }),
                Ok(Err((e, id))) => Body::Invalid(e, id),
                Err(other) => not_object(other),
            },
            MessageKind::Hello => match object_or(d, HelloMap)? {
                Ok(Ok(hello)) => Body::Message(Message::Hello { seq: 0, hello: Box::new(hello) }),
                Ok(Err(e)) => Body::Invalid(e, None),
                Err(other) => not_object(other),
            },
            MessageKind::Cancel => match object_or(d, CancelMap)? {
                Ok(Ok(packet_id)) => Body::Message(Message::Cancel { seq: 0, packet_id }),
                Ok(Err(e)) => Body::Invalid(e, None),
                Err(other) => not_object(other),
            },
            MessageKind::Heartbeat => match object_or(d, HeartbeatMap)? {
                Ok(Ok(timestamp)) => Body::Message(Message::Heartbeat { seq: 0, timestamp }),
                Ok(Err(e)) => Body::Invalid(e, None),
                // A heartbeat's payload carries nothing we rely on: accept any.
                Err(_) => Body::Message(Message::Heartbeat { seq: 0, timestamp: 0 }),
            },
        })
    }
}

enum Payload {
    Decoded(Body),
    /// The payload came before `type`: kept as a value and decoded after.
    Buffered(Value),
}

/// One message, or the error frame's ingredients.
pub(super) type CheckedMessage = Result<Message, FrameError>;

/// Decodes one frame object. The `seq` is written to `seen_seq` as soon as
/// it is read, so that a frame whose bytes break off later can still be
/// answered with its `seq`.
pub(super) struct FrameSeed<'a>(pub(super) &'a Cell<u64>);

impl FromMap for FrameSeed<'_> {
    type Out = CheckedMessage;

    fn read_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let (mut kind, mut seq, mut payload) = (None::<Field<'de>>, None::<Field<'de>>, None);
        while let Some(Key(field)) = map.next_key::<Key<FrameField>>()? {
            match field {
                FrameField::Type => kind = Some(map.next_value()?),
                FrameField::Seq => {
                    let value: Field<'de> = map.next_value()?;
                    self.0.set(value.as_u64().unwrap_or(0));
                    seq = Some(value);
                }
                FrameField::Payload => {
                    let known = match &kind {
                        Some(Field::Str(s)) => MessageKind::parse(s),
                        _ => None,
                    };
                    payload = Some(match known {
                        Some(k) => Payload::Decoded(map.next_value_seed(PayloadSeed(k))?),
                        None => Payload::Buffered(map.next_value()?),
                    });
                }
                FrameField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(assemble(kind, seq, payload))
    }
}

impl<'de> DeserializeSeed<'de> for FrameSeed<'_> {
    type Value = CheckedMessage;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CheckedMessage, D::Error> {
        Ok(match object_or(d, self)? {
            Ok(checked) => checked,
            Err(other) => Err(FrameError {
                seq: 0,
                kind: None,
                packet_id: None,
                error: bad_request(format!("a frame must be an object, got {}", other.describe())),
                unparsable: false,
            }),
        })
    }
}

/// Decodes a batch: an array of frame objects, each checked on its own.
pub(super) struct BatchSeed<'a>(pub(super) &'a Cell<u64>);

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Vec<CheckedMessage>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Vec<CheckedMessage>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of frames")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Capacity from the size hint is capped: the hint of a MessagePack
        // array is whatever its header claims.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(item) = seq.next_element_seed(FrameSeed(self.0))? {
            out.push(item);
        }
        Ok(out)
    }
}

fn assemble(kind: Option<Field<'_>>, seq: Option<Field<'_>>, payload: Option<Payload>) -> CheckedMessage {
    let invalid = |seq: u64, kind: Option<MessageKind>, error: PfError, packet_id| FrameError {
        seq,
        kind,
        packet_id,
        error,
        unparsable: false,
    };
    let seq = match seq {
        None | Some(Field::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(s) => s,
            None => {
                let e = bad_request(format!("seq must be an unsigned 64-bit integer, got {}", v.describe()));
                return Err(invalid(0, None, e, None));
            }
        },
    };
    let kind = match kind {
        None => return Err(invalid(seq, None, bad_request("type is required".into()), None)),
        Some(Field::Str(s)) => match MessageKind::parse(&s) {
            Some(k) => k,
            None => {
                let e = bad_request(format!(
                    "unknown message type {}; expected submit, result, error, heartbeat, hello or cancel",
                    quote(&s)
                ));
                return Err(invalid(seq, None, e, None));
            }
        },
        Some(other) => {
            let e = bad_request(format!("type must be a string, got {}", other.describe()));
            return Err(invalid(seq, None, e, None));
        }
    };
    let body = match payload {
        Some(Payload::Decoded(body)) => body,
        Some(Payload::Buffered(value)) => match PayloadSeed(kind).deserialize(value) {
            Ok(body) => body,
            Err(e) => Body::Invalid(bad_request(format!("payload: {e}")), None),
        },
        None if kind == MessageKind::Heartbeat => Body::Message(Message::Heartbeat { seq: 0, timestamp: 0 }),
        None => Body::Invalid(bad_request("payload is required".into()), None),
    };
    match body {
        Body::Message(message) => Ok(message.with_seq(seq)),
        Body::Invalid(error, packet_id) => Err(invalid(seq, Some(kind), error, packet_id)),
    }
}
