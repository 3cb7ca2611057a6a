//! `NativeReactor`: the addon's class, wrapped by `Reactor` in `index.js`.
//!
//! Every method runs on the JS thread. Methods that start work (`submit`,
//! `contextCall`, `listen`, `connect`, `stop`) settle a Promise that the JS
//! side made and never block: their core future is polled on the JS thread
//! whenever it can make progress (see the bridge), and so are the network
//! node's connections (`sockets: 'loop'`, their sockets watched by node's
//! event loop: see src/uv.rs), unless the reactor was made with `sockets:
//! 'thread'` (then they run on the binding's Tokio runtime).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::{Array, Function, JsObjectValue, Object};
use napi::{Env, Unknown, ValueType};
use napi_derive::napi;
use packetflow::actor::FileStore;
use packetflow::net::WS_PATH;
use packetflow::reactor::{late_call_error, CallOptions};
use packetflow::stdlib::StdlibPatterns;
use packetflow::{
    Codec, ConnectOptions, ConnectionSpawner, Context, ErrorCode, Handler, KeyStyle, ListenOptions, Node,
    NodeConfig, Packet, PacketId, PacketParts, PfError, Reactor, ReactorConfig, TokenSpec, Value,
};

use crate::bridge::{
    abandon, drain, flush_connections, poll_answered, poll_ready, polling_entry, start, start_answering,
    thrown_error, turn_outcome, watch, Answer, BatchFn, ErrorClassRef, JsSide, Local, LocalRef, Running,
    Shared, Task, Tsfn, TurnFn,
};
use crate::convert::{field, owned_field, parse_text, to_js, FromJs};
use crate::error::{convert_error_text, throw_convert_error, throw_pf_error, throw_type_error};
use crate::js::{self, NapiResult, Spread, StrBuf};
use crate::runtime;
use crate::uv::LoopReadiness;

/// How an argument that must be a string is read: a `TypeError` names the
/// argument and the type it had.
pub(crate) fn string_arg(env: &Env, value: &Unknown<'_>, name: &str) -> NapiResult<String> {
    if value.get_type()? != ValueType::String {
        let got = js::describe_type(value);
        return Err(throw_type_error(env, &format!("{name} must be a string, got {got}")));
    }
    js::read_string(value)
}

/// An optional string option: `undefined` (or `null`) is `None`.
pub(crate) fn optional_string(env: &Env, value: &Unknown<'_>, name: &str) -> NapiResult<Option<String>> {
    match value.get_type()? {
        ValueType::Undefined | ValueType::Null => Ok(None),
        _ => string_arg(env, value, name).map(Some),
    }
}

/// The `tokens` of `listen` as the core's token specs: the value is
/// converted as data is, and `TokenSpec::parse_list` judges it as it judges
/// a tokens file (with `tokenSha256` for the hashed token's key).
fn token_specs(env: &Env, tokens: Unknown<'_>) -> Result<Vec<TokenSpec>, TokenError> {
    let list = FromJs::new(env)
        .convert(tokens)
        .map_err(|e| TokenError::Convert(throw_convert_error(env, e, "tokens")))?;
    TokenSpec::parse_list(&list, KeyStyle::Camel).map_err(TokenError::Core)
}

/// Why the `tokens` of `listen` were refused.
enum TokenError {
    /// Not JSON-shaped: the `TypeError` is thrown already.
    Convert(napi::Error),
    /// The core's PF400.
    Core(PfError),
}

/// The addon's reactor. Not for direct use: `index.js` wraps it.
#[napi]
pub struct NativeReactor {
    pub(crate) reactor: Reactor,
    pub(crate) shared: Arc<Shared>,
    pub(crate) local: LocalRef,
    /// The network node, made by the first `listen` or `connect`: a
    /// reactor that never goes on the network costs nothing for it.
    node: RefCell<Option<Node>>,
    /// `NodeConfig::busy_poll` of that node.
    busy_poll: Option<std::time::Duration>,
    /// The node's connections run on the runtime's thread (`sockets:
    /// 'thread'`), not on the JS thread.
    thread_sockets: bool,
}

impl NativeReactor {
    /// Throws `error` as a `PacketFlowError`.
    pub(crate) fn throw(&self, env: &Env, error: &PfError) -> napi::Error {
        match self.local.borrow().error_class(env) {
            Ok(class) => throw_pf_error(env, &class, error),
            Err(e) => e,
        }
    }

    /// Builds the packet of a submit from its JS parts: the values are
    /// converted, and the core's `PacketParts` judges them (PF400 naming
    /// the field).
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &self,
        env: &Env,
        group: Unknown<'_>,
        element: Unknown<'_>,
        data: Unknown<'_>,
        data_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
        id: Unknown<'_>,
        dependencies: Unknown<'_>,
        metadata: Unknown<'_>,
    ) -> NapiResult<Packet> {
        let mut from_js = FromJs::new(env);
        let metadata = match metadata.get_type()? {
            ValueType::Undefined => None,
            _ => Some(from_js.convert(metadata).map_err(|e| throw_convert_error(env, e, "metadata"))?),
        };
        let data =
            from_js.convert_or_text(data, &data_text).map_err(|e| throw_convert_error(env, e, "data"))?;
        let (mut id_buf, mut group_buf, mut element_buf) = (StrBuf::new(), StrBuf::new(), StrBuf::new());
        let parts = PacketParts {
            id: field(&id, &mut id_buf)?,
            group: field(&group, &mut group_buf)?,
            element: field(&element, &mut element_buf)?,
            data: Some(data),
            priority: owned_field(&priority)?,
            timeout_ms: owned_field(&timeout_ms)?,
            dependencies: owned_field(&dependencies)?,
            metadata,
        };
        // A packet the core would refuse is refused here, synchronously:
        // `submit` only resolves to a Result for packets it submitted.
        parts.into_packet().map_err(|e| self.throw(env, &e))
    }

    /// Starts `work` as a task polled on this thread, for the Promise the
    /// JS side keeps under `promise`.
    pub(crate) fn start<F>(&self, env: &Env, promise: f64, work: F) -> NapiResult<()>
    where
        F: std::future::Future<Output = Answer> + Send + 'static,
    {
        self.start_as(env, promise, work, false)
    }

    /// [`start`](Self::start), for a Promise with an `AbortSignal` when
    /// `abortable`: when the signal aborts, `abandon(promise)` drops `work`
    /// (see [`abandon`]). Only such calls pay for being abandonable.
    pub(crate) fn start_as<F>(&self, env: &Env, promise: f64, work: F, abortable: bool) -> NapiResult<()>
    where
        F: std::future::Future<Output = Answer> + Send + 'static,
    {
        let task = Task::new(&self.shared, Box::pin(work), promise);
        let watched = abortable.then(|| task.clone());
        start(env, &self.shared, &self.local, task)?;
        if let Some(task) = watched {
            watch(&self.local, promise, &task);
        }
        Ok(())
    }

    /// [`start`](Self::start) for a Promise that `index.js` settles itself
    /// when the native call returns its answer: the data (`undefined`
    /// while the work goes on; a throw for a failure) if `work` ended in
    /// its first poll; abandonable by JS when `abortable` (see
    /// [`start_as`](Self::start_as)).
    pub(crate) fn start_answering<'env, F>(
        &self,
        env: &'env Env,
        promise: f64,
        work: F,
        abortable: bool,
    ) -> NapiResult<Unknown<'env>>
    where
        F: std::future::Future<Output = Answer> + Send + 'static,
    {
        let task = Task::new(&self.shared, Box::pin(work), promise);
        let watched = abortable.then(|| task.clone());
        let answer = start_answering(env, &self.shared, &self.local, task)?;
        if let (Some(task), None) = (&watched, &answer) {
            watch(&self.local, promise, task);
        }
        match answer {
            None => js::unknown(env, ()),
            Some(Answer::Data(Ok(data))) => to_js(env, &data),
            Some(Answer::Data(Err(e))) => Err(self.throw(env, &e)),
            // Only `Answer::Data` work starts this way (see its callers).
            Some(Answer::Result(result)) => Err(self.throw(
                env,
                &PfError::failed(format!("packet {} was answered as a submit", result.packet_id)),
            )),
        }
    }
}

#[napi]
impl NativeReactor {
    /// `new NativeReactor(name, maxInflight, maxQueue, finishedMemory,
    /// busyPollUs, threadSockets, actorPassivateAfterMs, actorRememberedTurns,
    /// actorStore, stdlib, dispatch, dispatchTurns, runTurn, settle,
    /// flushSoon, state, PacketFlowError)`: each option `undefined` when not
    /// given (the core's default), `index.js` having converted the numbers
    /// to integers and `sockets` to `threadSockets`; the core checks their
    /// values, parses the `stdlib` patterns and opens the store.
    /// `dispatch(state, ...invocations)` runs handlers, `dispatchTurns(state,
    /// ...turns)` actor turns, `runTurn(state, ...turn)` one turn there and
    /// then, `settle(state, ...answers)` settles Promises, and
    /// `flushSoon(state)` has the connections polled at the end of the JS
    /// turn (see src/bridge.rs).
    #[napi(constructor)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        env: Env,
        name: Option<String>,
        max_inflight: Option<u32>,
        max_queue: Option<u32>,
        finished_memory: Option<u32>,
        busy_poll_us: Option<u32>,
        thread_sockets: bool,
        actor_passivate_after_ms: Option<u32>,
        actor_remembered_turns: Option<u32>,
        actor_store: Option<String>,
        stdlib: Option<String>,
        dispatch: Function<'_, Spread, ()>,
        dispatch_turns: BatchFn,
        run_turn: TurnFn,
        settle: BatchFn,
        flush_soon: BatchFn,
        state: Object<'_>,
        error_class: ErrorClassRef,
    ) -> napi::Result<Self> {
        let defaults = ReactorConfig::default();
        // Settings the binding does not expose (yet) keep the core's defaults.
        #[allow(clippy::needless_update)]
        let config = ReactorConfig {
            name: name.unwrap_or(defaults.name),
            max_inflight: max_inflight.map_or(defaults.max_inflight, |n| n as usize),
            max_queue: max_queue.map_or(defaults.max_queue, |n| n as usize),
            finished_memory: finished_memory.map_or(defaults.finished_memory, |n| n as usize),
            actor_passivate_after: actor_passivate_after_ms
                .map_or(defaults.actor_passivate_after, |ms| std::time::Duration::from_millis(ms.into())),
            actor_remembered_turns: actor_remembered_turns
                .map_or(defaults.actor_remembered_turns, |n| n as usize),
            ..defaults
        };
        let refuse = |e: &PfError| -> napi::Result<Self> {
            Err(throw_pf_error(&env, &error_class.borrow_back(&env)?, e))
        };
        if let Err(e) = config.validate_as(KeyStyle::Camel) {
            return refuse(&e);
        }
        let stdlib = match StdlibPatterns::parse(stdlib.as_deref().unwrap_or_default()) {
            Ok(patterns) => patterns,
            Err(e) => return refuse(&e),
        };
        let reactor = Reactor::new(config);
        if let Some(path) = actor_store {
            let opened = FileStore::open(&path).and_then(|store| reactor.actors().set_store(Arc::new(store)));
            if let Err(e) = opened {
                return refuse(&e);
            }
        }
        // After the store: stateful elements keep their state in actors.
        reactor.enable_stdlib(&stdlib);
        let shared = Shared::new();
        let side = JsSide {
            state,
            dispatch: dispatch.create_ref()?,
            dispatch_turns,
            run_turn,
            settle,
            flush_soon,
            error_class,
        };
        let local: LocalRef = Rc::new(RefCell::new(Local::new(&env, side, &shared)?));
        let weak_shared = Arc::downgrade(&shared);
        let callback_local = local.clone();
        let tsfn: Tsfn = dispatch
            .build_threadsafe_function::<()>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(move |ctx| {
                if let Some(shared) = weak_shared.upgrade() {
                    drain(&ctx.env, &shared, &callback_local);
                }
                Ok(())
            })?;
        shared.set_tsfn(tsfn);
        let busy_poll =
            busy_poll_us.filter(|us| *us > 0).map(|us| std::time::Duration::from_micros(us.into()));
        Ok(NativeReactor { reactor, shared, local, node: RefCell::new(None), busy_poll, thread_sockets })
    }

    /// The reactor's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.reactor.config().name.clone()
    }

    /// Registers the JS handler in dispatcher slot `slot` for `group:element`.
    #[napi]
    pub fn register(
        &self,
        env: Env,
        group: Unknown<'_>,
        element: Unknown<'_>,
        slot: u32,
    ) -> napi::Result<()> {
        let group = string_arg(&env, &group, "group")?;
        let element = string_arg(&env, &element, "element")?;
        let shared = self.shared.clone();
        let handler =
            Handler::from_async(move |data: Value, ctx: Context| shared.call_handler(slot, data, ctx));
        self.reactor.register_handler(&group, &element, handler).map_err(|e| self.throw(&env, &e))
    }

    /// Removes the handler of `group:element`; `false` if there was none.
    #[napi]
    pub fn unregister(&self, env: Env, group: Unknown<'_>, element: Unknown<'_>) -> napi::Result<bool> {
        let group = string_arg(&env, &group, "group")?;
        let element = string_arg(&env, &element, "element")?;
        Ok(self.reactor.unregister(&group, &element))
    }

    /// Submits a packet for the JS Promise `promise`, settled with a
    /// `Result` (or, with `asCall`, with the data or a `PacketFlowError`).
    /// `dataText` is the data as JSON text when index.js made it (see
    /// `jsonText` there), else `undefined`. `abortable`: the call has an
    /// `AbortSignal`, and `abandon` may drop its future, which cancels the
    /// packet.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        env: Env,
        group: Unknown<'_>,
        element: Unknown<'_>,
        data: Unknown<'_>,
        data_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
        id: Unknown<'_>,
        dependencies: Unknown<'_>,
        metadata: Unknown<'_>,
        as_call: bool,
        abortable: bool,
        promise: f64,
    ) -> napi::Result<()> {
        let packet = self.packet(
            &env,
            group,
            element,
            data,
            data_text,
            priority,
            timeout_ms,
            id,
            dependencies,
            metadata,
        )?;
        self.submit_packet(&env, packet, as_call, promise, abortable)
    }

    /// Cancels the packet `packetId` in flight on this reactor (the core's
    /// `Reactor::cancel`: it is answered PF499, its handler's signal fires,
    /// its calls are cancelled); `false` if it is not in flight. What the
    /// cancellation settles (its submitter's Promise, the handler's
    /// `ctx.signal`) is settled before this returns.
    #[napi]
    pub fn cancel(&self, env: Env, packet_id: Unknown<'_>) -> napi::Result<bool> {
        let id = string_arg(&env, &packet_id, "packetId")?;
        let id = PacketId::new(&id).map_err(|e| self.throw(&env, &e))?;
        // What the cancellation wakes is polled below.
        let _entry = polling_entry(&env, &self.shared, &self.local);
        let cancelled = {
            // A packet forwarded to a peer is withdrawn through the network.
            let _runtime = runtime().enter();
            self.reactor.cancel(&id)
        };
        poll_ready(&env, &self.shared, &self.local)?;
        Ok(cancelled)
    }

    /// JS gave up on Promise `promise` (its `AbortSignal` aborted): drops
    /// the work behind it, if it was started abandonable and still runs.
    #[napi]
    pub fn abandon(&self, env: Env, promise: f64) -> napi::Result<()> {
        abandon(&env, &self.shared, &self.local, promise)
    }

    /// `ctx.call` of the running handler `token`: a child packet that
    /// inherits the deadline and trace id (the core decides how). `dataText`
    /// as for `submit`.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn context_call(
        &self,
        env: Env,
        token: f64,
        group: Unknown<'_>,
        element: Unknown<'_>,
        data: Unknown<'_>,
        data_text: Unknown<'_>,
        promise: f64,
    ) -> napi::Result<()> {
        let group = string_arg(&env, &group, "group")?;
        let element = string_arg(&env, &element, "element")?;
        let data = FromJs::new(&env)
            .convert_or_text(data, &data_text)
            .map_err(|e| throw_convert_error(&env, e, "data"))?;
        let ctx = self.local.borrow().running.get(&(token as u64)).map(|r| r.context().clone());
        let Some(ctx) = ctx else {
            // The handler answered, and its context went with it: the
            // core's answer to a late call.
            let error = late_call_error(&group, &element);
            return self.start(&env, promise, async move { Answer::Data(Err(error)) });
        };
        self.start(&env, promise, async move { Answer::Data(ctx.call(&group, &element, data).await) })
    }

    /// `ctx.call` with options: `priority` and `timeoutMs`, judged by the
    /// core after the key (`CallOptions::for_call`: PF400 naming the
    /// field), and `abortable` when JS watches an `AbortSignal` for it (see
    /// `submit`).
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn context_call_with(
        &self,
        env: Env,
        token: f64,
        group: Unknown<'_>,
        element: Unknown<'_>,
        data: Unknown<'_>,
        data_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
        abortable: bool,
        promise: f64,
    ) -> napi::Result<()> {
        let group = string_arg(&env, &group, "group")?;
        let element = string_arg(&env, &element, "element")?;
        let data = FromJs::new(&env)
            .convert_or_text(data, &data_text)
            .map_err(|e| throw_convert_error(&env, e, "data"))?;
        let (priority, timeout_ms) = (owned_field(&priority)?, owned_field(&timeout_ms)?);
        let options = CallOptions::for_call(&group, &element, priority.as_ref(), timeout_ms.as_ref())
            .map_err(|e| self.throw(&env, &e))?;
        let ctx = self.local.borrow().running.get(&(token as u64)).map(|r| r.context().clone());
        self.start_as(
            &env,
            promise,
            async move {
                Answer::Data(match ctx {
                    Some(ctx) => ctx.call_with(&group, &element, data, options).await,
                    None => Err(late_call_error(&group, &element)),
                })
            },
            abortable,
        )
    }

    /// The priority of the running handler or turn `token` (1-10); an
    /// error once it answered.
    #[napi]
    pub fn context_priority(&self, env: Env, token: f64) -> napi::Result<u32> {
        let local = self.local.borrow();
        match local.running.get(&(token as u64)) {
            Some(running) => Ok(running.context().priority().get().into()),
            None => {
                drop(local);
                let late = PfError::new(
                    ErrorCode::Unavailable,
                    "ctx.priority read after the handler answered; read it before returning",
                );
                Err(self.throw(&env, &late))
            }
        }
    }

    /// Starts watching the cancellation signal of the running handler or
    /// turn `token` for the JS Promise `promise` (made when JS first reads
    /// `ctx.signal`): it rejects with PF499 once the packet is cancelled or
    /// over (answered, past its deadline, its reactor stopping), or at once
    /// if it is already (the handler answered: its context is gone).
    #[napi]
    pub fn context_signal(&self, env: Env, token: f64, promise: f64) -> napi::Result<()> {
        // The core's signal, fetched now (it makes a turn's id if it had
        // none), and the id its reason names; the task that awaits it costs
        // nothing while it waits.
        let watched = self.local.borrow().running.get(&(token as u64)).map(|running| {
            let ctx = running.context();
            (ctx.cancelled(), ctx.packet_id().clone())
        });
        let Some((fired, id)) = watched else {
            let over = PfError::new(ErrorCode::Cancelled, "the packet is over: its handler answered");
            return self.start(&env, promise, async move { Answer::Data(Err(over)) });
        };
        self.start(&env, promise, async move {
            fired.await;
            Answer::Data(Err(PfError::new(
                ErrorCode::Cancelled,
                format!("packet {id} was cancelled or is over"),
            )))
        })
    }

    /// The packet id of the running handler or turn `token` (a turn's is
    /// made on this first read); an error once it answered.
    #[napi]
    pub fn context_packet_id(&self, env: Env, token: f64) -> napi::Result<String> {
        let local = self.local.borrow();
        match local.running.get(&(token as u64)) {
            Some(running) => Ok(running.context().packet_id().to_string()),
            None => {
                drop(local);
                let late = PfError::new(
                    ErrorCode::Unavailable,
                    "context.packetId read after the turn answered; read it before returning",
                );
                Err(self.throw(&env, &late))
            }
        }
    }

    /// Answers of JS handlers and actor turns, in batches: `ok` is
    /// `[token, value, valueText, ...]` (handlers), `failed` is `[token,
    /// code | undefined, message, ...]` (both), `turns` is `[token, reply,
    /// state, stopped, replyText, stateText, ...]` (turns that returned; a
    /// text is the value as JSON when index.js made it, else `undefined`).
    #[napi]
    pub fn complete(
        &self,
        env: Env,
        ok: Array<'_>,
        failed: Array<'_>,
        turns: Option<Array<'_>>,
    ) -> napi::Result<()> {
        // The answers wake their packets' tasks, polled below.
        let _entry = polling_entry(&env, &self.shared, &self.local);
        let mut from_js = FromJs::new(&env);
        let ok_len = ok.len();
        let mut i = 0;
        while i + 2 < ok_len {
            let token = js::read_f64(&ok.get_element(i)?)? as u64;
            let outcome = match parse_text(&ok.get_element(i + 2)?) {
                Some(value) => Ok(value),
                None => from_js
                    .convert(ok.get_element(i + 1)?)
                    .map_err(|e| PfError::failed(convert_error_text(&env, e, "result"))),
            };
            if let Some(running) = self.running(token) {
                running.answer(outcome);
            }
            i += 3;
        }
        let failed_len = failed.len();
        let mut i = 0;
        while i + 2 < failed_len {
            let token = js::read_f64(&failed.get_element(i)?)? as u64;
            let error = thrown_error(&env, &failed.get_element(i + 1)?, &failed.get_element(i + 2)?)?;
            if let Some(running) = self.running(token) {
                running.fail(error);
            }
            i += 3;
        }
        if let Some(turns) = turns {
            let turns_len = turns.len();
            let mut i = 0;
            while i + 5 < turns_len {
                let token = js::read_f64(&turns.get_element(i)?)? as u64;
                let stopped = js::read_bool(&turns.get_element(i + 3)?)?;
                let outcome = turn_outcome(
                    &env,
                    &mut from_js,
                    [turns.get_element(i + 1)?, turns.get_element(i + 4)?],
                    [turns.get_element(i + 2)?, turns.get_element(i + 5)?],
                    stopped,
                );
                if let Some(running) = self.running(token) {
                    running.answer_turn(outcome);
                }
                i += 6;
            }
        }
        // The answers woke their packets' tasks: finish them now.
        poll_answered(&env, &self.shared, &self.local)
    }

    /// Polls the network connections woken by native calls during this JS
    /// turn (called from the microtask `flushSoon(state)` queued): what the
    /// turn queued for each peer leaves in one write.
    #[napi]
    pub fn flush_connections(&self, env: Env) -> napi::Result<()> {
        flush_connections(&env, &self.shared, &self.local)
    }

    /// Stops the reactor (packets in flight and later submits get PF503)
    /// and, if it is on the network, its node: connections send those
    /// answers, then close with 1001; listeners stop. Settles the Promise
    /// `promise` (with `null`) once the connections are closed.
    #[napi]
    pub fn stop(&self, env: Env, promise: f64) -> napi::Result<()> {
        let node = self.node.borrow().clone();
        // The node's stop stops the reactor in its first poll, inside
        // `start`: `stopped` is true when this returns either way.
        let outcome = match node {
            Some(node) => self.start(&env, promise, async move {
                node.stop().await;
                Answer::Data(Ok(Value::Null))
            }),
            None => {
                self.reactor.stop();
                self.start(&env, promise, async { Answer::Data(Ok(Value::Null)) })
            }
        };
        // No longer a server: only the Promises still pending keep
        // node alive now (the one of this stop among them).
        self.local.borrow_mut().set_networked(false);
        outcome
    }

    /// Accepts peers on `addr` (`HOST:PORT`) with the options `index.js`
    /// checked (each `undefined` when not given; `tokens` as the user gave
    /// them, for the core to judge); settles the Promise
    /// `promise` with `{host, port, url}` of the address bound.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn listen(
        &self,
        env: Env,
        addr: Unknown<'_>,
        auth_file: Unknown<'_>,
        tokens: Unknown<'_>,
        tls_cert: Unknown<'_>,
        tls_key: Unknown<'_>,
        promise: f64,
    ) -> napi::Result<()> {
        let addr = string_arg(&env, &addr, "addr")?;
        let tokens = match token_specs(&env, tokens) {
            Ok(tokens) => tokens,
            Err(TokenError::Convert(thrown)) => return Err(thrown),
            Err(TokenError::Core(e)) => return Err(self.throw(&env, &e)),
        };
        let options = ListenOptions {
            auth_file: optional_string(&env, &auth_file, "authFile")?.map(PathBuf::from),
            tokens,
            tls_cert: optional_string(&env, &tls_cert, "tlsCert")?.map(PathBuf::from),
            tls_key: optional_string(&env, &tls_key, "tlsKey")?.map(PathBuf::from),
        };
        let Some(node) = self.node() else {
            return self.start(&env, promise, async { Answer::Data(Err(stopped_error())) });
        };
        let secure = options.tls_cert.is_some();
        self.start(&env, promise, async move {
            Answer::Data(node.listen_with(&addr, options).await.map(|bound| bound_address(&bound, secure)))
        })
    }

    /// Dials the peer at `url`, or joins the NATS system it names, with
    /// the options `index.js` checked for their JS types (see
    /// [`NativeConnectOptions`]; which of them apply to the URL, and their
    /// values, are the core's to judge, naming them in camelCase); settles
    /// the Promise `promise` (with `null`) once the peer's routes are known
    /// (on NATS: once this reactor's handlers are subscribed).
    #[napi]
    pub fn connect(
        &self,
        env: Env,
        url: Unknown<'_>,
        options: NativeConnectOptions,
        promise: f64,
    ) -> napi::Result<()> {
        let url = string_arg(&env, &url, "url")?;
        let options = options.into_core();
        let Some(node) = self.node() else {
            return self.start(&env, promise, async { Answer::Data(Err(stopped_error())) });
        };
        self.start(&env, promise, async move {
            Answer::Data(node.connect_with(&url, options).await.map(|()| Value::Null))
        })
    }

    /// Called once a `listen` or `connect` succeeded: from now until
    /// `stop`, the reactor keeps node alive (it serves peers, or redials
    /// them). Nothing happens if it was stopped meanwhile.
    #[napi]
    pub fn hold_network(&self) {
        if !self.reactor.is_stopped() {
            self.local.borrow_mut().set_networked(true);
        }
    }

    /// Whether `stop` was called.
    #[napi(getter)]
    pub fn stopped(&self) -> bool {
        self.reactor.is_stopped()
    }

    /// A snapshot of the counters, with camelCase keys.
    #[napi]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<Unknown<'env>> {
        let stats = self.reactor.stats();
        let handlers: Vec<Value> = stats
            .handlers
            .iter()
            .map(|h| {
                serde_json::json!({
                    "group": h.group.as_str(),
                    "element": h.element.as_str(),
                    "count": h.count,
                    "errors": h.errors,
                    "cancelled": h.cancelled,
                    "sumUs": h.sum_us,
                    "p50Us": h.p50_us,
                    "p99Us": h.p99_us,
                    "latencyBuckets": h.latency_buckets.iter().map(|(le, n)| serde_json::json!([le, n])).collect::<Vec<_>>(),
                })
            })
            .collect();
        let actors: Vec<Value> = stats
            .actors
            .iter()
            .map(|a| {
                serde_json::json!({
                    "actorType": a.actor_type,
                    "active": a.active,
                    "passivated": a.passivated,
                    "activations": a.activations,
                    "passivations": a.passivations,
                    "tellsFailed": a.tells_failed,
                })
            })
            .collect();
        let value = serde_json::json!({
            "name": stats.name,
            "inFlight": stats.in_flight,
            "queued": stats.queued,
            "unrouted": stats.unrouted,
            "forwardsCancelled": stats.forwards_cancelled,
            "handlers": handlers,
            "actors": actors,
            "routed": {
                "local": stats.routed.local,
                "websocket": stats.routed.websocket,
                "nats": stats.routed.nats,
            },
            "nats": stats.nats.map(|n| serde_json::json!({
                "state": n.state,
                "server": n.server,
                "rttUs": n.rtt_us,
                "servedKeys": n.served_keys,
                "bridgedKeys": n.bridged_keys,
                "requestsSent": n.requests_sent,
                "requestsServed": n.requests_served,
                "members": n.members,
            })),
        });
        to_js(env, &value)
    }
}

/// `connect`'s options as `index.js` passes them, each of the JS type it
/// checked (`undefined` when not given).
#[napi(object)]
pub struct NativeConnectOptions {
    pub msgpack: bool,
    pub token: Option<String>,
    pub tls_ca: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey_seed: Option<String>,
    pub credentials_file: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub require_tls: bool,
    pub connect_timeout_ms: Option<u32>,
    pub membership: bool,
    pub membership_heartbeat_ms: Option<u32>,
    pub actor_store: bool,
}

impl NativeConnectOptions {
    /// The core's options, to be judged there with camelCase names.
    fn into_core(self) -> ConnectOptions {
        ConnectOptions {
            codec: if self.msgpack { Codec::MsgPack } else { Codec::Json },
            token: self.token,
            tls_ca: self.tls_ca.map(PathBuf::from),
            namespace: self.namespace,
            name: self.name,
            user: self.user,
            password: self.password,
            nkey_seed: self.nkey_seed,
            credentials_file: self.credentials_file.map(PathBuf::from),
            tls_cert: self.tls_cert.map(PathBuf::from),
            tls_key: self.tls_key.map(PathBuf::from),
            require_tls: self.require_tls,
            connect_timeout_ms: self.connect_timeout_ms.map(u64::from),
            membership: self.membership,
            membership_heartbeat_ms: self.membership_heartbeat_ms.map(u64::from),
            actor_store: self.actor_store,
            key_style: KeyStyle::Camel,
        }
    }
}

/// One protocol error code and what it means, as the core lists them.
#[napi(object)]
pub struct ErrorCodeInfo {
    pub code: String,
    pub description: String,
}

/// Every error code of the protocol, from the core's own list: the package's
/// tables (index.d.ts's `ErrorCode`) are checked against it by the tests.
#[napi]
pub fn error_codes() -> Vec<ErrorCodeInfo> {
    ErrorCode::ALL
        .iter()
        .map(|c| ErrorCodeInfo { code: c.as_str().to_owned(), description: c.description().to_owned() })
        .collect()
}

/// The error of `listen` or `connect` on a stopped reactor.
fn stopped_error() -> PfError {
    PfError::new(ErrorCode::Unavailable, "the reactor is stopped")
}

/// What `listen` resolves to: `{host, port, url}`, the URL being the one
/// peers dial (`wss://` when the listener speaks TLS).
fn bound_address(bound: &SocketAddr, secure: bool) -> Value {
    let scheme = if secure { "wss" } else { "ws" };
    serde_json::json!({
        "host": bound.ip().to_string(),
        "port": bound.port(),
        "url": format!("{scheme}://{bound}{WS_PATH}"),
    })
}

impl NativeReactor {
    /// Starts a packet built for a submit, settled as a `Result` or, with
    /// `as_call`, as its data; abandonable by JS when `abortable`.
    fn submit_packet(
        &self,
        env: &Env,
        packet: Packet,
        as_call: bool,
        promise: f64,
        abortable: bool,
    ) -> napi::Result<()> {
        let reactor = self.reactor.clone();
        if as_call {
            self.start_as(env, promise, async move { Answer::Data(reactor.call(packet).await) }, abortable)
        } else {
            self.start_as(
                env,
                promise,
                async move { Answer::Result(reactor.submit(packet).await) },
                abortable,
            )
        }
    }

    /// The options of a `ctx.send` or `tell`: the message's
    /// `priority` and `timeoutMs` (`undefined`: the calling packet's
    /// priority, and all of what is left of its deadline), judged by the
    /// core as a packet's fields are (PF400 naming the field).
    pub(crate) fn call_options(
        &self,
        env: &Env,
        priority: &Unknown<'_>,
        timeout_ms: &Unknown<'_>,
    ) -> napi::Result<CallOptions> {
        let (priority, timeout_ms) = (owned_field(priority)?, owned_field(timeout_ms)?);
        CallOptions::from_fields(priority.as_ref(), timeout_ms.as_ref()).map_err(|e| self.throw(env, &e))
    }

    /// The reactor's node, made on first use; `None` once the reactor is
    /// stopped (a stopped reactor never goes on the network again).
    fn node(&self) -> Option<Node> {
        if self.reactor.is_stopped() {
            return None;
        }
        let mut slot = self.node.borrow_mut();
        let node = slot.get_or_insert_with(|| {
            // The node starts a task of its own: it needs the runtime.
            let _runtime = runtime().enter();
            let mut config =
                NodeConfig { runtime: "node".into(), busy_poll: self.busy_poll, ..NodeConfig::default() };
            if !self.thread_sockets {
                // Connections run on the JS thread, their sockets driven by
                // node's event loop (see src/uv.rs).
                let shared = self.shared.clone();
                let spawner = ConnectionSpawner::new(move |connection| shared.spawn_connection(connection));
                config.spawner = Some(spawner.with_readiness(Arc::new(LoopReadiness::new(&self.shared))));
            }
            Node::new(self.reactor.clone(), config)
        });
        Some(node.clone())
    }

    /// Takes the running handler or turn `token` out of the table to
    /// answer it; `None` if it was swept (its packet timed out meanwhile:
    /// nobody listens).
    fn running(&self, token: u64) -> Option<Running> {
        self.local.borrow_mut().running.remove(&token)
    }
}

impl Drop for NativeReactor {
    fn drop(&mut self) {
        // The JS object is gone, so nobody can submit to or stop this
        // reactor any more: stop it so that nothing it holds waits. (A
        // reactor on the network is pinned until `stop`, so a node is only
        // left here when its environment is torn down: a worker thread
        // terminated, or node exiting.) Its connections close in the
        // background; nothing can wait here.
        self.reactor.stop();
        if let Some(node) = self.node.get_mut().take() {
            runtime().spawn(async move { node.stop().await });
        }
    }
}
