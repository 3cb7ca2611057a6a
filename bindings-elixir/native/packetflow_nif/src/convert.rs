//! Terms to JSON values and back, walked by hand (no text in between).
//!
//! Maps (string or atom keys), lists, UTF-8 binaries, integers, floats,
//! `true`/`false`/`nil` and other atoms (as strings) cross; anything else is
//! refused with a [`BadValue`] naming its type and where it was.

use std::fmt::Write;

use rustler::{Binary, Encoder, Env, Term, TermType};
use serde_json::{Map, Number, Value};

use crate::atoms;

/// Deepest nesting accepted, the same limit JSON parsers commonly use; it
/// also keeps the walk's recursion well inside a scheduler's stack.
pub const MAX_DEPTH: usize = 128;

enum Segment {
    Key(String),
    Index(usize),
}

/// A value that cannot cross as JSON: what it is and where it was.
pub struct BadValue {
    problem: String,
    /// Innermost segment first (pushed while unwinding).
    path: Vec<Segment>,
}

impl BadValue {
    fn new(problem: impl Into<String>) -> BadValue {
        BadValue { problem: problem.into(), path: Vec::new() }
    }

    fn within(mut self, segment: Segment) -> BadValue {
        self.path.push(segment);
        self
    }

    /// The message of the `ArgumentError`, with the path rooted at `root`
    /// (`data.items[2] is a tuple, ...`).
    pub fn describe(&self, root: &str) -> String {
        let mut path = root.to_owned();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
                Segment::Key(k) if is_identifier(k) => {
                    let _ = write!(path, ".{k}");
                }
                Segment::Key(k) => {
                    let _ = write!(path, "[{k:?}]");
                }
            }
        }
        format!("{path} {}", self.problem)
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn not_json(kind: &str) -> BadValue {
    BadValue::new(format!(
        "is {kind}, which cannot cross as a JSON value (use maps, lists, strings, numbers, booleans or nil)"
    ))
}

/// Converts a term to a JSON value.
///
/// The time this takes is reported to the scheduler
/// (`enif_consume_timeslice`), so that a large value makes the calling
/// process yield sooner instead of overrunning its time slice unseen.
pub fn to_value(term: Term) -> Result<Value, BadValue> {
    let mut work = 0;
    let value = walk(term, 0, &mut work);
    account(term.get_env(), work);
    value
}

/// Roughly how many terms (or KiB of string) take 1% of a 1 ms slice.
const WORK_PER_PERCENT: usize = 300;

fn account(env: Env, work: usize) {
    let percent = work / WORK_PER_PERCENT;
    if percent > 0 {
        rustler::schedule::consume_timeslice(env, percent.min(100) as i32);
    }
}

fn walk(term: Term, depth: usize, work: &mut usize) -> Result<Value, BadValue> {
    *work += 1;
    if depth > MAX_DEPTH {
        return Err(BadValue::new(format!("is nested deeper than {MAX_DEPTH} levels")));
    }
    match term.get_type() {
        TermType::Binary => {
            let s = string_of(term)?;
            *work += s.len() / 1024;
            Ok(Value::String(s))
        }
        TermType::Integer => integer(term),
        TermType::Float => {
            let f: f64 = term.decode().map_err(|_| not_json("a float"))?;
            // The BEAM has no NaN or infinity, so this always succeeds.
            Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
        }
        TermType::Atom => Ok(atom(term)),
        TermType::List => list(term, depth, work),
        TermType::Map => map(term, depth, work),
        TermType::Tuple => Err(not_json("a tuple")),
        TermType::Pid => Err(not_json("a pid")),
        TermType::Ref => Err(not_json("a reference")),
        TermType::Fun => Err(not_json("a function")),
        TermType::Port => Err(not_json("a port")),
        TermType::Unknown => Err(not_json("an unknown kind of term")),
    }
}

fn string_of(term: Term) -> Result<String, BadValue> {
    let binary = Binary::from_term(term).map_err(|_| not_json("a bitstring"))?;
    match std::str::from_utf8(binary.as_slice()) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(BadValue::new(format!(
            "is a binary that is not valid UTF-8 (bad byte at offset {}), which cannot cross as a JSON string",
            e.valid_up_to()
        ))),
    }
}

fn integer(term: Term) -> Result<Value, BadValue> {
    if let Ok(i) = term.decode::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = term.decode::<u64>() {
        return Ok(Value::from(u));
    }
    Err(BadValue::new("is an integer outside the 64-bit range, which cannot cross as a JSON number"))
}

fn atom(term: Term) -> Value {
    if term == atoms::nil().to_term(term.get_env()) {
        Value::Null
    } else if term == atoms::true_().to_term(term.get_env()) {
        Value::Bool(true)
    } else if term == atoms::false_().to_term(term.get_env()) {
        Value::Bool(false)
    } else {
        Value::String(term.atom_to_string().unwrap_or_default())
    }
}

fn list(term: Term, depth: usize, work: &mut usize) -> Result<Value, BadValue> {
    let mut items = Vec::new();
    let mut rest = term;
    loop {
        match rest.list_get_cell() {
            Ok((head, tail)) => {
                let index = items.len();
                items.push(walk(head, depth + 1, work).map_err(|e| e.within(Segment::Index(index)))?);
                rest = tail;
            }
            Err(_) if rest.is_empty_list() => return Ok(Value::Array(items)),
            Err(_) => {
                return Err(not_json("an improper list"));
            }
        }
    }
}

fn map(term: Term, depth: usize, work: &mut usize) -> Result<Value, BadValue> {
    let size = term.map_size().unwrap_or(0);
    let mut object = Map::with_capacity(size);
    let iter = rustler::MapIterator::new(term).ok_or_else(|| not_json("a map"))?;
    for (k, v) in iter {
        let key = match k.get_type() {
            TermType::Binary => string_of(k)?,
            TermType::Atom => k.atom_to_string().unwrap_or_default(),
            _ => {
                return Err(BadValue::new(format!(
                    "has a map key of type {}; keys must be strings or atoms",
                    kind_of(k)
                )))
            }
        };
        let value = walk(v, depth + 1, work).map_err(|e| e.within(Segment::Key(key.clone())))?;
        if object.insert(key.clone(), value).is_some() {
            return Err(BadValue::new(format!(
                "has the key {key:?} twice (once as an atom, once as a string)"
            )));
        }
    }
    Ok(Value::Object(object))
}

/// A short name for a term's type, for error messages.
pub fn kind_of(term: Term) -> &'static str {
    match term.get_type() {
        TermType::Atom => "atom",
        TermType::Binary => "binary",
        TermType::Float => "float",
        TermType::Fun => "function",
        TermType::Integer => "integer",
        TermType::List => "list",
        TermType::Map => "map",
        TermType::Pid => "pid",
        TermType::Port => "port",
        TermType::Ref => "reference",
        TermType::Tuple => "tuple",
        TermType::Unknown => "unknown term",
    }
}

/// Converts a JSON value to a term: objects become maps with string keys,
/// `null` becomes `nil`.
pub fn to_term<'a>(env: Env<'a>, value: &Value) -> Term<'a> {
    match value {
        Value::Null => atoms::nil().encode(env),
        Value::Bool(b) => b.encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(0.0).encode(env)
            }
        }
        Value::String(s) => s.as_str().encode(env),
        Value::Array(items) => {
            let terms: Vec<Term<'a>> = items.iter().map(|v| to_term(env, v)).collect();
            terms.encode(env)
        }
        Value::Object(object) => object_to_term(env, object),
    }
}

/// Converts a JSON object to a map with string keys.
pub fn object_to_term<'a>(env: Env<'a>, object: &Map<String, Value>) -> Term<'a> {
    let mut keys = Vec::with_capacity(object.len());
    let mut values = Vec::with_capacity(object.len());
    for (k, v) in object {
        keys.push(k.as_str().encode(env));
        values.push(to_term(env, v));
    }
    // Keys of a JSON object are distinct, so this cannot fail.
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::nil().encode(env))
}
