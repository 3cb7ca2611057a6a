//! A durable store in one file, on redb: an embedded, pure-Rust,
//! crash-safe key-value database (copy-on-write B-trees, every commit
//! fsynced). No C library to build for any binding, no server to run.
//!
//! One thread writes: it takes every save waiting when it wakes and commits
//! them in one transaction (one fsync for many actors' turns), then answers
//! each. Reads use their own read transactions, run inline, and never wait for
//! the writer.

use std::path::Path;
use std::sync::{mpsc, Arc};

use futures::future::{self, BoxFuture};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{store_error, ActorStore, Record};
use crate::actor::ActorRef;
use crate::error::{ErrorCode, PfError};

/// Records by (type, id).
const ACTORS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("actors");

/// Most writes committed in one transaction.
const MOST_PER_COMMIT: usize = 512;

enum Write {
    Save(ActorRef, Vec<u8>),
    Remove(ActorRef),
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<bool, String>>,
}

/// Actor records in a redb file: every saved turn is on disk before
/// [`ActorStore::save`] completes, so it survives `kill -9`. The file is
/// closed (its lock released) by the time the last clone is dropped.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// The writer thread and its queue. Dropped with the last clone of the
/// store: the queue closes, the thread commits what it still holds and
/// ends, and the drop waits for it, so that the file is closed by then
/// (the thread holds the database too) and may be opened again at once.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // Never on the writer itself (nothing there holds a store).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileStore")
    }
}

impl FileStore {
    /// Opens the store at `path`, creating the file if needed. Fails with
    /// PF400 naming the path if it cannot be opened (another process holds
    /// it, or it is not a store).
    pub fn open(path: impl AsRef<Path>) -> Result<FileStore, PfError> {
        let path = path.as_ref();
        let cannot = |e: &dyn std::fmt::Display| {
            PfError::new(
                ErrorCode::BadRequest,
                format!("cannot open the actor store {}: {e}", path.display()),
            )
        };
        let db = Database::create(path).map_err(|e| cannot(&e))?;
        // The table exists from the start, so that reads never meet its absence.
        let setup = db.begin_write().map_err(|e| cannot(&e))?;
        setup.open_table(ACTORS).map_err(|e| cannot(&e))?;
        setup.commit().map_err(|e| cannot(&e))?;
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel();
        let for_writer = db.clone();
        let thread = std::thread::Builder::new()
            .name("packetflow-actor-store".into())
            .spawn(move || write_loop(&for_writer, &jobs))
            .map_err(|e| cannot(&e))?;
        let writer = Arc::new(Writer { jobs: Some(writer), thread: Some(thread) });
        Ok(FileStore { db, writer })
    }

    fn submit(
        &self,
        actor: &ActorRef,
        write: Write,
        doing: &'static str,
    ) -> BoxFuture<'static, Result<bool, PfError>> {
        let (done, answer) = oneshot::channel();
        let sent = match &self.writer.jobs {
            Some(jobs) => jobs.send(Job { write, done }).is_ok(),
            None => false,
        };
        let actor = actor.clone();
        Box::pin(async move {
            if !sent {
                return Err(store_error(&actor, doing, "its writer has stopped"));
            }
            match answer.await {
                Ok(Ok(existed)) => Ok(existed),
                Ok(Err(e)) => Err(store_error(&actor, doing, e)),
                Err(_) => Err(store_error(&actor, doing, "its writer has stopped")),
            }
        })
    }

    /// Runs a read transaction here and now: redb reads are short (pages
    /// come from its cache or the OS's), so they need no thread hop.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, String>,
        failed: impl FnOnce(String) -> PfError,
    ) -> BoxFuture<'static, Result<T, PfError>> {
        Box::pin(future::ready(read(&self.db).map_err(failed)))
    }
}

impl ActorStore for FileStore {
    fn durable(&self) -> bool {
        true
    }

    fn load(&self, actor: &ActorRef) -> BoxFuture<'static, Result<Option<Record>, PfError>> {
        let (key, failed) = (actor.clone(), actor.clone());
        let read = self.read(
            move |db| {
                let tx = db.begin_read().map_err(|e| e.to_string())?;
                let table = tx.open_table(ACTORS).map_err(|e| e.to_string())?;
                let found = table.get((key.actor_type(), key.id())).map_err(|e| e.to_string())?;
                Ok(found.map(|bytes| bytes.value().to_vec()))
            },
            move |e| store_error(&failed, "read", e),
        );
        let actor = actor.clone();
        Box::pin(async move { read.await?.map(|bytes| Record::decode(&actor, &bytes)).transpose() })
    }

    fn save(&self, actor: &ActorRef, record: &Record) -> BoxFuture<'static, Result<(), PfError>> {
        let saved = self.submit(actor, Write::Save(actor.clone(), record.encode()), "write");
        Box::pin(async move { saved.await.map(drop) })
    }

    fn remove(&self, actor: &ActorRef) -> BoxFuture<'static, Result<bool, PfError>> {
        self.submit(actor, Write::Remove(actor.clone()), "delete")
    }

    fn ids(&self, actor_type: &str) -> BoxFuture<'static, Result<Vec<String>, PfError>> {
        let wanted = actor_type.to_owned();
        let named = actor_type.to_owned();
        self.read(
            move |db| {
                let tx = db.begin_read().map_err(|e| e.to_string())?;
                let table = tx.open_table(ACTORS).map_err(|e| e.to_string())?;
                let mut ids = Vec::new();
                for entry in table.range((wanted.as_str(), "")..).map_err(|e| e.to_string())? {
                    let (key, _) = entry.map_err(|e| e.to_string())?;
                    let (actor_type, id) = key.value();
                    if actor_type != wanted {
                        break;
                    }
                    ids.push(id.to_owned());
                }
                Ok(ids)
            },
            move |e| {
                PfError::new(ErrorCode::Unavailable, format!("the actor store could not list {named}: {e}"))
            },
        )
    }
}

/// Commits waiting writes in batches until every [`FileStore`] is dropped.
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(db, &batch) {
            Ok(existed) => {
                for (job, existed) in batch.into_iter().zip(existed) {
                    let _ = job.done.send(Ok(existed));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

fn commit(db: &Database, batch: &[Job]) -> Result<Vec<bool>, String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    let mut existed = Vec::with_capacity(batch.len());
    {
        let mut table = tx.open_table(ACTORS).map_err(|e| e.to_string())?;
        for job in batch {
            let had = match &job.write {
                Write::Save(actor, bytes) => table
                    .insert((actor.actor_type(), actor.id()), bytes.as_slice())
                    .map_err(|e| e.to_string())?,
                Write::Remove(actor) => {
                    table.remove((actor.actor_type(), actor.id())).map_err(|e| e.to_string())?
                }
            };
            existed.push(had.is_some());
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(existed)
}
