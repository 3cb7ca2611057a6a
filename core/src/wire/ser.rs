//! Encoding: messages to JSON or MessagePack. Packets use full keys in JSON
//! (the seed's format) and the compact keys in MessagePack.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{Hello, Message};
use crate::error::PfError;
use crate::packet::{Packet, PacketId, PROTOCOL_VERSION};
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
}

impl Serialize for WirePacket<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.packet;
        let k = if self.compact { &COMPACT_KEYS } else { &FULL_KEYS };
        let len = 6
            + usize::from(p.timeout_ms.is_some())
            + usize::from(!p.dependencies.is_empty())
            + usize::from(p.metadata.is_some());
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
        if let Some(meta) = &p.metadata {
            m.serialize_entry(k.metadata, meta)?;
        }
        m.end()
    }
}

impl Serialize for Packet {
    /// The JSON form, with full keys.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WirePacket { packet: self, compact: false }.serialize(s)
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
        m.serialize_entry("features", &self.features)?;
        m.serialize_entry("max_inflight", &self.max_inflight)?;
        if let Some(token) = &self.token {
            m.serialize_entry("token", token)?;
        }
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

impl Serialize for WireMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = self.message;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("type", msg.kind().as_str())?;
        m.serialize_entry("seq", &msg.seq())?;
        match msg {
            Message::Submit { packet, .. } => {
                m.serialize_entry("payload", &WirePacket { packet, compact: self.compact })?
            }
            Message::Result { result, .. } => m.serialize_entry("payload", result)?,
            Message::Error { error, packet_id, .. } => {
                m.serialize_entry("payload", &ErrorBody(error, packet_id.as_ref()))?
            }
            Message::Heartbeat { timestamp, .. } => m.serialize_entry("payload", &Timestamp(*timestamp))?,
            Message::Hello { hello, .. } => m.serialize_entry("payload", hello)?,
        }
        m.end()
    }
}
