//! `listen` and `connect`: the core's network node, driven from the BEAM.
//!
//! Both are async in the core. A NIF starts the work on the runtime and
//! returns at once; the answer reaches the reactor's GenServer as
//! `{:pf_net, tag, {:ok, value} | {:error, %PacketFlow.Error{}}}`.

use std::net::SocketAddr;

use packetflow::{Codec, PfError};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};

use crate::reactor::ReactorRes;
use crate::{atoms, runtime, terms};

/// What a finished network call answers with.
enum Answer {
    Listening(SocketAddr),
    Connected,
}

impl Answer {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Answer::Connected => atoms::ok().encode(env),
            Answer::Listening(addr) => {
                let keys = [atoms::host().encode(env), atoms::port().encode(env), atoms::url().encode(env)];
                let values = [
                    addr.ip().to_string().encode(env),
                    addr.port().encode(env),
                    format!("ws://{addr}{}", packetflow::net::WS_PATH).encode(env),
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

/// Starts listening on `addr` (`HOST:PORT`, port 0 for any free one); the
/// answer is `{:ok, %{host, port, url}}`.
#[rustler::nif]
fn reactor_listen(r: ResourceArc<ReactorRes>, addr: String, tag: u64) -> Atom {
    let node = r.node();
    let owner = *r.owner();
    runtime::handle().spawn(async move {
        let outcome = node.listen(&addr).await.map(Answer::Listening);
        answer(&owner, tag, outcome);
    });
    atoms::ok()
}

/// Dials `url`, speaking MessagePack when `msgpack` is true; the answer is
/// `{:ok, :ok}` once the peer's handlers are known.
#[rustler::nif]
fn reactor_connect(r: ResourceArc<ReactorRes>, url: String, msgpack: bool, tag: u64) -> Atom {
    let node = r.node();
    let owner = *r.owner();
    let codec = if msgpack { Codec::MsgPack } else { Codec::Json };
    runtime::handle().spawn(async move {
        let outcome = node.connect_with(&url, codec).await.map(|()| Answer::Connected);
        answer(&owner, tag, outcome);
    });
    atoms::ok()
}
