// Types of the `packetflow` package, hand-written. The test suite checks
// them with `tsc --noEmit` twice: index.js against them (tsconfig.json:
// the implementation must match them, both ways), and
// test/types/example.ts (idiomatic code must compile, misuse must not).

/**
 * A JSON value: what crosses between handlers and nodes.
 *
 * Integers are exact: one outside the safe range (|n| > 2^53 − 1, i.e.
 * beyond `Number.MAX_SAFE_INTEGER`) arrives as a `bigint` holding its exact
 * value; safe integers and floats arrive as `number`s.
 */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * A value the binding accepts as JSON, with `JSON.stringify`'s leniency:
 * `undefined` is dropped from objects (and is `null` in arrays), and
 * objects with a `toJSON` method (`Date`, `Buffer`) convert through it.
 * A `bigint` from −2^63 to 2^64 − 1 crosses as that exact integer; a
 * `number` that is not a safe integer crosses as the float it is.
 * Functions, symbols, cycles, `NaN` and `±Infinity` raise a `TypeError`
 * naming the type and its path (`data.a[2]: Function is not
 * JSON-serializable`); a `bigint` beyond 64 bits raises a `RangeError`
 * naming its path (`data.id: BigInt 18446744073709551616n is outside the
 * range of 64-bit integers (...)`).
 */
export type JsonInput = unknown;

/** The six behavioural groups of the protocol. */
export type Group = 'cf' | 'df' | 'ed' | 'co' | 'mc' | 'rm';

/** A protocol error code (`PF001`, `PF408`, `PF500`, ...). */
export type ErrorCode =
  | 'PF001'
  | 'PF400'
  | 'PF401'
  | 'PF403'
  | 'PF404'
  | 'PF408'
  | 'PF409'
  | 'PF413'
  | 'PF424'
  | 'PF429'
  | 'PF499'
  | 'PF500'
  | 'PF503'
  | 'PF508'
  | (string & {});

/** Settings of a {@link Reactor}. */
export interface ReactorOptions {
  /** Name shown in stats and announced to peers. Default `"packetflow"`. */
  name?: string;
  /** Most handlers running at once; more packets wait in the queue. Default 1024. */
  maxInflight?: number;
  /** Most packets waiting for a slot; past it, submits get PF429. Default 65536. */
  maxQueue?: number;
  /** How many finished packet ids are remembered for dependencies. Default 4096. */
  finishedMemory?: number;
  /**
   * Microseconds to keep polling the network, instead of sleeping, after
   * frames arrive (while at most 8 packets are in flight): lower
   * latency where waking a thread is slow, as on virtual machines, for up
   * to a core spinning while traffic is sparse. Default 0: off.
   */
  busyPollUs?: number;
  /**
   * Where the reactor's network connections run. `'loop'` (the default):
   * on the JS thread, their sockets watched by node's event loop, so a
   * frame is read, decoded, handed to its handler and answered with no
   * other thread waking (the fewest wake-ups per round trip, the lowest
   * latency). `'thread'`: on the addon's own thread, which reads, decodes
   * and writes while JS runs: for CPU-heavy handlers under sustained load,
   * where that work alongside JS is worth the wake-ups. Either way a JS
   * thread blocked for seconds does not silence the connections (the
   * addon's thread answers heartbeats meanwhile). The default is
   * `'thread'` when `busyPollUs` is set (busy-polling is that thread's);
   * `'loop'` with `busyPollUs` is a `TypeError`.
   */
  sockets?: 'loop' | 'thread';
  /**
   * A file for actor state (a redb database, created if absent): every
   * committed turn is written before its reply leaves, so acknowledged
   * messages survive a crash. One process opens a file at a time. Default:
   * state in memory.
   */
  actorStore?: string;
  /**
   * Milliseconds without a message after which an actor leaves memory
   * (its state kept in the store; its next message brings it back).
   * Default 600,000 (10 minutes).
   */
  actorPassivateAfterMs?: number;
  /**
   * How many of its last turns each actor remembers (packet id and
   * reply), so that a message re-sent with the same id is answered
   * without running again. Default 32.
   */
  actorRememberedTurns?: number;
  /**
   * The standard elements this reactor hosts (docs/stdlib.md), as
   * comma-separated keys and patterns: `'cf:*,co:gather'`, `'*'` for all.
   * Each serves its key only while no handler of that key is registered
   * here and no peer announced one; they are not announced to peers.
   * Default: none. A pattern matching no standard element is a
   * PacketFlowError (PF400) naming it.
   */
  stdlib?: string;
}

/** Options of a packet, besides its address and data. */
export interface SubmitOptions {
  /** 1-10, 10 most urgent; default 5. Out of range: PF400. */
  priority?: number;
  /** How long to wait for the result, in ms (1 to 86,400,000); default 30,000. */
  timeoutMs?: number;
  /** The packet id; default a fresh UUID v4. Must be unique among packets in flight (PF409). */
  id?: string;
  /** Ids of packets that must complete successfully first (PF424 otherwise); at most 64. */
  dependencies?: string[];
  /** Free-form metadata; keys starting with `pf.` are reserved for the runtime. */
  metadata?: Record<string, JsonInput>;
  /**
   * Gives up on the packet when it aborts: the packet is cancelled (its
   * handler's {@link Context.signal} aborts, its calls are cancelled, its
   * dependents answer PF424) and the Promise rejects with the signal's
   * `reason`, as `fetch` does. Already aborted: rejects at once, nothing is
   * submitted.
   */
  signal?: AbortSignal;
}

/** A packet to submit: its address, its data and options. */
export interface PacketInit<T = JsonInput> extends SubmitOptions {
  /** One of cf, df, ed, co, mc, rm. */
  group: Group | (string & {});
  /** 1-64 characters of `[A-Za-z0-9_.-]`. */
  element: string;
  /** Any JSON value; `undefined` is sent as `null`. */
  data?: T;
}

/** A successful {@link Result}. */
export interface SuccessResult<T = JsonValue> {
  /** The id of the packet this answers. */
  packetId: string;
  status: 'success';
  /** The handler's value. */
  data: T;
  error: null;
  /** Time from acceptance to answer, in whole milliseconds. */
  durationMs: number;
}

/** A failed {@link Result}. */
export interface ErrorResult {
  /** The id of the packet this answers. */
  packetId: string;
  status: 'error';
  data: null;
  /** What went wrong, with its protocol code. */
  error: PacketFlowError;
  /** Time from acceptance to answer, in whole milliseconds. */
  durationMs: number;
}

/**
 * The one answer every submitted packet gets (the wire's `Result`, with
 * camelCase field names): narrow it on `status`.
 */
export type Result<T = JsonValue> = SuccessResult<T> | ErrorResult;

/** The error of a failed packet. */
export declare class PacketFlowError extends Error {
  /**
   * @param code a `PFnnn` code
   * @param message what went wrong
   */
  constructor(code: ErrorCode, message: string);
  /** The protocol's code: `PF001` no handler, `PF408` timeout, `PF500` handler failed, ... */
  code: ErrorCode;
  name: string;
}

/** What a handler knows about the packet it serves. */
export declare class Context {
  /** Contexts are made by the reactor, for its handlers. */
  protected constructor(...internal: never[]);
  /**
   * The id of the packet being handled. A message sent with
   * `actors.send` without an id gets one made when this is first read,
   * which must be during the turn (afterwards it throws PF503).
   */
  readonly packetId: string;
  /** The packet's metadata, or `null`. */
  readonly metadata: Record<string, JsonValue> | null;
  /** The trace id shared by this packet and its child calls. */
  readonly traceId: string;
  /** Milliseconds left before the packet's deadline (0 once it passed). */
  readonly remainingMs: number;
  /**
   * The packet's priority (1-10, 10 most urgent), which its calls inherit.
   * Read it while the handler runs.
   * @throws PacketFlowError (PF503) once the handler answered.
   */
  readonly priority: number;
  /**
   * Aborted once this packet's work is no longer wanted: it was cancelled
   * (its submitter's signal aborted, {@link Reactor.cancel}, the packet
   * that called it was cancelled, the connection it came in on went away)
   * or it is over (answered, past its deadline, its reactor stopping). Its
   * `reason` is a {@link PacketFlowError} with code PF499. Pass it to
   * `fetch` and the like, or listen for `abort`. Made on first read: a
   * handler that never reads it costs nothing more.
   */
  readonly signal: AbortSignal;
  /**
   * Calls `group:element` as a child of this packet: it inherits the
   * remaining deadline (unless `options.timeoutMs` is shorter), the
   * priority (unless `options.priority` names one) and the trace id, and is cancelled with this packet (the call then
   * rejects with PF499). Resolves to the child's data or rejects with a
   * {@link PacketFlowError}; call it before the handler answers.
   */
  call<R = JsonValue>(group: Group | (string & {}), element: string, data?: JsonInput, options?: CallOptions): Promise<R>;
  /**
   * Sends `message` to `actor` as a child of this packet (same deadline,
   * trace and reentrancy rules, and options, as {@link Context.call});
   * resolves to the turn's reply or rejects with a {@link PacketFlowError}.
   */
  send<R = JsonValue>(actor: ActorRef, message: ActorMessage, options?: CallOptions): Promise<R>;
  /**
   * Sends `message` to `actor` without waiting for its turn: it holds its
   * place in the mailbox when this returns, in the order of its priority.
   * @throws PacketFlowError for a message or an option the core refuses.
   */
  tell(actor: ActorRef, message: ActorMessage, options?: TellOptions): void;
}

/** Options of {@link Context.tell}. */
export interface TellOptions {
  /** The message's priority, 1-10 (out of range: PF400); default: the calling packet's. */
  priority?: number;
  /**
   * How long it may wait in the mailbox, in ms (1-86400000, else PF400),
   * when shorter than what is left of the calling packet's deadline.
   */
  timeoutMs?: number;
}

/** Options of {@link Context.call} and {@link Context.send}. */
export interface CallOptions extends TellOptions {
  /** Cancels the child when it aborts; the call rejects with the signal's `reason`. */
  signal?: AbortSignal;
}

/** An actor's address: its type and its id. Plain data: it may travel in messages. */
export interface ActorRef {
  /** The actor type (1-58 characters of `[A-Za-z0-9_.-]`). */
  readonly type: string;
  /** The id within the type (1-128 bytes). */
  readonly id: string;
}

/** A message for an actor: `type` names the behaviour's method, which gets the whole object. */
export interface ActorMessage {
  type: string;
  [field: string]: JsonInput;
}

/** Options of an actor message ({@link Actors.send}, {@link Actors.tell}, {@link Actors.stop}). */
export interface MessageOptions {
  /**
   * The packet id (default a fresh UUID v4). A message re-sent with the id
   * of one the actor applied is answered from memory, not run again.
   */
  id?: string;
  /** 1-10, 10 most urgent (the mailbox's order); default 5. */
  priority?: number;
  /** How long to wait for the reply, in ms; default 30,000. */
  timeoutMs?: number;
  /** Free-form metadata; keys starting with `pf.` are reserved for the runtime. */
  metadata?: Record<string, JsonInput>;
}

/** Options of {@link Actors.send}: a message's, and a signal. */
export interface SendOptions extends MessageOptions {
  /**
   * Withdraws the message when it aborts (see {@link Actors.send}); the
   * Promise rejects with the signal's `reason`. Already aborted: rejects at
   * once, nothing is sent.
   */
  signal?: AbortSignal;
}

/** Options of {@link Actors.create}. */
export interface CreateOptions {
  /** The actor's id (1-128 bytes); default a fresh UUID v4. */
  id?: string;
  /** 1-10, 10 most urgent; default 5. */
  priority?: number;
  /** How long to wait for the answer, in ms; default 30,000. */
  timeoutMs?: number;
  /** Free-form metadata; keys starting with `pf.` are reserved for the runtime. */
  metadata?: Record<string, JsonInput>;
}

/** Options of {@link Actors.registerBehavior}. */
export interface BehaviorOptions<S = any> {
  /**
   * The state an actor of this type starts with when a message reaches an
   * id that does not exist (a virtual actor: no `create` needed). Without
   * it, such a message is refused with PF404.
   */
  initialState?: S;
}

/**
 * One method of a behaviour: gets the message and the turn's
 * {@link ActorContext}, returns the reply or a Promise of it. A throw or a
 * rejection answers PF500 (a rethrown {@link PacketFlowError} keeps its
 * code) and leaves the state as it was.
 */
export type ActorMethod<S = any, T = any, R = JsonInput> = (message: T, context: ActorContext<S>) => R | PromiseLike<R>;

/** A behaviour: one method per message type (an object literal or a class instance). */
export type Behavior<S = any> = { [messageType: string]: ActorMethod<S> };

/** What an actor's method knows during its turn, besides the message. */
export declare class ActorContext<S = any> extends Context {
  /** Contexts are made by the reactor, for its actors. */
  private constructor(...internal: never[]);
  /**
   * The actor's state: read it, change it in place, or replace it. It
   * becomes the actor's only if the method returns (or its Promise
   * resolves); a throw leaves the state as it was.
   */
  state: S;
  /** The actor running this turn. */
  readonly actor: ActorRef;
  /** Stops the actor once this turn's reply is sent: its state is deleted. */
  stop(): void;
}

/**
 * The actors of a reactor (`r.actors`): one mailbox and one turn at a time
 * per actor, transactional turns, effectively-once repeats (see
 * docs/protocol.md, "Actors").
 */
export declare class Actors {
  /** Made by the reactor: use `r.actors`. */
  private constructor(...internal: never[]);
  /**
   * Registers (or replaces) actor type `type`: a message `{type: 'm', ...}`
   * runs `behavior.m(message, context)`. The behaviour's methods are the
   * only message types the type takes (PF400 names them for any other).
   * @throws PacketFlowError (PF400) for an invalid type name; TypeError for
   * a behaviour with no methods, an unknown option or an initial state
   * that is not JSON-shaped.
   */
  registerBehavior<S = any>(type: string, behavior: Behavior<S>, options?: BehaviorOptions<S>): void;
  /**
   * Creates an actor with `state` (default `null`); resolves to its ref.
   * Rejects with PF409 if the id exists.
   */
  create<S = JsonInput>(type: string, state?: S, options?: CreateOptions): Promise<ActorRef>;
  /**
   * Sends `message` and resolves to the method's reply. Rejects with a
   * {@link PacketFlowError}: PF404 for an actor that does not exist (unless
   * its type has an initial state), PF400 for a message type it does not
   * take, PF500 when the method threw, PF408 past the deadline. With
   * `options.signal`: rejects with its `reason` when it aborts, and the
   * message is withdrawn (see {@link SendOptions}).
   */
  send<R = JsonValue>(actor: ActorRef, message: ActorMessage, options?: SendOptions): Promise<R>;
  /**
   * Sends `message` without waiting for its turn: it holds its place in the
   * mailbox when this returns. Node stays up until a local actor has run it.
   * @throws PacketFlowError (PF400) for a message the core refuses.
   */
  tell(actor: ActorRef, message: ActorMessage, options?: MessageOptions): void;
  /** Stops the actor after the messages queued before this, deleting its state; PF404 if it does not exist. */
  stop(actor: ActorRef, options?: MessageOptions): Promise<void>;
  /** The ids of the actors of `type` this reactor hosts, sorted; PF404 if the type is not registered here. */
  list(type: string): Promise<string[]>;
  /** How many actors of `type` this reactor hosts. */
  count(type: string): Promise<number>;
}

/**
 * A handler: gets the packet's data and its {@link Context}, returns the
 * result or a Promise of it. A throw or a rejection answers PF500 with the
 * error's message (a rethrown {@link PacketFlowError} keeps its code).
 */
export type Handler<T = any, R = JsonInput> = (data: T, ctx: Context) => R | PromiseLike<R>;

/** Counters of one `group:element`. */
export interface HandlerStats {
  group: Group;
  element: string;
  /** Packets answered (successes and errors). */
  count: number;
  /** Packets answered with an error. */
  errors: number;
  /** Packets cancelled (PF499, or given up by their submitter); counted among `errors` too. */
  cancelled: number;
  /** Sum of latencies, in microseconds. */
  sumUs: number;
  /** Median latency, in microseconds (histogram bucket bound, at most 25% over). */
  p50Us: number;
  /** 99th-percentile latency, in microseconds. */
  p99Us: number;
  /** Non-empty histogram buckets: `[upper bound in µs, count]`. */
  latencyBuckets: Array<[number, number]>;
}

/** Counters of one actor type on a reactor. */
export interface ActorTypeStats {
  actorType: string;
  /** Actors in memory. */
  active: number;
  /** Actors in the store and not in memory. */
  passivated: number;
  /** Times an actor came into memory (created, loaded or activated). */
  activations: number;
  /** Times an idle actor left memory. */
  passivations: number;
  /** Told messages whose turn failed. */
  tellsFailed: number;
}

/** A snapshot of a reactor's counters. */
export interface ReactorStats {
  name: string;
  /** One entry per registered handler (actor types included, as `rm:actor.T`). */
  handlers: HandlerStats[];
  /** One entry per actor type registered here, sorted by type. */
  actors: ActorTypeStats[];
  /** Packets accepted and not yet answered. */
  inFlight: number;
  /** Packets waiting for a free slot. */
  queued: number;
  /** Packets answered PF001 (no handler). */
  unrouted: number;
  /** Packets cancelled while forwarded to a peer (those run here count in their handler's `cancelled`). */
  forwardsCancelled: number;
  /** Packets by the route that took them. */
  routed: RouteCounts;
  /** The node's connection to NATS; `null` unless it joined NATS. */
  nats: NatsStats | null;
}

/** Packets by the route that took them. */
export interface RouteCounts {
  /** Answered by a local handler. */
  local: number;
  /** Sent to a WebSocket peer. */
  websocket: number;
  /** Sent as a NATS request. */
  nats: number;
}

/** A node's connection to NATS, as {@link Reactor.stats} shows it. */
export interface NatsStats {
  state: 'connected' | 'disconnected' | 'connecting';
  /** `host:port` of the server in use. */
  server: string;
  /** The last round trip to the server, µs. */
  rttUs: number;
  /** Keys served on NATS (the reactor's and its peers'). */
  servedKeys: number;
  /** Of those, the keys of WebSocket peers served there for them. */
  bridgedKeys: number;
  requestsSent: number;
  requestsServed: number;
  /**
   * The live members of the cluster (node ids, this node's among them,
   * sorted); `null` unless it joined with `membership` or `actorStore`.
   */
  members: string[] | null;
}

/** Where a reactor listens, as {@link Reactor.listen} resolves it. */
export interface ListenAddress {
  /** The IP address bound (`127.0.0.1`, `::1`, `0.0.0.0`, ...). */
  host: string;
  /** The port bound (the one the system picked when 0 was asked for). */
  port: number;
  /**
   * The URL peers pass to {@link Reactor.connect}: `ws://HOST:PORT/packetflow/v1`
   * (`wss://` when the listener speaks TLS).
   */
  url: string;
}

/**
 * One token a listener accepts, and what a peer presenting it may do; the
 * fields of an entry of a tokens file (`token_sha256` there). Give exactly
 * one of `token` and `tokenSha256`.
 */
export interface TokenSpec {
  /** Shown in error messages and logs (never the token). Required, unique. */
  name: string;
  /** The secret a peer presents: at least 16 bytes of visible ASCII. */
  token?: string;
  /** Instead of `token`: its SHA-256 as 64 hex digits, so the code holds no secret. */
  tokenSha256?: string;
  /**
   * `group:element` patterns this token may submit: `'*'`, `'df:*'`,
   * `'df:transform'`, `'df:user.*'`, `'*:user.*'`. Missing or empty: nothing.
   */
  submit?: string[];
  /** Patterns this token may serve (announce); missing or empty: nothing. */
  serve?: string[];
  /** May open the node's dashboard (`/ui/`); default `false`. */
  dashboard?: boolean;
}

/**
 * Options of {@link Reactor.listen}. Auth is on when `authFile` or
 * `tokens` is given (their tokens add up); TLS when `tlsCert` and
 * `tlsKey` are (both or neither).
 */
export interface ListenOptions {
  /** A tokens file (`.toml` or `.json`, see docs/security.md), read when listening starts. */
  authFile?: string;
  /** Tokens given in code, in addition to those of `authFile`. */
  tokens?: TokenSpec[];
  /** PEM certificate chain (leaf first): the listener speaks `wss://` only. */
  tlsCert?: string;
  /** PEM private key (PKCS#8, PKCS#1 or SEC1) of `tlsCert`. */
  tlsKey?: string;
}

/**
 * Options of {@link Reactor.connect}. `token` and `tlsCa` apply to both
 * kinds of URL, `msgpack` to WebSocket peers only, the others to NATS only
 * (docs/protocol.md, "NATS"): an option of the other kind of URL is PF400
 * naming it.
 */
export interface ConnectOptions {
  /** WebSocket: speak MessagePack (binary frames) instead of JSON. Default `false`. */
  msgpack?: boolean;
  /**
   * The token presented to a node (as `Authorization: Bearer` and in
   * `hello`) or NATS server that requires one. Sent in the clear over
   * `ws://`: use `wss://` beyond loopback.
   */
  token?: string;
  /**
   * A PEM file of the authorities a `wss://` node's or a NATS server's
   * certificate must chain to; without it, the system's root certificates.
   */
  tlsCa?: string;
  /**
   * NATS: the prefix of the subjects, default `'pf'` (dot-separated tokens
   * of `[A-Za-z0-9_-]`): systems with different namespaces share a server
   * without seeing each other.
   */
  namespace?: string;
  /** NATS: the connection's name on the server; default `packetflow <node id>`. */
  name?: string;
  /** NATS: user and password auth (both or neither; or in the URL). */
  user?: string;
  /** NATS: the password of `user`. */
  password?: string;
  /** NATS: NKey auth, the user's seed (`SU...`). */
  nkeySeed?: string;
  /** NATS: a `.creds` file (JWT and NKey seed). */
  credentialsFile?: string;
  /** NATS: a PEM client certificate, for servers that verify clients (with `tlsKey`). */
  tlsCert?: string;
  /** NATS: the PEM private key of `tlsCert`. */
  tlsKey?: string;
  /** NATS: refuse a server that does not speak TLS, even for `nats://`. Default `false`. */
  requireTls?: boolean;
  /** NATS: bound on opening the connection to one server, in ms (at least 1; default 5000). */
  connectTimeoutMs?: number;
  /**
   * NATS, with JetStream on the servers: join the cluster's members (an
   * entry in the bucket `<namespace>_members`); route keys and actors are
   * then placed over the live members (docs/protocol.md, "Membership").
   * Default `false`.
   */
  membership?: boolean;
  /**
   * NATS: the heartbeat of `membership` in ms, from 10 to 60000 (default
   * 1000), when this reactor makes the members bucket: a dead member leaves
   * every view within three heartbeats. Given only with `membership` or
   * `actorStore`.
   */
  membershipHeartbeatMs?: number;
  /**
   * NATS, with JetStream on the servers: keep actor state in the members'
   * bucket `<namespace>_actors`, so that an actor whose reactor stopped or
   * died comes back on another member with its state. Implies
   * `membership`; connect before registering actor types (a reactor made
   * with `actorStore: FILE`, or whose actor types are registered already,
   * is PF400). Default `false`.
   */
  actorStore?: boolean;
}

/** A PacketFlow reactor: register handlers, submit packets, get results. */
export declare class Reactor {
  /**
   * @throws TypeError for an unknown option or a value of the wrong type;
   * PacketFlowError (PF400) for a value the core refuses (`maxInflight: 0`).
   */
  constructor(options?: ReactorOptions);
  /** The reactor's name. */
  readonly name: string;
  /** Whether {@link Reactor.stop} was called. */
  readonly stopped: boolean;
  /** The reactor's actors: register behaviours, create actors and message them. */
  readonly actors: Actors;
  /**
   * Registers (or replaces) the handler of `group:element`; sync and async
   * functions both work.
   * @throws PacketFlowError (PF400) for an invalid group or element; TypeError for a non-function.
   */
  register<T = any, R = JsonInput>(group: Group | (string & {}), element: string, handler: Handler<T, R>): void;
  /** Removes the handler of `group:element`; `false` if there was none. */
  unregister(group: Group | (string & {}), element: string): boolean;
  /**
   * Submits a packet; resolves to its {@link Result}, success or error.
   * Rejects (before submitting) with a `TypeError` for a value that is not
   * JSON-shaped, a `RangeError` for a `bigint` beyond 64 bits, or a
   * {@link PacketFlowError} PF400 for a packet that breaks a protocol rule.
   * With a `signal`: rejects with its `reason` when it aborts (the packet is
   * cancelled), or at once if it has aborted already (nothing submitted).
   */
  submit<R = JsonValue>(packet: PacketInit): Promise<Result<R>>;
  submit<R = JsonValue>(group: Group | (string & {}), element: string, data?: JsonInput, options?: SubmitOptions): Promise<Result<R>>;
  /** Submits a packet; resolves to its data or rejects with a {@link PacketFlowError}. */
  call<R = JsonValue>(packet: PacketInit): Promise<R>;
  call<R = JsonValue>(group: Group | (string & {}), element: string, data?: JsonInput, options?: SubmitOptions): Promise<R>;
  /**
   * Cancels the packet `packetId` in flight on this reactor (submitted
   * here or by a peer): it is answered PF499 at once, a handler not
   * started never starts, a running one sees its {@link Context.signal}
   * abort, its `ctx.call` children are cancelled (here and on peers), and
   * packets that depend on it answer PF424. Idempotent. Returns whether it
   * was in flight.
   * @throws TypeError for a `packetId` that is not a string;
   * PacketFlowError (PF400) for one no packet can have (empty, over 128 bytes).
   */
  cancel(packetId: string): boolean;
  /**
   * Accepts peers on `addr` (`'HOST:PORT'`; port 0 picks a free one) and
   * resolves to the address bound. The same port answers `GET /health` and
   * `GET /metrics`. From then until {@link Reactor.stop} the reactor keeps
   * node alive (it is a server). See {@link ListenOptions} for tokens and
   * TLS. Rejects with a {@link PacketFlowError}: PF503 if the address
   * cannot be bound or the reactor is stopped, PF400 for a bad tokens file,
   * token or TLS file (the message names it); with a `TypeError` naming the
   * argument or option for a value of the wrong type or an unknown option.
   */
  listen(addr: string, options?: ListenOptions): Promise<ListenAddress>;
  /**
   * Dials a peer (`'ws://HOST:PORT/packetflow/v1'`, e.g. the `url` its
   * `listen` resolved to), or joins a NATS system (`'nats://HOST:PORT'` or
   * `tls://`, several servers separated by commas), and resolves once the
   * connection is up and the peer's handlers are known (on NATS: once this
   * reactor's handlers are subscribed on the server): packets with no
   * local handler are then routed to peers, then over NATS. A lost
   * connection is redialled with backoff until {@link Reactor.stop}; until
   * then the reactor keeps node alive. See {@link ConnectOptions}; `stats()`
   * shows the NATS connection under `nats`. Rejects with a
   * {@link PacketFlowError}: PF401 when the node or server refuses the
   * credentials, PF503 if it cannot be reached, the TLS handshake fails
   * (the message says why) or the reactor is stopped, PF400 (naming the
   * option) for a malformed URL, token or file, half of a pair, or an
   * option of the other kind of URL; with a `TypeError` for arguments of
   * the wrong type or an unknown option.
   */
  connect(url: string, options?: ConnectOptions): Promise<void>;
  /**
   * Stops the reactor: packets in flight and later submits are answered
   * PF503 (`stopped` is true at once). On the network, connections send
   * those answers and close (code 1001), listeners stop, and node is no
   * longer kept alive. Resolves once the connections are closed and every
   * Promise of this reactor has settled. Idempotent.
   */
  stop(): Promise<void>;
  /** A snapshot of the counters. */
  stats(): ReactorStats;
}
