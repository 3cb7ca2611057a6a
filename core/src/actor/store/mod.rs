//! Where actor state lives between turns: behind [`ActorStore`], so that
//! memory (the default), a file (redb) or a shared bucket can hold it.

mod file;
mod memory;

pub use file::FileStore;
pub use memory::MemoryStore;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ActorRef;
use crate::error::{ErrorCode, PfError};

/// What a store keeps of one actor: its state and the turns it remembers
/// (the effectively-once window), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The state after the last committed turn.
    pub state: Value,
    /// The packet ids of the last successful turns with their answers.
    #[serde(default)]
    pub recent: Vec<Remembered>,
}

/// A committed turn's packet id and answer, kept so that a repeat of the
/// same packet is answered without running again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The packet id of the turn.
    pub id: String,
    /// Its answer's data.
    pub answer: Value,
}

impl Record {
    /// The stored form (MessagePack with field names, so that records
    /// written by one version stay readable by the next).
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a record of JSON values always encodes")
    }

    /// Reads a stored record; PF503 naming the actor when it is damaged.
    pub fn decode(actor: &ActorRef, bytes: &[u8]) -> Result<Record, PfError> {
        rmp_serde::from_slice(bytes).map_err(|e| store_error(actor, "read", e))
    }
}

/// Where an actor coming into memory is to run, as the claim of a shared
/// store decides ([`ActorStore::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// On this node: the claim is this node's.
    Here,
    /// On the node named, which holds the claim and is alive: the actor's
    /// messages are sent on there.
    Elsewhere(String),
}

/// A place for actor records. Methods return boxed futures so that a store
/// may do I/O without blocking the reactor's threads.
pub trait ActorStore: Send + Sync + 'static {
    /// `true` when a record written here survives the process: each turn is
    /// then saved before its answer leaves. A store that is not durable is
    /// written only when an actor is passivated.
    fn durable(&self) -> bool;

    /// The record of `actor`, if it has one. The actor is coming into
    /// memory: a store that is not durable may forget the record then.
    fn load(&self, actor: &ActorRef) -> BoxFuture<'static, Result<Option<Record>, PfError>>;

    /// Writes `record` for `actor` (replacing any).
    fn save(&self, actor: &ActorRef, record: &Record) -> BoxFuture<'static, Result<(), PfError>>;

    /// Deletes the record of `actor`; `true` if there was one.
    fn remove(&self, actor: &ActorRef) -> BoxFuture<'static, Result<bool, PfError>>;

    /// The ids of every stored actor of `actor_type`, sorted.
    fn ids(&self, actor_type: &str) -> BoxFuture<'static, Result<Vec<String>, PfError>>;

    /// `true` for a store that other nodes write too (a NATS key-value
    /// bucket): an actor coming into memory is claimed first
    /// ([`claim`](Self::claim)), its claim is given up when it leaves
    /// memory ([`release`](Self::release)), and a failed write takes it
    /// out of memory, so that its next message reads it again (another
    /// activation may have written it). The default: `false`.
    fn shared(&self) -> bool {
        false
    }

    /// Claims the activation of `actor` for this node, before its record is
    /// loaded: [`Claimed::Elsewhere`] when a live node holds it. Asked
    /// only of a [`shared`](Self::shared) store. The default: here.
    fn claim(&self, _actor: &ActorRef) -> BoxFuture<'static, Result<Claimed, PfError>> {
        Box::pin(futures::future::ready(Ok(Claimed::Here)))
    }

    /// Gives up this node's claim of `actor`, which left memory here.
    /// The default: nothing to give up.
    fn release(&self, _actor: &ActorRef) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::ready(()))
    }

    /// The store as `Any`, for a node that binds a store of its own kind
    /// (a NATS key-value store to the node's connection). The default:
    /// `None`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A store failure as the sender of a message sees it: PF503 (the turn was
/// not applied; retrying is safe).
pub(crate) fn store_error(actor: &ActorRef, doing: &str, e: impl std::fmt::Display) -> PfError {
    PfError::new(ErrorCode::Unavailable, format!("the actor store could not {doing} {actor}: {e}"))
}
