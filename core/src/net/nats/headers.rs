//! The NATS headers of a packet (docs/protocol.md, "NATS"): what its
//! metadata and envelope say about routing, readable by any NATS tool
//! without decoding the body. A receiver applies them over the body.

use async_nats::HeaderMap;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, Priority, MAX_TIMEOUT_MS, META_HOPS, META_ROUTE_KEY, META_TRACE_ID};

/// Time left to answer, in ms, counted from when the request was sent.
pub const DEADLINE_MS: &str = "Pf-Deadline-Ms";
/// The packet's priority, 1-10.
pub const PRIORITY: &str = "Pf-Priority";
/// `metadata["pf.trace_id"]`.
pub const TRACE_ID: &str = "Pf-Trace-Id";
/// `metadata["pf.route_key"]`.
pub const ROUTE_KEY: &str = "Pf-Route-Key";
/// `metadata["pf.hops"]`: hops so far, this one included.
pub const HOPS: &str = "Pf-Hops";

/// The subject the requester publishes a cancel of this request on
/// (`<namespace>.cancel.<token>`): a serving node that hears one there
/// for the packet stops it (docs/protocol.md, "NATS", "Cancellation").
pub const CANCEL_SUBJECT: &str = "Pf-Cancel-Subject";

/// Adds `Pf-Cancel-Subject: subject` to `headers`; returns the bytes it
/// takes on the wire.
pub fn add_cancel_subject(headers: &mut HeaderMap, subject: &str) -> usize {
    headers.insert(CANCEL_SUBJECT, subject);
    CANCEL_SUBJECT.len() + subject.len() + 4
}

/// The request's `Pf-Cancel-Subject`, if it has one; PF400 naming the
/// header for a subject that is not a cancel subject of `namespace`
/// (no node would ever hear a cancel published there).
pub fn cancel_subject(headers: Option<&HeaderMap>, namespace: &str) -> Result<Option<String>, PfError> {
    let Some(subject) = headers.and_then(|h| h.get(CANCEL_SUBJECT)).map(|v| v.as_str()) else {
        return Ok(None);
    };
    if !super::subject::is_cancel_subject(namespace, subject) {
        let expected = format!("a subject {namespace}.cancel.<escaped token>");
        return Err(bad(CANCEL_SUBJECT, &expected, subject));
    }
    Ok(Some(subject.to_owned()))
}

/// The headers of `packet` sent with `remaining_ms` left as its hop
/// number `hops`, and the bytes they take on the wire (they count
/// against the server's `max_payload`). PF400 naming the metadata key for
/// a trace id or route key holding CR or LF, which no header may carry.
pub fn for_request(packet: &Packet, remaining_ms: u64, hops: u64) -> Result<(HeaderMap, usize), PfError> {
    let mut pairs: Vec<(&'static str, String)> = vec![
        (DEADLINE_MS, remaining_ms.to_string()),
        (PRIORITY, packet.priority.get().to_string()),
        (HOPS, hops.to_string()),
    ];
    for (key, header) in [(META_TRACE_ID, TRACE_ID), (META_ROUTE_KEY, ROUTE_KEY)] {
        if let Some(value) = packet.meta(key).and_then(Value::as_str) {
            if value.contains(['\r', '\n']) {
                return Err(PfError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "metadata[\"{key}\"] must not hold CR or LF to travel as the NATS header {header}"
                    ),
                ));
            }
            pairs.push((header, value.to_owned()));
        }
    }
    // "NATS/1.0\r\n", one "Name: value\r\n" per header, and "\r\n".
    let size = 10 + pairs.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>() + 2;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(name, value);
    }
    Ok((headers, size))
}

/// Applies the headers of a request to the packet its body held:
/// `Pf-Deadline-Ms` becomes `timeout_ms`, `Pf-Priority` the priority, the
/// others their metadata keys. A header that is absent leaves the body's
/// value. PF400 naming the header for a value out of its range.
pub fn apply(headers: Option<&HeaderMap>, packet: &mut Packet) -> Result<(), PfError> {
    let Some(headers) = headers else { return Ok(()) };
    let get = |name: &str| headers.get(name).map(|v| v.as_str());
    if let Some(text) = get(DEADLINE_MS) {
        let ms = number(text).filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms));
        packet.timeout_ms = Some(ms.ok_or_else(|| bad(DEADLINE_MS, "an integer 1-86400000", text))?);
    }
    if let Some(text) = get(PRIORITY) {
        let priority = number(text).and_then(|p| Priority::new(p as i64).ok());
        packet.priority = priority.ok_or_else(|| bad(PRIORITY, "an integer 1-10", text))?;
    }
    let mut meta: Vec<(&str, Value)> = Vec::new();
    if let Some(text) = get(HOPS) {
        meta.push((META_HOPS, number(text).ok_or_else(|| bad(HOPS, "a non-negative integer", text))?.into()));
    }
    for (header, key) in [(TRACE_ID, META_TRACE_ID), (ROUTE_KEY, META_ROUTE_KEY)] {
        if let Some(text) = get(header) {
            meta.push((key, Value::String(text.to_owned())));
        }
    }
    if !meta.is_empty() {
        let map = packet.metadata.get_or_insert_with(Map::new);
        for (key, value) in meta {
            map.insert(key.to_owned(), value);
        }
    }
    Ok(())
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
        apply(Some(&headers), &mut received).unwrap();
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
            let e = apply(Some(&headers), &mut p).unwrap_err();
            assert!(e.is(ErrorCode::BadRequest));
            assert!(e.message.starts_with(&format!("header {name} must be")), "{}", e.message);
        }
        // A cancel subject must be one the nodes of the namespace hear.
        let mut headers = HeaderMap::new();
        assert_eq!(cancel_subject(Some(&headers), "pf").unwrap(), None);
        let size = add_cancel_subject(&mut headers, "pf.cancel.node-1");
        assert_eq!(size, "Pf-Cancel-Subject: pf.cancel.node-1\r\n".len());
        assert_eq!(cancel_subject(Some(&headers), "pf").unwrap().as_deref(), Some("pf.cancel.node-1"));
        let e = cancel_subject(Some(&headers), "other").unwrap_err();
        assert!(e.is(ErrorCode::BadRequest));
        assert!(e.message.starts_with("header Pf-Cancel-Subject must be"), "{}", e.message);
        // No headers: the body's values stand.
        let original = packet();
        let mut p = original.clone();
        apply(None, &mut p).unwrap();
        assert_eq!(p, original);
    }
}
