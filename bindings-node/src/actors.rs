//! The actor half of `NativeReactor`, wrapped by `Actors` and
//! `ActorContext` in `index.js`.
//!
//! An actor type whose behaviour is written in JS is the core's async turn
//! ([`ActorType::from_async`]): each turn crosses to the JS thread as an
//! invocation does for a handler (see the bridge), with the message and a
//! copy of the state, and comes back with the reply and the state after the
//! turn. Everything else (ids, types, options, which messages a type takes,
//! commits, repeats, passivation, the store) is the core's: a message is
//! asked with [`Actors::ask_with`](packetflow::actor::Actors::ask_with)
//! (which decides whether it travels as a packet) or told as a packet
//! built by [`ActorRef::packet_from`].

use napi::{Env, Unknown, ValueType};
use napi_derive::napi;
use packetflow::actor::Op;
use packetflow::reactor::late_call_error;
use packetflow::{ActorRef, ActorType, PacketParts, PfError, Value};

use crate::bridge::{poll_ready, Answer};
use crate::convert::{field, owned_field, FromJs};
use crate::error::throw_convert_error;
use crate::js::StrBuf;
use crate::reactor::{string_arg, NativeReactor};
use crate::runtime;

/// How a JS actor ref `{type, id}` is named in a `TypeError`.
const ACTOR_ARG: [&str; 2] = ["actor.type", "actor.id"];

/// The parts of an actor message the user may set, as given (`undefined`
/// when absent): the core judges them.
struct MessageOptions<'env> {
    priority: Unknown<'env>,
    timeout_ms: Unknown<'env>,
    packet_id: Unknown<'env>,
    metadata: Unknown<'env>,
}

impl NativeReactor {
    /// The actor `(actor_type, id)`: a `TypeError` naming the argument
    /// (`names`) for a part that is not a string, the core's PF400 for one
    /// it refuses.
    fn actor_ref(
        &self,
        env: &Env,
        actor_type: &Unknown<'_>,
        id: &Unknown<'_>,
        names: [&str; 2],
    ) -> napi::Result<ActorRef> {
        let actor_type = string_arg(env, actor_type, names[0])?;
        let id = string_arg(env, id, names[1])?;
        ActorRef::new(&actor_type, &id).map_err(|e| self.throw(env, &e))
    }

    /// Converts what a message to `actor` is made of (`data` and the
    /// user's options) and hands it to `build`, which judges it by the
    /// core's packet rules (PF400 naming the field).
    fn with_message_parts<'env, T>(
        &self,
        env: &'env Env,
        op: Op,
        data: Unknown<'env>,
        data_text: Unknown<'env>,
        options: MessageOptions<'env>,
        build: impl FnOnce(PacketParts<'_>) -> Result<T, PfError>,
    ) -> napi::Result<T> {
        let mut from_js = FromJs::new(env);
        let metadata = match options.metadata.get_type()? {
            ValueType::Undefined => None,
            _ => {
                Some(from_js.convert(options.metadata).map_err(|e| throw_convert_error(env, e, "metadata"))?)
            }
        };
        let root = if op == Op::Create { "state" } else { "message" };
        let data =
            from_js.convert_or_text(data, &data_text).map_err(|e| throw_convert_error(env, e, root))?;
        let mut id_buf = StrBuf::new();
        let parts = PacketParts {
            id: field(&options.packet_id, &mut id_buf)?,
            data: Some(data),
            priority: owned_field(&options.priority)?,
            timeout_ms: owned_field(&options.timeout_ms)?,
            metadata,
            ..PacketParts::default()
        };
        build(parts).map_err(|e| self.throw(env, &e))
    }

    /// What [`actor_submit`](Self::actor_submit) and its abortable twin do.
    fn actor_submit_as<'env>(
        &self,
        env_ref: &'env Env,
        op: String,
        [actor_type, id, data, data_text, priority, timeout_ms, packet_id, metadata]: [Unknown<'env>; 8],
        promise: f64,
        abortable: bool,
    ) -> napi::Result<Unknown<'env>> {
        let env = *env_ref;
        // `index.js` passes one of the three.
        let op = match op.as_str() {
            "create" => Op::Create,
            "stop" => Op::Stop,
            _ => Op::Send,
        };
        let actor = if op == Op::Create && id.get_type()? == ValueType::Undefined {
            let actor_type = string_arg(&env, &actor_type, "type")?;
            ActorRef::generate(&actor_type).map_err(|e| self.throw(&env, &e))?
        } else if op == Op::Create {
            self.actor_ref(&env, &actor_type, &id, ["type", "options.id"])?
        } else {
            self.actor_ref(&env, &actor_type, &id, ACTOR_ARG)?
        };
        let options = MessageOptions { priority, timeout_ms, packet_id, metadata };
        let actors = self.reactor.actors();
        let answer = self.with_message_parts(env_ref, op, data, data_text, options, |parts| {
            actors.ask_with(&actor, op, parts)
        })?;
        self.start_answering(env_ref, promise, async move { Answer::Data(answer.await) }, abortable)
    }

    /// Polls at once the mailbox a tell may have started: from its first
    /// poll it counts as pending work, so node stays up until the told
    /// message has run.
    fn run_spawned(&self, env: &Env) -> napi::Result<()> {
        poll_ready(env, &self.shared, &self.local)
    }

    /// The context of the running handler or turn `token`, or the core's
    /// answer to a call made after it answered.
    fn running_context(&self, token: f64, actor: &ActorRef) -> Result<packetflow::Context, PfError> {
        let local = self.local.borrow();
        match local.running.get(&(token as u64)) {
            Some(running) => Ok(running.context().clone()),
            None => Err(late_call_error("rm", actor.element().as_str())),
        }
    }
}

#[napi]
impl NativeReactor {
    /// Registers (or replaces) actor type `actorType`, whose behaviour is
    /// the JS object in turn-dispatcher slot `slot` with the methods
    /// `methods` (the only message types the core lets through), starting
    /// from `initialState` for an id that does not exist when it is not
    /// `undefined` (a virtual actor).
    #[napi]
    pub fn register_actor(
        &self,
        env: Env,
        actor_type: Unknown<'_>,
        slot: u32,
        methods: Vec<String>,
        initial_state: Unknown<'_>,
    ) -> napi::Result<()> {
        let actor_type = string_arg(&env, &actor_type, "type")?;
        let initial_state = match initial_state.get_type()? {
            ValueType::Undefined => None,
            _ => Some(
                FromJs::new(&env)
                    .convert(initial_state)
                    .map_err(|e| throw_convert_error(&env, e, "initialState"))?,
            ),
        };
        let (turns, mailboxes) = (self.shared.clone(), self.shared.clone());
        // The mailbox runs on the JS thread too: a turn then needs no thread hop.
        let mut spec = ActorType::from_async(move |input| turns.run_turn(slot, input))
            .with_message_types(methods)
            .with_spawner(move |mailbox| mailboxes.spawn(mailbox));
        if let Some(state) = initial_state {
            spec = spec.with_initial_state(state);
        }
        self.reactor.actors().register(&actor_type, spec).map_err(|e| self.throw(&env, &e))
    }

    /// Submits `op` (`"create"`, `"send"` or `"stop"`) with `data` to actor
    /// `(actorType, id)` for the Promise `promise`, settled with the answer's
    /// data or a `PacketFlowError`. A create with `id` `undefined` gets a
    /// fresh id from the core (`dataText` as for `contextSend`). An answer
    /// ready at once (a turn run in place)
    /// is returned instead, a failure thrown; `undefined` means the Promise
    /// settles later. `abortable`: the message has an `AbortSignal`, and
    /// `abandon` may drop its future, which withdraws the message as the
    /// core does for a sender that gives up (a message still queued never
    /// runs, a turn run by the sender itself is abandoned uncommitted, a
    /// packet is cancelled).
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn actor_submit<'env>(
        &self,
        env_ref: &'env Env,
        op: String,
        actor_type: Unknown<'env>,
        id: Unknown<'env>,
        data: Unknown<'env>,
        data_text: Unknown<'env>,
        priority: Unknown<'env>,
        timeout_ms: Unknown<'env>,
        packet_id: Unknown<'env>,
        metadata: Unknown<'env>,
        abortable: bool,
        promise: f64,
    ) -> napi::Result<Unknown<'env>> {
        let parts = [actor_type, id, data, data_text, priority, timeout_ms, packet_id, metadata];
        self.actor_submit_as(env_ref, op, parts, promise, abortable)
    }

    /// Tells `message` to actor `(actorType, id)`: it holds its place in the
    /// mailbox when this returns; nobody waits for the turn. `messageText`
    /// as for `contextSend`.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn actor_tell(
        &self,
        env: Env,
        actor_type: Unknown<'_>,
        id: Unknown<'_>,
        message: Unknown<'_>,
        message_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
        packet_id: Unknown<'_>,
        metadata: Unknown<'_>,
    ) -> napi::Result<()> {
        let actor = self.actor_ref(&env, &actor_type, &id, ACTOR_ARG)?;
        let options = MessageOptions { priority, timeout_ms, packet_id, metadata };
        let packet = self.with_message_parts(&env, Op::Send, message, message_text, options, |parts| {
            actor.packet_from(Op::Send, parts)
        })?;
        {
            // A tell queues the message or spawns its delivery: in the runtime.
            let _runtime = runtime().enter();
            self.reactor.actors().tell_packet(&actor, packet).map_err(|e| self.throw(&env, &e))?;
        }
        self.run_spawned(&env)
    }

    /// The ids of the actors of `actorType` this reactor hosts (`count`:
    /// how many), for the Promise `promise`.
    #[napi]
    pub fn actor_list(
        &self,
        env: Env,
        actor_type: Unknown<'_>,
        count: bool,
        promise: f64,
    ) -> napi::Result<()> {
        let actor_type = string_arg(&env, &actor_type, "type")?;
        let actors = self.reactor.actors();
        self.start(&env, promise, async move {
            let ids = actors.list(&actor_type).await;
            Answer::Data(ids.map(|ids| if count { Value::from(ids.len()) } else { Value::from(ids) }))
        })
    }

    /// `context.send` of the running handler or turn `token`: a message to
    /// actor `(actorType, id)` as a child of its packet (the core adds the
    /// deadline, trace and reentrancy chain). `messageText` is the message
    /// as JSON text when index.js made it (`jsonText`), else `undefined`;
    /// `priority` and `timeoutMs` as for `ctx.call`
    /// ([`call_options`](Self::call_options)), and `abortable` when JS
    /// watches an `AbortSignal` for it.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn context_send(
        &self,
        env: Env,
        token: f64,
        actor_type: Unknown<'_>,
        id: Unknown<'_>,
        message: Unknown<'_>,
        message_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
        abortable: bool,
        promise: f64,
    ) -> napi::Result<()> {
        let actor = self.actor_ref(&env, &actor_type, &id, ACTOR_ARG)?;
        let message = FromJs::new(&env)
            .convert_or_text(message, &message_text)
            .map_err(|e| throw_convert_error(&env, e, "message"))?;
        let options = self.call_options(&env, &priority, &timeout_ms)?;
        let ctx = self.running_context(token, &actor);
        self.start_as(
            &env,
            promise,
            async move {
                Answer::Data(match ctx {
                    Ok(ctx) => ctx.send_with(&actor, message, options).await,
                    Err(late) => Err(late),
                })
            },
            abortable,
        )
    }

    /// `context.tell` of the running handler or turn `token` (`messageText`,
    /// `priority` and `timeoutMs` as for `contextSend`).
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn context_tell(
        &self,
        env: Env,
        token: f64,
        actor_type: Unknown<'_>,
        id: Unknown<'_>,
        message: Unknown<'_>,
        message_text: Unknown<'_>,
        priority: Unknown<'_>,
        timeout_ms: Unknown<'_>,
    ) -> napi::Result<()> {
        let actor = self.actor_ref(&env, &actor_type, &id, ACTOR_ARG)?;
        let message = FromJs::new(&env)
            .convert_or_text(message, &message_text)
            .map_err(|e| throw_convert_error(&env, e, "message"))?;
        let options = self.call_options(&env, &priority, &timeout_ms)?;
        let told = self.running_context(token, &actor).and_then(|ctx| {
            let _runtime = runtime().enter();
            ctx.tell_with(&actor, message, options)
        });
        told.map_err(|e| self.throw(&env, &e))?;
        self.run_spawned(&env)
    }
}
