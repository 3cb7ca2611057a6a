//! The keyword arguments of `listen` and `connect`, checked and turned into
//! the core's `ListenOptions` / `ConnectOptions`.
//!
//! Only shapes are checked here (a path is a `str` or `os.PathLike`, a
//! token a `str`, `tokens` a list of dicts with known keys); what a value
//! means (token length, patterns, files) is the core's to judge, and its
//! PF400 reaches Python through the usual error mapping. Messages never
//! quote a token's value, only its position and type.

use std::path::PathBuf;

use packetflow::{Codec, ConnectOptions, ListenOptions, TokenSpec};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMapping, PyString};

use crate::pystr;

/// The keys a token's dict may have.
const TOKEN_KEYS: [&str; 5] = ["name", "token", "token_sha256", "submit", "serve"];

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".to_owned())
}

/// `None`, or a filesystem path given as `str` or `os.PathLike`.
fn path(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<PathBuf>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    // `bytes` would pass os.fspath but is not text: refused with the rest.
    if value.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!("{name} must be a str or os.PathLike, got bytes")));
    }
    value.extract::<PathBuf>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!("{name} must be a str or os.PathLike, got {}", type_name(value)))
    })
}

/// A `str` value (`what` names it in the error); the type only is shown,
/// never the value, since it may be a secret.
fn text(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(s) => Ok(pystr::as_str(s)?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!("{what} must be str, got {}", type_name(value)))),
    }
}

/// A list of patterns (any iterable of `str` but a `str` itself).
fn patterns(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!("{what} must be a list of patterns, got str")));
    }
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a list of patterns, got {}", type_name(value)))
    })?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        out.push(text(&item?, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// One entry of `tokens`: a mapping with the keys of [`TOKEN_KEYS`].
fn token_spec(entry: &Bound<'_, PyAny>, at: &str) -> PyResult<TokenSpec> {
    let Ok(mapping) = entry.cast::<PyMapping>() else {
        return Err(PyTypeError::new_err(format!(
            "{at} must be a dict (name, token or token_sha256, submit, serve), got {}",
            type_name(entry)
        )));
    };
    let mut spec = TokenSpec::default();
    let mut named = false;
    for item in mapping.items()?.iter() {
        let (key, value) = item.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
        let key = match key.cast::<PyString>() {
            Ok(k) => pystr::as_str(k)?.to_owned(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!("{at} has a {} key; keys are str", type_name(&key))))
            }
        };
        let what = format!("{at}[{key:?}]");
        match key.as_str() {
            "name" => {
                spec.name = text(&value, &what)?;
                named = true;
            }
            "token" if !value.is_none() => spec.token = Some(text(&value, &what)?),
            "token_sha256" if !value.is_none() => spec.token_sha256 = Some(text(&value, &what)?),
            "token" | "token_sha256" => {}
            "submit" => spec.submit = patterns(&value, &what)?,
            "serve" => spec.serve = patterns(&value, &what)?,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "{at} has an unknown key {key:?}; expected {}",
                    TOKEN_KEYS.join(", ")
                )))
            }
        }
    }
    if !named {
        return Err(PyValueError::new_err(format!("{at} has no \"name\"")));
    }
    Ok(spec)
}

/// `tokens`: `None` or a list (any iterable but a `str` or a single dict)
/// of token dicts.
fn tokens(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<TokenSpec>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(Vec::new()) };
    if value.is_instance_of::<PyString>() || value.cast::<PyMapping>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "tokens must be a list of dicts, got {}",
            type_name(value)
        )));
    }
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("tokens must be a list of dicts, got {}", type_name(value)))
    })?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        out.push(token_spec(&item?, &format!("tokens[{i}]"))?);
    }
    Ok(out)
}

/// The keyword arguments of `listen` as the core's options.
pub(crate) fn listen(
    auth_file: Option<&Bound<'_, PyAny>>,
    tokens_arg: Option<&Bound<'_, PyAny>>,
    tls_cert: Option<&Bound<'_, PyAny>>,
    tls_key: Option<&Bound<'_, PyAny>>,
) -> PyResult<ListenOptions> {
    Ok(ListenOptions {
        auth_file: path(auth_file, "auth_file")?,
        tokens: tokens(tokens_arg)?,
        tls_cert: path(tls_cert, "tls_cert")?,
        tls_key: path(tls_key, "tls_key")?,
    })
}

/// The keyword arguments of `connect` as the core's options.
pub(crate) fn connect(
    msgpack: bool,
    token: Option<&Bound<'_, PyAny>>,
    tls_ca: Option<&Bound<'_, PyAny>>,
) -> PyResult<ConnectOptions> {
    let token = match token.filter(|t| !t.is_none()) {
        Some(t) => Some(text(t, "token")?),
        None => None,
    };
    Ok(ConnectOptions {
        codec: if msgpack { Codec::MsgPack } else { Codec::Json },
        token,
        tls_ca: path(tls_ca, "tls_ca")?,
    })
}
