//! # PacketFlow core
//!
//! The runtime shared by every PacketFlow binding: the wire protocol 1.0
//! (types, validation, JSON and MessagePack codecs) and the in-process
//! [`Reactor`] that routes packets to handlers.
//!
//! ## Design
//! - **Validated types.** A [`Packet`] is built from field types that check
//!   their PROTOCOL.md rule on construction ([`Group`], [`Element`],
//!   [`PacketId`], [`Priority`]); decoding reports the first broken rule by
//!   name (`priority must be an integer 1-10, got 11`) and keeps reading, so
//!   the answer can carry the frame's `seq` and the packet's id.
//! - **Decisions live here once.** Everything a peer can observe on the wire
//!   (error codes and messages, defaults, scheduling order) is decided in
//!   this crate; bindings only convert values and bridge their host's async
//!   model.
//! - **A cheap hot path.** Handler keys are interned at registration
//!   (a per-group table looked up by `&str`, never a formatted key); the
//!   handler table is read without locks; a packet that finds a free slot
//!   runs in its submitter's task with no hand-off between threads.
//! - **Every packet is answered.** `submit` ends with exactly one
//!   [`PacketResult`]: the handler's value, or PF500, PF408, PF001, PF409,
//!   PF424 or PF429. Nothing waits without a deadline.

#![warn(missing_docs)]
// Without the network, the parts of the wire codec, the reactor and the
// actor hosts that only a node uses are built but never called.
#![cfg_attr(not(feature = "net"), allow(dead_code))]

pub mod actor;
pub mod error;
mod key_style;
pub mod packet;
pub mod result;
pub mod wire;

pub use actor::{ActorContext, ActorRef, ActorType, Actors, Reply};
pub use error::{ErrorCode, PfError};
pub use key_style::KeyStyle;
pub use packet::{Element, Field, Group, Packet, PacketId, PacketParts, Priority};
pub use result::PacketResult;
pub use serde_json::{json, Map, Value};
pub use wire::{Codec, Message};

#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub use net::{ConnectOptions, ConnectionSpawner, ListenOptions, Node, NodeConfig, TokenSpec};
pub mod reactor;
pub mod stdlib;
pub use reactor::{Context, Handler, HandlerError, HandlerResult, Origin, Reactor, ReactorConfig};
