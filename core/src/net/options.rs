//! What a listener and a dialer can be asked for beyond the address: token
//! auth and TLS. Plain paths and strings, so that every binding can expose
//! exactly these fields.

use std::fmt;
use std::path::PathBuf;

use crate::wire::Codec;

pub use super::auth::{KeyStyle, TokenSpec, MIN_TOKEN_LEN};

/// Options of [`Node::listen_with`](super::Node::listen_with).
///
/// Auth is on when `auth_file` is set or `tokens` is not empty (both may
/// be given; their tokens are added together). Then every connection must
/// present one of the tokens, as `Authorization: Bearer TOKEN` on the
/// upgrade or in `hello.token`, and may only submit and serve what that
/// token allows (see [`TokenSpec`] and `docs/security.md`).
///
/// TLS is on when `tls_cert` and `tls_key` are set (both or neither): the
/// listener then speaks `wss://` only.
///
/// ```no_run
/// # async fn doc(node: packetflow::Node) -> Result<(), packetflow::PfError> {
/// use packetflow::net::ListenOptions;
/// let options = ListenOptions {
///     auth_file: Some("tokens.toml".into()),
///     tls_cert: Some("node.crt".into()),
///     tls_key: Some("node.key".into()),
///     ..ListenOptions::default()
/// };
/// let bound = node.listen_with("0.0.0.0:8443", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// A tokens file (`.toml` or `.json`), read once when listening starts.
    pub auth_file: Option<PathBuf>,
    /// Tokens given in code, in addition to those of `auth_file`.
    pub tokens: Vec<TokenSpec>,
    /// PEM certificate chain (leaf first) served to peers.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub tls_key: Option<PathBuf>,
}

impl ListenOptions {
    /// Whether these options turn auth on.
    pub fn requires_auth(&self) -> bool {
        self.auth_file.is_some() || !self.tokens.is_empty()
    }
}

/// Options of [`Node::connect_with`](super::Node::connect_with).
///
/// A [`Codec`] converts into these (the other fields left at their
/// defaults), so `node.connect_with(url, Codec::MsgPack)` works as well.
///
/// `Debug` never shows the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Encoding of the connection (JSON by default).
    pub codec: Codec,
    /// Token presented to the node, both as `Authorization: Bearer` on the
    /// upgrade and in the first `hello`. Sent over `ws://` in the clear:
    /// use `wss://` beyond loopback.
    pub token: Option<String>,
    /// PEM file of the certificate authorities a `wss://` node's
    /// certificate must chain to; without it, the system's roots.
    pub tls_ca: Option<PathBuf>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("codec", &self.codec)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

impl From<Codec> for ConnectOptions {
    fn from(codec: Codec) -> ConnectOptions {
        ConnectOptions { codec, ..ConnectOptions::default() }
    }
}
