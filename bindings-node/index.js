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
 *   with a {@link PacketFlowError}.
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
 * What a handler knows about the packet it serves, and how it calls other
 * handlers on that packet's behalf.
 */
class Context {
  #state;
  #token;
  #traceId;
  #deadline;

  /**
   * Made by the dispatcher only (index.d.ts declares it private).
   * @internal
   * @param {Dispatch} state
   * @param {number} token
   * @param {string} packetId
   * @param {string | undefined} traceId
   * @param {Record<string, import('./index').JsonValue> | null} metadata
   * @param {number} deadline
   */
  constructor(state, token, packetId, traceId, metadata, deadline) {
    this.#state = state;
    this.#token = token;
    this.#traceId = traceId;
    this.#deadline = deadline;
    /** The id of the packet being handled. @type {string} */
    this.packetId = packetId;
    /** The packet's metadata, or `null`. @type {Record<string, import('./index').JsonValue> | null} */
    this.metadata = metadata;
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
   * Calls `group:element` with `data` as a child of this packet: the child
   * inherits what is left of the deadline and the trace id. Resolves to the
   * child's data or rejects with a {@link PacketFlowError}. Call it before
   * the handler answers.
   * @template [R=import('./index').JsonValue]
   * @param {import('./index').Group | (string & {})} group
   * @param {string} element
   * @param {import('./index').JsonInput} [data]
   * @returns {Promise<R>}
   */
  call(group, element, data) {
    const state = this.#state;
    const id = state.nextId++;
    /** @type {Promise<R>} */
    const promise = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
    try {
      state.native.contextCall(this.#token, group, element, data, id);
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
    return promise;
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
    /** The addon's reactor. @type {any} */
    this.native = null;
    /**
     * Pending Promises by id: a `resolve` function for `submit` (it never
     * rejects once submitted), `{resolve, reject}` for `call`/`ctx.call`.
     * @type {Map<number, Pending>}
     */
    this.pending = new Map();
    this.nextId = 1;
    /** @type {Array<() => void>} */
    this.idleWaiters = [];
    /** Async answers of this microtask turn: `token, value, ...`. @type {unknown[]} */
    this.ok = [];
    /** Async failures of this turn: `token, code | undefined, error, ...`. @type {unknown[]} */
    this.failed = [];
    this.flushing = false;
    this.flush = () => {
      this.flushing = false;
      const { ok, failed } = this;
      this.ok = [];
      this.failed = [];
      this.native.complete(ok, failed);
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
        if (out !== null && typeof out === 'object' && typeof (/** @type {any} */ (out).then) === 'function') {
          this.later(token, /** @type {PromiseLike<unknown>} */ (out));
          continue;
        }
      } catch (error) {
        failed.push(token, codeOf(error), error);
        continue;
      }
      ok.push(token, out);
    }
    if (ok.length > 0 || failed.length > 0) this.native.complete(ok, failed);
  }

  /**
   * @param {number} token
   * @param {PromiseLike<unknown>} promise
   */
  later(token, promise) {
    promise.then(
      (value) => {
        this.ok.push(token, value);
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
    if (pending.size === 0 && this.idleWaiters.length > 0) {
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
 * The addon calls this with a batch of answers as arguments.
 * @param {Dispatch} state
 * @param {...any} batch
 */
function settle(state, ...batch) {
  state.settle(batch);
}

const OPTIONS = new Set(['name', 'maxInflight', 'maxQueue', 'finishedMemory', 'busyPollUs']);

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

/**
 * `connect`'s options, checked.
 * @param {import('./index').ConnectOptions | undefined} options
 */
function connectOptions(options) {
  options = optionsObject(options);
  onlyKeys(options, ['msgpack', 'token', 'tlsCa']);
  const msgpack = options.msgpack === undefined ? false : options.msgpack;
  if (typeof msgpack !== 'boolean') {
    throw new TypeError(`msgpack must be a boolean, got ${typeName(msgpack)}`);
  }
  return { msgpack, token: stringOption(options.token, 'token'), tlsCa: stringOption(options.tlsCa, 'tlsCa') };
}

/**
 * A numeric reactor option as the integer the addon takes (`undefined` if
 * absent): its value is the core's to judge (`ReactorConfig::validate`).
 */
/**
 * @param {import('./index').ReactorOptions} options
 * @param {'maxInflight' | 'maxQueue' | 'finishedMemory' | 'busyPollUs'} key
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
    this.#dispatch = new Dispatch();
    this.#native = new NativeReactor(
      name,
      maxInflight,
      maxQueue,
      finishedMemory,
      busyPollUs,
      dispatch,
      settle,
      this.#dispatch,
      PacketFlowError,
    );
    this.#dispatch.native = this.#native;
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
   * before anything is submitted.
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
      const promise = new Promise((resolve) => state.pending.set(id, resolve));
      this.#native.submit(p.group, p.element, p.data, p.priority, p.timeoutMs, p.id, p.dependencies, p.metadata, false, id);
      return promise;
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
  }

  /**
   * Like {@link Reactor#submit}, but resolves to the result's data and
   * rejects with a {@link PacketFlowError} when the packet failed.
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
      const promise = new Promise((resolve, reject) => state.pending.set(id, { resolve, reject }));
      this.#native.submit(p.group, p.element, p.data, p.priority, p.timeoutMs, p.id, p.dependencies, p.metadata, true, id);
      return promise;
    } catch (error) {
      state.pending.delete(id);
      return Promise.reject(error);
    }
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
   * Dials a peer (`'ws://HOST:PORT/packetflow/v1'`, or `wss://`) and
   * resolves once the connection is up and the peer's handlers are known:
   * packets with no local handler are then routed to peers. A lost
   * connection is redialled with backoff until {@link Reactor#stop}; until
   * then the reactor keeps node alive.
   *
   * `msgpack: true` speaks MessagePack instead of JSON; `token` is
   * presented to a node that requires one (in the clear over `ws://`: use
   * `wss://` beyond loopback); `tlsCa` is a PEM file of the authorities a
   * `wss://` node's certificate must chain to (default: the system's roots).
   *
   * Rejects with a `PacketFlowError`: PF401 when the node refuses the token
   * (or wanted one), PF503 if the peer cannot be reached, the TLS handshake
   * fails or the reactor is stopped, PF400 for a malformed URL, token or CA
   * file; with a `TypeError` naming the option for a value of the wrong
   * type or an unknown option.
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
    const { msgpack, token, tlsCa } = checked;
    return this.#network((/** @type {number} */ id) => this.#native.connect(url, msgpack, token, tlsCa, id)).then(() => undefined);
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
 *   | Undeclared<PacketFlowError, import('./index').PacketFlowError>>} NothingUndeclared
 */

// index.d.ts declares what this file exports, and tsc (checkJs, see
// tsconfig.json; run by the test suite) holds the exports to it: every
// declared member exists here with a compatible type (`@satisfies`), and
// nothing public exists here that is not declared (`NothingUndeclared`).
module.exports = /** @satisfies {typeof import('./index')} */ ({ Reactor, PacketFlowError, Context });
