//! The bridge between the core's threads and the JS thread.
//!
//! Two kinds of work cross to the JS thread:
//! - **handler invocations**: a packet reached a handler written in JS;
//! - **ready tasks**: a Promise made by the binding (`submit`, `call`,
//!   `ctx.call`) has a core future that can make progress.
//!
//! A submit from JS never hops threads: its core future is a [`Task`] polled
//! on the JS thread (first inside `submit` itself), and when a handler's
//! answer comes back through `complete`, the woken tasks are polled at once
//! and their Promises settled in the same call. The Tokio runtime only runs
//! timers (deadlines) and, later, the network; a wake-up from there queues
//! the task for the JS thread.
//!
//! Everything queued for the JS thread crosses in one weak threadsafe-function
//! call: a producer pushes its work and makes the call only if none is on
//! its way already (`scheduled`). When the JS thread is idle the first item
//! crosses at once; under load, everything that piles up while JS is busy
//! crosses in the next single call. There is no timer. The invocations of a
//! call go to the JS dispatcher as one flat array; it answers synchronous
//! handlers in one `complete` call and asynchronous ones in one `complete`
//! call per microtask turn.
//!
//! The threadsafe function is weak (unref'd): a reactor never keeps node
//! alive by itself. While a Promise made by the binding is pending, the
//! function is referenced (and the JS reactor object pinned), so node waits
//! for that answer; when the last one settles it is released again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Poll, Wake, Waker};

use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Status};
use packetflow::{Context, HandlerResult, PacketResult, PfError, Value};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::convert::{object_to_js, to_js};
use crate::error::pf_error_to_js;
use crate::js::{self, JsAny, NapiResult};
use crate::runtime;

/// The dispatcher's threadsafe function: weak, and called with plain
/// arguments (`CalleeHandled = false`), never node's `(err, value)`.
pub type Tsfn = ThreadsafeFunction<(), JsAny, FnArgs<(JsAny, JsAny)>, Status, false, true, 0>;

/// Entries per invocation in the array handed to the JS dispatcher:
/// `slot, token, data, packetId, traceId | undefined, metadata | null, remainingMs`.
pub const INVOCATION_STRIDE: u32 = 7;

/// Rounds of polling woken tasks in one go before yielding to the event
/// loop (a task woken again while it is polled goes to the next round).
const MAX_POLL_ROUNDS: usize = 64;

/// A Promise's resolver; only ever used on the JS thread that made it.
pub struct Deferred(pub sys::napi_deferred);

// SAFETY: the pointer is only carried by other threads, never dereferenced
// there; it is resolved or rejected on the JS thread that created it.
unsafe impl Send for Deferred {}

/// What a settled Promise resolves to.
pub enum Answer {
    /// `submit`: resolves to a `Result` object.
    Result(PacketResult),
    /// `call` and `ctx.call`: resolves to the data, or rejects.
    Data(Result<Value, PfError>),
}

/// A packet waiting for its JS handler.
pub struct Invocation {
    pub slot: u32,
    pub data: Value,
    pub ctx: Context,
    pub reply: oneshot::Sender<HandlerResult>,
}

type AnswerFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

struct TaskState {
    future: Option<AnswerFuture>,
    deferred: Option<Deferred>,
}

/// A core future behind a binding Promise, polled only on the JS thread.
pub struct Task {
    state: Mutex<TaskState>,
    /// In the ready queue already: a second wake adds nothing.
    queued: AtomicBool,
    shared: Weak<Shared>,
}

impl Task {
    pub fn new(shared: &Arc<Shared>, future: AnswerFuture, deferred: Deferred) -> Arc<Task> {
        Arc::new(Task {
            state: Mutex::new(TaskState { future: Some(future), deferred: Some(deferred) }),
            queued: AtomicBool::new(false),
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
            shared.schedule();
        }
    }
}

/// The thread-safe half: the queues and the threadsafe function.
pub struct Shared {
    invocations: Mutex<Vec<Invocation>>,
    ready: Mutex<Vec<Arc<Task>>>,
    /// A threadsafe call is on its way and will empty the queues.
    scheduled: AtomicBool,
    /// The environment is gone: nothing can cross any more.
    closed: AtomicBool,
    tsfn: OnceLock<Tsfn>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            invocations: Mutex::new(Vec::new()),
            ready: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            tsfn: OnceLock::new(),
        })
    }

    /// Queues a handler invocation for the JS thread; callable from any thread.
    pub fn invoke(&self, invocation: Invocation) {
        if self.closed.load(Ordering::Acquire) {
            // Dropping the invocation drops its reply sender: PF503.
            return;
        }
        self.invocations.lock().push(invocation);
        self.schedule();
    }

    /// Makes sure a threadsafe call is on its way.
    fn schedule(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
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

    pub fn set_tsfn(&self, tsfn: Tsfn) {
        let _ = self.tsfn.set(tsfn);
    }

    fn raw_tsfn(&self) -> Option<sys::napi_threadsafe_function> {
        let tsfn = self.tsfn.get()?;
        (!tsfn.aborted()).then(|| tsfn.raw())
    }
}

/// A JS handler that is running.
pub struct Running {
    pub reply: oneshot::Sender<HandlerResult>,
    pub ctx: Context,
}

/// The JS-thread half: references into the JS heap and the table of
/// running handlers. Never leaves the JS thread (it is `Rc<RefCell<_>>`).
pub struct Local {
    pub env: sys::napi_env,
    /// The `PacketFlowError` class (strong reference).
    error_class: sys::napi_ref,
    /// The JS reactor's dispatch state: weak while idle, strong while busy.
    state: sys::napi_ref,
    /// Promises made by this reactor that are not settled yet.
    busy: u32,
    /// Promises of `stop()` callers waiting for `busy` to reach zero.
    idle_waiters: Vec<Deferred>,
    pub running: HashMap<u64, Running>,
    next_token: u64,
    spare_invocations: Vec<Invocation>,
    spare_tasks: Vec<Arc<Task>>,
    shared: Weak<Shared>,
}

pub type LocalRef = Rc<RefCell<Local>>;

impl Local {
    pub unsafe fn new(
        env: sys::napi_env,
        error_class: sys::napi_value,
        state: sys::napi_value,
        shared: &Arc<Shared>,
    ) -> NapiResult<Local> {
        let mut class_ref = ptr::null_mut();
        js::check(sys::napi_create_reference(env, error_class, 1, &mut class_ref))?;
        let mut state_ref = ptr::null_mut();
        js::check(sys::napi_create_reference(env, state, 0, &mut state_ref))?;
        Ok(Local {
            env,
            error_class: class_ref,
            state: state_ref,
            busy: 0,
            idle_waiters: Vec::new(),
            running: HashMap::new(),
            next_token: 1,
            spare_invocations: Vec::new(),
            spare_tasks: Vec::new(),
            shared: Arc::downgrade(shared),
        })
    }

    pub unsafe fn error_class(&self) -> NapiResult<sys::napi_value> {
        js::deref(self.env, self.error_class).ok_or_else(|| napi::Error::from_reason("PacketFlowError class is gone"))
    }

    /// A new Promise that this reactor will settle; node stays alive until it is.
    pub unsafe fn promise(&mut self) -> NapiResult<(Deferred, sys::napi_value)> {
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        js::check(sys::napi_create_promise(self.env, &mut deferred, &mut promise))?;
        if self.busy == 0 {
            self.hold(true);
        }
        self.busy += 1;
        Ok((Deferred(deferred), promise))
    }

    /// A Promise resolved once no Promise of this reactor is pending.
    pub unsafe fn idle(&mut self) -> NapiResult<sys::napi_value> {
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        js::check(sys::napi_create_promise(self.env, &mut deferred, &mut promise))?;
        if self.busy == 0 {
            sys::napi_resolve_deferred(self.env, deferred, js::undefined(self.env));
        } else {
            self.idle_waiters.push(Deferred(deferred));
        }
        Ok(promise)
    }

    /// References (or releases) the threadsafe function and the JS state,
    /// so that node waits for pending answers and no longer.
    unsafe fn hold(&mut self, on: bool) {
        let env = self.env;
        if let Some(raw) = self.shared.upgrade().and_then(|s| s.raw_tsfn()) {
            if on {
                sys::napi_ref_threadsafe_function(env, raw);
            } else {
                sys::napi_unref_threadsafe_function(env, raw);
            }
        }
        let mut count = 0;
        if on {
            sys::napi_reference_ref(env, self.state, &mut count);
        } else {
            sys::napi_reference_unref(env, self.state, &mut count);
        }
    }

    unsafe fn settled(&mut self) {
        self.busy -= 1;
        if self.busy == 0 {
            self.hold(false);
            for waiter in self.idle_waiters.drain(..) {
                sys::napi_resolve_deferred(self.env, waiter.0, js::undefined(self.env));
            }
        }
    }

    fn token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        unsafe {
            sys::napi_delete_reference(self.env, self.error_class);
            sys::napi_delete_reference(self.env, self.state);
        }
    }
}

/// Property names of a `Result`, made once per batch.
struct ResultKeys {
    packet_id: sys::napi_value,
    status: sys::napi_value,
    data: sys::napi_value,
    error: sys::napi_value,
    duration_ms: sys::napi_value,
    success: sys::napi_value,
    error_status: sys::napi_value,
}

impl ResultKeys {
    unsafe fn new(env: sys::napi_env) -> NapiResult<ResultKeys> {
        Ok(ResultKeys {
            packet_id: js::string(env, "packetId")?,
            status: js::string(env, "status")?,
            data: js::string(env, "data")?,
            error: js::string(env, "error")?,
            duration_ms: js::string(env, "durationMs")?,
            success: js::string(env, "success")?,
            error_status: js::string(env, "error")?,
        })
    }
}

/// `{packetId, status, data, error, durationMs}`: camelCase like the rest
/// of the JS API; `data` is `null` on error and `error` is `null` on success.
unsafe fn result_object(
    env: sys::napi_env,
    keys: &ResultKeys,
    class: sys::napi_value,
    result: &PacketResult,
) -> NapiResult<sys::napi_value> {
    let object = js::new_object(env)?;
    js::set_property(env, object, keys.packet_id, js::string(env, result.packet_id.as_str())?)?;
    let (status, data, error) = match &result.outcome {
        Ok(data) => (keys.success, to_js(env, data)?, js::null(env)),
        Err(e) => (keys.error_status, js::null(env), pf_error_to_js(env, class, e)?),
    };
    js::set_property(env, object, keys.status, status)?;
    js::set_property(env, object, keys.data, data)?;
    js::set_property(env, object, keys.error, error)?;
    js::set_property(env, object, keys.duration_ms, js::double(env, result.duration_ms as f64)?)?;
    Ok(object)
}

unsafe fn settle(
    env: sys::napi_env,
    keys: &mut Option<ResultKeys>,
    class: sys::napi_value,
    deferred: Deferred,
    answer: &Answer,
) -> NapiResult<()> {
    let outcome = match answer {
        Answer::Result(result) => {
            if keys.is_none() {
                *keys = Some(ResultKeys::new(env)?);
            }
            result_object(env, keys.as_ref().expect("made above"), class, result).map(Ok)
        }
        Answer::Data(Ok(data)) => to_js(env, data).map(Ok),
        Answer::Data(Err(e)) => pf_error_to_js(env, class, e).map(Err),
    };
    match outcome {
        Ok(Ok(value)) => js::check(sys::napi_resolve_deferred(env, deferred.0, value)),
        Ok(Err(error)) => js::check(sys::napi_reject_deferred(env, deferred.0, error)),
        Err(e) => {
            // Building the answer failed (out of memory, or a pending
            // exception): the Promise still ends, with that failure.
            let error = js::take_exception(env)
                .unwrap_or_else(|| js::string(env, &e.reason).unwrap_or_else(|_| js::undefined(env)));
            js::check(sys::napi_reject_deferred(env, deferred.0, error))
        }
    }
}

/// Settles a finished task's Promise.
unsafe fn finish(env: sys::napi_env, local: &LocalRef, keys: &mut Option<ResultKeys>, deferred: Deferred, answer: Answer) {
    let mut local = local.borrow_mut();
    let class = local.error_class().unwrap_or(ptr::null_mut());
    let _ = settle(env, keys, class, deferred, &answer);
    local.settled();
    drop(local);
    // The answer (possibly a large value) is dropped after the borrow ends.
    drop(answer);
}

/// Polls `task` once on the JS thread; settles its Promise when it is done.
/// The caller has entered the runtime's context (timers need it).
unsafe fn poll_task(env: sys::napi_env, local: &LocalRef, keys: &mut Option<ResultKeys>, task: &Arc<Task>) {
    // Cleared before polling, so that a wake during the poll queues it again.
    task.queued.store(false, Ordering::Release);
    let waker = Waker::from(task.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut state = task.state.lock();
    let Some(future) = state.future.as_mut() else { return };
    if let Poll::Ready(answer) = future.as_mut().poll(&mut cx) {
        state.future = None;
        let deferred = state.deferred.take();
        drop(state);
        if let Some(deferred) = deferred {
            finish(env, local, keys, deferred, answer);
        }
    }
}

/// Starts a new task: polls it at once (a packet that can run starts now).
pub unsafe fn start(env: sys::napi_env, shared: &Shared, local: &LocalRef, task: Arc<Task>) {
    let _runtime = runtime().enter();
    let mut keys = None;
    poll_task(env, local, &mut keys, &task);
    drop(task);
    run_ready(env, shared, local, &mut keys);
}

/// Polls the tasks that were woken, until none is left (or a bounded number
/// of rounds, after which the next threadsafe call goes on).
pub unsafe fn poll_ready(env: sys::napi_env, shared: &Shared, local: &LocalRef) {
    let _runtime = runtime().enter();
    run_ready(env, shared, local, &mut None);
}

unsafe fn run_ready(env: sys::napi_env, shared: &Shared, local: &LocalRef, keys: &mut Option<ResultKeys>) {
    for _ in 0..MAX_POLL_ROUNDS {
        let mut tasks = {
            let spare = std::mem::take(&mut local.borrow_mut().spare_tasks);
            std::mem::replace(&mut *shared.ready.lock(), spare)
        };
        if tasks.is_empty() {
            local.borrow_mut().spare_tasks = tasks;
            return;
        }
        for task in tasks.drain(..) {
            poll_task(env, local, keys, &task);
        }
        local.borrow_mut().spare_tasks = tasks;
    }
    if !shared.ready.lock().is_empty() {
        shared.schedule();
    }
}

/// The threadsafe function's callback, on the JS thread: polls woken
/// tasks, then returns the dispatcher's arguments `(state, invocations)`, or
/// `(undefined, undefined)` when no handler is due.
pub unsafe fn drain(env: sys::napi_env, shared: &Shared, local: &LocalRef) -> FnArgs<(JsAny, JsAny)> {
    let nothing = || FnArgs::from((JsAny(js::undefined(env)), JsAny(js::undefined(env))));
    // Clear the flag before taking the queues: a producer that pushes after
    // the take sees it clear and schedules the next call, so nothing waits.
    shared.scheduled.store(false, Ordering::Release);
    poll_ready(env, shared, local);
    let mut items = {
        let spare = std::mem::take(&mut local.borrow_mut().spare_invocations);
        std::mem::replace(&mut *shared.invocations.lock(), spare)
    };
    if items.is_empty() {
        local.borrow_mut().spare_invocations = items;
        return nothing();
    }
    let mut local = local.borrow_mut();
    let state = js::deref(env, local.state);
    let batch = if state.is_some() { js::new_array(env, items.len() * INVOCATION_STRIDE as usize).ok() } else { None };
    let mut index = 0u32;
    for invocation in items.drain(..) {
        let Some(batch) = batch else {
            let _ = invocation.reply.send(Err(PfError::new(
                packetflow::ErrorCode::Unavailable,
                "the JS reactor object was garbage-collected",
            )));
            continue;
        };
        let token = local.token();
        let added = add_invocation(env, batch, index, token, &invocation).is_ok();
        index += INVOCATION_STRIDE;
        if added {
            let Invocation { reply, ctx, .. } = invocation;
            local.running.insert(token, Running { reply, ctx });
        } else {
            // Its entries stay holes, which the dispatcher skips.
            js::take_exception(env);
            let _ = invocation.reply.send(Err(PfError::failed("the packet could not be passed to the JS handler")));
        }
    }
    local.spare_invocations = items;
    match (state, batch) {
        (Some(state), Some(batch)) => FnArgs::from((JsAny(state), JsAny(batch))),
        _ => nothing(),
    }
}

unsafe fn add_invocation(
    env: sys::napi_env,
    batch: sys::napi_value,
    at: u32,
    token: u64,
    invocation: &Invocation,
) -> NapiResult<()> {
    let ctx = &invocation.ctx;
    let packet_id = ctx.packet_id().as_str();
    let trace_id = ctx.trace_id();
    let trace = if trace_id == packet_id { js::undefined(env) } else { js::string(env, trace_id)? };
    let metadata = match ctx.metadata() {
        Some(m) => object_to_js(env, m)?,
        None => js::null(env),
    };
    let values = [
        js::double(env, invocation.slot as f64)?,
        js::double(env, token as f64)?,
        to_js(env, &invocation.data)?,
        js::string(env, packet_id)?,
        trace,
        metadata,
        js::double(env, ctx.remaining().as_secs_f64() * 1000.0)?,
    ];
    for (i, value) in values.into_iter().enumerate() {
        js::set_element(env, batch, at + i as u32, value)?;
    }
    Ok(())
}
