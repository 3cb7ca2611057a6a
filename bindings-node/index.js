'use strict';
/**
 * PacketFlow for Node.js: a native reactor with an idiomatic Promise API.
 *
 * The reactor (routing, scheduling, deadlines, dependencies, error codes)
 * is the Rust core; this file only adapts it to JavaScript:
 * - handlers run on this thread, delivered in batches by the addon;
 * - a handler may return a value or a Promise; a throw or a rejection
 *   becomes a PF500 answer with the error's message;
 * - `submit` resolves to a {@link Result}, `call` to the data or rejects
 *   with a {@link PacketFlowError};
 * - actor behaviours (`r.actors`) run here too: each turn gets the message
 *   and a copy of the state, and hands back its reply and the state after
 *   it; the core commits that state only if the turn succeeded.
 *
 * Field names are camelCase throughout (`packetId`, `durationMs`,
 * `timeoutMs`); the wire's snake_case names exist only on the wire.
 * @module packetflow
 */

const { performance } = require('node:perf_hooks');

/**
 * Loads the addon: the one built from source when there is one (the
 * install script builds it where no prebuilt addon fits, or when asked
 * to), else the prebuilt one the package ships for this platform (see
 * platform.js and scripts/install.js). Its `NativeReactor`
 * (src/reactor.rs) is for this file only.
 * @returns {any}
 */
function loadAddon() {
  const fs = require('node:fs');
  const { builtAddon, prebuiltAddon, platformKey } = require('./platform.js');
  const file = [builtAddon, prebuiltAddon()].find((candidate) => fs.existsSync(candidate));
  if (file === undefined) {
    throw new Error(
      `packetflow: no native addon for ${platformKey()}: neither ${builtAddon} (built from source by ` +
        "the package's install script, which needs Rust's cargo) nor a prebuilt one. Run " +
        '`npm rebuild packetflow` with cargo on the PATH.',
    );
  }
  return require(file);
}

const { NativeReactor } = loadAddon();

/**
 * The error of a failed packet: `.code` is the protocol's code
 * (`PF001`, `PF408`, `PF500`, ...), `.message` says what happened.
 */
class PacketFlowError extends Error {
  /**
   * @param {string} code a `PFnnn` code
   * @param {string} message what went wrong
   */
  constructor(code, message) {
    super(message);
    /** @type {string} */
    this.code = code;
  }
}
Object.defineProperty(PacketFlowError.prototype, 'name', {
  value: 'PacketFlowError',
  writable: true,
  configurable: true,
});

/**
 * A pending `submit`: its resolve function (it never rejects once submitted).
 * @typedef {(result: import('./index').Result) => void} SubmitPending
 */
/**
 * A pending `call`, `ctx.call`, `listen`, `connect` or `stop`.
 * @typedef {{resolve: (value: any) => void, reject: (error: unknown) => void}} CallPending
 */
/** @typedef {SubmitPending | CallPending} Pending */

/** Entries per invocation in a batch from the addon (see src/bridge.rs). */
const STRIDE = 7;

/** Entries per actor turn: an invocation's, then the state and the actor id. */
const TURN_STRIDE = STRIDE + 2;

/**
 * @param {unknown} error what a handler threw or rejected with
 * @returns {string | undefined}
 */
function codeOf(error) {
  // A handler may pass on the code of a failed inner call by rethrowing its
  // PacketFlowError; anything else it throws is a PF500 failure.
  return error instanceof PacketFlowError ? error.code : undefined;
}

/**
 * @param {unknown} value
 * @returns {string}
 */
function typeName(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/**
 * Whether a handler's or method's value is a Promise (or any thenable).
 * @param {unknown} value
 * @returns {value is PromiseLike<unknown>}
 */
function isThenable(value) {
  return value !== null && typeof value === 'object' && typeof (/** @type {any} */ (value).then) === 'function';
}

/**
 * An actor ref's two parts, for the addon (which checks they are strings,
 * and the core, what they hold).
 * @param {unknown} actor
 * @returns {import('./index').ActorRef}
 */
function refOf(actor) {
  if (actor === null || typeof actor !== 'object') {
    throw new TypeError(`actor must be an object {type, id}, got ${typeName(actor)}`);
  }
  return /** @type {import('./index').ActorRef} */ (actor);
}

/** Deepest nesting {@link jsonText} writes as text (deeper goes the long way). */
const TEXT_DEPTH = 32;

/** Where a `toJSON` every object or array inherits would be. */
const OBJECT_PROTOTYPE = /** @type {any} */ (Object.prototype);
const ARRAY_PROTOTYPE = /** @type {any} */ (Array.prototype);

/**
 * Whether a string has no lone surrogate (`JSON.stringify` would escape
 * one, which the addon's JSON reader refuses). Node 18 lacks
 * `isWellFormed`: there, any surrogate counts.
 * @type {(text: string) => boolean}
 */
const wellFormed =
  typeof (/** @type {any} */ (String.prototype).isWellFormed) === 'function'
    ? (text) => /** @type {any} */ (text).isWellFormed()
    : (text) => !/[\ud800-\udfff]/.test(text);

/**
 * `value` as JSON text when `JSON.stringify` reads it exactly as the
 * addon's converter would (src/convert.rs), else `undefined` (the addon then
 * walks the value itself). The converter walks a value through N-API, a
 * dozen native calls per object; `JSON.stringify` and one string cost a
 * fraction of that. The two agree on plain data: objects whose prototype
 * is `Object.prototype` or `null`, arrays, well-formed strings, booleans,
 * `null`, finite numbers that are safe integers or not integers, and
 * `undefined` inside objects and arrays, with no `toJSON` anywhere. Anything
 * else (a `Date`, a `BigInt`, `NaN`, a function, a class instance, a lone
 * surrogate, a cycle, deep nesting) is left to the converter, which applies
 * its rules and names the path of what it refuses.
 * @param {unknown} value
 * @returns {string | undefined}
 */
function jsonText(value) {
  if (typeof value !== 'object' || value === null) return undefined;
  if (OBJECT_PROTOTYPE.toJSON !== undefined || ARRAY_PROTOTYPE.toJSON !== undefined) return undefined;
  return isPlainJson(value, 0) ? JSON.stringify(value) : undefined;
}

/**
 * Whether `value` is plain data as {@link jsonText} means it.
 * @param {unknown} value
 * @param {number} depth
 * @returns {boolean}
 */
function isPlainJson(value, depth) {
  switch (typeof value) {
    case 'string':
      return wellFormed(value);
    case 'boolean':
    case 'undefined':
      return true;
    case 'number':
      return Number.isFinite(value) && (Number.isSafeInteger(value) || !Number.isInteger(value));
    case 'object': {
      if (value === null) return true;
      if (depth >= TEXT_DEPTH) return false;
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) return false;
        for (let i = 0; i < value.length; i++) {
          if (!isPlainJson(value[i], depth + 1)) return false;
        }
        return true;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return false;
      for (const key in value) {
        if (!wellFormed(key) || !isPlainJson(/** @type {any} */ (value)[key], depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/**
 * What a handler knows about the packet it serves, and how it calls other
 * handlers on that packet's behalf.
 */
class Context {
  #state;
  #token;
  #packetId;
  #traceId;
  #deadline;
  /** @type {AbortSignal | undefined} made when first read */
  #signal;

  /**
   * Made by the dispatcher only (index.d.ts declares it private).
   * @internal
   * @param {Dispatch} state
   * @param {number} token
   * @param {string | undefined} packetId undefined for a turn whose id is
   *   made when first read
   * @param {string | undefined} traceId undefined when the packet started its trace
   * @param {Record<string, import('./index').JsonValue> | null} metadata
   * @param {number} deadline
   */
  constructor(state, token, packetId, traceId, metadata, deadline) {
    this.#state = state;
    this.#token = token;
    this.#packetId = packetId;
    this.#traceId = traceId;
    this.#deadline = deadline;
    /** The packet's metadata, or `null`. @type {Record<string, import('./index').JsonValue> | null} */
    this.metadata = metadata;
  }

  /**
   * The id of the packet being handled. A message sent with
   * `actors.send` gets an id made when this is first read, which must be
   * before the turn answers.
   * @returns {string}
   */
  get packetId() {
    if (this.#packetId === undefined) this.#packetId = this.#state.native.contextPacketId(this.#token);
    return /** @type {string} */ (this.#packetId);
  }

  /** The trace id shared by this packet and its child calls. */
  get traceId() {
    return this.#traceId === undefined ? this.packetId : this.#traceId;
  }

  /** Milliseconds left before the packet's deadline (0 once it passed). */
  get remainingMs() {
    return Math.max(0, this.#deadline - performance.now());
  }

  /**
   * The packet's priority (1-10, 10 most urgent), which its calls inherit.
   * Read it while the handler runs (afterwards: PF503).
   * @returns {number}
   */
  get priority() {
    return this.#state.native.contextPriority(this.#token);
  }

  /**
   * An `AbortSignal` aborted once this packet's work is no longer wanted:
   * it was cancelled (its submitter's signal aborted, `r.cancel`, the
   * packet that called it was cancelled, its connection went away) or it
   * is over (answered, past its deadline, its reactor stopping). Its
   * `reason` is a {@link PacketFlowError} PF499. Pass it to `fetch` and
   * the like, or listen for `abort`. Made when first read: a handler that
   * never reads it costs nothing more. Read after the handler answered, it
   * is aborted already.
   * @returns {AbortSignal}
   */
  get signal() {
    if (this.#signal === undefined) this.#signal = this.#state.signalOf(this.#token);
    return this.#signal;
  }

  /**
   * Calls `group:element` with `data` as a child of this packet: the child
   * inherits what is left of the deadline (unless `options.timeoutMs` is
   * shorter), the priority (unless `options.priority` names one) and the
   * trace id, and is cancelled with this packet. Resolves to the child's
   * data or rejects with a {@link PacketFlowError} (PF499 when this packet
   * was cancelled or ended meanwhile). With `options.signal`, an abort cancels the child and
   * rejects with the signal's `reason`. Call it before the handler answers.
   * @template [R=import('./index').JsonValue]
   * @param {import('./index').Group | (string & {})} group
   * @param {string} element
   * @param {import('./index').JsonInput} [data]
   * @param {import('./index').CallOptions} [options]
   * @returns {Promise<R>}
   */
  call(group, element, data, options = undefined) {
    if (options !== undefined) {
      return this.#child(options, (o, abortable, id) =>
        this.#state.native.contextCallWith(this.#token, group, element, data, jsonText(data), o.priority, o.timeoutMs, abortable, id),
      );
    }
    const state = this.#state;
    const id = state.nextId++;
    /** @type {Promise<R>} */
    const promise = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
    try {
      state.native.contextCall(this.#token, group, element, data, jsonText(data), id);
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
    return promise;
  }

  /**
   * Starts a child ({@link Context#call}, {@link Context#send}) with
   * options: a priority, a timeout, a signal. `begin(options, abortable,
   * id)` starts it in the addon.
   * @param {import('./index').CallOptions} options
   * @param {(options: import('./index').CallOptions, abortable: boolean, id: number) => unknown} begin
   * @returns {Promise<any>}
   */
  #child(options, begin) {
    /** @type {import('./index').CallOptions} */
    let o;
    try {
      o = optionsObject(options);
      onlyKeys(o, CALL_OPTIONS);
    } catch (error) {
      return Promise.reject(error);
    }
    const state = this.#state;
    const abortable = o.signal !== undefined;
    const start = (/** @type {number} */ id) => begin(o, abortable, id);
    return abortable ? state.abortable(o.signal, false, start) : state.promised(start);
  }

  /**
   * Sends `message` to `actor` as a child of this packet (same deadline,
   * trace and reentrancy rules, and the same options, as
   * {@link Context#call}) and resolves to the turn's reply, or rejects
   * with a {@link PacketFlowError}.
   * @template [R=import('./index').JsonValue]
   * @param {import('./index').ActorRef} actor
   * @param {import('./index').ActorMessage} message
   * @param {import('./index').CallOptions} [options]
   * @returns {Promise<R>}
   */
  send(actor, message, options = undefined) {
    let ref;
    try {
      ref = refOf(actor);
    } catch (error) {
      return Promise.reject(error);
    }
    const begin = (/** @type {import('./index').CallOptions} */ o, /** @type {boolean} */ abortable, /** @type {number} */ id) =>
      this.#state.native.contextSend(this.#token, ref.type, ref.id, message, jsonText(message), o.priority, o.timeoutMs, abortable, id);
    if (options === undefined) return this.#state.promised((id) => begin(NO_OPTIONS, false, id));
    return this.#child(options, begin);
  }

  /**
   * Sends `message` to `actor` without waiting for its turn: it holds its
   * place in the actor's mailbox when this returns, in the order of
   * `options.priority` (this packet's unless named); `options.timeoutMs`
   * bounds how long it may wait there. Throws a {@link PacketFlowError}
   * for a message or an option the core refuses.
   * @param {import('./index').ActorRef} actor
   * @param {import('./index').ActorMessage} message
   * @param {import('./index').TellOptions} [options]
   * @returns {void}
   */
  tell(actor, message, options = undefined) {
    const { type, id } = refOf(actor);
    /** @type {import('./index').TellOptions} */
    let o = NO_OPTIONS;
    if (options !== undefined) {
      o = optionsObject(options);
      onlyKeys(o, CONTEXT_TELL_OPTIONS);
    }
    this.#state.native.contextTell(this.#token, type, id, message, jsonText(message), o.priority, o.timeoutMs);
  }
}

/**
 * Reads whether {@link ActorContext#stop} was called (set by its class).
 * @type {(context: ActorContext) => boolean}
 */
let stopRequested;

/**
 * What an actor's method gets besides the message: the actor's state, its
 * address, and the packet's {@link Context} (`call`, `send`, `tell`).
 * @template [S=any]
 */
class ActorContext extends Context {
  #stop = false;

  static {
    stopRequested = (context) => context.#stop;
  }

  /**
   * Made by the turn dispatcher only (index.d.ts declares it private).
   * @internal
   * @param {Dispatch} state
   * @param {number} token
   * @param {string | undefined} packetId
   * @param {string | undefined} traceId
   * @param {Record<string, import('./index').JsonValue> | null} metadata
   * @param {number} deadline
   * @param {S} actorState
   * @param {import('./index').ActorRef} actor
   */
  constructor(state, token, packetId, traceId, metadata, deadline, actorState, actor) {
    super(state, token, packetId, traceId, metadata, deadline);
    /**
     * The actor's state: read it, change it in place, or replace it. It
     * becomes the actor's only if the method returns (or its Promise
     * resolves); a throw leaves the state as it was.
     * @type {S}
     */
    this.state = actorState;
    /** The actor running this turn. @type {import('./index').ActorRef} */
    this.actor = actor;
  }

  /** Stops the actor once this turn's reply is sent: its state is deleted. */
  stop() {
    this.#stop = true;
  }
}

/**
 * The JS side of the bridge: runs the handlers of a batch and sends their
 * answers back in batches (sync answers at once, async ones once per
 * microtask turn); keeps the reactor's Promises and settles them in batches.
 */
class Dispatch {
  constructor() {
    /**
     * Handler functions by slot; a slot is never reused (see register).
     * @type {Array<import('./index').Handler | undefined>}
     */
    this.fns = [];
    /**
     * Actor behaviours by turn slot; a slot is never reused either.
     * @type {Array<Registered | undefined>}
     */
    this.behaviors = [];
    /** The addon's reactor. @type {any} */
    this.native = null;
    /**
     * Pending Promises by id: a `resolve` function for `submit` (it never
     * rejects once submitted), `{resolve, reject}` for `call`/`ctx.call`.
     * @type {Map<number, Pending>}
     */
    this.pending = new Map();
    this.nextId = 1;
    /**
     * The signals given to calls still pending, and the calls they may
     * abandon (see {@link Dispatch#watch}).
     * @type {WeakMap<AbortSignal, {calls: Map<number, (reason: unknown) => void>, listener: () => void}>}
     */
    this.watched = new WeakMap();
    /** @type {Array<() => void>} */
    this.idleWaiters = [];
    /** Async answers of this microtask turn: `token, value, valueText, ...`. @type {unknown[]} */
    this.ok = [];
    /** Async failures of this turn: `token, code | undefined, error, ...`. @type {unknown[]} */
    this.failed = [];
    /** Async actor turns of this turn: `token, reply, state, stopped, replyText, stateText, ...`. @type {unknown[]} */
    this.turns = [];
    /** Polls the connections woken during this turn (see {@link flushSoon}). */
    this.flushConnections = () => this.native.flushConnections();
    this.flushing = false;
    this.flush = () => {
      this.flushing = false;
      const { ok, failed, turns } = this;
      this.ok = [];
      this.failed = [];
      this.turns = [];
      this.native.complete(ok, failed, turns);
    };
  }

  /** @param {any[]} batch invocations, {@link STRIDE} entries each */
  run(batch) {
    const ok = [];
    const failed = [];
    const now = performance.now();
    for (let i = 0; i < batch.length; i += STRIDE) {
      const slot = batch[i];
      if (slot === undefined) continue;
      const token = batch[i + 1];
      const ctx = new Context(this, token, batch[i + 3], batch[i + 4], batch[i + 5], now + batch[i + 6]);
      let out;
      try {
        out = /** @type {import('./index').Handler} */ (this.fns[slot])(batch[i + 2], ctx);
        if (isThenable(out)) {
          this.later(token, out, undefined);
          continue;
        }
      } catch (error) {
        failed.push(token, codeOf(error), error);
        continue;
      }
      ok.push(token, out, jsonText(out));
    }
    if (ok.length > 0 || failed.length > 0) this.native.complete(ok, failed, undefined);
  }

  /**
   * Runs a batch of actor turns (see {@link Dispatch#runTurn}) and hands
   * the answers of those that ended to the addon in one call.
   * @param {any[]} batch turns, {@link TURN_STRIDE} entries each
   */
  runTurns(batch) {
    const failed = [];
    const turns = [];
    for (let i = 0; i < batch.length; i += TURN_STRIDE) {
      const token = batch[i + 1];
      const out = this.runTurn(batch[i], token, batch[i + 2], batch[i + 3], batch[i + 4], batch[i + 5],
        batch[i + 6], batch[i + 7], batch[i + 8]);
      if (out === undefined) continue;
      if (out.length === 5) turns.push(token, out[0], out[1], out[2], out[3], out[4]);
      else failed.push(token, out[0], out[1]);
    }
    if (failed.length > 0 || turns.length > 0) this.native.complete(EMPTY, failed, turns);
  }

  /**
   * Runs one actor turn: calls the behaviour's method named by the
   * message's `type` (the core let only those through) with the message
   * and an {@link ActorContext} holding a copy of the state. Returns
   * `[reply, state, stopped, replyText, stateText]` when the method
   * returned (the texts from {@link jsonText}), `[code, error]`
   * when it threw, and `undefined` when it returned a Promise (its answer
   * goes through `complete` once it settles). The addon calls this
   * directly for a turn it can run at once (see src/bridge.rs).
   * @param {number} slot
   * @param {number} token
   * @param {any} message
   * @param {string | undefined} packetId
   * @param {string | undefined} traceId
   * @param {Record<string, import('./index').JsonValue> | null} metadata
   * @param {number} remainingMs
   * @param {any} actorState
   * @param {string} actorId
   * @returns {[unknown, unknown, boolean, string | undefined, string | undefined] | [string | undefined, unknown] | undefined}
   */
  runTurn(slot, token, message, packetId, traceId, metadata, remainingMs, actorState, actorId) {
    const behavior = /** @type {Registered} */ (this.behaviors[slot]);
    const actor = { type: behavior.type, id: actorId };
    const deadline = performance.now() + remainingMs;
    const ctx = new ActorContext(this, token, packetId, traceId, metadata, deadline, actorState, actor);
    let out;
    try {
      const method = /** @type {import('./index').ActorMethod} */ (behavior.methods.get(message.type));
      out = method.call(behavior.target, message, ctx);
    } catch (error) {
      return [codeOf(error), error];
    }
    if (isThenable(out)) {
      this.later(token, out, ctx);
      return undefined;
    }
    const state = ctx.state;
    return [out, state, stopRequested(ctx), jsonText(out), jsonText(state)];
  }

  /**
   * Answers a handler (`turn` undefined) or an actor turn once `promise`
   * settles; a turn hands back its context's state as it is then.
   * @param {number} token
   * @param {PromiseLike<unknown>} promise
   * @param {ActorContext | undefined} turn
   */
  later(token, promise, turn) {
    promise.then(
      (value) => {
        if (turn === undefined) this.ok.push(token, value, jsonText(value));
        else {
          const state = turn.state;
          this.turns.push(token, value, state, stopRequested(turn), jsonText(value), jsonText(state));
        }
        this.soon();
      },
      (error) => {
        this.failed.push(token, codeOf(error), error);
        this.soon();
      },
    );
  }

  soon() {
    if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(this.flush);
    }
  }

  /**
   * Settles a batch of answers: `id, kind, packetId, data | code, message, durationMs`.
   * @param {any[]} batch
   */
  settle(batch) {
    const pending = this.pending;
    for (let i = 0; i < batch.length; i += SETTLE_STRIDE) {
      const id = batch[i];
      const entry = pending.get(id);
      if (entry === undefined) continue;
      pending.delete(id);
      switch (batch[i + 1]) {
        case 0:
          /** @type {SubmitPending} */ (entry)({ packetId: batch[i + 2], status: 'success', data: batch[i + 3], error: null, durationMs: batch[i + 5] });
          break;
        case 1:
          /** @type {SubmitPending} */ (entry)({
            packetId: batch[i + 2],
            status: 'error',
            data: null,
            error: new PacketFlowError(batch[i + 3], batch[i + 4]),
            durationMs: batch[i + 5],
          });
          break;
        case 2:
          /** @type {CallPending} */ (entry).resolve(batch[i + 3]);
          break;
        default:
          /** @type {CallPending} */ (entry).reject(new PacketFlowError(batch[i + 3], batch[i + 4]));
      }
    }
    this.wakeIdleWaiters();
  }

  /**
   * Resolves the pending `call` Promise `id` with `value` (an answer the
   * addon returned instead of settling it).
   * @param {number} id
   * @param {unknown} value
   */
  resolveNow(id, value) {
    const entry = /** @type {CallPending | undefined} */ (this.pending.get(id));
    if (entry === undefined) return;
    this.pending.delete(id);
    entry.resolve(value);
    this.wakeIdleWaiters();
  }

  /**
   * A Promise settled by the addon (`call`-like: it resolves to data or
   * rejects): `begin(id)` starts the work (it may throw: the Promise then
   * rejects with that, and nothing started) and returns the answer when it
   * has it at once (a turn run in place), `undefined` when the addon will
   * settle the Promise later.
   * @param {(id: number) => unknown} begin
   * @returns {Promise<any>}
   */
  promised(begin) {
    const id = this.nextId++;
    const promise = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    let answer;
    try {
      answer = begin(id);
    } catch (error) {
      this.pending.delete(id);
      return Promise.reject(error);
    }
    if (answer !== undefined) this.resolveNow(id, answer);
    return promise;
  }

  /**
   * {@link Dispatch#promised} for work given an `AbortSignal` (`begin`
   * starts it abandonable: the addon's `...Abortable`/`...With` methods).
   * An aborted signal rejects at once, with its `reason`, and starts
   * nothing. When it aborts later, the Promise rejects with its `reason`
   * (as `fetch` does) and the addon drops the work (`abandon`), which
   * cancels the packet (PF499 for the handler, its calls and dependents).
   * @param {unknown} signal
   * @param {boolean} asResult resolves to a `Result` (`submit`), else to the data
   * @param {(id: number) => unknown} begin
   * @returns {Promise<any>}
   */
  abortable(signal, asResult, begin) {
    if (!isAbortSignal(signal)) {
      return Promise.reject(new TypeError(`signal must be an AbortSignal, got ${typeName(signal)}`));
    }
    if (signal.aborted) return Promise.reject(signal.reason);
    const id = this.nextId++;
    /** @type {(reason: unknown) => void} */
    let giveUp = () => {};
    const promise = new Promise((resolve, reject) => {
      giveUp = reject;
      const forget = () => this.unwatch(signal, id);
      this.pending.set(
        id,
        asResult
          ? (/** @type {import('./index').Result} */ result) => {
              forget();
              resolve(result);
            }
          : {
              resolve: (value) => {
                forget();
                resolve(value);
              },
              reject: (error) => {
                forget();
                reject(error);
              },
            },
      );
    });
    let answer;
    try {
      answer = begin(id);
    } catch (error) {
      this.pending.delete(id);
      return Promise.reject(error);
    }
    if (answer !== undefined) this.resolveNow(id, answer);
    else if (this.pending.has(id)) {
      this.watch(signal, id, giveUp);
      // Code that ran while the work started (a turn run in place) may
      // have aborted the signal already: its event is gone.
      if (signal.aborted) this.abandonAll(signal);
    }
    return promise;
  }

  /**
   * Watches `signal` for the Promise `id` (rejected with `giveUp`). One
   * `abort` listener per signal, however many calls share it: a signal
   * made per request and passed to many calls raises no listener-leak
   * warning, and costs one listener.
   * @param {AbortSignal} signal
   * @param {number} id
   * @param {(reason: unknown) => void} giveUp
   */
  watch(signal, id, giveUp) {
    let watched = this.watched.get(signal);
    if (watched === undefined) {
      const listener = () => this.abandonAll(signal);
      watched = { calls: new Map(), listener };
      this.watched.set(signal, watched);
      signal.addEventListener('abort', listener, { once: true });
    }
    watched.calls.set(id, giveUp);
  }

  /**
   * Forgets the Promise `id` (it settled); the last one removes the
   * signal's listener.
   * @param {AbortSignal} signal
   * @param {number} id
   */
  unwatch(signal, id) {
    const watched = this.watched.get(signal);
    if (watched === undefined || !watched.calls.delete(id) || watched.calls.size > 0) return;
    this.watched.delete(signal);
    signal.removeEventListener('abort', watched.listener);
  }

  /**
   * `signal` aborted: every Promise it watches rejects with its `reason`,
   * and the addon drops their work.
   * @param {AbortSignal} signal
   */
  abandonAll(signal) {
    const watched = this.watched.get(signal);
    if (watched === undefined) return;
    this.watched.delete(signal);
    signal.removeEventListener('abort', watched.listener);
    for (const [id, giveUp] of watched.calls) {
      if (!this.pending.delete(id)) continue;
      giveUp(signal.reason);
      this.native.abandon(id);
    }
    this.wakeIdleWaiters();
  }

  /**
   * The `ctx.signal` of the running handler or turn `token`: the addon
   * rejects the Promise `id` with PF499 once the packet is cancelled or
   * over (see src/reactor.rs, `contextSignal`), and that aborts it.
   * @param {number} token
   * @returns {AbortSignal}
   */
  signalOf(token) {
    const controller = new AbortController();
    const abort = (/** @type {unknown} */ reason) => controller.abort(reason);
    const id = this.nextId++;
    this.pending.set(id, { resolve: abort, reject: abort });
    try {
      this.native.contextSignal(token, id);
    } catch (error) {
      this.pending.delete(id);
      throw error;
    }
    return controller.signal;
  }

  /** Resolves the {@link Dispatch#idle} waiters once nothing is pending. */
  wakeIdleWaiters() {
    if (this.pending.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /**
   * Resolves once no Promise of the reactor is pending.
   * @returns {Promise<void>}
   */
  idle() {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

/** Entries per answer in a settle batch (see src/bridge.rs). */
const SETTLE_STRIDE = 6;

/** No answers of a kind, for `complete` (never written to). @type {unknown[]} */
const EMPTY = [];

/**
 * A registered actor behaviour: its type name, the object whose methods
 * run (their `this`), and those methods by message type.
 * @typedef {{type: string, target: object, methods: Map<string, import('./index').ActorMethod>}} Registered
 */

/**
 * The addon calls this with a batch of handler invocations as arguments
 * (and with none from its wake-up call, which has nothing to do here).
 */
/**
 * @param {Dispatch | undefined} state
 * @param {...any} batch
 */
function dispatch(state, ...batch) {
  if (state !== undefined) state.run(batch);
}

/**
 * The addon calls this with a batch of actor turns as arguments.
 * @param {Dispatch} state
 * @param {...any} batch
 */
function dispatchTurns(state, ...batch) {
  state.runTurns(batch);
}

/**
 * The addon calls this to run one actor turn at once (see Dispatch#runTurn).
 * @param {Dispatch} state
 * @param {number} slot
 * @param {number} token
 * @param {any} message
 * @param {string | undefined} packetId
 * @param {string | undefined} traceId
 * @param {Record<string, import('./index').JsonValue> | null} metadata
 * @param {number} remainingMs
 * @param {any} actorState
 * @param {string} actorId
 */
function runTurn(state, slot, token, message, packetId, traceId, metadata, remainingMs, actorState, actorId) {
  return state.runTurn(slot, token, message, packetId, traceId, metadata, remainingMs, actorState, actorId);
}

/**
 * The addon calls this with a batch of answers as arguments.
 * @param {Dispatch} state
 * @param {...any} batch
 */
function settle(state, ...batch) {
  state.settle(batch);
}

/**
 * The addon calls this, at most once per JS turn, when a call into it woke
 * one of the reactor's network connections: the connections are polled at
 * the end of the turn, so what the turn's calls queued for a peer (each
 * submit of a burst, the answers of a batch of handlers) leaves in one
 * write.
 * @param {Dispatch} state
 */
function flushSoon(state) {
  queueMicrotask(state.flushConnections);
}

const OPTIONS = new Set([
  'name',
  'maxInflight',
  'maxQueue',
  'finishedMemory',
  'busyPollUs',
  'sockets',
  'actorStore',
  'actorPassivateAfterMs',
  'actorRememberedTurns',
  'stdlib',
]);

/**
 * Throws a TypeError for keys of `options` not in `known`; `unknown(key)` starts the message.
 * @param {object} options
 * @param {string[]} known
 * @param {(key: string) => string} [unknown]
 */
function onlyKeys(options, known, unknown = (key) => `unknown option ${key}`) {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`${unknown(JSON.stringify(key))} (expected ${known.join(', ')})`);
    }
  }
}

/**
 * An options object: `undefined` is `{}`, anything but a plain object a TypeError.
 * @template {object} T
 * @param {T | undefined} options
 * @returns {Partial<T>}
 */
function optionsObject(options) {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`options must be an object, got ${typeName(options)}`);
  }
  return options;
}

/**
 * An optional string option (a file path or a token): `undefined` if absent.
 * @param {unknown} value
 * @param {string} name
 * @returns {string | undefined}
 */
function stringOption(value, name) {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${typeName(value)}`);
  return value;
}

/**
 * `listen`'s options, checked for their JS types. `tokens` goes to the core
 * as given: it judges a token list as it judges a tokens file (messages name
 * the entry and field, never a token's value).
 */
/** @param {import('./index').ListenOptions | undefined} options */
function listenOptions(options) {
  options = optionsObject(options);
  onlyKeys(options, ['authFile', 'tokens', 'tlsCert', 'tlsKey']);
  return {
    authFile: stringOption(options.authFile, 'authFile'),
    tokens: options.tokens,
    tlsCert: stringOption(options.tlsCert, 'tlsCert'),
    tlsKey: stringOption(options.tlsKey, 'tlsKey'),
  };
}

/** The keys of `connect`'s options (index.d.ts's `ConnectOptions`). */
const CONNECT_KEYS = [
  'msgpack', 'token', 'tlsCa', 'namespace', 'name', 'user', 'password', 'nkeySeed',
  'credentialsFile', 'tlsCert', 'tlsKey', 'requireTls', 'connectTimeoutMs',
  'membership', 'membershipHeartbeatMs', 'actorStore',
];

/**
 * A boolean option (`false` when absent).
 * @param {unknown} value
 * @param {string} name
 * @returns {boolean}
 */
function booleanOption(value, name) {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${typeName(value)}`);
  return value;
}

/**
 * A count of ms the addon takes as a u32 (`undefined` when absent); its
 * bounds beyond that are the core's to judge.
 * @param {unknown} value
 * @param {string} name
 * @returns {number | undefined}
 */
function msOption(value, name) {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new TypeError(
      `${name} must be an integer from 0 to 4294967295, got ${typeof value === 'number' ? value : typeName(value)}`,
    );
  }
  return value;
}

/**
 * `connect`'s options, checked for their JS types only: which of them apply
 * to the URL (WebSocket or NATS) and their values are the core's to judge
 * (a PF400 naming the option).
 * @param {import('./index').ConnectOptions | undefined} options
 */
function connectOptions(options) {
  options = optionsObject(options);
  onlyKeys(options, CONNECT_KEYS);
  return {
    msgpack: booleanOption(options.msgpack, 'msgpack'),
    token: stringOption(options.token, 'token'),
    tlsCa: stringOption(options.tlsCa, 'tlsCa'),
    namespace: stringOption(options.namespace, 'namespace'),
    name: stringOption(options.name, 'name'),
    user: stringOption(options.user, 'user'),
    password: stringOption(options.password, 'password'),
    nkeySeed: stringOption(options.nkeySeed, 'nkeySeed'),
    credentialsFile: stringOption(options.credentialsFile, 'credentialsFile'),
    tlsCert: stringOption(options.tlsCert, 'tlsCert'),
    tlsKey: stringOption(options.tlsKey, 'tlsKey'),
    requireTls: booleanOption(options.requireTls, 'requireTls'),
    connectTimeoutMs: msOption(options.connectTimeoutMs, 'connectTimeoutMs'),
    membership: booleanOption(options.membership, 'membership'),
    membershipHeartbeatMs: msOption(options.membershipHeartbeatMs, 'membershipHeartbeatMs'),
    actorStore: booleanOption(options.actorStore, 'actorStore'),
  };
}

/**
 * The `sockets` option as the addon takes it: whether the network
 * connections run on the addon's thread (`'thread'`) rather than on the JS
 * thread, driven by node's event loop (`'loop'`, the default unless the
 * reactor busy-polls: busy-polling is the addon's thread's).
 * @param {unknown} value
 * @param {number | undefined} busyPollUs
 * @returns {boolean}
 */
function socketsOption(value, busyPollUs) {
  const busy = busyPollUs !== undefined && busyPollUs > 0;
  if (value === undefined) return busy;
  if (value !== 'loop' && value !== 'thread') {
    throw new TypeError(`sockets must be 'loop' or 'thread', got ${typeof value === 'string' ? JSON.stringify(value) : typeName(value)}`);
  }
  if (value === 'loop' && busy) {
    throw new TypeError("busyPollUs busy-polls the addon's thread: it needs sockets: 'thread' (its default)");
  }
  return value === 'thread';
}

/**
 * A numeric reactor option as the integer the addon takes (`undefined` if
 * absent): its value is the core's to judge (`ReactorConfig::validate`).
 */
/**
 * @param {import('./index').ReactorOptions} options
 * @param {'maxInflight' | 'maxQueue' | 'finishedMemory' | 'busyPollUs' | 'actorPassivateAfterMs' | 'actorRememberedTurns'} key
 * @returns {number | undefined}
 */
function integerOption(options, key) {
  const value = options[key];
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new TypeError(
      `${key} must be an integer from 0 to 4294967295, got ${typeof value === 'number' ? value : typeName(value)}`,
    );
  }
  return value;
}

/**
 * Normalises `submit`/`call` arguments: a packet object, or
 * `(group, element, data, options)`.
 */
/**
 * @param {any[]} args
 * @returns {import('./index').PacketInit}
 */
function packetOf(args) {
  const [first] = args;
  if (typeof first === 'string') {
    const options = args[3] === undefined ? {} : args[3];
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object, got ${typeName(options)}`);
    }
    return { ...options, group: first, element: args[1], data: args[2] };
  }
  if (first === null || typeof first !== 'object' || Array.isArray(first)) {
    throw new TypeError(`packet must be an object, got ${typeName(first)}`);
  }
  return first;
}

/** The options of an actor message (`tell`, `stop`). */
const MESSAGE_OPTIONS = ['id', 'priority', 'timeoutMs', 'metadata'];

/** The options of `actors.send`: a message's, and a signal. */
const SEND_OPTIONS = [...MESSAGE_OPTIONS, 'signal'];

/** The options of `ctx.call` and `ctx.send`. */
const CALL_OPTIONS = ['priority', 'timeoutMs', 'signal'];

/** The options of `ctx.tell`. */
const CONTEXT_TELL_OPTIONS = ['priority', 'timeoutMs'];

/** The options of a `ctx.send` or `ctx.tell` given none: one object, made once. */
const NO_OPTIONS = Object.freeze({});

/**
 * Whether `value` can be watched as an `AbortSignal` (as Node's own APIs
 * judge one: an object with `aborted`, here also `addEventListener`).
 * @param {unknown} value
 * @returns {value is AbortSignal}
 */
function isAbortSignal(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof (/** @type {any} */ (value).aborted) === 'boolean' &&
    typeof (/** @type {any} */ (value).addEventListener) === 'function'
  );
}

/** The options of a message that sets none. */
const NO_MESSAGE_OPTIONS = Object.freeze({});

/**
 * A message's options, checked: a plain object of `known` keys.
 * @param {import('./index').SendOptions | import('./index').CreateOptions | undefined} options
 * @param {string[]} [known]
 * @returns {Partial<import('./index').SendOptions & import('./index').CreateOptions>}
 */
function messageOptions(options, known = MESSAGE_OPTIONS) {
  if (options === undefined) return NO_MESSAGE_OPTIONS;
  const o = optionsObject(options);
  onlyKeys(o, known);
  return o;
}

/**
 * The methods of a behaviour object by name: its own and its prototypes'
 * function-valued properties (so a class instance works too), up to
 * `Object.prototype`, without `constructor`. Getters are not called.
 * @param {object} behavior
 * @returns {Map<string, import('./index').ActorMethod>}
 */
function methodsOf(behavior) {
  /** @type {Map<string, import('./index').ActorMethod>} */
  const methods = new Map();
  for (let o = behavior; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (name === 'constructor' || methods.has(name)) continue;
      const value = Object.getOwnPropertyDescriptor(o, name)?.value;
      if (typeof value === 'function') methods.set(name, value);
    }
  }
  return methods;
}

/**
 * The actors of a reactor (`r.actors`): register behaviours written in JS,
 * create actors, message them, stop them, list them. An actor is a type
 * and an id with a JSON state; it handles one message at a time, and a
 * turn that throws leaves its state as it was (see docs/protocol.md,
 * "Actors"). Actors of other nodes are reached the same way once the
 * reactor is connected.
 *
 * ```js
 * r.actors.registerBehavior('counter', {
 *   increment: (data, context) => { context.state.value++; return { value: context.state.value }; },
 *   get_value: (data, context) => ({ value: context.state.value }),
 * });
 * const counter = await r.actors.create('counter', { value: 0 });
 * await r.actors.send(counter, { type: 'increment' });
 * ```
 */
class Actors {
  #native;
  #dispatch;

  /**
   * Made by the reactor only (index.d.ts declares it private).
   * @internal
   * @param {any} native
   * @param {Dispatch} dispatch
   */
  constructor(native, dispatch) {
    this.#native = native;
    this.#dispatch = dispatch;
  }

  /**
   * Registers (or replaces) actor type `type`: a message `{type: 'm', ...}`
   * runs `behavior.m(message, context)`, which may return the reply or a
   * Promise of it. The behaviour's methods are the only message types the
   * type takes (others are refused with PF400 naming them). With
   * `initialState`, a message for an id that does not exist activates it
   * with a copy of that state (a virtual actor) instead of PF404.
   * @template [S=any]
   * @param {string} type 1-58 characters of [A-Za-z0-9_.-]
   * @param {import('./index').Behavior<S>} behavior
   * @param {import('./index').BehaviorOptions<S>} [options]
   * @returns {void}
   */
  registerBehavior(type, behavior, options) {
    if (behavior === null || typeof behavior !== 'object') {
      throw new TypeError(`behavior must be an object of methods, got ${typeName(behavior)}`);
    }
    const checked = optionsObject(options);
    onlyKeys(checked, ['initialState']);
    const methods = methodsOf(behavior);
    if (methods.size === 0) throw new TypeError('behavior has no methods: give one per message type');
    const behaviors = this.#dispatch.behaviors;
    behaviors.push({ type, target: behavior, methods });
    try {
      this.#native.registerActor(type, behaviors.length - 1, [...methods.keys()], checked.initialState);
    } catch (error) {
      behaviors[behaviors.length - 1] = undefined;
      throw error;
    }
  }

  /**
   * Creates an actor of `type` with `state` (default `null`) and resolves
   * to its ref `{type, id}`; `options.id` names it (default: a fresh UUID).
   * Rejects with PF409 if it exists, PF404 if no node hosts the type.
   * @param {string} type
   * @param {import('./index').JsonInput} [state]
   * @param {import('./index').CreateOptions} [options]
   * @returns {Promise<import('./index').ActorRef>}
   */
  create(type, state = null, options = undefined) {
    return this.#call((promise) => {
      const o = messageOptions(options);
      const native = this.#native;
      return native.actorSubmit('create', type, o.id, state, jsonText(state), o.priority, o.timeoutMs, undefined, o.metadata, false, promise);
    });
  }

  /**
   * Sends `message` (an object whose `type` names the method) to `actor`
   * and resolves to the method's reply (an ask). Rejects with a
   * {@link PacketFlowError}: PF404 for an actor that does not exist (unless
   * its type has an initial state), PF500 when the method threw, PF408
   * past the deadline. `options.id` is the packet id: a message re-sent
   * with the same id is applied once. `options.signal` (an `AbortSignal`)
   * gives up as for {@link Reactor#submit}: the Promise rejects with the
   * signal's `reason`, and the message is withdrawn as the core withdraws
   * it: still in the mailbox, it never runs; run by this send itself (the
   * actor was idle), its turn is dropped uncommitted and `context.signal`
   * aborts; a turn the mailbox had started runs to its end.
   * @template [R=import('./index').JsonValue]
   * @param {import('./index').ActorRef} actor
   * @param {import('./index').ActorMessage} message
   * @param {import('./index').SendOptions} [options]
   * @returns {Promise<R>}
   */
  send(actor, message, options = undefined) {
    let o;
    try {
      o = messageOptions(options, SEND_OPTIONS);
    } catch (error) {
      return Promise.reject(error);
    }
    const native = this.#native;
    if (o.signal !== undefined) {
      const { priority, timeoutMs, id: packetId, metadata } = o;
      return this.#dispatch.abortable(o.signal, false, (promise) => {
        const { type, id } = refOf(actor);
        return native.actorSubmit('send', type, id, message, jsonText(message), priority, timeoutMs, packetId, metadata, true, promise);
      });
    }
    return this.#call((promise) => {
      const { type, id } = refOf(actor);
      return native.actorSubmit('send', type, id, message, jsonText(message), o.priority, o.timeoutMs, o.id, o.metadata, false, promise);
    });
  }

  /**
   * Sends `message` to `actor` without waiting for its turn (a tell): it
   * holds its place in the mailbox when this returns, so tells from one
   * sender keep their order. A failed turn is counted in the type's
   * `tellsFailed`. Throws a {@link PacketFlowError} (PF400) for a message
   * the core refuses. Node stays up until the told message has run (a
   * local actor's mailbox counts as pending work).
   * @param {import('./index').ActorRef} actor
   * @param {import('./index').ActorMessage} message
   * @param {import('./index').MessageOptions} [options]
   * @returns {void}
   */
  tell(actor, message, options = undefined) {
    const { type, id } = refOf(actor);
    const o = messageOptions(options);
    this.#native.actorTell(type, id, message, jsonText(message), o.priority, o.timeoutMs, o.id, o.metadata);
  }

  /**
   * Stops `actor` after the messages queued before this one and deletes
   * its state. Rejects with PF404 if it does not exist.
   * @param {import('./index').ActorRef} actor
   * @param {import('./index').MessageOptions} [options]
   * @returns {Promise<void>}
   */
  stop(actor, options = undefined) {
    return this.#call((promise) => {
      const { type, id } = refOf(actor);
      const o = messageOptions(options);
      const native = this.#native;
      return native.actorSubmit('stop', type, id, null, undefined, o.priority, o.timeoutMs, o.id, o.metadata, false, promise);
    }).then(() => undefined);
  }

  /**
   * The ids of the actors of `type` this reactor hosts (in memory or in
   * its store), sorted. Rejects with PF404 if the type is not registered here.
   * @param {string} type
   * @returns {Promise<string[]>}
   */
  list(type) {
    return this.#call((id) => this.#native.actorList(type, false, id));
  }

  /**
   * How many actors of `type` this reactor hosts (see {@link Actors#list}).
   * @param {string} type
   * @returns {Promise<number>}
   */
  count(type) {
    return this.#call((id) => this.#native.actorList(type, true, id));
  }

  /**
   * Makes a Promise settled by the addon: `begin(id)` starts the work (it
   * may throw: the Promise then rejects with that, and nothing started).
   * @param {(id: number) => unknown} begin
   * @returns {Promise<any>}
   */
  #call(begin) {
    return this.#dispatch.promised(begin);
  }
}

/**
 * A PacketFlow reactor: register handlers, submit packets, get results.
 *
 * ```js
 * const { Reactor } = require('packetflow');
 * const r = new Reactor({ name: 'demo' });
 * r.register('df', 'transform', async (data) => data.toUpperCase());
 * const result = await r.submit({ group: 'df', element: 'transform', data: 'hi' });
 * await r.stop();
 * ```
 */
class Reactor {
  #native;
  #dispatch;
  #actors;

  /**
   * @param {import('./index').ReactorOptions} [options]
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object, got ${typeName(options)}`);
    }
    for (const key of Object.keys(options)) {
      if (!OPTIONS.has(key)) {
        throw new TypeError(`unknown option ${JSON.stringify(key)} (expected one of ${[...OPTIONS].join(', ')})`);
      }
    }
    const name = stringOption(options.name, 'name');
    const maxInflight = integerOption(options, 'maxInflight');
    const maxQueue = integerOption(options, 'maxQueue');
    const finishedMemory = integerOption(options, 'finishedMemory');
    const busyPollUs = integerOption(options, 'busyPollUs');
    const threadSockets = socketsOption(options.sockets, busyPollUs);
    const actorPassivateAfterMs = integerOption(options, 'actorPassivateAfterMs');
    const actorRememberedTurns = integerOption(options, 'actorRememberedTurns');
    const actorStore = stringOption(options.actorStore, 'actorStore');
    // The patterns are the core's to parse (PF400 naming a bad one).
    const stdlib = stringOption(options.stdlib, 'stdlib');
    this.#dispatch = new Dispatch();
    this.#native = new NativeReactor(
      name,
      maxInflight,
      maxQueue,
      finishedMemory,
      busyPollUs,
      threadSockets,
      actorPassivateAfterMs,
      actorRememberedTurns,
      actorStore,
      stdlib,
      dispatch,
      dispatchTurns,
      runTurn,
      settle,
      flushSoon,
      this.#dispatch,
      PacketFlowError,
    );
    this.#dispatch.native = this.#native;
    this.#actors = new Actors(this.#native, this.#dispatch);
  }

  /**
   * The reactor's actors: register behaviours, create actors and message
   * them. @type {Actors}
   */
  get actors() {
    return this.#actors;
  }

  /** The reactor's name. @type {string} */
  get name() {
    return this.#native.name;
  }

  /** Whether {@link Reactor#stop} was called. @type {boolean} */
  get stopped() {
    return this.#native.stopped;
  }

  /**
   * Registers (or replaces) the handler of `group:element`. It is called
   * with `(data, ctx)` and may return the result or a Promise of it.
   * @template [T=any]
   * @template [R=import('./index').JsonInput]
   * @param {import('./index').Group | (string & {})} group one of cf, df, ed, co, mc, rm
   * @param {string} element 1-64 characters of [A-Za-z0-9_.-]
   * @param {import('./index').Handler<T, R>} handler
   * @returns {void}
   */
  register(group, element, handler) {
    if (typeof handler !== 'function') {
      throw new TypeError(`handler must be a function, got ${typeName(handler)}`);
    }
    const fns = this.#dispatch.fns;
    // A new slot per registration: packets already given to the previous
    // handler of this key still find it (as in the core, which lets them
    // finish with the handler they were routed to).
    fns.push(/** @type {import('./index').Handler} */ (handler));
    try {
      this.#native.register(group, element, fns.length - 1);
    } catch (error) {
      fns[fns.length - 1] = undefined;
      throw error;
    }
  }

  /**
   * Removes the handler of `group:element`.
   * @param {import('./index').Group | (string & {})} group
   * @param {string} element
   * @returns {boolean} whether there was one
   */
  unregister(group, element) {
    return this.#native.unregister(group, element);
  }

  /**
   * Submits a packet and resolves to its {@link Result} (success or error:
   * every submitted packet gets one). Rejects with a `TypeError` for values
   * that are not JSON-shaped, a `RangeError` for a `BigInt` beyond 64 bits,
   * or a `PacketFlowError` (PF400) for a packet that breaks a protocol rule,
   * before anything is submitted. With a `signal` (an `AbortSignal`): one
   * aborted already rejects with its `reason` and submits nothing; an abort
   * later cancels the packet (its handler's `ctx.signal` aborts, PF499) and
   * rejects with the signal's `reason`, as `fetch` does.
   * @template [R=import('./index').JsonValue]
   * @overload
   * @param {import('./index').PacketInit} packet
   * @returns {Promise<import('./index').Result<R>>}
   */
  /**
   * @template [R=import('./index').JsonValue]
   * @overload
   * @param {import('./index').Group | (string & {})} group
   * @param {string} element
   * @param {import('./index').JsonInput} [data]
   * @param {import('./index').SubmitOptions} [options]
   * @returns {Promise<import('./index').Result<R>>}
   */
  /**
   * @param {any[]} args
   * @returns {Promise<any>}
   */
  submit(...args) {
    const state = this.#dispatch;
    const id = state.nextId++;
    try {
      const p = packetOf(args);
      if (p.signal !== undefined) return this.#abortable(p, false);
      const promise = new Promise((resolve) => state.pending.set(id, resolve));
      this.#native.submit(p.group, p.element, p.data, jsonText(p.data), p.priority, p.timeoutMs, p.id, p.dependencies, p.metadata, false, false, id);
      return promise;
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
  }

  /**
   * Like {@link Reactor#submit}, but resolves to the result's data and
   * rejects with a {@link PacketFlowError} when the packet failed (a
   * `signal` as for `submit`).
   * @template [R=import('./index').JsonValue]
   * @overload
   * @param {import('./index').PacketInit} packet
   * @returns {Promise<R>}
   */
  /**
   * @template [R=import('./index').JsonValue]
   * @overload
   * @param {import('./index').Group | (string & {})} group
   * @param {string} element
   * @param {import('./index').JsonInput} [data]
   * @param {import('./index').SubmitOptions} [options]
   * @returns {Promise<R>}
   */
  /**
   * @param {any[]} args
   * @returns {Promise<any>}
   */
  call(...args) {
    const state = this.#dispatch;
    const id = state.nextId++;
    try {
      const p = packetOf(args);
      if (p.signal !== undefined) return this.#abortable(p, true);
      const promise = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
      this.#native.submit(p.group, p.element, p.data, jsonText(p.data), p.priority, p.timeoutMs, p.id, p.dependencies, p.metadata, true, false, id);
      return promise;
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
  }

  /**
   * `submit` (or, `asCall`, `call`) of a packet given a `signal`: see
   * {@link Dispatch#abortable}.
   * @param {import('./index').PacketInit} p
   * @param {boolean} asCall
   * @returns {Promise<any>}
   */
  #abortable(p, asCall) {
    const native = this.#native;
    return this.#dispatch.abortable(p.signal, !asCall, (id) =>
      native.submit(p.group, p.element, p.data, jsonText(p.data), p.priority, p.timeoutMs, p.id, p.dependencies, p.metadata, asCall, true, id),
    );
  }

  /**
   * Cancels the packet `packetId` in flight on this reactor, whoever
   * submitted it (this process or a peer): it is answered PF499 at once
   * (its submitter's `call` rejects, `submit` resolves to that error
   * `Result`); a handler not started never starts, a running one sees its
   * `ctx.signal` abort; its `ctx.call` children are cancelled (here and on
   * peers) and packets that depend on it answer PF424. What that settles
   * here (Promises, signals) is settled before this returns. Idempotent.
   * To give up on a packet you submitted, pass a `signal` to `submit` /
   * `call` instead.
   * @param {string} packetId
   * @returns {boolean} whether it was in flight (`false`: answered
   *   already, or unknown; nothing is remembered for a later submit)
   * @throws {TypeError} for a `packetId` that is not a string;
   *   {@link PacketFlowError} PF400 for one no packet can have (empty, or
   *   over 128 bytes)
   */
  cancel(packetId) {
    return this.#native.cancel(packetId);
  }

  /**
   * Accepts peers on `addr` (`'HOST:PORT'`; port 0 picks a free one) and
   * resolves to the address bound, `{host, port, url}`: `url` is what peers
   * pass to {@link Reactor#connect} (`wss://` when `tlsCert` is given). The
   * same port answers `GET /health` and `GET /metrics`. From then until
   * {@link Reactor#stop}, the reactor keeps node alive (it is a server).
   *
   * `authFile` (a tokens file, `.toml` or `.json`) and/or `tokens` turn
   * auth on: every peer must present one of the tokens and may only submit
   * and serve what its token allows. `tlsCert` (a PEM chain, leaf first)
   * and `tlsKey` (its PEM key), both or neither, make the listener speak
   * `wss://` only. The files are read here.
   *
   * Rejects with a `PacketFlowError`: PF503 if the address cannot be bound
   * or the reactor is stopped, PF400 for a bad tokens file, token or TLS
   * file (the message names it); with a `TypeError` naming the option for
   * a value of the wrong type or an unknown option.
   * @param {string} addr
   * @param {import('./index').ListenOptions} [options]
   * @returns {Promise<import('./index').ListenAddress>}
   */
  listen(addr, options = {}) {
    let checked;
    try {
      checked = listenOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    const { authFile, tokens, tlsCert, tlsKey } = checked;
    return this.#network((/** @type {number} */ id) => this.#native.listen(addr, authFile, tokens, tlsCert, tlsKey, id));
  }

  /**
   * Dials a peer (`'ws://HOST:PORT/packetflow/v1'`, or `wss://`), or joins
   * a NATS system (`'nats://HOST:PORT'` or `tls://`, several servers
   * separated by commas), and resolves once the connection is up and the
   * peer's handlers are known (on NATS: once this reactor's handlers are
   * subscribed on the server): packets with no local handler are then
   * routed to peers, then over NATS. A lost connection is redialled with
   * backoff until {@link Reactor#stop}; until then the reactor keeps node
   * alive.
   *
   * Both kinds: `token` is presented to a node (or NATS server) that
   * requires one (in the clear over `ws://`: use `wss://` beyond
   * loopback); `tlsCa` is a PEM file of the authorities a `wss://` node's
   * or a NATS server's certificate must chain to (default: the system's
   * roots). WebSocket only: `msgpack: true` speaks MessagePack instead of
   * JSON. NATS only: `namespace`, `name`, `user` and `password`,
   * `nkeySeed`, `credentialsFile`, `tlsCert` and `tlsKey`, `requireTls`,
   * `connectTimeoutMs`; and, with JetStream on the servers, `membership`,
   * `membershipHeartbeatMs` and `actorStore` (see index.d.ts's
   * `ConnectOptions`).
   *
   * Rejects with a `PacketFlowError`: PF401 when the node or server refuses
   * the credentials, PF503 if it cannot be reached, the TLS handshake fails
   * or the reactor is stopped, PF400 (naming the option) for a malformed
   * URL, token or file, half of a pair, a heartbeat out of bounds,
   * `actorStore` on a reactor whose actor types use another store, or an
   * option of the other kind of URL; with a `TypeError` naming the option for a value of the wrong type
   * or an unknown option.
   * @param {string} url
   * @param {import('./index').ConnectOptions} [options]
   * @returns {Promise<void>}
   */
  connect(url, options = {}) {
    let checked;
    try {
      checked = connectOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#network((/** @type {number} */ id) => this.#native.connect(url, checked, id)).then(() => undefined);
  }

  /**
   * Runs a network call for a new Promise; on success, holds node alive.
   * @param {(id: number) => void} begin starts the call for the Promise `id`
   * @returns {Promise<any>}
   */
  #network(begin) {
    const state = this.#dispatch;
    const id = state.nextId++;
    const promise = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
    try {
      begin(id);
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
    const native = this.#native;
    return promise.then((value) => {
      native.holdNetwork();
      return value;
    });
  }

  /**
   * Stops the reactor: packets in flight and later submits are answered
   * PF503 (`stopped` is true at once). On the network, connections send
   * those answers and close (code 1001), listeners stop, and node is no
   * longer kept alive. Resolves once the connections are closed and every
   * Promise of this reactor has settled. Idempotent.
   * @returns {Promise<void>}
   */
  stop() {
    const state = this.#dispatch;
    const id = state.nextId++;
    const stopped = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
    try {
      this.#native.stop(id);
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
    return stopped.then(() => state.idle());
  }

  /** A snapshot of the reactor's counters. */
  stats() {
    return this.#native.stats();
  }
}

/**
 * Names of `T`'s public members that `Declared` lacks: `never` when the
 * declarations cover the implementation.
 * @template T, Declared
 * @typedef {Exclude<keyof T, keyof Declared>} Undeclared
 */
/**
 * Accepts `never` only: a type argument that is not `never` is a type error.
 * @template {never} T
 * @typedef {T} None
 */
/**
 * What the classes have beyond index.d.ts: nothing (else tsc fails here).
 * @typedef {None<Undeclared<Reactor, import('./index').Reactor>
 *   | Undeclared<Context, import('./index').Context>
 *   | Undeclared<ActorContext, import('./index').ActorContext>
 *   | Undeclared<Actors, import('./index').Actors>
 *   | Undeclared<PacketFlowError, import('./index').PacketFlowError>>} NothingUndeclared
 */

// index.d.ts declares what this file exports, and tsc (checkJs, see
// tsconfig.json; run by the test suite) holds the exports to it: every
// declared member exists here with a compatible type (`@satisfies`), and
// nothing public exists here that is not declared (`NothingUndeclared`).
module.exports = /** @satisfies {typeof import('./index')} */ ({
  Reactor,
  PacketFlowError,
  Context,
  ActorContext,
  Actors,
});
