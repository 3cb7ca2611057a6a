'use strict';
// Cancellation (docs/protocol.md, "Cancellation"): `r.cancel`, `{signal}`
// on submit/call/ctx.call/actors.send, a handler's `ctx.signal`, the tree
// of calls cancelled with its root, priority inherited by `ctx.call`, and
// the `cancelled` counters. Every wait is bounded; nothing sleeps.

const test = require('node:test');
const assert = require('node:assert/strict');
const { getEventListeners } = require('node:events');
const { Reactor, PacketFlowError } = require('..');
const { within, until, aborted, latch } = require('./helpers');

const T = { timeout: 30000 };
/** How long a signal may take to fire (it fires in the same call here). */
const FIRE_MS = 2000;

/** A reactor stopped when the test ends. */
function reactor(t, options = {}) {
  const r = new Reactor(options);
  t.after(() => r.stop());
  return r;
}

/** Asserts `error` is a PacketFlowError with `code`. */
function isPf(code, message) {
  return (error) => {
    assert.ok(error instanceof PacketFlowError, `expected a PacketFlowError, got ${error && error.stack}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/**
 * Registers `df:<element>`, a handler that reports its context when it
 * starts (`started`) and answers only once its `ctx.signal` aborts (with
 * `'late'`, which nobody receives).
 */
function waitsForSignal(r, element = 'wait') {
  const started = latch();
  /** @type {import('..').Context[]} */
  const contexts = [];
  r.register('df', element, (data, ctx) => {
    contexts.push(ctx);
    started.open(ctx);
    return new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve('late')));
  });
  return { started: started.opened, contexts, runs: () => contexts.length };
}

/** The counters of `group:element` on `r`. */
function statsOf(r, element, group = 'df') {
  return r.stats().handlers.find((h) => h.group === group && h.element === element);
}

test('r.cancel while running: the submit gets PF499, the handler sees ctx.signal abort', T, async (t) => {
  const r = reactor(t);
  const handler = waitsForSignal(r);
  const submitted = r.submit('df', 'wait', 1);
  const ctx = await within(handler.started, FIRE_MS, 'handler start');
  assert.equal(ctx.signal.aborted, false);
  assert.equal(r.stats().inFlight, 1);

  assert.equal(r.cancel(ctx.packetId), true);
  // Settled inside cancel: the signal has fired when it returns.
  assert.equal(ctx.signal.aborted, true);
  const reason = await aborted(ctx.signal, FIRE_MS, 'ctx.signal');
  assert.ok(isPf('PF499', /was cancelled/)(reason));
  const result = await within(submitted, FIRE_MS, 'the cancelled submit');
  assert.equal(result.status, 'error');
  assert.equal(result.packetId, ctx.packetId);
  assert.ok(isPf('PF499', /was cancelled/)(result.error));
  assert.equal(r.stats().inFlight, 0);
  // Answered: no longer in flight, so a second cancel finds nothing.
  assert.equal(r.cancel(ctx.packetId), false);
  const counters = statsOf(r, 'wait');
  assert.equal(counters.cancelled, 1);
  assert.equal(counters.errors, 1);
});

test('r.cancel before start: a queued packet never runs', T, async (t) => {
  const r = reactor(t, { maxInflight: 1 });
  const blocker = waitsForSignal(r, 'blocker');
  let ran = 0;
  r.register('df', 'queued', () => {
    ran += 1;
    return 'ran';
  });
  const first = r.submit('df', 'blocker', 1);
  const blocking = await within(blocker.started, FIRE_MS, 'blocker start');
  const queued = r.submit('df', 'queued', 2, { id: 'queued-1' });
  assert.equal(r.stats().queued, 1);

  assert.equal(r.cancel('queued-1'), true);
  const result = await within(queued, FIRE_MS, 'the queued submit');
  assert.ok(isPf('PF499')(result.error));
  assert.equal(r.stats().queued, 0);

  r.cancel(blocking.packetId);
  await within(first, FIRE_MS, 'the blocker');
  assert.equal(ran, 0, 'the cancelled packet must never start');
  assert.equal(r.stats().inFlight, 0);
});

test('a call aborted before JS could start its handler never runs it', T, async (t) => {
  const r = reactor(t);
  let ran = 0;
  r.register('df', 'count', () => {
    ran += 1;
    return ran;
  });
  const controller = new AbortController();
  // The handler's call is queued for the JS thread; the abort comes first.
  const called = r.call('df', 'count', 1, { signal: controller.signal });
  controller.abort();
  await assert.rejects(called, { name: 'AbortError' });
  const submitted = r.submit('df', 'count', 2, { id: 'cancelled-early' });
  assert.equal(r.cancel('cancelled-early'), true);
  assert.ok(isPf('PF499')((await submitted).error));
  // A later call crosses after them: had they been handed to JS, they ran first.
  assert.equal(await r.call('df', 'count', 3), 1);
  assert.equal(ran, 1);
  assert.equal(statsOf(r, 'count').cancelled, 2);
});

test('r.cancel judges its argument; an unknown id is false', T, async (t) => {
  const r = reactor(t);
  assert.equal(r.cancel('no-such-packet'), false);
  assert.throws(() => r.cancel(/** @type {any} */ (42)), { name: 'TypeError', message: 'packetId must be a string, got number' });
  assert.throws(() => r.cancel(''), isPf('PF400', /1-128 bytes/));
  assert.throws(() => r.cancel('x'.repeat(129)), isPf('PF400', /1-128 bytes/));
});

test('{signal} on submit: an abort cancels the packet and rejects with the reason', T, async (t) => {
  const r = reactor(t);
  const handler = waitsForSignal(r);
  const controller = new AbortController();
  const submitted = r.submit({ group: 'df', element: 'wait', data: 1, signal: controller.signal });
  const ctx = await within(handler.started, FIRE_MS, 'handler start');

  const reason = new Error('the user went away');
  controller.abort(reason);
  await assert.rejects(within(submitted, FIRE_MS, 'the aborted submit'), (e) => e === reason);
  assert.ok(isPf('PF499')(await aborted(ctx.signal, FIRE_MS, 'ctx.signal')));
  assert.equal(r.stats().inFlight, 0);
  assert.equal(statsOf(r, 'wait').cancelled, 1);
  // Settled: the listener on the caller's signal is gone.
  assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
});

test('a packet waiting on an aborted one as a dependency answers PF424', T, async (t) => {
  const r = reactor(t);
  const handler = waitsForSignal(r);
  let dependentRan = false;
  r.register('df', 'after', () => {
    dependentRan = true;
  });
  const controller = new AbortController();
  const first = r.submit('df', 'wait', 1, { id: 'first', signal: controller.signal });
  await within(handler.started, FIRE_MS, 'handler start');
  const dependent = r.submit('df', 'after', 2, { dependencies: ['first'] });
  controller.abort();
  await assert.rejects(first, { name: 'AbortError' });
  const result = await within(dependent, FIRE_MS, 'the dependent');
  assert.ok(isPf('PF424', /first/)(result.error));
  assert.equal(dependentRan, false);
  assert.equal(r.stats().inFlight, 0);
});

test('{signal} on call: the default reason is an AbortError, as with fetch', T, async (t) => {
  const r = reactor(t);
  const handler = waitsForSignal(r);
  const controller = new AbortController();
  const called = r.call('df', 'wait', 1, { signal: controller.signal, priority: 7 });
  const ctx = await within(handler.started, FIRE_MS, 'handler start');
  assert.equal(ctx.priority, 7);

  controller.abort();
  await assert.rejects(within(called, FIRE_MS, 'the aborted call'), { name: 'AbortError' });
  assert.equal(ctx.signal.aborted, true);
  assert.equal(r.stats().inFlight, 0);
});

test('{signal} on a queued submit: the packet never starts', T, async (t) => {
  const r = reactor(t, { maxInflight: 1 });
  const blocker = waitsForSignal(r, 'blocker');
  let ran = 0;
  r.register('df', 'queued', () => {
    ran += 1;
  });
  const first = r.call('df', 'blocker', 1);
  const blocking = await within(blocker.started, FIRE_MS, 'blocker start');
  const controller = new AbortController();
  const queued = r.call('df', 'queued', 2, { signal: controller.signal });
  assert.equal(r.stats().queued, 1);
  controller.abort();
  await assert.rejects(queued, { name: 'AbortError' });
  assert.equal(r.stats().queued, 0);
  r.cancel(blocking.packetId);
  await assert.rejects(first, isPf('PF499'));
  assert.equal(ran, 0);
});

test('an aborted signal rejects at once and submits nothing', T, async (t) => {
  const r = reactor(t);
  let ran = 0;
  r.register('df', 'count', () => {
    ran += 1;
    return ran;
  });
  r.actors.registerBehavior('counter', { add: (m, c) => (c.state.n += 1) }, { initialState: { n: 0 } });
  const reason = new Error('gave up before starting');
  const signal = AbortSignal.abort(reason);
  await assert.rejects(r.submit('df', 'count', 1, { signal }), (e) => e === reason);
  await assert.rejects(r.submit({ group: 'df', element: 'count', signal }), (e) => e === reason);
  await assert.rejects(r.call('df', 'count', 1, { signal }), (e) => e === reason);
  await assert.rejects(r.actors.send({ type: 'counter', id: 'c1' }, { type: 'add' }, { signal }), (e) => e === reason);
  r.register('df', 'parent', (data, ctx) =>
    ctx.call('df', 'count', 1, { signal }).then(
      () => 'called',
      (e) => (e === reason ? 'rejected with the reason' : `other: ${e}`),
    ),
  );
  assert.equal(await r.call('df', 'parent', null), 'rejected with the reason');
  assert.equal(ran, 0);
  assert.equal(await r.actors.send({ type: 'counter', id: 'c1' }, { type: 'add' }), 1);
  assert.equal(statsOf(r, 'count').count, 0);
});

test('a signal that is not one is a TypeError; unknown options too', T, async (t) => {
  const r = reactor(t);
  r.register('df', 'echo', (d) => d);
  await assert.rejects(r.call('df', 'echo', 1, { signal: /** @type {any} */ ({}) }), {
    name: 'TypeError',
    message: 'signal must be an AbortSignal, got object',
  });
  await assert.rejects(r.submit('df', 'echo', 1, { signal: /** @type {any} */ (null) }), {
    name: 'TypeError',
    message: 'signal must be an AbortSignal, got null',
  });
  await assert.rejects(r.actors.send({ type: 'x', id: 'y' }, { type: 'm' }, { signal: /** @type {any} */ ('no') }), {
    name: 'TypeError',
  });
  assert.throws(() => r.actors.tell({ type: 'x', id: 'y' }, { type: 'm' }, /** @type {any} */ ({ signal: new AbortController().signal })), {
    name: 'TypeError',
    message: /unknown option "signal"/,
  });
  r.register('df', 'parent', async (data, ctx) => {
    try {
      await ctx.call('df', 'echo', 1, /** @type {any} */ ({ urgent: true }));
      return 'called';
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  });
  assert.match(await r.call('df', 'parent', null), /^TypeError: unknown option "urgent"/);
});

test('one signal for many calls: one listener while they run, none after', T, async (t) => {
  const r = reactor(t);
  r.register('df', 'echo', async (d) => d);
  const controller = new AbortController();
  const calls = Array.from({ length: 50 }, (_, i) => r.call('df', 'echo', i, { signal: controller.signal }));
  assert.equal(getEventListeners(controller.signal, 'abort').length, 1);
  assert.deepEqual(await Promise.all(calls), Array.from({ length: 50 }, (_, i) => i));
  assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
  // Aborting afterwards changes nothing for calls that were answered.
  controller.abort();
  assert.equal(r.stats().inFlight, 0);
});

test('one abort gives up every call that shares the signal', T, async (t) => {
  const r = reactor(t);
  const contexts = [];
  r.register('df', 'wait', (data, ctx) => {
    contexts.push(ctx);
    return new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve('late')));
  });
  r.register('df', 'echo', async (d) => d);
  const controller = new AbortController();
  const waiting = Array.from({ length: 20 }, (_, i) => r.call('df', 'wait', i, { signal: controller.signal }));
  const answered = await r.call('df', 'echo', 'before', { signal: controller.signal });
  assert.equal(answered, 'before');
  await until(() => contexts.length === 20, FIRE_MS, 'every handler to start');
  assert.equal(r.stats().inFlight, 20);
  controller.abort();
  for (const w of waiting) await assert.rejects(w, { name: 'AbortError' });
  for (const ctx of contexts) assert.ok(isPf('PF499')(await aborted(ctx.signal, FIRE_MS, 'ctx.signal')));
  assert.equal(r.stats().inFlight, 0);
  assert.equal(statsOf(r, 'wait').cancelled, 20);
  assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
});

test('a chain handler -> ctx.call -> handler: aborting the first aborts the second', T, async (t) => {
  const r = reactor(t);
  const leaf = waitsForSignal(r, 'leaf');
  const rootStarted = latch();
  let rootCallError;
  r.register('df', 'root', async (data, ctx) => {
    rootStarted.open(ctx);
    try {
      return await ctx.call('df', 'leaf', data);
    } catch (e) {
      rootCallError = e;
      throw e;
    }
  });
  const controller = new AbortController();
  const called = r.call('df', 'root', 1, { signal: controller.signal });
  const rootCtx = await within(rootStarted.opened, FIRE_MS, 'root start');
  const leafCtx = await within(leaf.started, FIRE_MS, 'leaf start');
  assert.equal(r.stats().inFlight, 2);
  assert.equal(leafCtx.traceId, rootCtx.packetId);

  controller.abort();
  await assert.rejects(called, { name: 'AbortError' });
  assert.ok(isPf('PF499')(await aborted(rootCtx.signal, FIRE_MS, "root's ctx.signal")));
  assert.ok(isPf('PF499')(await aborted(leafCtx.signal, FIRE_MS, "leaf's ctx.signal")));
  assert.equal(r.stats().inFlight, 0);
  assert.equal(statsOf(r, 'root').cancelled, 1);
  assert.equal(statsOf(r, 'leaf').cancelled, 1);
  // The root's own ctx.call ended with PF499 too (its caller was cancelled).
  await until(() => rootCallError !== undefined, FIRE_MS, "the root's ctx.call to fail");
  assert.ok(isPf('PF499')(rootCallError));
});

test('ctx.call with {signal}: the child is cancelled, the parent goes on', T, async (t) => {
  const r = reactor(t);
  const leaf = waitsForSignal(r, 'leaf');
  r.register('df', 'parent', async (data, ctx) => {
    const controller = new AbortController();
    const call = ctx.call('df', 'leaf', data, { signal: controller.signal });
    const leafCtx = await leaf.started;
    controller.abort(new Error('enough'));
    const outcome = await call.then(
      () => 'answered',
      (e) => e.message,
    );
    const reason = await aborted(leafCtx.signal, FIRE_MS, "leaf's ctx.signal");
    return { outcome, leafReason: reason.code, parentAborted: ctx.signal.aborted };
  });
  assert.deepEqual(await within(r.call('df', 'parent', 1), FIRE_MS * 2, 'parent'), {
    outcome: 'enough',
    leafReason: 'PF499',
    parentAborted: false,
  });
  assert.equal(statsOf(r, 'leaf').cancelled, 1);
  assert.equal(statsOf(r, 'parent').cancelled, 0);
  assert.equal(r.stats().inFlight, 0);
});

test('ctx.call inherits the priority unless it names one', T, async (t) => {
  const r = reactor(t);
  r.register('df', 'priority', (data, ctx) => ctx.priority);
  r.register('df', 'parent', async (data, ctx) => ({
    own: ctx.priority,
    inherited: await ctx.call('df', 'priority', null),
    named: await ctx.call('df', 'priority', null, { priority: 2 }),
    grandchild: await ctx.call('df', 'relay', null),
  }));
  r.register('df', 'relay', (data, ctx) => ctx.call('df', 'priority', null));
  assert.deepEqual(await r.call('df', 'parent', null, { priority: 9 }), { own: 9, inherited: 9, named: 2, grandchild: 9 });
  assert.deepEqual(await r.call('df', 'parent', null), { own: 5, inherited: 5, named: 2, grandchild: 5 });

  r.register('df', 'bad', async (data, ctx) => {
    try {
      await ctx.call('df', 'priority', null, { priority: data });
      return 'called';
    } catch (e) {
      return `${e.code}: ${e.message}`;
    }
  });
  assert.equal(await r.call('df', 'bad', 11), 'PF400: priority must be an integer 1-10, got 11');
  assert.equal(await r.call('df', 'bad', 'high'), 'PF400: priority must be an integer 1-10, got "high"');
  assert.equal(await r.call('df', 'bad', 1), 'called');

  // A bad key and a bad option: the key is named, as the call judges it.
  r.register('df', 'bad-both', (data, ctx) => ctx.call('df', 'no spaces', null, { priority: 11 }).catch((e) => `${e.code}: ${e.message}`));
  assert.match(await r.call('df', 'bad-both', null), /^PF400: element must be 1-64 characters/);
});

test('ctx.priority read after the handler answered is PF503', T, async (t) => {
  const r = reactor(t);
  let kept;
  r.register('df', 'keep', (data, ctx) => {
    kept = ctx;
    return ctx.priority;
  });
  assert.equal(await r.call('df', 'keep', null, { priority: 3 }), 3);
  assert.throws(() => kept.priority, isPf('PF503', /after the handler answered/));
});

test('ctx.signal aborts once the packet is over; read late, it is aborted already', T, async (t) => {
  const r = reactor(t);
  let signal;
  let kept;
  r.register('df', 'reads', (data, ctx) => {
    signal = ctx.signal;
    kept = ctx;
    assert.equal(signal.aborted, false);
    return 'done';
  });
  assert.equal(await r.call('df', 'reads', null), 'done');
  // Like a Go request context once its handler returned: no work it left
  // running is wanted any more.
  assert.ok(isPf('PF499')(await aborted(signal, FIRE_MS, 'ctx.signal after the answer')));
  assert.equal(kept.signal, signal, 'the same signal every read');

  let late;
  r.register('df', 'late', (data, ctx) => {
    late = ctx;
    return null;
  });
  await r.call('df', 'late', null);
  assert.equal(late.signal.aborted, true);
  assert.ok(isPf('PF499', /over/)(late.signal.reason));
  // Nothing is pending afterwards: stop does not wait for any signal.
  await within(r.stop(), FIRE_MS, 'stop');
});

test('ctx.signal fires when the deadline passes and when the reactor stops', T, async (t) => {
  const r = new Reactor();
  const handler = waitsForSignal(r);
  const expired = r.submit('df', 'wait', 1, { timeoutMs: 50 });
  const first = await within(handler.started, FIRE_MS, 'handler start');
  assert.ok(isPf('PF499')(await aborted(first.signal, FIRE_MS, 'ctx.signal at the deadline')));
  assert.ok(isPf('PF408')((await expired).error));

  const stopping = r.submit('df', 'wait', 2);
  await until(() => handler.runs() === 2, FIRE_MS, 'the second run');
  const ctxs = [];
  r.register('df', 'wait2', (data, ctx) => {
    ctxs.push(ctx);
    return new Promise(() => {});
  });
  const never = r.submit('df', 'wait2', 3);
  await until(() => ctxs.length === 1, FIRE_MS, 'wait2 start');
  const signal = ctxs[0].signal;
  await within(r.stop(), FIRE_MS, 'stop');
  assert.ok(isPf('PF499')(await aborted(signal, FIRE_MS, 'ctx.signal at stop')));
  assert.ok(isPf('PF503')((await stopping).error));
  assert.ok(isPf('PF503')((await never).error));
});

test('{signal} on actors.send: a turn run by its sender is abandoned, uncommitted', T, async (t) => {
  const r = reactor(t);
  const started = latch();
  r.actors.registerBehavior(
    'slow',
    {
      // Changes the state, then waits until its packet is no longer wanted.
      wait: (message, context) => {
        context.state.n += 100;
        started.open(context);
        return new Promise((resolve) => context.signal.addEventListener('abort', () => resolve('late')));
      },
      read: (message, context) => context.state.n,
    },
    { initialState: { n: 0 } },
  );
  const actor = { type: 'slow', id: 'a1' };
  const controller = new AbortController();
  const sent = r.actors.send(actor, { type: 'wait' }, { signal: controller.signal });
  const context = await within(started.opened, FIRE_MS, 'turn start');
  assert.equal(r.stats().inFlight, 1);
  controller.abort();
  await assert.rejects(sent, { name: 'AbortError' });
  assert.ok(isPf('PF499')(await aborted(context.signal, FIRE_MS, 'context.signal')));
  assert.equal(r.stats().inFlight, 0);
  assert.equal(await r.actors.send(actor, { type: 'read' }), 0, 'the abandoned turn is not committed');
});

test('{signal} on actors.send: a message waiting in the mailbox never runs', T, async (t) => {
  const r = reactor(t);
  const started = latch();
  const release = latch();
  let runs = 0;
  r.actors.registerBehavior(
    'busy',
    {
      hold: (message, context) => {
        started.open(context);
        return release.opened.then(() => 'released');
      },
      count: (message, context) => {
        runs += 1;
        context.state.n += 1;
        return context.state.n;
      },
    },
    { initialState: { n: 0 } },
  );
  const actor = { type: 'busy', id: 'b1' };
  const holding = r.actors.send(actor, { type: 'hold' });
  await within(started.opened, FIRE_MS, 'hold start');
  const controller = new AbortController();
  // Queued behind `hold`, with options (a packet) and without (no packet).
  const queued = [
    r.actors.send(actor, { type: 'count' }, { signal: controller.signal }),
    r.actors.send(actor, { type: 'count' }, { signal: controller.signal, timeoutMs: 10000 }),
  ];
  controller.abort();
  for (const q of queued) await assert.rejects(q, { name: 'AbortError' });
  release.open();
  assert.equal(await within(holding, FIRE_MS, 'hold'), 'released');
  assert.equal(await r.actors.send(actor, { type: 'count' }), 1);
  assert.equal(runs, 1, 'the withdrawn messages never ran');
  assert.equal(r.stats().inFlight, 0);
});

test('over the network: an abort cancels the packet on the serving peer', T, async (t) => {
  const server = reactor(t, { name: 'server' });
  const client = reactor(t, { name: 'client' });
  const leaf = waitsForSignal(server, 'remote');
  const { url } = await within(server.listen('127.0.0.1:0'), 5000, 'listen');
  await within(client.connect(url), 5000, 'connect');

  const controller = new AbortController();
  const called = client.call('df', 'remote', 1, { signal: controller.signal });
  const remote = await within(leaf.started, 5000, 'remote handler start');
  assert.equal(server.stats().inFlight, 1);
  controller.abort();
  await assert.rejects(called, { name: 'AbortError' });
  assert.equal(client.stats().inFlight, 0);
  // The cancel frame crosses the connection: the server's handler is told.
  assert.ok(isPf('PF499')(await aborted(remote.signal, 5000, "the server handler's ctx.signal")));
  await until(() => server.stats().inFlight === 0, 5000, "the server's in-flight count to drop");
  assert.equal(statsOf(server, 'remote').cancelled, 1);
  assert.equal(client.stats().forwardsCancelled, 1);
  assert.equal(server.stats().forwardsCancelled, 0);

  // r.cancel by id on either side: the submitter's node, or the node that runs it.
  for (const [side, canceller] of [['client', client], ['server', server]]) {
    const runs = leaf.runs();
    const submitted = client.submit('df', 'remote', 2, { id: `by-${side}` });
    await until(() => leaf.runs() === runs + 1, 5000, `the remote handler to start (${side})`);
    assert.equal(canceller.cancel(`by-${side}`), true);
    const result = await within(submitted, 5000, `the submit cancelled by the ${side}`);
    assert.ok(isPf('PF499')(result.error));
    assert.ok(isPf('PF499')(await aborted(leaf.contexts[runs].signal, 5000, `the remote ctx.signal (${side})`)));
    await until(() => server.stats().inFlight === 0 && client.stats().inFlight === 0, 5000, `in-flight counts to drop (${side})`);
  }
  assert.equal(statsOf(server, 'remote').cancelled, 3);
});

/**
 * Many calls at once, half of them aborted at various moments: before
 * their handler starts (kind 0), from inside it as it starts (1), about
 * when it answers (2: a timer of the same length as the handler's), while
 * it waits for its signal (3), after the answer (4). Each Promise settles
 * once, with the data or the signal's reason; every handler that ran sees
 * its signal abort (cancelled, or over); nothing stays in flight.
 * `connect` joins the client to the server (in process: nothing) once the
 * handler is registered. Resolves to how many calls were given up, and
 * how many times the handler ran.
 */
async function abortHalf(client, server, connect) {
  const controllers = [];
  const reasons = [];
  const signals = [];
  server.register('df', 'jitter', (n, ctx) => {
    signals.push(ctx.signal);
    const ms = 1 + (n % 3);
    switch (n % 10) {
      case 3: // kind 1
        controllers[n].abort(reasons[n]);
        return n;
      case 5: // kind 2
        setTimeout(() => controllers[n].abort(reasons[n]), ms);
        return new Promise((resolve) => setTimeout(() => resolve(n), ms));
      case 7: // kind 3
        setTimeout(() => controllers[n].abort(reasons[n]), 1);
        return new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(-1)));
      default:
        return n % 4 === 0 ? n : new Promise((resolve) => setTimeout(() => resolve(n), ms));
    }
  });
  await connect();
  const calls = [];
  for (let n = 0; n < 300; n++) {
    controllers[n] = new AbortController();
    reasons[n] = new Error(`gave up on ${n}`);
    let settled = 0;
    const call = client.call('df', 'jitter', n, { signal: controllers[n].signal }).then(
      (value) => {
        settled += 1;
        assert.equal(value, n);
        if (n % 10 === 9) controllers[n].abort(reasons[n]); // kind 4
        return 'answered';
      },
      (error) => {
        settled += 1;
        assert.equal(error, reasons[n]);
        return 'aborted';
      },
    );
    if (n % 10 === 1) controllers[n].abort(reasons[n]); // kind 0
    calls.push(call.then((outcome) => ({ n, outcome, settled: () => settled })));
  }
  const outcomes = await within(Promise.all(calls), 20000, 'every call to settle');
  for (const { n, outcome, settled } of outcomes) {
    assert.equal(settled(), 1, `call ${n} settled once`);
    const expected = { 1: 'aborted', 3: 'aborted', 7: 'aborted', 9: 'answered' }[n % 10] ?? (n % 2 === 0 ? 'answered' : undefined);
    if (expected !== undefined) assert.equal(outcome, expected, `call ${n}`);
  }
  await until(() => client.stats().inFlight === 0 && server.stats().inFlight === 0, 5000, 'in-flight counts to drop');
  await within(Promise.all(signals.map((signal) => aborted(signal, 5000))), 5000, 'every ctx.signal');
  return { givenUp: outcomes.filter((o) => o.outcome === 'aborted').length, runs: signals.length };
}

test('stress: 300 calls, half of them aborted, in process', T, async (t) => {
  const r = reactor(t);
  const { givenUp, runs } = await abortHalf(r, r, async () => {});
  // Kind 0 was aborted before its call crossed to JS: never run.
  assert.equal(runs, 270);
  const counters = statsOf(r, 'jitter');
  // Every submitted packet was answered once; those given up while in
  // flight were cancelled (an abort that came with the answer found it over).
  assert.equal(counters.count, 300);
  assert.equal(counters.cancelled, givenUp);
});

test('stress: 300 calls, half of them aborted, over the network', T, async (t) => {
  const server = reactor(t, { name: 'server' });
  const client = reactor(t, { name: 'client' });
  await abortHalf(client, server, async () => {
    const { url } = await within(server.listen('127.0.0.1:0'), 5000, 'listen');
    await within(client.connect(url), 5000, 'connect');
  });
  assert.ok(client.stats().forwardsCancelled >= 90, `${client.stats().forwardsCancelled} forwards cancelled`);
});
