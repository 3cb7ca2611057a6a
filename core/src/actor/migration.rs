//! Moving an actor to another node (docs/protocol.md, "Migration").
//!
//! An actor lives where placement puts it, its *home*, until it is moved.
//! A move is a message of the actor (op `migrate`), queued with the others:
//! at its turn, between two turns, the node holding the actor hands its
//! record (state and remembered turns) to the target as op `adopt`, an
//! actor packet delivered at that node by `pf.actor_at`. Once the target
//! took it, the node sends the messages that waited in the mailbox on to the
//! target, in their order, and keeps a *forwarding entry* in the cell's
//! place: what reaches it for the actor later is sent on too, with
//! `pf.actor_at`, so that nodes between deliver it there instead of placing
//! it again. A message is never run on two nodes: those queued here go on
//! unrun, and the turns already run are remembered by the record that
//! moved.
//!
//! The home keeps its entries in its store (a durable one: as records of
//! the type `pf.moved:T`, which no registered type can be named), so that a
//! restart keeps them and, with a store the nodes share, a node that
//! becomes the home finds them. Other nodes an actor passed through keep
//! theirs in memory, for messages still on their way to them, until the
//! hosts of the type change. An entry whose target no longer hosts the
//! type (it left, or was declared dead) is dropped by the home, which
//! serves the actor itself again from its store, as a new owner does when
//! an owner leaves; another node sends such messages to the home instead.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::address::{
    Op, MAX_NODE_ID_LEN, META_ACTOR_AT, META_ACTOR_ID, META_ACTOR_OP, META_ACTOR_PACKET_ID,
};
use super::cell::{Answer, Cell, Message};
use super::host::TypeHost;
use super::store::{ActorStore, Claimed, Record};
use super::ActorRef;
use crate::error::{ErrorCode, PfError};
use crate::packet::{Packet, MAX_TIMEOUT_MS, META_TRACE_ID};
use crate::reactor::{Forwarder, Reactor};

/// Where this node sent an actor it no longer holds.
pub(crate) struct MovedTo {
    /// The node the actor was handed to.
    to: Arc<str>,
    /// Whether the entry is in the store too (this node is the actor's
    /// home, and its store durable).
    stored: bool,
}

/// What an actor's forwarding entry means here now.
enum Judged {
    /// Send its messages to the node it names, which still hosts the type.
    Forward(Arc<str>),
    /// That node is gone and this one is not the actor's home: send its
    /// messages to the home, placed again.
    Replace,
    /// That node is gone and this one is the home: the actor is served
    /// here again, from the store, and the entry dropped.
    TakeBack,
    /// It names this node (a store the nodes share holds it): the actor is
    /// here, and the entry stays for the other nodes that may own it.
    Here,
}

/// What the store holds for an actor coming into memory.
pub(crate) enum Stored {
    /// Its record (`None`: none).
    Here(Option<Record>),
    /// A forwarding entry: it was handed to another node.
    Moved,
}

/// The store type holding the forwarding entries of actor type `actor_type`.
fn entries_type(actor_type: &str) -> String {
    format!("pf.moved:{actor_type}")
}

/// The store key of `actor`'s forwarding entry.
fn entry_key(actor: &ActorRef) -> ActorRef {
    ActorRef::from_parts(Arc::from(entries_type(actor.actor_type())), actor.id_arc().clone())
}

/// Whether `store` may hold forwarding entries of `actor_type`: a durable
/// store that holds some, or one that cannot tell at once.
pub(crate) fn store_holds_moves(actor_type: &str, store: &dyn ActorStore) -> bool {
    if !store.durable() {
        return false;
    }
    match store.ids(&entries_type(actor_type)).now_or_never() {
        Some(Ok(ids)) => !ids.is_empty(),
        _ => true,
    }
}

/// Whether this node is `actor`'s home: the node placement puts it on
/// (without a network, the one there is).
fn is_home(reactor: &Reactor, actor: &ActorRef) -> bool {
    reactor.forwarder().is_none_or(|f| f.actor_here(actor.actor_type(), actor.id(), None, None))
}

/// The answer of a move: where the actor was, and where it is.
fn moved_answer(from: &str, to: &str) -> Value {
    json!({"from": from, "to": to})
}

/// This node's id (the reactor's name without a network).
fn own_id(reactor: &Reactor, forwarder: Option<&dyn Forwarder>) -> String {
    forwarder.and_then(|f| f.node_id()).unwrap_or_else(|| reactor.config().name.clone())
}

/// PF404 naming `to`: not a node this one knows, or not a host of the type.
fn not_a_host(forwarder: Option<&dyn Forwarder>, actor: &ActorRef, to: &str, here: &str) -> PfError {
    let known = forwarder.is_some_and(|f| f.knows_node(to));
    let message = if known {
        let hosts = forwarder.map(|f| f.actor_host_ids(actor.actor_type())).unwrap_or_default();
        format!(
            "node {to:?} does not host actor type {} (its hosts: {}); {actor} stays on node {here}",
            actor.actor_type(),
            hosts.join(", ")
        )
    } else {
        format!("no node {to:?} is known to node {here}; {actor} stays there")
    };
    PfError::new(ErrorCode::NotFound, message)
}

/// PF403: an `adopt` that did not come from a peer node routing the type.
pub(crate) fn refused_adopt(actor: &ActorRef) -> PfError {
    PfError::new(
        ErrorCode::Forbidden,
        format!(
            "{actor}: metadata[\"{META_ACTOR_OP}\"] \"adopt\" hands an actor over between nodes and is \
             accepted only from a peer node that hosts or routes actor type {}; move an actor with mc:migrate",
            actor.actor_type()
        ),
    )
}

/// The node a `migrate` message names (`data.to`): PF400 naming the field.
fn target_of(data: &Value) -> Result<&str, PfError> {
    match data.get("to") {
        Some(Value::String(to)) if !to.is_empty() && to.len() <= MAX_NODE_ID_LEN => Ok(to),
        other => Err(PfError::new(
            ErrorCode::BadRequest,
            format!(
                "data.to must be the id of the node to move the actor to, a string of 1-{MAX_NODE_ID_LEN} \
                 bytes, got {}",
                other.map_or("nothing".to_owned(), Value::to_string)
            ),
        )),
    }
}

/// The record an `adopt` message brings (`data.record`): PF400 naming it.
fn record_of(data: &Value) -> Result<Record, PfError> {
    let bad = |why: String| PfError::new(ErrorCode::BadRequest, format!("data.record {why}"));
    let record = data.get("record").ok_or_else(|| bad("is required: the record handed over".into()))?;
    serde_json::from_value(record.clone())
        .map_err(|e| bad(format!("must be {{\"state\", \"recent\": [{{\"id\", \"answer\"}}]}}: {e}")))
}

/// `message` as the packet that carries it on to its actor elsewhere: its
/// op, data, priority, what is left of its deadline and the metadata its
/// turn would see, addressed again, and delivered at `at` when given. It
/// goes under a packet id of its own (it may pass a node it passed already,
/// where its first id is still in flight); `pf.actor_packet_id` keeps the
/// id the message was first sent with, which the actor remembers the turn
/// by, and the trace goes on under that id.
fn packet_of(actor: &ActorRef, message: Message, at: Option<&str>) -> Packet {
    let first = message.memory_id().cloned().unwrap_or_else(|| message.id.to_packet_id());
    let Message { op, priority, data, metadata, deadline, .. } = message;
    let mut meta = metadata.unwrap_or_default();
    meta.insert(META_ACTOR_ID.to_owned(), Value::String(actor.id().to_owned()));
    if op != Op::Send {
        meta.insert(META_ACTOR_OP.to_owned(), Value::String(op.as_str().to_owned()));
    }
    if let Some(node) = at {
        meta.insert(META_ACTOR_AT.to_owned(), Value::String(node.to_owned()));
    }
    if !meta.contains_key(META_TRACE_ID) {
        meta.insert(META_TRACE_ID.to_owned(), Value::String(first.to_string()));
    }
    meta.insert(META_ACTOR_PACKET_ID.to_owned(), Value::String(first.to_string()));
    let left_ms = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
    let mut packet = Packet::new(super::address::ACTOR_GROUP, actor.element(), data).with_metadata(meta);
    packet.priority = priority;
    packet.timeout_ms = Some(left_ms.clamp(1, MAX_TIMEOUT_MS));
    packet
}

/// Sends `outcome` to a waiting sender (`reply`) and to the repeats of its
/// packet once the message sent on is answered. A sender alone that stops
/// waiting withdraws it (the future is dropped).
pub(crate) async fn answer_when_done(
    outcome: BoxFuture<'static, Result<Value, PfError>>,
    reply: Option<oneshot::Sender<Answer>>,
    joiners: Vec<oneshot::Sender<Answer>>,
) {
    let outcome = match reply {
        Some(mut reply) if joiners.is_empty() => {
            let answered = tokio::select! {
                outcome = outcome => outcome,
                _ = reply.closed() => return,
            };
            let _ = reply.send(Answer::Done(answered));
            return;
        }
        reply => {
            let answered = outcome.await;
            if let Some(reply) = reply {
                let _ = reply.send(Answer::Done(answered.clone()));
            }
            answered
        }
    };
    for joiner in joiners {
        let _ = joiner.send(Answer::Done(outcome.clone()));
    }
}

/// Polls `future` once, with a waker that does nothing: what it does at
/// once (a packet's first hop) is done; it is polled again where it is
/// awaited.
pub(super) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    std::pin::Pin::new(future).poll(&mut cx)
}

impl TypeHost {
    /// Where a message for `actor`, which is not in memory here, goes when
    /// this node handed the actor to another: `Some(Some(node))` to that
    /// node, `Some(None)` to the actor's home (placed again). `None` when
    /// the actor is here (no entry, or the home takes it back: the entry is
    /// forgotten, and the store's is removed when the actor is read).
    pub(super) fn moved_away(&self, actor: &ActorRef) -> Option<Option<Arc<str>>> {
        if !self.moved_any.load(Relaxed) {
            return None;
        }
        let to = self.moved.get(actor.id()).map(|m| m.to.clone())?;
        let reactor = self.reactor()?;
        match self.judge(&reactor, actor, &to) {
            Judged::Forward(node) => Some(Some(node)),
            Judged::Replace => Some(None),
            Judged::TakeBack | Judged::Here => {
                self.moved.remove_if(actor.id(), |_, m| m.to == to);
                None
            }
        }
    }

    /// What a forwarding entry of `actor` pointing at `to` means now.
    fn judge(&self, reactor: &Reactor, actor: &ActorRef, to: &str) -> Judged {
        let Some(forwarder) = reactor.forwarder() else { return Judged::TakeBack };
        if forwarder.node_id().is_some_and(|own| own == to) {
            return Judged::Here;
        }
        if forwarder.hosts_actor_type(actor.actor_type(), to) {
            return Judged::Forward(Arc::from(to));
        }
        if is_home(reactor, actor) {
            Judged::TakeBack
        } else {
            Judged::Replace
        }
    }

    /// Records that `actor` is on node `to` now: in memory, and in the
    /// store when this node is its home and the store durable (a failed
    /// write keeps it in memory only).
    async fn note_moved_to(&self, reactor: &Reactor, actor: &ActorRef, to: Arc<str>) {
        let stored = self.store.durable()
            && is_home(reactor, actor)
            && self.store_entry(actor, Some(&to)).await.is_ok();
        self.moved_any.store(true, Relaxed);
        self.moved.insert(actor.id_arc().clone(), MovedTo { to, stored });
    }

    /// Writes `actor`'s forwarding entry to the store (`to`: the node it
    /// names), or removes it (`None`).
    async fn store_entry(&self, actor: &ActorRef, to: Option<&str>) -> Result<(), PfError> {
        match to {
            Some(to) => {
                self.moves_stored.store(true, Relaxed);
                let entry = Record { state: json!({"to": to}), recent: Vec::new() };
                self.store.save(&entry_key(actor), &entry).await
            }
            None if self.moves_stored.load(Relaxed) => self.store.remove(&entry_key(actor)).await.map(drop),
            None => Ok(()),
        }
    }

    /// After the nodes hosting the type changed: forgets the entries the
    /// store holds (read again when their actor is next messaged: another
    /// node may own, and may have moved, those actors since, with a store
    /// the nodes share), looks again whether a durable store holds any, and
    /// drops what this node remembers of actors it is not the home of (kept
    /// only for messages on their way to it: a chain of such entries may
    /// lead through a node that left).
    pub(super) fn after_hosts_changed(&self) {
        if !self.moved_any.load(Relaxed) && !self.store.durable() {
            return;
        }
        if self.store.durable()
            && !self.moves_stored.load(Relaxed)
            && store_holds_moves(&self.name, self.store.as_ref())
        {
            self.moves_stored.store(true, Relaxed);
        }
        let Some(reactor) = self.reactor() else { return };
        // With a shared store, the entries in memory came from claims (or
        // the store): both are read again at the next activation.
        let shared = self.store.shared();
        self.moved.retain(|id, m| {
            !m.stored && !shared && is_home(&reactor, &ActorRef::from_parts(self.name.clone(), id.clone()))
        });
    }

    /// The ids of the actors of this type this node handed on (in memory
    /// or in its store): `list` leaves them out.
    pub(super) async fn moved_ids(&self, reactor: &Reactor) -> Result<Vec<String>, PfError> {
        let mut ids: Vec<String> = self.moved.iter().map(|e| e.key().to_string()).collect();
        if !self.moves_stored.load(Relaxed) {
            return Ok(ids);
        }
        let here = own_id(reactor, reactor.forwarder().as_deref().map(|f| &**f));
        for id in self.store.ids(&entries_type(&self.name)).await? {
            let actor = ActorRef::from_parts(self.name.clone(), Arc::from(id.as_str()));
            let entry = self.store.load(&entry_key(&actor)).await?;
            // An entry naming this node (a shared store) is an actor here.
            if entry.is_some_and(|e| e.state.get("to").and_then(Value::as_str) != Some(here.as_str())) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// What the store holds of `actor` when it comes into memory, read
    /// without awaiting when the store answers at once. `None` when it
    /// does not, or when it holds a forwarding entry: [`read`](Self::read)
    /// then deals with both.
    pub(super) fn read_now(&self, actor: &ActorRef) -> Option<Result<Option<Record>, PfError>> {
        if self.store.shared() {
            return None; // claimed first, over the network
        }
        if self.moves_stored.load(Relaxed) {
            match self.store.load(&entry_key(actor)).now_or_never()? {
                Ok(None) => {}
                Ok(Some(_)) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        self.store.load(actor).now_or_never()
    }

    /// What the store holds of `actor` when it comes into memory: its
    /// forwarding entry, if the actor is still elsewhere (then noted in
    /// memory), else its record. An entry the home takes back is removed.
    pub(super) async fn read(&self, reactor: &Reactor, actor: &ActorRef) -> Result<Stored, PfError> {
        if self.store.shared() {
            if let Claimed::Elsewhere(node) = self.store.claim(actor).await? {
                // A live node holds the actor's activation: its messages go
                // there, as to an actor moved there, until the hosts change.
                self.moved_any.store(true, Relaxed);
                self.moved.insert(actor.id_arc().clone(), MovedTo { to: Arc::from(node), stored: false });
                return Ok(Stored::Moved);
            }
        }
        if self.moves_stored.load(Relaxed) {
            if let Some(entry) = self.store.load(&entry_key(actor)).await? {
                let to = entry.state.get("to").and_then(Value::as_str).unwrap_or_default();
                match self.judge(reactor, actor, to) {
                    Judged::Forward(_) | Judged::Replace => {
                        self.moved_any.store(true, Relaxed);
                        self.moved
                            .insert(actor.id_arc().clone(), MovedTo { to: Arc::from(to), stored: true });
                        return Ok(Stored::Moved);
                    }
                    Judged::TakeBack => {
                        self.store.remove(&entry_key(actor)).await?;
                    }
                    Judged::Here => {}
                }
            }
        }
        Ok(Stored::Here(self.store.load(actor).await?))
    }

    /// Sends `message` on to `actor` on node `to` (or, `None`, wherever
    /// placement puts it) as a packet. Its first hop leaves now, so that
    /// messages sent on one after another keep their order. The future
    /// answers with the outcome there; when it is a move, where the actor
    /// went is noted here too.
    pub(super) fn send_on(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        message: Message,
        to: Option<Arc<str>>,
    ) -> BoxFuture<'static, Result<Value, PfError>> {
        let moving = message.op == Op::Migrate;
        let deadline = message.deadline;
        let packet = packet_of(actor, message, to.as_deref());
        let sent = reactor.forwarder().and_then(|f| match &to {
            Some(node) => f.forward_to_actor_host(node, packet, deadline),
            None => f.forward(packet, deadline, None),
        });
        let Some(mut sent) = sent else {
            let why = match &to {
                Some(node) => format!("{actor} is on node {node}, which this node cannot reach"),
                None => format!("no node this one reaches hosts {actor}"),
            };
            return Box::pin(std::future::ready(Err(PfError::new(ErrorCode::Unavailable, why))));
        };
        let first = poll_once(&mut sent);
        let (host, reactor, actor) = (self.clone(), reactor.clone(), actor.clone());
        Box::pin(async move {
            let result = match first {
                Poll::Ready(result) => result,
                Poll::Pending => sent.await,
            };
            if moving {
                if let Ok(answer) = &result.outcome {
                    host.moved_on(&reactor, &actor, answer).await;
                }
            }
            result.outcome
        })
    }

    /// A move this node sent on succeeded (`answer`: `{from, to}`): its
    /// entry follows the actor, unless the actor came here (its adoption
    /// dropped the entry) or is in memory here already.
    async fn moved_on(&self, reactor: &Reactor, actor: &ActorRef, answer: &Value) {
        let Some(to) = answer.get("to").and_then(Value::as_str) else { return };
        let here = own_id(reactor, reactor.forwarder().as_deref().map(|f| &**f));
        if to == here || self.active.contains_key(actor.id()) {
            return;
        }
        self.note_moved_to(reactor, actor, Arc::from(to)).await;
    }

    /// The turn of a `migrate` message: hands the actor (held by this turn)
    /// to the node `data.to` names, then sends on what waited for it.
    pub(super) async fn migrate(
        self: &Arc<Self>,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
    ) -> Result<Value, PfError> {
        let to = target_of(&message.data)?;
        let forwarder = reactor.forwarder();
        let forwarder = forwarder.as_deref().map(|f| &**f);
        let here = own_id(reactor, forwarder);
        if to == here {
            return Ok(moved_answer(&here, &here));
        }
        let Some(forwarder) = forwarder.filter(|f| f.hosts_actor_type(actor.actor_type(), to)) else {
            return Err(not_a_host(forwarder, actor, to, &here));
        };
        let record = cell.inner.lock().record();
        let mut adopt = actor.packet(Op::Adopt, json!({"record": record, "from": here}));
        let meta = adopt.metadata.get_or_insert_with(Map::new);
        meta.insert(META_ACTOR_AT.to_owned(), Value::String(to.to_owned()));
        if let Some(trace) = message.metadata.as_ref().and_then(|m| m.get(META_TRACE_ID)) {
            meta.insert(META_TRACE_ID.to_owned(), trace.clone());
        }
        adopt.priority = message.priority;
        let handed = match forwarder.forward_to_actor_host(to, adopt, message.deadline) {
            Some(answer) => answer.await.outcome,
            None => {
                Err(PfError::new(ErrorCode::Unavailable, format!("node {to} cannot be reached from here")))
            }
        };
        if let Err(e) = handed {
            return Err(PfError {
                code: e.code,
                message: format!("{actor} stays on node {here}: node {to} did not take it: {}", e.message),
            });
        }
        let to: Arc<str> = Arc::from(to);
        self.note_moved_to(reactor, actor, to.clone()).await;
        self.move_out(reactor, actor, cell, &to);
        if self.store.shared() {
            // The target runs it now: this node's claim must not send its
            // next activation back here.
            self.store.release(actor).await;
        }
        Ok(moved_answer(&here, &to))
    }

    /// The actor was handed to `to` (its entry noted): the messages waiting
    /// in its mailbox are sent on there in their order, and the cell leaves
    /// memory. Under the cell's lock, so that every message for the actor
    /// arriving meanwhile waits for it (and then finds the entry): none is
    /// sent on before those that waited.
    fn move_out(self: &Arc<Self>, reactor: &Reactor, actor: &ActorRef, cell: &Arc<Cell>, to: &Arc<str>) {
        let mut sent = Vec::new();
        {
            let mut st = cell.inner.lock();
            for (mut message, joiners) in st.drain_queue() {
                let reply = message.reply.take();
                sent.push((self.send_on(reactor, actor, message, Some(to.clone())), reply, joiners));
            }
            st.gone = true;
        }
        self.active.remove_if(actor.id(), |_, c| Arc::ptr_eq(c, cell));
        for (outcome, reply, joiners) in sent {
            tokio::spawn(answer_when_done(outcome, reply, joiners));
        }
    }

    /// The turn of an `adopt` message: the record it brings becomes the
    /// actor's here (saved first, with a durable store), and this node
    /// forgets where it last sent the actor. The home also removes its
    /// stored entry; another node leaves the home's alone (in a store the
    /// nodes share, it names the node the actor came from until the home
    /// writes the new one, and that node sends on what reaches it).
    pub(super) async fn adopt(
        &self,
        reactor: &Reactor,
        actor: &ActorRef,
        cell: &Arc<Cell>,
        message: Message,
    ) -> Result<Value, PfError> {
        let record = record_of(&message.data)?;
        if self.store.durable() {
            self.store.save(actor, &record).await?;
            if is_home(reactor, actor) {
                self.store_entry(actor, None).await?;
            }
        }
        self.moved.remove(actor.id());
        {
            let mut st = cell.inner.lock();
            if !st.exists {
                self.counters.activations.fetch_add(1, Relaxed);
            }
            st.replace(record);
            st.exists = true;
            st.fresh = false;
        }
        let here = own_id(reactor, reactor.forwarder().as_deref().map(|f| &**f));
        Ok(json!({"type": actor.actor_type(), "id": actor.id(), "node": here}))
    }
}
