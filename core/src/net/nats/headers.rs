//! The NATS headers of a packet (docs/protocol.md, "NATS"): what its
//! metadata and envelope say about routing, readable by any NATS tool
//! without decoding the body. A receiver applies them over the body.
//!
//! Every request pays for its headers twice over (built here and parsed
//! by the client on each side into a hash map), so names are static (no
//! copy), defaults stay off the wire, and a request's headers are read in
//! one pass over the map rather than one lookup per name.

use async_nats::header::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, Priority, MAX_TIMEOUT_MS, META_HOPS, META_ROUTE_KEY, META_TRACE_ID};

/// Time left to answer, in ms, counted from when the request was sent.
pub const DEADLINE_MS: &str = "Pf-Deadline-Ms";
/// The packet's priority, 1-10; absent: the default, 5.
pub const PRIORITY: &str = "Pf-Priority";
/// `metadata["pf.trace_id"]`.
pub const TRACE_ID: &str = "Pf-Trace-Id";
/// `metadata["pf.route_key"]`.
pub const ROUTE_KEY: &str = "Pf-Route-Key";
/// `metadata["pf.hops"]`: hops so far, this one included; absent: 1.
pub const HOPS: &str = "Pf-Hops";

/// The subject the requester publishes a cancel of this request on
/// (`<namespace>.cancel.<token>`): a serving node that hears one there
/// for the packet stops it (docs/protocol.md, "NATS", "Cancellation").
pub const CANCEL_SUBJECT: &str = "Pf-Cancel-Subject";

/// The bytes a header takes in a message: `Name: value\r\n`.
fn wire_len(name: &str, value: &str) -> usize {
    name.len() + value.len() + 4
}

/// Adds `Pf-Cancel-Subject: subject` to `headers`; returns the bytes it
/// takes on the wire.
pub fn add_cancel_subject(headers: &mut HeaderMap, subject: &str) -> usize {
    headers.insert(HeaderName::from_static(CANCEL_SUBJECT), subject);
    wire_len(CANCEL_SUBJECT, subject)
}

/// The headers of `packet` sent with `remaining_ms` left as its hop
/// number `hops`, and the bytes they take on the wire (they count
/// against the server's `max_payload`). `Pf-Priority` and `Pf-Hops` are
/// left out at their defaults (5, and 1: the first hop). PF400 naming the
/// metadata key for a trace id or route key holding CR or LF, which no
/// header may carry.
pub fn for_request(packet: &Packet, remaining_ms: u64, hops: u64) -> Result<(HeaderMap, usize), PfError> {
    let mut headers = HeaderMap::new();
    // "NATS/1.0\r\n" and the closing "\r\n".
    let mut size = 10 + 2;
    let mut put = |name: &'static str, value: String| {
        size += wire_len(name, &value);
        headers.insert(HeaderName::from_static(name), value);
    };
    put(DEADLINE_MS, remaining_ms.to_string());
    if packet.priority != Priority::DEFAULT {
        put(PRIORITY, packet.priority.get().to_string());
    }
    if hops != 1 {
        put(HOPS, hops.to_string());
    }
    if let Some(metadata) = &packet.metadata {
        for (key, header) in [(META_TRACE_ID, TRACE_ID), (META_ROUTE_KEY, ROUTE_KEY)] {
            let Some(value) = metadata.get(key).and_then(Value::as_str) else { continue };
            if value.contains(['\r', '\n']) {
                return Err(PfError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "metadata[\"{key}\"] must not hold CR or LF to travel as the NATS header {header}"
                    ),
                ));
            }
            put(header, value.to_owned());
        }
    }
    Ok((headers, size))
}

/// The `Pf-*` headers of a request, as read from its header map in one
/// pass; `None` for each that is absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHeaders<'a> {
    deadline_ms: Option<&'a str>,
    priority: Option<&'a str>,
    hops: Option<&'a str>,
    trace_id: Option<&'a str>,
    route_key: Option<&'a str>,
    cancel_subject: Option<&'a str>,
}

impl<'a> RequestHeaders<'a> {
    /// Picks the `Pf-*` headers out of `headers` (the first value of
    /// each; names match exactly, as `HeaderMap::get` does). Others are
    /// ignored.
    pub fn read(headers: Option<&'a HeaderMap>) -> RequestHeaders<'a> {
        let mut read = RequestHeaders::default();
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            let Some(value) = values.first().map(|v| v.as_str()) else { continue };
            let slot = match AsRef::<str>::as_ref(name) {
                DEADLINE_MS => &mut read.deadline_ms,
                PRIORITY => &mut read.priority,
                HOPS => &mut read.hops,
                TRACE_ID => &mut read.trace_id,
                ROUTE_KEY => &mut read.route_key,
                CANCEL_SUBJECT => &mut read.cancel_subject,
                _ => continue,
            };
            *slot = Some(value);
        }
        read
    }

    /// Applies the headers over the packet the request's body held:
    /// `Pf-Deadline-Ms` becomes `timeout_ms`, `Pf-Priority` the priority,
    /// the others their metadata keys. A header that is absent leaves the
    /// body's value. PF400 naming the header for a value out of its range.
    pub fn apply(&self, packet: &mut Packet) -> Result<(), PfError> {
        if let Some(text) = self.deadline_ms {
            let ms = number(text).filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms));
            packet.timeout_ms = Some(ms.ok_or_else(|| bad(DEADLINE_MS, "an integer 1-86400000", text))?);
        }
        if let Some(text) = self.priority {
            let priority = number(text).and_then(|p| Priority::new(p as i64).ok());
            packet.priority = priority.ok_or_else(|| bad(PRIORITY, "an integer 1-10", text))?;
        }
        let hops = match self.hops {
            Some(text) => Some(number(text).ok_or_else(|| bad(HOPS, "a non-negative integer", text))?),
            None => None,
        };
        if hops.is_none() && self.trace_id.is_none() && self.route_key.is_none() {
            return Ok(());
        }
        let map = packet.metadata.get_or_insert_with(Map::new);
        if let Some(hops) = hops {
            map.insert(META_HOPS.to_owned(), hops.into());
        }
        for (text, key) in [(self.trace_id, META_TRACE_ID), (self.route_key, META_ROUTE_KEY)] {
            let Some(text) = text else { continue };
            // The body holds the same value when a node sent it: no copy.
            if map.get(key).and_then(Value::as_str) != Some(text) {
                map.insert(key.to_owned(), Value::String(text.to_owned()));
            }
        }
        Ok(())
    }

    /// The request's `Pf-Cancel-Subject`, if it has one; PF400 naming the
    /// header for a subject that is not a cancel subject of `namespace`
    /// (no node would ever hear a cancel published there).
    pub fn cancel_subject(&self, namespace: &str) -> Result<Option<&'a str>, PfError> {
        let Some(subject) = self.cancel_subject else { return Ok(None) };
        if !super::subject::is_cancel_subject(namespace, subject) {
            let expected = format!("a subject {namespace}.cancel.<escaped token>");
            return Err(bad(CANCEL_SUBJECT, &expected, subject));
        }
        Ok(Some(subject))
    }
}

fn number(text: &str) -> Option<u64> {
    // Digits only: no sign, no spaces (`u64::from_str` takes a `+`).
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn bad(header: &str, expected: &str, got: &str) -> PfError {
    let shown: String = got.chars().take(40).collect();
    PfError::new(ErrorCode::BadRequest, format!("header {header} must be {expected}, got {shown:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use serde_json::json;

    fn packet() -> Packet {
        let mut meta = Map::new();
        meta.insert(META_TRACE_ID.into(), json!("trace-1"));
        meta.insert(META_ROUTE_KEY.into(), json!("user 42"));
        Packet::build("df", "echo", json!(1))
            .unwrap()
            .with_priority(Priority::new(9).unwrap())
            .with_metadata(meta)
    }

    #[test]
    fn headers_carry_deadline_priority_trace_route_key_and_hops() {
        let (headers, size) = for_request(&packet(), 1500, 2).unwrap();
        let get = |n: &str| headers.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get(DEADLINE_MS).as_deref(), Some("1500"));
        assert_eq!(get(PRIORITY).as_deref(), Some("9"));
        assert_eq!(get(HOPS).as_deref(), Some("2"));
        assert_eq!(get(TRACE_ID).as_deref(), Some("trace-1"));
        assert_eq!(get(ROUTE_KEY).as_deref(), Some("user 42"));
        let expected = 10
            + [("Pf-Deadline-Ms", "1500"), ("Pf-Priority", "9"), ("Pf-Hops", "2")]
                .iter()
                .chain(&[("Pf-Trace-Id", "trace-1"), ("Pf-Route-Key", "user 42")])
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
            + 2;
        assert_eq!(size, expected);

        let mut received = Packet::build("df", "echo", json!(1)).unwrap();
        RequestHeaders::read(Some(&headers)).apply(&mut received).unwrap();
        assert_eq!(received.timeout_ms, Some(1500));
        assert_eq!(received.priority.get(), 9);
        assert_eq!(received.meta(META_HOPS), Some(&json!(2)));
        assert_eq!(received.meta(META_TRACE_ID), Some(&json!("trace-1")));
        assert_eq!(received.meta(META_ROUTE_KEY), Some(&json!("user 42")));
    }

    #[test]
    fn no_header_value_holds_cr_or_lf() {
        for bad_value in ["a\r\nPf-Hops: 0", "a\nb", "a\rb"] {
            let mut p = packet();
            p.metadata.as_mut().unwrap().insert(META_TRACE_ID.into(), json!(bad_value));
            let e = for_request(&p, 10, 1).unwrap_err();
            assert!(e.is(ErrorCode::BadRequest));
            assert!(e.message.contains("metadata[\"pf.trace_id\"]"), "{}", e.message);
        }
    }

    #[test]
    fn bad_header_values_are_pf400_naming_the_header() {
        for (name, value) in [
            (DEADLINE_MS, "0"),
            (DEADLINE_MS, "86400001"),
            (DEADLINE_MS, "+5"),
            (PRIORITY, "11"),
            (PRIORITY, "x"),
            (HOPS, "-1"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, value);
            let mut p = Packet::build("df", "echo", json!(1)).unwrap();
            let e = RequestHeaders::read(Some(&headers)).apply(&mut p).unwrap_err();
            assert!(e.is(ErrorCode::BadRequest));
            assert!(e.message.starts_with(&format!("header {name} must be")), "{}", e.message);
        }
        // A cancel subject must be one the nodes of the namespace hear.
        let mut headers = HeaderMap::new();
        assert_eq!(RequestHeaders::read(Some(&headers)).cancel_subject("pf").unwrap(), None);
        let size = add_cancel_subject(&mut headers, "pf.cancel.node-1");
        assert_eq!(size, "Pf-Cancel-Subject: pf.cancel.node-1\r\n".len());
        let read = RequestHeaders::read(Some(&headers));
        assert_eq!(read.cancel_subject("pf").unwrap(), Some("pf.cancel.node-1"));
        let e = read.cancel_subject("other").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert!(e.message.starts_with("header Pf-Cancel-Subject must be"), "{}", e.message);
        // No headers: the body's values stand.
        let original = packet();
        let mut p = original.clone();
        RequestHeaders::read(None).apply(&mut p).unwrap();
        assert_eq!(p, original);
    }

    #[test]
    fn defaults_stay_off_the_wire_and_the_body_keeps_its_values() {
        let mut sent = Packet::build("df", "echo", json!(1)).unwrap();
        sent.metadata = Some(Map::from_iter([(META_HOPS.to_owned(), json!(1))]));
        let (headers, size) = for_request(&sent, 700, 1).unwrap();
        let names: Vec<String> = headers.iter().map(|(n, _)| AsRef::<str>::as_ref(n).to_owned()).collect();
        assert_eq!(names, [DEADLINE_MS]);
        assert_eq!(size, "NATS/1.0\r\nPf-Deadline-Ms: 700\r\n\r\n".len());
        // What the body says stands where no header speaks.
        let mut received = sent.clone();
        received.priority = Priority::new(5).unwrap();
        RequestHeaders::read(Some(&headers)).apply(&mut received).unwrap();
        assert_eq!(received.timeout_ms, Some(700));
        assert_eq!(received.priority, Priority::DEFAULT);
        assert_eq!(received.meta(META_HOPS), Some(&json!(1)));
        // One hop further, or another priority: on the wire again.
        let (headers, _) = for_request(&sent.with_priority(Priority::new(1).unwrap()), 700, 2).unwrap();
        assert_eq!(headers.get(PRIORITY).map(|v| v.as_str()), Some("1"));
        assert_eq!(headers.get(HOPS).map(|v| v.as_str()), Some("2"));
    }

    #[test]
    fn other_headers_and_repeated_values_are_read_as_get_reads_them() {
        let mut headers = HeaderMap::new();
        headers.append(DEADLINE_MS, "250");
        headers.append(DEADLINE_MS, "999");
        headers.insert("pf-deadline-ms", "1");
        headers.insert("X-Other", "x");
        let mut p = Packet::build("df", "echo", json!(1)).unwrap();
        RequestHeaders::read(Some(&headers)).apply(&mut p).unwrap();
        assert_eq!(headers.get(DEADLINE_MS).map(|v| v.as_str()), Some("250"));
        assert_eq!(p.timeout_ms, Some(250));
        assert_eq!(p.metadata, None);
    }
}
