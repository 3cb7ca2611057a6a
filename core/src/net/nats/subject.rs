//! Subjects of handler keys (docs/protocol.md, "NATS"): a namespace
//! prefix, the group, and the element escaped so that every subject is a
//! plain literal (no `.` inside a token, no wildcard, no whitespace).

use crate::error::{ErrorCode, PfError};
use crate::packet::{Element, Group};

/// The namespace used when none is given: subjects `pf.<group>.<element>`.
pub const DEFAULT_NAMESPACE: &str = "pf";

/// Longest namespace, in bytes (a subject stays well under NATS's limits).
const MAX_NAMESPACE_LEN: usize = 128;

/// Checks a namespace: one or more tokens of `[A-Za-z0-9_-]` joined by
/// dots. Wildcards, whitespace and empty tokens would make the subjects
/// of one system match another's, so they are refused (PF400 naming
/// `namespace`).
pub fn check_namespace(namespace: &str) -> Result<(), PfError> {
    let token_ok =
        |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if namespace.len() > MAX_NAMESPACE_LEN || !namespace.split('.').all(token_ok) {
        return Err(PfError::new(
            ErrorCode::BadRequest,
            format!(
                "namespace must be 1-128 bytes of dot-separated tokens of [A-Za-z0-9_-], got {:?}",
                namespace
            ),
        ));
    }
    Ok(())
}

/// Whether `b` stands for itself in a subject token; every other byte is
/// written `%HH`.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The escaped form of `text` as one subject token: bytes outside
/// `[A-Za-z0-9_-]` (`.`, `*`, `>`, whitespace, `%` itself, anything else)
/// become `%` and two upper-case hex digits. Reversed by [`unescape`].
pub fn escape(text: &str) -> String {
    escape_with(text, b'%')
}

/// The text a token made by [`escape`] stands for; `None` for a token no
/// escape produces (a bad `%` sequence, a raw byte that should have been
/// escaped, or bytes that are not UTF-8).
pub fn unescape(token: &str) -> Option<String> {
    unescape_with(token, b'%')
}

/// [`escape`] with `marker` before the hex digits (a key-value bucket's
/// keys cannot hold `%`: they use `=`).
pub(crate) fn escape_with(text: &str, marker: u8) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for b in text.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push(char::from(marker));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xF)]));
        }
    }
    out
}

/// [`unescape`] of a token [`escape_with`] made with `marker`.
pub(crate) fn unescape_with(token: &str, marker: u8) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            m if m == marker => {
                let hex = token.get(i + 1..i + 3)?;
                let b = u8::from_str_radix(hex, 16).ok()?;
                // One spelling per text: upper-case digits, and no escape
                // of a byte that stands for itself.
                if plain(b) || hex.bytes().any(|h| h.is_ascii_lowercase()) {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The subject a handler key is served on: `<namespace>.<group>.<escaped
/// element>`.
pub fn key_subject(namespace: &str, group: Group, element: &str) -> String {
    format!("{namespace}.{}.{}", group.as_str(), escape(element))
}

/// The subjects of handler keys in one namespace, each built once by
/// [`key_subject`] and shared after (a clone is a reference count): a
/// request reuses its key's subject instead of formatting and escaping
/// it again. Bounded: past [`KeySubjects::MAX`] keys it starts over.
pub(crate) struct KeySubjects {
    namespace: String,
    /// By group (its index in [`Group`]), then element.
    built: parking_lot::Mutex<[foldhash::HashMap<Box<str>, async_nats::Subject>; 6]>,
}

impl KeySubjects {
    /// The most keys kept; a node asking more keys than this builds the
    /// subjects of some of them again.
    pub(crate) const MAX: usize = 4096;

    pub(crate) fn new(namespace: &str) -> KeySubjects {
        KeySubjects { namespace: namespace.to_owned(), built: Default::default() }
    }

    /// The subject of `group:element`: [`key_subject`].
    pub(crate) fn get(&self, group: Group, element: &str) -> async_nats::Subject {
        let mut built = self.built.lock();
        if let Some(subject) = built[group as usize].get(element) {
            return subject.clone();
        }
        if built.iter().map(|m| m.len()).sum::<usize>() >= Self::MAX {
            built.iter_mut().for_each(|m| m.clear());
        }
        let subject = async_nats::Subject::from(key_subject(&self.namespace, group, element));
        built[group as usize].insert(element.into(), subject.clone());
        subject
    }
}

/// The handler key of a subject made by [`key_subject`] in `namespace`.
pub fn parse_key_subject(namespace: &str, subject: &str) -> Option<(Group, Element)> {
    let rest = subject.strip_prefix(namespace)?.strip_prefix('.')?;
    let (group, element) = rest.split_once('.')?;
    let element = unescape(element)?;
    Some((Group::parse(group).ok()?, Element::new(&element).ok()?))
}

/// The word after the namespace of the subjects cancels travel on
/// (docs/protocol.md, "NATS", "Cancellation"): not a group, so never a
/// key's subject.
const CANCEL: &str = "cancel";

/// The subject a requester publishes the cancels of its requests on:
/// `<namespace>.cancel.<escaped requester id>` (a node's id for a node).
pub fn cancel_subject(namespace: &str, requester: &str) -> String {
    format!("{namespace}.{CANCEL}.{}", escape(requester))
}

/// What every node subscribes to hear cancels: `<namespace>.cancel.*`.
pub fn cancel_wildcard(namespace: &str) -> String {
    format!("{namespace}.{CANCEL}.*")
}

/// Whether `subject` is one [`cancel_wildcard`] matches: the namespace,
/// `cancel`, and one token that [`escape`] makes.
pub fn is_cancel_subject(namespace: &str, subject: &str) -> bool {
    subject
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_prefix(CANCEL))
        .and_then(|rest| rest.strip_prefix('.'))
        // A token of plain bytes only (a node id, most often) is its own
        // text: nothing to decode.
        .is_some_and(|token| !token.is_empty() && (token.bytes().all(plain) || unescape(token).is_some()))
}

/// A name for the key's ADR-32 endpoint, of the characters service names
/// may hold (`[A-Za-z0-9_-]`): the group and the escaped element, with
/// `%` written as `_`. Only a label; the endpoint's subject and its
/// `key` metadata are exact.
pub fn endpoint_name(group: Group, element: &str) -> String {
    format!("{}-{}", group.as_str(), escape(element).replace('%', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_subjects_hold_one_escaped_token_after_the_namespace() {
        let subject = cancel_subject("pf.prod", "node a.1");
        assert_eq!(subject, "pf.prod.cancel.node%20a%2E1");
        assert!(is_cancel_subject("pf.prod", &subject));
        assert_eq!(cancel_wildcard("pf.prod"), "pf.prod.cancel.*");
        for other in
            ["pf.prod.cancel.", "pf.prod.cancel.a.b", "pf.prod.df.x", "pf.cancel.a", "pf.prod.cancel.a%2e"]
        {
            assert!(!is_cancel_subject("pf.prod", other), "{other}");
        }
    }

    #[test]
    fn elements_with_dots_become_one_token() {
        assert_eq!(key_subject("pf", Group::DataFlow, "transform"), "pf.df.transform");
        assert_eq!(key_subject("pf", Group::DataFlow, "a.b-c_d"), "pf.df.a%2Eb-c_d");
        assert_eq!(key_subject("acme.prod", Group::ControlFlow, "x"), "acme.prod.cf.x");
        let parsed = parse_key_subject("acme.prod", "acme.prod.df.a%2Eb").unwrap();
        assert_eq!((parsed.0, parsed.1.as_str()), (Group::DataFlow, "a.b"));
        // Another namespace's subject is not this one's key.
        assert!(parse_key_subject("acme", "acme.prod.df.a").is_none());
        assert!(parse_key_subject("pf", "pf.zz.a").is_none());
    }

    #[test]
    fn key_subjects_are_built_once_and_stay_bounded() {
        let subjects = KeySubjects::new("acme");
        let first = subjects.get(Group::DataFlow, "a.b");
        assert_eq!(first.as_str(), "acme.df.a%2Eb");
        assert_eq!(subjects.get(Group::ControlFlow, "a.b").as_str(), "acme.cf.a%2Eb");
        // The same bytes, not a copy.
        assert_eq!(subjects.get(Group::DataFlow, "a.b").as_ptr(), first.as_ptr());
        for i in 0..KeySubjects::MAX + 10 {
            let element = format!("e{i}");
            assert_eq!(subjects.get(Group::EventDriven, &element).as_str(), format!("acme.ed.{element}"));
        }
        let held: usize = subjects.built.lock().iter().map(|m| m.len()).sum();
        assert!(held <= KeySubjects::MAX, "{held}");
    }

    #[test]
    fn escape_is_reversible_for_any_text() {
        for text in ["", "plain_-09", "a.b", "*", ">", "a b\tc\r\n", "100%", "é.ü", "%2E"] {
            let token = escape(text);
            assert!(!token.bytes().any(|b| b == b'.' || b == b'*' || b == b'>' || b.is_ascii_whitespace()));
            assert_eq!(unescape(&token).as_deref(), Some(text), "{text:?} -> {token:?}");
        }
        assert_eq!(escape("a.b*c>d e%"), "a%2Eb%2Ac%3Ed%20e%25");
    }

    #[test]
    fn tokens_no_escape_makes_are_refused() {
        for token in ["a.b", "%2", "%zz", "%2e", "%41", "a b", "%FF"] {
            assert_eq!(unescape(token), None, "{token:?}");
        }
    }

    #[test]
    fn namespaces_are_literal_tokens() {
        for ok in ["pf", "acme.prod", "a-b_c.D9"] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a\tb", &"x".repeat(129)] {
            let e = check_namespace(bad).unwrap_err();
            assert!(e.is(ErrorCode::BadRequest));
            assert!(e.message.starts_with("namespace must be"), "{}", e.message);
        }
    }

    #[test]
    fn endpoint_names_hold_service_name_characters_only() {
        let name = endpoint_name(Group::DataFlow, "a.b");
        assert_eq!(name, "df-a_2Eb");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
}
