'use strict';
// The process exits by itself once reactors are stopped or idle; an
// unstopped reactor never crashes the process at exit.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { runNode } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

test('node exits by itself after stop()', async () => {
  const out = await runNode(fixture('stopped.js'), 10000);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'BYE');
});

test('an unstopped, idle reactor does not keep node alive or crash it', async () => {
  const out = await runNode(fixture('unstopped.js'), 10000);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'STILL ALIVE');
  assert.equal(out.stderr, '');
});

test('pending submits keep node alive until they are answered', async () => {
  const out = await runNode(fixture('pending.js'), 10000);
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(out.stdout.trim().split('\n').sort(), ['PF408', 'answered!']);
});

test('a told message runs before node exits by itself', async () => {
  const out = await runNode(fixture('told.js'), 10000);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'TOLD');
});

test('process.exit() with packets in flight exits cleanly with its code', async () => {
  const out = await runNode(fixture('exit-busy.js'), 10000);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 7, out.stderr);
});

test('a worker thread with a busy reactor can be terminated', async () => {
  const out = await runNode(fixture('worker.js'), 10000);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(out.stdout.trim().split('\n'), ['worker ok', 'terminated']);
});

test('reactors dropped without stop() are collected cleanly', async () => {
  const out = await runNode(fixture('collected.js'), 20000, {}, ['--expose-gc']);
  assert.equal(out.signal, null, out.stderr);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'alive');
});
