//! What an actor type runs on each turn: a behaviour, given by a Rust
//! trait, a closure, or (for the bindings) an async turn function.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::ActorContext;
use crate::error::PfError;

/// How a turn ends besides its reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer the sender with this value (`null` for a message that needs
    /// no answer); the actor lives on.
    Value(Value),
    /// Answer with this value, then stop the actor and delete its state.
    Stop(Value),
}

/// A behaviour as a Rust trait: one method for every message of the type.
///
/// `state` is the actor's state: change it in place. If `handle` returns an
/// error or panics, every change is undone (the turn is transactional).
pub trait Behavior: Send + Sync + 'static {
    /// Runs one message. `message_type` is the message's `data.type`,
    /// already checked against [`ActorType::with_message_types`] when set.
    fn handle(
        &self,
        message_type: &str,
        message: &Value,
        state: &mut Value,
        ctx: &ActorContext,
    ) -> Result<Reply, PfError>;
}

impl<F> Behavior for F
where
    F: Fn(&str, &Value, &mut Value, &ActorContext) -> Result<Reply, PfError> + Send + Sync + 'static,
{
    fn handle(
        &self,
        message_type: &str,
        message: &Value,
        state: &mut Value,
        ctx: &ActorContext,
    ) -> Result<Reply, PfError> {
        self(message_type, message, state, ctx)
    }
}

/// What an async turn is given: the message, and a copy of the state it
/// may change and hand back.
pub struct TurnInput {
    /// The message's `data.type`.
    pub message_type: String,
    /// The whole message (the packet's `data`).
    pub message: Value,
    /// The state before the turn.
    pub state: Value,
    /// The packet's context, and the actor's address.
    pub ctx: ActorContext,
}

/// What an async turn hands back: its reply and the state after it.
pub struct TurnOutput {
    /// The answer, and whether the actor stops.
    pub reply: Reply,
    /// The state after the turn (committed only if the turn succeeds).
    pub state: Value,
}

pub(crate) type AsyncTurn =
    dyn Fn(TurnInput) -> BoxFuture<'static, Result<TurnOutput, PfError>> + Send + Sync;

/// Runs a mailbox task of an actor type (see [`ActorType::with_spawner`]).
pub(crate) type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// A behaviour, run inline (sync) or awaited (async).
#[derive(Clone)]
pub(crate) enum Turns {
    Sync(Arc<dyn Behavior>),
    Async(Arc<AsyncTurn>),
}

/// An actor type: its behaviour, and what it declares.
#[derive(Clone)]
pub struct ActorType {
    pub(crate) turns: Turns,
    pub(crate) initial_state: Option<Value>,
    pub(crate) message_types: Option<Arc<[String]>>,
    pub(crate) spawner: Option<Spawner>,
    /// Kept in a memory store of its own whatever the reactor's store.
    pub(crate) in_memory: bool,
}

impl ActorType {
    /// A type whose messages run `behavior` inline, on the sender's task
    /// (keep it short and non-blocking; it cannot await).
    pub fn new(behavior: impl Behavior) -> ActorType {
        ActorType {
            turns: Turns::Sync(Arc::new(behavior)),
            initial_state: None,
            message_types: None,
            spawner: None,
            in_memory: false,
        }
    }

    /// A type whose turns are async: `turn` gets the message and a copy of
    /// the state and returns the reply and the new state. A turn may await
    /// (call handlers, message other actors); the actor takes no other
    /// message meanwhile.
    pub fn from_async<F, Fut>(turn: F) -> ActorType
    where
        F: Fn(TurnInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TurnOutput, PfError>> + Send + 'static,
    {
        let turn: Arc<AsyncTurn> = Arc::new(move |input| Box::pin(turn(input)));
        ActorType {
            turns: Turns::Async(turn),
            initial_state: None,
            message_types: None,
            spawner: None,
            in_memory: false,
        }
    }

    /// Declares the state an actor of this type starts with: a message for
    /// an id that does not exist then activates it with this state (a
    /// virtual actor) instead of answering PF404.
    pub fn with_initial_state(mut self, state: Value) -> ActorType {
        self.initial_state = Some(state);
        self
    }

    /// Runs the tasks that work through this type's mailboxes with `spawn`
    /// instead of `tokio::spawn`: a binding whose turns run on one thread
    /// (a JS thread, an event loop) polls them there, so that a turn costs
    /// no thread hop. `spawn` may be called from any thread; it must poll
    /// each future to completion, inside the reactor's Tokio runtime
    /// context (timers).
    pub fn with_spawner(
        mut self,
        spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static,
    ) -> ActorType {
        self.spawner = Some(Arc::new(spawn));
        self
    }

    /// Keeps this type's actors in a memory store of their own, whatever
    /// store the reactor was given: for a reserved type whose actors hold
    /// nothing worth keeping and whose every message would otherwise be a
    /// write (`pf.cache`, which only routes a key's requests to its owner).
    pub(crate) fn in_memory(mut self) -> ActorType {
        self.in_memory = true;
        self
    }

    /// Declares the message types the behaviour understands, so that any
    /// other is refused with PF400 naming the known ones before a turn runs.
    pub fn with_message_types<I, S>(mut self, types: I) -> ActorType
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut types: Vec<String> = types.into_iter().map(Into::into).collect();
        types.sort();
        types.dedup();
        self.message_types = Some(types.into());
        self
    }
}
