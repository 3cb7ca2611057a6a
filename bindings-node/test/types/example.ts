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
  TokenSpec,
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
  const peer = new Reactor({ name: 'peer' });
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

  // @ts-expect-error: the element is required
  await r.submit({ group: 'df' });
  // @ts-expect-error: a handler must be a function
  r.register('df', 'x', 'not a function');
  // @ts-expect-error: unknown option
  new Reactor({ maxInFlight: 1 });
  // @ts-expect-error: priority is a number
  await r.submit({ group: 'df', element: 'x', priority: 'high' });
  await r.stop();
}

void main();
