//! The PacketFlow error codes (PROTOCOL.md, "Error codes") and the error value
//! that carries one of them with a human-readable message.

use std::fmt;

/// One of the protocol's error codes. The wire form is the `PFnnn` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// PF001: no handler for `group:element` here or on any reachable peer.
    NoHandler,
    /// PF400: malformed frame or packet; the message names the field.
    BadRequest,
    /// PF401: missing or wrong credentials.
    Unauthorized,
    /// PF403: credentials valid but not allowed for this `group:element`.
    Forbidden,
    /// PF404: no actor with that id (and its type declares no initial state).
    NotFound,
    /// PF408: `timeout_ms` elapsed before a result.
    Timeout,
    /// PF409: a conflict: a packet with the same id is already in flight,
    /// an actor with that id already exists, or a reentrant message tried to
    /// change the state of an actor whose turn waits on it.
    DuplicateId,
    /// PF413: frame larger than the node's limit.
    TooLarge,
    /// PF424: a dependency failed or timed out.
    DependencyFailed,
    /// PF429: overloaded (queue full, window exhausted, rate limit).
    Overloaded,
    /// PF499: the packet was cancelled: its submitter cancelled it (or went
    /// away), or the packet that called it was cancelled or ended.
    Cancelled,
    /// PF500: the handler raised, panicked or returned something unencodable.
    HandlerFailed,
    /// PF503: the peer holding the packet went away, or the node is stopping.
    Unavailable,
    /// PF508: routing loop; the hop limit was exceeded.
    LoopDetected,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::NoHandler,
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Timeout,
        ErrorCode::DuplicateId,
        ErrorCode::TooLarge,
        ErrorCode::DependencyFailed,
        ErrorCode::Overloaded,
        ErrorCode::Cancelled,
        ErrorCode::HandlerFailed,
        ErrorCode::Unavailable,
        ErrorCode::LoopDetected,
    ];

    /// The wire form, e.g. `"PF408"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoHandler => "PF001",
            ErrorCode::BadRequest => "PF400",
            ErrorCode::Unauthorized => "PF401",
            ErrorCode::Forbidden => "PF403",
            ErrorCode::NotFound => "PF404",
            ErrorCode::Timeout => "PF408",
            ErrorCode::DuplicateId => "PF409",
            ErrorCode::TooLarge => "PF413",
            ErrorCode::DependencyFailed => "PF424",
            ErrorCode::Overloaded => "PF429",
            ErrorCode::Cancelled => "PF499",
            ErrorCode::HandlerFailed => "PF500",
            ErrorCode::Unavailable => "PF503",
            ErrorCode::LoopDetected => "PF508",
        }
    }

    /// What the code means, in one line: the table of `docs/protocol.md`,
    /// and the text each binding's error table is checked against.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorCode::NoHandler => "no handler for group:element here or on any reachable peer",
            ErrorCode::BadRequest => "malformed frame or packet; the message names the field",
            ErrorCode::Unauthorized => "missing or wrong credentials",
            ErrorCode::Forbidden => "credentials valid but not allowed for this group:element",
            ErrorCode::NotFound => "no actor with that id, and its type declares no initial state",
            ErrorCode::Timeout => "timeout_ms elapsed before a result",
            ErrorCode::DuplicateId => {
                "conflict: a packet with that id is in flight, an actor with that id exists, or a reentrant \
                 message tried to change its actor's state"
            }
            ErrorCode::TooLarge => "frame larger than the node's limit",
            ErrorCode::DependencyFailed => "a dependency failed or timed out",
            ErrorCode::Overloaded => "overloaded: queue full, window exhausted or rate limit",
            ErrorCode::Cancelled => {
                "cancelled: by its submitter, by a connection that went away, or with the packet that called it"
            }
            ErrorCode::HandlerFailed => "the handler raised, panicked or returned something unencodable",
            ErrorCode::Unavailable => "the peer holding the packet went away, or the node is stopping",
            ErrorCode::LoopDetected => "routing loop: the hop limit was exceeded",
        }
    }

    /// Parses the wire form; `None` for a code this version does not know.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its protocol code, as carried in `error` frames and in
/// `Result.error`.
///
/// The code is kept as a string so that a code from a newer peer survives a
/// round trip through this node unchanged; [`PfError::kind`] maps it to a
/// known [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfError {
    /// The `PFnnn` code.
    pub code: String,
    /// What went wrong, for a person; names the field for PF400.
    pub message: String,
}

impl PfError {
    /// An error with a known code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PfError { code: code.as_str().to_owned(), message: message.into() }
    }

    /// The known code, if this version knows it.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// Whether this error carries `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }
}

impl fmt::Display for PfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PfError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("PF999"), None);
    }

    #[test]
    fn display_shows_code_and_message() {
        let e = PfError::new(ErrorCode::Timeout, "took too long");
        assert_eq!(e.to_string(), "PF408: took too long");
        assert!(e.is(ErrorCode::Timeout));
        assert_eq!(e.kind(), Some(ErrorCode::Timeout));
    }

    #[test]
    fn the_protocol_document_lists_every_code() {
        let doc = include_str!("../../docs/protocol.md");
        for code in ErrorCode::ALL {
            let row = format!("| {} | ", code.as_str());
            assert!(doc.contains(&row), "docs/protocol.md has no row for {code}");
        }
    }
}
