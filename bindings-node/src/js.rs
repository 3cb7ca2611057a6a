//! Reading JS values on the JS thread, on top of napi-rs' typed values.
//!
//! The binding talks to N-API through napi-rs' safe types (`Env`,
//! `Unknown`, `Object`, `Array`, `Function`, `FunctionRef`, `BigInt`,
//! `ThreadsafeFunction`). napi-rs marks a few steps `unsafe` although N-API
//! checks them itself: reading an `Unknown` as a string, a number, a boolean
//! or a `BigInt` (`napi_get_value_*` refuses a value of another type with a
//! status, which becomes an `Err`). Those steps live here, each behind a safe
//! function whose `SAFETY:` comment says why it is sound; so do the two
//! N-API calls napi-rs has no safe form of (taking a pending exception, and
//! a string read in one call), and the spreading of a batch into the
//! arguments of one JS call.
//!
//! Every value here is used on the thread that owns its `Env`, within the
//! N-API callback scope it was made or received in (its lifetime says so).

use std::borrow::Cow;
use std::ptr;

use napi::bindgen_prelude::{BigInt, FromNapiValue, Function, JsValuesTupleIntoVec, Object, ToNapiValue};
use napi::{sys, Env, JsValue, Status, Unknown, ValueType};

/// The outcome of an N-API call, as napi-rs' error type.
pub type NapiResult<T> = Result<T, napi::Error>;

/// The error that tells napi-rs a JS exception is already pending: it
/// leaves it to propagate as it is.
pub fn pending() -> napi::Error {
    napi::Error::from_status(Status::PendingException)
}

/// Reads a JS string as UTF-8 (lone surrogates become U+FFFD, as N-API
/// does); any other type is an `Err` (`StringExpected`).
///
/// Short strings (element names, ids, small data) are read in one N-API call
/// into a stack buffer, where napi-rs' `String` conversion makes two (the
/// length, then the bytes) and zeroes a heap buffer first: strings are read
/// several times per packet.
pub fn read_string(value: &Unknown<'_>) -> NapiResult<String> {
    read_str(value, &mut StrBuf::new()).map(Cow::into_owned)
}

/// Room for reading a short string without allocating: see [`read_str`].
pub struct StrBuf([u8; STR_BUF]);

/// Bytes of a [`StrBuf`], the terminating NUL included.
const STR_BUF: usize = 64;

impl StrBuf {
    /// An empty buffer (zeroed: N-API writes into it).
    pub fn new() -> StrBuf {
        StrBuf([0; STR_BUF])
    }
}

/// [`read_string`], borrowing the text from `buf` when it fits there (up to
/// 59 bytes: a group, a UUID, nearly every element name), so that a string
/// which is only looked at (a packet's group, element or id) costs no
/// allocation.
pub fn read_str<'b>(value: &Unknown<'_>, buf: &'b mut StrBuf) -> NapiResult<Cow<'b, str>> {
    let (env, raw) = (value.value().env, value.raw());
    let mut written = 0;
    // SAFETY: `env` and `raw` come from a live `Unknown` used on its JS
    // thread; the buffer pointer and its length describe `buf`, which N-API
    // fills with at most STR_BUF - 1 bytes and a NUL. A value that is not a
    // string makes N-API return `napi_string_expected` and write nothing.
    let status = unsafe {
        sys::napi_get_value_string_utf8(env, raw, buf.0.as_mut_ptr().cast(), STR_BUF, &mut written)
    };
    check(status)?;
    // N-API writes whole characters only: a string that left room for a
    // 4-byte character (plus the NUL) was read whole.
    if written < STR_BUF - 4 {
        return Ok(String::from_utf8_lossy(&buf.0[..written]));
    }
    // SAFETY: as above; napi-rs' `String` conversion reads the string's
    // length, then its bytes into a buffer of that size.
    unsafe { String::from_napi_value(env, raw) }.map(Cow::Owned)
}

/// Turns an N-API status into a `Result`; a pending JS exception stays
/// pending and is reported as `Status::PendingException`.
fn check(status: sys::napi_status) -> NapiResult<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_status(Status::from(status)))
    }
}

/// Reads a JS number; any other type is an `Err` (`NumberExpected`).
pub fn read_f64(value: &Unknown<'_>) -> NapiResult<f64> {
    // SAFETY: `f64`'s conversion is `napi_get_value_double`, which checks
    // the type itself; the value is live on its JS thread.
    unsafe { value.cast::<f64>() }
}

/// Reads a JS boolean; any other type is an `Err` (`BooleanExpected`).
pub fn read_bool(value: &Unknown<'_>) -> NapiResult<bool> {
    // SAFETY: `bool`'s conversion is `napi_get_value_bool`, which checks
    // the type itself; the value is live on its JS thread.
    unsafe { value.cast::<bool>() }
}

/// Reads a JS `BigInt` (sign and 64-bit words); any other type is an `Err`
/// (`BigintExpected`).
pub fn read_bigint(value: &Unknown<'_>) -> NapiResult<BigInt> {
    // SAFETY: `BigInt`'s conversion is `napi_get_value_bigint_words`, which
    // checks the type itself, first for the word count and then into a
    // buffer of that many words; the value is live on its JS thread.
    unsafe { value.cast::<BigInt>() }
}

/// A value whose type was found to be `object` (an array included), as an
/// `Object`.
pub fn as_object<'env>(value: &Unknown<'env>) -> Object<'env> {
    // `Object::from_raw` is safe: every call on an `Object` is checked by
    // N-API, which refuses a non-object with `napi_object_expected`.
    Object::from_raw(value.value().env, value.raw())
}

/// A value whose type was found to be `function`, as a `Function` taking
/// one argument.
pub fn as_function<'env>(value: &Unknown<'env>) -> NapiResult<Function<'env, Unknown<'env>, Unknown<'env>>> {
    // SAFETY: `Function`'s conversion keeps the handle as it is; calling it
    // is `napi_call_function`, which refuses a non-function with
    // `napi_function_expected`. The value is live on its JS thread.
    unsafe { value.cast() }
}

/// The own enumerable string keys of an object, in `JSON.stringify`'s
/// order, as an array of strings (index keys made strings).
///
/// napi-rs' `get_all_property_names` takes one key filter where this needs
/// two at once (enumerable, and no symbols), hence the direct call.
pub fn own_enumerable_keys<'env>(object: &Object<'env>) -> NapiResult<Object<'env>> {
    let env = object.value().env;
    let mut keys = ptr::null_mut();
    // SAFETY: `env` and the object's handle come from a live `Object` used
    // on its JS thread; N-API refuses a non-object with a status and only
    // writes the out-pointer, a value of the current handle scope.
    check(unsafe {
        sys::napi_get_all_property_names(
            env,
            object.raw(),
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::numbers_to_strings,
            &mut keys,
        )
    })?;
    Ok(Object::from_raw(env, keys))
}

/// Takes the pending JS exception, if any, so that the binding can read it
/// (napi-rs only takes one inside `Function::call`).
pub fn take_exception<'env>(env: &'env Env) -> Option<Unknown<'env>> {
    let raw_env = env.raw();
    let mut pending = false;
    let mut error = ptr::null_mut();
    // SAFETY: `env` is the live environment of this JS thread; both calls
    // only write the out-pointers given, and the exception taken is a value
    // of that environment's current handle scope.
    unsafe {
        if sys::napi_is_exception_pending(raw_env, &mut pending) != sys::Status::napi_ok || !pending {
            return None;
        }
        if sys::napi_get_and_clear_last_exception(raw_env, &mut error) != sys::Status::napi_ok {
            return None;
        }
        Some(Unknown::from_raw_unchecked(raw_env, error))
    }
}

/// A short name of a JS value's type for error messages: `string`,
/// `number`, `array`, `null`, ...
pub fn describe_type(value: &Unknown<'_>) -> &'static str {
    match value.get_type() {
        Ok(ValueType::Undefined) => "undefined",
        Ok(ValueType::Null) => "null",
        Ok(ValueType::Boolean) => "boolean",
        Ok(ValueType::Number) => "number",
        Ok(ValueType::String) => "string",
        Ok(ValueType::Symbol) => "symbol",
        Ok(ValueType::Function) => "function",
        Ok(ValueType::BigInt) => "bigint",
        Ok(ValueType::Object) => {
            if value.is_array().unwrap_or(false) {
                "array"
            } else {
                "object"
            }
        }
        _ => "an unknown type",
    }
}

/// Values passed as the separate arguments of one JS call
/// (`fn(state, ...values)`): the bridge hands batches to the JS dispatcher
/// and settler this way, which is far cheaper than filling an array.
///
/// Only JS values get in (`push` takes an `Unknown`), each made in the
/// current handle scope of the JS thread that makes the call; it keeps
/// their handles, as napi-rs' argument lists do.
#[derive(Default)]
pub struct Spread {
    values: Vec<sys::napi_value>,
}

impl Spread {
    pub fn with_capacity(capacity: usize) -> Self {
        Spread { values: Vec::with_capacity(capacity) }
    }

    pub fn push(&mut self, value: Unknown<'_>) {
        self.values.push(value.raw());
    }

    pub fn extend<'env>(&mut self, values: impl IntoIterator<Item = Unknown<'env>>) {
        self.values.extend(values.into_iter().map(|value| value.raw()));
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `first`, then `self[range]`, as a new list.
    pub fn slice(&self, first: Unknown<'_>, range: std::ops::Range<usize>) -> Spread {
        let mut values = Vec::with_capacity(1 + range.len());
        values.push(first.raw());
        values.extend_from_slice(&self.values[range]);
        Spread { values }
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }
}

impl JsValuesTupleIntoVec for Spread {
    fn into_vec(self, _env: sys::napi_env) -> NapiResult<Vec<sys::napi_value>> {
        Ok(self.values)
    }
}

/// Turns a value napi-rs can convert into an `Unknown` of `env`.
#[inline]
pub fn unknown<T: ToNapiValue>(env: &Env, value: T) -> NapiResult<Unknown<'_>> {
    value.into_unknown(env)
}

/// An N-API handle scope: the JS values made while it is open are released
/// when it closes (dropped), instead of living until the binding's entry
/// returns. For a loop that calls JS many times within one entry.
pub struct HandleScope {
    env: sys::napi_env,
    scope: sys::napi_handle_scope,
}

impl HandleScope {
    /// Opens a scope on the JS thread of `env`.
    pub fn open(env: &Env) -> HandleScope {
        let mut scope = ptr::null_mut();
        // SAFETY: `env` is the live environment of this JS thread; N-API
        // only writes the out-pointer. If it fails, `scope` stays null and
        // nothing is closed.
        let status = unsafe { sys::napi_open_handle_scope(env.raw(), &mut scope) };
        if status != sys::Status::napi_ok {
            scope = ptr::null_mut();
        }
        HandleScope { env: env.raw(), scope }
    }
}

impl Drop for HandleScope {
    fn drop(&mut self) {
        if !self.scope.is_null() {
            // SAFETY: the scope was opened on this thread's environment and
            // is closed once, innermost first (it is dropped before any
            // scope opened before it, as Rust drops in reverse order).
            unsafe { sys::napi_close_handle_scope(self.env, self.scope) };
        }
    }
}

/// An async resource of the addon's (`napi_async_init`): what node's
/// async hooks see as the origin of the JS the addon runs from a libuv
/// callback of its own (see [`CallbackScope`]). Made and destroyed on the
/// JS thread of its environment.
pub struct AsyncResource {
    env: sys::napi_env,
    context: sys::napi_async_context,
}

impl AsyncResource {
    /// A resource named `name` (in async hooks), on the JS thread of `env`.
    pub fn new(env: &Env, name: &str) -> NapiResult<AsyncResource> {
        let mut resource = ptr::null_mut();
        let mut context = ptr::null_mut();
        let name = unknown(env, name)?;
        // SAFETY: on the JS thread of `env`, inside a handle scope (every
        // caller runs in one); N-API only writes the out-pointers.
        let status = unsafe {
            let made = sys::napi_create_object(env.raw(), &mut resource);
            if made != sys::Status::napi_ok {
                made
            } else {
                sys::napi_async_init(env.raw(), resource, name.raw(), &mut context)
            }
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_status(Status::from(status)));
        }
        Ok(AsyncResource { env: env.raw(), context })
    }
}

impl Drop for AsyncResource {
    fn drop(&mut self) {
        // SAFETY: made on this environment's JS thread, destroyed once, on
        // that thread (its owner never leaves it).
        unsafe { sys::napi_async_destroy(self.env, self.context) };
    }
}

/// A callback scope (`napi_open_callback_scope`): JS run from a libuv
/// callback of the addon's (not from a call node made) runs as node runs
/// its own callbacks, and when the scope closes, node runs what that JS
/// queued: `process.nextTick` callbacks and the microtasks (the handlers'
/// asynchronous answers among them).
pub struct CallbackScope {
    env: sys::napi_env,
    scope: sys::napi_callback_scope,
}

impl CallbackScope {
    /// Opens a scope for `resource` on its JS thread, outside any JS
    /// (with a handle scope open).
    pub fn open(resource: &AsyncResource) -> CallbackScope {
        let mut scope = ptr::null_mut();
        // SAFETY: `resource` is live and of this thread's environment; the
        // resource object argument is ignored by node (the context's own is
        // used). If opening fails, `scope` stays null and nothing is closed.
        let status = unsafe {
            sys::napi_open_callback_scope(resource.env, ptr::null_mut(), resource.context, &mut scope)
        };
        if status != sys::Status::napi_ok {
            scope = ptr::null_mut();
        }
        CallbackScope { env: resource.env, scope }
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        if !self.scope.is_null() {
            // SAFETY: opened on this thread's environment, closed once, after
            // every scope opened inside it.
            unsafe { sys::napi_close_callback_scope(self.env, self.scope) };
        }
    }
}
