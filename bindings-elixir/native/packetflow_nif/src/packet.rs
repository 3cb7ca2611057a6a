//! Building a core [`Packet`] from the map given to `submit`.
//!
//! Two kinds of mistakes are told apart. A field of the wrong Elixir type
//! (a tuple in `data`, a string `priority`, an unknown key) is a bug in the
//! caller's code and raises `ArgumentError` naming the field. A value of the
//! right type that breaks a protocol rule (priority 11, group "zz") is what
//! a peer could send too: the core's validation answers it PF400, exactly
//! as it would on the wire.

use packetflow::{Element, Group, Packet, PacketId, PacketResult, Priority, Value};
use rustler::{MapIterator, Term, TermType};

use crate::{atoms, convert};

const FIELDS: &str = ":group, :element, :data, :id, :priority, :timeout_ms, :dependencies, :metadata";

#[derive(Default)]
struct Fields<'a> {
    group: Option<Term<'a>>,
    element: Option<Term<'a>>,
    data: Option<Term<'a>>,
    id: Option<Term<'a>>,
    priority: Option<Term<'a>>,
    timeout_ms: Option<Term<'a>>,
    dependencies: Option<Term<'a>>,
    metadata: Option<Term<'a>>,
}

/// A packet, or the PF400 result a broken protocol rule earns.
type Built = Result<Packet, PacketResult>;

fn name_of(term: Term, field: &str) -> Result<String, String> {
    match term.get_type() {
        TermType::Binary => term.decode::<String>().map_err(|_| format!("{field} must be a UTF-8 string")),
        TermType::Atom => Ok(term.atom_to_string().unwrap_or_default()),
        _ => Err(format!("{field} must be a string, got {}", article(convert::kind_of(term)))),
    }
}

fn article(kind: &str) -> String {
    match kind.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

fn present(term: Option<Term>) -> Option<Term> {
    term.filter(|t| *t != atoms::nil().to_term(t.get_env()))
}

const KNOWN: [&str; 8] =
    ["group", "element", "data", "id", "priority", "timeout_ms", "dependencies", "metadata"];

/// The message naming the first key of `map` that is not a packet field.
fn unknown_field(map: Term) -> String {
    for (key, _) in MapIterator::new(map).into_iter().flatten() {
        if key.get_type() != TermType::Atom {
            return format!("packet fields are atoms ({FIELDS}), got {}", article(convert::kind_of(key)));
        }
        let name = key.atom_to_string().unwrap_or_default();
        if !KNOWN.contains(&name.as_str()) {
            return format!("unknown packet field :{name} (known: {FIELDS})");
        }
    }
    format!("a packet has only the fields {FIELDS}")
}

pub fn build(term: Term) -> Result<Built, String> {
    if term.get_type() != TermType::Map {
        return Err(format!(
            "a packet must be a map or keyword list with {FIELDS}, got {}",
            article(convert::kind_of(term))
        ));
    }
    // Known keys are looked up directly; only a map with more keys than
    // were found is walked, to name the unknown one.
    let env = term.get_env();
    let get = |key: rustler::Atom| term.map_get(key.to_term(env)).ok();
    let f = Fields {
        group: get(atoms::group()),
        element: get(atoms::element()),
        data: get(atoms::data()),
        id: get(atoms::id()),
        priority: get(atoms::priority()),
        timeout_ms: get(atoms::timeout_ms()),
        dependencies: get(atoms::dependencies()),
        metadata: get(atoms::metadata()),
    };
    let found = [f.group, f.element, f.data, f.id, f.priority, f.timeout_ms, f.dependencies, f.metadata]
        .iter()
        .filter(|t| t.is_some())
        .count();
    if term.map_size().unwrap_or(0) > found {
        return Err(unknown_field(term));
    }

    let group = name_of(present(f.group).ok_or("the packet needs a :group")?, "group")?;
    let element = name_of(present(f.element).ok_or("the packet needs an :element")?, "element")?;
    let data = match f.data {
        Some(t) => convert::to_value(t).map_err(|bad| bad.describe("data"))?,
        None => Value::Null,
    };
    let id = match present(f.id) {
        Some(t) => Some(name_of(t, "id")?),
        None => None,
    };
    let priority = match present(f.priority) {
        Some(t) => Some(
            t.decode::<i64>()
                .map_err(|_| format!("priority must be an integer, got {}", article(convert::kind_of(t))))?,
        ),
        None => None,
    };
    let timeout_ms = match present(f.timeout_ms) {
        Some(t) => Some(t.decode::<u64>().map_err(|_| {
            format!("timeout_ms must be a non-negative integer, got {}", article(convert::kind_of(t)))
        })?),
        None => None,
    };
    let dependencies = match present(f.dependencies) {
        Some(t) => {
            let items: Vec<Term> = t.decode().map_err(|_| {
                format!("dependencies must be a list of packet ids, got {}", article(convert::kind_of(t)))
            })?;
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                ids.push(name_of(item, &format!("dependencies[{i}]"))?);
            }
            Some(ids)
        }
        None => None,
    };
    let metadata = match present(f.metadata) {
        Some(t) if t.get_type() == TermType::Map => {
            match convert::to_value(t).map_err(|bad| bad.describe("metadata"))? {
                Value::Object(m) => Some(m),
                _ => unreachable!("a map converts to an object"),
            }
        }
        Some(t) => return Err(format!("metadata must be a map, got {}", article(convert::kind_of(t)))),
        None => None,
    };

    // Protocol rules: the core's checks and messages, answered as PF400.
    let checked = (|| {
        let mut packet = Packet::new(Group::parse(&group)?, Element::new(&element)?, data);
        if let Some(id) = &id {
            packet.id = PacketId::new(id)?;
        }
        if let Some(p) = priority {
            packet.priority = Priority::new(p)?;
        }
        if let Some(t) = timeout_ms {
            packet.timeout_ms = Some(t);
        }
        if let Some(deps) = dependencies {
            packet.dependencies = deps.iter().map(|d| PacketId::new(d)).collect::<Result<_, _>>()?;
        }
        packet.metadata = metadata;
        packet.validate()?;
        Ok(packet)
    })();
    Ok(checked.map_err(|e| {
        let id = id.as_deref().and_then(|i| PacketId::new(i).ok()).unwrap_or_else(PacketId::random);
        PacketResult::failure(id, e, 0)
    }))
}
