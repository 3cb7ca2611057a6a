//! A reactor's actor store file (the `actor_store` option), closed when the
//! reactor stops.
//!
//! A file store locks its file while it is open, and it stays open while
//! anything holds it: left to the core reactor, that is until the last
//! reference to the reactor goes, a little after its GenServer stops (its
//! native resources go with the process's heap, and its workers'
//! references to their last calls with theirs: tens of milliseconds,
//! measured). A reactor started at once on the same file, as a supervisor
//! restarts one, would find the file locked. So the reactor's store is this
//! wrapper, which the stop closes: the file store is dropped there, which
//! waits for its writer to commit what it holds and releases the file.
//! What the stopped reactor still asks of the store afterwards (a turn that
//! ends after the stop, whose sender was answered PF503 already) fails with
//! PF503.

use std::future::{ready, Future};
use std::pin::Pin;

use packetflow::actor::{ActorStore, FileStore, Record};
use packetflow::{ActorRef, ErrorCode, PfError};
use parking_lot::RwLock;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A file store that its reactor closes when it stops.
pub struct Closable {
    file: RwLock<Option<FileStore>>,
}

impl Closable {
    /// The store in the file at `path` (PF400 naming it if it cannot be
    /// opened).
    pub fn open(path: &str) -> Result<Closable, PfError> {
        Ok(Closable { file: RwLock::new(Some(FileStore::open(path)?)) })
    }

    /// Closes the file, once its writer committed what it holds.
    pub fn close(&self) {
        let file = self.file.write().take();
        drop(file);
    }

    fn with<T: Send + 'static>(
        &self,
        run: impl FnOnce(&FileStore) -> BoxFuture<Result<T, PfError>>,
    ) -> BoxFuture<Result<T, PfError>> {
        match &*self.file.read() {
            Some(file) => run(file),
            None => Box::pin(ready(Err(PfError::new(
                ErrorCode::Unavailable,
                "the actor store is closed: its reactor stopped",
            )))),
        }
    }
}

impl ActorStore for Closable {
    fn durable(&self) -> bool {
        true
    }

    fn load(&self, actor: &ActorRef) -> BoxFuture<Result<Option<Record>, PfError>> {
        self.with(|file| file.load(actor))
    }

    fn save(&self, actor: &ActorRef, record: &Record) -> BoxFuture<Result<(), PfError>> {
        self.with(|file| file.save(actor, record))
    }

    fn remove(&self, actor: &ActorRef) -> BoxFuture<Result<bool, PfError>> {
        self.with(|file| file.remove(actor))
    }

    fn ids(&self, actor_type: &str) -> BoxFuture<Result<Vec<String>, PfError>> {
        self.with(|file| file.ids(actor_type))
    }
}
