// The dashboard page: reads the node's event stream (/ui/api/events) and
// draws it. Everything the node sends is put in the page as text, never
// as markup. With auth on, the token typed in is kept in this tab's
// sessionStorage and sent only in the Authorization header of this page's
// own requests (docs/security.md, "The dashboard").
"use strict";

const TOKEN_KEY = "packetflow.dashboard.token";
const POINTS_KEPT = 300;
const RETRY_MS = 2000;
const PALETTE = ["#2764c5", "#e07b24", "#1e8a4c", "#c0392b", "#8e44ad", "#16a2b8", "#b7791f", "#6c757d"];

const state = { keys: new Map(), latest: null, charts: {}, chartKeys: "" };

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

// ---------- formatting ----------

function fmtMicros(us) {
  if (us === null || us === undefined) return "–";
  if (us < 1000) return us + " µs";
  if (us < 1e6) return (us / 1000).toFixed(us < 10000 ? 2 : 1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function fmtTime(ms) {
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtRate(r) {
  if (r === null || r === undefined) return "–";
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

// ---------- tables ----------

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fillTable(id, rows, empty) {
  const body = $(id).querySelector("tbody");
  const width = $(id).querySelectorAll("thead th").length;
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = width;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const row of rows) body.append(row);
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  for (const [k, v] of Object.entries(attrs || {})) tr.dataset[k] = v;
  return tr;
}

// ---------- rendering ----------

function renderHeader(doc) {
  const h = doc.health;
  $("node-name").textContent = h.name;
  $("node-runtime").textContent = h.runtime;
  $("node-id").textContent = h.node_id;
  $("node-listening").textContent = (h.listening || []).join(", ");
  $("node-status").textContent = h.status;
  $("node-uptime").textContent = fmtDuration(doc.process.uptime_s);
  $("node-cpu").textContent = doc.process.cpu_percent === null ? "–" : doc.process.cpu_percent.toFixed(1) + " %";
  $("node-rss").textContent = fmtBytes(doc.process.rss_bytes);
  $("node-inflight").textContent = h.in_flight;
  document.title = `PacketFlow · ${h.name}`;
}

function renderPeers(h) {
  const rows = (h.peers || []).map((p) =>
    row(
      [
        cell(p.name || "(seed peer)"),
        cell(p.runtime || "unknown", "runtime"),
        cell(p.remote),
        cell(p.encoding),
        cell(p.in_flight, "num"),
        cell(p.connected_at_ms ? fmtTime(p.connected_at_ms) : null),
        cell(p.state, "state-" + p.state),
      ],
      { runtime: p.runtime || "", name: p.name || "" },
    ),
  );
  for (const d of h.dead_peers || []) {
    rows.push(row([cell("(gone)"), cell(""), cell(d.remote), cell(""), cell(""), cell(""), cell("dead", "state-dead")]));
  }
  fillTable("peers", rows, "No peers connected.");
}

function renderHandlers(h) {
  const where = new Map();
  const add = (key, by) => {
    if (!where.has(key)) where.set(key, []);
    where.get(key).push(by);
  };
  for (const key of h.handlers || []) add(key, "local");
  for (const p of h.peers || []) {
    for (const key of p.handlers || []) add(key, `${p.name || "peer"} (${p.runtime || "?"}, ${p.remote})`);
  }
  const rows = [...where.keys()].sort().map((key) => row([cell(key), cell(where.get(key).join(", "))], { key }));
  fillTable("handlers", rows, "No handlers here or on any peer.");
}

function renderErrors(doc) {
  const rows = Object.entries(doc.errors_by_code || {})
    .sort((a, b) => b[1] - a[1])
    .map(([code, n]) => row([cell(code, "code"), cell(n, "num")], { code }));
  fillTable("errors", rows, "No failed packets.");
}

function renderActors(h) {
  const rows = (h.actors || []).map((a) =>
    row(
      [
        cell(a.actor_type),
        cell(a.active, "num"),
        cell(a.passivated, "num"),
        cell(a.activations, "num"),
        cell(a.passivations, "num"),
        cell(a.tells_failed, "num"),
      ],
      { actorType: a.actor_type },
    ),
  );
  fillTable("actors", rows, "This node hosts no actors.");
}

function renderFailures(doc) {
  const rows = (doc.failures || []).map((f) => {
    const trace = document.createElement("td");
    const b = document.createElement("button");
    b.className = "link";
    b.type = "button";
    b.textContent = f.packet_id.length > 12 ? f.packet_id.slice(0, 8) + "…" : f.packet_id;
    b.title = "show the trace of " + f.packet_id;
    b.addEventListener("click", () => showTrace(f.packet_id));
    trace.append(b);
    return row(
      [
        cell(fmtTime(f.at_ms)),
        cell(f.key),
        cell(f.code, "code"),
        cell(f.message, "message"),
        cell(f.duration_ms + " ms", "num"),
        cell(f.from),
        cell(f.served_by),
        trace,
      ],
      { code: f.code, key: f.key },
    );
  });
  fillTable("failures", rows, "No failed packets.");
}

function seriesId(k) {
  return k.served === "routed" ? `${k.key} (routed)` : k.key;
}

function renderKeys() {
  const rows = [...state.keys.values()].map((k, i) => {
    const last = k.points[k.points.length - 1];
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i % PALETTE.length];
    const name = cell(k.key);
    name.prepend(swatch);
    return row(
      [
        name,
        cell(k.served),
        cell(k.count, "num"),
        cell(k.errors, "num"),
        cell(last ? fmtRate(last[1]) : null, "num"),
        cell(fmtMicros(k.p50_us), "num"),
        cell(fmtMicros(k.p99_us), "num"),
      ],
      { key: k.key },
    );
  });
  fillTable("keys", rows, "No traffic yet.");
}

// ---------- charts ----------

// uPlot wants one x array shared by every series: the union of the keys'
// timestamps (they are sampled on the same tick, so they mostly agree).
function chartData(pick) {
  const keys = [...state.keys.values()];
  const xs = [...new Set(keys.flatMap((k) => k.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = [];
  for (const k of keys) {
    for (const f of pick) {
      const ys = new Array(xs.length).fill(null);
      for (const p of k.points) ys[index.get(p[0])] = p[f];
      columns.push(ys);
    }
  }
  return [xs, ...columns];
}

function chartSeries(pick, labels, dashes) {
  const series = [{}];
  [...state.keys.values()].forEach((k, i) => {
    pick.forEach((_, j) => {
      series.push({
        label: seriesId(k) + labels[j],
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        dash: dashes[j],
        spanGaps: false,
      });
    });
  });
  return series;
}

function drawChart(id, pick, labels, dashes, yFormat) {
  const el = $(id);
  const data = chartData(pick);
  const points = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0);
  el.dataset.points = String(points);
  const width = Math.max(300, el.clientWidth || 600);
  const chart = state.charts[id];
  if (chart && state.chartKeys === keySignature()) {
    chart.setData(data);
    if (Math.abs(chart.width - width) > 4) chart.setSize({ width, height: 220 });
    return;
  }
  if (chart) chart.destroy();
  el.replaceChildren();
  state.charts[id] = new uPlot(
    {
      width,
      height: 220,
      series: chartSeries(pick, labels, dashes),
      scales: { x: { time: true } },
      axes: [{}, { values: (u, ticks) => ticks.map(yFormat), size: 70 }],
      legend: { show: true },
    },
    data,
    el,
  );
}

function keySignature() {
  return [...state.keys.values()].map(seriesId).join("|");
}

function renderCharts() {
  drawChart("chart-rate", [1], [""], [undefined], (v) => fmtRate(v));
  drawChart("chart-latency", [2, 3], [" p50", " p99"], [[4, 4], undefined], (v) => fmtMicros(v));
  state.chartKeys = keySignature();
}

// ---------- the feed ----------

function applySnapshot(doc) {
  state.keys = new Map();
  for (const k of doc.keys) state.keys.set(seriesId(k), { ...k, points: k.points.slice(-POINTS_KEPT) });
  render(doc);
}

function applyTick(doc) {
  const seen = new Map();
  for (const k of doc.keys) {
    const id = seriesId(k);
    const old = state.keys.get(id);
    const points = old ? old.points.concat(k.points) : k.points.slice();
    seen.set(id, { ...k, points: points.slice(-POINTS_KEPT) });
  }
  state.keys = seen;
  render(doc);
}

function render(doc) {
  state.latest = doc;
  renderHeader(doc);
  renderPeers(doc.health);
  renderHandlers(doc.health);
  renderErrors(doc);
  renderActors(doc.health);
  renderFailures(doc);
  renderKeys();
  renderCharts();
}

function setFeed(text, cls) {
  const el = $("feed-state");
  el.textContent = text;
  el.className = "feed " + (cls || "");
}

function askForToken(why) {
  $("auth").hidden = false;
  $("board").hidden = true;
  $("auth-why").textContent = why;
  setFeed("needs a token", "down");
}

// Reads server-sent events from a fetch() body: EventSource cannot send an
// Authorization header.
async function follow() {
  let response;
  try {
    response = await fetch("/ui/api/events", { headers: headers(), cache: "no-store" });
  } catch (e) {
    return false;
  }
  if (response.status === 401 || response.status === 403) {
    const text = (await response.text()).trim();
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(
      response.status === 401
        ? `This node requires a token whose entry has dashboard = true (${text}).`
        : `That token may not open the dashboard: its entry needs dashboard = true.`,
    );
    return "auth";
  }
  if (!response.ok || !response.body) return false;
  $("auth").hidden = true;
  $("board").hidden = false;
  setFeed("live", "live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (!data) continue;
      const doc = JSON.parse(data);
      if (event === "snapshot") applySnapshot(doc);
      else if (event === "tick") applyTick(doc);
    }
  }
}

async function run() {
  for (;;) {
    const outcome = await follow();
    if (outcome === "auth") return; // waits for a token
    setFeed("reconnecting", "down");
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}

// ---------- trace ----------

async function showTrace(id) {
  $("trace-id").value = id;
  const note = $("trace-note");
  note.textContent = "…";
  const response = await fetch("/ui/api/trace?id=" + encodeURIComponent(id), { headers: headers(), cache: "no-store" });
  if (!response.ok) {
    note.textContent = (await response.text()).trim();
    fillTable("trace", [], "");
    return;
  }
  const trace = await response.json();
  const node = state.latest ? state.latest.health.name : "this node";
  const rows = trace.hops.map((h) => {
    let what;
    if (h.event === "arrived") what = `arrived from ${h.from}`;
    else if (h.event === "sent") what = `sent to ${h.to}`;
    else what = `answered ${h.code || "ok"} after ${h.duration_ms} ms by ${h.served_by}`;
    return row([cell(fmtTime(h.at_ms)), cell(node), cell(h.packet_id), cell(h.key), cell(what)], { event: h.event });
  });
  const failed = trace.failures.map((f) => `${f.code} ${f.message}`).join("; ");
  note.textContent = rows.length
    ? `${rows.length} hops seen by ${node}` + (failed ? ` · failed: ${failed}` : "")
    : "No hop of this trace is remembered here (this node keeps its most recent hops only).";
  fillTable("trace", rows, "No hops.");
}

// ---------- start ----------

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("auth-token").value.trim();
  $("auth-token").value = "";
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  run();
});

$("trace-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("trace-id").value.trim();
  if (id) showTrace(id);
});

window.addEventListener("resize", () => {
  if (state.latest) renderCharts();
});

run();
