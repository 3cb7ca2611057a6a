//! Actors: stateful addresses served one message at a time.
//!
//! An actor is a (type, id) pair with a JSON state. Its messages are
//! ordinary submit packets to `rm:actor.<type>` naming the id in
//! `metadata["pf.actor_id"]` (see [`address`] and docs/protocol.md,
//! "Actors"), so anything that can submit a packet can message an actor,
//! a seed-spec peer included. The reactor routes those packets to the
//! type's host here, which gives every actor:
//!
//! - **one mailbox, one turn at a time**, highest priority first and in
//!   arrival order within a priority;
//! - **transactional turns**: a turn runs on a copy of the state, which
//!   becomes the actor's only if the turn succeeds (and, with a durable
//!   store, only once it is on disk);
//! - **effectively-once turns**: the last `actor_remembered_turns` packet
//!   ids are kept with their answers (and stored with the state), so a
//!   repeated packet is answered from memory instead of running again;
//! - **passivation**: an actor idle for `actor_passivate_after` leaves
//!   memory for its store and comes back on its next message.
//!
//! An idle actor in memory is a map entry and a small cell: no task, no
//! channel. The sender who finds an actor idle runs its turn (inline for a
//! sync behaviour over a memory store); messages that arrive meanwhile are
//! run by one task in turn.

pub mod address;
mod behavior;
mod cell;
mod context;
mod host;
mod migration;
pub mod store;
mod turn_id;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

pub use address::{
    ActorRef, Op, META_ACTOR_AT, META_ACTOR_ID, META_ACTOR_OP, META_ACTOR_PACKET_ID, META_TURNS,
};
pub use behavior::{ActorType, Behavior, Reply, TurnInput, TurnOutput};
pub use context::ActorContext;
pub use store::{ActorStore, Claimed, FileStore, MemoryStore, Record};

pub(crate) use host::{HostSettings, TypeHost};
pub(crate) use migration::refused_adopt;
pub(crate) use turn_id::{made_id, next_number, MadeTurnId};

use crate::error::{ErrorCode, PfError};
use crate::packet::Packet;
use crate::reactor::Reactor;

/// Counters of one actor type on this reactor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActorTypeStats {
    /// The type name.
    pub actor_type: String,
    /// Actors in memory.
    pub active: u64,
    /// Actors in the store and not in memory.
    pub passivated: u64,
    /// Times an actor came into memory (created, loaded or activated).
    pub activations: u64,
    /// Times an idle actor left memory.
    pub passivations: u64,
    /// Told messages whose turn failed (nobody awaited their answer).
    pub tells_failed: u64,
}

/// The actor API of a reactor: register types, create, message, stop and
/// list actors. Get it with [`Reactor::actors`]; cheap to clone.
#[derive(Clone)]
pub struct Actors {
    reactor: Reactor,
}

impl Actors {
    pub(crate) fn new(reactor: Reactor) -> Actors {
        Actors { reactor }
    }

    /// Uses `store` for the state of every actor type registered after
    /// this call (the default is a [`MemoryStore`]). PF400 once a type is
    /// registered: its actors would be split between two stores.
    pub fn set_store(&self, store: Arc<dyn ActorStore>) -> Result<(), PfError> {
        self.reactor.set_actor_store(store)
    }

    /// Registers (or replaces) actor type `name`: messages to
    /// `rm:actor.<name>` are served by this reactor from now on.
    pub fn register(&self, name: &str, spec: ActorType) -> Result<(), PfError> {
        address::check_type(name)?;
        self.reactor.register_actor_type(name, spec)
    }

    /// Registers a type whose behaviour is a closure over the message type,
    /// the message, the state (to change in place) and the context.
    pub fn register_fn<F>(&self, name: &str, behavior: F) -> Result<(), PfError>
    where
        F: Fn(&str, &Value, &mut Value, &ActorContext) -> Result<Reply, PfError> + Send + Sync + 'static,
    {
        self.register(name, ActorType::new(behavior))
    }

    /// Creates actor (`actor_type`, `id`) with `state`; a fresh UUID v4 id
    /// when `id` is `None`. PF409 if the actor exists.
    pub async fn create(
        &self,
        actor_type: &str,
        id: Option<&str>,
        state: Value,
    ) -> Result<ActorRef, PfError> {
        let actor = match id {
            Some(id) => ActorRef::new(actor_type, id)?,
            None => ActorRef::generate(actor_type)?,
        };
        self.ask(&actor, Op::Create, state).await?;
        Ok(actor)
    }

    /// Asks `op` of `actor`: as a packet through the reactor (which may
    /// route it to another node), or, for a type hosted by a reactor
    /// without a network, handed to its host directly. Both are answered
    /// by the same rules; the direct way skips building a packet, and its
    /// turns are not remembered (nobody else knows the id made for them).
    /// The direct way answers a create with `null`: its caller has the
    /// address.
    async fn ask(&self, actor: &ActorRef, op: Op, data: Value) -> Result<Value, PfError> {
        self.ask_until(actor, op, data, None).await
    }

    /// [`ask`](Self::ask), answered by `deadline` (PF408) when given, else
    /// within the default timeout.
    pub(crate) async fn ask_until(
        &self,
        actor: &ActorRef,
        op: Op,
        data: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, PfError> {
        let direct =
            if self.reactor.has_forwarder() { None } else { self.reactor.actor_host(actor.actor_type()) };
        let Some(host) = direct else {
            let mut packet = actor.packet(op, data);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
                packet = packet.with_timeout_ms(left.clamp(1, crate::packet::MAX_TIMEOUT_MS));
            }
            // Boxed, as every wait below: what is answered at once keeps a
            // small future.
            return Box::pin(self.reactor.submit(packet)).await.outcome;
        };
        if self.reactor.is_stopped() {
            return Err(PfError::new(ErrorCode::Unavailable, "the reactor is stopped"));
        }
        if op == Op::Adopt {
            return Err(migration::refused_adopt(actor));
        }
        host.check_data(op, &data)?;
        self.reactor.sweep_actors();
        let start = Instant::now();
        let deadline = deadline
            .unwrap_or_else(|| start + std::time::Duration::from_millis(self.reactor.timeout_of_unset()));
        let message = cell::Message {
            // Its id is made only if its turn reads it (and then marked in
            // flight, so that the turn may call out): see `turn_id`.
            id: turn_id::TurnId::Made(turn_id::next_number()),
            op,
            priority: crate::packet::Priority::DEFAULT,
            data,
            metadata: None,
            deadline,
            reply: None,
            remember: false,
            remembered_as: None,
        };
        let _in_flight = self.reactor.count_ask();
        let outcome = match host.ask_now(&self.reactor, actor, message) {
            Ok(outcome) => outcome,
            Err(offer) => Box::pin(host.settle(&self.reactor, actor.clone(), offer, deadline)).await,
        };
        host.stats.record(start.elapsed().as_micros() as u64, outcome.is_err());
        outcome
    }

    /// Sends `message` (an object whose `type` names the behaviour's
    /// method) and returns the turn's answer (an ask). PF404 for an actor
    /// that does not exist, unless its type declares an initial state.
    pub async fn send(&self, actor: &ActorRef, message: Value) -> Result<Value, PfError> {
        self.ask(actor, Op::Send, message).await
    }

    /// Asks `op` of `actor` with a binding's options (`parts`: the data,
    /// and a packet id, priority, timeout or metadata the caller set; the
    /// group and element are the actor's). The options are judged now
    /// (PF400 naming the field); the returned [`Ask`] is the future of the
    /// turn's answer. A message that sets nothing but its data goes the
    /// direct way of [`send`](Self::send) (no packet is built when the type
    /// is hosted here and the reactor has no network); anything else is a
    /// packet, submitted as a peer's would be.
    pub fn ask_with(
        &self,
        actor: &ActorRef,
        op: Op,
        parts: crate::packet::PacketParts<'_>,
    ) -> Result<Ask, PfError> {
        if op == Op::Send && parts.only_data() {
            let (actors, actor) = (self.clone(), actor.clone());
            let data = parts.data.unwrap_or(Value::Null);
            let answer = Box::pin(async move { actors.ask(&actor, op, data).await });
            return Ok(Ask { timeout_ms: self.reactor.timeout_of_unset(), answer });
        }
        let packet = actor.packet_from(op, parts)?;
        let reactor = self.reactor.clone();
        let timeout_ms = self.reactor.timeout_of(&packet);
        Ok(Ask { timeout_ms, answer: Box::pin(async move { reactor.submit(packet).await.outcome }) })
    }

    /// Sends `message` without waiting for the turn (a tell). The message
    /// holds its place in the actor's mailbox (local actors) or is on its
    /// way (remote ones) when this returns, so tells from one sender keep
    /// their order; a failed turn is counted in
    /// [`ActorTypeStats::tells_failed`]. Must be called inside a Tokio
    /// runtime.
    pub fn tell(&self, actor: &ActorRef, message: Value) -> Result<(), PfError> {
        self.tell_packet(actor, actor.packet(Op::Send, message))
    }

    /// [`tell`](Self::tell) for a packet already built (a child packet of
    /// a context, or a binding's with its options).
    pub fn tell_packet(&self, actor: &ActorRef, mut packet: Packet) -> Result<(), PfError> {
        let deadline = Instant::now() + std::time::Duration::from_millis(self.reactor.timeout_of(&packet));
        let host = self
            .reactor
            .actor_host(actor.actor_type())
            .filter(|_| self.reactor.actor_lives_here(&mut packet, None));
        if let Some(host) = host {
            packet.validate()?;
            let (_, message) = host.message(packet, deadline)?;
            if message.op == Op::Adopt {
                return Err(migration::refused_adopt(actor));
            }
            host.tell(actor.clone(), message);
            return Ok(());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PfError::new(
                ErrorCode::Unavailable,
                "tell must be called inside the reactor's runtime",
            ));
        }
        // Polled once here, so that its first hop leaves before this
        // returns: the tells one sender makes to an actor elsewhere leave,
        // and so run, in the order they were made.
        let reactor = self.reactor.clone();
        let actor_type = actor.actor_type().to_owned();
        let mut told =
            Box::pin(async move { reactor.submit(packet).await.err().is_some().then_some(reactor) });
        let failed = move |reactor: Option<Reactor>| {
            if let Some(reactor) = reactor {
                reactor.count_failed_tell(&actor_type);
            }
        };
        match migration::poll_once(&mut told) {
            std::task::Poll::Ready(reactor) => failed(reactor),
            std::task::Poll::Pending => {
                tokio::spawn(async move { failed(told.await) });
            }
        }
        Ok(())
    }

    /// Stops the actor after the messages queued before this one, and
    /// deletes its state. PF404 if it does not exist.
    pub async fn stop(&self, actor: &ActorRef) -> Result<(), PfError> {
        self.ask(actor, Op::Stop, Value::Null).await.map(drop)
    }

    /// The ids of the actors of `actor_type` this reactor hosts, in memory
    /// or in its store, sorted. PF404 naming the type if it is not
    /// registered here.
    pub async fn list(&self, actor_type: &str) -> Result<Vec<String>, PfError> {
        let host = self.host(actor_type)?;
        let mut ids = host.store.ids(actor_type).await?;
        // An actor handed to another node is listed there, not here (a
        // durable store keeps its record from before it left).
        let moved = host.moved_ids(&self.reactor).await?;
        if !moved.is_empty() {
            let moved: std::collections::HashSet<&str> = moved.iter().map(String::as_str).collect();
            ids.retain(|id| !moved.contains(id.as_str()));
        }
        ids.extend(host.active_ids());
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The ids of the actors of `actor_type` in this reactor's memory
    /// (not passivated), sorted; empty for a type not registered here.
    pub fn active_ids(&self, actor_type: &str) -> Vec<String> {
        let mut ids = self.reactor.actor_host(actor_type).map(|h| h.active_ids()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// How many actors of `actor_type` this reactor hosts (see [`list`](Self::list)).
    pub async fn count(&self, actor_type: &str) -> Result<usize, PfError> {
        Ok(self.list(actor_type).await?.len())
    }

    /// Passivates now every actor idle for longer than the reactor's
    /// `actor_passivate_after` (a sweep also runs on its own every quarter
    /// of that time). Returns how many left memory.
    pub async fn passivate_idle(&self) -> usize {
        let mut left = 0;
        for host in self.reactor.actor_hosts() {
            left += host.passivate_idle().await;
        }
        left
    }

    /// Counters per type, sorted by type name.
    pub fn stats(&self) -> Vec<ActorTypeStats> {
        let mut stats: Vec<ActorTypeStats> = self
            .reactor
            .actor_hosts()
            .iter()
            .map(|host| ActorTypeStats {
                actor_type: host.name.to_string(),
                active: host.active_count() as u64,
                passivated: host.counters.dormant.load(Relaxed),
                activations: host.counters.activations.load(Relaxed),
                passivations: host.counters.passivations.load(Relaxed),
                tells_failed: host.counters.tells_failed.load(Relaxed),
            })
            .collect();
        stats.sort_by(|a, b| a.actor_type.cmp(&b.actor_type));
        stats
    }

    fn host(&self, actor_type: &str) -> Result<Arc<TypeHost>, PfError> {
        self.reactor.actor_host(actor_type).ok_or_else(|| {
            PfError::new(
                ErrorCode::NotFound,
                format!("actor type {actor_type} is not registered on this node"),
            )
        })
    }
}

/// The answer of a message asked with [`Actors::ask_with`], on its way.
pub struct Ask {
    timeout_ms: u64,
    answer: futures::future::BoxFuture<'static, Result<Value, PfError>>,
}

impl Ask {
    /// How long the message may take, in ms (its timeout, or the default):
    /// the answer comes within it, a PF408 at the latest.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }
}

impl std::future::Future for Ask {
    type Output = Result<Value, PfError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.answer.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests;
