//! Python objects <-> `serde_json::Value`, walked directly (never through
//! JSON text), and Python objects -> packet [`Field`]s.
//!
//! A value that JSON cannot carry is refused where it is found: the error is
//! a `TypeError` (wrong type) or `ValueError` (right type, value out of
//! range) whose message names the spot, e.g.
//! `data["a"][2]: set is not JSON-serializable`. A packet field is never
//! refused here: [`to_field`] only says what the object is, and the core
//! judges it (`PacketParts`), in the words it uses for a frame.

use std::borrow::Cow;
use std::fmt::Write as _;

use packetflow::{Field, Map, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::pystr;

/// Deeper than this is refused: a self-containing list or dict would
/// otherwise recurse until the stack overflows.
const MAX_DEPTH: usize = 200;

/// One step from a container to an element, for the error's path.
enum Step {
    Key(String),
    Index(usize),
}

/// A conversion failure, with the path collected while unwinding.
pub(crate) struct ConvertError {
    value_error: bool,
    message: String,
    path: Vec<Step>,
}

impl ConvertError {
    fn type_error(message: String) -> Self {
        ConvertError { value_error: false, message, path: Vec::new() }
    }

    fn value_error(message: String) -> Self {
        ConvertError { value_error: true, message, path: Vec::new() }
    }

    fn at(mut self, step: Step) -> Self {
        self.path.push(step);
        self
    }

    /// `root["a"][2]: message`.
    pub(crate) fn describe(&self, root: &str) -> String {
        let mut text = String::from(root);
        for step in self.path.iter().rev() {
            match step {
                Step::Key(k) => {
                    let _ = write!(text, "[{k:?}]");
                }
                Step::Index(i) => {
                    let _ = write!(text, "[{i}]");
                }
            }
        }
        let _ = write!(text, ": {}", self.message);
        text
    }

    /// The Python exception for this failure, the value being called `root`.
    pub(crate) fn into_pyerr(self, root: &str) -> PyErr {
        let text = self.describe(root);
        if self.value_error {
            PyValueError::new_err(text)
        } else {
            PyTypeError::new_err(text)
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".to_owned())
}

/// Converts `obj` to a JSON value; errors name the spot relative to `root`.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Value> {
    walk(obj, 0).map_err(|e| e.into_pyerr(root))
}

/// Like [`to_value`], keeping the unformatted error (for handler results,
/// which become PF500 rather than a Python exception).
pub(crate) fn try_to_value(obj: &Bound<'_, PyAny>) -> Result<Value, ConvertError> {
    walk(obj, 0)
}

fn walk(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ConvertError> {
    // Exact types first: they are what JSON-shaped data almost always is,
    // and an exact check is a pointer comparison.
    if obj.is_exact_instance_of::<PyString>() {
        return string(obj.cast::<PyString>().expect("checked")).map(Value::String);
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy().unwrap_or(false)));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return int(obj);
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return float(obj);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return object(dict, depth);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return array(list.iter(), list.len(), depth);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return array(tuple.iter(), tuple.len(), depth);
    }
    // Subclasses (str enums, IntEnum, ...) carry the value of their base.
    if let Ok(s) = obj.cast::<PyString>() {
        return string(s).map(Value::String);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy().unwrap_or(false)));
    }
    if obj.is_instance_of::<PyInt>() {
        return int(obj);
    }
    if obj.is_instance_of::<PyFloat>() {
        return float(obj);
    }
    Err(ConvertError::type_error(format!("{} is not JSON-serializable", type_name(obj))))
}

fn string(s: &Bound<'_, PyString>) -> Result<String, ConvertError> {
    pystr::as_str(s)
        .map(str::to_owned)
        .map_err(|_| ConvertError::value_error("str is not valid UTF-8 (lone surrogate)".to_owned()))
}

fn int(obj: &Bound<'_, PyAny>) -> Result<Value, ConvertError> {
    if let Ok(i) = obj.extract::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = obj.extract::<u64>() {
        return Ok(Value::from(u));
    }
    let shown = obj.str().map(|s| s.to_string()).unwrap_or_default();
    Err(ConvertError::value_error(format!(
        "int {shown} does not fit in 64 bits and cannot cross as a JSON number"
    )))
}

fn float(obj: &Bound<'_, PyAny>) -> Result<Value, ConvertError> {
    let f: f64 = obj.extract().map_err(|_| ConvertError::type_error("float could not be read".into()))?;
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ConvertError::value_error(format!("float {f} is not allowed in JSON")))
}

fn too_deep() -> ConvertError {
    ConvertError::value_error(format!(
        "nested deeper than {MAX_DEPTH} levels (does the value contain itself?)"
    ))
}

fn object(dict: &Bound<'_, PyDict>, depth: usize) -> Result<Value, ConvertError> {
    if depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            let shown = key.repr().map(|r| r.to_string()).unwrap_or_default();
            return Err(ConvertError::type_error(format!(
                "dict key {shown} is {}, but JSON object keys must be str",
                type_name(&key)
            )));
        };
        let key = string(key)?;
        match walk(&value, depth + 1) {
            Ok(v) => {
                map.insert(key, v);
            }
            Err(e) => return Err(e.at(Step::Key(key))),
        }
    }
    Ok(Value::Object(map))
}

fn array<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    depth: usize,
) -> Result<Value, ConvertError> {
    if depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    let mut out = Vec::with_capacity(len);
    for (i, item) in items.enumerate() {
        out.push(walk(&item, depth + 1).map_err(|e| e.at(Step::Index(i)))?);
    }
    Ok(Value::Array(out))
}

/// Converts a JSON value to the matching Python object.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => object_to_py(py, map)?.into_any(),
    })
}

/// Converts a JSON object to a dict.
pub(crate) fn object_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(PyString::new(py, k), to_py(py, v)?)?;
    }
    Ok(dict)
}

/// A packet field (`group`, `priority`, `dependencies`, ...) as given, for
/// the core to judge: `None` is null, `bool`, `int`, `float` and `str` are
/// themselves, a `list` or `tuple` is a list, a `dict` an object, `bytes` binary
/// data, and anything else is described by its type ("a set").
pub(crate) fn to_field<'a>(obj: &'a Bound<'_, PyAny>) -> Field<'a> {
    match obj.cast::<PyString>() {
        Ok(s) => match pystr::as_str(s) {
            Ok(text) => Field::Str(Cow::Borrowed(text)),
            Err(_) => not_utf8(),
        },
        Err(_) => non_str_field(obj),
    }
}

/// [`to_field`] for an element of a list, which does not outlive the walk.
fn to_owned_field(obj: &Bound<'_, PyAny>) -> Field<'static> {
    match obj.cast::<PyString>() {
        Ok(s) => match pystr::as_str(s) {
            Ok(text) => Field::Str(Cow::Owned(text.to_owned())),
            Err(_) => not_utf8(),
        },
        Err(_) => non_str_field(obj),
    }
}

fn not_utf8() -> Field<'static> {
    Field::Other(Cow::Borrowed("a str that is not valid UTF-8 (lone surrogate)"))
}

fn non_str_field(obj: &Bound<'_, PyAny>) -> Field<'static> {
    if obj.is_none() {
        return Field::Null;
    }
    if obj.is_instance_of::<PyBool>() {
        return Field::Bool(obj.is_truthy().unwrap_or(false));
    }
    if obj.is_instance_of::<PyInt>() {
        return match obj.extract::<i128>() {
            Ok(i) => Field::Int(i),
            // Wider than any field allows: shown as it is.
            Err(_) => Field::Other(Cow::Owned(obj.str().map(|s| s.to_string()).unwrap_or_default())),
        };
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Field::Float(f.value());
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return Field::List(list.iter().map(|item| to_owned_field(&item)).collect());
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return Field::List(tuple.iter().map(|item| to_owned_field(&item)).collect());
    }
    if obj.is_instance_of::<PyDict>() {
        return Field::Object;
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        return Field::Bytes;
    }
    let name = type_name(obj);
    let article =
        if name.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
    Field::Other(Cow::Owned(format!("{article} {name}")))
}
