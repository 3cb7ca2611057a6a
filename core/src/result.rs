//! [`PacketResult`]: the one answer every accepted packet gets.

use serde_json::Value;

use crate::error::{ErrorCode, PfError};
use crate::packet::PacketId;

/// The outcome of a packet, the wire's `Result` object.
///
/// On the wire `status` is `"success"` with `data`, or `"error"` with
/// `error: {code, message}`; here the two are one `std::result::Result`.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketResult {
    /// The id of the packet this answers.
    pub packet_id: PacketId,
    /// The handler's value, or the error that ended the packet.
    pub outcome: Result<Value, PfError>,
    /// Time from acceptance to answer, in whole milliseconds.
    pub duration_ms: u64,
}

impl PacketResult {
    /// A success.
    pub fn success(packet_id: PacketId, data: Value, duration_ms: u64) -> Self {
        PacketResult { packet_id, outcome: Ok(data), duration_ms }
    }

    /// A failure with a protocol code.
    pub fn failure(packet_id: PacketId, error: PfError, duration_ms: u64) -> Self {
        PacketResult { packet_id, outcome: Err(error), duration_ms }
    }

    /// Shorthand for a failure with a known code.
    pub fn error(packet_id: PacketId, code: ErrorCode, message: impl Into<String>, duration_ms: u64) -> Self {
        Self::failure(packet_id, PfError::new(code, message), duration_ms)
    }

    /// `"success"` or `"error"`, the wire's `status`.
    pub fn status(&self) -> &'static str {
        if self.outcome.is_ok() {
            "success"
        } else {
            "error"
        }
    }

    /// Whether the packet succeeded.
    pub fn is_success(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The error, if the packet failed.
    pub fn err(&self) -> Option<&PfError> {
        self.outcome.as_ref().err()
    }
}
