//! A node on NATS (docs/protocol.md, "NATS"): [`Node::connect`] with a
//! `nats://` or `tls://` URL (or [`Node::connect_nats`]) joins a NATS
//! system through the `async-nats` client.
//!
//! Once joined, every handler key the node's reactor serves is an
//! endpoint of the node's ADR-32 service (`$SRV.PING`, `$SRV.INFO` and
//! `$SRV.STATS` answer): a queue-group subscription on the key's subject
//! (`subject`), kept in step as handlers are registered and unregistered.
//! A request there runs through the reactor as a WebSocket submit does.
//! And a packet no local handler and no WebSocket peer takes is sent as a
//! NATS request (`link`), its metadata in headers (`headers`).
//!
//! A node on NATS is also a bridge for its WebSocket peers: it serves
//! there the keys of those that are not on NATS themselves (seed peers
//! included), and tells its PacketFlow peers it is on NATS (the `hello`
//! feature `nats`), so that those not on NATS send it what nothing else
//! takes. Cancels travel too: a requester that stops waiting publishes a
//! `cancel` frame on its cancel subject, which every node hears.
//!
//! [`Node::connect`]: super::Node::connect
//! [`Node::connect_nats`]: super::Node::connect_nats

mod headers;
mod kv_store;
mod link;
mod membership;
mod service;
mod subject;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Duration;

pub use kv_store::NatsKvStore;
pub(crate) use link::NatsLink;
pub use membership::{
    DEFAULT_HEARTBEAT as DEFAULT_MEMBERSHIP_HEARTBEAT, MAX_HEARTBEAT as MAX_MEMBERSHIP_HEARTBEAT,
    MIN_HEARTBEAT as MIN_MEMBERSHIP_HEARTBEAT, MISSED_BEATS,
};
pub use subject::{
    escape as escape_subject_token, key_subject, parse_key_subject, unescape as unescape_subject_token,
    DEFAULT_NAMESPACE,
};

use super::node::NodeInner;
use super::options::ConnectOptions;
use crate::error::{ErrorCode, PfError};
use crate::key_style::KeyStyle;

/// The queue group every node serving a key joins: NATS hands each request
/// to one member.
pub const QUEUE_GROUP: &str = "packetflow";
/// The ADR-32 service name every node registers under (one instance per
/// node; `$SRV.PING.packetflow` lists them all).
pub const SERVICE_NAME: &str = "packetflow";

/// Whether `url` names NATS servers (`nats://` or `tls://`, the first of a
/// comma-separated list) rather than a WebSocket peer.
pub fn is_nats_url(url: &str) -> bool {
    let first = url.split(',').next().unwrap_or("").trim_start();
    let scheme = first.split("://").next().unwrap_or("");
    first.contains("://") && (scheme.eq_ignore_ascii_case("nats") || scheme.eq_ignore_ascii_case("tls"))
}

/// Options of [`Node::connect_nats`](super::Node::connect_nats): the
/// namespace this node's subjects live in, and the credentials and TLS
/// files NATS clients take. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Prefix of every subject (docs/protocol.md, "NATS"), so that several
    /// PacketFlow systems can share one NATS; default `pf`.
    pub namespace: String,
    /// Name of the connection as the server shows it; default
    /// `packetflow <node id>`.
    pub name: Option<String>,
    /// Token auth.
    pub token: Option<String>,
    /// User and password auth (both or neither; or in the URL).
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
    /// NKey auth: the user's seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// PEM file of the certificate authorities the server's certificate
    /// must chain to; without it, the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with
    /// `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse a server that does not speak TLS, even for `nats://` URLs.
    pub require_tls: bool,
    /// Bound on opening the connection to one server.
    pub connect_timeout: Duration,
    /// Join the cluster's members (docs/protocol.md, "Membership"): an
    /// entry in the JetStream bucket `<namespace>_members`, and route keys
    /// and actors placed over the live members. Needs JetStream.
    pub membership: bool,
    /// The heartbeat of `membership` when this node makes the members
    /// bucket (its TTL is [`MISSED_BEATS`] heartbeats); a node joining an
    /// existing bucket beats at a third of the bucket's TTL instead.
    /// Default 1 s; from [`MIN_MEMBERSHIP_HEARTBEAT`] to
    /// [`MAX_MEMBERSHIP_HEARTBEAT`] (PF400 otherwise).
    pub membership_heartbeat: Duration,
    /// Keep actor state in the JetStream bucket `<namespace>_actors`
    /// (docs/protocol.md, "Actor state in a key-value bucket"), shared by
    /// the members: the reactor's store must be a [`NatsKvStore`], or not
    /// set yet with no actor type registered (one is set then). Implies
    /// `membership`.
    pub actor_store: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            namespace: DEFAULT_NAMESPACE.into(),
            name: None,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            credentials_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            connect_timeout: Duration::from_secs(5),
            membership: false,
            membership_heartbeat: membership::DEFAULT_HEARTBEAT,
            actor_store: false,
        }
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsOptions")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("token", &secret(&self.token))
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("nkey_seed", &secret(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("membership", &self.membership)
            .field("membership_heartbeat", &self.membership_heartbeat)
            .field("actor_store", &self.actor_store)
            .finish()
    }
}

impl From<ConnectOptions> for NatsOptions {
    /// The options of [`Node::connect_with`](super::Node::connect_with)
    /// that mean something to NATS (every one but the codec); what they do
    /// not give keeps its default. `connect_with` judges them first
    /// (PF400 naming the option as the caller spells it).
    fn from(options: ConnectOptions) -> NatsOptions {
        let defaults = NatsOptions::default();
        NatsOptions {
            namespace: options.namespace.unwrap_or(defaults.namespace),
            name: options.name,
            token: options.token,
            user: options.user,
            password: options.password,
            nkey_seed: options.nkey_seed,
            credentials_file: options.credentials_file,
            tls_ca: options.tls_ca,
            tls_cert: options.tls_cert,
            tls_key: options.tls_key,
            require_tls: options.require_tls,
            connect_timeout: options
                .connect_timeout_ms
                .map_or(defaults.connect_timeout, Duration::from_millis),
            membership: options.membership,
            membership_heartbeat: options
                .membership_heartbeat_ms
                .map_or(defaults.membership_heartbeat, Duration::from_millis),
            actor_store: options.actor_store,
        }
    }
}

/// What [`Node::connect_with`](super::Node::connect_with) refuses of its
/// options for a NATS URL before converting them, naming the field as
/// `key_style` spells it: MessagePack (NATS requests are JSON), a
/// connection timeout of 0 ms, and a membership heartbeat out of its
/// bounds or given without `membership` or `actor_store` (it would do
/// nothing).
pub(crate) fn check_connect_options(options: &ConnectOptions) -> Result<(), PfError> {
    if options.codec != crate::wire::Codec::Json {
        return Err(bad_request(
            "msgpack is an option of WebSocket peers: NATS requests are always JSON".into(),
        ));
    }
    if options.connect_timeout_ms == Some(0) {
        let field = options.key_style.pick("connect_timeout_ms", "connectTimeoutMs");
        return Err(bad_request(format!("{field} must be at least 1")));
    }
    if let Some(ms) = options.membership_heartbeat_ms {
        let field = options.key_style.pick("membership_heartbeat_ms", "membershipHeartbeatMs");
        if !options.membership && !options.actor_store {
            let store = options.key_style.pick("actor_store", "actorStore");
            return Err(bad_request(format!(
                "{field} is the heartbeat of membership: give membership (or {store}) too"
            )));
        }
        membership::check_heartbeat(Duration::from_millis(ms), field)?;
    }
    Ok(())
}

fn bad_request(message: String) -> PfError {
    PfError::new(ErrorCode::BadRequest, message)
}

/// The servers of a comma-separated list of URLs; PF400 naming the one
/// that is malformed or of another scheme.
fn parse_servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, PfError> {
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim) {
        let shown = redact(url);
        if url.is_empty() {
            return Err(bad_request(format!("NATS URL list {urls:?} holds an empty entry")));
        }
        if !is_nats_url(url) {
            return Err(bad_request(format!("NATS URL {shown:?} must start with nats:// or tls://")));
        }
        let server = url.parse().map_err(|e| bad_request(format!("NATS URL {shown:?} is malformed: {e}")))?;
        servers.push(server);
    }
    Ok(servers)
}

/// `url` with what stands before an `@` after the scheme (credentials)
/// written `***`, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Credentials written in a URL (`nats://user:password@host`, or
/// `nats://token@host`) apply when the options give none of that kind:
/// the client takes them from options only.
fn with_url_credentials(mut options: NatsOptions, servers: &[async_nats::ServerAddr]) -> NatsOptions {
    let Some(server) = servers.iter().find(|s| s.has_user_pass()) else { return options };
    match (server.username(), server.password()) {
        (Some(user), Some(password)) if options.user.is_none() && options.password.is_none() => {
            options.user = Some(user.to_owned());
            options.password = Some(password.to_owned());
        }
        (Some(token), None) if options.token.is_none() => options.token = Some(token.to_owned()),
        _ => {}
    }
    options
}

/// The client's options from ours; PF400 naming a missing file or an
/// option given without its pair.
async fn client_options(
    options: &NatsOptions,
    node_id: &str,
    style: KeyStyle,
) -> Result<async_nats::ConnectOptions, PfError> {
    let mut client = match &options.credentials_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path).await.map_err(|e| {
            let field = style.pick("credentials_file", "credentialsFile");
            bad_request(format!("{field} {}: {e}", path.display()))
        })?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(token) = &options.token {
        client = client.token(token.clone());
    }
    match (&options.user, &options.password) {
        (Some(user), Some(password)) => client = client.user_and_password(user.clone(), password.clone()),
        (None, None) => {}
        _ => return Err(bad_request("user and password must be given together".into())),
    }
    if let Some(seed) = &options.nkey_seed {
        client = client.nkey(seed.clone());
    }
    let readable = |field: &str, path: &PathBuf| {
        std::fs::metadata(path)
            .map(|_| ())
            .map_err(|e| bad_request(format!("{field} {}: {e}", path.display())))
    };
    if let Some(ca) = &options.tls_ca {
        readable(style.pick("tls_ca", "tlsCa"), ca)?;
        client = client.add_root_certificates(ca.clone());
    }
    match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            readable(style.pick("tls_cert", "tlsCert"), cert)?;
            readable(style.pick("tls_key", "tlsKey"), key)?;
            client = client.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            let (cert, key) = (style.pick("tls_cert", "tlsCert"), style.pick("tls_key", "tlsKey"));
            return Err(bad_request(format!("{cert} and {key} must be given together")));
        }
    }
    if options.require_tls {
        client = client.require_tls(true);
    }
    if options.connect_timeout.is_zero() {
        return Err(bad_request("connect_timeout must be at least 1 ms".into()));
    }
    let name = options.name.clone().unwrap_or_else(|| format!("packetflow {node_id}"));
    Ok(client
        .name(name)
        .connection_timeout(options.connect_timeout)
        // Redial forever: a node leaves NATS only when it stops.
        .max_reconnects(None::<usize>)
        // Requests carry their own deadlines (the packet's).
        .request_timeout(None))
}

/// Joins NATS: connects to one of `urls`, registers the node's service and
/// subscribes its handler keys, and returns once those subscriptions are
/// in place. Errors: PF400 for a bad URL, namespace or option (or a node
/// already on NATS), naming the option as `style` spells it; PF401 when
/// the server refuses the credentials; PF503 when no server can be reached
/// or TLS fails.
pub(crate) async fn connect(
    node: &Arc<NodeInner>,
    urls: &str,
    options: NatsOptions,
    style: KeyStyle,
) -> Result<(), PfError> {
    subject::check_namespace(&options.namespace)?;
    let servers = parse_servers(urls)?;
    let options = with_url_credentials(options, &servers);
    // What messages show of the URLs: never their credentials.
    let shown: Vec<String> =
        servers.iter().map(|s| format!("{}://{}:{}", s.scheme(), s.host(), s.port())).collect();
    let urls = shown.join(",");
    if node.nats.get().is_some() {
        return Err(bad_request("this node is already connected to NATS".into()));
    }
    // Judged before anything is joined: a heartbeat out of bounds or a
    // store that cannot be used is PF400 with nothing to undo.
    let joins = options.membership || options.actor_store;
    if joins {
        membership::check_heartbeat(options.membership_heartbeat, "membership_heartbeat")?;
    }
    let store_field = style.pick("actor_store", "actorStore");
    let kv_store = if options.actor_store { Some(actor_store_of(node, store_field)?) } else { None };
    let events = Arc::new(link::Events::default());
    let client_options = client_options(&options, &node.node_id, style).await?.event_callback({
        let events = events.clone();
        move |event| {
            let events = events.clone();
            async move { events.record(event) }
        }
    });
    let client = client_options.connect(servers).await.map_err(|e| {
        use async_nats::ConnectErrorKind as Kind;
        let code = match e.kind() {
            Kind::Authentication | Kind::AuthorizationViolation => ErrorCode::Unauthorized,
            Kind::ServerParse => ErrorCode::BadRequest,
            _ => ErrorCode::Unavailable,
        };
        PfError::new(code, format!("cannot connect to NATS at {urls}: {e}"))
    })?;
    let namespace = options.namespace.clone();
    let link = NatsLink::start(node, client, events, namespace.clone()).await?;
    if joins {
        if let Err(e) = join_cluster(node, &link, &namespace, &options, kv_store, store_field).await {
            link.close().await;
            return Err(e);
        }
    }
    if node.nats.set(link.clone()).is_err() {
        link.close().await;
        return Err(bad_request("this node is already connected to NATS".into()));
    }
    // Peers learn that this node is on NATS (the feature `nats`): those
    // that are not send it what nothing else takes, and its sync serves
    // their keys there (its routes may have come before the link).
    node.announce_to_all();
    link.keys_changed();
    Ok(())
}

/// The store `actor_store` binds: the reactor's, when it is a
/// [`NatsKvStore`]; a new one when the reactor has no store and no actor
/// type yet; PF400 naming `field` (`actor_store` as the caller spells it)
/// otherwise.
fn actor_store_of(node: &NodeInner, field: &str) -> Result<NatsKvStore, PfError> {
    let set = node.reactor.actor_store();
    if let Some(store) = set.as_ref().and_then(|s| s.as_any()?.downcast_ref::<NatsKvStore>()) {
        return Ok(store.clone());
    }
    if set.is_none() && node.reactor.actor_hosts().is_empty() {
        return Ok(NatsKvStore::new());
    }
    Err(bad_request(format!(
        "{field}: actor types are registered with another store (a file store, or the memory store \
         the first type made); join NATS before registering actor types, or set a NatsKvStore as the \
         actor store first"
    )))
}

/// Joins the members (and binds `kv_store`, set as the reactor's store
/// if it is not yet).
async fn join_cluster(
    node: &Arc<NodeInner>,
    link: &Arc<NatsLink>,
    namespace: &str,
    options: &NatsOptions,
    kv_store: Option<NatsKvStore>,
    store_field: &str,
) -> Result<(), PfError> {
    let cluster = membership::Cluster::start(node, link, options.membership_heartbeat).await?;
    let _ = link.cluster.set(cluster.clone());
    let Some(store) = kv_store else { return Ok(()) };
    let js = async_nats::jetstream::new(link.client.clone());
    store.bind(&js, namespace, &node.node_id, &cluster).await?;
    let set = node.reactor.actor_store();
    let is_set = set.as_ref().and_then(|s| s.as_any()?.downcast_ref::<NatsKvStore>()).is_some();
    if !is_set {
        node.reactor
            .set_actor_store(Arc::new(store))
            .map_err(|e| bad_request(format!("{store_field}: {}", e.message)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_by_scheme() {
        assert!(is_nats_url("nats://127.0.0.1:4222"));
        assert!(is_nats_url("TLS://a:1,tls://b:2"));
        assert!(!is_nats_url("ws://127.0.0.1:8443/packetflow/v1"));
        assert!(!is_nats_url("natsy://x"));
        assert!(!is_nats_url("127.0.0.1:4222"));
    }

    #[test]
    fn messages_never_show_credentials() {
        assert_eq!(redact("nats://user:secret@host:4222"), "nats://***@host:4222");
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
        let e = parse_servers("nats://a:1,http://user:secret@b:2").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert!(e.message.contains("http://***@b:2") && !e.message.contains("secret"), "{}", e.message);
        let e = parse_servers("nats://a:1,,nats://b:2").unwrap_err();
        assert!(e.message.contains("empty entry"), "{}", e.message);
    }

    #[test]
    fn connect_options_become_nats_options_field_by_field() {
        let options = ConnectOptions {
            token: Some("t".into()),
            tls_ca: Some("ca.pem".into()),
            namespace: Some("team-a".into()),
            name: Some("n".into()),
            user: Some("u".into()),
            password: Some("p".into()),
            nkey_seed: Some("SU".into()),
            credentials_file: Some("x.creds".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            require_tls: true,
            connect_timeout_ms: Some(250),
            membership: true,
            membership_heartbeat_ms: Some(300),
            actor_store: true,
            ..ConnectOptions::default()
        };
        let nats = NatsOptions::from(options);
        assert_eq!(
            nats,
            NatsOptions {
                namespace: "team-a".into(),
                name: Some("n".into()),
                token: Some("t".into()),
                user: Some("u".into()),
                password: Some("p".into()),
                nkey_seed: Some("SU".into()),
                credentials_file: Some("x.creds".into()),
                tls_ca: Some("ca.pem".into()),
                tls_cert: Some("c.pem".into()),
                tls_key: Some("k.pem".into()),
                require_tls: true,
                connect_timeout: Duration::from_millis(250),
                membership: true,
                membership_heartbeat: Duration::from_millis(300),
                actor_store: true,
            }
        );
        assert_eq!(NatsOptions::from(ConnectOptions::default()), NatsOptions::default());
    }

    #[test]
    fn msgpack_and_a_zero_timeout_are_refused_for_nats_naming_the_field() {
        assert!(check_connect_options(&ConnectOptions::default()).is_ok());
        let e = check_connect_options(&ConnectOptions::from(crate::wire::Codec::MsgPack)).unwrap_err();
        assert!(e.is(ErrorCode::BadRequest) && e.message.starts_with("msgpack is"), "{}", e.message);
        let zero = ConnectOptions { connect_timeout_ms: Some(0), ..ConnectOptions::default() };
        assert_eq!(
            check_connect_options(&zero).unwrap_err().message,
            "connect_timeout_ms must be at least 1"
        );
        let zero = ConnectOptions { key_style: KeyStyle::Camel, ..zero };
        assert_eq!(check_connect_options(&zero).unwrap_err().message, "connectTimeoutMs must be at least 1");
    }

    #[test]
    fn a_heartbeat_is_judged_in_its_bounds_and_only_with_membership() {
        let beat = |ms, membership, actor_store, key_style| ConnectOptions {
            membership,
            membership_heartbeat_ms: Some(ms),
            actor_store,
            key_style,
            ..ConnectOptions::default()
        };
        assert!(check_connect_options(&beat(10, true, false, KeyStyle::Snake)).is_ok());
        assert!(check_connect_options(&beat(60_000, false, true, KeyStyle::Camel)).is_ok());
        let e = check_connect_options(&beat(0, true, false, KeyStyle::Snake)).unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert_eq!(e.message, "membership_heartbeat_ms must be from 10 to 60000 ms, got 0 ms");
        let e = check_connect_options(&beat(u64::MAX, true, false, KeyStyle::Camel)).unwrap_err();
        assert!(e.message.starts_with("membershipHeartbeatMs must be from 10 to 60000 ms"), "{}", e.message);
        let e = check_connect_options(&beat(250, false, false, KeyStyle::Camel)).unwrap_err();
        assert_eq!(
            e.message,
            "membershipHeartbeatMs is the heartbeat of membership: give membership (or actorStore) too"
        );
        // Membership and the actor store alone are for the server to judge
        // (JetStream on or not).
        let on = ConnectOptions { membership: true, actor_store: true, ..ConnectOptions::default() };
        assert!(check_connect_options(&on).is_ok());
    }

    #[tokio::test]
    async fn option_errors_name_the_field_as_the_caller_spells_it() {
        let half = NatsOptions { tls_cert: Some("c.pem".into()), ..NatsOptions::default() };
        let e = client_options(&half, "n", KeyStyle::Camel).await.unwrap_err();
        assert_eq!(e.message, "tlsCert and tlsKey must be given together");
        let e = client_options(&half, "n", KeyStyle::Snake).await.unwrap_err();
        assert_eq!(e.message, "tls_cert and tls_key must be given together");
        let missing = NatsOptions { tls_ca: Some("/nonexistent/ca.pem".into()), ..NatsOptions::default() };
        let e = client_options(&missing, "n", KeyStyle::Camel).await.unwrap_err();
        assert!(
            e.is(ErrorCode::BadRequest) && e.message.starts_with("tlsCa /nonexistent/ca.pem"),
            "{}",
            e.message
        );
    }

    #[test]
    fn credentials_in_a_url_fill_the_options_that_lack_them() {
        let servers = parse_servers("nats://a:1,nats://pf:pw@b:2").unwrap();
        let options = with_url_credentials(NatsOptions::default(), &servers);
        assert_eq!((options.user.as_deref(), options.password.as_deref()), (Some("pf"), Some("pw")));
        let given =
            NatsOptions { user: Some("me".into()), password: Some("mine".into()), ..NatsOptions::default() };
        let options = with_url_credentials(given, &servers);
        assert_eq!(options.user.as_deref(), Some("me"));
        let servers = parse_servers("nats://s3cr3t-token@a:1").unwrap();
        assert_eq!(
            with_url_credentials(NatsOptions::default(), &servers).token.as_deref(),
            Some("s3cr3t-token")
        );
        assert!(!format!("{:?}", with_url_credentials(NatsOptions::default(), &servers)).contains("s3cr3t"));
    }
}
