// Compiled with `tsc --noEmit` by the test suite: the types must accept
// idiomatic code and reject misuse (each @ts-expect-error must be an error).
import {
  Reactor,
  PacketFlowError,
  Context,
  Result,
  ReactorStats,
  JsonValue,
  Handler,
  ListenAddress,
  ListenOptions,
  ConnectOptions,
  NatsStats,
  TokenSpec,
  ActorRef,
  ActorContext,
  Actors,
  Behavior,
  ActorTypeStats,
  CallOptions,
  SendOptions,
} from 'packetflow';

interface Order {
  id: number;
  items: string[];
}

async function main(): Promise<void> {
  const r = new Reactor({ name: 'typed', maxInflight: 8, maxQueue: 100, busyPollUs: 0 });
  r.register<Order, { count: number }>('df', 'count', async (order, ctx: Context) => {
    const id: string = ctx.packetId;
    const left: number = ctx.remainingMs;
    const trace: string = ctx.traceId;
    void [id, left, trace];
    return { count: order.items.length };
  });
  r.register('df', 'sync', (n: number) => n * 2);
  const upper: Handler<string, string> = (s) => s.toUpperCase();
  r.register('df', 'upper', upper);
  r.register('cf', 'child', async (data, ctx) => ctx.call<number>('df', 'sync', data));

  const result: Result<{ count: number }> = await r.submit({
    group: 'df',
    element: 'count',
    data: { id: 1, items: ['a', 'b'] },
    priority: 7,
    timeoutMs: 1000,
    dependencies: [],
    metadata: { tenant: 'acme' },
  });
  if (result.status === 'success') {
    const n: number = result.data.count;
    void n;
  } else {
    const code: string = result.error.code;
    const message: string = result.error.message;
    void [code, message];
  }
  const doubled = await r.call<number>('df', 'sync', 21, { priority: 10 });
  const sum: number = doubled + 1;
  void sum;
  try {
    await r.call({ group: 'df', element: 'missing' });
  } catch (e) {
    if (e instanceof PacketFlowError) {
      const code: string = e.code;
      void code;
    }
  }
  const stats: ReactorStats = r.stats();
  const first: number = stats.handlers[0].p99Us + stats.inFlight;
  void first;
  const anything: JsonValue = await r.call('df', 'upper', 'x');
  void anything;
  // Integers beyond the safe range cross as exact bigints, both ways.
  const big: JsonValue = { id: BigInt('9223372036854775807'), list: [BigInt(1), 2.5] };
  const echoed: JsonValue = await r.call('df', 'echo', big);
  if (typeof echoed === 'bigint') {
    const exact: bigint = echoed;
    void exact;
  }
  const removed: boolean = r.unregister('df', 'upper');
  void removed;
  const stopped: boolean = r.stopped;
  void stopped;

  // On the network: one reactor listens, another connects to it.
  const bound: ListenAddress = await r.listen('127.0.0.1:0');
  const port: number = bound.port;
  const host: string = bound.host;
  void [port, host];
  const peer = new Reactor({ name: 'peer', sockets: 'thread' });
  await peer.connect(bound.url);
  const connected: void = await peer.connect(bound.url, { msgpack: true });
  void connected;
  await peer.stop();

  // Tokens and TLS.
  const tokens: TokenSpec[] = [
    { name: 'client', token: 'a-token-of-16-bytes-or-more', submit: ['df:*'] },
    { name: 'service', tokenSha256: '0'.repeat(64), serve: ['df:transform'] },
  ];
  const listenOptions: ListenOptions = { authFile: 'tokens.toml', tokens, tlsCert: 'node.crt', tlsKey: 'node.key' };
  const secure: ListenAddress = await r.listen('127.0.0.1:0', listenOptions);
  const connectOptions: ConnectOptions = { token: 'a-token-of-16-bytes-or-more', tlsCa: 'ca.pem', msgpack: false };
  await peer.connect(secure.url, connectOptions);
  // @ts-expect-error: the option is camelCase
  await r.listen('127.0.0.1:0', { tls_cert: 'node.crt' });
  // @ts-expect-error: a token needs a name
  await r.listen('127.0.0.1:0', { tokens: [{ token: 'a-token-of-16-bytes-or-more' }] });
  // @ts-expect-error: patterns are an array
  await r.listen('127.0.0.1:0', { tokens: [{ name: 'x', submit: 'df:*' }] });
  // @ts-expect-error: the token is a string
  await peer.connect(secure.url, { token: 42 });
  // @ts-expect-error: listen takes 'HOST:PORT', not a port number
  await r.listen(8443);
  // @ts-expect-error: msgpack is a boolean
  await peer.connect(bound.url, { msgpack: 'yes' });
  // @ts-expect-error: unknown connect option
  await peer.connect(bound.url, { codec: 'msgpack' });

  // On NATS: the same connect, with NATS options.
  const natsOptions: ConnectOptions = {
    namespace: 'team-a',
    name: 'orders',
    user: 'pf',
    password: 'secret',
    tlsCa: 'ca.pem',
    requireTls: true,
    connectTimeoutMs: 2000,
  };
  await peer.connect('nats://127.0.0.1:4222,nats://127.0.0.1:4223', natsOptions);
  const nats: NatsStats | null = peer.stats().nats;
  if (nats !== null) {
    const rtt: number = nats.rttUs;
    const state: 'connected' | 'disconnected' | 'connecting' = nats.state;
    void rtt;
    void state;
  }
  // @ts-expect-error: the option is camelCase
  await peer.connect('nats://127.0.0.1:4222', { nkey_seed: 'SU' });
  // @ts-expect-error: the timeout is a number of ms
  await peer.connect('nats://127.0.0.1:4222', { connectTimeoutMs: '2s' });
  // The cluster: membership and actor state in JetStream.
  await peer.connect('nats://127.0.0.1:4222', { membership: true, membershipHeartbeatMs: 250, actorStore: true });
  // @ts-expect-error: the option is camelCase
  await peer.connect('nats://127.0.0.1:4222', { actor_store: true });
  // @ts-expect-error: actorStore on connect is a boolean (the reactor's own is a file)
  await peer.connect('nats://127.0.0.1:4222', { actorStore: 'actors.db' });

  // Actors: the seed's counter, typed.
  const actors: Actors = r.actors;
  actors.registerBehavior('counter', {
    increment: (data, context) => { context.state.value++; return { value: context.state.value }; },
    get_value: (data, context) => ({ value: context.state.value }),
  });
  const counter: ActorRef = await actors.create('counter', { value: 0 });
  await actors.send(counter, { type: 'increment' });
  const value = await actors.send<{ value: number }>(counter, { type: 'get_value' }, { id: 'm-1', timeoutMs: 500 });
  const n: number = value.value;
  void n;
  interface Account { balance: number }
  const account: Behavior<Account> = {
    deposit: async (data: { amount: number }, context: ActorContext<Account>) => {
      context.state.balance += data.amount;
      if (context.state.balance > 100) context.stop();
      const peer: ActorRef = context.actor;
      context.tell(peer, { type: 'noted' });
      return context.send<number>(counter, { type: 'get_value' });
    },
  };
  actors.registerBehavior<Account>('account', account, { initialState: { balance: 0 } });
  actors.tell({ type: 'account', id: 'a1' }, { type: 'deposit', amount: 5 }, { priority: 9 });
  const ids: string[] = await actors.list('account');
  const count: number = await actors.count('account');
  const none: void = await actors.stop({ type: 'account', id: 'a1' });
  void [ids, count, none];
  const actorStats: ActorTypeStats[] = r.stats().actors;
  const active: number = actorStats[0].active + actorStats[0].passivated;
  void active;
  const durable = new Reactor({ actorStore: 'state.redb', actorPassivateAfterMs: 60000, actorRememberedTurns: 64 });
  void durable;
  // @ts-expect-error: a message is an object with a type
  await actors.send(counter, 'increment');
  // @ts-expect-error: a message needs its type
  await actors.send(counter, { by: 2 });
  // @ts-expect-error: a ref is {type, id}
  await actors.send('counter/c1', { type: 'increment' });
  // @ts-expect-error: a behaviour's methods are functions
  actors.registerBehavior('bad', { increment: 1 });
  // @ts-expect-error: the initial state has the behaviour's state type
  actors.registerBehavior<Account>('bad', account, { initialState: { balance: 'zero' } });
  // @ts-expect-error: actor refs are read-only
  counter.id = 'other';
  // @ts-expect-error: contexts are made by the reactor
  new ActorContext();

  // Cancellation: a caller's AbortSignal, a handler's ctx.signal, r.cancel.
  r.register('df', 'fetches', async (url: string, ctx) => {
    const response = await fetch(url, { signal: ctx.signal });
    const priority: number = ctx.priority;
    const options: CallOptions = { priority: priority + 1, signal: AbortSignal.timeout(100) };
    return [response.status, await ctx.call<number>('df', 'sync', 1, options)];
  });
  const controller = new AbortController();
  const aborted: Result = await r.submit('df', 'fetches', 'http://127.0.0.1/', { signal: controller.signal });
  await r.submit({ group: 'df', element: 'fetches', data: 'x', signal: AbortSignal.timeout(50) });
  await r.call('df', 'fetches', 'x', { signal: controller.signal });
  const sendOptions: SendOptions = { signal: controller.signal, timeoutMs: 100 };
  await actors.send(counter, { type: 'increment' }, sendOptions);
  const wasInFlight: boolean = r.cancel(aborted.packetId);
  const cancelled: number = r.stats().handlers[0].cancelled + r.stats().forwardsCancelled;
  void [wasInFlight, cancelled];
  // @ts-expect-error: a packet id is a string
  r.cancel(42);
  // @ts-expect-error: a signal is an AbortSignal
  await r.call('df', 'x', 1, { signal: controller });
  // @ts-expect-error: ctx.call's priority is a number
  r.register('df', 'y', (d, ctx) => ctx.call('df', 'x', d, { priority: 'high' }));
  // @ts-expect-error: ctx.signal is read-only
  r.register('df', 'z', (d, ctx) => { ctx.signal = controller.signal; });
  // @ts-expect-error: a tell waits for nothing, so it takes no signal
  actors.tell(counter, { type: 'increment' }, { signal: controller.signal });

  // @ts-expect-error: the element is required
  await r.submit({ group: 'df' });
  // @ts-expect-error: a handler must be a function
  r.register('df', 'x', 'not a function');
  // @ts-expect-error: unknown option
  new Reactor({ maxInFlight: 1 });
  // @ts-expect-error: sockets are 'loop' or 'thread'
  new Reactor({ sockets: 'runtime' });
  // The standard library: patterns in one string, as the CLI takes them.
  const hosting = new Reactor({ stdlib: 'cf:*,co:gather' });
  const seq = await hosting.call<{ value: JsonValue; steps: number }>('cf', 'seq', { steps: [], input: 1 });
  const steps: number = seq.steps;
  void steps;
  // @ts-expect-error: the patterns are one comma-separated string
  new Reactor({ stdlib: ['cf:*'] });
  // @ts-expect-error: priority is a number
  await r.submit({ group: 'df', element: 'x', priority: 'high' });
  await r.stop();
}

void main();
