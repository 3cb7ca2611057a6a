//! The keyword arguments of `listen` and `connect`, checked and turned into
//! the core's `ListenOptions` / `ConnectOptions` (for a WebSocket peer or a
//! NATS system alike).
//!
//! Only what a conversion needs is checked here (a path is a `str` or
//! `os.PathLike`, a token a `str`); `tokens` is converted to JSON values and
//! parsed by the core (`TokenSpec::parse_list`), which judges every entry as
//! it judges a tokens file. The core's PF400 reaches Python through the
//! usual error mapping. Messages never quote a token's value.

use std::path::PathBuf;

use packetflow::{Codec, ConnectOptions, KeyStyle, ListenOptions, TokenSpec};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyString};

use crate::{convert, errors, pystr};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".to_owned())
}

/// `None`, or a filesystem path given as `str` or `os.PathLike`.
pub(crate) fn path(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<PathBuf>> {
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

/// `tokens`: `None`, or a list of token dicts, converted to JSON values and
/// checked by the core as a tokens file is (messages name `tokens[i].field`,
/// never a token's value).
fn tokens(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<TokenSpec>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(Vec::new()) };
    let list = convert::to_value(value, "tokens")?;
    TokenSpec::parse_list(&list, KeyStyle::Snake).map_err(|e| errors::to_pyerr(value.py(), &e))
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

/// `None`, or a `str` (`what` names it in the error).
fn optional_text(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<String>> {
    value.filter(|v| !v.is_none()).map(|v| text(v, what)).transpose()
}

/// A `bool` keyword argument (`name` names it in the error).
fn flag(value: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    value
        .extract::<bool>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be bool, got {}", type_name(value))))
}

/// `None`, or a number of milliseconds (an `int` from 0 up).
fn millis(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    if !value.is_instance_of::<PyInt>() || value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!("{name} must be int, got {}", type_name(value))));
    }
    value.extract::<u64>().map(Some).map_err(|_| {
        let shown = value.str().map(|s| s.to_string()).unwrap_or_default();
        PyValueError::new_err(format!("{name} must be a number of milliseconds from 0 up, got {shown}"))
    })
}

/// The keyword arguments of `connect` and `connect_sync` (`method`, named
/// in the error for a keyword it does not take) as the core's options: this
/// list is the one place that names them. Which of them apply to the URL
/// (WebSocket or NATS), and their values, are the core's to judge (PF400
/// naming the argument).
pub(crate) fn connect(method: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<ConnectOptions> {
    let mut options = ConnectOptions { key_style: KeyStyle::Snake, ..ConnectOptions::default() };
    let Some(kwargs) = kwargs else { return Ok(options) };
    for (key, value) in kwargs.iter() {
        let key =
            key.cast_into::<PyString>().map_err(|_| PyTypeError::new_err("keywords must be strings"))?;
        let (name, given) = (pystr::as_str(&key)?, Some(&value));
        match name {
            "msgpack" => options.codec = if flag(&value, name)? { Codec::MsgPack } else { Codec::Json },
            "token" => options.token = optional_text(given, name)?,
            "tls_ca" => options.tls_ca = path(given, name)?,
            "namespace" => options.namespace = optional_text(given, name)?,
            "name" => options.name = optional_text(given, name)?,
            "user" => options.user = optional_text(given, name)?,
            "password" => options.password = optional_text(given, name)?,
            "nkey_seed" => options.nkey_seed = optional_text(given, name)?,
            "credentials_file" => options.credentials_file = path(given, name)?,
            "tls_cert" => options.tls_cert = path(given, name)?,
            "tls_key" => options.tls_key = path(given, name)?,
            "require_tls" => options.require_tls = flag(&value, name)?,
            "connect_timeout_ms" => options.connect_timeout_ms = millis(&value, name)?,
            "membership" => options.membership = flag(&value, name)?,
            "membership_heartbeat_ms" => options.membership_heartbeat_ms = millis(&value, name)?,
            "actor_store" => options.actor_store = flag(&value, name)?,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "{method}() got an unexpected keyword argument '{other}'"
                )))
            }
        }
    }
    Ok(options)
}
