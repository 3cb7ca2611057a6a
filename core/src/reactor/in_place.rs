//! Calls run in place: a `ctx.call` (or a standard element's step) whose
//! key a local sync handler serves runs that handler at once, inside the
//! call, without a child packet (docs/protocol.md, "Calls answered in
//! place").
//!
//! Such a child would be made, run and forgotten within the call, so its
//! packet is not built: no fresh id, no metadata map, no in-flight entry.
//! What its handler can observe is kept: an id (made when first read), the
//! metadata a child carries (`pf.trace_id`, `pf.no_mc`; built when first
//! read), the deadline and priority, and cancellation, which it shares
//! with the packet that called it until it returns.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{panic_message, Context, ContextId, Handler, HandlerTable, Reactor, Route, Target};
use crate::actor::{made_id, next_number};
use crate::error::PfError;
use crate::packet::{Element, Group, PacketId, Priority, META_NO_MC, META_TRACE_ID};

/// What the context of a call run in place knows beyond a [`Context`]'s
/// fields. Shared by the context's clones, so that one the handler kept
/// sees the call end.
pub(crate) struct InPlace {
    /// The number its id is made from ([`made_id`]).
    number: u64,
    id: OnceLock<PacketId>,
    /// The nearest caller that is a packet in flight: this call is
    /// cancelled with it.
    pub(super) packet: PacketId,
    /// The trace id the call inherited.
    trace: Arc<str>,
    /// Its calls may not reach `mc:*` (the child's `pf.no_mc`).
    bar_mc: bool,
    metadata: OnceLock<Map<String, Value>>,
    /// Made only when asked for: fired when the caller's fires, or when
    /// this call returns.
    signal: OnceLock<CancellationToken>,
    ended: AtomicBool,
}

impl InPlace {
    /// The id, made on the first read.
    pub(super) fn id(&self) -> &PacketId {
        self.id.get_or_init(|| made_id(self.number))
    }

    /// The id if it was read already.
    pub(super) fn existing_id(&self) -> Option<&PacketId> {
        self.id.get()
    }

    pub(super) fn trace(&self) -> &str {
        &self.trace
    }

    /// The metadata a child packet would carry.
    pub(super) fn metadata(&self) -> &Map<String, Value> {
        self.metadata.get_or_init(|| {
            let mut meta = Map::new();
            meta.insert(META_TRACE_ID.to_owned(), Value::String(self.trace.to_string()));
            if self.bar_mc {
                meta.insert(META_NO_MC.to_owned(), Value::Bool(true));
            }
            meta
        })
    }

    pub(super) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the call is over, or the packet it runs for was cancelled.
    pub(super) fn is_cancelled(&self, reactor: &Reactor) -> bool {
        self.has_ended() || reactor.inner.inflight.is_cancelled(&self.packet)
    }

    /// Whether the call may still call out: it has not returned and its
    /// packet runs.
    pub(super) fn is_running(&self, reactor: &Reactor) -> bool {
        !self.has_ended() && reactor.inner.inflight.is_running(&self.packet)
    }

    /// The call's cancellation signal (see [`signal`](Self::signal)'s field).
    pub(super) fn signal(&self, reactor: &Reactor) -> CancellationToken {
        let token = self.signal.get_or_init(|| match reactor.inner.inflight.signal(&self.packet) {
            Some(caller) => caller.child_token(),
            None => CancellationToken::new(),
        });
        if self.has_ended() {
            token.cancel();
        }
        token.clone()
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        if let Some(token) = self.signal.get() {
            token.cancel();
        }
    }
}

/// The route of `group:element` in `handlers` if its calls run in place.
fn in_place_of(handlers: &HandlerTable, group: Group, element: &Element) -> Option<InPlaceRoute> {
    let route = handlers.get(group, element.as_str())?;
    let runs_here = matches!(route.target, Target::Handler(Handler::Sync(_)))
        && route.limit.is_none()
        && route.now.is_none();
    runs_here.then(|| InPlaceRoute(route.clone()))
}

/// A key's route that runs calls in place: a sync handler registered
/// here, with no limit of its own. The handler it was when looked up runs,
/// even if the key is registered again meanwhile.
pub(crate) struct InPlaceRoute(Arc<Route>);

impl Reactor {
    /// The route of `group:element` if a call of it runs in place: a sync
    /// handler registered here (not a standard element), with no limit of
    /// its own, on a reactor not stopping. `None`: the call takes a
    /// packet's path.
    pub(crate) fn in_place_route(&self, group: Group, element: &Element) -> Option<InPlaceRoute> {
        if self.is_stopped() {
            return None;
        }
        in_place_of(&self.inner.handlers.load(), group, element)
    }

    /// [`in_place_route`](Self::in_place_route) of every key, read from
    /// one view of the handlers; `None` unless every call runs in place.
    pub(crate) fn in_place_routes<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = (Group, &'k Element)>,
    ) -> Option<Vec<InPlaceRoute>> {
        if self.is_stopped() {
            return None;
        }
        let handlers = self.inner.handlers.load();
        let mut routes = Vec::with_capacity(keys.len());
        for (group, element) in keys {
            routes.push(in_place_of(&handlers, group, element)?);
        }
        Some(routes)
    }

    /// Runs `data` on `route`'s handler as a call of `caller`'s, in place,
    /// the call made at `start`. The caller checked it may call
    /// (`Context::may_call`).
    pub(super) fn run_in_place(
        &self,
        caller: &Context,
        route: &InPlaceRoute,
        data: Value,
        (start, deadline): (Instant, Instant),
        priority: Priority,
        bar_mc: bool,
    ) -> Result<Value, PfError> {
        let Target::Handler(Handler::Sync(f)) = &route.0.target else {
            unreachable!("an in-place route holds a sync handler")
        };
        let (packet, trace) = match &caller.id {
            ContextId::InPlace(outer) => (outer.packet.clone(), outer.trace.clone()),
            _ => {
                let packet = caller.packet_id().clone();
                let trace = match caller.inherited_trace_id() {
                    Some(text) => Arc::from(text),
                    None => packet.shared(),
                };
                (packet, trace)
            }
        };
        let call = Arc::new(InPlace {
            number: next_number(),
            id: OnceLock::new(),
            packet,
            trace,
            bar_mc,
            metadata: OnceLock::new(),
            signal: OnceLock::new(),
            ended: AtomicBool::new(false),
        });
        let mut ctx =
            Context::new(self.clone(), ContextId::InPlace(call.clone()), None, deadline, priority, false);
        ctx.bar_mc = bar_mc;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(data, &ctx)))
            .unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))));
        call.end();
        route.0.stats.record(start.elapsed().as_micros() as u64, outcome.is_err());
        outcome
    }
}
