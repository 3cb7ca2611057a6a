//! The wire protocol: message frames and the two codecs (JSON text frames,
//! MessagePack binary frames), single messages and batches.
//!
//! Decoding is split in two layers on purpose. Syntax errors (bytes that are
//! not JSON/MessagePack at all) end the decode of the whole frame. Rule
//! violations inside a well-formed frame (a priority of 11, an unknown
//! `type`) do not: the decoder keeps reading so that the answer can carry the
//! frame's `seq` and the packet's id, as PROTOCOL.md asks ("a submit with a
//! bad field gets an `error` with the same `seq`, naming the field").

mod codec;
mod de;
mod direct;
mod ser;

pub use codec::{Codec, Decoded, DecodedIter, WireFrame, MAX_DEPTH};
pub use direct::{DirectHello, DirectNode, MAX_DIRECT_URLS, MAX_DIRECT_URL_LEN};

use crate::error::PfError;
use crate::packet::{Element, Group, Packet, PacketId};
use crate::result::PacketResult;

/// WebSocket subprotocol for JSON text frames (also the default when none is asked for).
pub const SUBPROTOCOL_JSON: &str = "packetflow.v1.json";
/// WebSocket subprotocol for MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "packetflow.v1.msgpack";
/// Feature name announced in `hello` by peers that accept batched frames.
pub const FEATURE_BATCH: &str = "batch";
/// Feature name announced in `hello` by peers that speak MessagePack.
pub const FEATURE_MSGPACK: &str = "msgpack";
/// Feature name announced in `hello` by a node that has a default route (a
/// seed peer): packets no one announced may be sent to it.
pub const FEATURE_DEFAULT_ROUTE: &str = "default-route";
/// Feature name announced in `hello` by peers that take `cancel` frames
/// (docs/protocol.md, "Cancellation"); no other peer is sent one.
pub const FEATURE_CANCEL: &str = "cancel";
/// Feature name announced in `hello` by nodes that take part in direct
/// paths (docs/protocol.md, "Direct paths"): only such a peer is sent the
/// `direct` member of `hello`.
pub const FEATURE_DIRECT: &str = "direct";
/// Feature name announced in `hello` by a node on NATS (docs/protocol.md,
/// "NATS", "Bridging"): a peer not on NATS may send it packets nothing
/// else takes, and the node does not serve the peer's keys on NATS for it
/// when the peer lists the feature too.
pub const FEATURE_NATS: &str = "nats";

/// The `type` of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `hello`
    Hello,
    /// `submit`
    Submit,
    /// `result`
    Result,
    /// `error`
    Error,
    /// `heartbeat`
    Heartbeat,
    /// `cancel` (only to peers whose `hello` listed [`FEATURE_CANCEL`])
    Cancel,
}

impl MessageKind {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageKind::Hello => "hello",
            MessageKind::Submit => "submit",
            MessageKind::Result => "result",
            MessageKind::Error => "error",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Cancel => "cancel",
        }
    }

    fn parse(name: &str) -> Option<MessageKind> {
        [
            MessageKind::Submit,
            MessageKind::Result,
            MessageKind::Error,
            MessageKind::Heartbeat,
            MessageKind::Hello,
            MessageKind::Cancel,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// A peer's self-description; each `hello` replaces the previous one.
/// Its `Debug` form never shows the token.
#[derive(Clone, PartialEq, Default)]
pub struct Hello {
    /// Stable id of the node.
    pub node_id: String,
    /// Human-readable name.
    pub name: String,
    /// Host runtime, e.g. `rust`, `python`, `node`, `elixir`.
    pub runtime: String,
    /// Protocol version spoken, `"1.0"`.
    pub protocol: String,
    /// The `group:element` keys the peer serves.
    pub handlers: Vec<(Group, Element)>,
    /// The standard elements (docs/stdlib.md) the peer hosts or reaches
    /// through its own peers: served there only for a key no handler is
    /// announced for.
    pub stdlib: Vec<(Group, Element)>,
    /// Optional features, e.g. [`FEATURE_BATCH`].
    pub features: Vec<String>,
    /// How many packets the peer accepts in flight at once (0: unspecified).
    pub max_inflight: u64,
    /// The heartbeat interval the peer offers, in ms (0: none offered, the
    /// seed's 30 s rule). Two nodes that both offer one beat at the larger
    /// of the two (docs/protocol.md, "Liveness").
    pub heartbeat_ms: u64,
    /// The largest frame the peer reads, in bytes (0: not said, the
    /// protocol's default of 1 MiB). Batches sent to it stay within it.
    pub max_frame_bytes: u64,
    /// Credentials, when the node asks for them.
    pub token: Option<String>,
    /// For each actor type, the nodes hosting it that can be reached
    /// through the sender, with how many hops away from it each is (0: the
    /// sender itself). Placement hashes over these (docs/protocol.md,
    /// "Actors").
    pub actor_hosts: ActorHosts,
    /// The nodes that may be dialed directly and the candidates of each
    /// key the sender routes (docs/protocol.md, "Direct paths"); only for
    /// a peer that listed [`FEATURE_DIRECT`].
    pub direct: Option<Box<DirectHello>>,
}

/// Actor type -> node id -> hops from the announcing node.
pub type ActorHosts = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("runtime", &self.runtime)
            .field("protocol", &self.protocol)
            .field("handlers", &self.handlers)
            .field("stdlib", &self.stdlib)
            .field("actor_hosts", &self.actor_hosts)
            .field("direct", &self.direct)
            .field("features", &self.features)
            .field("max_inflight", &self.max_inflight)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Hello {
    /// Whether the peer announced `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// One protocol message with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Announce or re-announce this node.
    Hello {
        /// Sequence number (unused by receivers).
        seq: u64,
        /// The announcement.
        hello: Box<Hello>,
    },
    /// Ask the peer to process a packet.
    Submit {
        /// Chosen by the submitter; the answer carries it back.
        seq: u64,
        /// The work.
        packet: Box<Packet>,
    },
    /// The answer to a submit.
    Result {
        /// The submit's `seq` (0 from seed peers: match by `packet_id`).
        seq: u64,
        /// The outcome.
        result: PacketResult,
    },
    /// The rejection of a frame.
    Error {
        /// The rejected frame's `seq`.
        seq: u64,
        /// What was wrong.
        error: PfError,
        /// The packet's id, when it could be read.
        packet_id: Option<PacketId>,
    },
    /// Liveness signal.
    Heartbeat {
        /// Sequence number (unused by receivers).
        seq: u64,
        /// Sender's clock, ms since the Unix epoch.
        timestamp: u64,
    },
    /// Withdraws a submit this side sent: the receiver cancels the packet
    /// if it is still in flight there (its one `result` is then PF499).
    Cancel {
        /// The `seq` of the submit it withdraws.
        seq: u64,
        /// The id of that submit's packet.
        packet_id: PacketId,
    },
}

impl Message {
    /// The frame's `seq`.
    pub fn seq(&self) -> u64 {
        match self {
            Message::Hello { seq, .. }
            | Message::Submit { seq, .. }
            | Message::Result { seq, .. }
            | Message::Error { seq, .. }
            | Message::Heartbeat { seq, .. }
            | Message::Cancel { seq, .. } => *seq,
        }
    }

    /// The same message with another `seq`.
    pub fn with_seq(mut self, new_seq: u64) -> Message {
        match &mut self {
            Message::Hello { seq, .. }
            | Message::Submit { seq, .. }
            | Message::Result { seq, .. }
            | Message::Error { seq, .. }
            | Message::Heartbeat { seq, .. }
            | Message::Cancel { seq, .. } => *seq = new_seq,
        }
        self
    }

    /// The frame's `type`.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello { .. } => MessageKind::Hello,
            Message::Submit { .. } => MessageKind::Submit,
            Message::Result { .. } => MessageKind::Result,
            Message::Error { .. } => MessageKind::Error,
            Message::Heartbeat { .. } => MessageKind::Heartbeat,
            Message::Cancel { .. } => MessageKind::Cancel,
        }
    }
}

/// A message as a node's connection queues it for writing: a [`Message`],
/// or a submit this node forwards one hop further, whose `pf.hops` is
/// written into its metadata as it is encoded (the packet's metadata is
/// left as it came: no map is built for the hop count). Encoded exactly as
/// the submit with `metadata["pf.hops"] = hops` would be.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Message),
    Forward { seq: u64, packet: Box<Packet>, hops: u64 },
}

impl From<Message> for Outgoing {
    fn from(message: Message) -> Outgoing {
        Outgoing::Message(message)
    }
}

/// A frame (or one element of a batch) that was rejected, with what is
/// needed to answer it: the `error` frame to send back carries `seq` and,
/// when it could be read, the packet's id.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The frame's `seq`, or 0 when it could not be read.
    pub seq: u64,
    /// The frame's `type`, when it was a known one.
    pub kind: Option<MessageKind>,
    /// The id of the packet (or of the result's packet), when it was valid.
    pub packet_id: Option<PacketId>,
    /// PF400 (or PF413) with a message naming the field.
    pub error: PfError,
    /// True when the bytes were not a well-formed JSON/MessagePack document
    /// at all (as opposed to a well-formed frame breaking a rule).
    pub unparsable: bool,
}

impl FrameError {
    /// The `error` message that answers this frame.
    pub fn to_message(&self) -> Message {
        Message::Error { seq: self.seq, error: self.error.clone(), packet_id: self.packet_id.clone() }
    }
}

#[cfg(test)]
mod tests;
