//! A probe of the value conversions for the test suite: `index.js` does
//! not export it, so it is no part of the package's API.
//!
//! `test/convert.property.test.js` checks JS → core → JS through a reactor
//! (an echo handler); the other direction, a value the core decoded from the
//! wire, has no way in from JS but this.

use napi::Env;
use napi_derive::napi;
use serde_json::Value;

use crate::convert::{to_js, FromJs};
use crate::error::throw_convert_error;

/// What [`json_round_trip`] found.
#[napi(object)]
pub struct JsonRoundTrip {
    /// The value parsed from the text, as the core prints it.
    pub before: String,
    /// The same value after JS and back, as the core prints it.
    pub after: String,
    /// Whether the two are the same JSON value (object keys in any order:
    /// a JS object lists integer-like keys first).
    pub same: bool,
}

/// Parses `text` as the core does a frame's data, converts the value to JS
/// and back, and reports both sides. A text that is not JSON is a `TypeError`.
#[napi]
pub fn json_round_trip(env: Env, text: String) -> napi::Result<JsonRoundTrip> {
    let before: Value = serde_json::from_str(&text)
        .map_err(|e| crate::error::throw_type_error(&env, &format!("not JSON: {e}")))?;
    let in_js = to_js(&env, &before)?;
    let after = FromJs::new(&env).convert(in_js).map_err(|e| throw_convert_error(&env, e, "value"))?;
    Ok(JsonRoundTrip { before: before.to_string(), after: after.to_string(), same: before == after })
}
