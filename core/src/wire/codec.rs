//! [`Codec`]: bytes to messages and back, for both encodings.

use std::cell::Cell;

use serde::de::DeserializeSeed;
use serde::Serialize;

use super::de::{BatchSeed, FrameSeed};
use super::ser::{json_submit, write_json_fast, write_json_outgoing, WireMessage, WireOutgoing};
use super::{FrameError, Message, Outgoing, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use crate::packet::bad_request;

/// Deepest nesting a frame may have, counting the frame itself; deeper
/// input is rejected as PF400 rather than risking the stack.
pub const MAX_DEPTH: usize = 128;

/// The two encodings of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// UTF-8 JSON in text frames (the default, and the seed's format).
    #[default]
    Json,
    /// MessagePack in binary frames, with compact packet keys.
    MsgPack,
}

/// An encoded WebSocket frame: text for JSON, binary for MessagePack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    /// A JSON document, for a text frame.
    Text(String),
    /// A MessagePack document, for a binary frame.
    Binary(Vec<u8>),
}

/// Messages serialized as one array (a batch frame).
struct Batch<'a>(&'a [Message], bool);

impl Serialize for Batch<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for message in self.0 {
            seq.serialize_element(&WireMessage { message, compact: self.1 })?;
        }
        seq.end()
    }
}

/// What one frame decoded to: a single message or a batch, each element
/// either a message or the ingredients of the `error` frame that answers it.
#[derive(Debug)]
pub enum Decoded {
    /// A frame holding one message object.
    Single(Result<Message, FrameError>),
    /// A frame holding an array of message objects.
    Batch(Vec<Result<Message, FrameError>>),
}

impl IntoIterator for Decoded {
    type Item = Result<Message, FrameError>;
    type IntoIter = DecodedIter;

    fn into_iter(self) -> DecodedIter {
        match self {
            Decoded::Single(one) => DecodedIter::Single(Some(one)),
            Decoded::Batch(all) => DecodedIter::Batch(all.into_iter()),
        }
    }
}

/// Iterator over the messages of a [`Decoded`] frame.
#[derive(Debug)]
pub enum DecodedIter {
    /// Over a single message.
    Single(Option<Result<Message, FrameError>>),
    /// Over a batch.
    Batch(std::vec::IntoIter<Result<Message, FrameError>>),
}

impl Iterator for DecodedIter {
    type Item = Result<Message, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DecodedIter::Single(one) => one.take(),
            DecodedIter::Batch(all) => all.next(),
        }
    }
}

impl Codec {
    /// The codec named by a `Sec-WebSocket-Protocol` value; `None` (no
    /// header) means JSON. An unknown name gives `None`.
    pub fn from_subprotocol(name: Option<&str>) -> Option<Codec> {
        match name {
            None | Some(SUBPROTOCOL_JSON) => Some(Codec::Json),
            Some(SUBPROTOCOL_MSGPACK) => Some(Codec::MsgPack),
            Some(_) => None,
        }
    }

    /// The subprotocol name for this codec.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => SUBPROTOCOL_JSON,
            Codec::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Whether frames of this codec go in binary (not text) WebSocket frames.
    pub fn is_binary(self) -> bool {
        self == Codec::MsgPack
    }

    /// Decodes one WebSocket frame's bytes. Never panics; input that is not
    /// a document of this encoding gives a single `FrameError` with
    /// `unparsable` set (and the `seq`, when it was read before the fault).
    pub fn decode(self, bytes: &[u8]) -> Decoded {
        let seen_seq = Cell::new(0);
        let decoded = match self {
            Codec::Json => decode_json(bytes, &seen_seq),
            Codec::MsgPack => decode_msgpack(bytes, &seen_seq),
        };
        decoded.unwrap_or_else(|reason| malformed(reason, seen_seq.get()))
    }

    /// Decodes a JSON text frame whose UTF-8 was already checked (a
    /// WebSocket text frame): the same as [`decode`](Self::decode) with
    /// `Codec::Json`, without checking the UTF-8 a second time.
    pub fn decode_text(text: &str) -> Decoded {
        let seen_seq = Cell::new(0);
        let de = serde_json::Deserializer::from_str(text);
        decode_json_from(de, text.as_bytes(), &seen_seq)
            .unwrap_or_else(|reason| malformed(reason, seen_seq.get()))
    }

    /// Appends the encoding of `message` to `out`.
    pub fn encode(self, message: &Message, out: &mut Vec<u8>) {
        if self == Codec::Json && write_json_fast(message, out) {
            return;
        }
        self.write(&WireMessage { message, compact: self == Codec::MsgPack }, out);
    }

    /// The JSON `submit` frame (`seq` 0) of `packet` sent on as hop number
    /// `hops`: its metadata written with `pf.hops` = `hops`, as after
    /// `insert("pf.hops", hops)`, without touching the packet (no map made
    /// for a packet without metadata).
    pub(crate) fn json_forward(packet: &crate::packet::Packet, hops: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        json_submit(0, packet, Some(hops), &mut out);
        out
    }

    /// The encoding of `message`, in a new buffer.
    pub fn encode_to_vec(self, message: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode(message, &mut out);
        out
    }

    /// Appends a batch frame (an array of messages) to `out`.
    pub fn encode_batch(self, messages: &[Message], out: &mut Vec<u8>) {
        match self {
            Codec::Json => {
                out.push(b'[');
                for (i, message) in messages.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.encode(message, out);
                }
                out.push(b']');
            }
            Codec::MsgPack => self.write(&Batch(messages, true), out),
        }
    }

    /// One message as a ready WebSocket frame.
    pub fn frame(self, message: &Message) -> WireFrame {
        match self {
            Codec::Json => {
                let mut out = Vec::with_capacity(128);
                self.encode(message, &mut out);
                WireFrame::Text(String::from_utf8(out).expect("JSON is UTF-8"))
            }
            Codec::MsgPack => self.frame_of(&WireMessage { message, compact: true }),
        }
    }

    /// Several messages as one batch frame.
    pub fn batch_frame(self, messages: &[Message]) -> WireFrame {
        match self {
            Codec::Json => {
                let mut out = Vec::with_capacity(128 * messages.len());
                self.encode_batch(messages, &mut out);
                WireFrame::Text(String::from_utf8(out).expect("JSON is UTF-8"))
            }
            Codec::MsgPack => self.frame_of(&Batch(messages, true)),
        }
    }

    /// A queued message as a ready WebSocket frame.
    pub(crate) fn frame_outgoing(self, outgoing: &Outgoing) -> WireFrame {
        match self {
            Codec::Json => {
                let mut out = Vec::with_capacity(128);
                write_json_outgoing(outgoing, &mut out);
                WireFrame::Text(String::from_utf8(out).expect("JSON is UTF-8"))
            }
            Codec::MsgPack => self.frame_of(&WireOutgoing { outgoing, compact: true }),
        }
    }

    /// The first of the queued messages `all` as one frame for a peer that
    /// reads batches: as many of them, in order, as fit in `cap` bytes go
    /// in one array frame; a first message that leaves no room for the
    /// second goes alone, as a plain frame. Gives the frame and how many
    /// messages it holds (at least one; `all` must not be empty).
    pub(crate) fn batch_frame_outgoing(self, all: &[Outgoing], cap: usize) -> (WireFrame, usize) {
        let mut taken = 0;
        match self {
            Codec::Json => {
                let mut out = Vec::with_capacity((128 * all.len()).min(cap));
                out.push(b'[');
                for outgoing in all {
                    let end = out.len();
                    if taken > 0 {
                        out.push(b',');
                    }
                    write_json_outgoing(outgoing, &mut out);
                    // +1: the closing bracket.
                    if taken > 0 && out.len() + 1 > cap {
                        out.truncate(end);
                        break;
                    }
                    taken += 1;
                }
                if taken == 1 {
                    out.remove(0);
                } else {
                    out.push(b']');
                }
                (WireFrame::Text(String::from_utf8(out).expect("JSON is UTF-8")), taken)
            }
            Codec::MsgPack => {
                // Room for the longest array header, written once the count
                // is known.
                const HEADER: usize = 5;
                let mut out = Vec::with_capacity((128 * all.len()).min(cap));
                out.resize(HEADER, 0);
                for outgoing in all {
                    let end = out.len();
                    self.write(&WireOutgoing { outgoing, compact: true }, &mut out);
                    if taken > 0 && out.len() > cap {
                        out.truncate(end);
                        break;
                    }
                    taken += 1;
                }
                let start = if taken == 1 {
                    HEADER
                } else {
                    let mut header = Vec::with_capacity(HEADER);
                    rmp::encode::write_array_len(&mut header, taken as u32).expect("a Vec takes every write");
                    out[HEADER - header.len()..HEADER].copy_from_slice(&header);
                    HEADER - header.len()
                };
                out.drain(..start);
                (WireFrame::Binary(out), taken)
            }
        }
    }

    /// The encoding of `message` through serde alone (the reference the
    /// fast JSON writer must match byte for byte).
    #[cfg(test)]
    pub(crate) fn encode_with_serde(self, message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&WireMessage { message, compact: self == Codec::MsgPack }, &mut out);
        out
    }

    fn frame_of<T: Serialize>(self, value: &T) -> WireFrame {
        match self {
            // to_string knows its output is UTF-8: no second validation.
            Codec::Json => {
                WireFrame::Text(serde_json::to_string(value).expect("JSON-shaped values always encode"))
            }
            Codec::MsgPack => {
                let mut out = Vec::with_capacity(128);
                self.write(value, &mut out);
                WireFrame::Binary(out)
            }
        }
    }

    fn write<T: Serialize>(self, value: &T, out: &mut Vec<u8>) {
        // Every value here is JSON-shaped with string keys, which both
        // serializers accept, and writing to a Vec cannot fail.
        match self {
            Codec::Json => serde_json::to_writer(out, value).expect("JSON-shaped values always encode"),
            Codec::MsgPack => {
                value
                    .serialize(&mut rmp_serde::Serializer::new(out))
                    .expect("JSON-shaped values always encode");
            }
        }
    }
}

/// A batch as serde writes it (the reference for the fast JSON writer).
#[cfg(test)]
pub(super) fn tests_batch(messages: &[Message]) -> impl Serialize + '_ {
    Batch(messages, false)
}

fn is_json_array(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

fn is_msgpack_array(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
}

fn malformed(reason: String, seq: u64) -> Decoded {
    Decoded::Single(Err(FrameError {
        seq,
        kind: None,
        packet_id: None,
        error: bad_request(format!("malformed frame: {reason}")),
        unparsable: true,
    }))
}

fn decode_json(bytes: &[u8], seen_seq: &Cell<u64>) -> Result<Decoded, String> {
    decode_json_from(serde_json::Deserializer::from_slice(bytes), bytes, seen_seq)
}

fn decode_json_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    bytes: &[u8],
    seen_seq: &Cell<u64>,
) -> Result<Decoded, String> {
    // serde_json's own recursion limit (128) is the MAX_DEPTH bound here.
    let decoded = if is_json_array(bytes) {
        Decoded::Batch(BatchSeed(seen_seq).deserialize(&mut de).map_err(|e| e.to_string())?)
    } else {
        Decoded::Single(FrameSeed(seen_seq).deserialize(&mut de).map_err(|e| e.to_string())?)
    };
    de.end().map_err(|e| e.to_string())?;
    Ok(decoded)
}

fn decode_msgpack(bytes: &[u8], seen_seq: &Cell<u64>) -> Result<Decoded, String> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(MAX_DEPTH);
    let decoded = if is_msgpack_array(bytes) {
        Decoded::Batch(BatchSeed(seen_seq).deserialize(&mut de).map_err(|e| e.to_string())?)
    } else {
        Decoded::Single(FrameSeed(seen_seq).deserialize(&mut de).map_err(|e| e.to_string())?)
    };
    if de.position() != bytes.len() as u64 {
        return Err("trailing bytes after the MessagePack document".into());
    }
    Ok(decoded)
}
