//! The Erlang NIF behind the `PacketFlow` Elixir package.
//!
//! It holds no protocol logic: it converts terms to and from the core's
//! values, maps core errors to `%PacketFlow.Error{}` structs, and bridges
//! the BEAM's processes to the core's Tokio runtime.
//!
//! ## Layers
//!
//! Each module uses only those below it, so each can be read (and is
//! tested, in `test/`) without those above:
//!
//! ```text
//!   actor              actor types whose turns are invocations; create, send, tell,
//!        │             stop, list and count from any process
//!   reactor, network   the reactor resource owned by the GenServer; submits from any
//!        │             process; listen and connect
//!   context            what a running handler (or turn) asks: time left, trace id,
//!        │             child calls, actor messages
//!   invocation         a handler call or an actor turn: its token resource, its message
//!        │             to a worker, the reply NIFs
//!   pool               which worker processes are idle; routing calls to them, the
//!        │             rest to the dispatcher
//!   exec               the generic executor: futures polled where they are woken
//!        │             (inside a NIF, or by a home process from a scheduler)
//!   runtime            the Tokio runtime (timers, sockets)
//!
//!   beside them, used at every level: convert (terms ⇄ values), terms (the
//!   structs handed out), packet (a submit's fields), store (a reactor's
//!   actor store file, closed when it stops), atoms, json, probe (NIFs that let
//!   the tests drive exec and pool alone)
//! ```
//!
//! ## How it never blocks a scheduler
//! - A submit, made by the calling process itself, starts the core's submit
//!   future and returns at once; the result comes back later as a message
//!   to that process.
//! - A handler invocation (or an actor's turn) is a message to an idle
//!   worker of the reactor's [`pool::Pool`] carrying an
//!   [`invocation::Invocation`] resource; the Elixir handler runs in that
//!   worker and answers through a NIF that completes a channel.
//! - Core futures are polled where they are woken ([`exec`]): inside these
//!   NIFs, with messages sent by the calling process, or by the reactor's
//!   dispatcher process when woken on a Tokio thread (deadlines, shutdown,
//!   the network).

mod actor;
mod atoms;
mod context;
mod convert;
mod exec;
mod invocation;
mod json;
mod network;
mod packet;
mod pool;
mod probe;
mod reactor;
mod runtime;
mod store;
mod terms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

rustler::init!("Elixir.PacketFlow.Native");
