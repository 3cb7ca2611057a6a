//! `listen` and `connect`: the core's network node, driven from the BEAM.
//!
//! Both are async in the core. A NIF starts the work on the runtime and
//! returns at once; the answer reaches the reactor's GenServer as
//! `{:pf_net, tag, {:ok, value} | {:error, %PacketFlow.Error{}}}`.

use std::net::SocketAddr;
use std::path::PathBuf;

use packetflow::{Codec, ConnectOptions, ErrorCode, KeyStyle, ListenOptions, PfError, TokenSpec};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};

use crate::reactor::ReactorRes;
use crate::{atoms, convert, runtime, terms};

/// What a finished network call answers with.
enum Answer {
    /// The address bound, and whether the listener speaks TLS.
    Listening(SocketAddr, bool),
    Connected,
}

impl Answer {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Answer::Connected => atoms::ok().encode(env),
            Answer::Listening(addr, secure) => {
                let scheme = if *secure { "wss" } else { "ws" };
                let keys = [atoms::host().encode(env), atoms::port().encode(env), atoms::url().encode(env)];
                let values = [
                    addr.ip().to_string().encode(env),
                    addr.port().encode(env),
                    format!("{scheme}://{addr}{}", packetflow::net::WS_PATH).encode(env),
                ];
                Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
            }
        }
    }
}

/// Sends `{:pf_net, tag, answer}` to `owner`. Runs on a runtime thread,
/// where `send_and_clear` is allowed.
fn answer(owner: &LocalPid, tag: u64, outcome: Result<Answer, PfError>) {
    let mut env = OwnedEnv::new();
    // A failed send means the GenServer is gone and no one waits.
    let _ = env.send_and_clear(owner, |env| {
        let outcome = match &outcome {
            Ok(answer) => (atoms::ok(), answer.encode(env)).encode(env),
            Err(e) => (atoms::error(), terms::error(env, e)).encode(env),
        };
        (atoms::pf_net(), tag, outcome).encode(env)
    });
}

/// `listen`'s options as `PacketFlow.Reactor` passes them:
/// `{auth_file | nil, tokens, tls_cert | nil, tls_key | nil}`, `tokens`
/// being `nil` or what the caller gave, keyword lists made maps.
type ListenTerm<'a> = (Option<String>, Term<'a>, Option<String>, Option<String>);

/// The options, with the token list parsed by the core (PF400 naming
/// `tokens[i].field`, never a token's value).
fn listen_options((auth_file, tokens, tls_cert, tls_key): ListenTerm) -> Result<ListenOptions, PfError> {
    let tokens = convert::to_value(tokens)
        .map_err(|bad| PfError::new(ErrorCode::BadRequest, bad.describe("tokens")))?;
    Ok(ListenOptions {
        auth_file: auth_file.map(PathBuf::from),
        tokens: TokenSpec::parse_list(&tokens, KeyStyle::Snake)?,
        tls_cert: tls_cert.map(PathBuf::from),
        tls_key: tls_key.map(PathBuf::from),
    })
}

/// Starts listening on `addr` (`HOST:PORT`, port 0 for any free one) with
/// `options`: `:ok`, and the answer `{:ok, %{host, port, url}}` later, or
/// `{:error, %PacketFlow.Error{}}` at once for options the core refuses.
#[rustler::nif]
fn reactor_listen<'a>(
    env: Env<'a>,
    r: ResourceArc<ReactorRes>,
    addr: String,
    options: ListenTerm<'a>,
    tag: u64,
) -> Term<'a> {
    let options = match listen_options(options) {
        Ok(options) => options,
        Err(e) => return (atoms::error(), terms::error(env, &e)).encode(env),
    };
    let node = r.node();
    let owner = *r.owner();
    let secure = options.tls_cert.is_some();
    runtime::handle().spawn(async move {
        let outcome = node.listen_with(&addr, options).await.map(|bound| Answer::Listening(bound, secure));
        answer(&owner, tag, outcome);
    });
    atoms::ok().encode(env)
}

/// `connect`'s options as `PacketFlow.Reactor` passes them: a map with
/// every key, each value of the type it checked (`nil` when not given).
#[derive(rustler::NifMap)]
struct ConnectTerm {
    msgpack: bool,
    token: Option<String>,
    tls_ca: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    user: Option<String>,
    password: Option<String>,
    nkey_seed: Option<String>,
    credentials_file: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    require_tls: bool,
    connect_timeout_ms: Option<u64>,
    membership: bool,
    membership_heartbeat_ms: Option<u64>,
    actor_store: bool,
}

impl ConnectTerm {
    /// The core's options; which of them apply to the URL (WebSocket or
    /// NATS), and their values, are the core's to judge.
    fn into_core(self) -> ConnectOptions {
        ConnectOptions {
            codec: if self.msgpack { Codec::MsgPack } else { Codec::Json },
            token: self.token,
            tls_ca: self.tls_ca.map(PathBuf::from),
            namespace: self.namespace,
            name: self.name,
            user: self.user,
            password: self.password,
            nkey_seed: self.nkey_seed,
            credentials_file: self.credentials_file.map(PathBuf::from),
            tls_cert: self.tls_cert.map(PathBuf::from),
            tls_key: self.tls_key.map(PathBuf::from),
            require_tls: self.require_tls,
            connect_timeout_ms: self.connect_timeout_ms,
            membership: self.membership,
            membership_heartbeat_ms: self.membership_heartbeat_ms,
            actor_store: self.actor_store,
            key_style: KeyStyle::Snake,
        }
    }
}

/// Dials the peer at `url`, or joins the NATS system it names, with
/// `options`; the answer is `{:ok, :ok}` once the peer's handlers are known
/// (on NATS: once this reactor's handlers are subscribed), or
/// `{:error, %PacketFlow.Error{}}`.
#[rustler::nif]
fn reactor_connect(r: ResourceArc<ReactorRes>, url: String, options: ConnectTerm, tag: u64) -> Atom {
    let node = r.node();
    let owner = *r.owner();
    let options = options.into_core();
    runtime::handle().spawn(async move {
        let outcome = node.connect_with(&url, options).await.map(|()| Answer::Connected);
        answer(&owner, tag, outcome);
    });
    atoms::ok()
}
