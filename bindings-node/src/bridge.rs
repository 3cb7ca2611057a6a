//! The bridge between the core's threads and the JS thread.
//!
//! Two kinds of work cross to the JS thread:
//! - **invocations**: a packet reached a handler written in JS, or a message
//!   reached an actor whose behaviour is written in JS (a turn);
//! - **ready tasks**: a Promise made by the binding (`submit`, `call`,
//!   `ctx.call`) has a core future that can make progress.
//!
//! A submit from JS never hops threads: its core future is a [`Task`] polled
//! on the JS thread (first inside `submit` itself), and when a handler's
//! answer comes back through `complete`, the woken tasks are polled at once
//! and their Promises settled in the same call. The Tokio runtime runs
//! timers (deadlines) and the network; a wake-up from there queues the task
//! for the JS thread.
//!
//! A network connection is a task of the JS thread too (with `sockets:
//! 'loop'`, the default): node's event loop reports its socket ready
//! (`src/uv.rs`), and [`on_socket_ready`] polls it at once, in that libuv
//! callback: frames are read and decoded there, the JS handlers' Rust side
//! queues their invocations, which the same callback hands to the JS
//! dispatcher; answers wake the connection, which writes them at the end of
//! the JS turn ([`flush_connections`]). With `sockets: 'thread'`, the
//! connection's task runs on the runtime's thread instead, which calls the
//! JS handler's Rust side there: that queues an invocation for the JS
//! thread, and the packet's future waits for the answer that `complete`
//! sends back.
//!
//! Everything queued for the JS thread crosses in one weak threadsafe-function
//! call: a producer pushes its work and makes the call only if none is on
//! its way and the JS thread is not busy with the queues (then it looks
//! again when done: see [`drain`]). On the JS thread (a `ctx.call`, a
//! submit) the call is made at once; on a runtime thread it is made by a
//! small task spawned there, which runs once the connection's task yields
//! (`deferred`), so every invocation of a burst of frames crosses in one
//! call instead of the first one crossing alone while the rest are still
//! being read. Under load, everything that piles up while JS is busy crosses
//! in the next single call. There is no timer.
//!
//! Crossing into JS is itself batched: the invocations of a call go to the
//! JS dispatcher as the arguments of one function call, and the answers of
//! the Promises settled in one go go to the JS settler the same way (the
//! Promises are made in JS, which builds the `Result` objects). Arguments are
//! far cheaper than filling arrays or objects property by property through
//! N-API. The dispatcher answers synchronous handlers in one `complete`
//! call and asynchronous ones in one `complete` call per microtask turn.
//!
//! An actor turn whose mailbox is polled on the JS thread (a sender's first
//! message to an idle actor, or the mailbox's own task) does not wait for a
//! crossing: it calls the JS behaviour there and then ([`Shared::run_turn`])
//! and, when the method returns without a Promise, has its answer at once,
//! so the mailbox runs its queued messages one after another in one poll
//! and their senders' Promises settle together afterwards. Only a method
//! that returns a Promise answers later, through `complete`.
//!
//! The threadsafe function is weak (unref'd): a reactor never keeps node
//! alive by itself. While a Promise made by the binding is pending, or while
//! the reactor is on the network (from a successful `listen` or `connect`
//! until `stop`), the function is referenced (and the JS reactor object
//! pinned), so node waits for that answer or keeps serving peers; then it is
//! released again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Poll, Wake, Waker};

use napi::bindgen_prelude::{FnArgs, Function, FunctionRef, JsObjectValue, Null, Object};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Env, JsValue, Status, Unknown, ValueType};
use packetflow::actor::{ActorContext, Reply, TurnInput, TurnOutput};
use packetflow::{Context, ErrorCode, HandlerResult, PacketResult, PfError, Value};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::convert::{object_to_js, to_js, FromJs};
use crate::error::{convert_error_text, exception_text, ErrorClass};
use crate::js::{self, NapiResult, Spread};
use crate::runtime;

/// The wake-up threadsafe function: weak, and called with plain arguments
/// (`CalleeHandled = false`, never node's `(err, value)`). Its callback does
/// the work and calls the dispatcher itself; the function it then calls
/// (the dispatcher, with no arguments) returns at once.
pub type Tsfn = ThreadsafeFunction<(), (), (), Status, false, true, 0>;

/// Arguments per invocation passed to the JS dispatcher, after the state:
/// `slot, token, data, packetId | undefined, traceId | undefined, metadata | null,
/// remainingMs` (see `call_args`).
const INVOCATION_STRIDE: usize = 7;

/// Arguments per turn passed to the JS turn dispatcher, after the state:
/// those of an invocation (`data` is the message), then `actorState, actorId`.
const TURN_STRIDE: usize = INVOCATION_STRIDE + 2;

/// Arguments per answer passed to the JS settler, after the state:
/// `promiseId, kind, packetId, data | code, message, durationMs`.
const ANSWER_STRIDE: usize = 6;

/// Most entries passed in one JS call (a bigger batch takes several calls),
/// which keeps argument lists far below engine limits.
const MAX_ENTRIES_PER_CALL: usize = 512;

/// Rounds of polling woken tasks in one go before yielding to the event
/// loop (a task woken again while it is polled goes to the next round).
const MAX_POLL_ROUNDS: usize = 64;

/// Polls of one connection per poll of the ready tasks (see [`run_ready`]):
/// each reads at most 4 × 256 frames.
const POLLS_PER_CONNECTION: usize = 4;

/// Actor turns run in place (see [`Shared::run_turn`]) per entry into the
/// binding from JS or from the event loop; later ones in that entry cross
/// as invocations, so that a mailbox fed from the network while its turns
/// run cannot hold the JS thread.
const TURNS_IN_PLACE_PER_ENTRY: u32 = 256;

/// How deep turns run in place may nest (a turn that messages an idle
/// actor runs that actor's turn inside its own call); deeper ones cross as
/// invocations.
const MAX_TURN_NESTING: u32 = 8;

/// What a settled Promise resolves to.
pub enum Answer {
    /// `submit`: resolves to a `Result` object.
    Result(PacketResult),
    /// `call` and `ctx.call`: resolves to the data, or rejects.
    Data(Result<Value, PfError>),
}

/// What a JS actor turn answers: the reply and the state after the turn.
pub type TurnResult = Result<TurnOutput, PfError>;

/// Work waiting for a JS function.
pub enum Invocation {
    /// A packet for the handler in dispatcher slot `slot`.
    Call { slot: u32, data: Value, ctx: Context, reply: oneshot::Sender<HandlerResult> },
    /// A turn of the actor behaviour in turn-dispatcher slot `slot`: the
    /// message, and a copy of the state before the turn.
    Turn { slot: u32, message: Value, state: Value, ctx: ActorContext, reply: oneshot::Sender<TurnResult> },
}

impl Invocation {
    /// Nobody waits for its answer any more: the core dropped the call
    /// (its packet was cancelled, or ended some other way).
    fn is_abandoned(&self) -> bool {
        match self {
            Invocation::Call { reply, .. } => reply.is_closed(),
            Invocation::Turn { reply, .. } => reply.is_closed(),
        }
    }

    /// Answers without running (the JS side cannot take it).
    fn refuse(self, error: PfError) {
        match self {
            Invocation::Call { reply, .. } => drop(reply.send(Err(error))),
            Invocation::Turn { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The error a caller waiting for JS gets when its invocation was dropped
/// undelivered (the environment went away).
fn unreachable_js() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the JS handler is unreachable: node is exiting")
}

type AnswerFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

struct TaskState {
    future: Option<AnswerFuture>,
    /// The id under which the JS side keeps the task's Promise (`None`: a
    /// background task, whose end settles nothing).
    promise: Option<f64>,
    /// Counted among the reactor's pending work (from its first poll).
    begun: bool,
    /// Whether it counts among the pending work at all (a connection does
    /// not: the reactor being on the network keeps node alive instead).
    counted: bool,
}

/// A core future behind a binding Promise (or a background task of the
/// core's, such as an actor's mailbox), polled only on the JS thread.
pub struct Task {
    state: Mutex<TaskState>,
    /// In the ready queue already: a second wake adds nothing.
    queued: AtomicBool,
    /// JS gave up on the Promise (its `AbortSignal` aborted): the future is
    /// dropped at its next poll instead of being polled (see [`abandon`]).
    abandoned: AtomicBool,
    /// A network connection of the reactor's node (see
    /// [`Shared::spawn_connection`]): woken by a native call from JS that
    /// may come in a burst (`submit`), it is polled at the end of that JS
    /// turn (see [`flush_connections`]).
    connection: bool,
    shared: Weak<Shared>,
}

impl Task {
    pub fn new(shared: &Arc<Shared>, future: AnswerFuture, promise: f64) -> Arc<Task> {
        Task::with(shared, future, Some(promise))
    }

    fn with(shared: &Arc<Shared>, future: AnswerFuture, promise: Option<f64>) -> Arc<Task> {
        Task::made(shared, future, promise, false)
    }

    /// A task; a `connection` does not count among the pending work.
    fn made(shared: &Arc<Shared>, future: AnswerFuture, promise: Option<f64>, connection: bool) -> Arc<Task> {
        Arc::new(Task {
            state: Mutex::new(TaskState {
                future: Some(future),
                promise,
                begun: false,
                counted: !connection,
            }),
            queued: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            connection,
            shared: Arc::downgrade(shared),
        })
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.ready.lock().push(self.clone());
            // Woken inside an entry that polls before it returns: polled
            // there, with no threadsafe call.
            if !inside_entry_that_takes(&shared, false) {
                shared.schedule();
            }
        }
    }
}

/// [`Shared::state`]: the JS thread will not look at the queues unless a
/// threadsafe call is made.
const IDLE: u8 = 0;
/// A threadsafe call is on its way and will empty the queues.
const SCHEDULED: u8 = 1;
/// The JS thread is emptying the queues, and looks again (its own
/// threadsafe call) once what it took is handled: producers need not call.
const ACTIVE: u8 = 2;

/// The thread-safe half: the queues and the threadsafe function.
pub struct Shared {
    invocations: Mutex<Vec<Invocation>>,
    ready: Mutex<Vec<Arc<Task>>>,
    /// `IDLE`, `SCHEDULED` or `ACTIVE`.
    state: AtomicU8,
    /// A task of the runtime will make the threadsafe call when it runs.
    deferred: AtomicBool,
    /// The environment is gone: nothing can cross any more.
    closed: AtomicBool,
    tsfn: OnceLock<Tsfn>,
    /// The node's connections run on the JS thread (see
    /// [`Shared::spawn_connection`]), for the stand-in (see [`stand_in`]).
    connections: Mutex<Vec<Weak<Task>>>,
    /// The stand-in task is running.
    standing_by: AtomicBool,
    /// Bumped whenever the JS thread polls tasks: the stand-in sees from it
    /// whether the JS thread is blocked.
    js_polls: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            invocations: Mutex::new(Vec::new()),
            ready: Mutex::new(Vec::new()),
            state: AtomicU8::new(IDLE),
            deferred: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            tsfn: OnceLock::new(),
            connections: Mutex::new(Vec::new()),
            standing_by: AtomicBool::new(false),
            js_polls: AtomicU64::new(0),
        })
    }

    /// Queues a handler invocation for the JS thread; callable from any thread.
    ///
    /// On a thread of the core's runtime (a packet that came from the
    /// network, run by its connection's task), the threadsafe call is made
    /// only once that task yields: everything the task hands over while it
    /// reads a burst of frames crosses in that one call.
    pub fn invoke(self: &Arc<Self>, invocation: Invocation) {
        if self.closed.load(Ordering::Acquire) {
            // Dropping the invocation drops its reply sender: PF503.
            return;
        }
        self.invocations.lock().push(invocation);
        if crate::on_runtime_thread() {
            self.schedule_after_task();
        } else if !inside_entry_that_takes(self, true) {
            self.schedule();
        }
    }

    /// Runs `future` to completion on the JS thread (an actor's mailbox, so
    /// that its turns cost no thread hop); callable from any thread. Node
    /// stays alive while it runs.
    pub fn spawn(self: &Arc<Self>, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.spawn_as(future, false);
    }

    /// Runs a network connection of this reactor's node on the JS thread
    /// (the node's `ConnectionSpawner`), callable from any thread: it is
    /// polled where it is woken, like a Promise's task, so that its frames
    /// are read, handled and answered there. It does not keep node alive
    /// by itself (the reactor being on the network does).
    pub fn spawn_connection(self: &Arc<Self>, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let task = self.spawn_as(future, true);
        {
            let mut connections = self.connections.lock();
            connections.retain(|c| c.strong_count() > 0);
            connections.push(Arc::downgrade(&task));
        }
        if !self.standing_by.swap(true, Ordering::AcqRel) {
            runtime().spawn(stand_in(Arc::downgrade(self)));
        }
    }

    fn spawn_as(
        self: &Arc<Self>,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
        connection: bool,
    ) -> Arc<Task> {
        let future = Box::pin(async move {
            future.await;
            Answer::Data(Ok(Value::Null))
        });
        let task = Task::made(self, future, None, connection);
        task.wake_by_ref();
        task
    }

    /// Runs the JS handler in dispatcher slot `slot` on a packet: its answer,
    /// once JS gave it.
    pub fn call_handler(
        self: &Arc<Self>,
        slot: u32,
        data: Value,
        ctx: Context,
    ) -> impl Future<Output = HandlerResult> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        self.invoke(Invocation::Call { slot, data, ctx, reply });
        async move { answer.await.unwrap_or_else(|_| Err(unreachable_js())) }
    }

    /// Runs one turn of the JS behaviour in turn-dispatcher slot `slot`:
    /// the reply and the state after the turn, once JS gave them (the core
    /// commits the state only if the turn succeeded).
    ///
    /// On the JS thread, inside one of the binding's entries (see
    /// [`Here`]), the turn runs in place: no invocation, no crossing.
    pub fn run_turn(
        self: &Arc<Self>,
        slot: u32,
        input: TurnInput,
    ) -> impl Future<Output = TurnResult> + Send + 'static {
        let answer = match turn_in_place(self, slot, input) {
            InPlace::Done(outcome) => Err(outcome),
            InPlace::Later(answer) => Ok(answer),
            InPlace::NotHere(TurnInput { message, state, ctx, .. }) => {
                let (reply, answer) = oneshot::channel();
                self.invoke(Invocation::Turn { slot, message, state, ctx, reply });
                Ok(answer)
            }
        };
        async move {
            match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| Err(unreachable_js())),
                Err(outcome) => outcome,
            }
        }
    }

    /// Makes sure a threadsafe call is made once the running task yields.
    fn schedule_after_task(self: &Arc<Self>) {
        if self.state.load(Ordering::SeqCst) != IDLE || self.deferred.swap(true, Ordering::AcqRel) {
            return;
        }
        // A task spawned from a runtime thread runs after the current one
        // returns (at once, on the same thread, when nothing else waits).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = self.clone();
                runtime.spawn(async move {
                    shared.deferred.store(false, Ordering::Release);
                    shared.schedule();
                });
            }
            Err(_) => {
                self.deferred.store(false, Ordering::Release);
                self.schedule();
            }
        }
    }

    /// Makes sure the JS thread looks at the queues: a threadsafe call is
    /// made unless one is on its way or the JS thread will look anyway.
    fn schedule(&self) {
        if self.state.compare_exchange(IDLE, SCHEDULED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.signal();
        }
    }

    /// Makes the threadsafe call.
    fn signal(&self) {
        let delivered = self
            .tsfn
            .get()
            .map(|tsfn| tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok)
            .unwrap_or(false);
        if !delivered {
            // The environment is closing (node is exiting or the worker is
            // terminating): drop what can no longer be delivered. Dropped
            // invocations answer PF503; Promises of a gone environment are
            // never settled.
            self.closed.store(true, Ordering::Release);
            let invocations = std::mem::take(&mut *self.invocations.lock());
            let tasks = std::mem::take(&mut *self.ready.lock());
            drop((invocations, tasks));
        }
    }

    /// Makes sure the JS thread enters the bridge soon (to close a poll
    /// handle dropped off its thread: see `src/uv.rs`); callable from any
    /// thread.
    pub fn look_soon(&self) {
        self.schedule();
    }

    fn has_work(&self) -> bool {
        !self.invocations.lock().is_empty() || !self.ready.lock().is_empty()
    }

    pub fn set_tsfn(&self, tsfn: Tsfn) {
        let _ = self.tsfn.set(tsfn);
    }

    /// References the threadsafe function (node waits for it) or releases
    /// it (node may exit while it is idle). On the JS thread of `env`.
    ///
    /// napi-rs deprecates its own `refer`/`unref` (and they take `&mut`,
    /// where producers on other threads share the function), hence the
    /// direct N-API calls.
    fn refer_tsfn(&self, env: &Env, on: bool) {
        let Some(tsfn) = self.tsfn.get() else { return };
        if tsfn.aborted() {
            return;
        }
        // SAFETY: called on the JS thread of `env`, the environment the
        // function was made in; it is not aborted (checked just above, and
        // only that thread's environment teardown aborts it). Node counts
        // refs and unrefs of a threadsafe function as a flag, so repeated
        // calls are harmless.
        unsafe {
            if on {
                sys::napi_ref_threadsafe_function(env.raw(), tsfn.raw());
            } else {
                sys::napi_unref_threadsafe_function(env.raw(), tsfn.raw());
            }
        }
    }
}

/// Hashes the running handlers' tokens: they are sequential integers made
/// here, never chosen by a peer, so one multiply spreads them well (SipHash
/// cost ~3% of the JS thread's time on the network path).
#[derive(Default)]
pub struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (which the table's control bytes
        // use) depend on every bit of the token.
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A JS handler or actor turn that is running: where its answer goes, and
/// the context its `call`, `send` and `tell` act for.
pub enum Running {
    Call { ctx: Context, reply: oneshot::Sender<HandlerResult> },
    Turn { ctx: ActorContext, reply: oneshot::Sender<TurnResult> },
}

impl Running {
    /// The packet's context (a turn's, with its actor, derefs to one).
    pub fn context(&self) -> &Context {
        match self {
            Running::Call { ctx, .. } => ctx,
            Running::Turn { ctx, .. } => ctx,
        }
    }

    /// Its packet ended: nobody waits for the answer any more.
    fn is_closed(&self) -> bool {
        match self {
            Running::Call { reply, .. } => reply.is_closed(),
            Running::Turn { reply, .. } => reply.is_closed(),
        }
    }

    /// Hands over a handler's answer.
    pub fn answer(self, outcome: Result<Value, PfError>) {
        match self {
            Running::Call { reply, .. } => drop(reply.send(outcome)),
            // A turn always answers through `answer_turn` (index.js keeps
            // them apart); a plain answer would lose the state.
            Running::Turn { reply, .. } => {
                let outcome = outcome.and(Err(PfError::failed("a turn was answered without its state")));
                drop(reply.send(outcome));
            }
        }
    }

    /// Hands over a turn's answer: its reply, the state after it, and
    /// whether it stopped the actor.
    pub fn answer_turn(self, outcome: Result<(Value, Value, bool), PfError>) {
        match self {
            Running::Turn { reply, .. } => {
                let outcome = outcome.map(|(value, state, stop)| TurnOutput {
                    reply: if stop { Reply::Stop(value) } else { Reply::Value(value) },
                    state,
                });
                drop(reply.send(outcome));
            }
            Running::Call { reply, .. } => {
                drop(reply.send(Err(PfError::failed("a handler was answered as an actor turn"))))
            }
        }
    }

    /// Hands over a failure (a throw or a rejection), handler or turn.
    pub fn fail(self, error: PfError) {
        match self {
            Running::Call { reply, .. } => drop(reply.send(Err(error))),
            Running::Turn { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The module's dispatcher or settler: `fn(state, ...entries)`.
pub type BatchFn = FunctionRef<Spread, ()>;

/// The module's `runTurn(state, ...turn)`: one turn run at once, its
/// outcome returned (see `Dispatch#runTurn` in index.js).
pub type TurnFn = FunctionRef<Spread, Unknown<'static>>;

/// The `PacketFlowError` class, kept across calls.
pub type ErrorClassRef = FunctionRef<FnArgs<(String, String)>, ()>;

/// A reference to the JS reactor's state object (its `Dispatch`): weak
/// while the reactor is idle, so that an unused reactor can be collected,
/// strong while it is busy, so that the Promises it settles stay reachable.
///
/// napi-rs' references are strong until dropped; this one's count moves
/// between 0 and 1, hence the direct N-API calls. It is made, used and
/// deleted on the JS thread of `env` (it lives in [`Local`], which never
/// leaves that thread).
struct StateRef {
    env: Env,
    raw: sys::napi_ref,
    strong: bool,
}

impl StateRef {
    fn new(env: &Env, state: &Object<'_>) -> NapiResult<StateRef> {
        let mut raw = ptr::null_mut();
        // SAFETY: on the JS thread of `env`, with a live object of it; N-API
        // only writes the out-pointer.
        let status = unsafe { sys::napi_create_reference(env.raw(), state.raw(), 0, &mut raw) };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::from_status(Status::from(status)));
        }
        Ok(StateRef { env: *env, raw, strong: false })
    }

    /// The state object, or `None` once it was collected.
    fn get<'env>(&self, env: &'env Env) -> Option<Unknown<'env>> {
        let mut value = ptr::null_mut();
        // SAFETY: `self.raw` is a live reference of this environment
        // (deleted only in `drop`), read on its JS thread; N-API writes a
        // value of the current handle scope, or null once it was collected.
        let status = unsafe { sys::napi_get_reference_value(env.raw(), self.raw, &mut value) };
        (status == sys::Status::napi_ok && !value.is_null())
            // SAFETY: a live value of `env`'s current handle scope (above).
            .then(|| unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
    }

    /// Makes the reference strong (count 1) or weak (count 0).
    fn set_strong(&mut self, strong: bool) {
        if strong == self.strong {
            return;
        }
        let mut count = 0;
        // SAFETY: `self.raw` is a live reference of `self.env`, used on its
        // JS thread; `strong` tracks its count, so it never goes below 0.
        unsafe {
            if strong {
                sys::napi_reference_ref(self.env.raw(), self.raw, &mut count);
            } else {
                sys::napi_reference_unref(self.env.raw(), self.raw, &mut count);
            }
        }
        self.strong = strong;
    }
}

impl Drop for StateRef {
    fn drop(&mut self) {
        // SAFETY: `Local` (and so this) is dropped on the JS thread of
        // `self.env`: by the reactor's finalizer or the threadsafe
        // function's, both run there. The reference is deleted once.
        unsafe { sys::napi_delete_reference(self.env.raw(), self.raw) };
    }
}

/// The JS-thread half: references into the JS heap and the table of
/// running handlers. Never leaves the JS thread (it is `Rc<RefCell<_>>`).
pub struct Local {
    env: Env,
    /// The `PacketFlowError` class.
    error_class: ErrorClassRef,
    /// The module's dispatchers (handlers, actor turns) and settler
    /// (strong references; they belong to the module, not to a reactor, so
    /// they pin nothing).
    dispatch_fn: BatchFn,
    turn_fn: BatchFn,
    run_turn_fn: TurnFn,
    settle_fn: BatchFn,
    /// `flushSoon(state)`: polls the deferred connections in a microtask
    /// (see [`flush_connections`]).
    flush_soon_fn: BatchFn,
    /// Connections woken by native calls from JS in this turn, polled
    /// together at its end (see [`flush_connections`]).
    deferred_connections: Vec<Arc<Task>>,
    /// `flushSoon` was called and its microtask has not run yet.
    flush_scheduled: bool,
    /// The JS reactor's state: weak while idle, strong while busy.
    state: StateRef,
    /// Promises of this reactor that are not settled yet.
    busy: u32,
    /// The reactor listened or connected and was not stopped since: it is
    /// a server (or a peer's client) and keeps node alive.
    networked: bool,
    /// Whether the threadsafe function and the JS state are referenced now.
    held: bool,
    pub running: HashMap<u64, Running, BuildHasherDefault<TokenHasher>>,
    /// Size of `running` after its last sweep (see `sweep`).
    swept_at: usize,
    /// Tasks whose Promise an `AbortSignal` may abandon, by Promise id
    /// (only those: a call without a signal is never entered here).
    abortable: HashMap<u64, Weak<Task>, BuildHasherDefault<TokenHasher>>,
    /// Size of `abortable` after its last sweep (see `watch`).
    abortable_swept_at: usize,
    next_token: u64,
    spare_invocations: Vec<Invocation>,
    spare_tasks: Vec<Arc<Task>>,
    shared: Weak<Shared>,
    /// What node's async hooks see as the origin of the JS run from a
    /// socket's readiness (see [`on_socket_ready`]); made at the first.
    async_resource: Option<Rc<js::AsyncResource>>,
}

pub type LocalRef = Rc<RefCell<Local>>;

/// The JS side of a reactor: its state object and the module's functions.
pub struct JsSide<'env> {
    pub state: Object<'env>,
    pub dispatch: BatchFn,
    pub dispatch_turns: BatchFn,
    pub run_turn: TurnFn,
    pub settle: BatchFn,
    pub flush_soon: BatchFn,
    pub error_class: ErrorClassRef,
}

impl Local {
    pub fn new(env: &Env, side: JsSide<'_>, shared: &Arc<Shared>) -> NapiResult<Local> {
        Ok(Local {
            env: *env,
            error_class: side.error_class,
            dispatch_fn: side.dispatch,
            turn_fn: side.dispatch_turns,
            run_turn_fn: side.run_turn,
            settle_fn: side.settle,
            flush_soon_fn: side.flush_soon,
            deferred_connections: Vec::new(),
            flush_scheduled: false,
            state: StateRef::new(env, &side.state)?,
            busy: 0,
            networked: false,
            held: false,
            running: HashMap::default(),
            swept_at: 0,
            abortable: HashMap::default(),
            abortable_swept_at: 0,
            next_token: 1,
            spare_invocations: Vec::new(),
            spare_tasks: Vec::new(),
            shared: Arc::downgrade(shared),
            async_resource: None,
        })
    }

    pub fn error_class<'env>(&self, env: &'env Env) -> NapiResult<ErrorClass<'env>> {
        self.error_class.borrow_back(env)
    }

    /// A Promise of this reactor begins; node stays alive until it settles.
    fn begin(&mut self) {
        self.busy += 1;
        self.update_hold();
    }

    fn end(&mut self) {
        self.busy -= 1;
        self.update_hold();
    }

    /// Marks the reactor as on the network (it listened or connected) or
    /// off it (it stopped): while on it, node stays alive.
    pub fn set_networked(&mut self, on: bool) {
        self.networked = on;
        self.update_hold();
    }

    fn update_hold(&mut self) {
        let want = self.busy > 0 || self.networked;
        if want != self.held {
            self.held = want;
            self.hold(want);
        }
    }

    /// References (or releases) the threadsafe function and the JS state,
    /// so that node waits for pending answers and no longer.
    fn hold(&mut self, on: bool) {
        if let Some(shared) = self.shared.upgrade() {
            shared.refer_tsfn(&self.env, on);
        }
        self.state.set_strong(on);
    }

    /// Forgets running handlers whose packet already ended (it timed out or
    /// the reactor stopped) and that never answered: a handler whose Promise
    /// never settles must not hold its context forever. Amortised: a sweep
    /// runs only when the table has doubled since the last one.
    fn sweep(&mut self) {
        if self.running.len() >= 1024 && self.running.len() >= 2 * self.swept_at {
            self.running.retain(|_, r| !r.is_closed());
            self.swept_at = self.running.len();
        }
    }

    /// The reactor's async resource, made at the first call; `None` if it
    /// could not be made (JS then runs without a callback scope).
    fn async_resource(&mut self, env: &Env) -> Option<Rc<js::AsyncResource>> {
        if self.async_resource.is_none() {
            match js::AsyncResource::new(env, "packetflow:socket") {
                Ok(resource) => self.async_resource = Some(Rc::new(resource)),
                Err(_) => {
                    js::take_exception(env);
                    return None;
                }
            }
        }
        self.async_resource.clone()
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }
}

/// Calls `function(state, ...args)` in chunks of at most
/// [`MAX_ENTRIES_PER_CALL`] entries of `stride` arguments. A throw (a bug in
/// index.js: user code never runs here) comes back as the error.
fn call_in_chunks(
    function: &Function<'_, Spread, ()>,
    state: Unknown<'_>,
    args: &mut Spread,
    stride: usize,
) -> NapiResult<()> {
    let chunk = MAX_ENTRIES_PER_CALL * stride;
    let mut start = 0;
    while start < args.len() {
        let end = (start + chunk).min(args.len());
        function.call(args.slice(state, start..end))?;
        start = end;
    }
    args.clear();
    Ok(())
}

/// Answers collected while polling, passed to the JS settler in one call.
pub struct Settled {
    args: Spread,
}

impl Settled {
    pub fn new() -> Settled {
        Settled { args: Spread::default() }
    }

    /// `promiseId, kind, packetId, data | code, message, durationMs`, where
    /// kind is 0 success Result, 1 error Result, 2 data, 3 rejection.
    fn push(&mut self, env: &Env, promise: f64, answer: Answer) -> NapiResult<()> {
        let undefined = js::unknown(env, ())?;
        let id = js::unknown(env, promise)?;
        let entry = match &answer {
            Answer::Result(result) => {
                let packet_id = js::unknown(env, result.packet_id.as_str())?;
                let duration = js::unknown(env, result.duration_ms as f64)?;
                match &result.outcome {
                    Ok(data) => {
                        [id, js::unknown(env, 0.0)?, packet_id, to_js(env, data)?, undefined, duration]
                    }
                    Err(e) => [
                        id,
                        js::unknown(env, 1.0)?,
                        packet_id,
                        js::unknown(env, e.code.as_str())?,
                        js::unknown(env, e.message.as_str())?,
                        duration,
                    ],
                }
            }
            Answer::Data(Ok(data)) => {
                [id, js::unknown(env, 2.0)?, undefined, to_js(env, data)?, undefined, undefined]
            }
            Answer::Data(Err(e)) => [
                id,
                js::unknown(env, 3.0)?,
                undefined,
                js::unknown(env, e.code.as_str())?,
                js::unknown(env, e.message.as_str())?,
                undefined,
            ],
        };
        for value in entry {
            self.args.push(value);
        }
        Ok(())
    }
}

/// Polls `task` once on the JS thread; when it is done, its answer joins
/// `settled`. The caller has entered the runtime's context (timers need it).
fn poll_task(env: &Env, local: &LocalRef, settled: &mut Settled, task: &Arc<Task>) {
    if let Some((Some(promise), answer)) = poll_task_once(local, task) {
        settle_one(env, settled, promise, answer);
    }
}

/// Adds the answer of the Promise `promise` to `settled`.
fn settle_one(env: &Env, settled: &mut Settled, promise: f64, answer: Answer) {
    if settled.push(env, promise, answer).is_err() {
        // Building the answer failed (out of memory): the Promise
        // still ends, with that failure.
        js::take_exception(env);
        let fallback = Answer::Data(Err(PfError::failed("the answer could not be converted to JS")));
        let _ = settled.push(env, promise, fallback);
    }
}

/// Polls `task` once on the JS thread: its Promise's id and its answer
/// when it is done.
fn poll_task_once(local: &LocalRef, task: &Arc<Task>) -> Option<(Option<f64>, Answer)> {
    // Cleared before polling, so that a wake during the poll queues it again.
    task.queued.store(false, Ordering::Release);
    let waker = Waker::from(task.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let Some(mut state) = task.state.try_lock() else {
        // It is being polled further up this thread's stack (a turn run in
        // place called back into the binding): poll it again afterwards.
        if !task.queued.swap(true, Ordering::AcqRel) {
            if let Some(shared) = task.shared.upgrade() {
                shared.ready.lock().push(task.clone());
            }
        }
        return None;
    };
    let TaskState { future, promise, begun, counted } = &mut *state;
    if task.abandoned.load(Ordering::Relaxed) {
        // Dropping the core future cancels its packet (a submit's) or its
        // call; its Promise was settled by JS already.
        let dropped = future.take();
        let begun = std::mem::take(begun);
        drop(state);
        drop(dropped);
        if begun {
            local.borrow_mut().end();
        }
        return None;
    }
    let running = future.as_mut()?;
    let Poll::Ready(answer) = running.as_mut().poll(&mut cx) else {
        // Pending work from now on: node stays up for it. (Work that ends
        // in its first poll never counts, so a run of such calls does not
        // reference and release the threadsafe function at every call.)
        if !*begun && *counted {
            *begun = true;
            local.borrow_mut().begin();
        }
        return None;
    };
    *future = None;
    let (promise, begun) = (*promise, *begun);
    drop(state);
    if begun {
        local.borrow_mut().end();
    }
    Some((promise, answer))
}

/// Starts a task for the Promise `promise` (made by the JS side): polls it
/// at once, so a packet that can run starts now, and settles what finished.
pub fn start(env: &Env, shared: &Shared, local: &LocalRef, task: Arc<Task>) -> NapiResult<()> {
    let _runtime = runtime().enter();
    let _here = Here::enter(env, shared, local, Entry::Polls);
    let mut settled = Settled::new();
    poll_task(env, local, &mut settled, &task);
    drop(task);
    run_ready(env, shared, local, &mut settled, Connections::Later);
    deliver(env, local, &mut settled)
}

/// [`start`] for a caller that answers its Promise itself when it can:
/// the task's answer if it ended in its first poll (its Promise is then
/// not settled here), else `None` (it settles later, as any task's does).
/// Saves a call into JS for work that ends at once (a turn run in place).
pub fn start_answering(
    env: &Env,
    shared: &Shared,
    local: &LocalRef,
    task: Arc<Task>,
) -> NapiResult<Option<Answer>> {
    let _runtime = runtime().enter();
    let _here = Here::enter(env, shared, local, Entry::Polls);
    let mut settled = Settled::new();
    let answer = poll_task_once(local, &task).map(|(_, answer)| answer);
    drop(task);
    run_ready(env, shared, local, &mut settled, Connections::Later);
    deliver(env, local, &mut settled)?;
    Ok(answer)
}

/// Lets JS abandon `task`, the work of Promise `promise`, if it is still
/// running after its first poll: [`abandon`] finds it by that id. Entries
/// of tasks that ended are dropped in sweeps (when the table has doubled
/// since the last one), so the table stays within twice the abandonable
/// work in flight.
pub fn watch(local: &LocalRef, promise: f64, task: &Arc<Task>) {
    if task.state.try_lock().is_some_and(|state| state.future.is_none()) {
        return;
    }
    let mut local = local.borrow_mut();
    local.abortable.insert(promise as u64, Arc::downgrade(task));
    if local.abortable.len() >= 64 && local.abortable.len() >= 2 * local.abortable_swept_at {
        local.abortable.retain(|_, task| {
            task.upgrade()
                .is_some_and(|task| task.state.try_lock().is_none_or(|state| state.future.is_some()))
        });
        local.abortable_swept_at = local.abortable.len();
    }
}

/// JS gave up on Promise `promise` (its `AbortSignal` aborted, and JS
/// rejected the Promise itself): its core future is dropped now, which
/// cancels the packet or call it waits for, and what that wakes (the
/// handler's `ctx.signal`, dependents) is polled before this returns.
/// Nothing happens for work that ended, or was never [`watch`]ed.
pub fn abandon(env: &Env, shared: &Shared, local: &LocalRef, promise: f64) -> NapiResult<()> {
    let task = local.borrow_mut().abortable.remove(&(promise as u64)).and_then(|task| task.upgrade());
    let Some(task) = task else { return Ok(()) };
    // Dropped at its next poll, which is now (or, if it is being polled
    // further up this thread's stack, right after that poll).
    task.abandoned.store(true, Ordering::Relaxed);
    if !task.queued.swap(true, Ordering::AcqRel) {
        shared.ready.lock().push(task);
    }
    poll_ready(env, shared, local)
}

/// Polls the tasks that were woken and settles the Promises that finished
/// (for a native call from JS).
pub fn poll_ready(env: &Env, shared: &Shared, local: &LocalRef) -> NapiResult<()> {
    poll_ready_any(env, shared, local, Connections::Later).map(|_| ())
}

/// [`poll_ready`] for `complete`, which hands over a whole batch of
/// answers (index.js gathers the answers of a turn into one call): the
/// connections they wake write them now, with no microtask to wait for.
pub fn poll_answered(env: &Env, shared: &Shared, local: &LocalRef) -> NapiResult<()> {
    poll_ready_any(env, shared, local, Connections::Now).map(|_| ())
}

/// [`poll_ready`], polling woken connections as `connections` says;
/// whether any task was polled.
fn poll_ready_any(
    env: &Env,
    shared: &Shared,
    local: &LocalRef,
    connections: Connections,
) -> NapiResult<bool> {
    let _runtime = runtime().enter();
    let _here = Here::enter(env, shared, local, Entry::Polls);
    let mut settled = Settled::new();
    let polled = run_ready(env, shared, local, &mut settled, connections);
    deliver(env, local, &mut settled).map(|()| polled)
}

/// When woken connections are polled: at the end of the JS turn (`Later`,
/// for native calls from JS that may come in bursts, such as `submit`), or
/// at once (`Now`: the event loop's callbacks, and `complete`, which
/// carries a turn's answers in one call).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Connections {
    Later,
    Now,
}

/// Polls woken tasks until none is left (or a bounded number of rounds,
/// after which the next threadsafe call goes on); whether any was polled.
/// With `Connections::Later`, woken connections are set aside for
/// [`flush_connections`], at the end of the JS turn: what the turn's calls
/// queued for a peer (each `submit` of a burst) then leaves in one write.
fn run_ready(
    env: &Env,
    shared: &Shared,
    local: &LocalRef,
    settled: &mut Settled,
    connections: Connections,
) -> bool {
    let mut polled = false;
    let mut deferred = false;
    // A connection is polled at most `POLLS_PER_CONNECTION` times per call:
    // one poll reads a bounded burst of frames, and a connection that keeps
    // waking itself (it yields with more to read) then waits for the next
    // turn of the event loop, so a flood of frames never holds the JS thread
    // from the handlers it calls. (A poll often wakes its own task in
    // passing, which one more poll settles.)
    let mut connections_polled: Vec<(*const Task, usize)> = Vec::new();
    let mut next_turn = Vec::new();
    shared.js_polls.fetch_add(1, Ordering::Relaxed);
    for _ in 0..MAX_POLL_ROUNDS {
        let mut tasks = {
            let spare = std::mem::take(&mut local.borrow_mut().spare_tasks);
            std::mem::replace(&mut *shared.ready.lock(), spare)
        };
        if tasks.is_empty() {
            local.borrow_mut().spare_tasks = tasks;
            break;
        }
        polled = true;
        for task in tasks.drain(..) {
            if task.connection && connections == Connections::Later {
                // Stays queued (a second wake adds nothing) until the flush.
                local.borrow_mut().deferred_connections.push(task);
                deferred = true;
            } else if task.connection {
                let this = Arc::as_ptr(&task);
                let polls = match connections_polled.iter_mut().find(|(c, _)| *c == this) {
                    Some((_, polls)) => polls,
                    None => {
                        connections_polled.push((this, 0));
                        &mut connections_polled.last_mut().expect("just pushed").1
                    }
                };
                if *polls == POLLS_PER_CONNECTION {
                    next_turn.push(task);
                } else {
                    *polls += 1;
                    poll_task(env, local, settled, &task);
                }
            } else {
                poll_task(env, local, settled, &task);
            }
        }
        local.borrow_mut().spare_tasks = tasks;
    }
    let mut ready = shared.ready.lock();
    ready.append(&mut next_turn);
    let more = !ready.is_empty();
    drop(ready);
    if more {
        shared.schedule();
    }
    if deferred {
        flush_soon(env, shared, local, settled);
    }
    polled
}

/// Has `flushSoon(state)` queue the microtask that polls the deferred
/// connections, once per JS turn. Without the JS state (collected), they
/// are polled now.
fn flush_soon(env: &Env, shared: &Shared, local: &LocalRef, settled: &mut Settled) {
    let (function, state) = {
        let mut local = local.borrow_mut();
        if local.flush_scheduled {
            return;
        }
        local.flush_scheduled = true;
        (local.flush_soon_fn.borrow_back(env), local.state.get(env))
    };
    if let (Ok(function), Some(state)) = (function, state) {
        let mut args = Spread::with_capacity(1);
        args.push(state);
        if function.call(args).is_ok() {
            return;
        }
        js::take_exception(env);
    }
    local.borrow_mut().flush_scheduled = false;
    let tasks = std::mem::take(&mut local.borrow_mut().deferred_connections);
    for task in tasks {
        poll_task(env, local, settled, &task);
    }
    if !shared.ready.lock().is_empty() {
        shared.schedule();
    }
}

/// How often the stand-in looks whether the JS thread is blocked.
const STAND_IN_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps the node's connections alive while the JS thread is blocked (by
/// synchronous code, a long handler), on the runtime's thread: when a
/// connection has waited to be polled for a whole period and the JS thread
/// polled nothing meanwhile, it is polled here. It then reads frames (its
/// packets' handlers queue for the JS thread as they would from a thread
/// connection), answers heartbeats and sends its own, so peers do not
/// declare the node dead for a JS thread busy for seconds. Its socket
/// cannot wait for libuv from here (see `src/uv.rs`): it is polled again
/// at the next period, and by the JS thread once that is back. Runs while
/// the reactor has connections.
async fn stand_in(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(STAND_IN_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut js_polls = u64::MAX;
    // Connections seen queued at the last period (by address).
    let mut waiting: Vec<usize> = Vec::new();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let connections: Vec<Arc<Task>> = {
            let mut connections = shared.connections.lock();
            connections.retain(|c| c.strong_count() > 0);
            if connections.is_empty() {
                shared.standing_by.store(false, Ordering::Release);
                return;
            }
            connections.iter().filter_map(Weak::upgrade).collect()
        };
        let polls = shared.js_polls.load(Ordering::Relaxed);
        let blocked = polls == js_polls;
        js_polls = polls;
        let address = |task: &Arc<Task>| Arc::as_ptr(task) as usize;
        let queued: Vec<usize> =
            connections.iter().filter(|task| task.queued.load(Ordering::Acquire)).map(address).collect();
        if blocked {
            for task in connections.iter().filter(|task| waiting.contains(&address(task))) {
                poll_standing_in(task);
            }
        }
        waiting = queued;
    }
}

/// Polls a connection's task off the JS thread (see [`stand_in`]); it stays
/// queued for the JS thread, which polls it too once it can.
fn poll_standing_in(task: &Arc<Task>) {
    let Some(mut state) = task.state.try_lock() else { return };
    let Some(future) = state.future.as_mut() else { return };
    let waker = Waker::from(task.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    if future.as_mut().poll(&mut cx).is_ready() {
        // Over: dropped here (a connection counts as no pending work).
        state.future = None;
    }
}

/// The end of a JS turn (`flushSoon`'s microtask): polls the connections
/// woken by native calls during the turn, which write what was queued for
/// their peers.
pub fn flush_connections(env: &Env, shared: &Shared, local: &LocalRef) -> NapiResult<()> {
    let tasks = {
        let mut local = local.borrow_mut();
        local.flush_scheduled = false;
        std::mem::take(&mut local.deferred_connections)
    };
    if tasks.is_empty() {
        return Ok(());
    }
    shared.ready.lock().extend(tasks);
    poll_ready_any(env, shared, local, Connections::Now).map(|_| ())
}

/// Hands the settled answers to the JS settler, in one call.
fn deliver(env: &Env, local: &LocalRef, settled: &mut Settled) -> NapiResult<()> {
    if settled.args.is_empty() {
        return Ok(());
    }
    let (settle, state) = {
        let local = local.borrow();
        (local.settle_fn.borrow_back(env)?, local.state.get(env))
    };
    match state {
        Some(state) => call_in_chunks(&settle, state, &mut settled.args, ANSWER_STRIDE),
        // The JS reactor is gone, and with it everyone who could await.
        None => Ok(()),
    }
}

/// The threadsafe function's callback, on the JS thread: polls woken tasks,
/// settles their Promises, then passes the pending invocations to the JS
/// dispatcher. A failure here is a bug in index.js: it is reported as an
/// uncaught exception, like any failing callback.
///
/// While it finds work, the JS thread keeps looking: it makes its own
/// threadsafe call, which runs once what it took is handled (async answers
/// included: they come in this turn's microtasks), and producers meanwhile
/// only queue (`ACTIVE`), with no call and no wake-up of their own. Work that
/// arrives while JS is busy thus crosses in one batch. The first call that
/// finds nothing sets `IDLE` again.
pub fn drain(env: &Env, shared: &Shared, local: &LocalRef) {
    crate::uv::close_orphans();
    let _here = Here::enter(env, shared, local, Entry::Other);
    shared.state.store(ACTIVE, Ordering::SeqCst);
    let outcome = poll_ready_any(env, shared, local, Connections::Now)
        .and_then(|polled| dispatch(env, shared, local).map(|dispatched| polled || dispatched));
    match outcome {
        Ok(true) => shared.signal(),
        Ok(false) => {
            shared.state.store(IDLE, Ordering::SeqCst);
            // A producer that queued after the queues were taken saw ACTIVE
            // and made no call: look again.
            if shared.has_work() {
                shared.schedule();
            }
        }
        Err(error) => {
            shared.signal();
            match js::take_exception(env) {
                Some(thrown) => env.fatal_exception(napi::Error::from(thrown)),
                None => env.fatal_exception(error),
            }
        }
    }
}

/// A socket of one of this reactor's connections is ready (a libuv
/// callback on the JS thread, outside any JS: see `src/uv.rs`): `wake`
/// wakes the connections that wait on it, which are polled here (they read
/// and decode frames, the core runs them and calls JS handlers, which queue
/// invocations), then the queued invocations go to the JS dispatcher, all
/// in this one callback: no threadsafe call, no other thread. Handlers that
/// answer at once do so through `complete` inside the dispatch, which polls
/// the connection again, which writes the answers; asynchronous answers
/// come in the microtasks node runs when the callback scope closes, and
/// are written the same way.
pub fn on_socket_ready(env: &Env, shared: &Shared, local: &LocalRef, wake: impl FnOnce()) {
    let _handles = js::HandleScope::open(env);
    let resource = local.borrow_mut().async_resource(env);
    // Closed last: the microtasks run once everything below is done.
    let _callback = resource.as_ref().map(|r| js::CallbackScope::open(r));
    let _runtime = runtime().enter();
    let _here = Here::enter(env, shared, local, Entry::PollsAndDispatches);
    wake();
    let mut settled = Settled::new();
    run_ready(env, shared, local, &mut settled, Connections::Now);
    let outcome = deliver(env, local, &mut settled).and_then(|()| dispatch(env, shared, local));
    if let Err(error) = outcome {
        // A bug in index.js, reported as drain reports it.
        match js::take_exception(env) {
            Some(thrown) => env.fatal_exception(napi::Error::from(thrown)),
            None => env.fatal_exception(error),
        }
    }
}

/// Passes the queued invocations to the JS dispatchers (handler calls to
/// one, actor turns to the other); whether there were any.
fn dispatch(env: &Env, shared: &Shared, local: &LocalRef) -> NapiResult<bool> {
    let mut items = {
        let spare = std::mem::take(&mut local.borrow_mut().spare_invocations);
        std::mem::replace(&mut *shared.invocations.lock(), spare)
    };
    if items.is_empty() {
        local.borrow_mut().spare_invocations = items;
        return Ok(false);
    }
    let state = local.borrow().state.get(env);
    let mut calls = Spread::with_capacity(items.len() * INVOCATION_STRIDE);
    let mut turns = Spread::default();
    // One clock read for the batch: what is left of each deadline.
    let now = tokio::time::Instant::now();
    for invocation in items.drain(..) {
        if invocation.is_abandoned() {
            // Its packet ended while the call waited to cross (cancelled,
            // past its deadline): work that has not started never starts.
            continue;
        }
        if state.is_none() {
            invocation
                .refuse(PfError::new(ErrorCode::Unavailable, "the JS reactor object was garbage-collected"));
            continue;
        }
        // No borrow is held while values are converted: creating JS values
        // can run user code (a setter on Object.prototype) that re-enters.
        let token = local.borrow_mut().token();
        let (converted, running, to) = match invocation {
            Invocation::Call { slot, data, ctx, reply } => {
                let converted =
                    call_args(env, slot, token, &data, &ctx, now).map(|entry| calls.extend(entry));
                (converted, Running::Call { ctx, reply }, "handler")
            }
            Invocation::Turn { slot, message, state, ctx, reply } => {
                let converted =
                    turn_args(env, slot, token, &message, &state, &ctx, now).map(|entry| turns.extend(entry));
                (converted, Running::Turn { ctx, reply }, "actor behaviour")
            }
        };
        match converted {
            Ok(()) => {
                let mut local = local.borrow_mut();
                local.running.insert(token, running);
                local.sweep();
            }
            Err(_) => {
                js::take_exception(env);
                running.fail(PfError::failed(format!("the packet could not be passed to the JS {to}")));
            }
        }
    }
    local.borrow_mut().spare_invocations = items;
    let Some(state) = state else { return Ok(true) };
    let (dispatch_fn, turn_fn) = {
        let local = local.borrow();
        (local.dispatch_fn.borrow_back(env)?, local.turn_fn.borrow_back(env)?)
    };
    if !calls.is_empty() {
        call_in_chunks(&dispatch_fn, state, &mut calls, INVOCATION_STRIDE)?;
    }
    if !turns.is_empty() {
        call_in_chunks(&turn_fn, state, &mut turns, TURN_STRIDE)?;
    }
    Ok(true)
}

/// What every JS invocation gets: `slot, token, data, packetId | undefined,
/// traceId | undefined, metadata | null, remainingMs` (`packetId` is
/// undefined for a turn whose id is made on first read, `traceId` when the
/// packet started its trace).
fn call_args<'env>(
    env: &'env Env,
    slot: u32,
    token: u64,
    data: &Value,
    ctx: &Context,
    now: tokio::time::Instant,
) -> NapiResult<[Unknown<'env>; INVOCATION_STRIDE]> {
    let remaining = ctx.deadline().saturating_duration_since(now);
    // A turn's id that does not exist yet is made only if JS reads it
    // (`contextPacketId`); an id the trace started from is not repeated.
    let packet_id = match ctx.existing_packet_id() {
        Some(id) => js::unknown(env, id.as_str())?,
        None => js::unknown(env, ())?,
    };
    let trace = match ctx.inherited_trace_id() {
        Some(trace_id) => js::unknown(env, trace_id)?,
        None => js::unknown(env, ())?,
    };
    let metadata = match ctx.metadata() {
        Some(m) => object_to_js(env, m)?,
        None => js::unknown(env, Null)?,
    };
    Ok([
        js::unknown(env, slot as f64)?,
        js::unknown(env, token as f64)?,
        to_js(env, data)?,
        packet_id,
        trace,
        metadata,
        js::unknown(env, remaining.as_secs_f64() * 1000.0)?,
    ])
}

/// A turn's arguments: a call's (the message as `data`), then the state
/// before the turn and the actor's id (JS knows its type from the slot).
fn turn_args<'env>(
    env: &'env Env,
    slot: u32,
    token: u64,
    message: &Value,
    state: &Value,
    ctx: &ActorContext,
    now: tokio::time::Instant,
) -> NapiResult<[Unknown<'env>; TURN_STRIDE]> {
    let [a, b, c, d, e, f, g] = call_args(env, slot, token, message, ctx, now)?;
    Ok([a, b, c, d, e, f, g, to_js(env, state)?, js::unknown(env, ctx.actor().id())?])
}

/// Where a turn's mailbox is polled: on the JS thread inside one of the
/// binding's entries (a native method called from JS, or the threadsafe
/// function's callback), where JS may be called. Entries nest (a handler
/// calls back into the binding); the innermost one counts.
struct Here {
    env: Env,
    shared: *const Shared,
    local: LocalRef,
    kind: Entry,
}

/// What an entry does before it returns, which decides whether work
/// queued inside it needs a threadsafe call to be seen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Polls the woken tasks before it returns (a native method that
    /// starts or finishes work): a task woken inside it is polled there.
    Polls,
    /// Polls the woken tasks, then passes the queued invocations to the
    /// JS dispatcher (a socket's readiness, from the event loop: see
    /// [`on_socket_ready`]): an invocation queued inside it is dispatched
    /// there too.
    PollsAndDispatches,
    /// Neither by itself (the threadsafe function's callback, whose
    /// polling is an entry of its own).
    Other,
}

thread_local! {
    static HERE: RefCell<Vec<Here>> = const { RefCell::new(Vec::new()) };
    /// Turns that may still run in place in the outermost entry.
    static TURNS_LEFT: Cell<u32> = const { Cell::new(0) };
    /// Turns running in place on this thread's stack now.
    static TURN_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Leaves the entry [`Here::enter`] recorded.
pub struct HereGuard;

/// Records a native call from JS that polls the ready tasks before it
/// returns ([`poll_ready`]) and wakes tasks before that (`complete`
/// answering handlers, `cancel`): what it wakes is only queued, with no
/// threadsafe call. Keep the guard until the call returns.
pub fn polling_entry(env: &Env, shared: &Shared, local: &LocalRef) -> HereGuard {
    Here::enter(env, shared, local, Entry::Polls)
}

impl Here {
    /// Records that the JS thread is inside an entry of reactor `shared`
    /// that does what `kind` says before it returns.
    fn enter(env: &Env, shared: &Shared, local: &LocalRef, kind: Entry) -> HereGuard {
        HERE.with_borrow_mut(|stack| {
            if stack.is_empty() {
                TURNS_LEFT.set(TURNS_IN_PLACE_PER_ENTRY);
            }
            stack.push(Here { env: *env, shared, local: local.clone(), kind });
        });
        HereGuard
    }
}

impl Drop for HereGuard {
    fn drop(&mut self) {
        let Some(here) = HERE.with_borrow_mut(|stack| stack.pop()) else { return };
        if here.kind == Entry::Other {
            return;
        }
        // SAFETY: the reactor outlives every entry into it (the entry's
        // caller holds it).
        let shared = unsafe { &*here.shared };
        // Work queued without a threadsafe call after the entry's last look
        // (an answer dropped while invocations were dispatched wakes its
        // task, say) still gets one.
        let dispatches = here.kind == Entry::PollsAndDispatches;
        if !shared.ready.lock().is_empty() || (dispatches && !shared.invocations.lock().is_empty()) {
            shared.schedule();
        }
    }
}

/// Whether the JS thread is, right now, directly inside an entry of
/// reactor `shared` that will itself poll what is woken (and, with
/// `dispatching`, dispatch what is invoked) before it returns: such work
/// needs no threadsafe call. False off the JS thread.
fn inside_entry_that_takes(shared: &Shared, dispatching: bool) -> bool {
    HERE.try_with(|stack| {
        let Ok(stack) = stack.try_borrow() else { return false };
        stack.last().is_some_and(|here| {
            ptr::eq(here.shared, shared)
                && match here.kind {
                    Entry::PollsAndDispatches => true,
                    Entry::Polls => !dispatching,
                    Entry::Other => false,
                }
        })
    })
    .unwrap_or(false)
}

/// The environment and JS-thread half of reactor `shared`, when the
/// calling thread is inside one of its entries (anywhere on the stack).
pub fn entry_of(shared: &Shared) -> Option<(Env, LocalRef)> {
    HERE.try_with(|stack| {
        let stack = stack.try_borrow().ok()?;
        stack
            .iter()
            .rev()
            .find(|here| ptr::eq(here.shared, shared))
            .map(|here| (here.env, here.local.clone()))
    })
    .ok()
    .flatten()
}

/// How a turn offered to [`turn_in_place`] went.
enum InPlace {
    /// It ran and ended (returned, threw, or could not be passed to JS).
    Done(TurnResult),
    /// The method returned a Promise: its answer comes through `complete`.
    Later(oneshot::Receiver<TurnResult>),
    /// It cannot run here (not inside an entry of this reactor on the JS
    /// thread, or past the budget): it crosses as an invocation.
    NotHere(TurnInput),
}

/// Runs an actor turn of reactor `shared` on the JS thread, at once, when
/// this thread is inside one of that reactor's entries.
fn turn_in_place(shared: &Shared, slot: u32, input: TurnInput) -> InPlace {
    let here = HERE.with_borrow(|stack| {
        stack.last().filter(|h| ptr::eq(h.shared, shared)).map(|h| (h.env, h.local.clone()))
    });
    let Some((env, local)) = here else { return InPlace::NotHere(input) };
    if TURNS_LEFT.get() == 0 || TURN_DEPTH.get() >= MAX_TURN_NESTING {
        return InPlace::NotHere(input);
    }
    TURNS_LEFT.set(TURNS_LEFT.get() - 1);
    let scope = js::HandleScope::open(&env);
    let function = {
        let local = local.borrow();
        match (local.state.get(&env), local.run_turn_fn.borrow_back(&env)) {
            (Some(state), Ok(function)) => Some((state, function)),
            _ => None,
        }
    };
    // A collected JS reactor: the invocation path refuses the turn.
    let Some((state, function)) = function else {
        drop(scope);
        return InPlace::NotHere(input);
    };
    let TurnInput { message, state: actor_state, ctx, .. } = input;
    let token = local.borrow_mut().token();
    let args = match turn_args(&env, slot, token, &message, &actor_state, &ctx, tokio::time::Instant::now()) {
        Ok(args) => args,
        Err(_) => {
            js::take_exception(&env);
            let error = PfError::failed("the packet could not be passed to the JS actor behaviour");
            return InPlace::Done(Err(error));
        }
    };
    let mut spread = Spread::with_capacity(1 + TURN_STRIDE);
    spread.push(state);
    spread.extend(args);
    let (reply, answer) = oneshot::channel();
    {
        let mut local = local.borrow_mut();
        local.running.insert(token, Running::Turn { ctx, reply });
        local.sweep();
    }
    TURN_DEPTH.set(TURN_DEPTH.get() + 1);
    let returned = function.call(spread);
    TURN_DEPTH.set(TURN_DEPTH.get() - 1);
    let outcome = match returned {
        // SAFETY: a value of the handle scope opened above, read before it closes.
        Ok(value) => unsafe { Unknown::from_raw_unchecked(env.raw(), value.raw()) },
        Err(_) => {
            // A bug in index.js (user code never throws out of `runTurn`).
            js::take_exception(&env);
            local.borrow_mut().running.remove(&token);
            return InPlace::Done(Err(PfError::failed("the JS actor behaviour could not be called")));
        }
    };
    if outcome.get_type().ok() == Some(ValueType::Undefined) {
        return InPlace::Later(answer);
    }
    // Ended: nobody answers through the table any more.
    local.borrow_mut().running.remove(&token);
    InPlace::Done(returned_turn(&env, &outcome).map(|(reply, state, stopped)| TurnOutput {
        reply: if stopped { Reply::Stop(reply) } else { Reply::Value(reply) },
        state,
    }))
}

/// Reads what `runTurn` returned for a turn that ended: `[reply, state,
/// stopped, replyText, stateText]` (a text, when it is one, is the value
/// as JSON: see `jsonText` in index.js), or `[code, error]` for a throw.
fn returned_turn<'env>(env: &'env Env, returned: &Unknown<'env>) -> Result<(Value, Value, bool), PfError> {
    let unreadable = |_| PfError::failed("the JS actor behaviour's answer could not be read");
    let array = js::as_object(returned);
    let len = array.get_array_length_unchecked().map_err(unreadable)?;
    let item = |i| array.get_element::<Unknown>(i).map_err(unreadable);
    if len != 5 {
        return Err(thrown_error(env, &item(0)?, &item(1)?).map_err(unreadable)?);
    }
    let stopped = js::read_bool(&item(2)?).map_err(unreadable)?;
    let mut from_js = FromJs::new(env);
    turn_outcome(env, &mut from_js, [item(0)?, item(3)?], [item(1)?, item(4)?], stopped)
}

/// A returned turn's outcome: its reply and state as JSON values, each
/// given as `[value, text]` (the text, when it is a string, is the value
/// as JSON: see `jsonText` in index.js); a value JSON cannot carry fails
/// the turn, naming where it was.
pub fn turn_outcome<'env>(
    env: &Env,
    from_js: &mut FromJs<'env>,
    [reply, reply_text]: [Unknown<'env>; 2],
    [state, state_text]: [Unknown<'env>; 2],
    stopped: bool,
) -> Result<(Value, Value, bool), PfError> {
    let reply = from_js
        .convert_or_text(reply, &reply_text)
        .map_err(|e| PfError::failed(convert_error_text(env, e, "result")))?;
    let state = from_js
        .convert_or_text(state, &state_text)
        .map_err(|e| PfError::failed(convert_error_text(env, e, "context.state")))?;
    Ok((reply, state, stopped))
}

/// The error of a handler or turn that threw or rejected: the thrown
/// `PacketFlowError`'s code (`code` is `undefined` for anything else:
/// PF500) and the error's message.
pub fn thrown_error(env: &Env, code: &Unknown<'_>, error: &Unknown<'_>) -> NapiResult<PfError> {
    let code = match code.get_type()? {
        ValueType::String => js::read_string(code)?,
        _ => ErrorCode::HandlerFailed.as_str().to_owned(),
    };
    Ok(PfError { code, message: exception_text(env, error) })
}
