'use strict';
// Actors with behaviours written in JS: the seed's counter, one turn at a
// time, transactional turns, effectively-once repeats (also across kill -9
// of a process on a file store), passivation, lifecycle errors, context
// (state, actor, call, send, tell, stop) and reentrancy.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Reactor, PacketFlowError, ActorContext, Context } = require('..');
const { within, until, startUntil, stopChild, tempDir } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);
const T = { timeout: 30000 };

function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/** A reactor stopped when the test ends. */
function reactor(t, options = {}) {
  const r = new Reactor(options);
  t.after(() => r.stop());
  return r;
}

/** The seed's counter (issue text), plus a method that fails after changing the state. */
const counterBehavior = {
  increment: (data, context) => {
    context.state.value += data.by === undefined ? 1 : data.by;
    return { value: context.state.value };
  },
  get_value: (data, context) => ({ value: context.state.value }),
  fail_after_change: (data, context) => {
    context.state.value = -1000;
    context.state.extra = 'dirty';
    throw new Error('changed my mind');
  },
};

test("the seed's counter runs as written", T, async (t) => {
  const r = reactor(t);
  const actors = r.actors;
  actors.registerBehavior('counter', {
    increment: (data, context) => { context.state.value++; return { value: context.state.value }; },
    get_value: (data, context) => ({ value: context.state.value }),
  });
  const counter = await actors.create('counter', { value: 0 });
  await actors.send(counter, { type: 'increment' });
  const value = await actors.send(counter, { type: 'get_value' });

  assert.deepEqual(value, { value: 1 });
  assert.deepEqual(Object.keys(counter), ['type', 'id']);
  assert.equal(counter.type, 'counter');
  assert.match(counter.id, /^[0-9a-f-]{36}$/, 'a generated UUID v4');
  assert.equal(r.actors, actors, 'one Actors object per reactor');
});

test('1,000 concurrent senders to one counter end exactly at 1,000', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior);
  const counter = await r.actors.create('counter', { value: 0 }, { id: 'c1' });
  const replies = await within(
    Promise.all(Array.from({ length: 1000 }, () => r.actors.send(counter, { type: 'increment' }))),
    20000,
    '1,000 sends',
  );
  // One turn at a time: every turn saw its own state, none was lost.
  assert.deepEqual(replies.map((x) => x.value).sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i + 1));
  assert.deepEqual(await r.actors.send(counter, { type: 'get_value' }), { value: 1000 });
});

test('a turn that throws or rejects leaves the state exactly as it was', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', {
    ...counterBehavior,
    async_fail: async (data, context) => {
      context.state = { value: 99 };
      await Promise.resolve();
      throw new PacketFlowError('PF409', 'kept code');
    },
    not_json: (data, context) => {
      context.state.value = () => 1;
      return 'fine';
    },
    bad_reply: (data, context) => {
      context.state.value += 1;
      return { f: Symbol('x') };
    },
    whole: (data, context) => context.state,
  });
  const c = await r.actors.create('counter', { value: 5 }, { id: 'tx' });

  await assert.rejects(r.actors.send(c, { type: 'fail_after_change' }), isPf('PF500', /^changed my mind$/));
  await assert.rejects(r.actors.send(c, { type: 'async_fail' }), isPf('PF409', /^kept code$/));
  await assert.rejects(
    r.actors.send(c, { type: 'not_json' }),
    isPf('PF500', /^context\.state\.value: Function is not JSON-serializable/),
  );
  await assert.rejects(r.actors.send(c, { type: 'bad_reply' }), isPf('PF500', /^result\.f: Symbol/));
  // The state has no trace of the failed turns, not even the added key.
  assert.deepEqual(await r.actors.send(c, { type: 'whole' }), { value: 5 });
  assert.deepEqual(await r.actors.send(c, { type: 'increment' }), { value: 6 });
});

test('a turn past its deadline is PF408 and changes nothing', T, async (t) => {
  const r = reactor(t);
  let release;
  const released = new Promise((resolve) => (release = resolve));
  r.actors.registerBehavior('slow', {
    wait: async (data, context) => {
      context.state.value = 'late';
      await released;
      return 'done';
    },
    get: (data, context) => context.state,
  });
  const a = await r.actors.create('slow', { value: 'before' });
  await assert.rejects(r.actors.send(a, { type: 'wait' }, { timeoutMs: 50 }), isPf('PF408'));
  release();
  assert.deepEqual(await within(r.actors.send(a, { type: 'get' }), 5000), { value: 'before' });
});

test('a message re-sent with the same packet id is applied once', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior);
  const c = await r.actors.create('counter', { value: 0 });
  const first = await r.actors.send(c, { type: 'increment' }, { id: 'once-1' });
  const again = await r.actors.send(c, { type: 'increment' }, { id: 'once-1' });
  assert.deepEqual(first, { value: 1 });
  assert.deepEqual(again, { value: 1 }, 'answered from memory');
  // Two copies in flight at once: the second gets the first one's answer.
  const twins = await Promise.all([
    r.actors.send(c, { type: 'increment' }, { id: 'once-2' }),
    r.actors.send(c, { type: 'increment' }, { id: 'once-2' }),
  ]);
  assert.deepEqual(twins, [{ value: 2 }, { value: 2 }]);
  assert.deepEqual(await r.actors.send(c, { type: 'get_value' }), { value: 2 });
});

test('an acknowledged message survives kill -9; its repeat after restart is not applied again', T, async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'state.redb');
  const first = await startUntil(process.execPath, [fixture('actor-store.js'), file, 'first'], /^ACK (.*)$/m, { ms: 15000 });
  assert.deepEqual(JSON.parse(first.match[1]), { value: 1 });
  const killed = await stopChild(first.child, 'SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');

  const again = await startUntil(process.execPath, [fixture('actor-store.js'), file, 'again'], /^(\{.*\})$/m, { ms: 15000 });
  const out = JSON.parse(again.match[1]);
  const exited = await stopChild(again.child);
  assert.equal(exited.code, 0, again.seen.stderr);
  assert.deepEqual(out.repeat, { value: 1 }, 'm-1 answered from the stored turns');
  assert.deepEqual(out.value, { value: 1 }, 'state on disk, applied once');
  assert.deepEqual(out.ids, ['c1']);
});

test('an idle actor is passivated and its next message brings it back', T, async (t) => {
  const r = reactor(t, { actorPassivateAfterMs: 20 });
  r.actors.registerBehavior('counter', counterBehavior);
  const c = await r.actors.create('counter', { value: 0 }, { id: 'p1' });
  await r.actors.send(c, { type: 'increment', by: 41 });
  const stats = () => r.stats().actors.find((a) => a.actorType === 'counter');
  await until(() => stats().passivations >= 1 && stats().active === 0, 10000, 'passivation');
  assert.equal(stats().passivated, 1);
  assert.equal(await r.actors.count('counter'), 1, 'a passivated actor still exists');

  const activations = stats().activations;
  assert.deepEqual(await r.actors.send(c, { type: 'increment' }), { value: 42 }, 'its state came back');
  assert.equal(stats().activations, activations + 1);
  assert.deepEqual(Object.keys(stats()), ['actorType', 'active', 'passivated', 'activations', 'passivations', 'tellsFailed']);
});

test('lifecycle: PF404 for an unknown id, PF409 for a second create, list, count, stop', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior);
  await assert.rejects(
    r.actors.send({ type: 'counter', id: 'c9' }, { type: 'increment' }),
    isPf('PF404', /^no actor counter\/c9: create it first$/),
  );
  assert.deepEqual(await r.actors.create('counter', { value: 0 }, { id: 'b' }), { type: 'counter', id: 'b' });
  await r.actors.create('counter', { value: 0 }, { id: 'a' });
  await assert.rejects(r.actors.create('counter', { value: 0 }, { id: 'a' }), isPf('PF409', /already exists/));
  assert.deepEqual(await r.actors.list('counter'), ['a', 'b']);
  assert.equal(await r.actors.count('counter'), 2);

  assert.equal(await r.actors.stop({ type: 'counter', id: 'a' }), undefined);
  assert.deepEqual(await r.actors.list('counter'), ['b']);
  await assert.rejects(r.actors.send({ type: 'counter', id: 'a' }, { type: 'get_value' }), isPf('PF404'));
  await assert.rejects(r.actors.stop({ type: 'counter', id: 'a' }), isPf('PF404'));
  await assert.rejects(r.actors.list('nobody'), isPf('PF404', /actor type nobody is not registered/));
  await assert.rejects(r.actors.send({ type: 'nobody', id: 'x' }, { type: 'm' }), isPf('PF001'));
});

test('a type with an initial state activates any id on its first message', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior, { initialState: { value: 0 } });
  assert.deepEqual(await r.actors.send({ type: 'counter', id: 'v1' }, { type: 'increment', by: 3 }), { value: 3 });
  assert.deepEqual(await r.actors.send({ type: 'counter', id: 'v2' }, { type: 'get_value' }), { value: 0 });
  assert.deepEqual(await r.actors.send({ type: 'counter', id: 'v1' }, { type: 'get_value' }), { value: 3 });
});

test('only the behaviour\'s methods are message types; bad messages are PF400 from the core', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior, { initialState: { value: 0 } });
  const c = { type: 'counter', id: 'm' };
  await assert.rejects(
    r.actors.send(c, { type: 'explode' }),
    isPf('PF400', /^data\.type "explode" is not a message of actor type counter; it takes fail_after_change, get_value, increment$/),
  );
  await assert.rejects(r.actors.send(c, { type: 'toString' }), isPf('PF400'), 'no inherited Object methods');
  await assert.rejects(r.actors.send(c, /** @type {any} */ ({ kind: 'x' })), isPf('PF400', /data\.type is required/));
  await assert.rejects(r.actors.send(c, /** @type {any} */ (7)), isPf('PF400', /data must be an object/));
  await assert.rejects(r.actors.send(c, { type: 'increment' }, { priority: 11 }), isPf('PF400', /priority/));
  await assert.rejects(r.actors.send({ type: 'counter', id: '' }, { type: 'increment' }), isPf('PF400', /1-128 bytes/));
  assert.throws(() => r.actors.tell(c, { type: 'explode' }), isPf('PF400', /not a message of actor type counter/));
  assert.throws(() => r.actors.registerBehavior('bad type', counterBehavior), isPf('PF400', /actor type must be/));
});

test('JS argument errors are TypeErrors naming the argument', T, async (t) => {
  const r = reactor(t);
  assert.throws(() => r.actors.registerBehavior('x', /** @type {any} */ (null)), /behavior must be an object of methods, got null/);
  assert.throws(() => r.actors.registerBehavior('x', { n: 1 }), /behavior has no methods/);
  assert.throws(() => r.actors.registerBehavior('x', { m() {} }, /** @type {any} */ ({ initial: 1 })), /unknown option "initial"/);
  assert.throws(() => r.actors.registerBehavior(/** @type {any} */ (5), { m() {} }), /type must be a string, got number/);
  assert.throws(() => r.actors.registerBehavior('x', { m() {} }, { initialState: () => 1 }), /initialState: Function is not JSON-serializable/);
  r.actors.registerBehavior('x', { m() {} }, { initialState: 0 });
  await assert.rejects(r.actors.send(/** @type {any} */ ('x/1'), { type: 'm' }), /actor must be an object \{type, id\}, got string/);
  await assert.rejects(r.actors.send(/** @type {any} */ ({ type: 'x', id: 1 }), { type: 'm' }), /actor\.id must be a string, got number/);
  await assert.rejects(r.actors.send({ type: 'x', id: '1' }, { type: 'm', f: () => 1 }), /message\.f: Function is not JSON-serializable/);
  await assert.rejects(r.actors.send({ type: 'x', id: '1' }, { type: 'm' }, /** @type {any} */ ({ timeout: 5 })), /unknown option "timeout"/);
  await assert.rejects(r.actors.create('x', { f: Symbol('s') }), /state\.f: Symbol/);
  await assert.rejects(r.actors.create('x', null, /** @type {any} */ ({ id: 5 })), /options\.id must be a string, got number/);
  assert.throws(() => r.actors.tell(/** @type {any} */ (undefined), { type: 'm' }), TypeError);
});

test('async methods, class instances and the context a method gets', T, async (t) => {
  const r = reactor(t);
  r.register('df', 'double', (n) => n * 2);
  class Account {
    constructor() {
      this.fee = 1;
    }

    async deposit(data, context) {
      // A method may await (here a handler call) and change the state after.
      const doubled = await context.call('df', 'double', data.amount);
      context.state.balance += doubled - this.fee;
      return { balance: context.state.balance };
    }

    replace(data, context) {
      context.state = { balance: data.balance };
      return null;
    }

    whoami(data, context) {
      return {
        isActorContext: context instanceof ActorContext && context instanceof Context,
        actor: context.actor,
        packetId: context.packetId,
        // The message's metadata, without the keys that address the actor.
        metadata: context.metadata,
        remaining: context.remainingMs > 0,
        message: data,
      };
    }
  }
  r.actors.registerBehavior('account', new Account());
  const a = await r.actors.create('account', { balance: 0 }, { id: 'acc' });
  assert.deepEqual(await r.actors.send(a, { type: 'deposit', amount: 5 }), { balance: 9 });
  assert.equal(await r.actors.send(a, { type: 'replace', balance: 100 }), null);
  assert.deepEqual(await r.actors.send(a, { type: 'deposit', amount: 1 }), { balance: 101 });
  const who = await r.actors.send(a, { type: 'whoami', x: [1] }, { id: 'pkt-7', metadata: { note: 'n' } });
  assert.deepEqual(who, {
    isActorContext: true,
    actor: { type: 'account', id: 'acc' },
    packetId: 'pkt-7',
    metadata: { note: 'n' },
    remaining: true,
    message: { type: 'whoami', x: [1] },
  });
});

test('a message sent without an id gets one made when its turn reads it, readable only during the turn', T, async (t) => {
  const r = reactor(t);
  /** @type {any} */
  let kept;
  r.actors.registerBehavior('reader', {
    read: (data, context) => ({ id: context.packetId, trace: context.traceId }),
    keep: (data, context) => {
      kept = context;
      return null;
    },
  });
  const a = await r.actors.create('reader', null);
  const first = await r.actors.send(a, { type: 'read' });
  assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(first.trace, first.id);
  const second = await r.actors.send(a, { type: 'read' });
  assert.notEqual(second.id, first.id);
  await r.actors.send(a, { type: 'keep' });
  assert.throws(() => kept.packetId, (e) => e instanceof PacketFlowError && e.code === 'PF503');
});

test('context.stop() replies, then deletes the actor', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('session', {
    close: (data, context) => {
      context.stop();
      return { closed: context.actor.id, last: context.state };
    },
    close_then_fail: (data, context) => {
      context.stop();
      throw new Error('no');
    },
    ping: () => 'pong',
  });
  const s = await r.actors.create('session', { n: 1 }, { id: 's1' });
  await assert.rejects(r.actors.send(s, { type: 'close_then_fail' }), isPf('PF500'));
  assert.equal(await r.actors.send(s, { type: 'ping' }), 'pong', 'a failed turn does not stop');
  assert.deepEqual(await r.actors.send(s, { type: 'close' }), { closed: 's1', last: { n: 1 } });
  await assert.rejects(r.actors.send(s, { type: 'ping' }), isPf('PF404'));
  assert.equal(await r.actors.count('session'), 0);
});

test('tells keep their order and a later ask sees them all', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('log', {
    add: (data, context) => {
      context.state.push(data.n);
    },
    read: (data, context) => context.state,
    fail: () => {
      throw new Error('told to fail');
    },
  });
  const l = await r.actors.create('log', []);
  for (let n = 0; n < 200; n++) assert.equal(r.actors.tell(l, { type: 'add', n }), undefined);
  r.actors.tell(l, { type: 'fail' });
  assert.deepEqual(await within(r.actors.send(l, { type: 'read' }), 10000), Array.from({ length: 200 }, (_, n) => n));
  await until(() => r.stats().actors[0].tellsFailed === 1, 5000, 'the failed tell counted');
});

test('reentrancy: a chain back into a waiting actor reads its committed state; it may not change it', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('ping', {
    start: async (data, context) => {
      context.state.n += 1;
      try {
        const back = await context.send(data.peer, { type: 'relay', to: context.actor, op: data.op });
        return { back, n: context.state.n };
      } catch (error) {
        return { refused: /** @type {PacketFlowError} */ (error).code, n: context.state.n };
      }
    },
    read: (data, context) => ({ n: context.state.n }),
    bump: (data, context) => {
      context.state.n += 1;
      return null;
    },
  });
  r.actors.registerBehavior('pong', {
    relay: (data, context) => context.send(data.to, { type: data.op }),
    told: (data, context) => {
      context.tell(data.to, { type: 'bump' });
      return 'told';
    },
  });
  const ping = await r.actors.create('ping', { n: 0 });
  const pong = await r.actors.create('pong', null);
  // No deadlock: the read runs beside the waiting turn, on the state before it.
  assert.deepEqual(await within(r.actors.send(ping, { type: 'start', peer: pong, op: 'read' }), 5000), { back: { n: 0 }, n: 1 });
  assert.deepEqual(await within(r.actors.send(ping, { type: 'start', peer: pong, op: 'bump' }), 5000), { refused: 'PF409', n: 2 });
  assert.deepEqual(await r.actors.send(ping, { type: 'read' }), { n: 2 }, 'the waiting turns committed; the bump did not');
  // A tell from a turn is queued behind it, not reentrant.
  assert.equal(await r.actors.send(pong, { type: 'told', to: ping }), 'told');
  assert.deepEqual(await within(r.actors.send(ping, { type: 'read' }), 5000), { n: 3 });
});

test('a handler messages actors through its context; a late send is the core\'s PF503', T, async (t) => {
  const r = reactor(t);
  r.actors.registerBehavior('counter', counterBehavior, { initialState: { value: 0 } });
  let kept;
  r.register('df', 'bump-twice', async (id, ctx) => {
    kept = ctx;
    const c = { type: 'counter', id };
    ctx.tell(c, { type: 'increment' });
    return ctx.send(c, { type: 'increment' });
  });
  assert.deepEqual(await r.call('df', 'bump-twice', 'h1'), { value: 2 });
  await assert.rejects(
    kept.send({ type: 'counter', id: 'h1' }, { type: 'get_value' }),
    isPf('PF503', /^ctx\.call to rm:actor\.counter after the handler answered/),
  );
  assert.throws(() => kept.tell({ type: 'counter', id: 'h1' }, { type: 'get_value' }), isPf('PF503'));
});

test('a handler\'s messages take their own priority, timeout and signal', T, async (t) => {
  const r = reactor(t);
  const seen = [];
  const released = [];
  r.actors.registerBehavior(
    'probe',
    {
      look: (data, context) => {
        seen.push([data.tag, context.priority, context.remainingMs <= 2000]);
        return data.tag;
      },
      hold: (data, context) =>
        new Promise((resolve) => {
          released.push('running');
          context.signal.addEventListener('abort', () => {
            released.push(context.signal.reason.code);
            resolve('released');
          });
        }),
    },
    { initialState: {} },
  );
  const probe = { type: 'probe', id: 'p' };
  r.register('df', 'fan', async (data, ctx) => {
    ctx.tell(probe, { type: 'look', tag: 'told' }, { priority: 2, timeoutMs: 2000 });
    const sent = await ctx.send(probe, { type: 'look', tag: 'sent' }, { priority: 9, timeoutMs: 2000 });
    const inherited = await ctx.send(probe, { type: 'look', tag: 'inherited' });
    const refused = [];
    for (const options of [{ priority: 11 }, { timeoutMs: 0 }, { priority: 'high' }]) {
      await ctx.send(probe, { type: 'look', tag: 'no' }, options).catch((e) => refused.push(`${e.code}: ${e.message.split(',')[0]}`));
      try {
        ctx.tell(probe, { type: 'look', tag: 'no' }, options);
      } catch (e) {
        refused.push(`${e.code}: ${e.message.split(',')[0]}`);
      }
    }
    await ctx.send(probe, { type: 'look' }, { colour: 'red' }).catch((e) => refused.push(e.message));
    // An abort cancels the running turn: the Promise rejects with the
    // reason, and the turn's signal aborts.
    const controller = new AbortController();
    const held = ctx.send(probe, { type: 'hold' }, { signal: controller.signal });
    await until(() => released.length === 1, 5000, 'the hold turn');
    controller.abort('enough');
    const aborted = await held.catch((reason) => reason);
    return { sent, inherited, refused, aborted };
  });
  const answer = await r.call('df', 'fan', null, { priority: 4, timeoutMs: 30000 });
  assert.deepEqual(answer, {
    sent: 'sent',
    inherited: 'inherited',
    refused: [
      'PF400: priority must be an integer 1-10',
      'PF400: priority must be an integer 1-10',
      'PF400: timeout_ms must be a positive integer <= 86400000',
      'PF400: timeout_ms must be a positive integer <= 86400000',
      'PF400: priority must be an integer 1-10',
      'PF400: priority must be an integer 1-10',
      'unknown option "colour" (expected priority, timeoutMs, signal)',
    ],
    aborted: 'enough',
  });
  // The tell, the lowest, may run after the rest; a message without
  // options inherits the handler's priority and what is left of its 30 s.
  await until(() => seen.length === 3 && released.length === 2, 5000);
  assert.deepEqual(released, ['running', 'PF499']);
  assert.deepEqual(seen.sort(), [
    ['inherited', 4, false],
    ['sent', 9, true],
    ['told', 2, true],
  ]);
});

test('an actor on another reactor is reached over the network, and serves many at once', T, async (t) => {
  const server = reactor(t, { name: 'actor-host' });
  const client = reactor(t, { name: 'actor-client' });
  server.actors.registerBehavior('counter', counterBehavior);
  const { url } = await within(server.listen('127.0.0.1:0'), 5000, 'listen');
  await within(client.connect(url), 5000, 'connect');
  const c = await within(client.actors.create('counter', { value: 10 }, { id: 'remote' }), 5000);
  assert.deepEqual(c, { type: 'counter', id: 'remote' });
  const replies = await within(
    Promise.all(Array.from({ length: 300 }, () => client.actors.send(c, { type: 'increment' }))),
    20000,
    '300 remote sends',
  );
  assert.equal(Math.max(...replies.map((x) => x.value)), 310);
  assert.deepEqual(await server.actors.send(c, { type: 'get_value' }), { value: 310 });
  assert.deepEqual(await server.actors.list('counter'), ['remote']);
});

test('stop() during actor traffic: each message answered once, no hang, in process and over the network', T, async (t) => {
  for (const onNetwork of [false, true]) {
    const server = reactor(t, { name: `actor-stop-${onNetwork}` });
    const release = new Promise((resolve) => t.after(resolve));
    let started = 0;
    let reached;
    const enough = new Promise((resolve) => (reached = resolve));
    server.actors.registerBehavior('worker', {
      work: async (data, context) => {
        started += 1;
        if (started === 10) reached();
        // Some answer on later ticks, some only after the stop (never released before it).
        if (data.n % 3 === 0) await release;
        else await new Promise((resolve) => setTimeout(resolve, data.n % 5));
        context.state.done += 1;
        return data.n;
      },
    }, { initialState: { done: 0 } });
    let sender = server;
    if (onNetwork) {
      const client = reactor(t, { name: 'actor-stop-client' });
      await client.connect((await server.listen('127.0.0.1:0')).url);
      sender = client;
    }
    const answered = new Map();
    const sends = Array.from({ length: 300 }, (_, n) =>
      sender.actors.send({ type: 'worker', id: `w${n % 10}` }, { type: 'work', n }).then(
        (value) => answered.set(n, (answered.get(n) || []).concat([['ok', value]])),
        (error) => answered.set(n, (answered.get(n) || []).concat([[error.code]])),
      ),
    );
    for (let n = 0; n < 30; n++) sender.actors.tell({ type: 'worker', id: `w${n % 10}` }, { type: 'work', n: 1 });
    await within(enough, 10000, '10 turns started');
    await within(server.stop(), 10000, 'stop');
    await within(Promise.all(sends), 15000, 'every send settled');
    assert.equal(answered.size, 300);
    for (const [n, outcomes] of answered) {
      assert.equal(outcomes.length, 1, `message ${n} answered once`);
      const [kind, value] = outcomes[0];
      if (kind === 'ok') assert.equal(value, n);
      else assert.ok(['PF503', 'PF408'].includes(kind), `message ${n}: ${kind}`);
    }
    assert.ok([...answered.values()].some(([[kind]]) => kind === 'PF503'), 'the stop answered messages PF503');
  }
});

test('reactor actor options are checked by the core', T, async (t) => {
  assert.throws(() => new Reactor({ actorPassivateAfterMs: 0 }), isPf('PF400', /^actorPassivateAfterMs must be at least 1, got 0$/));
  assert.throws(() => new Reactor({ actorPassivateAfterMs: -1 }), /actorPassivateAfterMs must be an integer/);
  assert.throws(() => new Reactor({ actorStore: /** @type {any} */ (1) }), /actorStore must be a string, got number/);
  const dir = tempDir(t);
  assert.throws(() => new Reactor({ actorStore: dir }), isPf('PF400', /^cannot open the actor store /));
  const file = path.join(dir, 'held.redb');
  const holder = reactor(t, { actorStore: file, actorRememberedTurns: 4 });
  assert.throws(() => new Reactor({ actorStore: file }), isPf('PF400', /cannot open the actor store/), 'one process, one holder');
  holder.actors.registerBehavior('counter', counterBehavior, { initialState: { value: 0 } });
  assert.deepEqual(await holder.actors.send({ type: 'counter', id: 'f' }, { type: 'increment' }), { value: 1 });
});
