//! What a listener and a dialer can be asked for beyond the address: token
//! auth and TLS. Plain paths and strings, so that every binding can expose
//! exactly these fields.

use std::fmt;
use std::path::PathBuf;

use crate::error::{ErrorCode, PfError};
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

/// Options of [`Node::connect_with`](super::Node::connect_with), for a
/// WebSocket peer (`ws://`, `wss://`) or a NATS system (`nats://`,
/// `tls://`): one set of fields, so that every binding's `connect` takes
/// one URL and one set of options and leaves every decision here.
///
/// `codec` applies to WebSocket peers only; `token` and `tls_ca` to both;
/// the fields from `namespace` on to NATS only (the fields of
/// [`NatsOptions`](super::NatsOptions), see docs/protocol.md, "NATS"). A
/// field given for the other kind of URL is refused with PF400 naming it,
/// as `key_style` spells it.
///
/// A [`Codec`] converts into these (the other fields left at their
/// defaults), so `node.connect_with(url, Codec::MsgPack)` works as well.
///
/// `Debug` never shows a token, password or seed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Encoding of a WebSocket connection (JSON by default). NATS requests
    /// are always JSON: MessagePack for a NATS URL is PF400.
    pub codec: Codec,
    /// Token presented to the node, both as `Authorization: Bearer` on the
    /// upgrade and in the first `hello`; or NATS token auth. Sent over
    /// `ws://` in the clear: use `wss://` beyond loopback.
    pub token: Option<String>,
    /// PEM file of the certificate authorities a `wss://` node's (or a
    /// NATS server's) certificate must chain to; without it, the system's
    /// roots.
    pub tls_ca: Option<PathBuf>,
    /// NATS: prefix of the subjects (default `pf`).
    pub namespace: Option<String>,
    /// NATS: the connection's name on the server (default
    /// `packetflow <node id>`).
    pub name: Option<String>,
    /// NATS: user of user and password auth (both or neither).
    pub user: Option<String>,
    /// NATS: the password of `user`.
    pub password: Option<String>,
    /// NATS: NKey auth, the user's seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// NATS: a `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// NATS: PEM client certificate (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// NATS: PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// NATS: refuse a server that does not speak TLS, even for `nats://`.
    pub require_tls: bool,
    /// NATS: bound on opening the connection to one server, in ms, at
    /// least 1 (default 5000).
    pub connect_timeout_ms: Option<u64>,
    /// NATS: join the cluster's members (docs/protocol.md, "Membership");
    /// needs JetStream on the servers.
    pub membership: bool,
    /// NATS: the heartbeat of `membership` in ms, from 10 to 60000
    /// (`MIN_MEMBERSHIP_HEARTBEAT`, `MAX_MEMBERSHIP_HEARTBEAT`; default
    /// 1000), for a node that makes the members bucket; given only with
    /// `membership` or `actor_store`.
    pub membership_heartbeat_ms: Option<u64>,
    /// NATS: keep actor state in the members' JetStream bucket
    /// (docs/protocol.md, "Actor state in a key-value bucket"); implies
    /// `membership`.
    pub actor_store: bool,
    /// How the caller spells these fields (`tls_cert` or `tlsCert`), so
    /// that a PF400 names the option the user wrote.
    pub key_style: KeyStyle,
}

impl ConnectOptions {
    /// The first field given that only NATS takes, as `key_style` spells
    /// it.
    pub(crate) fn nats_only_field(&self) -> Option<&'static str> {
        let style = self.key_style;
        let given = [
            (self.namespace.is_some(), "namespace"),
            (self.name.is_some(), "name"),
            (self.user.is_some(), "user"),
            (self.password.is_some(), "password"),
            (self.nkey_seed.is_some(), style.pick("nkey_seed", "nkeySeed")),
            (self.credentials_file.is_some(), style.pick("credentials_file", "credentialsFile")),
            (self.tls_cert.is_some(), style.pick("tls_cert", "tlsCert")),
            (self.tls_key.is_some(), style.pick("tls_key", "tlsKey")),
            (self.require_tls, style.pick("require_tls", "requireTls")),
            (self.connect_timeout_ms.is_some(), style.pick("connect_timeout_ms", "connectTimeoutMs")),
            (self.membership, "membership"),
            (
                self.membership_heartbeat_ms.is_some(),
                style.pick("membership_heartbeat_ms", "membershipHeartbeatMs"),
            ),
            (self.actor_store, style.pick("actor_store", "actorStore")),
        ];
        given.into_iter().find_map(|(set, field)| set.then_some(field))
    }

    /// PF400 naming the first NATS option given for the WebSocket URL
    /// `url`.
    pub(crate) fn check_websocket(&self, url: &str) -> Result<(), PfError> {
        match self.nats_only_field() {
            Some(field) => Err(PfError::new(
                ErrorCode::BadRequest,
                format!("{field} is an option of NATS URLs (nats://, tls://), not of {}", scheme_of(url)),
            )),
            None => Ok(()),
        }
    }
}

/// `ws://` for `ws://host/...`, for messages (never the rest of a URL,
/// which may hold credentials).
fn scheme_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) if scheme.len() <= 16 => format!("{scheme}://"),
        _ => "this URL".to_owned(),
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectOptions")
            .field("codec", &self.codec)
            .field("token", &secret(&self.token))
            .field("tls_ca", &self.tls_ca)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("nkey_seed", &secret(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("membership", &self.membership)
            .field("membership_heartbeat_ms", &self.membership_heartbeat_ms)
            .field("actor_store", &self.actor_store)
            .field("key_style", &self.key_style)
            .finish()
    }
}

impl From<Codec> for ConnectOptions {
    fn from(codec: Codec) -> ConnectOptions {
        ConnectOptions { codec, ..ConnectOptions::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_options_for_a_websocket_url_are_pf400_naming_the_field_as_spelled() {
        assert!(ConnectOptions::default().check_websocket("ws://127.0.0.1:1/packetflow/v1").is_ok());
        let options = ConnectOptions { token: Some("t".repeat(32)), ..ConnectOptions::default() };
        assert!(options.check_websocket("wss://h:1/packetflow/v1").is_ok());
        let options = ConnectOptions { tls_cert: Some("c.pem".into()), ..ConnectOptions::default() };
        let e = options.check_websocket("ws://user:secret@h:1/packetflow/v1").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert_eq!(e.message, "tls_cert is an option of NATS URLs (nats://, tls://), not of ws://");
        let options = ConnectOptions { key_style: KeyStyle::Camel, ..options };
        assert!(options.check_websocket("ws://h:1").unwrap_err().message.starts_with("tlsCert is"));
        let options =
            ConnectOptions { require_tls: true, key_style: KeyStyle::Camel, ..ConnectOptions::default() };
        assert_eq!(options.nats_only_field(), Some("requireTls"));
    }

    #[test]
    fn the_cluster_options_are_nats_only_spelled_per_style() {
        let heartbeat = ConnectOptions { membership_heartbeat_ms: Some(250), ..ConnectOptions::default() };
        let e = heartbeat.check_websocket("ws://h:1/packetflow/v1").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert!(e.message.starts_with("membership_heartbeat_ms is an option of NATS URLs"), "{}", e.message);
        let heartbeat = ConnectOptions { key_style: KeyStyle::Camel, ..heartbeat };
        assert_eq!(heartbeat.nats_only_field(), Some("membershipHeartbeatMs"));
        let store = ConnectOptions { actor_store: true, ..ConnectOptions::default() };
        assert_eq!(store.nats_only_field(), Some("actor_store"));
        let store = ConnectOptions { key_style: KeyStyle::Camel, ..store };
        assert!(store.check_websocket("wss://h:1").unwrap_err().message.starts_with("actorStore is"));
        let member =
            ConnectOptions { membership: true, key_style: KeyStyle::Camel, ..ConnectOptions::default() };
        assert_eq!(member.nats_only_field(), Some("membership"));
    }

    #[test]
    fn debug_hides_every_secret() {
        let options = ConnectOptions {
            token: Some("tok-secret".into()),
            password: Some("pw-secret".into()),
            nkey_seed: Some("SU-secret".into()),
            user: Some("me".into()),
            ..ConnectOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("\"me\""), "{shown}");
    }
}
