'use strict';
// What the in-process benchmarks of the Node binding share: closed-loop
// drivers (`inflight` workers, each awaiting its call before the next),
// interleaved trials, and the summary table.

const { performance } = require('node:perf_hooks');

/**
 * Runs `n` calls of `once()` (which resolves to whether the answer was
 * right) with `inflight` workers; returns calls/s and the process's CPU time
 * per call in µs (all threads: the noise-robust figure on a shared machine).
 */
async function drive(n, inflight, once) {
  let next = 0;
  let errors = 0;
  async function worker() {
    while (next < n) {
      next += 1;
      const ok = await once();
      if (!ok) errors += 1;
    }
  }
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: inflight }, worker));
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  if (errors > 0) throw new Error(`${errors} calls failed`);
  return { rate: n / seconds, cpuUs: (used.user + used.system) / n };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Warms every variant up, then runs `trials` trials of each, interleaved
 * within a trial so that drift hits all of them, in reverse order every
 * other trial so that none always goes first. Prints one JSON line per
 * variant and trial; returns `{rates, cpu}` by variant.
 */
async function trials(variants, { n, inflight, trials: count, warmup }) {
  const rates = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  const cpu = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const once of Object.values(variants)) await drive(warmup, inflight, once);
  for (let trial = 1; trial <= count; trial++) {
    const order = Object.entries(variants);
    if (trial % 2 === 0) order.reverse();
    for (const [name, once] of order) {
      const { rate, cpuUs } = await drive(n, inflight, once);
      rates[name].push(rate);
      cpu[name].push(cpuUs);
      console.log(JSON.stringify({ trial, variant: name, n, inflight, callsPerSec: Math.round(rate), cpuUsPerCall: +cpuUs.toFixed(3) }));
    }
  }
  return { rates, cpu };
}

/** The summary table (markdown), each variant against `base`. */
function table({ rates, cpu }, base) {
  const baseRate = median(rates[base]);
  const k = (x) => `${Math.round(x / 1000)}k`;
  console.log(`\n| variant | calls/s median (min–max) | vs ${base} | CPU µs/call median | calls/s per CPU-second |`);
  console.log(`|---|---|---|---|---|`);
  for (const [name, list] of Object.entries(rates)) {
    const m = median(list);
    const c = median(cpu[name]);
    console.log(
      `| ${name} | ${k(m)} (${k(Math.min(...list))}–${k(Math.max(...list))}) | ${(m / baseRate).toFixed(3)} | ` +
        `${c.toFixed(2)} | ${k(1e6 / c)} |`,
    );
  }
}

/** `--name VALUE` of the command line, as a number, or `fallback`. */
function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** `--name VALUE` of the command line, as text, or `fallback`. */
function textOption(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

module.exports = { drive, median, trials, table, option, textOption };
