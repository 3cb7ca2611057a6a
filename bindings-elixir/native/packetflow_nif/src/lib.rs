//! The Erlang NIF behind the `PacketFlow` Elixir package.
//!
//! It holds no protocol logic: it converts terms to and from the core's
//! JSON values, maps core errors to `%PacketFlow.Error{}` structs, and
//! bridges the BEAM's processes to the core's Tokio runtime.
//!
//! ## How it never blocks a scheduler
//! - A submit hands the packet to a Tokio task and returns at once; the
//!   result comes back later as a message to the reactor's GenServer.
//! - A handler invocation is a message to the reactor's dispatcher
//!   process carrying an [`invocation::Invocation`] resource; the Elixir
//!   handler runs in its own process and answers through a NIF that only
//!   completes a channel.
//! - Messages leave Tokio threads (never scheduler threads, where
//!   `OwnedEnv::send_and_clear` would panic) through an [`outbox::Outbox`],
//!   which sends everything that is ready in one message.

mod atoms;
mod convert;
mod invocation;
mod outbox;
mod packet;
mod reactor;
mod runtime;
mod terms;

rustler::init!("Elixir.PacketFlow.Native");
