//! Building a [`Packet`] from loose parts, with the wire decoder's rules and
//! messages.
//!
//! A packet reaches the core in two ways: decoded from a frame, or put
//! together by a binding or the CLI from the arguments of a `submit` call.
//! Both go through [`PacketParts::into_packet`], so that a field is judged
//! the same way, and explained in the same words, whoever sent it. A binding
//! only turns its host's values into [`Field`]s (and `data`/`metadata` into
//! [`Value`]s); it checks nothing itself.

use std::borrow::Cow;

use serde_json::Value;

use super::{
    bad_request, check_reserved_metadata, check_timeout, describe, quote, Element, Group, Packet, PacketId,
    Priority, MAX_DEPENDENCIES,
};
use crate::error::PfError;

/// A field's value as a submitter gave it, before any rule was checked: what
/// validation needs to accept it, or to say what it got instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// `null`, `None`, `nil`, `undefined`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer; wide enough for any integer of either codec.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string, borrowed from its source where it can be.
    Str(Cow<'a, str>),
    /// An array or list.
    List(Vec<Field<'a>>),
    /// A map, object or dict (its content is never a packet field's).
    Object,
    /// Binary data.
    Bytes,
    /// A host value with no JSON shape, described by the binding with its
    /// article, e.g. `"a function"` or `"a tuple"`.
    Other(Cow<'a, str>),
}

impl<'a> Field<'a> {
    /// How an error message shows the value: small scalars in full,
    /// containers and long strings by their kind.
    pub fn describe(&self) -> String {
        match self {
            Field::Null => "null".into(),
            Field::Bool(b) => b.to_string(),
            Field::Int(i) => i.to_string(),
            Field::Float(f) => format!("{f:?}"),
            Field::Str(s) => quote(s),
            Field::List(_) => "an array".into(),
            Field::Object => "an object".into(),
            Field::Bytes => "binary data".into(),
            Field::Other(kind) => kind.to_string(),
        }
    }

    /// The string, or a PF400 error saying `{field} must be {expected}`.
    pub(crate) fn into_str(self, field: &str, expected: &str) -> Result<Cow<'a, str>, PfError> {
        match self {
            Field::Str(s) => Ok(s),
            other => Err(bad_request(format!("{field} must be {expected}, got {}", other.describe()))),
        }
    }

    /// The value as a `u64`, if it is an integer in range.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match *self {
            Field::Int(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Self {
        Field::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Field<'_> {
    fn from(s: String) -> Self {
        Field::Str(Cow::Owned(s))
    }
}

impl From<i64> for Field<'_> {
    fn from(i: i64) -> Self {
        Field::Int(i.into())
    }
}

impl From<u64> for Field<'_> {
    fn from(i: u64) -> Self {
        Field::Int(i.into())
    }
}

impl From<bool> for Field<'_> {
    fn from(b: bool) -> Self {
        Field::Bool(b)
    }
}

impl<'a> From<&'a Value> for Field<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Field::Null,
            Value::Bool(b) => Field::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Field::Int(i.into()),
                (None, Some(u)) => Field::Int(u.into()),
                _ => Field::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Field::Str(Cow::Borrowed(s)),
            Value::Array(items) => Field::List(items.iter().map(Field::from).collect()),
            Value::Object(_) => Field::Object,
        }
    }
}

/// The fields of a packet as a submitter gave them. Absent fields take the
/// protocol's defaults; [`into_packet`](Self::into_packet) checks the rest.
///
/// ```
/// use packetflow::{Field, PacketParts};
/// let packet = PacketParts {
///     group: Some("df".into()),
///     element: Some("transform".into()),
///     priority: Some(Field::Int(11)),
///     ..Default::default()
/// }
/// .into_packet();
/// assert_eq!(packet.unwrap_err().message, "priority must be an integer 1-10, got 11");
/// ```
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PacketParts<'a> {
    /// The packet id; absent or `null` gives a fresh UUID v4.
    pub id: Option<Field<'a>>,
    /// The group's two-letter code (required).
    pub group: Option<Field<'a>>,
    /// The element name (required).
    pub element: Option<Field<'a>>,
    /// The payload; absent is `null`.
    pub data: Option<Value>,
    /// 1-10; absent or `null` is [`Priority::DEFAULT`].
    pub priority: Option<Field<'a>>,
    /// 1..=86 400 000 ms; absent or `null` is the default timeout.
    pub timeout_ms: Option<Field<'a>>,
    /// A list of packet ids.
    pub dependencies: Option<Field<'a>>,
    /// An object; `pf.*` keys are checked against their reserved types.
    pub metadata: Option<Value>,
}

impl PacketParts<'_> {
    /// Whether nothing but the data is set: every other field absent or
    /// null (which the rules take as absent), no metadata.
    pub fn only_data(&self) -> bool {
        let unset = |field: &Option<Field<'_>>| matches!(field, None | Some(Field::Null));
        unset(&self.id)
            && unset(&self.group)
            && unset(&self.element)
            && unset(&self.priority)
            && unset(&self.timeout_ms)
            && unset(&self.dependencies)
            && self.metadata.is_none()
    }

    /// Checks every field with the rules (and in the words) of the wire
    /// decoder and builds the packet; the error is PF400 and names the
    /// first field that breaks a rule.
    #[inline]
    pub fn into_packet(mut self) -> Result<Packet, PfError> {
        let id = match &self.id {
            None | Some(Field::Null) => PacketId::random(),
            Some(id) => packet_id(id)?,
        };
        self.with_id(id).map_err(|(e, _)| e)
    }

    /// The packet under an id already read (the decoder reads it first, so
    /// that an error about any other field can still name the packet); the
    /// id comes back with the error. The `id` part is not looked at; `data`
    /// and `metadata` are taken, the other parts left in place.
    ///
    /// Every submit and every decoded packet goes through here, so it is
    /// written for speed: the parts stay where the caller put them (each
    /// field is judged in place), the packet is put together once, in the
    /// return slot, and each rule is checked once (`Packet::validate` would
    /// only repeat the timeout and dependency-count checks made here). The
    /// order of the checks is the order of the messages: group, element,
    /// priority, timeout_ms, dependencies, metadata (its type, then its
    /// reserved keys).
    #[inline]
    pub(crate) fn with_id(&mut self, id: PacketId) -> Result<Packet, (PfError, PacketId)> {
        macro_rules! checked {
            ($rule:expr) => {
                match $rule {
                    Ok(value) => value,
                    Err(e) => return Err((e, id)),
                }
            };
        }
        let group = checked!(group_of(self.group.as_ref()));
        let element = checked!(element_of(self.element.as_ref()));
        let priority = checked!(priority_of(self.priority.as_ref()));
        let timeout_ms = checked!(timeout_of(self.timeout_ms.as_ref()));
        let dependencies = match &self.dependencies {
            None | Some(Field::Null) => Vec::new(),
            Some(deps) => checked!(dependency_ids(deps)),
        };
        let metadata = match self.metadata.take() {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                checked!(check_reserved_metadata(&map));
                Some(map)
            }
            Some(other) => return Err((not_an_object(&other), id)),
        };
        Ok(Packet {
            id,
            group,
            element,
            data: self.data.take().unwrap_or(Value::Null),
            priority,
            timeout_ms,
            dependencies,
            metadata,
        })
    }
}

/// The string of a field that must be one, or a PF400 error saying
/// `{field} must be {expected}`.
#[inline]
fn str_of<'f>(field: &'f Field<'_>, name: &str, expected: &str) -> Result<&'f str, PfError> {
    match field {
        Field::Str(s) => Ok(s),
        other => Err(wrong_type(name, expected, other)),
    }
}

/// `{name} must be {expected}, got {what was given}`. Cold: the message is
/// only formatted for a field that breaks its rule.
#[cold]
#[inline(never)]
fn wrong_type(name: &str, expected: &str, given: &Field<'_>) -> PfError {
    bad_request(format!("{name} must be {expected}, got {}", given.describe()))
}

#[cold]
#[inline(never)]
fn missing(name: &str) -> PfError {
    bad_request(format!("{name} is required"))
}

#[cold]
#[inline(never)]
fn not_an_object(metadata: &Value) -> PfError {
    bad_request(format!("metadata must be an object, got {}", describe(metadata)))
}

#[inline]
fn group_of(field: Option<&Field<'_>>) -> Result<Group, PfError> {
    let field = field.ok_or_else(|| missing("group"))?;
    Group::parse(str_of(field, "group", "one of cf, df, ed, co, mc, rm")?)
}

#[inline]
fn element_of(field: Option<&Field<'_>>) -> Result<Element, PfError> {
    let field = field.ok_or_else(|| missing("element"))?;
    Element::new(str_of(field, "element", "1-64 characters of [A-Za-z0-9_.-]")?)
}

#[inline]
pub(crate) fn priority_of(field: Option<&Field<'_>>) -> Result<Priority, PfError> {
    const EXPECTED: &str = "an integer 1-10";
    match field {
        None | Some(Field::Null) => Ok(Priority::DEFAULT),
        // Out of i64's range is out of 1-10 too: say what was given.
        Some(given @ Field::Int(i)) => match i64::try_from(*i) {
            Ok(i) => Priority::new(i),
            Err(_) => Err(wrong_type("priority", EXPECTED, given)),
        },
        Some(other) => Err(wrong_type("priority", EXPECTED, other)),
    }
}

#[inline]
pub(crate) fn timeout_of(field: Option<&Field<'_>>) -> Result<Option<u64>, PfError> {
    match field {
        None | Some(Field::Null) => Ok(None),
        Some(given) => match given.as_u64() {
            Some(t) => check_timeout(t).map(|()| Some(t)),
            None => Err(wrong_type("timeout_ms", "a positive integer <= 86400000", given)),
        },
    }
}

/// A packet id field: a string of 1-128 bytes.
pub(crate) fn packet_id(field: &Field<'_>) -> Result<PacketId, PfError> {
    PacketId::new(str_of(field, "id", "a string of 1-128 bytes")?)
}

/// The `dependencies` field (not null): a list of at most 64 packet ids,
/// counted before any is read.
fn dependency_ids(field: &Field<'_>) -> Result<Vec<PacketId>, PfError> {
    let Field::List(items) = field else {
        return Err(wrong_type("dependencies", "an array of packet ids", field));
    };
    if items.len() > MAX_DEPENDENCIES {
        return Err(bad_request(format!(
            "dependencies must list at most 64 packet ids, got {}",
            items.len()
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = || format!("dependencies[{i}]");
        let s = match item {
            Field::Str(s) => s,
            other => return Err(wrong_type(&field(), "a packet id string", other)),
        };
        ids.push(PacketId::checked(s, field)?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts() -> PacketParts<'static> {
        PacketParts { group: Some("df".into()), element: Some("t".into()), ..Default::default() }
    }

    fn error(p: PacketParts<'_>) -> String {
        p.into_packet().unwrap_err().message
    }

    #[test]
    fn defaults_fill_absent_and_null_fields() {
        let p = PacketParts { id: Some(Field::Null), priority: Some(Field::Null), ..parts() }
            .into_packet()
            .unwrap();
        assert_eq!(p.priority, Priority::DEFAULT);
        assert_eq!(p.timeout_ms, None);
        assert_eq!(p.data, Value::Null);
        assert_eq!(p.id.as_str().len(), 36);
        assert!(p.dependencies.is_empty() && p.metadata.is_none());
    }

    #[test]
    fn every_field_is_taken() {
        let meta = json!({"k": 1});
        let deps = json!(["a", "b"]);
        let p = PacketParts {
            id: Some("p1".into()),
            data: Some(json!([1, 2])),
            priority: Some(9i64.into()),
            timeout_ms: Some(250u64.into()),
            dependencies: Some(Field::from(&deps)),
            metadata: Some(meta.clone()),
            ..parts()
        }
        .into_packet()
        .unwrap();
        assert_eq!((p.id.as_str(), p.priority.get(), p.timeout_ms), ("p1", 9, Some(250)));
        assert_eq!(p.dependencies.iter().map(PacketId::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.metadata, meta.as_object().cloned());
        assert_eq!(p.data, json!([1, 2]));
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(error(PacketParts { group: None, ..parts() }), "group is required");
        assert_eq!(
            error(PacketParts { element: Some(Field::Null), ..parts() }),
            "element must be 1-64 characters of [A-Za-z0-9_.-], got null"
        );
        assert_eq!(
            error(PacketParts { group: Some(Field::Int(3)), ..parts() }),
            "group must be one of cf, df, ed, co, mc, rm, got 3"
        );
        assert_eq!(
            error(PacketParts { priority: Some("high".into()), ..parts() }),
            "priority must be an integer 1-10, got \"high\""
        );
        assert_eq!(
            error(PacketParts { priority: Some(Field::Other("a function".into())), ..parts() }),
            "priority must be an integer 1-10, got a function"
        );
        assert_eq!(
            error(PacketParts { priority: Some(Field::Int(1 << 80)), ..parts() }),
            "priority must be an integer 1-10, got 1208925819614629174706176"
        );
        assert_eq!(
            error(PacketParts { timeout_ms: Some(Field::Int(-1)), ..parts() }),
            "timeout_ms must be a positive integer <= 86400000, got -1"
        );
        assert_eq!(
            error(PacketParts { timeout_ms: Some(Field::Float(1.5)), ..parts() }),
            "timeout_ms must be a positive integer <= 86400000, got 1.5"
        );
        assert_eq!(
            error(PacketParts { dependencies: Some("a".into()), ..parts() }),
            "dependencies must be an array of packet ids, got \"a\""
        );
        let deps = Field::List(vec!["ok".into(), "".into()]);
        assert_eq!(
            error(PacketParts { dependencies: Some(deps), ..parts() }),
            "dependencies[1] must be a string of 1-128 bytes, got 0 bytes"
        );
        let deps = Field::List(vec!["ok".into(), Field::Int(7)]);
        assert_eq!(
            error(PacketParts { dependencies: Some(deps), ..parts() }),
            "dependencies[1] must be a packet id string, got 7"
        );
        assert_eq!(
            error(PacketParts { metadata: Some(json!([1])), ..parts() }),
            "metadata must be an object, got an array"
        );
        assert_eq!(
            error(PacketParts { metadata: Some(json!({"pf.hops": -1})), ..parts() }),
            "metadata[\"pf.hops\"] must be a non-negative integer, got -1"
        );
        assert_eq!(
            error(PacketParts { id: Some("x".repeat(129).into()), ..parts() }),
            "id must be a string of 1-128 bytes, got 129 bytes"
        );
        assert_eq!(
            error(PacketParts { id: Some(Field::Bool(true)), ..parts() }),
            "id must be a string of 1-128 bytes, got true"
        );
    }

    #[test]
    fn the_first_broken_rule_in_field_order_is_reported() {
        // group, element, priority, timeout_ms, dependencies, metadata (its
        // type, then its reserved keys): each error below is the first of
        // the broken rules that follow it.
        let mut p = PacketParts {
            group: Some("zz".into()),
            element: Some("no space".into()),
            priority: Some(Field::Int(0)),
            timeout_ms: Some(Field::Int(0)),
            dependencies: Some(Field::List(vec![Field::Null])),
            metadata: Some(json!({"pf.hops": "x"})),
            ..parts()
        };
        let expected = [
            "group must be one of cf, df, ed, co, mc, rm, got \"zz\"",
            "element must be 1-64 characters of [A-Za-z0-9_.-], got \"no space\"",
            "priority must be an integer 1-10, got 0",
            "timeout_ms must be a positive integer <= 86400000, got 0",
            "dependencies[0] must be a packet id string, got null",
            "metadata[\"pf.hops\"] must be a non-negative integer, got \"x\"",
        ];
        for (i, message) in expected.iter().enumerate() {
            assert_eq!(error(p.clone()), *message);
            match i {
                0 => p.group = Some("df".into()),
                1 => p.element = Some("t".into()),
                2 => p.priority = None,
                3 => p.timeout_ms = None,
                4 => p.dependencies = None,
                _ => p.metadata = None,
            }
        }
        assert!(p.into_packet().is_ok());
        // A metadata of the wrong type comes after the dependencies too.
        let p = || PacketParts {
            dependencies: Some(Field::List(vec![Field::Null])),
            metadata: Some(json!(3)),
            ..parts()
        };
        assert_eq!(error(p()), "dependencies[0] must be a packet id string, got null");
        assert_eq!(error(PacketParts { dependencies: None, ..p() }), "metadata must be an object, got 3");
    }

    #[test]
    fn too_many_dependencies_are_counted_before_any_is_read() {
        let deps = Field::List((0..65).map(|_| Field::Null).collect());
        assert_eq!(
            error(PacketParts { dependencies: Some(deps), ..parts() }),
            "dependencies must list at most 64 packet ids, got 65"
        );
    }
}
