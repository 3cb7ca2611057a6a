//! Errors into their JS idiom, in one place: a [`PfError`] becomes a
//! `PacketFlowError` (the class `index.js` defines, with `.code` and
//! `.message`); a value that is not JSON-shaped becomes a `TypeError`, a
//! `BigInt` beyond 64 bits a `RangeError`.

use napi::bindgen_prelude::{FnArgs, Function, JsObjectValue};
use napi::{Env, JsValue, Unknown, ValueType};
use packetflow::PfError;

use crate::convert::{ConvertError, Refusal};
use crate::js::{self, NapiResult};

/// The `PacketFlowError` class: `new PacketFlowError(code, message)`.
pub type ErrorClass<'env> = Function<'env, FnArgs<(String, String)>, ()>;

/// `new PacketFlowError(code, message)`: the only way a `PfError` reaches JS.
pub fn pf_error_to_js<'env>(class: &ErrorClass<'env>, error: &PfError) -> NapiResult<Unknown<'env>> {
    class.new_instance(FnArgs::from((error.code.clone(), error.message.clone())))
}

/// Throws `error` as a `PacketFlowError` and returns the error that tells
/// napi-rs an exception is pending.
pub fn throw_pf_error(env: &Env, class: &ErrorClass<'_>, error: &PfError) -> napi::Error {
    match pf_error_to_js(class, error).and_then(|value| env.throw(value)) {
        Ok(()) => js::pending(),
        Err(e) => e,
    }
}

/// Throws a `TypeError` with `message`; returns the error that tells napi-rs
/// an exception is pending.
pub fn throw_type_error(env: &Env, message: &str) -> napi::Error {
    match env.throw_type_error(message, None) {
        Ok(()) => js::pending(),
        Err(e) => e,
    }
}

/// Throws a failed conversion: a `TypeError` (or, for a value out of
/// range, a `RangeError`) naming the path from `root`, or the JS exception a
/// getter or `toJSON` already threw.
pub fn throw_convert_error(env: &Env, error: ConvertError, root: &str) -> napi::Error {
    match error {
        ConvertError::NotJson { refusal, .. } => {
            let message = error.message(root).unwrap_or_default();
            let thrown = match refusal {
                Refusal::Type => env.throw_type_error(&message, None),
                Refusal::Range => env.throw_range_error(&message, None),
            };
            match thrown {
                Ok(()) => js::pending(),
                Err(e) => e,
            }
        }
        ConvertError::Thrown => js::pending(),
        ConvertError::Napi(e) => e,
    }
}

/// The text of a failed conversion, for a handler's PF500 answer: the
/// `TypeError`'s message, or the message of what a getter threw (which is
/// taken, so nothing stays pending).
pub fn convert_error_text(env: &Env, error: ConvertError, root: &str) -> String {
    match error {
        ConvertError::NotJson { .. } => error.message(root).unwrap_or_default(),
        ConvertError::Thrown => match js::take_exception(env) {
            Some(thrown) => exception_text(env, &thrown),
            None => "the handler's result could not be read".into(),
        },
        ConvertError::Napi(e) => format!("the handler's result could not be read: {e}"),
    }
}

/// `error.message` for an `Error`, else `String(value)`; never throws.
pub fn exception_text(env: &Env, value: &Unknown<'_>) -> String {
    if value.get_type().ok() == Some(ValueType::Object) {
        let message = js::as_object(value).get_c_named_property_unchecked::<Unknown>(c"message");
        if let Ok(message) = message {
            if message.get_type().ok() == Some(ValueType::String) {
                if let Ok(text) = js::read_string(&message) {
                    return text;
                }
            }
        }
        // A throwing `message` getter: its exception is dropped.
        js::take_exception(env);
    }
    if let Ok(text) = value.coerce_to_string().and_then(|s| js::read_string(&s.to_unknown())) {
        return text;
    }
    js::take_exception(env);
    "a value that cannot be shown was thrown".into()
}
