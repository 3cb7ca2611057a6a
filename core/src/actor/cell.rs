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
use super::turn_id::TurnId;
use crate::error::PfError;
use crate::packet::{PacketId, Priority};
use crate::reactor::{InflightGuard, Reactor};

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
    pub(crate) id: TurnId,
    pub(crate) op: Op,
    pub(crate) priority: Priority,
    pub(crate) data: Value,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) deadline: Instant,
    /// Where the answer goes: `None` for a tell.
    pub(crate) reply: Option<oneshot::Sender<Answer>>,
    /// Whether the turn is remembered (effectively once): a packet's. A
    /// message sent through the API with an id made for it is not: nobody
    /// can repeat it.
    pub(crate) remember: bool,
    /// The id the turn is remembered by when it is not the packet's: the
    /// one the message was first sent with, for a message a node sent on
    /// to an actor that moved (`pf.actor_packet_id`).
    pub(crate) remembered_as: Option<PacketId>,
}

impl Message {
    /// The packet id the turn is remembered by, if any (made ids never are).
    pub(crate) fn memory_id(&self) -> Option<&PacketId> {
        match (&self.remembered_as, &self.id) {
            (Some(first), _) => Some(first),
            (None, TurnId::Packet(id)) => Some(id),
            (None, TurnId::Made(_)) => None,
        }
    }
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
    pub(crate) id: TurnId,
    pub(crate) joiners: Vec<oneshot::Sender<Answer>>,
    /// The in-flight mark of a made id that its turn read.
    pub(crate) mark: Option<InflightGuard>,
}

/// What a running turn leaves when it ends: the repeats that waited for
/// its answer, and the in-flight mark of its made id if the turn read it.
#[derive(Default)]
pub(crate) struct Ended {
    joiners: Vec<oneshot::Sender<Answer>>,
    mark: Option<InflightGuard>,
}

impl Ended {
    /// Sends `outcome` to `reply` and to every repeat, and ends the mark
    /// with it. Call without holding the cell's lock.
    pub(crate) fn answer(self, reply: Option<oneshot::Sender<Answer>>, outcome: &Result<Value, PfError>) {
        answer_all(reply, self.joiners, outcome);
        if let (Some(mut mark), true) = (self.mark, outcome.is_ok()) {
            mark.succeed();
        }
    }

    /// Whether nothing waited on the turn (a claim given back unused).
    pub(crate) fn is_empty(&self) -> bool {
        self.joiners.is_empty() && self.mark.is_none()
    }
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
    /// The state a commit replaced, kept for the next turn's copy of the
    /// state to be made in (its allocations reused: see [`copy_value`]).
    spare_state: Option<Value>,
}

pub(crate) struct CellState {
    /// The state after the last committed turn; `None` for `null`, so that
    /// an actor whose state is `null` costs no allocation for it (a JSON
    /// value is 80 bytes inline, a box 8).
    state: Option<Box<Value>>,
    /// The number of the running turn when it is an API message's whose id
    /// nothing read yet (0 otherwise): such a turn needs nothing more, so
    /// it costs the mailbox no allocation. Others are in `busy.running`.
    made: u64,
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
                made: 0,
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

impl Cell {
    /// Turn `number` read its made id `id`: if it still runs, its id is
    /// marked in flight until it ends (it may be seen elsewhere from now on).
    pub(crate) fn made_id_read(&self, number: u64, id: &PacketId, reactor: &Reactor) {
        let mut st = self.inner.lock();
        if st.made != number {
            return; // ended, or read (and marked) already
        }
        st.made = 0;
        let mark = reactor.mark_in_flight(id);
        st.busy().running = Some(Running { id: TurnId::Made(number), joiners: Vec::new(), mark });
    }
}

impl CellState {
    /// A copy of the committed state.
    pub(crate) fn state(&self) -> Value {
        self.state.as_deref().cloned().unwrap_or(Value::Null)
    }

    /// A copy of the committed state for a turn to change, made in the
    /// state the last commit replaced when there is one: a turn of an
    /// active actor then allocates nothing for its copy of a flat state.
    pub(crate) fn state_for_turn(&mut self) -> Value {
        let spare = self.busy.as_mut().and_then(|b| b.spare_state.take());
        match (spare, self.state.as_deref()) {
            (Some(mut spare), Some(committed)) => {
                copy_value(&mut spare, committed);
                spare
            }
            (_, committed) => committed.cloned().unwrap_or(Value::Null),
        }
    }

    /// Commits `state`.
    pub(crate) fn set_state(&mut self, state: Value) {
        match &mut self.state {
            _ if state.is_null() => self.state = None,
            // A turn's state goes into the box the last one used; the state
            // it replaces is kept for the next turn's copy.
            Some(slot) => {
                let replaced = std::mem::replace(&mut **slot, state);
                if let Some(busy) = self.busy.as_mut() {
                    busy.spare_state = Some(replaced);
                }
            }
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

    /// Makes `record` the actor's whole record: its state and the turns it
    /// remembers (another node handed the actor over).
    pub(crate) fn replace(&mut self, record: Record) {
        if let Some(busy) = self.busy.as_mut() {
            busy.recent.clear();
        }
        self.restore(record);
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

    /// The answer of a committed turn of `message`'s, if it is remembered
    /// (made ids never are).
    pub(crate) fn remembered(&self, message: &Message) -> Option<Value> {
        self.remembered_packet(message.memory_id()?)
    }

    /// The answer of a committed turn of packet `id`, if it is remembered.
    pub(crate) fn remembered_packet(&self, id: &PacketId) -> Option<Value> {
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
        let mut forgotten = None;
        while recent.len() >= window {
            forgotten = recent.pop_front().map(|(_, _, answer)| answer);
        }
        // The answer is copied into the one it pushes out (its allocations reused).
        let kept = match forgotten {
            Some(mut kept) => {
                copy_value(&mut kept, answer);
                kept
            }
            None => answer.clone(),
        };
        recent.push_back((id_hash(&id), id, kept));
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

    /// Queues `message` and returns where its answer will come: a new
    /// channel, unless the message brought its own reply (a tell's, whose
    /// sender waits on it), in which case the receiver returned is never
    /// answered.
    pub(crate) fn enqueue_waiting(&mut self, mut message: Message) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        let reply = message.reply.take().unwrap_or(reply);
        self.enqueue(Message { reply: Some(reply), ..message });
        answer
    }

    /// The next message to run, with the repeats that wait for it; marks
    /// it running.
    pub(crate) fn next(&mut self) -> Option<Message> {
        let busy = self.busy.as_mut()?;
        let queued = busy.queue.pop()?;
        match (&queued.message.id, queued.joiners.is_empty()) {
            (TurnId::Made(number), true) => self.made = *number,
            (id, _) => busy.running = Some(Running { id: id.clone(), joiners: queued.joiners, mark: None }),
        }
        Some(queued.message)
    }

    /// Ends the running turn: what waited on it.
    pub(crate) fn finish_running(&mut self) -> Ended {
        if self.made != 0 {
            self.made = 0;
            return Ended::default();
        }
        match self.busy.as_mut().and_then(|b| b.running.take()) {
            Some(running) => Ended { joiners: running.joiners, mark: running.mark },
            None => Ended::default(),
        }
    }

    /// Marks `id` as the running turn (a holder running its own message).
    pub(crate) fn start_running(&mut self, id: &TurnId) {
        match id {
            TurnId::Made(number) => self.made = *number,
            id => self.busy().running = Some(Running { id: id.clone(), joiners: Vec::new(), mark: None }),
        }
    }

    /// Whether a turn runs and `test` holds for its id (the reentrancy check).
    pub(crate) fn running_is(&self, test: impl Fn(&TurnId) -> bool) -> bool {
        if self.made != 0 {
            return test(&TurnId::Made(self.made));
        }
        self.busy.as_ref().and_then(|b| b.running.as_ref()).is_some_and(|r| test(&r.id))
    }

    /// Adds a repeat of packet `id` to the turn running or waiting with that
    /// id; gives the sender back when there is none.
    pub(crate) fn join(
        &mut self,
        id: &PacketId,
        joiner: oneshot::Sender<Answer>,
    ) -> Result<(), oneshot::Sender<Answer>> {
        if self.made != 0 && TurnId::Made(self.made).is(id) {
            // Only a turn whose id was read is seen elsewhere; kept for all that.
            let running = Running { id: TurnId::Made(self.made), joiners: vec![joiner], mark: None };
            self.made = 0;
            self.busy().running = Some(running);
            return Ok(());
        }
        let Some(busy) = self.busy.as_mut() else { return Err(joiner) };
        if let Some(running) = busy.running.as_mut().filter(|r| r.id.is(id)) {
            running.joiners.push(joiner);
            return Ok(());
        }
        // The queue is a heap: rebuild it around the one entry that changes
        // (rare: a repeat arriving while its first copy still waits).
        let mut entries = std::mem::take(&mut busy.queue).into_vec();
        let found = entries.iter_mut().find(|q| q.message.id.is(id));
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

/// Makes `dst` a copy of `src`, reusing what `dst` holds where the two
/// have the same shape (an object's table, entries and keys, an array's
/// buffer, a string's): copying `{"value": 41}` over `{"value": 40}`
/// allocates nothing, where a clone allocates three times.
pub(crate) fn copy_value(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(dst), Value::Object(src)) => dst.clone_from(src),
        (Value::Array(dst), Value::Array(src)) => dst.clone_from(src),
        (Value::String(dst), Value::String(src)) => dst.clone_from(src),
        (dst, src) => *dst = src.clone(),
    }
}

/// A packet id's hash, compared before the id itself in the window.
fn id_hash(id: &PacketId) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7061_636b_6574).hash_one(id.as_str())
}

/// Sends `answer` to a waiting sender and to every repeat of its packet.
fn answer_all(
    reply: Option<oneshot::Sender<Answer>>,
    joiners: Vec<oneshot::Sender<Answer>>,
    outcome: &Result<Value, PfError>,
) {
    for to in reply.into_iter().chain(joiners) {
        let _ = to.send(Answer::Done(outcome.clone()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn copy_value_makes_an_equal_value_whatever_was_there() {
        let shapes = [
            json!(null),
            json!(7),
            json!("text"),
            json!([1, "two", {"three": 3}]),
            json!({"value": 41}),
            json!({"value": 42, "extra": [true, null], "nested": {"a": "b"}}),
            json!({}),
        ];
        for src in &shapes {
            for start in &shapes {
                let mut dst = start.clone();
                copy_value(&mut dst, src);
                assert_eq!(&dst, src, "copying {src} over {start}");
            }
        }
    }

    #[test]
    fn a_turn_copies_the_committed_state_into_the_one_the_last_commit_replaced() {
        let mut st = Cell::loading().inner.into_inner();
        st.set_state(json!({"value": 1}));
        st.busy();
        assert_eq!(st.state_for_turn(), json!({"value": 1}));
        st.set_state(json!({"value": 2}));
        // The replaced state is the spare; the copy is the committed state all the same.
        assert!(st.busy.as_ref().is_some_and(|b| b.spare_state == Some(json!({"value": 1}))));
        let mut turn = st.state_for_turn();
        assert_eq!(turn, json!({"value": 2}));
        turn["value"] = json!(3);
        assert_eq!(st.state(), json!({"value": 2}), "the turn's copy is its own");
        st.set_state(turn);
        assert_eq!(st.state(), json!({"value": 3}));
        assert_eq!(st.state_for_turn(), json!({"value": 3}));
    }

    #[test]
    fn the_window_keeps_the_newest_answers_when_it_reuses_the_oldest() {
        let mut st = Cell::loading().inner.into_inner();
        for n in 0..5 {
            st.remember(PacketId::new(&format!("p{n}")).unwrap(), &json!({"value": n}), 3);
        }
        for n in 0..2 {
            assert_eq!(st.remembered_packet(&PacketId::new(&format!("p{n}")).unwrap()), None);
        }
        for n in 2..5 {
            let id = PacketId::new(&format!("p{n}")).unwrap();
            assert_eq!(st.remembered_packet(&id), Some(json!({"value": n})));
        }
    }
}
