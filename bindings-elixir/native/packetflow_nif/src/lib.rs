//! The Erlang NIF behind the `PacketFlow` Elixir package.
//!
//! It holds no protocol logic: it converts terms to and from the core's
//! JSON values, maps core errors to `%PacketFlow.Error{}` structs, and
//! bridges the BEAM's processes to the core's Tokio runtime.
//!
//! ## How it never blocks a scheduler
//! - A submit, made by the calling process itself, starts the core's submit
//!   future and returns at once; the result comes back later as a message
//!   to that process.
//! - A handler invocation is a message to an idle worker of the reactor's
//!   [`pool::Pool`] carrying an [`invocation::Invocation`] resource; the
//!   Elixir handler runs in that worker and answers through a NIF that
//!   completes a channel.
//! - Core futures are polled where they are woken ([`exec`]): inside these
//!   NIFs, with messages sent by the calling process, or on a Tokio thread
//!   (deadlines, shutdown, the network), sending from there
//!   (`enif_send` without a caller, which must not run on a scheduler
//!   thread).

mod atoms;
mod convert;
mod exec;
mod invocation;
mod json;
mod network;
mod packet;
mod pool;
mod reactor;
mod runtime;
mod terms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

rustler::init!("Elixir.PacketFlow.Native");
