//! Direct conversion between JS values and the core's `serde_json::Value`,
//! with `JSON.stringify`'s rules where they are safe and a `TypeError`
//! where they would lose data silently.
//!
//! JS → JSON:
//! - `null`, booleans, strings, arrays and objects convert as they are;
//!   an object's own enumerable string keys are read in `JSON.stringify`'s
//!   order, and an object with a `toJSON` method (a `Date`, a `Buffer`)
//!   is converted through it.
//! - Numbers: safe integers (|n| ≤ 2^53 − 1) become JSON integers (`-0` is
//!   `0`), other numbers floats (a double is what the number holds);
//!   `NaN` and `±Infinity` are refused.
//! - A `BigInt` within the 64-bit range (i64 or u64) becomes that exact
//!   integer; one outside it raises a `RangeError` naming its path.
//! - `undefined` is dropped from objects and becomes `null` in arrays and at
//!   the top level, as `JSON.stringify` does.
//! - Functions, symbols, circular references and nesting deeper than
//!   [`MAX_DEPTH`] raise a `TypeError` naming the type and its path in the
//!   value (`data.a[2]: Function is not JSON-serializable`).
//!
//! JSON → JS builds plain objects and arrays; a `"__proto__"` key becomes an
//! own property, as `JSON.parse` makes it, never the prototype. Integers
//! outside the safe range become `BigInt`s with the exact value (a double
//! would round them); safe integers and floats become numbers.
//!
//! Nothing goes through JSON text: each value is walked once.

use std::fmt::Write as _;

use napi::bindgen_prelude::{i64n, JsObjectValue, Null, Object};
use napi::{Env, JsValue, Property, Unknown, ValueType};
use packetflow::Field;
use serde_json::{Map, Number, Value};

use crate::js::{self, NapiResult, StrBuf};

/// Deepest nesting accepted from JS; deeper values are almost certainly
/// runaway structures, and refusing them keeps every later walk (encoding,
/// dropping) far from the stack's limit.
pub const MAX_DEPTH: usize = 512;

/// `Number.MAX_SAFE_INTEGER` (2^53 − 1): the largest integer `n` such that
/// `n` and `n + 1` are both exact doubles. Integers from the wire beyond it
/// arrive as `BigInt`s; numbers beyond it go as floats.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// [`MAX_SAFE_INTEGER`] as an integer, for values from the wire.
const MAX_SAFE_I64: i64 = 9_007_199_254_740_991;

/// One step of the path to the offending part of a value.
pub enum Step {
    Key(String),
    Index(u32),
}

/// Which JS error class a refused value raises.
#[derive(Clone, Copy)]
pub enum Refusal {
    /// Not JSON-shaped (a function, a cycle, `NaN`, ...): `TypeError`.
    Type,
    /// The right type, but a value the wire cannot carry exactly (a
    /// `BigInt` beyond 64 bits): `RangeError`.
    Range,
}

/// Why a JS value could not become JSON.
pub enum ConvertError {
    /// Not JSON-shaped, or out of range: becomes a `TypeError` or a
    /// `RangeError` (`<path>: <what>`).
    NotJson {
        /// Steps from the offending value up to the root, innermost first.
        steps: Vec<Step>,
        what: String,
        /// For a cycle: how many steps from the root the repeated object sits.
        cycle_at: Option<usize>,
        /// The error class it becomes.
        refusal: Refusal,
    },
    /// A JS exception (from a getter or `toJSON`) is pending.
    Thrown,
    /// An N-API call failed for another reason.
    Napi(napi::Error),
}

impl From<napi::Error> for ConvertError {
    fn from(e: napi::Error) -> Self {
        if e.status == napi::Status::PendingException {
            ConvertError::Thrown
        } else {
            ConvertError::Napi(e)
        }
    }
}

fn not_json(what: impl Into<String>) -> ConvertError {
    ConvertError::NotJson { steps: Vec::new(), what: what.into(), cycle_at: None, refusal: Refusal::Type }
}

fn out_of_range(what: String) -> ConvertError {
    ConvertError::NotJson { steps: Vec::new(), what, cycle_at: None, refusal: Refusal::Range }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Writes `root` followed by `steps` (root-first order) in JS notation:
/// `data.a[2]["odd key"]`.
fn write_path<'a>(out: &mut String, root: &str, steps: impl Iterator<Item = &'a Step>) {
    out.push_str(root);
    for step in steps {
        match step {
            Step::Key(k) if is_identifier(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => {
                out.push('[');
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(']');
            }
            Step::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
}

impl ConvertError {
    fn at(mut self, step: Step) -> Self {
        if let ConvertError::NotJson { steps, .. } = &mut self {
            steps.push(step);
        }
        self
    }

    /// The message of the `TypeError` or `RangeError`, with the path rooted
    /// at `root`.
    pub fn message(&self, root: &str) -> Option<String> {
        let ConvertError::NotJson { steps, what, cycle_at, .. } = self else {
            return None;
        };
        let mut out = String::new();
        write_path(&mut out, root, steps.iter().rev());
        out.push_str(": ");
        out.push_str(what);
        if let Some(depth) = cycle_at {
            out.push_str(" (it refers back to ");
            write_path(&mut out, root, steps.iter().rev().take(*depth));
            out.push(')');
        }
        Some(out)
    }
}

/// Converts JS values to JSON values on the JS thread.
pub struct FromJs<'env> {
    env: &'env Env,
    /// The objects being converted, root first, for cycle detection.
    ancestors: Vec<Object<'env>>,
}

/// The key under which a value sits, passed to `toJSON` like
/// `JSON.stringify` does.
#[derive(Clone, Copy)]
enum Key<'env> {
    Root,
    Name(Unknown<'env>),
    Index(u32),
}

impl<'env> FromJs<'env> {
    pub fn new(env: &'env Env) -> Self {
        FromJs { env, ancestors: Vec::new() }
    }

    /// Converts a top-level value (`undefined` becomes `null`).
    pub fn convert(&mut self, value: Unknown<'env>) -> Result<Value, ConvertError> {
        self.ancestors.clear();
        Ok(self.value(value, Key::Root, true)?.unwrap_or(Value::Null))
    }

    /// `None` means "undefined": dropped from objects, `null` elsewhere.
    fn value(
        &mut self,
        value: Unknown<'env>,
        key: Key<'env>,
        to_json: bool,
    ) -> Result<Option<Value>, ConvertError> {
        Ok(Some(match value.get_type()? {
            ValueType::Undefined => return Ok(None),
            ValueType::Null => Value::Null,
            ValueType::Boolean => Value::Bool(js::read_bool(&value)?),
            ValueType::Number => number(js::read_f64(&value)?)?,
            ValueType::String => Value::String(js::read_string(&value)?),
            ValueType::Object => return self.object(js::as_object(&value), key, to_json).map(Some),
            ValueType::BigInt => bigint(&value)?,
            ValueType::Function => return Err(not_json("Function is not JSON-serializable")),
            ValueType::Symbol => return Err(not_json("Symbol is not JSON-serializable")),
            _ => return Err(not_json("External is not JSON-serializable")),
        }))
    }

    fn object(&mut self, value: Object<'env>, key: Key<'env>, to_json: bool) -> Result<Value, ConvertError> {
        let env = self.env;
        let array = value.is_array()?;
        if !array && to_json {
            let method: Unknown<'env> = value.get_c_named_property_unchecked(c"toJSON")?;
            if method.get_type()? == ValueType::Function {
                let arg = match key {
                    Key::Root => js::unknown(env, "")?,
                    Key::Name(name) => name,
                    Key::Index(i) => js::unknown(env, i.to_string())?,
                };
                // A throw stays pending: `Thrown`.
                let out = js::as_function(&method)?.apply(value, arg)?;
                return Ok(self.value(out, key, false)?.unwrap_or(Value::Null));
            }
        }
        for (depth, ancestor) in self.ancestors.iter().enumerate() {
            if env.strict_equals(*ancestor, value)? {
                let kind = if array { "Array" } else { "Object" };
                return Err(ConvertError::NotJson {
                    steps: Vec::new(),
                    what: format!("circular reference ({kind}) is not JSON-serializable"),
                    cycle_at: Some(depth),
                    refusal: Refusal::Type,
                });
            }
        }
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(not_json(format!("nesting deeper than {MAX_DEPTH} levels is not supported")));
        }
        self.ancestors.push(value);
        let out = if array { self.array(value) } else { self.plain_object(value) };
        self.ancestors.pop();
        out
    }

    fn array(&mut self, array: Object<'env>) -> Result<Value, ConvertError> {
        let len = array.get_array_length_unchecked()?;
        let mut items = Vec::with_capacity(len as usize);
        for i in 0..len {
            let item: Unknown<'env> = array.get_element(i)?;
            let converted = self.value(item, Key::Index(i), true).map_err(|e| e.at(Step::Index(i)))?;
            items.push(converted.unwrap_or(Value::Null));
        }
        Ok(Value::Array(items))
    }

    fn plain_object(&mut self, object: Object<'env>) -> Result<Value, ConvertError> {
        let keys = js::own_enumerable_keys(&object)?;
        let len = keys.get_array_length_unchecked()?;
        let mut map = Map::with_capacity(len as usize);
        for i in 0..len {
            let key: Unknown<'env> = keys.get_element(i)?;
            let name = js::read_string(&key)?;
            let item: Unknown<'env> = object.get_property_unchecked(key)?;
            match self.value(item, Key::Name(key), true) {
                Ok(Some(v)) => {
                    map.insert(name, v);
                }
                Ok(None) => {}
                Err(e) => return Err(e.at(Step::Key(name))),
            }
        }
        Ok(Value::Object(map))
    }
}

impl<'env> FromJs<'env> {
    /// Converts `value`, or reads it from `text` when that is its JSON
    /// (see [`parse_text`]).
    pub fn convert_or_text(
        &mut self,
        value: Unknown<'env>,
        text: &Unknown<'_>,
    ) -> Result<Value, ConvertError> {
        match parse_text(text) {
            Some(parsed) => Ok(parsed),
            None => self.convert(value),
        }
    }
}

/// A value's JSON text as index.js hands it over with the value (`jsonText`
/// there makes it only for values it reads exactly as [`FromJs`] would),
/// parsed: one string read and a parse instead of a walk through N-API.
/// `None` when `text` is not a string, or (it never should be) not JSON:
/// the value is then converted.
pub fn parse_text(text: &Unknown<'_>) -> Option<Value> {
    if text.get_type().ok()? != ValueType::String {
        return None;
    }
    serde_json::from_str(&js::read_string(text).ok()?).ok()
}

fn number(n: f64) -> Result<Value, ConvertError> {
    if n.is_nan() {
        return Err(not_json("NaN is not JSON-serializable"));
    }
    if n.is_infinite() {
        let sign = if n > 0.0 { "" } else { "-" };
        return Err(not_json(format!("{sign}Infinity is not JSON-serializable")));
    }
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        // Also turns -0 into 0, as JSON.stringify prints it.
        return Ok(Value::Number(Number::from(n as i64)));
    }
    // Beyond the safe range a number is a double that may already have
    // been rounded: it goes as the float it is (a `BigInt` sends an exact
    // integer).
    Ok(Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null))
}

/// A `BigInt` as the exact 64-bit integer it holds (i64, else u64), or a
/// `RangeError` when it needs more bits.
fn bigint(value: &Unknown<'_>) -> Result<Value, ConvertError> {
    let big = js::read_bigint(value)?;
    if let Some(n) = bigint_to_number(big.sign_bit, &big.words) {
        return Ok(Value::Number(n));
    }
    Err(out_of_range(format!(
        "BigInt {} is outside the range of 64-bit integers ({} to {})",
        shown_bigint(value),
        i64::MIN,
        u64::MAX
    )))
}

/// The integer of a `BigInt`'s sign and 64-bit words (least significant
/// first) when it fits an i64 or a u64.
fn bigint_to_number(negative: bool, words: &[u64]) -> Option<Number> {
    // N-API gives the fewest words that hold the value; zero may come as
    // no word at all.
    let significant = words.iter().rposition(|w| *w != 0).map_or(0, |last| last + 1);
    let magnitude = match significant {
        0 => 0,
        1 => words[0],
        _ => return None,
    };
    if !negative {
        return Some(Number::from(magnitude));
    }
    // -2^63 is the most negative i64.
    (magnitude <= i64::MIN.unsigned_abs()).then(|| Number::from((magnitude as i64).wrapping_neg()))
}

/// The integer of a `BigInt`'s sign and 64-bit words when it fits an i128.
fn bigint_to_i128(negative: bool, words: &[u64]) -> Option<i128> {
    let significant = words.iter().rposition(|w| *w != 0).map_or(0, |last| last + 1);
    if significant > 2 {
        return None;
    }
    let low = words.first().copied().unwrap_or(0) as u128;
    let high = if significant == 2 { words[1] as u128 } else { 0 };
    let magnitude = (high << 64) | low;
    if negative {
        // -2^127 is the most negative i128.
        (magnitude <= i128::MIN.unsigned_abs()).then(|| (magnitude as i128).wrapping_neg())
    } else {
        i128::try_from(magnitude).ok()
    }
}

/// A `BigInt`'s decimal digits for a message (`123n`), shortened when long.
fn shown_bigint(value: &Unknown<'_>) -> String {
    const LONGEST: usize = 40;
    let digits = value.coerce_to_string().and_then(|text| js::read_string(&text.to_unknown()));
    let Ok(digits) = digits else {
        return "(unreadable)".into();
    };
    if digits.len() <= LONGEST {
        return format!("{digits}n");
    }
    let count = digits.trim_start_matches('-').len();
    format!("{}…n ({count} digits)", &digits[..LONGEST / 2])
}

/// A packet field (group, element, id, priority, timeout, dependencies) as
/// the submitter gave it, for the core to judge: `undefined` is an absent
/// field (`None`), anything else the [`Field`] of its JS type. Nothing is
/// checked here: `PacketParts::into_packet` does that, in the words the wire
/// decoder uses. A short string is borrowed from `buf` (the core only reads
/// a field's string, so reading it into the heap first would be wasted).
pub fn field<'b>(value: &Unknown<'_>, buf: &'b mut StrBuf) -> NapiResult<Option<Field<'b>>> {
    match value.get_type()? {
        ValueType::Undefined => Ok(None),
        ValueType::String => Ok(Some(Field::Str(js::read_str(value, buf)?))),
        kind => field_of(value, kind, true).map(Some),
    }
}

/// [`field`] for a field whose string is an error (priority, timeout,
/// dependencies): no buffer, a string is read into the heap.
pub fn owned_field(value: &Unknown<'_>) -> NapiResult<Option<Field<'static>>> {
    match value.get_type()? {
        ValueType::Undefined => Ok(None),
        kind => field_of(value, kind, true).map(Some),
    }
}

/// The [`Field`] of `value`, whose type is `kind`. `items`: whether an
/// array's items are converted (a packet field holds one level of list at
/// most; a nested array is only "an array").
fn field_of(value: &Unknown<'_>, kind: ValueType, items: bool) -> NapiResult<Field<'static>> {
    Ok(match kind {
        ValueType::Undefined | ValueType::Null => Field::Null,
        ValueType::Boolean => Field::Bool(js::read_bool(value)?),
        ValueType::Number => {
            let n = js::read_f64(value)?;
            // A number is an integer where it holds one exactly.
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                Field::Int(n as i128)
            } else {
                Field::Float(n)
            }
        }
        ValueType::String => Field::Str(js::read_string(value)?.into()),
        ValueType::BigInt => {
            let big = js::read_bigint(value)?;
            match bigint_to_i128(big.sign_bit, &big.words) {
                Some(n) => Field::Int(n),
                None => Field::Other("a BigInt beyond 128 bits".into()),
            }
        }
        ValueType::Object if value.is_array()? => {
            let array = js::as_object(value);
            let len = if items { array.get_array_length_unchecked()? } else { 0 };
            let mut list = Vec::with_capacity(len as usize);
            for i in 0..len {
                let item: Unknown = array.get_element(i)?;
                list.push(field_of(&item, item.get_type()?, false)?);
            }
            Field::List(list)
        }
        ValueType::Object if value.is_buffer()? || value.is_typedarray()? || value.is_arraybuffer()? => {
            Field::Bytes
        }
        ValueType::Object => Field::Object,
        ValueType::Function => Field::Other("a function".into()),
        ValueType::Symbol => Field::Other("a symbol".into()),
        _ => Field::Other("an external value".into()),
    })
}

/// The one key that `napi_set_property` would treat as a setter.
const PROTO_KEY: &str = "__proto__";

/// Converts a JSON value to a JS value.
pub fn to_js<'env>(env: &'env Env, value: &Value) -> NapiResult<Unknown<'env>> {
    match value {
        Value::Null => js::unknown(env, Null),
        Value::Bool(b) => js::unknown(env, *b),
        Value::Number(n) => number_to_js(env, n),
        Value::String(s) => js::unknown(env, s.as_str()),
        Value::Array(items) => {
            let mut array = env.create_array(items.len() as u32)?;
            for (i, item) in items.iter().enumerate() {
                array.set(i as u32, to_js(env, item)?)?;
            }
            Ok(array.to_unknown())
        }
        Value::Object(map) => object_to_js(env, map),
    }
}

/// A JSON number as a JS number, or as a `BigInt` for an integer a double
/// would round (|n| > 2^53 − 1).
#[inline]
fn number_to_js<'env>(env: &'env Env, n: &Number) -> NapiResult<Unknown<'env>> {
    if let Some(i) = n.as_i64() {
        if (-MAX_SAFE_I64..=MAX_SAFE_I64).contains(&i) {
            js::unknown(env, i)
        } else {
            js::unknown(env, i64n(i))
        }
    } else if let Some(u) = n.as_u64() {
        // `u64` converts to a `BigInt`.
        js::unknown(env, u)
    } else {
        js::unknown(env, n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Converts a JSON object to a plain JS object.
pub fn object_to_js<'env>(env: &'env Env, map: &Map<String, Value>) -> NapiResult<Unknown<'env>> {
    let mut object = Object::new(env)?;
    for (k, v) in map {
        let key = js::unknown(env, k.as_str())?;
        let item = to_js(env, v)?;
        if k == PROTO_KEY {
            // An own enumerable data property (what `JSON.parse` makes of
            // every key), bypassing the `__proto__` setter.
            object.define_properties(&[Property::new().with_name(env, key)?.with_value(&item)])?;
        } else {
            object.set_property(key, item)?;
        }
    }
    Ok(object.to_unknown())
}
