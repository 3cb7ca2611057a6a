//! The embedded default: records of passivated actors kept in this process.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::{self, BoxFuture};
use parking_lot::Mutex;

use super::{ActorStore, Record};
use crate::actor::ActorRef;
use crate::error::PfError;

/// Keeps records in memory, encoded (a passivated actor costs its encoded
/// state, not a tree of values). Not durable: actors live as long as the
/// process.
#[derive(Default, Clone)]
pub struct MemoryStore {
    records: Arc<Mutex<Records>>,
}

/// Encoded records by (type, id), ordered so that one type's ids are a range.
type Records = BTreeMap<(Arc<str>, Arc<str>), Box<[u8]>>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn key(actor: &ActorRef) -> (Arc<str>, Arc<str>) {
        (Arc::from(actor.actor_type()), Arc::from(actor.id()))
    }
}

impl ActorStore for MemoryStore {
    fn durable(&self) -> bool {
        false
    }

    /// Hands the record back and forgets it: the actor is in memory again,
    /// and is written here anew when it is next passivated.
    fn load(&self, actor: &ActorRef) -> BoxFuture<'static, Result<Option<Record>, PfError>> {
        let found = self.records.lock().remove(&Self::key(actor)).map(|bytes| Record::decode(actor, &bytes));
        Box::pin(future::ready(found.transpose()))
    }

    fn save(&self, actor: &ActorRef, record: &Record) -> BoxFuture<'static, Result<(), PfError>> {
        self.records.lock().insert(Self::key(actor), record.encode().into_boxed_slice());
        Box::pin(future::ready(Ok(())))
    }

    fn remove(&self, actor: &ActorRef) -> BoxFuture<'static, Result<bool, PfError>> {
        let removed = self.records.lock().remove(&Self::key(actor)).is_some();
        Box::pin(future::ready(Ok(removed)))
    }

    fn ids(&self, actor_type: &str) -> BoxFuture<'static, Result<Vec<String>, PfError>> {
        let records = self.records.lock();
        let ids = records
            .range((Arc::from(actor_type), Arc::from(""))..)
            .take_while(|((t, _), _)| &**t == actor_type)
            .map(|((_, id), _)| id.to_string())
            .collect();
        Box::pin(future::ready(Ok(ids)))
    }
}
