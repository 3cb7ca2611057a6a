//! An element's input, read field by field: every error is PF400 naming
//! the element and the field.

use serde_json::{Map, Value};

use super::step::{kind, Step};
use crate::error::{ErrorCode, PfError};

/// The input object of the element `key` (as `cf:seq`).
pub(crate) struct Args<'a> {
    key: &'static str,
    map: &'a Map<String, Value>,
}

/// Most items, steps or iterations one element takes (docs/stdlib.md).
pub(crate) const MAX_ITEMS: u64 = 10_000;

impl<'a> Args<'a> {
    /// `data` as the input object of `key`.
    pub(crate) fn of(key: &'static str, data: &'a Value) -> Result<Args<'a>, PfError> {
        match data {
            Value::Object(map) => Ok(Args { key, map }),
            other => Err(PfError::new(
                ErrorCode::BadRequest,
                format!("{key}: data must be an object, got {}", kind(other)),
            )),
        }
    }

    /// PF400: `field` is at fault, `why`.
    pub(crate) fn bad(&self, field: &str, why: impl std::fmt::Display) -> PfError {
        PfError::new(ErrorCode::BadRequest, format!("{}: {field} {why}", self.key))
    }

    /// The member `field`, if given (null counts as not given).
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        member(self.map, field).filter(|v| !v.is_null())
    }

    pub(crate) fn required(&self, field: &str) -> Result<&'a Value, PfError> {
        self.get(field).ok_or_else(|| self.bad(field, "is required"))
    }

    /// A required string of 1-`max_len` bytes.
    pub(crate) fn text(&self, field: &str, max_len: usize) -> Result<&'a str, PfError> {
        match self.required(field)? {
            Value::String(s) if !s.is_empty() && s.len() <= max_len => Ok(s),
            Value::String(s) => {
                Err(self.bad(field, format!("must be a string of 1-{max_len} bytes, got {} bytes", s.len())))
            }
            other => Err(self.bad(field, format!("must be a string, got {}", kind(other)))),
        }
    }

    pub(crate) fn array(&self, field: &str) -> Result<&'a Vec<Value>, PfError> {
        match self.required(field)? {
            Value::Array(items) if items.len() as u64 <= MAX_ITEMS => Ok(items),
            Value::Array(items) => {
                Err(self.bad(field, format!("may hold at most {MAX_ITEMS} items, got {}", items.len())))
            }
            other => Err(self.bad(field, format!("must be an array, got {}", kind(other)))),
        }
    }

    pub(crate) fn step(&self, field: &str) -> Result<Step, PfError> {
        Step::parse(self.required(field)?, format_args!("{}: {field}", self.key))
    }

    pub(crate) fn optional_step(&self, field: &str) -> Result<Option<Step>, PfError> {
        self.get(field).map(|v| Step::parse(v, format_args!("{}: {field}", self.key))).transpose()
    }

    /// A non-empty array of steps.
    pub(crate) fn steps(&self, field: &str) -> Result<Vec<Step>, PfError> {
        let items = self.array(field)?;
        if items.is_empty() {
            return Err(self.bad(field, "must hold at least one step"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| Step::parse(v, format_args!("{}: {field}[{i}]", self.key)))
            .collect()
    }

    /// An integer in `min..=max`, if given.
    pub(crate) fn int_in(&self, field: &str, min: u64, max: u64) -> Result<Option<u64>, PfError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| self.bad(field, format!("must be an integer {min}-{max}, got {v}"))),
        }
    }

    pub(crate) fn bool(&self, field: &str) -> Result<bool, PfError> {
        match self.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.bad(field, format!("must be a boolean, got {}", kind(other)))),
        }
    }

    /// One of `choices`, if given.
    pub(crate) fn choice(
        &self,
        field: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, PfError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => {
                choices.iter().find(|c| **c == s).copied().map(Some).ok_or_else(|| {
                    self.bad(field, format!("must be one of {}, got {s:?}", choices.join(", ")))
                })
            }
            Some(other) => Err(self.bad(field, format!("must be a string, got {}", kind(other)))),
        }
    }
}

/// The member `name` of `map`. An element's input has a handful of
/// members: comparing their names costs less than hashing `name` with the
/// map's SipHash, which a lookup does first.
pub(crate) fn member<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    const SCAN_UP_TO: usize = 8;
    if map.len() <= SCAN_UP_TO {
        map.iter().find_map(|(k, v)| (k == name).then_some(v))
    } else {
        map.get(name)
    }
}

/// JSON truthiness as the standard elements read it: `false`, `null`, 0,
/// `""`, `[]` and `{}` are false; everything else is true.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A failure as an element reports it per item or call:
/// `{"code", "message"}`.
pub(crate) fn error_value(error: &PfError) -> Value {
    serde_json::json!({"code": error.code, "message": error.message})
}

impl Args<'_> {
    /// How many members the input object has (null ones too): an element
    /// whose input holds only the fields it requires can skip looking for
    /// the others.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
