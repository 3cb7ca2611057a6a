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

/// The keyword arguments of `connect` (and `connect_sync`), as pyo3 hands
/// them over: `None` for one not given.
pub(crate) struct ConnectArgs<'a, 'py> {
    pub(crate) msgpack: bool,
    pub(crate) token: Option<&'a Bound<'py, PyAny>>,
    pub(crate) tls_ca: Option<&'a Bound<'py, PyAny>>,
    pub(crate) namespace: Option<&'a Bound<'py, PyAny>>,
    pub(crate) name: Option<&'a Bound<'py, PyAny>>,
    pub(crate) user: Option<&'a Bound<'py, PyAny>>,
    pub(crate) password: Option<&'a Bound<'py, PyAny>>,
    pub(crate) nkey_seed: Option<&'a Bound<'py, PyAny>>,
    pub(crate) credentials_file: Option<&'a Bound<'py, PyAny>>,
    pub(crate) tls_cert: Option<&'a Bound<'py, PyAny>>,
    pub(crate) tls_key: Option<&'a Bound<'py, PyAny>>,
    pub(crate) require_tls: bool,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) membership: bool,
    pub(crate) membership_heartbeat_ms: Option<u64>,
    pub(crate) actor_store: bool,
}

/// `None`, or a `str` (`what` names it in the error).
fn optional_text(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<String>> {
    value.filter(|v| !v.is_none()).map(|v| text(v, what)).transpose()
}

/// The keyword arguments of `connect` as the core's options. Which of them
/// apply to the URL (WebSocket or NATS), and their values, are the core's
/// to judge (PF400 naming the argument).
pub(crate) fn connect(args: ConnectArgs<'_, '_>) -> PyResult<ConnectOptions> {
    Ok(ConnectOptions {
        codec: if args.msgpack { Codec::MsgPack } else { Codec::Json },
        token: optional_text(args.token, "token")?,
        tls_ca: path(args.tls_ca, "tls_ca")?,
        namespace: optional_text(args.namespace, "namespace")?,
        name: optional_text(args.name, "name")?,
        user: optional_text(args.user, "user")?,
        password: optional_text(args.password, "password")?,
        nkey_seed: optional_text(args.nkey_seed, "nkey_seed")?,
        credentials_file: path(args.credentials_file, "credentials_file")?,
        tls_cert: path(args.tls_cert, "tls_cert")?,
        tls_key: path(args.tls_key, "tls_key")?,
        require_tls: args.require_tls,
        connect_timeout_ms: args.connect_timeout_ms,
        membership: args.membership,
        membership_heartbeat_ms: args.membership_heartbeat_ms,
        actor_store: args.actor_store,
        key_style: KeyStyle::Snake,
    })
}
