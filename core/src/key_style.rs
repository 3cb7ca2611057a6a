//! How a host language spells the names of options and keys, so that an
//! error names what the user wrote.

/// `max_inflight` (option files, Python, Elixir, the CLI's messages) or
/// `maxInflight` (JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyStyle {
    /// `token_sha256`, `max_inflight`.
    #[default]
    Snake,
    /// `tokenSha256`, `maxInflight`.
    Camel,
}

impl KeyStyle {
    /// The key of a token entry's hashed token.
    pub const fn sha256_key(self) -> &'static str {
        self.pick("token_sha256", "tokenSha256")
    }

    /// One of two spellings of the same name.
    pub(crate) const fn pick(self, snake: &'static str, camel: &'static str) -> &'static str {
        match self {
            KeyStyle::Snake => snake,
            KeyStyle::Camel => camel,
        }
    }
}
