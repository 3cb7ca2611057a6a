//! Building a core [`Packet`] from the map given to `submit`: each field's
//! term becomes a [`Field`] (data and metadata a [`Value`]), and the core's
//! [`PacketParts`] judges them, with the wire decoder's rules and words.
//!
//! Only what is not a field's value is refused here, with `ArgumentError`
//! (a bug in the caller's code): a packet that is not a map, a key that is
//! not a packet field, data or metadata that cannot be a JSON value (a tuple
//! inside). A field of the wrong kind or value (priority `"high"` or 11,
//! group `"zz"`, no group) is what a peer could send too: the core answers
//! it PF400, exactly as it would on the wire.

use std::borrow::Cow;

use packetflow::reactor::CallOptions;
use packetflow::{Field, Packet, PacketId, PacketParts, PacketResult, PfError};
use rustler::{Binary, MapIterator, Term, TermType};

use crate::{atoms, convert};

const FIELDS: &str = ":group, :element, :data, :id, :priority, :timeout_ms, :dependencies, :metadata";

const KNOWN: [&str; 8] =
    ["group", "element", "data", "id", "priority", "timeout_ms", "dependencies", "metadata"];

/// A packet, or the PF400 result a broken protocol rule earns.
type Built = Result<Packet, PacketResult>;

/// The packet of `submit`'s `term` (a map), the PF400 result of a field the
/// core refuses, or the `ArgumentError` message of a term that cannot be a
/// packet's parts.
pub fn build(term: Term) -> Result<Built, String> {
    let (parts, given_id) = parts(term)?;
    Ok(parts.into_packet().map_err(|e| failure(given_id, e)))
}

/// The PF400 result of a packet the core refused: it carries the id given,
/// when that was a valid one, else a fresh one (as the wire decoder names
/// a packet it refuses).
pub fn failure(given_id: Option<PacketId>, error: PfError) -> PacketResult {
    PacketResult::failure(given_id.unwrap_or_else(PacketId::random), error, 0)
}

/// The fields of `term` (a map) as the core's unchecked [`PacketParts`],
/// with the packet id given if it is a valid one; or the `ArgumentError`
/// message of a term that cannot be a packet's parts.
pub fn parts<'a>(term: Term<'a>) -> Result<(PacketParts<'a>, Option<PacketId>), String> {
    if term.get_type() != TermType::Map {
        return Err(format!("a packet must be a map or keyword list with {FIELDS}, got {}", kind(term)));
    }
    // Known keys are looked up directly; only a map with more keys than
    // were found is walked, to name the unknown one.
    let env = term.get_env();
    let get = |key: rustler::Atom| term.map_get(key.to_term(env)).ok();
    let group = get(atoms::group());
    let element = get(atoms::element());
    let data = get(atoms::data());
    let id = get(atoms::id());
    let priority = get(atoms::priority());
    let timeout_ms = get(atoms::timeout_ms());
    let dependencies = get(atoms::dependencies());
    let metadata = get(atoms::metadata());
    let found = [group, element, data, id, priority, timeout_ms, dependencies, metadata]
        .iter()
        .filter(|t| t.is_some())
        .count();
    if term.map_size().unwrap_or(0) > found {
        return Err(unknown_field(term));
    }

    let id = id.map(field);
    let given_id = match &id {
        Some(Field::Str(s)) => PacketId::new(s).ok(),
        _ => None,
    };
    let parts = PacketParts {
        id,
        group: group.map(field),
        element: element.map(field),
        data: data.map(|t| convert::to_value(t).map_err(|bad| bad.describe("data"))).transpose()?,
        priority: priority.map(field),
        timeout_ms: timeout_ms.map(field),
        dependencies: dependencies.map(field),
        metadata: metadata
            .map(|t| convert::to_value(t).map_err(|bad| bad.describe("metadata")))
            .transpose()?,
    };
    Ok((parts, given_id))
}

/// The options of a child call, message or tell (`:priority`,
/// `:timeout_ms`; `nil` leaves one unset), judged by the core as the same
/// fields of a packet are (PF400 naming the field); a call's `key`
/// (group, element) is judged first.
pub fn call_options(
    key: Option<(&str, &str)>,
    priority: Term,
    timeout_ms: Term,
) -> Result<CallOptions, PfError> {
    let (priority, timeout_ms) = (field(priority), field(timeout_ms));
    match key {
        Some((group, element)) => CallOptions::for_call(group, element, Some(&priority), Some(&timeout_ms)),
        None => CallOptions::from_fields(Some(&priority), Some(&timeout_ms)),
    }
}

/// A packet field's term as the core's [`Field`]: what it is, unchecked.
fn field(term: Term) -> Field {
    field_of(term, true)
}

/// `items`: whether a list's items are converted (a packet field holds one
/// level of list at most; a nested list is only "an array" to the core).
fn field_of(term: Term, items: bool) -> Field {
    match term.get_type() {
        TermType::Atom => atom(term),
        TermType::Binary => match term.decode::<&str>() {
            Ok(s) => Field::Str(Cow::Borrowed(s)),
            Err(_) if Binary::from_term(term).is_ok() => Field::Bytes,
            Err(_) => Field::Other("a bitstring".into()),
        },
        TermType::Integer => match term.decode::<i128>() {
            Ok(i) => Field::Int(i),
            Err(_) => Field::Other("an integer beyond 128 bits".into()),
        },
        TermType::Float => Field::Float(term.decode().unwrap_or_default()),
        TermType::List if items => list(term),
        TermType::List => Field::List(Vec::new()),
        TermType::Map => Field::Object,
        _ => Field::Other(kind(term).into()),
    }
}

fn atom(term: Term) -> Field {
    let env = term.get_env();
    if term == atoms::nil().to_term(env) {
        Field::Null
    } else if term == atoms::true_().to_term(env) {
        Field::Bool(true)
    } else if term == atoms::false_().to_term(env) {
        Field::Bool(false)
    } else {
        Field::Str(term.atom_to_string().unwrap_or_default().into())
    }
}

fn list(term: Term) -> Field {
    let mut items = Vec::new();
    let mut rest = term;
    while let Ok((head, tail)) = rest.list_get_cell() {
        items.push(field_of(head, false));
        rest = tail;
    }
    if rest.is_empty_list() {
        Field::List(items)
    } else {
        Field::Other("an improper list".into())
    }
}

/// A term's kind with its article, for messages: "a tuple", "an atom".
fn kind(term: Term) -> String {
    let kind = convert::kind_of(term);
    match kind.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// The message naming the first key of `map` that is not a packet field.
fn unknown_field(map: Term) -> String {
    for (key, _) in MapIterator::new(map).into_iter().flatten() {
        if key.get_type() != TermType::Atom {
            return format!("packet fields are atoms ({FIELDS}), got {}", kind(key));
        }
        let name = key.atom_to_string().unwrap_or_default();
        if !KNOWN.contains(&name.as_str()) {
            return format!("unknown packet field :{name} (known: {FIELDS})");
        }
    }
    format!("a packet has only the fields {FIELDS}")
}
