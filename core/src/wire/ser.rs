//! Encoding: messages to JSON or MessagePack. Packets use full keys in JSON
//! (the seed's format) and the compact keys in MessagePack.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{Hello, Message, Outgoing};
use crate::error::PfError;
use crate::packet::{Packet, PacketId, META_HOPS, PROTOCOL_VERSION};
use crate::result::PacketResult;

/// Key names for a packet's fields, full or compact.
struct PacketKeys {
    version: &'static str,
    group: &'static str,
    element: &'static str,
    data: &'static str,
    priority: &'static str,
    timeout: &'static str,
    dependencies: &'static str,
    metadata: &'static str,
}

const FULL_KEYS: PacketKeys = PacketKeys {
    version: "version",
    group: "group",
    element: "element",
    data: "data",
    priority: "priority",
    timeout: "timeout_ms",
    dependencies: "dependencies",
    metadata: "metadata",
};

const COMPACT_KEYS: PacketKeys = PacketKeys {
    version: "v",
    group: "g",
    element: "e",
    data: "d",
    priority: "p",
    timeout: "t",
    dependencies: "deps",
    metadata: "m",
};

pub(super) struct WirePacket<'a> {
    pub(super) packet: &'a Packet,
    pub(super) compact: bool,
    /// Written as `metadata["pf.hops"]` (in place of the packet's own, or
    /// after its other keys), for a forwarded submit.
    pub(super) hops: Option<u64>,
}

/// A packet's metadata with `pf.hops` set to `hops`, serialized as the map
/// would be after `insert("pf.hops", hops)`: an existing key keeps its
/// place, a new one comes last.
struct MetadataWithHops<'a>(Option<&'a serde_json::Map<String, serde_json::Value>>, u64);

impl Serialize for MetadataWithHops<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let had = self.0.is_some_and(|m| m.contains_key(META_HOPS));
        let len = self.0.map_or(0, |m| m.len()) + usize::from(!had);
        let mut m = s.serialize_map(Some(len))?;
        for (k, v) in self.0.into_iter().flatten() {
            if k == META_HOPS {
                m.serialize_entry(k, &self.1)?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        if !had {
            m.serialize_entry(META_HOPS, &self.1)?;
        }
        m.end()
    }
}

impl Serialize for WirePacket<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.packet;
        let k = if self.compact { &COMPACT_KEYS } else { &FULL_KEYS };
        let len = 6
            + usize::from(p.timeout_ms.is_some())
            + usize::from(!p.dependencies.is_empty())
            + usize::from(p.metadata.is_some() || self.hops.is_some());
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry(k.version, PROTOCOL_VERSION)?;
        m.serialize_entry("id", p.id.as_str())?;
        m.serialize_entry(k.group, p.group.as_str())?;
        m.serialize_entry(k.element, p.element.as_str())?;
        m.serialize_entry(k.data, &p.data)?;
        m.serialize_entry(k.priority, &p.priority.get())?;
        if let Some(t) = p.timeout_ms {
            m.serialize_entry(k.timeout, &t)?;
        }
        if !p.dependencies.is_empty() {
            let ids: Vec<&str> = p.dependencies.iter().map(PacketId::as_str).collect();
            m.serialize_entry(k.dependencies, &ids)?;
        }
        match self.hops {
            Some(hops) => m.serialize_entry(k.metadata, &MetadataWithHops(p.metadata.as_ref(), hops))?,
            None => {
                if let Some(meta) = &p.metadata {
                    m.serialize_entry(k.metadata, meta)?;
                }
            }
        }
        m.end()
    }
}

impl Serialize for Packet {
    /// The JSON form, with full keys.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WirePacket { packet: self, compact: false, hops: None }.serialize(s)
    }
}

struct ErrorBody<'a>(&'a PfError, Option<&'a PacketId>);

impl Serialize for ErrorBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2 + usize::from(self.1.is_some())))?;
        m.serialize_entry("code", &self.0.code)?;
        m.serialize_entry("message", &self.0.message)?;
        if let Some(id) = self.1 {
            m.serialize_entry("packet_id", id.as_str())?;
        }
        m.end()
    }
}

impl Serialize for PacketResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("packet_id", self.packet_id.as_str())?;
        m.serialize_entry("status", self.status())?;
        match &self.outcome {
            Ok(data) => m.serialize_entry("data", data)?,
            Err(e) => m.serialize_entry("error", &ErrorBody(e, None))?,
        }
        m.serialize_entry("duration_ms", &self.duration_ms)?;
        m.end()
    }
}

impl Serialize for Hello {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("node_id", &self.node_id)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("runtime", &self.runtime)?;
        m.serialize_entry("protocol", &self.protocol)?;
        let keys: Vec<String> =
            self.handlers.iter().map(|(g, e)| format!("{}:{}", g.as_str(), e.as_str())).collect();
        m.serialize_entry("handlers", &keys)?;
        if !self.stdlib.is_empty() {
            let keys: Vec<String> =
                self.stdlib.iter().map(|(g, e)| format!("{}:{}", g.as_str(), e.as_str())).collect();
            m.serialize_entry("stdlib", &keys)?;
        }
        m.serialize_entry("features", &self.features)?;
        m.serialize_entry("max_inflight", &self.max_inflight)?;
        if self.heartbeat_ms > 0 {
            m.serialize_entry("heartbeat_ms", &self.heartbeat_ms)?;
        }
        if self.max_frame_bytes > 0 {
            m.serialize_entry("max_frame_bytes", &self.max_frame_bytes)?;
        }
        if !self.actor_hosts.is_empty() {
            m.serialize_entry("actor_hosts", &self.actor_hosts)?;
        }
        if let Some(direct) = self.direct.as_deref() {
            m.serialize_entry("direct", direct)?;
        }
        if let Some(token) = &self.token {
            m.serialize_entry("token", token)?;
        }
        m.end()
    }
}

struct CancelBody<'a>(&'a PacketId);

impl Serialize for CancelBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("packet_id", self.0.as_str())?;
        m.end()
    }
}

struct Timestamp(u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("timestamp", &self.0)?;
        m.end()
    }
}

/// A message as it goes on the wire.
pub(super) struct WireMessage<'a> {
    pub(super) message: &'a Message,
    pub(super) compact: bool,
}

/// A queued message as it goes on the wire.
pub(super) struct WireOutgoing<'a> {
    pub(super) outgoing: &'a Outgoing,
    pub(super) compact: bool,
}

impl Serialize for WireOutgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.outgoing {
            Outgoing::Message(message) => WireMessage { message, compact: self.compact }.serialize(s),
            Outgoing::Forward { seq, packet, hops } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("type", "submit")?;
                m.serialize_entry("seq", seq)?;
                let packet = WirePacket { packet, compact: self.compact, hops: Some(*hops) };
                m.serialize_entry("payload", &packet)?;
                m.end()
            }
        }
    }
}

impl Serialize for WireMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = self.message;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("type", msg.kind().as_str())?;
        m.serialize_entry("seq", &msg.seq())?;
        match msg {
            Message::Submit { packet, .. } => {
                m.serialize_entry("payload", &WirePacket { packet, compact: self.compact, hops: None })?
            }
            Message::Result { result, .. } => m.serialize_entry("payload", result)?,
            Message::Error { error, packet_id, .. } => {
                m.serialize_entry("payload", &ErrorBody(error, packet_id.as_ref()))?
            }
            Message::Heartbeat { timestamp, .. } => m.serialize_entry("payload", &Timestamp(*timestamp))?,
            Message::Hello { hello, .. } => m.serialize_entry("payload", hello)?,
            Message::Cancel { packet_id, .. } => m.serialize_entry("payload", &CancelBody(packet_id))?,
        }
        m.end()
    }
}

/// Writes a `submit` or `result` message as JSON, byte for byte as serde_json
/// writes its [`WireMessage`], but with the frame's own keys and
/// punctuation copied as they are instead of going through serde (which
/// escapes every key, one call each): these two are the messages of every
/// packet, and a hub writes two of them per packet it forwards. Strings are
/// copied as they are when they need no escape, and values (`data`,
/// `metadata`) still go through serde_json. Returns false, having written
/// nothing, for the other kinds.
pub(super) fn write_json_fast(message: &Message, out: &mut Vec<u8>) -> bool {
    match message {
        Message::Submit { seq, packet } => {
            json_submit(*seq, packet, None, out);
            true
        }
        Message::Result { seq, result } => {
            out.extend_from_slice(b"{\"type\":\"result\",\"seq\":");
            json_u64(*seq, out);
            out.extend_from_slice(b",\"payload\":{\"packet_id\":");
            json_str(result.packet_id.as_str(), out);
            match &result.outcome {
                Ok(data) => {
                    out.extend_from_slice(b",\"status\":\"success\",\"data\":");
                    json_value(data, out);
                }
                Err(e) => {
                    out.extend_from_slice(b",\"status\":\"error\",\"error\":{\"code\":");
                    json_str(&e.code, out);
                    out.extend_from_slice(b",\"message\":");
                    json_str(&e.message, out);
                    out.push(b'}');
                }
            }
            out.extend_from_slice(b",\"duration_ms\":");
            json_u64(result.duration_ms, out);
            out.extend_from_slice(b"}}");
            true
        }
        _ => false,
    }
}

/// A submit as JSON (see [`write_json_fast`]), with `metadata["pf.hops"]`
/// set to `hops` when given.
pub(super) fn json_submit(seq: u64, p: &Packet, hops: Option<u64>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"submit\",\"seq\":");
    json_u64(seq, out);
    out.extend_from_slice(b",\"payload\":{\"version\":\"");
    out.extend_from_slice(PROTOCOL_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"id\":");
    json_str(p.id.as_str(), out);
    out.extend_from_slice(b",\"group\":");
    json_str(p.group.as_str(), out);
    out.extend_from_slice(b",\"element\":");
    json_str(p.element.as_str(), out);
    out.extend_from_slice(b",\"data\":");
    json_value(&p.data, out);
    out.extend_from_slice(b",\"priority\":");
    json_u64(p.priority.get().into(), out);
    if let Some(t) = p.timeout_ms {
        out.extend_from_slice(b",\"timeout_ms\":");
        json_u64(t, out);
    }
    if !p.dependencies.is_empty() {
        out.extend_from_slice(b",\"dependencies\":[");
        for (i, dep) in p.dependencies.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(dep.as_str(), out);
        }
        out.push(b']');
    }
    match (hops, &p.metadata) {
        (None, None) => {}
        (None, Some(meta)) => {
            out.extend_from_slice(b",\"metadata\":");
            json_value(meta, out);
        }
        (Some(hops), meta) => {
            out.extend_from_slice(b",\"metadata\":{");
            let mut had = false;
            for (i, (k, v)) in meta.iter().flat_map(|m| m.iter()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(k, out);
                out.push(b':');
                if k == META_HOPS {
                    had = true;
                    json_u64(hops, out);
                } else {
                    json_value(v, out);
                }
            }
            if !had {
                if meta.as_ref().is_some_and(|m| !m.is_empty()) {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"pf.hops\":");
                json_u64(hops, out);
            }
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}");
}

/// A queued message as JSON: [`write_json_fast`] for the messages it
/// takes, serde for the rest.
pub(super) fn write_json_outgoing(outgoing: &Outgoing, out: &mut Vec<u8>) {
    match outgoing {
        Outgoing::Forward { seq, packet, hops } => json_submit(*seq, packet, Some(*hops), out),
        Outgoing::Message(message) => {
            if !write_json_fast(message, out) {
                json_value(&WireMessage { message, compact: false }, out);
            }
        }
    }
}

/// A JSON string: copied between quotes when nothing in it needs an escape
/// (what serde_json escapes: control characters, `"` and `\`), else
/// written by serde_json.
fn json_str(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        json_value(s, out);
    }
}

fn json_u64(n: u64, out: &mut Vec<u8>) {
    json_value(&n, out);
}

fn json_value<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // JSON-shaped values with string keys always encode; a Vec never fails.
    serde_json::to_writer(out, value).expect("JSON-shaped values always encode");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use crate::error::{ErrorCode, PfError};
    use crate::packet::{Element, Group, Packet, PacketId, Priority};
    use crate::result::PacketResult;
    use crate::wire::{Codec, Message};

    /// The fast writer's frame, checked against serde's byte for byte and
    /// decoded back to the same message.
    fn check(message: &Message) {
        let fast = Codec::Json.encode_to_vec(message);
        let reference = Codec::Json.encode_with_serde(message);
        assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&reference));
        match Codec::Json.frame(message) {
            crate::wire::WireFrame::Text(text) => assert_eq!(text.as_bytes(), &reference[..]),
            other => panic!("a JSON frame is text, got {other:?}"),
        }
        let back = Codec::Json.decode(&fast).into_iter().next().unwrap().unwrap();
        assert_eq!(&back, message);
    }

    fn submit(id: &str, data: serde_json::Value) -> Packet {
        let mut p = Packet::new(Group::DataFlow, Element::new("transform").unwrap(), data);
        p.id = PacketId::new(id).unwrap();
        p
    }

    #[test]
    fn submits_and_results_match_serde() {
        let plain = submit("550e8400-e29b-41d4-a716-446655440000", json!("hello world"));
        check(&Message::Submit { seq: 1, packet: Box::new(plain.clone()) });
        let mut full =
            submit("quote\"back\\slash\nnew\u{1}ctl é ✓", json!({"f": 1.5, "n": null, "a": [1, -2, "x\ty"]}));
        full.group = Group::ResourceMgmt;
        full.priority = Priority::new(10).unwrap();
        full.timeout_ms = Some(86_400_000);
        full.dependencies = vec![PacketId::new("a").unwrap(), PacketId::new("b\"c").unwrap()];
        full.metadata = Some(
            json!({"z": 1, "pf.hops": 3, "a": {"deep": [true]}, "pf.trace_id": "t"})
                .as_object()
                .unwrap()
                .clone(),
        );
        check(&Message::Submit { seq: u64::MAX, packet: Box::new(full.clone()) });
        let mut empty_meta = plain.clone();
        empty_meta.metadata = Some(serde_json::Map::new());
        check(&Message::Submit { seq: 0, packet: Box::new(empty_meta) });
        for data in [json!(null), json!(0), json!(-1), json!(1e300), json!("HELLO"), json!([]), json!({})] {
            let ok = PacketResult::success(plain.id.clone(), data, 12);
            check(&Message::Result { seq: 7, result: ok });
        }
        let failed = PacketResult::failure(
            full.id.clone(),
            PfError::new(ErrorCode::HandlerFailed, "boom: \"quoted\"\n\ttabbed \u{7f} é"),
            u64::MAX,
        );
        check(&Message::Result { seq: 8, result: failed });
        // Other kinds go through serde; batches mix both.
        let heartbeat = Message::Heartbeat { seq: 3, timestamp: 99 };
        check(&heartbeat);
        let error = Message::Error {
            seq: 4,
            error: PfError::new(ErrorCode::BadRequest, "priority must be an integer 1-10, got 11"),
            packet_id: Some(PacketId::new("p").unwrap()),
        };
        let batch = vec![
            Message::Submit { seq: 1, packet: Box::new(plain.clone()) },
            heartbeat,
            Message::Result { seq: 2, result: PacketResult::success(plain.id.clone(), json!(1), 0) },
            error,
            Message::Submit { seq: 5, packet: Box::new(full) },
        ];
        let mut fast = Vec::new();
        Codec::Json.encode_batch(&batch, &mut fast);
        let reference = serde_json::to_vec(&super::super::codec::tests_batch(&batch)).unwrap();
        assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&reference));
        match Codec::Json.batch_frame(&batch) {
            crate::wire::WireFrame::Text(text) => assert_eq!(text.as_bytes(), &reference[..]),
            other => panic!("a JSON frame is text, got {other:?}"),
        }
        let mut one = Vec::new();
        Codec::Json.encode_batch(&batch[..1], &mut one);
        let mut none = Vec::new();
        Codec::Json.encode_batch(&[], &mut none);
        assert_eq!(none, b"[]");
        assert_eq!(one[0], b'[');
    }

    /// A forwarded submit encodes as the submit whose metadata got
    /// `pf.hops` inserted, in both codecs, alone and in a batch.
    #[test]
    fn forwarded_submits_encode_as_with_the_hop_inserted() {
        use crate::wire::Outgoing;
        let metas = [
            None,
            Some(json!({})),
            Some(json!({"pf.hops": 2})),
            Some(json!({"a": 1, "pf.hops": 7, "z": {"k": [1]}})),
            Some(json!({"pf.trace_id": "t", "user\"s": "x\ny", "pf.route_key": "k"})),
        ];
        for (i, meta) in metas.into_iter().enumerate() {
            let mut packet = submit(&format!("fwd-{i}"), json!({"n": i}));
            packet.timeout_ms = Some(1234);
            packet.metadata = meta.map(|m| m.as_object().unwrap().clone());
            let hops = 3 + i as u64;
            let seq = 40 + i as u64;
            let mut expected = packet.clone();
            expected.metadata.get_or_insert_with(Default::default).insert("pf.hops".into(), hops.into());
            let expected = Message::Submit { seq, packet: Box::new(expected) };
            let heartbeat = Message::Heartbeat { seq: 1, timestamp: 2 };
            for codec in [Codec::Json, Codec::MsgPack] {
                let forward = || Outgoing::Forward { seq, packet: Box::new(packet.clone()), hops };
                assert_eq!(codec.frame_outgoing(&forward()), codec.frame(&expected), "{codec:?} {i}");
                let batch =
                    [Outgoing::Message(expected.clone()), Outgoing::Message(heartbeat.clone()), forward()];
                let reference = [expected.clone(), heartbeat.clone(), expected.clone()];
                assert_eq!(
                    codec.batch_frame_outgoing(&batch, usize::MAX),
                    (codec.batch_frame(&reference), 3),
                    "{codec:?} {i}"
                );
                let back = match codec.frame_outgoing(&forward()) {
                    crate::wire::WireFrame::Text(t) => codec.decode(t.as_bytes()),
                    crate::wire::WireFrame::Binary(b) => codec.decode(&b),
                };
                assert_eq!(back.into_iter().next().unwrap().unwrap(), expected, "{codec:?} {i}");
            }
        }
    }

    /// Batches cut at their cap: every frame of more than one message fits
    /// it, a message too large for it goes alone as a plain frame, and the
    /// frames hold every message once, in order.
    #[test]
    fn batches_are_cut_to_fit_their_cap() {
        use crate::wire::{Outgoing, WireFrame};
        let sizes = [10, 2000, 30, 30, 5000, 30, 30, 30, 900, 20_000, 40];
        let all: Vec<Outgoing> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let packet = submit(&format!("p{i}"), json!("x".repeat(*n)));
                Outgoing::Message(Message::Submit { seq: i as u64, packet: Box::new(packet) })
            })
            .collect();
        for codec in [Codec::Json, Codec::MsgPack] {
            for cap in [64, 1000, 4096, 8000, 1 << 20] {
                let mut seqs = Vec::new();
                let mut at = 0;
                while at < all.len() {
                    let (frame, taken) = codec.batch_frame_outgoing(&all[at..], cap);
                    assert!(taken >= 1);
                    let bytes = match &frame {
                        WireFrame::Text(t) => t.as_bytes(),
                        WireFrame::Binary(b) => &b[..],
                    };
                    let decoded = codec.decode(bytes);
                    match &decoded {
                        crate::wire::Decoded::Single(_) => assert_eq!(taken, 1, "{codec:?} cap {cap}"),
                        crate::wire::Decoded::Batch(items) => {
                            assert_eq!(items.len(), taken, "{codec:?} cap {cap}");
                            assert!(
                                taken > 1 && bytes.len() <= cap,
                                "{codec:?} cap {cap}: {} bytes",
                                bytes.len()
                            );
                        }
                    }
                    if taken == 1 {
                        assert_eq!(frame, codec.frame_outgoing(&all[at]), "{codec:?} cap {cap}");
                    }
                    seqs.extend(decoded.into_iter().map(|m| m.unwrap().seq()));
                    at += taken;
                }
                assert_eq!(seqs, (0..sizes.len() as u64).collect::<Vec<_>>(), "{codec:?} cap {cap}");
            }
            // With room for all, one frame holds all.
            assert_eq!(codec.batch_frame_outgoing(&all, 1 << 20).1, all.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]
        #[test]
        fn any_strings_match_serde(id in "\\PC{1,40}|[\\x00-\\x7f]{1,40}", text in any::<String>(), seq in any::<u64>(), ms in any::<u64>()) {
            let packet = submit(&id, json!({ "text": text.clone() }));
            check(&Message::Submit { seq, packet: Box::new(packet.clone()) });
            let result = PacketResult::failure(packet.id.clone(), PfError::new(ErrorCode::HandlerFailed, text.clone()), ms);
            check(&Message::Result { seq, result });
            let result = PacketResult::success(packet.id, json!(text), ms);
            check(&Message::Result { seq, result });
        }
    }
}
