//! Thin wrappers over the raw N-API calls the converters and the bridge
//! make on the JS thread.
//!
//! The hot paths (value conversion, batch delivery) talk to N-API directly
//! rather than through napi-rs' typed values: a conversion of a small object
//! is a handful of calls, and every avoided wrapper shows in the benchmark.
//! Every function here must be called on the thread that owns `env`.

use std::ffi::CStr;
use std::ptr;

use napi::bindgen_prelude::{FromNapiValue, ToNapiValue, TypeName, ValidateNapiValue};
use napi::{sys, Status, ValueType};

/// A raw JS value passed through napi-derive signatures untouched, so that
/// the binding can inspect its type itself and name it in error messages.
#[derive(Clone, Copy)]
pub struct JsAny(pub sys::napi_value);

impl FromNapiValue for JsAny {
    unsafe fn from_napi_value(_env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        Ok(JsAny(value))
    }
}

impl ToNapiValue for JsAny {
    unsafe fn to_napi_value(_env: sys::napi_env, value: Self) -> napi::Result<sys::napi_value> {
        Ok(value.0)
    }
}

impl TypeName for JsAny {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ValidateNapiValue for JsAny {}

/// The outcome of a raw N-API call, as napi-rs' error type.
pub type NapiResult<T> = Result<T, napi::Error>;

/// Turns an N-API status into a `Result`; a pending JS exception stays
/// pending and is reported as `Status::PendingException`.
#[inline]
pub fn check(status: sys::napi_status) -> NapiResult<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_status(Status::from(status)))
    }
}

/// The JS type of a value.
#[inline]
pub unsafe fn type_of(env: sys::napi_env, value: sys::napi_value) -> NapiResult<sys::napi_valuetype> {
    let mut kind = 0;
    check(sys::napi_typeof(env, value, &mut kind))?;
    Ok(kind)
}

pub unsafe fn undefined(env: sys::napi_env) -> sys::napi_value {
    let mut value = ptr::null_mut();
    sys::napi_get_undefined(env, &mut value);
    value
}

pub unsafe fn null(env: sys::napi_env) -> sys::napi_value {
    let mut value = ptr::null_mut();
    sys::napi_get_null(env, &mut value);
    value
}

pub unsafe fn boolean(env: sys::napi_env, b: bool) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_get_boolean(env, b, &mut value))?;
    Ok(value)
}

pub unsafe fn double(env: sys::napi_env, n: f64) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_create_double(env, n, &mut value))?;
    Ok(value)
}

pub unsafe fn string(env: sys::napi_env, s: &str) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut value))?;
    Ok(value)
}

/// Reads a JS string as UTF-8 (lone surrogates become U+FFFD, as N-API does).
pub unsafe fn get_string(env: sys::napi_env, value: sys::napi_value) -> NapiResult<String> {
    // Short strings (element names, ids, small data) are read in one call
    // into a stack buffer. N-API writes whole characters only, so a string
    // that left room for a 4-byte character (plus the NUL) was read whole.
    const STACK: usize = 64;
    let mut stack = [0u8; STACK];
    let mut written = 0;
    check(sys::napi_get_value_string_utf8(env, value, stack.as_mut_ptr().cast(), STACK, &mut written))?;
    if written < STACK - 4 {
        let bytes = &stack[..written];
        return Ok(match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        });
    }
    let mut len = 0;
    check(sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut len))?;
    // N-API writes a terminating NUL, hence the extra byte.
    let mut buf: Vec<u8> = Vec::with_capacity(len + 1);
    check(sys::napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), len + 1, &mut written))?;
    buf.set_len(written);
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

pub unsafe fn get_double(env: sys::napi_env, value: sys::napi_value) -> NapiResult<f64> {
    let mut n = 0.0;
    check(sys::napi_get_value_double(env, value, &mut n))?;
    Ok(n)
}

pub unsafe fn get_bool(env: sys::napi_env, value: sys::napi_value) -> NapiResult<bool> {
    let mut b = false;
    check(sys::napi_get_value_bool(env, value, &mut b))?;
    Ok(b)
}

pub unsafe fn is_array(env: sys::napi_env, value: sys::napi_value) -> NapiResult<bool> {
    let mut b = false;
    check(sys::napi_is_array(env, value, &mut b))?;
    Ok(b)
}

pub unsafe fn array_len(env: sys::napi_env, array: sys::napi_value) -> NapiResult<u32> {
    let mut len = 0;
    check(sys::napi_get_array_length(env, array, &mut len))?;
    Ok(len)
}

pub unsafe fn get_element(
    env: sys::napi_env,
    array: sys::napi_value,
    index: u32,
) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_get_element(env, array, index, &mut value))?;
    Ok(value)
}

pub unsafe fn new_array(env: sys::napi_env, len: usize) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_create_array_with_length(env, len, &mut value))?;
    Ok(value)
}

pub unsafe fn set_element(
    env: sys::napi_env,
    array: sys::napi_value,
    index: u32,
    value: sys::napi_value,
) -> NapiResult<()> {
    check(sys::napi_set_element(env, array, index, value))
}

pub unsafe fn new_object(env: sys::napi_env) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_create_object(env, &mut value))?;
    Ok(value)
}

pub unsafe fn get_named(
    env: sys::napi_env,
    object: sys::napi_value,
    key: &CStr,
) -> NapiResult<sys::napi_value> {
    let mut value = ptr::null_mut();
    check(sys::napi_get_named_property(env, object, key.as_ptr(), &mut value))?;
    Ok(value)
}

pub unsafe fn set_property(
    env: sys::napi_env,
    object: sys::napi_value,
    key: sys::napi_value,
    value: sys::napi_value,
) -> NapiResult<()> {
    check(sys::napi_set_property(env, object, key, value))
}

/// Throws a `TypeError` with `message` and returns the error that tells
/// napi-rs an exception is already pending.
pub unsafe fn throw_type_error(env: sys::napi_env, message: &str) -> napi::Error {
    if let Ok(error) = type_error(env, message) {
        sys::napi_throw(env, error);
    }
    napi::Error::from_status(Status::PendingException)
}

/// Throws a `RangeError` with `message` and returns the error that tells
/// napi-rs an exception is already pending.
pub unsafe fn throw_range_error(env: sys::napi_env, message: &str) -> napi::Error {
    let thrown = string(env, message).and_then(|text| {
        let mut error = ptr::null_mut();
        check(sys::napi_create_range_error(env, ptr::null_mut(), text, &mut error))?;
        Ok(error)
    });
    if let Ok(error) = thrown {
        sys::napi_throw(env, error);
    }
    napi::Error::from_status(Status::PendingException)
}

/// A new `TypeError` with `message`.
pub unsafe fn type_error(env: sys::napi_env, message: &str) -> NapiResult<sys::napi_value> {
    let text = string(env, message)?;
    let mut error = ptr::null_mut();
    check(sys::napi_create_type_error(env, ptr::null_mut(), text, &mut error))?;
    Ok(error)
}

/// Takes the pending JS exception, if any.
pub unsafe fn take_exception(env: sys::napi_env) -> Option<sys::napi_value> {
    let mut pending = false;
    sys::napi_is_exception_pending(env, &mut pending);
    if !pending {
        return None;
    }
    let mut error = ptr::null_mut();
    sys::napi_get_and_clear_last_exception(env, &mut error);
    Some(error)
}

/// The value held by a reference, or `None` once it was collected.
pub unsafe fn deref(env: sys::napi_env, reference: sys::napi_ref) -> Option<sys::napi_value> {
    let mut value = ptr::null_mut();
    let status = sys::napi_get_reference_value(env, reference, &mut value);
    (status == sys::Status::napi_ok && !value.is_null()).then_some(value)
}

/// A short name of a JS value's type for error messages: `string`,
/// `number`, `array`, `null`, ...
pub unsafe fn describe_type(env: sys::napi_env, value: sys::napi_value) -> &'static str {
    match type_of(env, value) {
        Ok(sys::ValueType::napi_undefined) => "undefined",
        Ok(sys::ValueType::napi_null) => "null",
        Ok(sys::ValueType::napi_boolean) => "boolean",
        Ok(sys::ValueType::napi_number) => "number",
        Ok(sys::ValueType::napi_string) => "string",
        Ok(sys::ValueType::napi_symbol) => "symbol",
        Ok(sys::ValueType::napi_function) => "function",
        Ok(sys::ValueType::napi_bigint) => "bigint",
        Ok(sys::ValueType::napi_object) => {
            if is_array(env, value).unwrap_or(false) {
                "array"
            } else {
                "object"
            }
        }
        _ => "an unknown type",
    }
}
