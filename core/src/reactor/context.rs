//! [`Context`]: what a handler knows about the packet it serves.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use serde_json::{Map, Value};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::in_place::{InPlace, InPlaceRoute};
use super::{Immediate, Reactor};
use crate::actor::{ActorRef, MadeTurnId, Op, META_TURNS};
use crate::error::{ErrorCode, PfError};
use crate::packet::{parts, Element, Field, Group, Packet, PacketId, Priority, META_TRACE_ID};
use crate::result::PacketResult;

/// The packet's identity, metadata, deadline and priority, its
/// cancellation signal, and a way to call other handlers on its behalf.
#[derive(Clone)]
pub struct Context {
    pub(crate) reactor: Reactor,
    pub(crate) id: ContextId,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) deadline: Instant,
    pub(crate) priority: Priority,
    /// This packet is an actor's turn: what it calls carries its id in
    /// `pf.turns` (the reentrancy chain).
    pub(crate) turn: bool,
    /// Its calls may not reach `mc:*`, though its metadata need not say so
    /// (a handler's packet from a connection whose token does not grant
    /// `mc:*`: the node skips the mark for what it runs itself).
    pub(crate) bar_mc: bool,
}

/// Options of a [`Context::call_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The child's priority; `None` (the default): the calling packet's.
    pub priority: Option<Priority>,
    /// The child's timeout, when shorter than what is left of this
    /// packet's deadline; `None` (the default): all of what is left.
    pub timeout_ms: Option<u64>,
    /// The child may not reach `mc:*`, even if this packet may (a step
    /// stored by a packet that could not: `ed:react`).
    pub(crate) bar_mc: bool,
}

/// A call [`Context::start_call`] started.
// Returned by value and matched at once: a box would cost an allocation
// per pending call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Call<'c> {
    /// Answered at once.
    Answered(Result<Value, PfError>),
    /// To be awaited ([`PendingCall::answer`]).
    Pending(PendingCall<'c>),
}

/// A call not answered at once: its packet, and the path it takes next.
pub(crate) struct PendingCall<'c> {
    ctx: &'c Context,
    first: Immediate<Packet>,
    start: Instant,
    deadline: Instant,
}

impl PendingCall<'_> {
    /// The child's answer, or PF499 once the calling packet is cancelled
    /// or ends first (the child is then cancelled with it).
    pub(crate) async fn answer(self) -> Result<Value, PfError> {
        let PendingCall { ctx, first, start, deadline } = self;
        let Some((group, element)) = first.packet().map(|p| (p.group, p.element.clone())) else {
            return ctx.reactor.resume(first, start, deadline, None).await.outcome;
        };
        let call = std::pin::pin!(ctx.reactor.resume(first, start, deadline, None));
        ctx.unless_cancelled(call, group.as_str(), element.as_str()).await
    }
}

impl CallOptions {
    /// Options naming the child's priority.
    pub fn priority(priority: Priority) -> CallOptions {
        CallOptions { priority: Some(priority), ..CallOptions::default() }
    }

    /// These options with the child's timeout at most `timeout_ms`.
    pub fn with_timeout_ms(self, timeout_ms: u64) -> CallOptions {
        CallOptions { timeout_ms: Some(timeout_ms), ..self }
    }

    /// Options as a binding's caller gave them: `priority` (1-10) and
    /// `timeout_ms` (1-86400000), each judged as the same field of a
    /// packet is (PF400 in the same words, naming the field); absent or
    /// null leaves it unset.
    ///
    /// ```
    /// use packetflow::reactor::CallOptions;
    /// use packetflow::{Field, Priority};
    ///
    /// let options = CallOptions::from_fields(Some(&Field::Int(9)), Some(&Field::Null)).unwrap();
    /// assert_eq!(options, CallOptions::priority(Priority::new(9).unwrap()));
    /// let bad = CallOptions::from_fields(None, Some(&Field::from("soon"))).unwrap_err();
    /// assert_eq!(bad.message, "timeout_ms must be a positive integer <= 86400000, got \"soon\"");
    /// ```
    pub fn from_fields(
        priority: Option<&Field<'_>>,
        timeout_ms: Option<&Field<'_>>,
    ) -> Result<CallOptions, PfError> {
        let priority = match priority {
            None | Some(Field::Null) => None,
            given => Some(parts::priority_of(given)?),
        };
        Ok(CallOptions { priority, timeout_ms: parts::timeout_of(timeout_ms)?, bar_mc: false })
    }

    /// [`from_fields`](Self::from_fields) for a call of `group:element`,
    /// whose key is judged first, as the call itself judges it: a call
    /// with a bad key and a bad option is refused for its key.
    ///
    /// ```
    /// use packetflow::reactor::CallOptions;
    /// use packetflow::Field;
    ///
    /// let bad = CallOptions::for_call("df", "no spaces", Some(&Field::Int(11)), None).unwrap_err();
    /// assert!(bad.message.starts_with("element must be"), "{}", bad.message);
    /// ```
    pub fn for_call(
        group: &str,
        element: &str,
        priority: Option<&Field<'_>>,
        timeout_ms: Option<&Field<'_>>,
    ) -> Result<CallOptions, PfError> {
        Group::parse(group)?;
        Element::new(element)?;
        CallOptions::from_fields(priority, timeout_ms)
    }
}

/// The id of the packet a context serves.
#[derive(Clone)]
pub(crate) enum ContextId {
    /// The packet's own id.
    Given(PacketId),
    /// The turn of a message sent through the actor API, whose id is made
    /// when first read.
    Made(MadeTurnId),
    /// A call run in place (`in_place`): no packet, its id made when
    /// first read.
    InPlace(Arc<InPlace>),
}

impl Context {
    #[inline]
    pub(crate) fn new(
        reactor: Reactor,
        id: ContextId,
        metadata: Option<Map<String, Value>>,
        deadline: Instant,
        priority: Priority,
        turn: bool,
    ) -> Context {
        Context { reactor, id, metadata, deadline, priority, turn, bar_mc: false }
    }

    /// The id of the packet being handled. A message sent with
    /// [`Actors::send`](crate::actor::Actors::send) gets a UUID v4 made for
    /// it (formatted when first read).
    pub fn packet_id(&self) -> &PacketId {
        match &self.id {
            ContextId::Given(id) => id,
            ContextId::Made(made) => made.get(&self.reactor),
            ContextId::InPlace(call) => call.id(),
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
            ContextId::InPlace(call) => call.existing_id(),
        }
    }

    /// The trace id this packet inherited (its `pf.trace_id`); `None` when
    /// it started its trace, whose id is then its own
    /// ([`trace_id`](Self::trace_id)).
    pub fn inherited_trace_id(&self) -> Option<&str> {
        if let ContextId::InPlace(call) = &self.id {
            return Some(call.trace());
        }
        self.metadata.as_ref().and_then(|m| m.get(META_TRACE_ID)).and_then(Value::as_str)
    }

    /// The packet's metadata, if it had any.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        match &self.id {
            ContextId::InPlace(call) => Some(call.metadata()),
            _ => self.metadata.as_ref(),
        }
    }

    /// Whether the calls made on this packet's behalf may not reach
    /// `mc:*`: it came with a token that does not grant `mc:*`, or from a
    /// packet that did (its `pf.no_mc`; docs/protocol.md,
    /// "Authentication").
    pub fn bars_mc(&self) -> bool {
        self.bar_mc || crate::packet::bars_mc(self.metadata.as_ref())
    }

    /// When the submitter stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The packet's priority, which its calls inherit.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Whether this packet's work is no longer wanted: it was cancelled
    /// (by its submitter, a connection that went away, or with the packet
    /// that called it), or it is over (answered, past its deadline, its
    /// node stopping), as Go's request contexts are done once their
    /// handler returns. For work a handler runs beside its future (a
    /// thread, a spawned task, a binding's host task) to poll.
    pub fn is_cancelled(&self) -> bool {
        match &self.id {
            ContextId::InPlace(call) => call.is_cancelled(&self.reactor),
            _ => self.reactor.inner.inflight.is_cancelled(self.packet_id()),
        }
    }

    /// Resolves once [`is_cancelled`](Self::is_cancelled) turns true. The
    /// future owns what it needs (`'static`): spawn it beside the
    /// handler's work, or hand it to a binding's host.
    ///
    /// A cancelled packet's handler future is dropped at once, right after
    /// this fires (Rust's way of cancelling a future; its destructors run):
    /// code after an `.await` in the handler itself does not run, so a
    /// handler observes cancellation through this signal in work it runs
    /// beside itself, or through `Drop`.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.signal().cancelled_owned()
    }

    /// The packet's signal: the one its in-flight entry holds while it
    /// runs, or a fired one for a packet that is over.
    fn signal(&self) -> CancellationToken {
        if let ContextId::InPlace(call) = &self.id {
            return call.signal(&self.reactor);
        }
        self.reactor.inner.inflight.signal(self.packet_id()).unwrap_or_else(|| {
            let over = CancellationToken::new();
            over.cancel();
            over
        })
    }

    /// The trace id shared by this packet and its child calls: the
    /// packet's `pf.trace_id`, or its own id when it started the trace.
    pub fn trace_id(&self) -> &str {
        self.inherited_trace_id().unwrap_or(self.packet_id().as_str())
    }

    /// Submits a child packet to `group:element` and returns its data.
    ///
    /// The child inherits what is left of this packet's deadline, its
    /// priority, its trace id and its reentrancy chain (`pf.turns`), so a
    /// chain of calls can never outlive the first submit. Once this packet
    /// was answered, a call fails at once with [`late_call_error`]: a child
    /// must not outlive its parent. When this packet is cancelled or ends
    /// while the call waits, the child is cancelled (here, or on the peer
    /// it went to) and the call fails with PF499.
    pub async fn call(&self, group: &str, element: &str, data: Value) -> Result<Value, PfError> {
        self.call_with(group, element, data, CallOptions::default()).await
    }

    /// [`call`](Self::call) with options: a priority of its own for the
    /// child, instead of this packet's.
    pub async fn call_with(
        &self,
        group: &str,
        element: &str,
        data: Value,
        options: CallOptions,
    ) -> Result<Value, PfError> {
        let (group, element) = (Group::parse(group)?, Element::new(element)?);
        match self.start_call_to(group, &element, data, options) {
            Call::Answered(answer) => answer,
            Call::Pending(call) => call.answer().await,
        }
    }

    /// [`call_with`](Self::call_with) of a packet already built (its key
    /// checked): only its key and data are read.
    pub(crate) async fn call_packet(&self, packet: Packet, options: CallOptions) -> Result<Value, PfError> {
        match self.start_call(packet, options) {
            Call::Answered(answer) => answer,
            Call::Pending(call) => call.answer().await,
        }
    }

    /// Starts a call of `group:element` with `data`: one a local sync
    /// handler serves runs in place (no child packet, see `in_place`);
    /// any other as [`start_call`](Self::start_call) does.
    pub(crate) fn start_call_to(
        &self,
        group: Group,
        element: &Element,
        data: Value,
        options: CallOptions,
    ) -> Call<'_> {
        match self.reactor.in_place_route(group, element).filter(|_| !self.chained()) {
            Some(route) => Call::Answered(self.call_in_place(&route, group, element, data, options)),
            None => self.start_call(Packet::new(group, element.clone(), data), options),
        }
    }

    /// Whether this packet's calls carry a reentrancy chain (`pf.turns`),
    /// which only a child packet holds: then none runs in place.
    pub(crate) fn chained(&self) -> bool {
        self.turn || carries_chain(self.metadata.as_ref())
    }

    /// Calls `group:element`, whose handler `route` holds, in place (see
    /// `in_place`), with the rules of every call: it may not outlive this
    /// packet, nor its deadline, nor reach `mc:*` when barred.
    pub(crate) fn call_in_place(
        &self,
        route: &InPlaceRoute,
        group: Group,
        element: &Element,
        data: Value,
        options: CallOptions,
    ) -> Result<Value, PfError> {
        let bar_mc = options.bar_mc || self.bars_mc();
        // One clock read: the call's time counts from here.
        let now = Instant::now();
        let remaining_ms = self.may_call(group, element.as_str(), bar_mc, now)?;
        let timeout_ms = options.timeout_ms.map_or(remaining_ms, |t| remaining_ms.min(t.max(1)));
        let deadline = now + Duration::from_millis(timeout_ms);
        let priority = options.priority.unwrap_or(self.priority);
        self.reactor.run_in_place(self, route, data, (now, deadline), priority, bar_mc)
    }

    /// Starts [`call_packet`](Self::call_packet) here and now: a child for
    /// a local sync handler is answered before this returns, with no
    /// future made for it.
    pub(crate) fn start_call(&self, packet: Packet, options: CallOptions) -> Call<'_> {
        let child = match self.child_with(packet, &options) {
            Ok(child) => child,
            Err(e) => return Call::Answered(Err(e)),
        };
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.reactor.timeout_of(&child));
        match self.reactor.try_submit(child, start, deadline, None, false) {
            Immediate::Done(result) => Call::Answered(result.outcome),
            first => Call::Pending(PendingCall { ctx: self, first, start, deadline }),
        }
    }

    /// Sends `message` to `actor` and returns the turn's answer, as
    /// [`call`](Self::call) does for a handler (same deadline, priority,
    /// trace, chain and cancellation rules).
    pub async fn send(&self, actor: &ActorRef, message: Value) -> Result<Value, PfError> {
        self.send_with(actor, message, CallOptions::default()).await
    }

    /// [`send`](Self::send) with options: a priority of its own for the
    /// message (its place in the mailbox), a shorter timeout.
    pub async fn send_with(
        &self,
        actor: &ActorRef,
        message: Value,
        options: CallOptions,
    ) -> Result<Value, PfError> {
        self.call_packet(actor.packet(Op::Send, message), options).await
    }

    /// Sends `message` to `actor` without waiting for its turn (see
    /// [`Actors::tell`](crate::actor::Actors::tell)).
    pub fn tell(&self, actor: &ActorRef, message: Value) -> Result<(), PfError> {
        self.tell_with(actor, message, CallOptions::default())
    }

    /// [`tell`](Self::tell) with options: a priority of its own for the
    /// message (its place in the mailbox), a shorter timeout (how long it
    /// may wait there).
    pub fn tell_with(&self, actor: &ActorRef, message: Value, options: CallOptions) -> Result<(), PfError> {
        let child = self.child_with(actor.packet(Op::Send, message), &options)?;
        self.reactor.actors().tell_packet(actor, child)
    }

    /// Awaits a child's answer unless this packet is cancelled (or ends)
    /// first; the caller then drops the child's future, which cancels it.
    /// A child answered at its first poll never fetches the signal. (The
    /// child's future is pinned by the caller, where it is made: moving it
    /// here would copy it.)
    async fn unless_cancelled<F: Future<Output = PacketResult>>(
        &self,
        mut call: std::pin::Pin<&mut F>,
        group: &str,
        element: &str,
    ) -> Result<Value, PfError> {
        if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
            return result.outcome;
        }
        let signal = self.signal();
        let answered = Box::pin(async move {
            tokio::select! {
                biased;
                _ = signal.cancelled() => None,
                result = call => Some(result),
            }
        })
        .await;
        match answered {
            Some(result) => result.outcome,
            None => Err(PfError::new(
                ErrorCode::Cancelled,
                format!(
                    "ctx.call to {group}:{element} cancelled: packet {} was cancelled or ended",
                    self.packet_id()
                ),
            )),
        }
    }

    /// [`child`](Self::child) with `options`: their priority, and their
    /// timeout when shorter than what is left of this packet's.
    fn child_with(&self, mut packet: Packet, options: &CallOptions) -> Result<Packet, PfError> {
        if options.bar_mc {
            packet.bar_mc();
        }
        let mut child = self.child(packet, options.priority)?;
        if let Some(timeout_ms) = options.timeout_ms {
            child.timeout_ms = Some(child.timeout_ms().min(timeout_ms.max(1)));
        }
        Ok(child)
    }

    /// `packet` as a child of this one: the deadline left, this packet's
    /// priority (unless `priority` names one), the trace id and the
    /// reentrancy chain added to its metadata, and its `pf.no_mc` mark
    /// when this packet has one. PF403 for an `mc:*` child of a packet
    /// that may not reach it (or that `packet` is marked itself).
    pub(crate) fn child(&self, mut packet: Packet, priority: Option<Priority>) -> Result<Packet, PfError> {
        let bar_mc = self.bars_mc() || packet.bars_mc();
        let remaining_ms = self.may_call(packet.group, packet.element.as_str(), bar_mc, Instant::now())?;
        if bar_mc {
            packet.bar_mc();
        }
        packet.priority = priority.unwrap_or(self.priority);
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
        Ok(packet.with_timeout_ms(remaining_ms))
    }

    /// The time a call of `group:element` made `now` may take, in ms; or
    /// why it may not be made: this packet was answered or cancelled, its
    /// time is up, or (`bar_mc`) the call may not reach `mc:*`.
    fn may_call(&self, group: Group, element: &str, bar_mc: bool, now: Instant) -> Result<u64, PfError> {
        let running = match &self.id {
            ContextId::InPlace(call) => call.is_running(&self.reactor),
            _ => self.reactor.inner.inflight.is_running(self.packet_id()),
        };
        if !running {
            let cancelled = match &self.id {
                ContextId::InPlace(call) => {
                    !call.has_ended() && self.reactor.inner.inflight.is_cancelled(&call.packet)
                }
                _ => self.reactor.inner.inflight.ended_cancelled(self.packet_id()),
            };
            if cancelled {
                return Err(PfError::new(
                    ErrorCode::Cancelled,
                    format!(
                        "ctx.call to {group}:{element} refused: packet {} was cancelled",
                        self.packet_id()
                    ),
                ));
            }
            return Err(late_call_error(group.as_str(), element));
        }
        let remaining_ms = self.deadline.saturating_duration_since(now).as_millis();
        if remaining_ms == 0 {
            return Err(PfError::new(ErrorCode::Timeout, format!("no time left to call {group}:{element}")));
        }
        if bar_mc && group == Group::MetaCompute {
            return Err(mc_refused(group.as_str(), element));
        }
        Ok(remaining_ms.min(u128::from(crate::packet::MAX_TIMEOUT_MS)) as u64)
    }
}

/// Whether a packet with `metadata` carries a reentrancy chain
/// (`pf.turns`): its calls are then child packets that carry it on.
pub(crate) fn carries_chain(metadata: Option<&Map<String, Value>>) -> bool {
    metadata.is_some_and(|m| m.contains_key(META_TURNS))
}

/// The answer to a call to `mc:*` made on behalf of a packet that may not
/// reach it (PF403).
pub(crate) fn mc_refused(group: &str, element: &str) -> PfError {
    PfError::new(
        ErrorCode::Forbidden,
        format!(
            "ctx.call to {group}:{element} refused: the packet calling it came with a token that does not \
             grant mc:*, and neither may its calls (docs/protocol.md, Authentication)"
        ),
    )
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
