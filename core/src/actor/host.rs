//! One actor type on one reactor: its active actors, their turns, their
//! passivation, and the store behind them.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::FutureExt;
use parking_lot::MutexGuard;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::address::{chain_holds, is_addressing_key, message_type, Op, Request};
use super::behavior::{Behavior, Reply, TurnInput, Turns};
use super::cell::{Answer, Cell, CellState, Message};
use super::migration::{MovedTo, Stored};
use super::store::{ActorStore, Record};
use super::turn_id::{MadeTurnId, TurnId};
use super::{ActorContext, ActorRef, ActorType};
use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, PacketId};
use crate::reactor::{panic_message, Context, ContextId, Reactor, ReactorInner, Stats};

/// Settings every type on a reactor shares (from its `ReactorConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostSettings {
    pub(crate) remembered_turns: usize,
}

/// Counters of one type, read by stats, `/health` and `/metrics`.
#[derive(Default)]
pub(crate) struct TypeCounters {
    pub(crate) activations: AtomicU64,
    pub(crate) passivations: AtomicU64,
    /// Actors in the store and not in memory (passivated, or stored
    /// before this process started).
    pub(crate) dormant: AtomicU64,
    pub(crate) tells_failed: AtomicU64,
}

pub(crate) struct TypeHost {
    pub(crate) name: Arc<str>,
    spec: ActorType,
    /// Hashed with foldhash: a create hashes its id once or twice, and a
    /// growing table rehashes every id it holds.
    pub(super) active: DashMap<Arc<str>, Arc<Cell>, foldhash::fast::RandomState>,
    /// The actors this node handed to another node, by id: where each went
    /// (see `migration`). Looked up only for an actor not in memory.
    pub(super) moved: DashMap<Arc<str>, MovedTo, foldhash::fast::RandomState>,
    /// Whether the store may hold forwarding entries of this type (a
    /// durable store this node or another wrote one to): only then does
    /// an actor coming into memory look for one there.
    pub(super) moves_stored: AtomicBool,
    /// Whether `moved` ever held an entry: until then, an actor coming
    /// into memory does not look there.
    pub(super) moved_any: AtomicBool,
    pub(crate) store: Arc<dyn ActorStore>,
    settings: HostSettings,
    reactor: Weak<ReactorInner>,
    pub(crate) counters: TypeCounters,
    /// The latency counters of `rm:actor.<type>` (shared with its route).
    pub(crate) stats: Arc<Stats>,
}

/// What a message found when it reached its actor.
pub(crate) enum Offer {
    /// Answered at once (a remembered turn).
    Answered(Result<Value, PfError>),
    /// The actor was idle: run this message here, holding the actor.
    Inline(Arc<Cell>, Message),
    /// Queued behind a holder: wait for the answer.
    Wait(oneshot::Receiver<Answer>),
    /// Reentrant: the turn that waits on this message's chain holds the actor.
    Nested(Arc<Cell>, Message),
    /// The actor was moved from this node: send the message on to the node
    /// named (or, `None`, to wherever placement puts the actor now).
    Elsewhere(Message, Option<Arc<str>>),
}

/// An idle actor held for the packet that found it
/// ([`TypeHost::claim_idle`]).
pub(crate) struct Claim {
    cell: Arc<Cell>,
    actor: ActorRef,
    /// Read with the packet's request: see [`Request::addressing_keys`].
    addressing_keys: usize,
    /// The id the turn is remembered by, when the packet names one
    /// (`pf.actor_packet_id`).
    remembered_as: Option<PacketId>,
}

/// What a turn sees of a message's metadata: the addressing keys are the
/// packet's, not the turn's (a turn has its actor), so a turn sees the same
/// metadata whether its message came as a packet or through the API's
/// direct way. A map that held nothing else is dropped whole.
fn turn_metadata(metadata: Option<Map<String, Value>>, addressing_keys: usize) -> Option<Map<String, Value>> {
    let mut meta = metadata?;
    if meta.len() == addressing_keys {
        return None;
    }
    if addressing_keys > 0 {
        // One pass that keeps the order, and rebuilds the map's index from
        // the hashes it stored: removing each key would hash it again.
        meta.retain(|key, _| !is_addressing_key(key));
    }
    Some(meta)
}

impl TypeHost {
    pub(crate) fn new(
        name: &str,
        spec: ActorType,
        store: Arc<dyn ActorStore>,
        settings: HostSettings,
        reactor: Weak<ReactorInner>,
    ) -> TypeHost {
        let moves_stored = AtomicBool::new(super::migration::store_holds_moves(name, store.as_ref()));
        TypeHost {
            name: Arc::from(name),
            spec,
            active: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            moved: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            moves_stored,
            moved_any: AtomicBool::new(false),
            store,
            settings,
            reactor,
            counters: TypeCounters::default(),
            stats: Arc::new(Stats::new()),
        }
    }

    /// Actors of this type in memory.
    pub(crate) fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The ids of the actors in memory.
    pub(crate) fn active_ids(&self) -> Vec<String> {
        self.active.iter().map(|e| e.key().to_string()).collect()
    }

    /// Whether a turn may run on the sender's task without awaiting: a sync
    /// behaviour over a store that is written only at passivation.
    fn runs_inline(&self) -> bool {
        matches!(self.spec.turns, Turns::Sync(_)) && self.runs_on_sender()
    }

    /// Whether the sender that finds its actor idle runs the turn on its
    /// own task. Not with a durable store: a sender that gives up must not
    /// cut a turn between its write and its commit, so those turns run in
    /// a task of their own.
    fn runs_on_sender(&self) -> bool {
        !self.store.durable()
    }

    /// Reads what an actor packet asks and checks it before any actor is
    /// looked up: PF400 naming the field.
    pub(crate) fn message(&self, packet: Packet, deadline: Instant) -> Result<(ActorRef, Message), PfError> {
        self.message_for(packet, deadline, None)
    }

    /// [`message`](Self::message), for an actor already looked up (`known`).
    fn message_for(
        &self,
        packet: Packet,
        deadline: Instant,
        known: Option<&ActorRef>,
    ) -> Result<(ActorRef, Message), PfError> {
        let request = Request::read(packet.metadata.as_ref())?;
        let actor = match (known, request.id) {
            (Some(known), _) => known.clone(),
            (None, Some(id)) => ActorRef::from_parts(self.name.clone(), Arc::from(id)),
            (None, None) => ActorRef::generate(&self.name)?,
        };
        let (op, addressing_keys) = (request.op, request.addressing_keys);
        let remembered_as = request.first_id.map(PacketId::new).transpose()?;
        Ok((actor, self.message_of(packet, op, addressing_keys, remembered_as, deadline)?))
    }

    /// The message `packet` carries, whose request was read already (`op`,
    /// how many addressing keys its metadata holds, and the id its turn is
    /// remembered by when not the packet's).
    fn message_of(
        &self,
        packet: Packet,
        op: Op,
        addressing_keys: usize,
        remembered_as: Option<PacketId>,
        deadline: Instant,
    ) -> Result<Message, PfError> {
        let Packet { id, data, metadata, priority, .. } = packet;
        if op == Op::Send {
            self.check_message_type(message_type(&data)?)?;
        }
        Ok(Message {
            id: TurnId::Packet(id),
            op,
            priority,
            data,
            metadata: turn_metadata(metadata, addressing_keys),
            deadline,
            reply: None,
            remember: true,
            remembered_as,
        })
    }

    /// What [`message`](Self::message) checks of the data, for a message
    /// made without a packet (the API's direct path).
    pub(crate) fn check_data(&self, op: Op, data: &Value) -> Result<(), PfError> {
        if op == Op::Send {
            self.check_message_type(message_type(data)?)?;
        }
        Ok(())
    }

    fn check_message_type(&self, message_type: &str) -> Result<(), PfError> {
        match &self.spec.message_types {
            Some(known) if known.binary_search_by(|k| k.as_str().cmp(message_type)).is_err() => {
                Err(PfError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "data.type {:?} is not a message of actor type {}; it takes {}",
                        message_type,
                        self.name,
                        known.join(", ")
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Delivers a message and waits for its answer (an ask).
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: ActorRef,
        message: Message,
    ) -> Result<Value, PfError> {
        let deadline = message.deadline;
        let offer = self.offer(&actor, message);
        self.settle(reactor, actor, offer, deadline).await
    }

    /// Delivers a message and answers it without awaiting when it can: a
    /// remembered turn, or a turn that runs inline on an idle actor. Gives
    /// back what the message found otherwise, for [`settle`](Self::settle).
    // The message comes back by value (no allocation) on the slow path.
    #[allow(clippy::result_large_err)]
    pub(crate) fn ask_now(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        message: Message,
    ) -> Result<Result<Value, PfError>, Offer> {
        match self.offer(actor, message) {
            Offer::Answered(outcome) => Ok(outcome),
            Offer::Inline(cell, message) if self.runs_inline() => {
                Ok(self.run_now(reactor, actor, &cell, message))
            }
            offer => Err(offer),
        }
    }

    /// Waits for the answer of a message offered to its actor (`deadline`
    /// is the message's).
    pub(crate) async fn settle(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: ActorRef,
        mut offer: Offer,
        deadline: Instant,
    ) -> Result<Value, PfError> {
        loop {
            match offer {
                Offer::Answered(outcome) => return outcome,
                Offer::Inline(cell, message) => {
                    return self.run_inline(reactor, &actor, &cell, message).await
                }
                Offer::Nested(cell, message) => {
                    return self.nested_turn(reactor, &actor, &cell, message).await
                }
                Offer::Elsewhere(message, to) => return self.send_on(reactor, &actor, message, to).await,
                Offer::Wait(answer) => {
                    let waited = reactor
                        .bounded(answer, deadline, || format!("{actor} did not answer in time"))
                        .await?;
                    match waited {
                        Ok(Answer::Done(outcome)) => return outcome,
                        Ok(Answer::Retry(again)) => offer = self.offer(&actor, *again),
                        Err(_) => return Err(abandoned(&actor)),
                    }
                }
            }
        }
    }

    /// Queues a message whose answer nobody awaits (a tell): it keeps its
    /// place in the mailbox from this call on.
    pub(crate) fn tell(self: &Arc<Self>, actor: ActorRef, message: Message) {
        let (reply, answer) = oneshot::channel();
        let message = Message { reply: Some(reply), ..message };
        // The answer is awaited in a task only to count a failure.
        match self.offer(&actor, message) {
            Offer::Answered(_) | Offer::Wait(_) => {}
            Offer::Elsewhere(mut message, to) => {
                // Sent on now (its first hop leaves here), so that tells keep
                // their order; its answer goes where a queued tell's would.
                let reply = message.reply.take();
                if let Some(reactor) = self.reactor() {
                    let outcome = self.send_on(&reactor, &actor, message, to);
                    tokio::spawn(super::migration::answer_when_done(outcome, reply, Vec::new()));
                }
            }
            Offer::Inline(..) | Offer::Nested(..) => unreachable!("a tell is never run on its sender"),
        }
        let host = self.clone();
        tokio::spawn(async move {
            match answer.await {
                Ok(Answer::Done(Ok(_))) | Err(_) => {}
                Ok(Answer::Done(Err(_))) => {
                    host.counters.tells_failed.fetch_add(1, Relaxed);
                }
                Ok(Answer::Retry(message)) => {
                    let Some(reactor) = host.reactor() else { return };
                    if host.deliver(&reactor, actor, *message).await.is_err() {
                        host.counters.tells_failed.fetch_add(1, Relaxed);
                    }
                }
            }
        });
    }

    /// Adds a repeat of a packet still in flight here to its first copy;
    /// PF409 when the first copy is not queued or running on this actor.
    pub(crate) async fn join(
        &self,
        reactor: &Reactor,
        actor: &ActorRef,
        message: Message,
    ) -> Result<Value, PfError> {
        let duplicate = || {
            PfError::new(
                ErrorCode::DuplicateId,
                format!("a packet with id {} is already in flight", message.id),
            )
        };
        let Some(cell) = self.active.get(actor.id()).map(|c| c.clone()) else { return Err(duplicate()) };
        let (to, answer) = oneshot::channel();
        {
            let mut st = cell.inner.lock();
            if let Some(answer) = st.remembered(&message) {
                return Ok(answer);
            }
            if st.join(&message.id.to_packet_id(), to).is_err() {
                return Err(duplicate());
            }
        }
        match reactor.bounded(answer, message.deadline, || format!("{actor} did not answer in time")).await? {
            Ok(Answer::Done(outcome)) => outcome,
            Ok(Answer::Retry(_)) | Err(_) => Err(abandoned(actor)),
        }
    }

    /// Finds the actor's cell (reserving one to load if it is not in
    /// memory) and decides what `message` does there.
    fn offer(self: &Arc<Self>, actor: &ActorRef, mut message: Message) -> Offer {
        // A tell carries its reply channel; an ask gets one here if it waits.
        let ask = message.reply.is_none();
        loop {
            // A create looks for room at once: its actor is seldom there.
            let found = if message.op == Op::Create { None } else { self.active.get(actor.id()) };
            let (cell, loading) = match found {
                Some(cell) => (cell.clone(), false),
                None => {
                    // Not in memory: this node may have handed it on. (A
                    // node handing the actor back adopts it here whatever
                    // this node last knew of it.)
                    if message.op != Op::Adopt {
                        if let Some(to) = self.moved_away(actor) {
                            return Offer::Elsewhere(message, to);
                        }
                    }
                    self.reserve(actor)
                }
            };
            let mut st = cell.inner.lock();
            if st.gone {
                continue;
            }
            if loading && message.op == Op::Adopt {
                // Nothing to read: the message brings the actor's record.
                let answer = st.enqueue_waiting(message);
                drop(st);
                self.spawn_drain(actor.clone(), cell, false);
                return Offer::Wait(answer);
            }
            if loading {
                // A store that answers at once (memory, or a file read) is
                // read here: no task is needed to bring the actor in.
                match self.read_now(actor) {
                    Some(Ok(record)) => {
                        self.fill(&mut st, record);
                        if !st.exists && message.op != Op::Create {
                            drop(st);
                            self.leave_requeued(actor, &cell);
                            if let Some(reply) = message.reply.take() {
                                let _ = reply.send(Answer::Done(Err(not_found(actor))));
                            }
                            return Offer::Answered(Err(not_found(actor)));
                        }
                        st.held = false;
                    }
                    Some(Err(e)) => {
                        drop(st);
                        self.leave_requeued(actor, &cell);
                        if let Some(reply) = message.reply.take() {
                            let _ = reply.send(Answer::Done(Err(e.clone())));
                        }
                        return Offer::Answered(Err(e));
                    }
                    None => {
                        let answer = st.enqueue_waiting(message);
                        drop(st);
                        self.spawn_drain(actor.clone(), cell, true);
                        return Offer::Wait(answer);
                    }
                }
                if !st.queue_is_empty() {
                    // Others queued while it loaded: they go first, then this one.
                    st.held = true;
                    let answer = st.enqueue_waiting(message);
                    drop(st);
                    self.spawn_drain(actor.clone(), cell, false);
                    return Offer::Wait(answer);
                }
            }
            if let Some(answer) = st.remembered(&message) {
                if let Some(reply) = message.reply.take() {
                    let _ = reply.send(Answer::Done(Ok(answer.clone())));
                }
                return Offer::Answered(Ok(answer));
            }
            if st.held {
                if ask && st.running_is(|turn| chain_holds(message.metadata.as_ref(), turn)) {
                    drop(st);
                    return Offer::Nested(cell, message);
                }
                let answer = st.enqueue_waiting(message);
                return Offer::Wait(answer);
            }
            st.held = true;
            if ask && self.runs_on_sender() && !message.op.moves() {
                st.start_running(&message.id);
                drop(st);
                return Offer::Inline(cell, message);
            }
            let answer = st.enqueue_waiting(message);
            drop(st);
            self.spawn_drain(actor.clone(), cell, false);
            return Offer::Wait(answer);
        }
    }

    /// The actor's cell, and whether it was just reserved here (to be
    /// loaded by whoever reserved it).
    fn reserve(&self, actor: &ActorRef) -> (Arc<Cell>, bool) {
        match self.active.entry(actor.id_arc().clone()) {
            Entry::Occupied(e) => (e.get().clone(), false),
            Entry::Vacant(e) => {
                let cell = Arc::new(Cell::loading());
                e.insert(cell.clone());
                (cell, true)
            }
        }
    }

    /// Runs the sender's own message while holding an idle actor, then
    /// hands the actor to a drain task if messages queued meanwhile. If
    /// the sender gives up during the turn (its future is dropped), the
    /// turn is abandoned uncommitted and the actor is handed on all the same.
    async fn run_inline(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
    ) -> Result<Value, PfError> {
        let mut held = Held { host: self, actor, cell, armed: true };
        // Run on its sender: dropping the sender's future drops the turn.
        let outcome = self.run_one(reactor, actor, cell, message, std::future::pending()).await;
        held.armed = false;
        let ended = cell.inner.lock().finish_running();
        ended.answer(None, &outcome);
        self.release_or_drain(actor, cell);
        outcome
    }

    /// [`run_inline`](Self::run_inline) for a turn that never suspends (a
    /// sync behaviour over a store that is not durable): by the same rules
    /// as [`run_one`](Self::run_one), without a future, and a create or a
    /// message locks the cell only twice more after [`offer`](Self::offer).
    fn run_now(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
    ) -> Result<Value, PfError> {
        debug_assert!(self.runs_inline());
        let mut st = cell.inner.lock();
        // Whoever held the actor for this message looked for its remembered
        // answer then (`offer`, `claim_idle`), and nothing committed since.
        if let Some(outcome) = Self::precheck_existence(&st, actor, &message) {
            return self.end_locked(actor, cell, st, outcome);
        }
        match (message.op, &self.spec.turns) {
            (Op::Create, _) => {
                let answer = self.create_in(&mut st, actor, message);
                self.end_locked(actor, cell, st, Ok(answer))
            }
            (Op::Send, Turns::Sync(behavior)) => {
                let state = st.state_for_turn();
                drop(st);
                self.send_now(reactor, actor, cell, behavior.as_ref(), message, state)
            }
            _ => {
                drop(st);
                let outcome = self
                    .run_one(reactor, actor, cell, message, std::future::pending())
                    .now_or_never()
                    .expect("an inline turn (sync behaviour, store not durable) never suspends");
                self.end_locked(actor, cell, cell.inner.lock(), outcome)
            }
        }
    }

    /// A turn of a sync behaviour over a store that is not durable, on a
    /// copy of the state (`state`): [`turn`](Self::turn) and
    /// [`commit`](Self::commit) without awaiting; the commit and the end of
    /// the turn share one lock of the cell.
    fn send_now(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        behavior: &dyn Behavior,
        message: Message,
        mut state: Value,
    ) -> Result<Value, PfError> {
        let remembered = message.memory_id().filter(|_| message.remember).cloned();
        let Message { id, data, metadata, deadline, priority, .. } = message;
        let ctx =
            ActorContext::new(turn_context(reactor, cell, id, metadata, deadline, priority), actor.clone());
        let reply = message_type(&data).and_then(|kind| handle_sync(behavior, kind, &data, &mut state, &ctx));
        drop(ctx);
        match reply {
            Ok(Reply::Value(answer)) => {
                let mut st = cell.inner.lock();
                commit_in(&mut st, remembered, state, &answer, self.settings.remembered_turns);
                self.end_locked(actor, cell, st, Ok(answer))
            }
            Ok(Reply::Stop(answer)) => {
                let stopped = self.stop(actor, cell).now_or_never();
                let outcome = stopped.expect("a store that is not durable removes at once").map(|()| answer);
                self.end_locked(actor, cell, cell.inner.lock(), outcome)
            }
            Err(e) => self.end_locked(actor, cell, cell.inner.lock(), Err(e)),
        }
    }

    /// Ends the running turn with `outcome` (its repeats answered, its
    /// mark ended) and lets the actor go, under the lock `st` of `cell`.
    fn end_locked(
        self: &Arc<Self>,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        mut st: MutexGuard<'_, CellState>,
        outcome: Result<Value, PfError>,
    ) -> Result<Value, PfError> {
        let ended = st.finish_running();
        self.release_locked(actor, cell, st);
        ended.answer(None, &outcome);
        outcome
    }

    /// After a holder's turn: the actor goes idle, or a drain task runs
    /// what queued meanwhile.
    fn release_or_drain(self: &Arc<Self>, actor: &ActorRef, cell: &Arc<Cell>) {
        self.release_locked(actor, cell, cell.inner.lock());
    }

    /// [`release_or_drain`](Self::release_or_drain) under the lock `st` of `cell`.
    fn release_locked(
        self: &Arc<Self>,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        mut st: MutexGuard<'_, CellState>,
    ) {
        if st.gone || !st.queue_is_empty() {
            drop(st);
            self.spawn_drain(actor.clone(), cell.clone(), false);
            return;
        }
        st.held = false;
        st.idle_sweeps = 0;
        st.shrink();
    }

    fn spawn_drain(self: &Arc<Self>, actor: ActorRef, cell: Arc<Cell>, loading: bool) {
        let host = self.clone();
        self.spawn(async move { host.drain(actor, cell, loading).await });
    }

    /// Runs `task` where this type's turns are driven: the binding's
    /// spawner ([`ActorType::with_spawner`]), or the Tokio runtime.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.spec.spawner {
            Some(spawn) => spawn(Box::pin(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Starts [`passivate_all_idle`](Self::passivate_all_idle) where this
    /// type's turns are driven, for a caller that cannot wait (a node whose
    /// view of this type's hosts changed).
    pub(crate) fn hand_over(self: &Arc<Self>) {
        // Moved actors may have another home now.
        self.after_hosts_changed();
        let host = self.clone();
        self.spawn(async move {
            host.passivate_all_idle().await;
        });
    }

    /// The holder's loop: loads the actor if asked, then runs queued
    /// messages one at a time until none is left.
    async fn drain(self: Arc<Self>, actor: ActorRef, cell: Arc<Cell>, loading: bool) {
        let Some(reactor) = self.reactor() else {
            self.leave(&actor, &cell, |_| Answer::Done(Err(stopped())));
            return;
        };
        if loading {
            match self.load(&reactor, &actor, &cell).await {
                Ok(true) => {}
                // Handed to another node: what waits looks the actor up
                // again, and is sent on there.
                Ok(false) => {
                    self.leave(&actor, &cell, |message| Answer::Retry(Box::new(message)));
                    return;
                }
                Err(e) => {
                    self.leave(&actor, &cell, |_| Answer::Done(Err(e.clone())));
                    return;
                }
            }
        }
        loop {
            let next = {
                let mut st = cell.inner.lock();
                if st.gone {
                    drop(st);
                    self.requeue_elsewhere(&cell);
                    return;
                }
                match st.next() {
                    Some(message) => message,
                    None => {
                        st.held = false;
                        st.idle_sweeps = 0;
                        let exists = st.exists;
                        if !exists {
                            // A lookup of an actor that does not exist leaves nothing behind.
                            st.gone = true;
                        }
                        st.shrink();
                        drop(st);
                        if !exists {
                            self.active.remove_if(actor.id(), |_, c| Arc::ptr_eq(c, &cell));
                        }
                        return;
                    }
                }
            };
            let mut next = next;
            let mut reply = next.reply.take();
            let outcome = if reply.as_ref().is_some_and(|r| r.is_closed()) || Instant::now() >= next.deadline
            {
                // Its sender stopped waiting (deadline, or gone): never started.
                Err(PfError::new(ErrorCode::Timeout, format!("{actor} did not answer in time")))
            } else {
                // A turn whose sender stops waiting (its packet cancelled,
                // its future dropped) is dropped too, uncommitted, as a
                // turn run on its sender is.
                let gone = sender_gone(reply.as_mut());
                AssertUnwindSafe(self.run_one(&reactor, &actor, &cell, next, gone))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))
            };
            let ended = cell.inner.lock().finish_running();
            ended.answer(reply, &outcome);
        }
    }

    /// Fills a freshly reserved cell from the store, or from the type's
    /// initial state; leaves it marked as not existing otherwise. `false`
    /// when the store says the actor was handed to another node.
    async fn load(&self, reactor: &Reactor, actor: &ActorRef, cell: &Cell) -> Result<bool, PfError> {
        match self.read(reactor, actor).await? {
            Stored::Here(record) => {
                self.fill(&mut cell.inner.lock(), record);
                Ok(true)
            }
            Stored::Moved => Ok(false),
        }
    }

    /// Fills a cell being loaded from what the store had.
    fn fill(&self, st: &mut CellState, record: Option<Record>) {
        match record {
            Some(record) => {
                st.restore(record);
                st.exists = true;
                let _ = self.counters.dormant.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
                self.counters.activations.fetch_add(1, Relaxed);
            }
            None => {
                if let Some(initial) = &self.spec.initial_state {
                    st.set_state(initial.clone());
                    st.exists = true;
                    st.fresh = true;
                    self.counters.activations.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Takes a cell that turned out to hold no actor out of the table; what
    /// queued on it meanwhile looks the actor up again.
    fn leave_requeued(&self, actor: &ActorRef, cell: &Arc<Cell>) {
        cell.inner.lock().gone = true;
        self.active.remove_if(actor.id(), |_, c| Arc::ptr_eq(c, cell));
        self.requeue_elsewhere(cell);
    }

    /// The fast path of a reactor's `try_submit`: claims the actor a plain
    /// message (`request`, read from `packet`) is for, if it is in memory
    /// and idle and its turn runs inline, and the message is not a repeat.
    /// The claimed actor is held for the packet, which
    /// [`run_claimed`](Self::run_claimed) must then run.
    pub(crate) fn claim_idle(&self, request: &Request<'_>, packet: &Packet) -> Option<Claim> {
        if !self.runs_inline() || request.op != Op::Send {
            return None;
        }
        // A message sent on to an actor that moved is remembered by the id
        // it was first sent with.
        let remembered_as = match request.first_id {
            Some(first) => Some(PacketId::new(first).ok()?),
            None => None,
        };
        let (cell, actor) = {
            let entry = self.active.get(request.id?)?;
            (entry.value().clone(), ActorRef::from_parts(self.name.clone(), entry.key().clone()))
        };
        let mut st = cell.inner.lock();
        let memory_id = remembered_as.as_ref().unwrap_or(&packet.id);
        if st.held || st.gone || !st.exists || st.remembered_packet(memory_id).is_some() {
            return None;
        }
        st.held = true;
        st.start_running(&TurnId::Packet(packet.id.clone()));
        drop(st);
        Some(Claim { cell, actor, addressing_keys: request.addressing_keys, remembered_as })
    }

    /// Gives back a claim that will not run (its packet went the slow way).
    pub(crate) fn release_claim(self: &Arc<Self>, claim: &Claim) {
        let ended = claim.cell.inner.lock().finish_running();
        debug_assert!(ended.is_empty());
        self.release_or_drain(&claim.actor, &claim.cell);
    }

    /// Runs `packet` on the actor [`claim_idle`](Self::claim_idle) claimed
    /// for it, without awaiting.
    pub(crate) fn run_claimed(
        self: &Arc<Self>,
        reactor: &Reactor,
        claim: &Claim,
        packet: Packet,
        deadline: Instant,
    ) -> Result<Value, PfError> {
        let Claim { cell, actor, addressing_keys, remembered_as } = claim;
        let message =
            match self.message_of(packet, Op::Send, *addressing_keys, remembered_as.clone(), deadline) {
                Ok(message) => message,
                Err(e) => {
                    let ended = cell.inner.lock().finish_running();
                    let outcome = Err(e);
                    ended.answer(None, &outcome);
                    self.release_or_drain(actor, cell);
                    return outcome;
                }
            };
        self.run_now(reactor, actor, cell, message)
    }

    /// Takes the actor out of memory: every queued message is answered by
    /// `answer` (given the message) and the cell leaves the table.
    fn leave(&self, actor: &ActorRef, cell: &Arc<Cell>, answer: impl Fn(Message) -> Answer) {
        let queued = {
            let mut st = cell.inner.lock();
            st.gone = true;
            st.held = false;
            st.drain_queue()
        };
        self.active.remove_if(actor.id(), |_, c| Arc::ptr_eq(c, cell));
        for (mut message, joiners) in queued {
            let reply = message.reply.take();
            for joiner in joiners {
                let _ = joiner.send(Answer::Done(Err(abandoned(actor))));
            }
            if let Some(reply) = reply {
                let _ = reply.send(answer(message));
            }
        }
    }

    /// The actor went away under its queue: every waiting message is sent
    /// back to look the actor up again.
    fn requeue_elsewhere(&self, cell: &Arc<Cell>) {
        let queued = cell.inner.lock().drain_queue();
        for (mut message, joiners) in queued {
            for joiner in joiners {
                let _ = joiner.send(Answer::Done(Err(PfError::new(
                    ErrorCode::Unavailable,
                    "the actor left memory while this repeat waited; retry",
                ))));
            }
            if let Some(reply) = message.reply.take() {
                let _ = reply.send(Answer::Retry(Box::new(message)));
            }
        }
    }

    /// Runs one message on a held actor: the remembered answer, a create, a
    /// stop, or a turn of the behaviour (dropped, uncommitted, if `gone`
    /// resolves while the behaviour runs).
    async fn run_one(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
        gone: impl std::future::Future<Output = ()>,
    ) -> Result<Value, PfError> {
        if let Some(outcome) = self.precheck(&cell.inner.lock(), actor, &message) {
            return outcome;
        }
        match message.op {
            Op::Create => self.create(actor, cell, message).await,
            Op::Stop => {
                self.stop(actor, cell).await?;
                Ok(address_of(actor, true))
            }
            Op::Send => self.turn(reactor, actor, cell, message, gone).await,
            // A move is not dropped with its sender: once the record is
            // handed over, the move must end on both nodes.
            Op::Migrate => self.migrate(reactor, actor, cell, message).await,
            Op::Adopt => self.adopt(reactor, actor, cell, message).await,
        }
    }

    /// What a message on a held actor meets before it runs: its remembered
    /// answer, PF409 for a create of an actor that exists, PF404 for
    /// anything else to one that does not; `None` when it runs.
    fn precheck(
        &self,
        st: &CellState,
        actor: &ActorRef,
        message: &Message,
    ) -> Option<Result<Value, PfError>> {
        if let Some(answer) = st.remembered(message) {
            return Some(Ok(answer));
        }
        Self::precheck_existence(st, actor, message)
    }

    /// [`precheck`](Self::precheck) but for the remembered answer: PF409
    /// for a create of an actor that exists, PF404 for anything else to
    /// one that does not.
    fn precheck_existence(
        st: &CellState,
        actor: &ActorRef,
        message: &Message,
    ) -> Option<Result<Value, PfError>> {
        match message.op {
            Op::Create if st.exists && !st.fresh => {
                Some(Err(PfError::new(ErrorCode::DuplicateId, format!("actor {actor} already exists"))))
            }
            Op::Create => None,
            // A handover replaces whatever this node held of the actor.
            Op::Adopt => None,
            _ if !st.exists => Some(Err(not_found(actor))),
            _ => None,
        }
    }

    /// A create's answer. A create made through the API is answered by its
    /// caller, who has the address: its answer is not built (nor
    /// remembered).
    fn create_answer(actor: &ActorRef, message: &Message) -> (Value, Option<PacketId>) {
        match message.memory_id() {
            Some(id) if message.remember => (address_of(actor, false), Some(id.clone())),
            _ => (Value::Null, None),
        }
    }

    /// A create over a store that is not durable, under the cell's lock.
    fn create_in(&self, st: &mut CellState, actor: &ActorRef, message: Message) -> Value {
        let (answer, remembered) = Self::create_answer(actor, &message);
        st.set_state(message.data);
        if let Some(id) = remembered {
            st.remember(id, &answer, self.settings.remembered_turns);
        }
        self.activated(st);
        answer
    }

    /// A created actor exists from now on (counted as activated unless a
    /// message had brought it in by its type's initial state).
    fn activated(&self, st: &mut CellState) {
        if !st.fresh {
            self.counters.activations.fetch_add(1, Relaxed);
        }
        st.exists = true;
        st.fresh = false;
    }

    async fn create(&self, actor: &ActorRef, cell: &Arc<Cell>, message: Message) -> Result<Value, PfError> {
        if !self.store.durable() {
            return Ok(self.create_in(&mut cell.inner.lock(), actor, message));
        }
        let (answer, remembered) = Self::create_answer(actor, &message);
        let record = {
            let mut st = cell.inner.lock();
            st.set_state(message.data);
            if let Some(id) = &remembered {
                st.remember(id.clone(), &answer, self.settings.remembered_turns);
            }
            st.record()
        };
        if let Err(e) = self.store.save(actor, &record).await {
            let mut st = cell.inner.lock();
            st.set_state(Value::Null);
            if let Some(id) = &remembered {
                st.forget(id);
            }
            return Err(e);
        }
        self.activated(&mut cell.inner.lock());
        Ok(answer)
    }

    /// Deletes the actor: its record, then its place in memory; what queued
    /// behind the stop looks the actor up again (and finds it gone).
    async fn stop(&self, actor: &ActorRef, cell: &Arc<Cell>) -> Result<(), PfError> {
        self.store.remove(actor).await?;
        let mut st = cell.inner.lock();
        st.gone = true;
        st.exists = false;
        drop(st);
        self.active.remove_if(actor.id(), |_, c| Arc::ptr_eq(c, cell));
        Ok(())
    }

    /// One turn of the behaviour: it runs on a copy of the state, which is
    /// committed (saved first, with a durable store) only if it succeeds.
    /// An async behaviour's future is dropped if `gone` resolves first (its
    /// sender stopped waiting): the turn ends uncommitted, PF499.
    async fn turn(
        &self,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
        gone: impl std::future::Future<Output = ()>,
    ) -> Result<Value, PfError> {
        let remembered = message.memory_id().filter(|_| message.remember).cloned();
        let Message { id, data, metadata, deadline, priority, .. } = message;
        let state = cell.inner.lock().state_for_turn();
        let ctx =
            ActorContext::new(turn_context(reactor, cell, id, metadata, deadline, priority), actor.clone());
        let (reply, state) = match &self.spec.turns {
            Turns::Sync(behavior) => {
                let mut state = state;
                let reply = handle_sync(behavior.as_ref(), message_type(&data)?, &data, &mut state, &ctx)?;
                (reply, state)
            }
            Turns::Async(turn) => {
                let message_type = message_type(&data)?.to_owned();
                let running = AssertUnwindSafe(turn(TurnInput { message_type, message: data, state, ctx }))
                    .catch_unwind();
                let late = || format!("{actor} did not answer in time");
                let out = reactor.bounded(unless_gone(running, gone), deadline, late).await?;
                let Some(out) = out else {
                    return Err(PfError::new(
                        ErrorCode::Cancelled,
                        format!("the turn of {actor} was cancelled: its sender stopped waiting"),
                    ));
                };
                let out = out.unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))?;
                if Instant::now() >= deadline {
                    // Its sender was answered PF408 already: the turn must not count.
                    return Err(PfError::new(ErrorCode::Timeout, late()));
                }
                (out.reply, out.state)
            }
        };
        match reply {
            Reply::Value(answer) => {
                self.commit(actor, cell, remembered, state, &answer).await?;
                Ok(answer)
            }
            Reply::Stop(answer) => {
                self.stop(actor, cell).await?;
                Ok(answer)
            }
        }
    }

    /// Makes a turn's state the actor's, remembering the turn; with a
    /// durable store, only once the record is on disk.
    async fn commit(
        &self,
        actor: &ActorRef,
        cell: &Cell,
        id: Option<PacketId>,
        state: Value,
        answer: &Value,
    ) -> Result<(), PfError> {
        let window = self.settings.remembered_turns;
        if !self.store.durable() {
            commit_in(&mut cell.inner.lock(), id, state, answer, window);
            return Ok(());
        }
        let record = {
            let mut st = cell.inner.lock();
            if let Some(id) = &id {
                st.remember(id.clone(), answer, window);
            }
            let mut record = st.record();
            record.state = state;
            record
        };
        match self.store.save(actor, &record).await {
            Ok(()) => {
                let mut st = cell.inner.lock();
                st.set_state(record.state);
                st.fresh = false;
                Ok(())
            }
            Err(e) => {
                if let Some(id) = &id {
                    cell.inner.lock().forget(id);
                }
                if self.store.shared() {
                    // Another activation may have written the record: this
                    // copy leaves memory, and the next message reads it again.
                    cell.inner.lock().gone = true;
                    self.active.remove_if(actor.id(), |_, c| std::ptr::eq(&**c, cell));
                }
                Err(e)
            }
        }
    }

    /// A reentrant message: the actor is held by a turn waiting on this
    /// message's chain, so it runs now, on the committed state, and may
    /// read but not change it (the waiting turn will commit its own).
    async fn nested_turn(
        &self,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
    ) -> Result<Value, PfError> {
        if message.op != Op::Send {
            return Err(PfError::new(
                ErrorCode::DuplicateId,
                format!("{actor} cannot be {} by a message its own turn is waiting on", past(message.op)),
            ));
        }
        let before = cell.inner.lock().state();
        let Message { id, data, metadata, deadline, priority, .. } = message;
        let ctx =
            ActorContext::new(turn_context(reactor, cell, id, metadata, deadline, priority), actor.clone());
        let (reply, after) = match &self.spec.turns {
            Turns::Sync(behavior) => {
                let mut state = before.clone();
                (handle_sync(behavior.as_ref(), message_type(&data)?, &data, &mut state, &ctx)?, state)
            }
            Turns::Async(turn) => {
                let message_type = message_type(&data)?.to_owned();
                let running = AssertUnwindSafe(turn(TurnInput {
                    message_type,
                    message: data,
                    state: before.clone(),
                    ctx,
                }))
                .catch_unwind();
                let out =
                    reactor.bounded(running, deadline, || format!("{actor} did not answer in time")).await?;
                let out = out.unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))?;
                (out.reply, out.state)
            }
        };
        let answer = match reply {
            Reply::Value(answer) if after == before => answer,
            _ => {
                return Err(PfError::new(
                    ErrorCode::DuplicateId,
                    format!(
                        "a reentrant message may read {actor}'s state but not change or stop it: the turn it \
                         interrupts holds the state"
                    ),
                ))
            }
        };
        Ok(answer)
    }

    /// Passivates actors idle for longer than the setting: their record
    /// goes to the store (unless a durable store has it already) and their
    /// memory is freed. Returns how many left memory.
    pub(crate) async fn passivate_idle(self: &Arc<Self>) -> usize {
        // Each sweep ages every idle actor by one; a turn makes it young
        // again. Sweeps come every quarter of the idle time, so an actor
        // aged past IDLE_SWEEPS has had no turn for at least that time.
        let idle: Vec<(Arc<str>, Arc<Cell>)> = self
            .active
            .iter()
            .filter(|e| {
                let mut st = e.value().inner.lock();
                if st.held || !st.exists {
                    return false;
                }
                st.idle_sweeps = st.idle_sweeps.saturating_add(1);
                st.idle_sweeps > IDLE_SWEEPS
            })
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        self.passivate(idle, IDLE_SWEEPS).await
    }

    /// Passivates every actor not running a turn, however recently it ran:
    /// the nodes hosting this type changed, so another node may own (and
    /// load from the store) an actor this node has in memory, and the copy
    /// here would be stale by the time the actor came back. Returns how
    /// many left memory.
    pub(crate) async fn passivate_all_idle(self: &Arc<Self>) -> usize {
        let idle: Vec<(Arc<str>, Arc<Cell>)> = self
            .active
            .iter()
            .filter(|e| {
                let st = e.value().inner.lock();
                !st.held && st.exists
            })
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        self.passivate(idle, 0).await
    }

    /// Writes out and frees each of `cells` still idle and aged more than
    /// `min_sweeps` sweeps.
    async fn passivate(self: &Arc<Self>, cells: Vec<(Arc<str>, Arc<Cell>)>, min_sweeps: u8) -> usize {
        let mut left = 0;
        for (id, cell) in cells {
            let record = {
                let mut st = cell.inner.lock();
                if st.held || st.gone || !st.exists || (min_sweeps > 0 && st.idle_sweeps <= min_sweeps) {
                    continue;
                }
                st.held = true; // nobody runs a turn while the record is written
                st.record()
            };
            let actor = ActorRef::new(&self.name, &id).expect("an active actor's id is valid");
            if !self.store.durable() && self.store.save(&actor, &record).await.is_err() {
                self.release_or_drain(&actor, &cell);
                continue;
            }
            if self.store.shared() {
                // Another node may own it next (the hosts changed). Given
                // up while the actor is still held here: a message arriving
                // meanwhile waits, and claims it again after.
                self.store.release(&actor).await;
            }
            cell.inner.lock().gone = true;
            self.active.remove_if(&*id, |_, c| Arc::ptr_eq(c, &cell));
            self.requeue_elsewhere(&cell);
            self.counters.passivations.fetch_add(1, Relaxed);
            self.counters.dormant.fetch_add(1, Relaxed);
            left += 1;
        }
        left
    }

    /// The committed state of an actor in memory (tests).
    #[cfg(test)]
    pub(crate) fn cell_state(&self, id: &str) -> Option<Value> {
        self.active.get(id).map(|cell| cell.inner.lock().state())
    }

    pub(super) fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().map(Reactor::from_inner)
    }
}

/// An actor held by a sender running its own turn: let go of when the
/// sender's future is dropped mid-turn.
struct Held<'a> {
    host: &'a Arc<TypeHost>,
    actor: &'a ActorRef,
    cell: &'a Arc<Cell>,
    armed: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.armed {
            let ended = self.cell.inner.lock().finish_running();
            ended.answer(None, &Err(abandoned(self.actor)));
            self.host.release_or_drain(self.actor, self.cell);
        }
    }
}

/// Resolves when the sender waiting on `reply` stops waiting (never for a
/// message without one).
async fn sender_gone(reply: Option<&mut oneshot::Sender<Answer>>) {
    match reply {
        Some(reply) => reply.closed().await,
        None => std::future::pending().await,
    }
}

/// Runs `work` until it ends (`Some`), or until `gone` resolves first
/// (`None`; `work` is dropped). Work ready at its first poll never polls
/// `gone`.
async fn unless_gone<F: std::future::Future>(
    work: F,
    gone: impl std::future::Future<Output = ()>,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    if let std::task::Poll::Ready(out) = futures::poll!(work.as_mut()) {
        return Some(out);
    }
    tokio::select! {
        biased;
        out = work => Some(out),
        _ = gone => None,
    }
}

/// Runs a sync behaviour on `state`; a panic is PF500.
fn handle_sync(
    behavior: &dyn Behavior,
    message_type: &str,
    data: &Value,
    state: &mut Value,
    ctx: &ActorContext,
) -> Result<Reply, PfError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| behavior.handle(message_type, data, state, ctx)))
        .unwrap_or_else(|panic| Err(PfError::failed(panic_message(&*panic))))
}

/// Commits a turn over a store that is not durable: its state becomes the
/// actor's, and the turn is remembered (a packet's).
fn commit_in(st: &mut CellState, id: Option<PacketId>, state: Value, answer: &Value, window: usize) {
    st.set_state(state);
    st.fresh = false;
    if let Some(id) = id {
        st.remember(id, answer, window);
    }
}

/// The context of a turn: its packet's id, or the id made for an API
/// message (formatted only if the turn reads it).
fn turn_context(
    reactor: &Reactor,
    cell: &Arc<Cell>,
    id: TurnId,
    metadata: Option<serde_json::Map<String, Value>>,
    deadline: Instant,
    priority: crate::packet::Priority,
) -> Context {
    let id = match id {
        TurnId::Packet(id) => ContextId::Given(id),
        TurnId::Made(number) => ContextId::Made(MadeTurnId::new(number, cell.clone())),
    };
    Context::new(reactor.clone(), id, metadata, deadline, priority, true)
}

/// How many sweeps (a quarter of the idle time apart) an actor stays idle
/// before it is passivated.
const IDLE_SWEEPS: u8 = 4;

/// The answer to a create or a stop: the actor's address.
fn address_of(actor: &ActorRef, stopped: bool) -> Value {
    let mut answer = json!({"type": actor.actor_type(), "id": actor.id()});
    if stopped {
        answer["stopped"] = Value::Bool(true);
    }
    answer
}

fn past(op: Op) -> &'static str {
    match op {
        Op::Create => "created",
        Op::Stop => "stopped",
        Op::Send => "sent to",
        Op::Migrate => "moved",
        Op::Adopt => "handed over",
    }
}

/// PF404: the actor does not exist (and its type declares no initial state).
pub(crate) fn not_found(actor: &ActorRef) -> PfError {
    PfError::new(ErrorCode::NotFound, format!("no actor {actor}: create it first"))
}

fn abandoned(actor: &ActorRef) -> PfError {
    PfError::new(ErrorCode::Unavailable, format!("{actor} stopped before answering"))
}

fn stopped() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the reactor is stopped")
}

#[cfg(test)]
mod turn_metadata_tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_turn_sees_the_metadata_without_its_address_in_order() {
        let m = map(json!({"a": 1, "pf.actor_id": "c1", "pf.actor_op": "send", "b": 2}));
        let seen = turn_metadata(Some(m), 2).unwrap();
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(seen.get("b"), Some(&json!(2)), "the index is rebuilt with the map");
        assert_eq!(turn_metadata(Some(map(json!({"pf.actor_id": "c1"}))), 1), None);
        assert_eq!(turn_metadata(Some(Map::new()), 0), None);
        assert_eq!(turn_metadata(Some(map(json!({"x": true}))), 0), Some(map(json!({"x": true}))));
    }
}
