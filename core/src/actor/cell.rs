//! One actor in memory: its committed state, its mailbox and the turns it
//! remembers. Idle, it is this struct and nothing else: no task, no channel.
//!
//! Whoever finds the actor idle takes its turn (the *holder*) and runs the
//! messages queued meanwhile, one at a time, highest priority first and in
//! arrival order within a priority, answering each through its oneshot.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::address::Op;
use super::store::{Record, Remembered};
use crate::error::PfError;
use crate::packet::{PacketId, Priority};

/// What a waiting sender gets.
pub(crate) enum Answer {
    /// The turn's outcome.
    Done(Result<Value, PfError>),
    /// The actor went away (stopped or passivated) before this message's
    /// turn: look it up again and deliver it there.
    Retry(Box<Message>),
}

/// A message as the mailbox holds it.
pub(crate) struct Message {
    pub(crate) id: PacketId,
    pub(crate) op: Op,
    pub(crate) priority: Priority,
    pub(crate) data: Value,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) deadline: Instant,
    /// Where the answer goes: `None` for a tell.
    pub(crate) reply: Option<oneshot::Sender<Answer>>,
    /// Whether the turn is remembered (effectively once). A message sent
    /// through the API with an id made for it is not: nobody can repeat it.
    pub(crate) remember: bool,
}

struct Queued {
    seq: u64,
    message: Message,
    /// Repeats of this packet that arrived while it waited.
    joiners: Vec<oneshot::Sender<Answer>>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// The greatest is served first: higher priority, then earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.message.priority.cmp(&other.message.priority).then(other.seq.cmp(&self.seq))
    }
}

/// The running turn's packet id and the repeats waiting for its answer.
pub(crate) struct Running {
    pub(crate) id: PacketId,
    pub(crate) joiners: Vec<oneshot::Sender<Answer>>,
}

/// Everything but the state, allocated once the actor is first messaged
/// (an idle actor that never was costs none of it).
#[derive(Default)]
struct Busy {
    queue: BinaryHeap<Queued>,
    next_seq: u64,
    /// (hash of the packet id, packet id, answer), oldest first.
    recent: VecDeque<(u64, PacketId, Value)>,
    running: Option<Running>,
}

pub(crate) struct CellState {
    /// The state after the last committed turn; `None` for `null`, so that
    /// an actor whose state is `null` costs no allocation for it (a JSON
    /// value is 80 bytes inline, a box 8).
    state: Option<Box<Value>>,
    /// A holder is running turns (or loading the actor).
    pub(crate) held: bool,
    /// The actor left memory (stopped or passivated): look it up again.
    pub(crate) gone: bool,
    /// The actor exists (false while a lookup finds nothing to load, until
    /// a create fills it).
    pub(crate) exists: bool,
    /// It exists only by its type's initial state (a virtual actor brought
    /// in by a message, nothing committed yet): a create may still fill it.
    pub(crate) fresh: bool,
    /// Passivation sweeps since the last turn ended (0: active lately).
    pub(crate) idle_sweeps: u8,
    busy: Option<Box<Busy>>,
}

pub(crate) struct Cell {
    pub(crate) inner: Mutex<CellState>,
}

impl Cell {
    /// An actor being loaded: held by the one who made it.
    pub(crate) fn loading() -> Cell {
        Cell {
            inner: Mutex::new(CellState {
                state: None,
                held: true,
                gone: false,
                exists: false,
                fresh: false,
                idle_sweeps: 0,
                busy: None,
            }),
        }
    }
}

impl CellState {
    /// A copy of the committed state.
    pub(crate) fn state(&self) -> Value {
        self.state.as_deref().cloned().unwrap_or(Value::Null)
    }

    /// Commits `state`.
    pub(crate) fn set_state(&mut self, state: Value) {
        match &mut self.state {
            _ if state.is_null() => self.state = None,
            // A turn's state goes into the box the last one used.
            Some(slot) => **slot = state,
            None => self.state = Some(Box::new(state)),
        }
    }

    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Default::default)
    }

    /// Fills a loaded actor from its record.
    pub(crate) fn restore(&mut self, record: Record) {
        self.set_state(record.state);
        if !record.recent.is_empty() {
            let recent = &mut self.busy().recent;
            for r in record.recent {
                if let Ok(id) = PacketId::new(&r.id) {
                    recent.push_back((id_hash(&id), id, r.answer));
                }
            }
        }
    }

    /// The record a store keeps: the state and the remembered turns.
    pub(crate) fn record(&self) -> Record {
        let recent = self.busy.as_ref().map(|b| {
            b.recent
                .iter()
                .map(|(_, id, answer)| Remembered { id: id.to_string(), answer: answer.clone() })
                .collect()
        });
        Record { state: self.state(), recent: recent.unwrap_or_default() }
    }

    /// The answer of a committed turn of packet `id`, if it is remembered.
    pub(crate) fn remembered(&self, id: &PacketId) -> Option<Value> {
        let busy = self.busy.as_ref()?;
        if busy.recent.is_empty() {
            return None;
        }
        let hash = id_hash(id);
        busy.recent
            .iter()
            .rev()
            .find(|(h, seen, _)| *h == hash && seen == id)
            .map(|(_, _, answer)| answer.clone())
    }

    /// Remembers a committed turn, forgetting the oldest past `window`.
    pub(crate) fn remember(&mut self, id: PacketId, answer: &Value, window: usize) {
        if window == 0 {
            return;
        }
        let recent = &mut self.busy().recent;
        while recent.len() >= window {
            recent.pop_front();
        }
        recent.push_back((id_hash(&id), id, answer.clone()));
    }

    /// Forgets a turn that was remembered before it failed to commit.
    pub(crate) fn forget(&mut self, id: &PacketId) {
        if let Some(busy) = self.busy.as_mut() {
            busy.recent.retain(|(_, seen, _)| seen != id);
        }
    }

    /// Queues a message behind the running turn.
    pub(crate) fn enqueue(&mut self, message: Message) {
        let busy = self.busy();
        let seq = busy.next_seq;
        busy.next_seq += 1;
        busy.queue.push(Queued { seq, message, joiners: Vec::new() });
    }

    /// The next message to run, with the repeats that wait for it; marks
    /// it running.
    pub(crate) fn next(&mut self) -> Option<Message> {
        let busy = self.busy.as_mut()?;
        let queued = busy.queue.pop()?;
        busy.running = Some(Running { id: queued.message.id.clone(), joiners: queued.joiners });
        Some(queued.message)
    }

    /// Ends the running turn: the repeats that waited for it.
    pub(crate) fn finish_running(&mut self) -> Vec<oneshot::Sender<Answer>> {
        self.busy.as_mut().and_then(|b| b.running.take()).map(|r| r.joiners).unwrap_or_default()
    }

    /// Marks `id` as the running turn (a holder running its own message).
    pub(crate) fn start_running(&mut self, id: PacketId) {
        self.busy().running = Some(Running { id, joiners: Vec::new() });
    }

    /// The running turn's id, for the reentrancy check.
    pub(crate) fn running_id(&self) -> Option<&PacketId> {
        self.busy.as_ref()?.running.as_ref().map(|r| &r.id)
    }

    /// Adds a repeat of packet `id` to the turn running or waiting with that
    /// id; gives the sender back when there is none.
    pub(crate) fn join(
        &mut self,
        id: &PacketId,
        joiner: oneshot::Sender<Answer>,
    ) -> Result<(), oneshot::Sender<Answer>> {
        let Some(busy) = self.busy.as_mut() else { return Err(joiner) };
        if let Some(running) = busy.running.as_mut().filter(|r| r.id == *id) {
            running.joiners.push(joiner);
            return Ok(());
        }
        // The queue is a heap: rebuild it around the one entry that changes
        // (rare: a repeat arriving while its first copy still waits).
        let mut entries = std::mem::take(&mut busy.queue).into_vec();
        let found = entries.iter_mut().find(|q| q.message.id == *id);
        let outcome = match found {
            Some(queued) => {
                queued.joiners.push(joiner);
                Ok(())
            }
            None => Err(joiner),
        };
        busy.queue = entries.into();
        outcome
    }

    /// Everything still queued (the actor is going away).
    pub(crate) fn drain_queue(&mut self) -> Vec<(Message, Vec<oneshot::Sender<Answer>>)> {
        let Some(busy) = self.busy.as_mut() else { return Vec::new() };
        std::mem::take(&mut busy.queue)
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|q| (q.message, q.joiners))
            .collect()
    }

    /// Whether no message waits.
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.busy.as_ref().is_none_or(|b| b.queue.is_empty())
    }

    /// Drops the mailbox's allocation once it is empty and nothing is
    /// remembered (an actor that has only been created stays small).
    pub(crate) fn shrink(&mut self) {
        if self
            .busy
            .as_ref()
            .is_some_and(|b| b.queue.is_empty() && b.recent.is_empty() && b.running.is_none())
        {
            self.busy = None;
        }
    }
}

/// A packet id's hash, compared before the id itself in the window.
fn id_hash(id: &PacketId) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7061_636b_6574).hash_one(id.as_str())
}

/// Sends `answer` to a waiting sender and to every repeat of its packet.
pub(crate) fn answer_all(
    reply: Option<oneshot::Sender<Answer>>,
    joiners: Vec<oneshot::Sender<Answer>>,
    outcome: &Result<Value, PfError>,
) {
    for to in reply.into_iter().chain(joiners) {
        let _ = to.send(Answer::Done(outcome.clone()));
    }
}
