//! Errors into their JS idiom, in one place: a [`PfError`] becomes a
//! `PacketFlowError` (the class `index.js` defines, with `.code` and
//! `.message`); a value that is not JSON-shaped becomes a `TypeError`, a
//! `BigInt` beyond 64 bits a `RangeError`.

use std::ptr;

use napi::sys;
use packetflow::PfError;

use crate::convert::{ConvertError, Refusal};
use crate::js::{self, NapiResult};

/// `new PacketFlowError(code, message)`: the only way a `PfError` reaches JS.
pub unsafe fn pf_error_to_js(
    env: sys::napi_env,
    class: sys::napi_value,
    error: &PfError,
) -> NapiResult<sys::napi_value> {
    let args = [js::string(env, &error.code)?, js::string(env, &error.message)?];
    let mut out = ptr::null_mut();
    js::check(sys::napi_new_instance(env, class, args.len(), args.as_ptr(), &mut out))?;
    Ok(out)
}

/// Throws `error` as a `PacketFlowError` and returns the error that tells
/// napi-rs an exception is pending.
pub unsafe fn throw_pf_error(env: sys::napi_env, class: sys::napi_value, error: &PfError) -> napi::Error {
    match pf_error_to_js(env, class, error) {
        Ok(value) => {
            sys::napi_throw(env, value);
            napi::Error::from_status(napi::Status::PendingException)
        }
        Err(e) => e,
    }
}

/// Throws a failed conversion: a `TypeError` (or, for a value out of
/// range, a `RangeError`) naming the path from `root`, or the JS exception a
/// getter or `toJSON` already threw.
pub unsafe fn throw_convert_error(env: sys::napi_env, error: ConvertError, root: &str) -> napi::Error {
    match error {
        ConvertError::NotJson { refusal, .. } => {
            let message = error.message(root).unwrap_or_default();
            match refusal {
                Refusal::Type => js::throw_type_error(env, &message),
                Refusal::Range => js::throw_range_error(env, &message),
            }
        }
        ConvertError::Thrown => napi::Error::from_status(napi::Status::PendingException),
        ConvertError::Napi(e) => e,
    }
}

/// The text of a failed conversion, for a handler's PF500 answer: the
/// `TypeError`'s message, or the message of what a getter threw (which is
/// taken, so nothing stays pending).
pub unsafe fn convert_error_text(env: sys::napi_env, error: ConvertError, root: &str) -> String {
    match error {
        ConvertError::NotJson { .. } => error.message(root).unwrap_or_default(),
        ConvertError::Thrown => match js::take_exception(env) {
            Some(thrown) => exception_text(env, thrown),
            None => "the handler's result could not be read".into(),
        },
        ConvertError::Napi(e) => format!("the handler's result could not be read: {e}"),
    }
}

/// `error.message` for an `Error`, else `String(value)`; never throws.
pub unsafe fn exception_text(env: sys::napi_env, value: sys::napi_value) -> String {
    if js::type_of(env, value).ok() == Some(sys::ValueType::napi_object) {
        if let Ok(message) = js::get_named(env, value, c"message") {
            if js::type_of(env, message).ok() == Some(sys::ValueType::napi_string) {
                if let Ok(text) = js::get_string(env, message) {
                    return text;
                }
            }
        }
        js::take_exception(env);
    }
    let mut text = ptr::null_mut();
    if sys::napi_coerce_to_string(env, value, &mut text) == sys::Status::napi_ok {
        if let Ok(s) = js::get_string(env, text) {
            return s;
        }
    }
    js::take_exception(env);
    "a value that cannot be shown was thrown".into()
}
