//! The keyword arguments of `listen` and `connect`, checked and turned into
//! the core's `ListenOptions` / `ConnectOptions`.
//!
//! Only what a conversion needs is checked here (a path is a `str` or
//! `os.PathLike`, a token a `str`); `tokens` is converted to JSON values and
//! parsed by the core (`TokenSpec::parse_list`), which judges every entry as
//! it judges a tokens file. The core's PF400 reaches Python through the
//! usual error mapping. Messages never quote a token's value.

use std::path::PathBuf;

use packetflow::{Codec, ConnectOptions, KeyStyle, ListenOptions, TokenSpec};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

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
