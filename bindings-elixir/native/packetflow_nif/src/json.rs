//! JSON text to and from terms with the core's serde_json, under the same
//! conversion rules as packet values (see [`crate::convert`]).
//!
//! OTP 25 has no JSON module and the package takes no dependency, so
//! `PacketFlow.JSON` offers this to users who exchange JSON text next to
//! their packets (logs, stdin/stdout protocols, fixtures).

use rustler::{Binary, Encoder, Env, Term};

use crate::{atoms, convert};

/// `{:ok, json_text}`, or `{:badarg, message}` naming the first value that
/// cannot be JSON and where it is.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_encode<'a>(env: Env<'a>, term: Term<'a>) -> Term<'a> {
    match convert::to_value(term) {
        Ok(value) => {
            // Serialising a `Value` cannot fail: its keys are strings.
            let text = serde_json::to_string(&value).unwrap_or_default();
            (atoms::ok(), text).encode(env)
        }
        Err(bad) => (atoms::badarg(), bad.describe("value")).encode(env),
    }
}

/// `{:ok, term}` (objects become maps with string keys, `null` becomes
/// `nil`), or `{:error, message}` with the parser's line and column.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_decode<'a>(env: Env<'a>, text: Binary<'a>) -> Term<'a> {
    match serde_json::from_slice::<serde_json::Value>(text.as_slice()) {
        Ok(value) => (atoms::ok(), convert::to_term(env, &value)).encode(env),
        Err(e) => (atoms::error(), format!("invalid JSON: {e}")).encode(env),
    }
}
