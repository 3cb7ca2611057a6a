//! Handler invocations: the core calls a registered handler (or runs a
//! turn of an actor type, see [`crate::actor`]), the NIF sends
//! `{:pf_call, handler_id, input, packet_id, metadata, token}` to an idle
//! worker of the reactor's [`Pool`] (or to its dispatcher, which starts
//! one); the worker runs the Elixir code registered under `handler_id` and
//! answers through `reply_ok`, `reply_failed` or `reply_error` (a turn
//! through `actor::reply_turn`).
//!
//! The context's `token` is an [`Invocation`] resource sharing an
//! [`Exchange`] with the waiting core task. If the handler's process dies
//! without answering, the last reference to the token goes with it and its
//! drop answers the packet PF500, so nothing waits for a dead process. If
//! the core stops waiting first (the packet was cancelled, its deadline
//! passed, its reactor stopped: the core drops the handler's future), the
//! worker is sent `{:packetflow_cancelled, packet_id}`, at most once and
//! only while it runs that call (see [`Exchange`]).
//!
//! A packet runs the registration it was routed to (docs/protocol.md): each
//! registration has a handler id of its own, never reused, and its function
//! stays with the dispatcher while the core still routes to it or one of
//! its calls is unanswered. Both hold its [`Registration`]; when the last
//! one lets go, the dispatcher is told to forget the function
//! (`{:pf_forget, handler_id}`).
//!
//! Where a call leaves from: a call made inside a NIF of this library
//! (a submit, a reply that lets the next queued packet start, a connection
//! polled by the dispatcher) waits in this thread's outbox and leaves with
//! the NIF's environment as it ends, all of them in one pass over the idle
//! stack; a call made anywhere else (a deadline freeing a slot on the
//! runtime's thread) is queued with the dispatcher, which routes it from a
//! scheduler.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use packetflow::actor::TurnOutput;
use packetflow::{ActorRef, Context, Handler, PacketId, PfError, Value};
use parking_lot::Mutex;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};

use crate::exec::inline::{self, Outbox};
use crate::exec::{send_from, Home, Runnable};
use crate::pool::{Pool, WorkerCall};
use crate::{atoms, convert, runtime};

static LIVE: AtomicU64 = AtomicU64::new(0);

/// What a worker answers: a handler's value, or a turn's reply and state.
pub enum Answer {
    /// A handler's result data.
    Value(Value),
    /// An actor turn's reply, and the actor's state after it.
    Turn(TurnOutput),
}

/// What the waiting core task receives.
pub type Outcome = Result<Answer, PfError>;

/// One handler call waiting for its answer: the token its worker holds.
pub struct Invocation {
    exchange: Arc<Exchange>,
    /// Where the worker that answers goes back to.
    pool: Arc<Pool>,
}

#[rustler::resource_impl]
impl Resource for Invocation {}

// A NIF that panics is turned into an exception by rustler; the state here
// stays consistent across such a panic (parking_lot locks do not poison).
impl std::panic::RefUnwindSafe for Invocation {}

impl Drop for Invocation {
    /// The worker's process let go of the token (it ended, or it was never
    /// delivered): a call still open fails, since nothing will answer it.
    fn drop(&mut self) {
        let (waker, registration) = self.exchange.settle(|| Err(abandoned()));
        drop(registration);
        if let Some(waker) = waker {
            waker.wake();
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Invocation {
    /// The core's context of the packet being handled.
    pub fn context(&self) -> &Context {
        &self.exchange.ctx
    }

    /// Whether the handler answered.
    pub fn answered(&self) -> bool {
        self.exchange.state.lock().replied
    }

    /// Whether the packet ended without this call's answer (cancelled,
    /// past its deadline, its reactor stopped): the worker was, or is
    /// about to be, told with `{:packetflow_cancelled, packet_id}`.
    pub fn cancelled(&self) -> bool {
        self.exchange.state.lock().phase == Phase::Withdrawn
    }

    /// The process that polls this reactor's jobs woken off the schedulers.
    pub fn home(&self) -> &Arc<Home> {
        self.pool.home()
    }

    /// The calling process runs this call (a worker the dispatcher started
    /// for it): it is told if the packet ends without its answer.
    pub fn bind(&self, env: Env) {
        self.exchange.assign(env.pid());
    }

    /// Answers the call. When `idle`, the calling process is a pool worker
    /// that takes calls again from now on.
    pub fn answer(&self, env: Env, idle: bool, outcome: Outcome) {
        // Marked replied before the worker goes back on the stack: no
        // notice for this call can follow it into its next call.
        let (waker, registration) = self.exchange.reply(outcome);
        if idle {
            self.pool.push(env.pid());
        }
        // Woken inside the scope, so the waiting task (and whatever the
        // answer lets start, which goes to this warm worker) runs here.
        inline::run(env, || {
            drop(registration);
            if let Some(waker) = waker {
                waker.wake();
            }
        });
    }
}

/// Where a call stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nobody answered, and the core waits.
    Open,
    /// Answered (by the worker, or PF500 when its token was freed); the
    /// outcome waits in the exchange until the core takes it.
    Answered,
    /// The core stopped waiting first (the packet was cancelled, its
    /// deadline passed, its reactor stopped): the worker is told.
    Withdrawn,
}

/// The meeting point of a call's two sides: the worker that answers
/// through its token, and the core task that waits ([`Waiting`]). One
/// lock orders an answer, a withdrawal and the worker's assignment, so a
/// worker is told of a withdrawn call at most once, and only while it still
/// runs that call: the notice is in its mailbox before its reply returns,
/// hence before its next call.
struct Exchange {
    state: Mutex<ExchangeState>,
    /// The phase is no longer Open (set under the lock): lets the token's
    /// drop, at the worker's garbage collection, skip the lock.
    settled: AtomicBool,
    ctx: Context,
}

struct ExchangeState {
    phase: Phase,
    /// Set when answered, until the core takes it.
    outcome: Option<Outcome>,
    /// The core task waiting for the outcome.
    waker: Option<Waker>,
    /// The registration the call runs, let go of when the call ends.
    registration: Option<Arc<Registration>>,
    /// The worker that received the call, once it is known.
    worker: Option<LocalPid>,
    /// The worker replied (whatever became of its answer).
    replied: bool,
}

type Settled = (Option<Waker>, Option<Arc<Registration>>);

impl Exchange {
    /// Ends an open call with `outcome()`: the waker to wake and the
    /// registration to let go of, both outside the lock.
    fn settle(&self, outcome: impl FnOnce() -> Outcome) -> Settled {
        if self.settled.load(Ordering::Acquire) {
            return (None, None);
        }
        let mut st = self.state.lock();
        if st.phase != Phase::Open {
            return (None, None);
        }
        self.answered(&mut st, outcome())
    }

    /// The worker's answer (ignored when the call ended already).
    fn reply(&self, outcome: Outcome) -> Settled {
        let mut st = self.state.lock();
        st.replied = true;
        if st.phase != Phase::Open {
            return (None, None);
        }
        self.answered(&mut st, outcome)
    }

    fn answered(&self, st: &mut ExchangeState, outcome: Outcome) -> Settled {
        st.phase = Phase::Answered;
        self.settled.store(true, Ordering::Release);
        st.outcome = Some(outcome);
        (st.waker.take(), st.registration.take())
    }

    /// `worker` received the call. If the core stopped waiting before that
    /// was known, the worker is told now.
    fn assign(&self, worker: LocalPid) {
        let mut st = self.state.lock();
        st.worker = Some(worker);
        if st.phase == Phase::Withdrawn && !st.replied {
            self.notify(&worker);
        }
    }

    /// The core stopped waiting before an answer: the call ends, and its
    /// worker, if known and still on it, is told (under the lock, so before
    /// its reply can return).
    fn withdraw(&self) {
        let mut st = self.state.lock();
        if st.phase != Phase::Open {
            return;
        }
        st.phase = Phase::Withdrawn;
        self.settled.store(true, Ordering::Release);
        let registration = st.registration.take();
        if let (Some(worker), false) = (st.worker, st.replied) {
            self.notify(&worker);
        }
        drop(st);
        drop(registration);
    }

    /// `{:packetflow_cancelled, packet_id}` to `worker`, at once.
    fn notify(&self, worker: &LocalPid) {
        let id = self.ctx.packet_id();
        let sent = inline::send_now(worker, |env| notice(env, id));
        if sent.is_none() {
            // No environment to send with here (never on this binding's
            // paths: the core drops a handler's future while a NIF of this
            // library polls it, or on the runtime's thread). Sent from the
            // runtime instead, so later than the lock: the notice still
            // names its packet.
            let (worker, id) = (*worker, id.clone());
            runtime::handle().spawn(async move {
                let _ = OwnedEnv::new().send_and_clear(&worker, |env| notice(env, &id));
            });
        }
    }

    /// The outcome if answered, else the waker is kept.
    fn poll(&self, waker: &Waker) -> Poll<Outcome> {
        let mut st = self.state.lock();
        match st.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                match &st.waker {
                    Some(kept) if kept.will_wake(waker) => {}
                    _ => st.waker = Some(waker.clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// The cancellation notice a worker receives.
fn notice<'a>(env: Env<'a>, id: &PacketId) -> Term<'a> {
    (atoms::packetflow_cancelled(), id.as_str()).encode(env)
}

/// The core's side of a call: resolves with the worker's answer. Dropped
/// before that (the core's way of cancelling a handler), it withdraws the
/// call, which tells the worker.
struct Waiting {
    exchange: Arc<Exchange>,
    done: bool,
}

impl Future for Waiting {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        let answer = self.exchange.poll(cx.waker());
        if answer.is_ready() {
            self.done = true;
        }
        answer
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.done {
            self.exchange.withdraw();
        }
    }
}

/// What the worker's code is given besides the context.
pub enum Input {
    /// A handler's data.
    Data(Value),
    /// An actor's turn: `{message_type, message, state, actor_type, actor_id}`.
    Turn { message_type: String, message: Value, state: Value, actor: ActorRef },
}

impl Input {
    fn term<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Input::Data(data) => convert::to_term(env, data),
            Input::Turn { message_type, message, state, actor } => (
                message_type.as_str(),
                convert::to_term(env, message),
                convert::to_term(env, state),
                actor.actor_type(),
                actor.id(),
            )
                .encode(env),
        }
    }
}

/// A handler call on its way to a worker.
pub struct Call {
    handler_id: u64,
    input: Input,
    token: ResourceArc<Invocation>,
}

impl Call {
    /// `(handler_id, input, packet_id, metadata, token)`; the worker makes
    /// the `%PacketFlow.Context{}` from them.
    fn terms<'a>(&self, env: Env<'a>) -> (u64, Term<'a>, Term<'a>, Term<'a>, Term<'a>) {
        let ctx = self.token.context();
        let metadata = match ctx.metadata() {
            Some(m) => convert::object_to_term(env, m),
            None => atoms::nil().encode(env),
        };
        let packet_id = ctx.packet_id().as_str().encode(env);
        (self.handler_id, self.input.term(env), packet_id, metadata, self.token.encode(env))
    }
}

impl WorkerCall for Call {
    fn sent_to(&self, worker: &LocalPid) {
        self.token.exchange.assign(*worker);
    }

    /// `{:pf_call, handler_id, input, packet_id, metadata, token}`.
    fn message<'a>(&self, env: Env<'a>) -> Term<'a> {
        let (id, data, packet_id, metadata, token) = self.terms(env);
        (atoms::pf_call(), id, data, packet_id, metadata, token).encode(env)
    }

    /// `{handler_id, input, packet_id, metadata, token}`.
    fn spilled<'a>(&self, env: Env<'a>) -> Term<'a> {
        self.terms(env).encode(env)
    }
}

/// The core handler of one registration of an Elixir function (handler id
/// `handler_id`, which the dispatcher maps to the function): it hands each
/// call to the reactor's worker pool and waits for the answer.
pub fn handler(handler_id: u64, pool: Arc<Pool>) -> Handler {
    let registration = Registration::new(handler_id, &pool);
    Handler::from_async(move |data, ctx| {
        let answer = invoke(&registration, ctx, Input::Data(data));
        async move {
            match answer.await? {
                Answer::Value(value) => Ok(value),
                Answer::Turn(_) => Err(mismatched()),
            }
        }
    })
}

/// Hands one call of `registration` to a worker of its pool; the future
/// resolves with the worker's answer (PF500 if its process ends without
/// one). Dropping it first tells the worker (see [`Exchange`]).
pub fn invoke(
    registration: &Arc<Registration>,
    ctx: Context,
    input: Input,
) -> impl Future<Output = Outcome> + Send + 'static {
    LIVE.fetch_add(1, Ordering::Relaxed);
    let pool = &registration.pool;
    let state = ExchangeState {
        phase: Phase::Open,
        outcome: None,
        waker: None,
        registration: Some(Arc::clone(registration)),
        worker: None,
        replied: false,
    };
    let exchange = Arc::new(Exchange { state: Mutex::new(state), settled: AtomicBool::new(false), ctx });
    let token = ResourceArc::new(Invocation { exchange: Arc::clone(&exchange), pool: Arc::clone(pool) });
    send(pool, Call { handler_id: registration.handler_id, input, token });
    Waiting { exchange, done: false }
}

/// One registration of Elixir code (a handler function, an actor type's
/// module), held by what the core routes to and by each unanswered call;
/// the dispatcher needs its code until it is dropped.
pub struct Registration {
    handler_id: u64,
    pool: Arc<Pool>,
}

impl Registration {
    /// The registration the dispatcher knows as `handler_id`, whose calls
    /// go to `pool`'s workers.
    pub fn new(handler_id: u64, pool: &Arc<Pool>) -> Arc<Registration> {
        Arc::new(Registration { handler_id, pool: Arc::clone(pool) })
    }
}

impl Drop for Registration {
    /// Tells the dispatcher to forget the function, from a scheduler (this
    /// runs wherever the last holder lets go: a reply NIF, the runtime's
    /// thread, a garbage collection).
    fn drop(&mut self) {
        let home = self.pool.home();
        let forget = Arc::new(Forget { handler_id: self.handler_id, home: Arc::clone(home) });
        home.defer(forget);
    }
}

/// `{:pf_forget, handler_id}` on its way to the dispatcher.
struct Forget {
    handler_id: u64,
    home: Arc<Home>,
}

impl Runnable for Forget {
    fn run_inline(self: Arc<Self>, env: Env) {
        send_from(env, self.home.process(), |m| (atoms::pf_forget(), self.handler_id).encode(m));
    }

    /// The dispatcher is gone, and its functions with it.
    fn run_later(self: Arc<Self>) {}

    fn defer(self: Arc<Self>) {
        let home = Arc::clone(&self.home);
        home.defer(self);
    }

    fn lazy(&self) -> bool {
        true
    }
}

/// What a handler's answer becomes when its process ended without one.
pub fn abandoned() -> PfError {
    PfError::failed("the handler's process ended without answering")
}

/// A worker answered a handler call as a turn or the other way round
/// (never, with this package's Elixir code).
pub fn mismatched() -> PfError {
    PfError::failed("the answer does not fit the call (a handler's value or an actor's turn)")
}

thread_local! {
    /// Calls made in the running NIF, by pool.
    static OUTGOING: RefCell<Vec<(Arc<Pool>, Call)>> = const { RefCell::new(Vec::new()) };
}

static CALLS: Outbox = Outbox { send: send_outgoing, abandon: defer_outgoing };

/// Sends `call` to a worker of `pool`: with the running NIF's environment
/// as it ends, or through the dispatcher when no NIF of this library runs.
fn send(pool: &Arc<Pool>, call: Call) {
    if !inline::active() {
        return defer(pool, call);
    }
    let first = OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        o.push((Arc::clone(pool), call));
        o.len() == 1
    });
    if first {
        inline::at_end(&CALLS);
    }
}

/// Sends the calls made in this NIF to their pools' workers (there is
/// normally one pool).
fn send_outgoing(env: Env) {
    let mut calls = OUTGOING.with(|o| std::mem::take(&mut *o.borrow_mut()));
    while !calls.is_empty() {
        let pool = Arc::clone(&calls[0].0);
        let (mine, rest): (Vec<_>, Vec<_>) = calls.into_iter().partition(|(p, _)| Arc::ptr_eq(p, &pool));
        calls = rest;
        pool.route(env, mine.into_iter().map(|(_, call)| call));
    }
}

/// The NIF panicked before sending its calls: their dispatchers route them.
fn defer_outgoing() {
    for (pool, call) in OUTGOING.with(|o| std::mem::take(&mut *o.borrow_mut())) {
        defer(&pool, call);
    }
}

fn defer(pool: &Arc<Pool>, call: Call) {
    let late = Arc::new(LateCall { pool: Arc::clone(pool), call: Mutex::new(Some(call)) });
    pool.home().defer(late);
}

/// A call made off the schedulers, waiting for the dispatcher to route it.
struct LateCall {
    pool: Arc<Pool>,
    call: Mutex<Option<Call>>,
}

impl Runnable for LateCall {
    fn run_inline(self: Arc<Self>, env: Env) {
        if let Some(call) = self.call.lock().take() {
            self.pool.route(env, Some(call));
        }
    }

    /// The dispatcher is gone: the call is dropped, and freeing its token
    /// answers PF500 (the core answered PF503 first if the reactor stopped).
    fn run_later(self: Arc<Self>) {
        self.call.lock().take();
    }

    fn defer(self: Arc<Self>) {
        let home = Arc::clone(self.pool.home());
        home.defer(self);
    }

    fn lazy(&self) -> bool {
        true
    }
}

/// Answers an invocation with the handler's value. A value that cannot
/// cross as JSON answers PF500 naming its type and path instead. `idle`:
/// the caller is a pool worker ready for its next call.
#[rustler::nif]
fn reply_ok<'a>(env: Env<'a>, token: ResourceArc<Invocation>, value: Term<'a>, idle: bool) -> rustler::Atom {
    let outcome = convert::to_value(value)
        .map(Answer::Value)
        .map_err(|bad| PfError::failed(bad.describe("the handler's result")));
    token.answer(env, idle, outcome);
    atoms::ok()
}

/// Answers an invocation with a handler failure (PF500) and `message`.
#[rustler::nif]
fn reply_failed(env: Env, token: ResourceArc<Invocation>, message: String, idle: bool) -> rustler::Atom {
    token.answer(env, idle, Err(PfError::failed(message)));
    atoms::ok()
}

/// Answers an invocation with an error the handler chose, code included
/// (passing on the error of a child call, for instance).
#[rustler::nif]
fn reply_error(
    env: Env,
    token: ResourceArc<Invocation>,
    code: String,
    message: String,
    idle: bool,
) -> rustler::Atom {
    token.answer(env, idle, Err(PfError { code, message }));
    atoms::ok()
}

/// The calling process, a worker the dispatcher started for this call,
/// runs it: told `{:packetflow_cancelled, packet_id}` if the packet ends
/// without its answer (at once, if it ended already).
#[rustler::nif]
fn invocation_bind(env: Env, token: ResourceArc<Invocation>) -> rustler::Atom {
    token.bind(env);
    atoms::ok()
}

/// Invocations not yet dropped (for tests of resource cleanup).
#[rustler::nif]
fn live_invocations() -> u64 {
    LIVE.load(Ordering::Relaxed)
}
