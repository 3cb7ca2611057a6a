//! Actor state in a JetStream key-value bucket (docs/protocol.md, "Actor
//! state in a key-value bucket"): [`NatsKvStore`], the store every member
//! of a cluster shares, so that an actor whose node died comes back on
//! another with its state.
//!
//! Two buckets under the namespace: `<ns>_actors` holds each actor's
//! record, `<ns>_actor_owners` the node that holds its activation. An
//! actor coming into memory is claimed first: a compare-and-set on its
//! owner entry (created when absent, taken over from a node that is no
//! live member, left alone when a live member holds it: the message goes
//! there). Each turn's record is then written expecting the revision this
//! node last read or wrote: a write that finds another revision means
//! another activation wrote meanwhile, and fails (PF503, nothing applied)
//! instead of overwriting it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::time::Duration;

use super::membership::{bucket_name, open_bucket, Cluster};
use crate::actor::store::store_error;
use crate::actor::{ActorRef, ActorStore, Claimed, Record};
use crate::error::{ErrorCode, PfError};

/// Bound on each request to the buckets (a server that does not answer
/// fails the turn, PF503, rather than holding the actor).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of a claim whose owner entry keeps changing under it.
const CLAIM_TRIES: usize = 4;

/// `text` as one token of a bucket key: bytes outside `[A-Za-z0-9_-]`
/// written `=` and two upper-case hex digits (keys hold `[-/_=.A-Za-z0-9]`
/// and `.` separates tokens). Reversed by [`key_text`].
pub(crate) fn key_token(text: &str) -> String {
    super::subject::escape_with(text, b'=')
}

/// The text a token made by [`key_token`] stands for; `None` for a token
/// no escape makes.
pub(crate) fn key_text(token: &str) -> Option<String> {
    super::subject::unescape_with(token, b'=')
}

/// The key of `actor` in both buckets: `<type>.<id>`, each a token.
fn actor_key(actor: &ActorRef) -> String {
    format!("{}.{}", key_token(actor.actor_type()), key_token(actor.id()))
}

/// Actor records in a NATS key-value bucket shared by the members of a
/// cluster. Make one with [`new`](Self::new), set it as the reactor's
/// store ([`Actors::set_store`](crate::actor::Actors::set_store)) before
/// registering actor types, and join NATS with `NatsOptions::actor_store`:
/// the node binds it to its connection. Until then every operation
/// answers PF503. (Joining with `actor_store` on a reactor with no store
/// and no actor type sets one by itself.) Cheap to clone: clones share
/// the binding.
#[derive(Clone, Default)]
pub struct NatsKvStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    bound: OnceLock<Bound>,
    /// Per actor (type, id), the revision of its record this node last
    /// read or wrote (0: none there): the revision its next write expects.
    revisions: Mutex<Revisions>,
}

/// Revisions by actor (type, id).
type Revisions = HashMap<(Arc<str>, Arc<str>), u64>;

/// The buckets and the membership a store is bound to.
struct Bound {
    records: kv::Store,
    owners: kv::Store,
    node_id: String,
    cluster: Weak<Cluster>,
}

impl std::fmt::Debug for NatsKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bucket = self.inner.bound.get().map(|b| b.records.name.clone());
        f.debug_struct("NatsKvStore").field("bucket", &bucket).finish()
    }
}

impl NatsKvStore {
    /// A store not bound yet (see the type's docs).
    pub fn new() -> NatsKvStore {
        NatsKvStore::default()
    }

    /// Whether a node bound it to its NATS connection.
    pub fn is_bound(&self) -> bool {
        self.inner.bound.get().is_some()
    }

    /// Binds the store to a node's connection and membership: opens (or
    /// makes) the buckets of `namespace`. PF400 when it is bound already.
    pub(crate) async fn bind(
        &self,
        js: &jetstream::Context,
        namespace: &str,
        node_id: &str,
        cluster: &Arc<Cluster>,
    ) -> Result<(), PfError> {
        if self.is_bound() {
            return Err(PfError::new(
                ErrorCode::BadRequest,
                "actor_store: this NatsKvStore is bound to a node already",
            ));
        }
        let config = |what: &str, description: &str| kv::Config {
            bucket: bucket_name(namespace, what),
            description: description.into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let records = open_bucket(js, config("actors", "PacketFlow actor records")).await?;
        let owners = open_bucket(js, config("actor_owners", "PacketFlow actor activations")).await?;
        let bound = Bound { records, owners, node_id: node_id.to_owned(), cluster: Arc::downgrade(cluster) };
        self.inner.bound.set(bound).map_err(|_| {
            PfError::new(ErrorCode::BadRequest, "actor_store: this NatsKvStore is bound to a node already")
        })
    }
}

impl Inner {
    /// The buckets, or PF503 naming what could not be done to `actor`.
    fn bound(&self, actor: &ActorRef, doing: &str) -> Result<&Bound, PfError> {
        self.bound
            .get()
            .ok_or_else(|| store_error(actor, doing, "the store is not bound to a node on NATS yet"))
    }

    fn forget(&self, actor: &ActorRef) {
        self.revisions.lock().remove(&(actor.type_arc().clone(), actor.id_arc().clone()));
    }

    fn note(&self, actor: &ActorRef, revision: u64) {
        self.revisions.lock().insert((actor.type_arc().clone(), actor.id_arc().clone()), revision);
    }

    fn known(&self, actor: &ActorRef) -> Option<u64> {
        self.revisions.lock().get(&(actor.type_arc().clone(), actor.id_arc().clone())).copied()
    }
}

/// `request`, answered within [`REQUEST_TIMEOUT`]: PF503 naming what was
/// being done to `actor` otherwise.
async fn bounded<T, E: std::fmt::Display>(
    actor: &ActorRef,
    doing: &str,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, PfError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(store_error(actor, doing, e)),
        Err(_) => Err(store_error(actor, doing, "the NATS server did not answer in time")),
    }
}

/// The revision of an entry (0 for none), and its value when it holds one
/// (not a delete or purge marker).
fn read_entry(entry: Option<kv::Entry>) -> (u64, Option<bytes::Bytes>) {
    match entry {
        None => (0, None),
        Some(e) if e.operation == kv::Operation::Put => (e.revision, Some(e.value)),
        Some(e) => (e.revision, None),
    }
}

impl ActorStore for NatsKvStore {
    fn durable(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn load(&self, actor: &ActorRef) -> BoxFuture<'static, Result<Option<Record>, PfError>> {
        let (inner, actor) = (self.inner.clone(), actor.clone());
        Box::pin(async move {
            let bound = inner.bound(&actor, "read")?;
            let entry = bounded(&actor, "read", bound.records.entry(actor_key(&actor))).await?;
            let (revision, value) = read_entry(entry);
            let record = value.map(|bytes| Record::decode(&actor, &bytes)).transpose()?;
            inner.note(&actor, revision);
            Ok(record)
        })
    }

    fn save(&self, actor: &ActorRef, record: &Record) -> BoxFuture<'static, Result<(), PfError>> {
        let (inner, actor, bytes) = (self.inner.clone(), actor.clone(), record.encode());
        Box::pin(async move {
            let bound = inner.bound(&actor, "write")?;
            let key = actor_key(&actor);
            let expected = match inner.known(&actor) {
                Some(revision) => revision,
                // Never read here (a record handed over): it replaces
                // whatever is there.
                None => read_entry(bounded(&actor, "write", bound.records.entry(key.clone())).await?).0,
            };
            let written =
                tokio::time::timeout(REQUEST_TIMEOUT, bound.records.update(&key, bytes.into(), expected));
            match written.await {
                Ok(Ok(revision)) => {
                    inner.note(&actor, revision);
                    Ok(())
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    inner.forget(&actor);
                    Err(PfError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the actor store could not write {actor}: another activation wrote it since \
                             revision {expected}; the turn was not applied, and the actor is read again"
                        ),
                    ))
                }
                // Perhaps written, perhaps not: read again next time.
                Ok(Err(e)) => {
                    inner.forget(&actor);
                    Err(store_error(&actor, "write", e))
                }
                Err(_) => {
                    inner.forget(&actor);
                    Err(store_error(&actor, "write", "the NATS server did not answer in time"))
                }
            }
        })
    }

    fn remove(&self, actor: &ActorRef) -> BoxFuture<'static, Result<bool, PfError>> {
        let (inner, actor) = (self.inner.clone(), actor.clone());
        Box::pin(async move {
            let bound = inner.bound(&actor, "remove")?;
            let key = actor_key(&actor);
            let (revision, value) =
                read_entry(bounded(&actor, "remove", bound.records.entry(key.clone())).await?);
            if value.is_some() {
                let expected = inner.known(&actor).unwrap_or(revision);
                bounded(&actor, "remove", bound.records.delete_expect_revision(&key, Some(expected))).await?;
            }
            inner.forget(&actor);
            release(bound, &actor).await;
            Ok(value.is_some())
        })
    }

    fn ids(&self, actor_type: &str) -> BoxFuture<'static, Result<Vec<String>, PfError>> {
        let (inner, actor_type) = (self.inner.clone(), actor_type.to_owned());
        Box::pin(async move {
            // A caller that only probes (`now_or_never`) stops here, before
            // a consumer is made on the server.
            tokio::task::yield_now().await;
            let probe = ActorRef::from_parts(Arc::from(actor_type.as_str()), Arc::from("*"));
            let bound = inner.bound(&probe, "list")?;
            let prefix = format!("{}.", key_token(&actor_type));
            let keys = bounded(&probe, "list", bound.records.keys()).await?;
            let listed = tokio::time::timeout(REQUEST_TIMEOUT, keys.collect::<Vec<_>>())
                .await
                .map_err(|_| store_error(&probe, "list", "the NATS server did not answer in time"))?;
            let mut ids = Vec::new();
            for key in listed {
                let key = key.map_err(|e| store_error(&probe, "list", e))?;
                if let Some(id) = key.strip_prefix(&prefix).and_then(key_text) {
                    ids.push(id);
                }
            }
            ids.sort();
            Ok(ids)
        })
    }

    fn claim(&self, actor: &ActorRef) -> BoxFuture<'static, Result<Claimed, PfError>> {
        let (inner, actor) = (self.inner.clone(), actor.clone());
        Box::pin(async move {
            let bound = inner.bound(&actor, "claim")?;
            let key = actor_key(&actor);
            for _ in 0..CLAIM_TRIES {
                let entry = bounded(&actor, "claim", bound.owners.entry(key.clone())).await?;
                let (revision, owner) = read_entry(entry);
                if let Some(owner) = owner {
                    let owner = String::from_utf8_lossy(&owner).into_owned();
                    if owner == bound.node_id {
                        return Ok(Claimed::Here);
                    }
                    let alive = bound.cluster.upgrade().is_some_and(|c| c.hosts(actor.actor_type(), &owner));
                    if alive {
                        return Ok(Claimed::Elsewhere(owner));
                    }
                    // Its node is gone: the claim is taken over below.
                }
                let mine = bytes::Bytes::from(bound.node_id.clone().into_bytes());
                match tokio::time::timeout(REQUEST_TIMEOUT, bound.owners.update(&key, mine, revision)).await {
                    Ok(Ok(_)) => return Ok(Claimed::Here),
                    // Another node claimed it meanwhile: look again.
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Ok(Err(e)) => return Err(store_error(&actor, "claim", e)),
                    Err(_) => {
                        return Err(store_error(&actor, "claim", "the NATS server did not answer in time"))
                    }
                }
            }
            Err(store_error(&actor, "claim", "its owner entry kept changing"))
        })
    }

    fn release(&self, actor: &ActorRef) -> BoxFuture<'static, ()> {
        let (inner, actor) = (self.inner.clone(), actor.clone());
        Box::pin(async move {
            inner.forget(&actor);
            if let Ok(bound) = inner.bound(&actor, "release") {
                release(bound, &actor).await;
            }
        })
    }
}

/// Deletes `actor`'s owner entry if it names this node (expecting the
/// revision read, so that a claim made meanwhile stays). A failure leaves
/// the claim, which another node takes over once this one is gone.
async fn release(bound: &Bound, actor: &ActorRef) {
    let key = actor_key(actor);
    let Ok((revision, Some(owner))) =
        bounded(actor, "release", bound.owners.entry(key.clone())).await.map(read_entry)
    else {
        return;
    };
    if owner[..] == *bound.node_id.as_bytes() {
        let _ = bounded(actor, "release", bound.owners.delete_expect_revision(&key, Some(revision))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn key_tokens_are_reversible_and_hold_key_characters_only() {
        for text in ["counter", "a.b", "a b", "x/y", "=", "é", "pf.moved:counter", "%2E"] {
            let token = key_token(text);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)), "{token}");
            assert_eq!(key_text(&token).as_deref(), Some(text));
        }
        assert_eq!(key_token("pf.moved:c"), "pf=2Emoved=3Ac");
        for bad in ["a.b", "=2e", "=41", "=4", "a b"] {
            assert_eq!(key_text(bad), None, "{bad}");
        }
        let actor = ActorRef::new("counter", "c.1").unwrap();
        assert_eq!(actor_key(&actor), "counter.c=2E1");
    }

    #[test]
    fn an_unbound_store_answers_pf503_naming_the_actor() {
        let store = NatsKvStore::new();
        assert!(!store.is_bound() && store.durable() && store.shared());
        let actor = ActorRef::new("counter", "c1").unwrap();
        let e = store.load(&actor).now_or_never().unwrap().unwrap_err();
        assert!(e.is(ErrorCode::Unavailable));
        assert!(e.message.contains("counter/c1") && e.message.contains("not bound"), "{}", e.message);
        let e = store.claim(&actor).now_or_never().unwrap().unwrap_err();
        assert!(e.is(ErrorCode::Unavailable));
        // A probe of the ids does nothing at its first poll.
        assert!(store.ids("counter").now_or_never().is_none());
    }
}
