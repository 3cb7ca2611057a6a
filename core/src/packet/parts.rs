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

use serde_json::{Map, Value};

use super::{
    bad_request, check_timeout, describe, quote, Element, Group, Packet, PacketId, Priority, MAX_DEPENDENCIES,
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
    /// Checks every field with the rules (and in the words) of the wire
    /// decoder and builds the packet; the error is PF400 and names the
    /// first field that breaks a rule.
    pub fn into_packet(mut self) -> Result<Packet, PfError> {
        let id = match self.id.take() {
            None | Some(Field::Null) => PacketId::random(),
            Some(id) => packet_id(id)?,
        };
        self.with_id(id).map_err(|(e, _)| e)
    }

    /// The packet under an id already read (the decoder reads it first, so
    /// that an error about any other field can still name the packet); the
    /// id comes back with the error.
    pub(crate) fn with_id(mut self, id: PacketId) -> Result<Packet, (PfError, PacketId)> {
        let fields = match self.checked_fields() {
            Ok(fields) => fields,
            Err(e) => return Err((e, id)),
        };
        let (group, element, priority, timeout_ms, dependencies, metadata) = fields;
        let packet = Packet {
            id,
            group,
            element,
            data: self.data.unwrap_or(Value::Null),
            priority,
            timeout_ms,
            dependencies,
            metadata,
        };
        match packet.validate() {
            Ok(()) => Ok(packet),
            Err(e) => Err((e, packet.id)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn checked_fields(
        &mut self,
    ) -> Result<(Group, Element, Priority, Option<u64>, Vec<PacketId>, Option<Map<String, Value>>), PfError>
    {
        let group = Group::parse(
            &required(self.group.take(), "group")?.into_str("group", "one of cf, df, ed, co, mc, rm")?,
        )?;
        let element = Element::new(
            &required(self.element.take(), "element")?
                .into_str("element", "1-64 characters of [A-Za-z0-9_.-]")?,
        )?;
        let priority = match self.priority.take() {
            None | Some(Field::Null) => Priority::DEFAULT,
            // Out of i64's range is out of 1-10 too: say what was given.
            Some(Field::Int(i)) => match i64::try_from(i) {
                Ok(i) => Priority::new(i)?,
                Err(_) => return Err(bad_request(format!("priority must be an integer 1-10, got {i}"))),
            },
            Some(other) => {
                return Err(bad_request(format!(
                    "priority must be an integer 1-10, got {}",
                    other.describe()
                )))
            }
        };
        let timeout_ms = match self.timeout_ms.take() {
            None | Some(Field::Null) => None,
            Some(v) => match v.as_u64() {
                Some(t) => Some(check_timeout(t).map(|()| t)?),
                None => {
                    return Err(bad_request(format!(
                        "timeout_ms must be a positive integer <= 86400000, got {}",
                        v.describe()
                    )))
                }
            },
        };
        let dependencies = match self.dependencies.take() {
            None | Some(Field::Null) => Vec::new(),
            Some(Field::List(items)) => dependency_ids(items)?,
            Some(other) => {
                return Err(bad_request(format!(
                    "dependencies must be an array of packet ids, got {}",
                    other.describe()
                )))
            }
        };
        let metadata = match self.metadata.take() {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(bad_request(format!("metadata must be an object, got {}", describe(&other))))
            }
        };
        Ok((group, element, priority, timeout_ms, dependencies, metadata))
    }
}

/// A packet id field: a string of 1-128 bytes.
pub(crate) fn packet_id(field: Field<'_>) -> Result<PacketId, PfError> {
    PacketId::new(&field.into_str("id", "a string of 1-128 bytes")?)
}

fn required<'a>(field: Option<Field<'a>>, name: &str) -> Result<Field<'a>, PfError> {
    field.ok_or_else(|| bad_request(format!("{name} is required")))
}

fn dependency_ids(items: Vec<Field<'_>>) -> Result<Vec<PacketId>, PfError> {
    if items.len() > MAX_DEPENDENCIES {
        return Err(bad_request(format!(
            "dependencies must list at most 64 packet ids, got {}",
            items.len()
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = || format!("dependencies[{i}]");
        let s = item.into_str(&field(), "a packet id string")?;
        ids.push(PacketId::checked(&s, field)?);
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
    fn too_many_dependencies_are_counted_before_any_is_read() {
        let deps = Field::List((0..65).map(|_| Field::Null).collect());
        assert_eq!(
            error(PacketParts { dependencies: Some(deps), ..parts() }),
            "dependencies must list at most 64 packet ids, got 65"
        );
    }
}
