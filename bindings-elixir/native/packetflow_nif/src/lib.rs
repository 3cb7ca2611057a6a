//! The Erlang NIF behind the `PacketFlow` Elixir package.
//!
//! It holds no protocol logic: it converts terms to and from the core's
//! JSON values, maps core errors to `%PacketFlow.Error{}` structs, and
//! bridges the BEAM's processes to the core's Tokio runtime.
//!
//! ## How it never blocks a scheduler
//! - A submit starts the core's submit future and returns at once; the
//!   result comes back later as a message to the reactor's GenServer.
//! - A handler invocation is a message to the reactor's dispatcher
//!   process carrying an [`invocation::Invocation`] resource; the Elixir
//!   handler runs in its own process and answers through a NIF that
//!   completes a channel.
//! - Core futures are polled where they are woken ([`exec`]): inside these
//!   NIFs, with messages sent by the calling process, or on a Tokio thread
//!   (deadlines, shutdown), with messages leaving through an
//!   [`outbox::Outbox`] that sends everything ready in one message
//!   (`OwnedEnv::send_and_clear`, which must not run on a scheduler thread).

mod atoms;
mod convert;
mod exec;
mod invocation;
mod json;
mod network;
mod outbox;
mod packet;
mod reactor;
mod runtime;
mod terms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

rustler::init!("Elixir.PacketFlow.Native");
