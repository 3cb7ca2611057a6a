//! The ids of turns: a packet's own id, or one made for a message sent
//! through the API, which stays a number until something reads it.
//!
//! A message sent with [`Actors::send`](super::Actors::send) has no packet
//! and nobody else knows its id, so the id is not remembered and costs
//! nothing unless its turn reads it (`ctx.packet_id()`, a trace id, a call
//! or a message sent from the turn). It is then formatted the same way
//! every time: a UUID v4 string whose 122 variable bits are this process's
//! random base plus the message's number. Numbers are unique within the
//! process, and two processes share ids only if their random bases fall
//! within a few billion of each other in 2^62 (the low bits) and agree on
//! the other 60 bits, so a made id is as unique on the wire as a random one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use super::cell::Cell;
use crate::packet::PacketId;
use crate::reactor::Reactor;

/// The id of a message in a mailbox, or of a running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TurnId {
    /// The packet's own id (a packet submitted to the reactor).
    Packet(PacketId),
    /// Made for an API message: the number [`made_id`] formats.
    Made(u64),
}

impl TurnId {
    /// Whether this is packet id `id`.
    pub(crate) fn is(&self, id: &PacketId) -> bool {
        match self {
            TurnId::Packet(own) => own == id,
            TurnId::Made(number) => is_made_id(*number, id.as_str()),
        }
    }

    /// Whether this id is spelled `text` (a `pf.turns` entry).
    pub(crate) fn is_str(&self, text: &str) -> bool {
        match self {
            TurnId::Packet(own) => own.as_str() == text,
            TurnId::Made(number) => is_made_id(*number, text),
        }
    }

    /// The id as a packet id (formatted, for a made one).
    pub(crate) fn to_packet_id(&self) -> PacketId {
        match self {
            TurnId::Packet(id) => id.clone(),
            TurnId::Made(number) => made_id(*number),
        }
    }
}

/// The id of an API message's turn as its context holds it: made when
/// first read, and then marked in flight while the turn runs (so that the
/// turn may call out, and a packet reusing the id meets the same rules as
/// a packet's would).
#[derive(Clone)]
pub(crate) struct MadeTurnId {
    number: u64,
    id: OnceLock<PacketId>,
    /// The actor running the turn.
    cell: Arc<Cell>,
}

impl MadeTurnId {
    pub(crate) fn new(number: u64, cell: Arc<Cell>) -> MadeTurnId {
        MadeTurnId { number, id: OnceLock::new(), cell }
    }

    /// The id, made on the first read (by any clone of the context: each
    /// makes the same one).
    pub(crate) fn get(&self, reactor: &Reactor) -> &PacketId {
        self.id.get_or_init(|| {
            let id = made_id(self.number);
            self.cell.made_id_read(self.number, &id, reactor);
            id
        })
    }
}

impl MadeTurnId {
    /// The id if it was made already.
    pub(crate) fn existing(&self) -> Option<&PacketId> {
        self.id.get()
    }
}

impl std::fmt::Display for TurnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnId::Packet(id) => f.write_str(id.as_str()),
            TurnId::Made(number) => f.write_str(made_id(*number).as_str()),
        }
    }
}

/// Numbers are handed to threads in blocks, so that making one is a
/// thread-local increment and threads do not share a counter's cache line.
const BLOCK: u64 = 1 << 16;

static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The next number of this thread's block, and the block's end.
    static NUMBERS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A number never handed out before in this process (never 0).
pub(crate) fn next_number() -> u64 {
    NUMBERS.with(|numbers| {
        let (mut next, mut end) = numbers.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(1, Relaxed) * BLOCK + 1;
            end = next + BLOCK;
        }
        numbers.set((next + 1, end));
        next
    })
}

/// This process's random base: the high and the low 64 bits of a UUID v4.
fn base() -> (u64, u64) {
    static BASE: OnceLock<(u64, u64)> = OnceLock::new();
    *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair())
}

/// The UUID bytes of made id `number`: the base's high half as it is
/// (version 4), the low half plus `number` in its 62 variable bits (the
/// variant's two bits kept).
fn made_uuid(number: u64) -> uuid::Uuid {
    const VARIANT: u64 = 0b10 << 62;
    const VARIABLE: u64 = !(0b11 << 62);
    let (high, low) = base();
    uuid::Uuid::from_u64_pair(high, VARIANT | (low.wrapping_add(number) & VARIABLE))
}

/// The id made for message `number`, formatted.
pub(crate) fn made_id(number: u64) -> PacketId {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = made_uuid(number).hyphenated().encode_lower(&mut buf);
    PacketId::new(text).expect("a UUID is a valid packet id")
}

/// Whether `text` is the id made for message `number`.
fn is_made_id(number: u64, text: &str) -> bool {
    let mut buf = uuid::Uuid::encode_buffer();
    text.len() == uuid::fmt::Hyphenated::LENGTH
        && *made_uuid(number).hyphenated().encode_lower(&mut buf) == *text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_distinct_uuids_that_match_their_number() {
        let (a, b) = (next_number(), next_number());
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let (ida, idb) = (made_id(a), made_id(b));
        assert_ne!(ida, idb);
        assert_eq!(ida, made_id(a), "formatted the same way every time");
        let parsed = uuid::Uuid::parse_str(ida.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert!(TurnId::Made(a).is(&ida) && !TurnId::Made(a).is(&idb));
        assert!(TurnId::Made(a).is_str(ida.as_str()) && !TurnId::Made(b).is_str("x"));
        assert_eq!(TurnId::Made(a).to_packet_id(), ida);
        let given = PacketId::new("m-1").unwrap();
        assert!(TurnId::Packet(given.clone()).is(&given) && TurnId::Packet(given).is_str("m-1"));
    }

    #[test]
    fn threads_take_numbers_from_blocks_of_their_own() {
        let mine = next_number();
        let theirs = std::thread::spawn(next_number).join().unwrap();
        assert_ne!((mine - 1) / BLOCK, (theirs - 1) / BLOCK, "distinct blocks");
    }
}
