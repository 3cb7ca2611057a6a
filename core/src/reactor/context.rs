//! [`Context`]: what a handler knows about the packet it serves.

use serde_json::{Map, Value};
use tokio::time::{Duration, Instant};

use super::Reactor;
use crate::actor::{ActorRef, MadeTurnId, Op, META_TURNS};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, PacketId, META_TRACE_ID};

/// The packet's identity, metadata and deadline, and a way to call other
/// handlers on its behalf.
#[derive(Clone)]
pub struct Context {
    pub(crate) reactor: Reactor,
    pub(crate) id: ContextId,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) deadline: Instant,
    /// This packet is an actor's turn: what it calls carries its id in
    /// `pf.turns` (the reentrancy chain).
    pub(crate) turn: bool,
}

/// The id of the packet a context serves.
#[derive(Clone)]
pub(crate) enum ContextId {
    /// The packet's own id.
    Given(PacketId),
    /// The turn of a message sent through the actor API, whose id is made
    /// when first read.
    Made(MadeTurnId),
}

impl Context {
    /// The id of the packet being handled. A message sent with
    /// [`Actors::send`](crate::actor::Actors::send) gets a UUID v4 made for
    /// it (formatted when first read).
    pub fn packet_id(&self) -> &PacketId {
        match &self.id {
            ContextId::Given(id) => id,
            ContextId::Made(made) => made.get(&self.reactor),
        }
    }

    /// The packet's id if it exists already: `None` only for the turn of a
    /// message sent through the actor API whose id nobody read yet (a
    /// binding that hands the id over lazily reads it with
    /// [`packet_id`](Self::packet_id) when asked).
    pub fn existing_packet_id(&self) -> Option<&PacketId> {
        match &self.id {
            ContextId::Given(id) => Some(id),
            ContextId::Made(made) => made.existing(),
        }
    }

    /// The trace id this packet inherited (its `pf.trace_id`); `None` when
    /// it started its trace, whose id is then its own
    /// ([`trace_id`](Self::trace_id)).
    pub fn inherited_trace_id(&self) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| m.get(META_TRACE_ID)).and_then(Value::as_str)
    }

    /// The packet's metadata, if it had any.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.metadata.as_ref()
    }

    /// When the submitter stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The trace id shared by this packet and its child calls: the
    /// packet's `pf.trace_id`, or its own id when it started the trace.
    pub fn trace_id(&self) -> &str {
        self.inherited_trace_id().unwrap_or(self.packet_id().as_str())
    }

    /// Submits a child packet to `group:element` and returns its data.
    ///
    /// The child inherits what is left of this packet's deadline, its
    /// trace id and its reentrancy chain (`pf.turns`), so a chain of calls
    /// can never outlive the first submit. Once this packet was answered,
    /// a call fails at once with [`late_call_error`]: a child must not
    /// outlive its parent.
    pub async fn call(&self, group: &str, element: &str, data: Value) -> Result<Value, PfError> {
        let child = self.child(Packet::build(group, element, data)?, group, element)?;
        self.reactor.submit(child).await.outcome
    }

    /// Sends `message` to `actor` and returns the turn's answer, as
    /// [`call`](Self::call) does for a handler (same deadline, trace and
    /// chain rules).
    pub async fn send(&self, actor: &ActorRef, message: Value) -> Result<Value, PfError> {
        let element = actor.element();
        let child = self.child(actor.packet(Op::Send, message), "rm", element.as_str())?;
        self.reactor.submit(child).await.outcome
    }

    /// Sends `message` to `actor` without waiting for its turn (see
    /// [`Actors::tell`](crate::actor::Actors::tell)).
    pub fn tell(&self, actor: &ActorRef, message: Value) -> Result<(), PfError> {
        let element = actor.element();
        let child = self.child(actor.packet(Op::Send, message), "rm", element.as_str())?;
        self.reactor.actors().tell_packet(actor, child)
    }

    /// `packet` as a child of this one: the deadline left, the trace id and
    /// the reentrancy chain added to its metadata.
    fn child(&self, mut packet: Packet, group: &str, element: &str) -> Result<Packet, PfError> {
        if !self.reactor.inner.inflight.is_running(self.packet_id()) {
            return Err(late_call_error(group, element));
        }
        let remaining_ms = self.remaining().as_millis();
        if remaining_ms == 0 {
            return Err(PfError::new(ErrorCode::Timeout, format!("no time left to call {group}:{element}")));
        }
        let meta = packet.metadata.get_or_insert_with(Map::new);
        meta.insert(META_TRACE_ID.to_owned(), Value::String(self.trace_id().to_owned()));
        let mut turns =
            self.metadata.as_ref().and_then(|m| m.get(META_TURNS)).and_then(Value::as_array).cloned();
        if self.turn {
            turns.get_or_insert_with(Vec::new).push(Value::String(self.packet_id().to_string()));
        }
        if let Some(turns) = turns {
            meta.insert(META_TURNS.to_owned(), Value::Array(turns));
        }
        Ok(packet.with_timeout_ms(remaining_ms.min(u128::from(crate::packet::MAX_TIMEOUT_MS)) as u64))
    }
}

/// The answer to a `ctx.call` made after its packet was answered (PF503),
/// the same from every binding: a binding that no longer holds the
/// [`Context`] of a packet answers a late call with this too.
pub fn late_call_error(group: &str, element: &str) -> PfError {
    PfError::new(
        ErrorCode::Unavailable,
        format!("ctx.call to {group}:{element} after the handler answered; call before returning"),
    )
}
