//! Probes for the test suite: `index.js` does not export them, so they are
//! no part of the package's API.
//!
//! `test/convert.property.test.js` checks JS → core → JS through a reactor
//! (an echo handler); the other direction, a value the core decoded from the
//! wire, has no way in from JS but [`json_round_trip`]. [`socket_stats`]
//! shows whether connections are driven by node's event loop.

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

/// What the sockets driven by node's event loop did so far, in this
/// process (see src/uv.rs): for the tests, which check that connections
/// take that path.
#[napi(object)]
pub struct SocketStats {
    /// Poll handles made (one per socket that ever had to wait).
    pub watches: f64,
    /// Reads and writes that would block and waited for libuv.
    pub read_waits: f64,
    pub write_waits: f64,
    /// libuv reported a watched socket ready.
    pub callbacks: f64,
    /// Poll handles closed.
    pub closed: f64,
}

/// The counters of [`SocketStats`].
#[napi]
pub fn socket_stats() -> SocketStats {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &crate::uv::COUNTERS;
    SocketStats {
        watches: c.watches.load(Relaxed) as f64,
        read_waits: c.read_waits.load(Relaxed) as f64,
        write_waits: c.write_waits.load(Relaxed) as f64,
        callbacks: c.callbacks.load(Relaxed) as f64,
        closed: c.closed.load(Relaxed) as f64,
    }
}
