// The bacalhau dashboard: read-only, served by every node's API, no outside resources.
// It reads /api/v1/{node,network,jobs,jobs/ID} and follows two NDJSON streams: the
// node's events (everything updates from them) and a job's live logs.
"use strict";

const API = "/api/v1";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);
const S = {
  self: null,
  jobs: new Map(),          // job_id -> JobSummary
  times: new Map(),         // job_id -> {created, ended}
  filter: "",
  search: "",
  route: { view: "home", id: null },
  logs: null,               // AbortController of the open log stream
  logNodes: new Set(),
  timers: {},
};

// --- helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) node.append(kid);
  return node;
}

function short(id) { return id ? id.slice(-8) : "-"; }
function shortJob(id) { return id ? id.slice(0, 10) : "-"; }
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); }
function ago(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}
function secs(s) { return s < 10 ? `${s.toFixed(2)}s` : s < 120 ? `${s.toFixed(1)}s` : `${Math.round(s / 60)}m`; }
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`;
}
function later(name, fn, ms) {
  if (S.timers[name]) return;
  S.timers[name] = setTimeout(() => { S.timers[name] = null; fn(); }, ms);
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// Yields each JSON line of a streamed NDJSON response (blank keep-alive lines skipped);
// calls opened() once the response has begun (a quiet stream may send no line for long).
async function* ndjson(path, signal, opened) {
  const r = await fetch(path, { credentials: "same-origin", signal });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  if (opened) opened();
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) yield JSON.parse(line);
    }
  }
}

// --- the event stream ---------------------------------------------------------------------

async function followEvents() {
  let after = null;
  for (;;) {
    const q = after === null ? "tail=5000" : `after=${after}`;
    try {
      for await (const ev of ndjson(`${API}/events?follow=true&${q}`, undefined, () =>
        setLive("live"),
      )) {
        if (ev.seq === undefined) {             // a "skipped" note: events were missed
          if (ev.skipped) later("jobs", loadJobs, 250);
          continue;
        }
        after = ev.seq;
        onEvent(ev);
      }
    } catch (err) {
      console.warn("event stream:", err);
    }
    setLive("down");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function setLive(state) {
  const b = $("live");
  if (b.dataset.state === state) return;
  b.dataset.state = state;
  b.textContent = { live: "live", down: "reconnecting", connecting: "connecting" }[state];
}

function onEvent(ev) {
  if (ev.job_id) {
    const t = S.times.get(ev.job_id) || {};
    if (t.created === undefined || ev.kind === "created") t.created = t.created ?? ev.time;
    if (ev.state && TERMINAL.has(ev.state) && t.ended === undefined) t.ended = ev.time;
    S.times.set(ev.job_id, t);
    const job = S.jobs.get(ev.job_id);
    if (job && ev.state) {
      job.state = ev.state;
      later("jobs-render", renderJobs, 50);
    }
    if (!job || ev.kind === "published" || TERMINAL.has(ev.state)) later("jobs", loadJobs, 250);
    if (S.route.view === "job" && S.route.id === ev.job_id) later("job", loadJob, 150);
    later("chart", renderChart, 300);
  } else if (ev.kind === "NodeJoined" || ev.kind === "NodeLeft") {
    later("network", loadNetwork, 300);
  }
}

// --- network ------------------------------------------------------------------------------

async function loadNetwork() {
  let infos;
  try { infos = await getJSON(`${API}/network`); } catch (err) { console.warn(err); return; }
  const box = $("nodes");
  box.replaceChildren();
  $("node-count").textContent = `${infos.length} node${infos.length === 1 ? "" : "s"}`;
  for (const info of infos) {
    const cap = info.capacity || {};
    const total = info.max_executions || Math.max(1, Math.floor(cap.cpu || 1));
    const load = Math.min(1, (info.running || 0) / Math.max(1, total));
    const tags = el("div", { class: "tags" });
    for (const x of info.executors || []) tags.append(el("span", { class: "tag", text: x }));
    const labels = info.labels || {};
    for (const [k, v] of Array.isArray(labels) ? labels.map((l) => [l, ""]) : Object.entries(labels)) {
      tags.append(el("span", { class: "tag label", text: v ? `${k}=${v}` : k }));
    }
    const self = S.self && info.node_id === S.self.node_id;
    box.append(el("div", { class: `nodecard${self ? " self" : ""}`, "data-node-id": info.node_id, title: info.node_id },
      el("div", { class: "id", text: `${short(info.node_id)}${self ? "  (this node)" : ""}` }),
      tags,
      el("div", { class: "meta", text: cap.cpu !== undefined
        ? `${cap.cpu} cpu · ${bytes(cap.memory || 0)}${cap.gpu ? ` · ${cap.gpu} gpu` : ""}` : "capacity unknown" }),
      el("div", { class: "meta", text: `running ${info.running || 0}${info.queued ? ` · queued ${info.queued}` : ""}`
        + `${info.compute === false ? " · no compute" : ""} · ${info.version || ""}` }),
      el("div", { class: "bar", title: `load ${Math.round(load * 100)}%` },
        el("span", { style: `width:${Math.round(load * 100)}%` }))));
  }
}

// --- jobs ---------------------------------------------------------------------------------

async function loadJobs() {
  let list;
  try { list = await getJSON(`${API}/jobs?limit=1000`); } catch (err) { console.warn(err); return; }
  S.jobs = new Map(list.jobs.map((j) => [j.job_id, j]));
  for (const j of list.jobs) {
    const t = S.times.get(j.job_id) || {};
    if (t.created === undefined) t.created = j.created_at;
    S.times.set(j.job_id, t);
  }
  $("job-count").textContent = `${list.total}`;
  renderJobs();
  renderChart();
}

function matches(job) {
  if (S.search && !job.job_id.toLowerCase().includes(S.search)) return false;
  if (!S.filter) return true;
  if (S.filter === "active") return !TERMINAL.has(job.state);
  return job.state === S.filter;
}

function renderJobs() {
  const body = $("jobs");
  const rows = [];
  for (const job of S.jobs.values()) {
    if (!matches(job)) continue;
    const t = S.times.get(job.job_id) || {};
    const took = t.ended !== undefined && t.created !== undefined ? secs(t.ended - t.created) : "";
    const link = el("a", { href: `#/job/${job.job_id}`, text: shortJob(job.job_id), title: job.job_id });
    rows.push(el("tr", { class: "job", "data-job-id": job.job_id, "data-state": job.state },
      el("td", { class: "id" }, link),
      el("td", {}, el("span", { class: "badge", "data-state": job.state, text: job.state })),
      el("td", { text: job.engine }),
      el("td", { class: "wide", text: job.created_at ? ago(job.created_at) : "" }),
      el("td", { text: took }),
      el("td", { class: "wide id", text: job.cid ? `${job.cid.slice(0, 14)}…` : "", title: job.cid || "" })));
  }
  body.replaceChildren(...rows);
  $("jobs-empty").hidden = rows.length > 0;
}

// --- the chart ----------------------------------------------------------------------------

function renderChart() {
  const W = 560, H = 180, L = 34, R = 34, T = 12, B = 24, N = 15;
  const now = Date.now() / 1000;
  const start = Math.floor(now / 60) * 60 - (N - 1) * 60;
  const count = new Array(N).fill(0), total = new Array(N).fill(0);
  for (const t of S.times.values()) {
    if (t.ended === undefined || t.created === undefined || t.ended < start) continue;
    const i = Math.min(N - 1, Math.floor((t.ended - start) / 60));
    count[i] += 1;
    total[i] += Math.max(0, t.ended - t.created);
  }
  const mean = count.map((c, i) => (c ? total[i] / c : null));
  const maxC = Math.max(1, ...count);
  const maxL = Math.max(0.001, ...mean.filter((m) => m !== null));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "jobs ended per minute and their mean latency");
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const bw = (W - L - R) / N;
  const y = (v, max) => T + (H - T - B) * (1 - v / max);
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
  add("text", { x: 2, y: T + 8 }, `${maxC}`);
  add("text", { x: 2, y: H - B }, "0");
  add("text", { x: W - R + 4, y: T + 8 }, secs(maxL));
  add("text", { x: L, y: H - 6 }, `${N} min ago`);
  add("text", { x: W - R - 22, y: H - 6 }, "now");
  count.forEach((c, i) => {
    if (!c) return;
    add("rect", { x: L + i * bw + 2, y: y(c, maxC), width: bw - 4, height: H - B - y(c, maxC),
      fill: "#0b5cad", opacity: "0.8", rx: 2 }).append(
      Object.assign(document.createElementNS(ns, "title"), { textContent: `${c} job(s) ended` }));
  });
  const pts = mean.map((m, i) => (m === null ? null : `${L + i * bw + bw / 2},${y(m, maxL)}`)).filter(Boolean);
  if (pts.length) {
    add("polyline", { points: pts.join(" "), fill: "none", stroke: "#c0392b", "stroke-width": 2 });
    for (const p of pts) {
      const [cx, cy] = p.split(",");
      add("circle", { cx, cy, r: 3, fill: "#c0392b" });
    }
  }
  $("chart").replaceChildren(svg);
}

// --- one job ------------------------------------------------------------------------------

async function loadJob() {
  const id = S.route.id;
  let job;
  try { job = await getJSON(`${API}/jobs/${encodeURIComponent(id)}`); } catch (err) {
    $("job-reason").textContent = `could not load the job: ${err.message}`;
    return;
  }
  if (S.route.id !== id) return;
  $("job-id").textContent = job.job_id;
  const badge = $("job-state");
  badge.textContent = job.state;
  badge.dataset.state = job.state;
  $("job-reason").textContent = job.reason || "";
  const spec = job.spec;
  const facts = [
    ["engine", spec.engine.type],
    ["requester", short(job.requester_id)],
    ["deal", `concurrency ${spec.deal.concurrency}, confidence ${spec.deal.confidence}`],
    ["verifier / publisher", `${spec.verifier} / ${spec.publisher}`],
    ["labels", (spec.labels || []).join(", ") || "-"],
  ];
  $("job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  $("job-spec").textContent = JSON.stringify(spec, null, 2);
  const rows = job.executions.map((ex) => {
    const cell = el("td", { class: "id" });
    const ref = ex.published;
    if (ref && ref.cid) {
      cell.append(el("a", { href: `${API}/data/${ref.cid}/car`, download: `${ref.cid}.car`,
        text: `${ref.cid.slice(0, 14)}… (.car)`, title: ref.cid, class: "cid" }));
      cell.append(" ", el("a", { href: `${API}/data/${ref.cid}/cat?path=stdout`, text: "stdout" }));
    } else if (ref) {
      cell.textContent = ref.path || ref.type;
    } else {
      cell.textContent = ex.reason || "";
    }
    return el("tr", { "data-node-id": ex.node_id },
      el("td", { class: "id", text: short(ex.node_id), title: ex.node_id }),
      el("td", {}, el("span", { class: "badge", "data-state": ex.state, text: ex.state })),
      el("td", { text: ex.exit_code === null || ex.exit_code === undefined ? "" : `${ex.exit_code}` }),
      cell);
  });
  $("job-execs").replaceChildren(...rows);
  $("job-events").replaceChildren(...job.events.map((e) => el("li", { "data-kind": e.kind },
    el("time", { text: clock(e.time) }),
    `${e.kind.replace(/_/g, " ")}${e.node_id ? ` · ${short(e.node_id)}` : ""}${e.detail ? ` · ${e.detail}` : ""}`)));
}

async function followLogs(id) {
  if (S.logs) S.logs.abort();
  const ctl = new AbortController();
  S.logs = ctl;
  S.logNodes = new Set();
  const pre = $("job-logs");
  pre.replaceChildren();
  const status = $("log-status");
  status.textContent = "following";
  const lines = [];
  let pending = false;
  const flush = () => {
    pending = false;
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    pre.append(...lines.splice(0));
    while (pre.childNodes.length > 5000) pre.firstChild.remove();
    if (stick) pre.scrollTop = pre.scrollHeight;
  };
  try {
    for await (const r of ndjson(`${API}/jobs/${encodeURIComponent(id)}/logs/stream?follow=true&tail=2000`, ctl.signal)) {
      S.logNodes.add(r.node_id);
      // One record per read of one execution: {node_id, lines, skipped, end, detail};
      // each line is [seq, stream, text, time, partial].
      if (r.skipped) lines.push(el("span", { class: "note", text: `[${r.skipped} earlier line(s) not kept]\n` }));
      for (const [seq, stream, text, , partial] of r.lines || []) {
        const who = S.logNodes.size > 1 ? el("span", { class: "node", text: `${short(r.node_id)} ` }) : null;
        lines.push(el("span", { class: stream === "stderr" ? "stderr" : "stdout", "data-seq": seq }, who, `${text}${partial ? "" : "\n"}`));
      }
      if (r.end && r.detail) lines.push(el("span", { class: "note", text: `[${short(r.node_id)}: ${r.detail}]\n` }));
      if (!pending) { pending = true; requestAnimationFrame(flush); }
    }
    flush();
    status.textContent = "complete";
  } catch (err) {
    if (ctl.signal.aborted) return;
    status.textContent = `stopped: ${err.message}`;
  }
}

// --- routing and start --------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/job\/([A-Za-z0-9_.-]+)$/);
  if (m) {
    const changed = S.route.id !== m[1];
    S.route = { view: "job", id: m[1] };
    $("view-home").hidden = true;
    $("view-job").hidden = false;
    if (changed) {
      $("job-logs").replaceChildren();
      loadJob();
      followLogs(m[1]);
    }
  } else {
    if (S.logs) S.logs.abort();
    S.route = { view: "home", id: null };
    $("view-job").hidden = true;
    $("view-home").hidden = false;
    renderJobs();
  }
  window.scrollTo(0, 0);
}

function wire() {
  $("search").addEventListener("input", (e) => { S.search = e.target.value.trim().toLowerCase(); renderJobs(); });
  for (const chip of document.querySelectorAll("#state-filter .chip")) {
    chip.addEventListener("click", () => {
      for (const c of document.querySelectorAll("#state-filter .chip")) c.classList.toggle("on", c === chip);
      S.filter = chip.dataset.state;
      renderJobs();
    });
  }
  window.addEventListener("hashchange", route);
  setInterval(() => { loadNetwork(); renderChart(); if (S.route.view === "home") renderJobs(); }, 10000);
}

async function start() {
  wire();
  try {
    S.self = await getJSON(`${API}/node`);
    $("node-id").textContent = S.self.node_id;
  } catch (err) { console.warn(err); }
  route();
  await Promise.all([loadNetwork(), loadJobs()]);
  followEvents();
}

start();
