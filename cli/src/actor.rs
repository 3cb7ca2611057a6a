//! `packetflow actor ...`: create, message and stop actors on a node, as
//! ordinary packets (docs/protocol.md, "Actors").

use std::process::ExitCode;

use clap::{Args, Subcommand};
use packetflow::actor::Op;
use packetflow::{ActorRef, Codec, Field, Packet, PacketParts, Value};

use crate::DialArgs;

#[derive(Subcommand)]
pub enum ActorCommand {
    /// Send a message to an actor and print the turn's Result as JSON
    /// (exit codes as `submit`).
    Send {
        /// The node's URL (ws:// or wss://).
        url: String,
        /// The actor type.
        actor_type: String,
        /// The actor id.
        id: String,
        /// The message, as JSON: an object whose "type" names the method.
        message: String,
        #[command(flatten)]
        options: PacketArgs,
    },
    /// Create an actor with an initial state and print its address.
    Create {
        /// The node's URL.
        url: String,
        /// The actor type.
        actor_type: String,
        /// The initial state, as JSON.
        state: String,
        /// The actor id (default: a fresh UUID v4).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        options: PacketArgs,
    },
    /// Stop an actor and delete its state.
    Stop {
        /// The node's URL.
        url: String,
        /// The actor type.
        actor_type: String,
        /// The actor id.
        id: String,
        #[command(flatten)]
        options: PacketArgs,
    },
}

/// What the packet carrying the request may set.
#[derive(Args)]
pub struct PacketArgs {
    /// The packet id: re-sending with the same id is applied once.
    #[arg(long)]
    packet_id: Option<String>,
    /// Priority 1-10 (absent: the protocol's default).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// How long to wait for the result, in ms (absent: the protocol's default).
    #[arg(long, allow_negative_numbers = true)]
    timeout_ms: Option<i64>,
    /// Speak MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    #[command(flatten)]
    dial: DialArgs,
}

pub async fn run(command: ActorCommand) -> ExitCode {
    let (url, built, options) = match &command {
        ActorCommand::Send { url, actor_type, id, message, options } => {
            (url, request(actor_type, Some(id), Op::Send, Some(message), options), options)
        }
        ActorCommand::Create { url, actor_type, state, id, options } => {
            (url, request(actor_type, id.as_deref(), Op::Create, Some(state), options), options)
        }
        ActorCommand::Stop { url, actor_type, id, options } => {
            (url, request(actor_type, Some(id), Op::Stop, None, options), options)
        }
    };
    let packet = match built {
        Ok(packet) => packet,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let codec = if options.msgpack { Codec::MsgPack } else { Codec::Json };
    crate::submit_packet(url, options.dial.options(codec), packet).await
}

/// The packet for `op` on (`actor_type`, `id`), its data parsed from
/// `json`; the core checks every part and names the one that is wrong.
fn request(
    actor_type: &str,
    id: Option<&str>,
    op: Op,
    json: Option<&String>,
    options: &PacketArgs,
) -> Result<Packet, String> {
    let data: Value = match json {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("the {} is not JSON: {e}", what(op)))?,
        None => Value::Null,
    };
    let actor = match id {
        Some(id) => ActorRef::new(actor_type, id),
        None => ActorRef::generate(actor_type),
    }
    .map_err(|e| e.message)?;
    let parts = PacketParts {
        id: options.packet_id.as_deref().map(Field::from),
        data: Some(data),
        priority: options.priority.map(Field::from),
        timeout_ms: options.timeout_ms.map(Field::from),
        ..Default::default()
    };
    actor.packet_from(op, parts).map_err(|e| e.message)
}

fn what(op: Op) -> &'static str {
    match op {
        Op::Create => "initial state",
        _ => "message",
    }
}
