// Ganglion dashboard: grid → cluster → host → metric views over the JSON API
// (web/API.md), drawn with uPlot. All state lives in the URL hash, so a link
// reproduces the page. No framework, no CDN.
"use strict";

const RANGES = [["1h", 3600], ["2h", 7200], ["4h", 14400], ["day", 86400], ["week", 604800], ["month", 2678400], ["year", 31622400]];
const charts = []; // live charts on the page: {el, query, plot}
let refreshTimer = null;
let structure = null; // what the current view was built from, to notice new hosts/metrics

// ---- URL state -------------------------------------------------------------
function parseHash() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = h.split("?");
  // A hand-typed or truncated %-escape must not stop routing (URIError).
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch (e) { return p; }
  });
  return { parts, params: new URLSearchParams(qs || "") };
}
function hashFor(parts, params) {
  const p = "#/" + parts.map(encodeURIComponent).join("/");
  const q = params.toString();
  return q ? p + "?" + q : p;
}
function go(parts, changes) {
  const { params } = parseHash();
  for (const [k, v] of Object.entries(changes || {})) {
    if (v === null || v === undefined || v === "") params.delete(k); else params.set(k, v);
  }
  location.hash = hashFor(parts, params);
}
function setParams(changes) { go(parseHash().parts, changes); }

// Time window: ?r=<name> (relative, live) or ?start=&end= (absolute, from zoom).
function timeWindow() {
  const { params } = parseHash();
  if (params.get("start") && params.get("end")) {
    return { start: +params.get("start"), end: +params.get("end"), live: false };
  }
  const r = RANGES.find(([n]) => n === params.get("r")) || RANGES[0];
  const now = Math.floor(Date.now() / 1000);
  return { start: now - r[1], end: now, live: true, name: r[0] };
}

// ---- helpers -----------------------------------------------------------------
// A busy server answers 503 with Retry-After (heavy requests are bounded):
// wait as told and ask again, a few times, before showing an error.
async function api(path, attempts = 4) {
  for (let i = 0; ; i++) {
    const resp = await fetch(path);
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) return body;
    const retry = Number(resp.headers.get("Retry-After"));
    if (resp.status === 503 && i + 1 < attempts && retry > 0 && retry <= 30) {
      await new Promise((r) => setTimeout(r, retry * 1000));
      continue;
    }
    throw new Error(body.error || resp.statusText);
  }
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : document.createTextNode(String(k)));
  return e;
}
function link(text, parts, keep = true) {
  const { params } = parseHash();
  const p = new URLSearchParams();
  if (keep) for (const k of ["r", "start", "end"]) if (params.get(k)) p.set(k, params.get(k));
  return el("a", { href: hashFor(parts, p) }, text);
}
function fmt(v, units) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  const s = a >= 1e9 ? (v / 1e9).toFixed(2) + "G" : a >= 1e6 ? (v / 1e6).toFixed(2) + "M" : a >= 1e4 ? (v / 1e3).toFixed(1) + "k" : a >= 100 ? v.toFixed(0) : v.toPrecision(3);
  return units && units.trim() ? s + " " + units.trim() : s;
}
function age(s) { return s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h"; }
const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];

// ---- charts ------------------------------------------------------------------
// query: {cluster?, host?, hosts?, metric, title, units, desc}
// batch: optional {query, entries}: charts of one metric for many hosts that
// share one series request (small multiples), drawn by drawBatch.
function chart(container, query, small, batch) {
  const box = el("div", { class: "chart", "data-testid": "chart", "data-metric": query.metric });
  const dl = el("span", { class: "dl" });
  const titleEl = query.href ? link(query.title || query.metric, query.href) : el("span", {}, query.title || query.metric);
  box.append(el("div", { class: "title" }, titleEl, dl));
  if (query.desc) box.append(el("div", { class: "desc" }, query.desc));
  const body = el("div", { class: "plot" });
  box.append(body);
  container.append(box);
  const entry = { box, body, dl, query, small, plot: null, batch };
  charts.push(entry);
  if (batch) batch.entries.push(entry); else draw(entry);
  return entry;
}
function seriesUrl(q, kind, extra) {
  const w = timeWindow();
  const p = new URLSearchParams({ metric: q.metric, start: w.start, end: w.end });
  if (q.cluster) p.set("cluster", q.cluster);
  if (q.host) p.set("host", q.host);
  if (q.hosts) p.set("hosts", q.hosts);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return `/api/${kind}?` + p.toString();
}
function plotWidth(entry) {
  return Math.max(200, Math.floor(entry.body.clientWidth || entry.box.clientWidth || 400));
}
function showError(entry, e) {
  entry.body.replaceChildren(el("div", { class: "empty" }, "error: " + e.message));
  entry.plot = null;
}
async function draw(entry) {
  if (entry.batch) return drawBatch(entry.batch);
  const width = plotWidth(entry);
  try {
    plotData(entry, await api(seriesUrl(entry.query, "series", { points: Math.min(10000, Math.max(10, width)) })), width);
  } catch (e) {
    showError(entry, e);
  }
}
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
// One request for every chart of the batch; each gets its host's column.
async function drawBatch(batch) {
  if (!batch.entries.length) return;
  const width = plotWidth(batch.entries[0]);
  const hosts = "^(?:" + batch.entries.map((e) => escapeRe(e.query.host)).join("|") + ")$";
  let data;
  try {
    data = await api(seriesUrl({ ...batch.query, hosts }, "series", { points: Math.min(10000, Math.max(10, width)) }));
  } catch (e) {
    for (const entry of batch.entries) showError(entry, e);
    return;
  }
  const byHost = new Map(data.columns.map((c, i) => [c.host, i]));
  for (const entry of batch.entries) {
    const i = byHost.get(entry.query.host);
    const cols = i === undefined ? [] : [data.columns[i]];
    const values = i === undefined ? [] : [data.values[i]];
    plotData(entry, { ...data, times: cols.length ? data.times : [], columns: cols, values }, width);
  }
}
function plotData(entry, data, width) {
  const { query, body, box, dl } = entry;
  dl.replaceChildren(
    el("a", { href: seriesUrl(query, "export", { format: "csv" }), download: "" }, "CSV"),
    el("a", { href: seriesUrl(query, "export", { format: "json" }), download: "" }, "JSON"));
  const cols = data.columns.map((c, i) => ({ c, i })).filter(({ c }) => c.ds === "sum");
  let points = 0;
  for (const { i } of cols) points += data.values[i].filter((v) => v !== null).length;
  box.setAttribute("data-points", String(points));
  box.setAttribute("data-times", String(data.times.length));
  if (!data.times.length) {
    body.replaceChildren(el("div", { class: "empty" }, "no data yet"));
    entry.plot = null;
    return;
  }
  const aligned = [data.times, ...cols.map(({ i }) => data.values[i])];
  if (entry.plot && entry.plot.series.length === aligned.length) {
    entry.plot.setData(aligned);
    return;
  }
  const names = cols.map(({ c }) => query.hosts ? (c.host ?? c.name) : (query.host || query.cluster || "grid"));
  const opts = {
    width,
    height: entry.small ? 120 : 200,
    legend: { show: !entry.small || cols.length > 1 },
    // We zoom through the URL (so links keep the range), not inside uPlot.
    cursor: { drag: { x: true, y: false, setScale: false } },
    scales: { x: { time: true } },
    axes: [{}, { values: (u, vals) => vals.map((v) => fmt(v, "")), size: 60 }],
    series: [{}, ...names.map((n, k) => ({ label: n, stroke: COLORS[k % COLORS.length], width: 1.5, value: (u, v) => fmt(v, query.units) }))],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 3) return;
        const a = Math.floor(u.posToVal(u.select.left, "x"));
        const b = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
        setParams({ start: a, end: b, r: null }); // drag to zoom: the range goes into the URL
      }],
    },
  };
  body.replaceChildren();
  entry.plot = new uPlot(opts, aligned, body);
}
// Live refresh of the visible range (every 15 s, or ?refresh=SECONDS): redraw
// graphs in place, and rebuild the view when hosts or metrics appeared.
function scheduleRefresh() {
  clearInterval(refreshTimer);
  const secs = Math.max(1, +parseHash().params.get("refresh") || 15);
  refreshTimer = setInterval(async () => {
    if (window.Alerts) Alerts.header();
    if (!timeWindow().live) return;
    if (structure) {
      const now = await structure.probe().catch(() => structure.sig);
      if (now !== structure.sig) { render(); return; }
    }
    const batches = new Set();
    for (const c of charts) {
      if (!document.body.contains(c.box)) continue;
      if (c.batch) batches.add(c.batch); else draw(c);
    }
    for (const b of batches) drawBatch(b);
  }, secs * 1000);
}

// ---- chrome --------------------------------------------------------------------
function renderRanges() {
  const w = timeWindow();
  const box = document.getElementById("ranges");
  box.replaceChildren(...RANGES.map(([n]) => el("button", { class: w.live && w.name === n ? "on" : "", "data-range": n, onclick: () => setParams({ r: n, start: null, end: null }) }, n)));
  if (!w.live) box.append(el("button", { class: "on", title: "zoomed; click for live", onclick: () => setParams({ start: null, end: null }) }, "zoom ×"));
}
function crumbs(parts) {
  const c = document.getElementById("crumbs");
  c.replaceChildren();
  if (parts[0] === "cluster" || parts[0] === "host" || parts[0] === "metric") c.append(link(parts[1], ["cluster", parts[1]]));
  if (parts[0] === "host") c.append(el("span", {}, parts[2]));
  if (parts[0] === "metric") c.append(el("span", {}, parts[2]));
}

// ---- views -------------------------------------------------------------------
const SUMMARY_METRICS = [["load_one", "Load (1 min)", " "], ["cpu_user", "CPU user", "%"], ["cpu_system", "CPU system", "%"], ["mem_free", "Free memory", "KB"], ["bytes_in", "Bytes in", "bytes/sec"], ["bytes_out", "Bytes out", "bytes/sec"]];

async function gridView(view) {
  const g = await api("/api/grid");
  const sig = (x) => x.clusters.map((c) => c.name + c.hosts_up + "/" + c.hosts_down).join(",");
  structure = { sig: sig(g), probe: async () => sig(await api("/api/grid")) };
  document.title = `Ganglion — ${g.grid}`;
  view.append(el("h1", {}, `Grid ${g.grid} `, el("span", { class: "muted" }, `${g.summary.hosts_up} up, ${g.summary.hosts_down} down`)));
  const cards = el("div", { class: "cards" });
  for (const c of g.clusters) {
    cards.append(el("div", { class: "card", "data-testid": "cluster-card" }, link(c.name, ["cluster", c.name]), el("div", {},
      el("span", { class: "up" }, `${c.hosts_up} up`), " · ", el("span", { class: c.hosts_down ? "down" : "muted" }, `${c.hosts_down} down`),
      c.stale ? el("span", { class: "stale" }, " · stale") : null)));
  }
  for (const c of g.grids) {
    cards.append(el("div", { class: "card" }, el("strong", {}, `grid ${c.name}`), el("div", {}, `${c.hosts_up} up · ${c.hosts_down} down`, c.stale ? " · stale" : "")));
  }
  view.append(cards, el("h2", {}, "Grid summary"));
  const box = el("div", { class: "charts" });
  view.append(box);
  for (const [m, t, u] of SUMMARY_METRICS) chart(box, { metric: m, title: t, units: u });
  if (window.forwardStatus) await window.forwardStatus(view); // web/forward.js
}

function heatColor(load, cpus) {
  const x = Math.max(0, Math.min(1.5, (load || 0) / Math.max(1, cpus || 1))) / 1.5;
  const hue = 120 - 120 * x;
  return `hsl(${hue}, 70%, 45%)`;
}

async function clusterView(view, name) {
  const wanted = parseHash().params.get("m") || "load_one";
  const url = `/api/cluster/${encodeURIComponent(name)}?metric=${encodeURIComponent(wanted)}`;
  const c = await api(url);
  const sig = (x) => x.hosts.map((h) => h.name + h.alive).join(",") + "|" + x.metrics.join(",");
  structure = { sig: sig(c), probe: async () => sig(await api(url)) };
  const { params } = parseHash();
  document.title = `Ganglion — ${c.name}`;
  view.append(el("h1", {}, `Cluster ${c.name} `, el("span", { class: "muted" }, `${c.hosts_up} up, ${c.hosts_down} down`, c.stale ? " · stale" : "")));
  const heat = el("div", { class: "heat", "data-testid": "heatmap" });
  for (const h of c.hosts) {
    const a = link("", ["host", c.name, h.name]);
    a.dataset.host = h.name;
    a.style.background = h.alive ? heatColor(h.load_one, h.cpu_num) : "#9ca3af";
    a.title = `${h.name}: load ${fmt(h.load_one)} / ${h.cpu_num || "?"} CPUs${h.alive ? "" : " (down)"}`;
    a.dataset.host = h.name;
    heat.append(a);
  }
  view.append(el("h2", {}, "Load per host"), heat);
  if (window.Alerts) { await Alerts.clusterPanel(view, c.name); Alerts.colorHeat(heat, c.name); }
  view.append(el("h2", {}, "Cluster summary"));
  const box = el("div", { class: "charts" });
  view.append(box);
  for (const [m, t, u] of SUMMARY_METRICS) chart(box, { cluster: c.name, metric: m, title: t, units: u });

  // Small multiples of one metric for every host.
  const metric = params.get("m") || (c.metrics.includes("load_one") ? "load_one" : c.metrics[0]);
  const sort = params.get("sort") || "name";
  const filter = params.get("f") || "";
  const sel = el("select", { onchange: (e) => setParams({ m: e.target.value }) }, ...c.metrics.map((m) => el("option", m === metric ? { selected: "" } : {}, m)));
  const sortSel = el("select", { onchange: (e) => setParams({ sort: e.target.value }) },
    el("option", sort === "name" ? { selected: "" } : {}, "name"), el("option", sort === "value" ? { selected: "" } : {}, "value"));
  const filt = el("input", { type: "search", placeholder: "filter hosts", value: filter, onchange: (e) => setParams({ f: e.target.value }) });
  view.append(el("h2", {}, "Hosts"), el("div", { class: "toolbar" }, "metric ", sel, " sort by ", sortSel, filt,
    link("aggregate graph", ["metric", c.name, metric || ""])));
  let hosts = c.hosts.filter((h) => h.name.toLowerCase().includes(filter.toLowerCase()));
  // Values come with the cluster answer (?metric=) for the chosen metric.
  if (sort === "value" && metric === wanted) hosts.sort((a, b) => (b.value ?? -Infinity) - (a.value ?? -Infinity));
  const small = el("div", { class: "charts small" });
  view.append(small);
  if (window.senders) window.senders.cluster(view, c.name, heat); // web/senders.js
  if (!metric) return;
  const batch = { query: { cluster: c.name, metric }, entries: [] };
  for (const h of hosts.slice(0, 60)) {
    chart(small, { cluster: c.name, host: h.name, metric, title: h.name, href: ["host", c.name, h.name] }, true, batch);
  }
  drawBatch(batch);
  if (hosts.length > 60) view.append(el("p", { class: "muted" }, `${hosts.length - 60} more hosts: narrow the filter.`));
}

async function hostView(view, cluster, host) {
  const url = `/api/host/${encodeURIComponent(cluster)}/${encodeURIComponent(host)}`;
  const h = await api(url);
  const sig = (x) => x.metrics.map((m) => m.name).join(",");
  structure = { sig: sig(h), probe: async () => sig(await api(url)) };
  document.title = `Ganglion — ${h.name}`;
  view.append(el("h1", {}, `${h.name} `, el("span", { class: h.alive ? "up" : "down", "data-testid": "host-state" }, h.alive ? "up" : "down"),
    el("span", { class: "muted" }, ` · ${h.ip} · last report ${age(h.tn)} ago · location ${h.location}`)));
  if (window.Alerts) await Alerts.hostPanel(view, cluster, h.name);
  if (window.senders) window.senders.host(view, cluster, h); // web/senders.js
  const strings = h.metrics.filter((m) => !m.numeric);
  if (strings.length) {
    view.append(el("table", { "data-testid": "host-strings" }, ...strings.map((m) => el("tr", {}, el("th", {}, m.title), el("td", {}, m.val)))));
  }
  const groups = new Map();
  for (const m of h.metrics.filter((m) => m.numeric)) {
    if (!groups.has(m.group)) groups.set(m.group, []);
    groups.get(m.group).push(m);
  }
  for (const g of [...groups.keys()].sort()) {
    view.append(el("h2", {}, g));
    const box = el("div", { class: "charts" });
    view.append(box);
    for (const m of groups.get(g)) {
      chart(box, { cluster, host: h.name, metric: m.name, title: `${m.title} (${fmt(m.value, m.units)})`, units: m.units, desc: m.desc,
        href: ["metric", cluster, m.name] });
    }
  }
}

async function metricView(view, cluster, metric) {
  const { params } = parseHash();
  const re = params.get("hosts") || ".*";
  view.append(el("h1", {}, `${metric} across ${cluster}`));
  const input = el("input", { type: "text", value: re, placeholder: "host regex", onchange: (e) => setParams({ hosts: e.target.value }) });
  view.append(el("div", { class: "toolbar" }, "hosts matching ", input));
  const box = el("div", { class: "charts" });
  view.append(box);
  chart(box, { cluster, hosts: re, metric, title: `${metric} per host` });
  chart(box, { cluster, metric, title: `${metric} — cluster sum` });
}

async function render() {
  charts.length = 0;
  structure = null;
  const view = document.getElementById("view");
  view.replaceChildren();
  const { parts } = parseHash();
  renderRanges();
  crumbs(parts);
  if (window.Alerts) Alerts.header();
  try {
    if (parts[0] === "problems" && window.Alerts) await Alerts.problemsView(view);
    else if (parts[0] === "events" && window.Alerts) await Alerts.eventsView(view);
    else if (parts[0] === "cluster" && parts[1]) await clusterView(view, parts[1]);
    else if (parts[0] === "host" && parts[2]) await hostView(view, parts[1], parts[2]);
    else if (parts[0] === "metric" && parts[2]) await metricView(view, parts[1], parts[2]);
    else await gridView(view);
  } catch (e) {
    view.append(el("p", { class: "down" }, "Error: " + e.message));
  }
  scheduleRefresh();
}

// ---- search --------------------------------------------------------------------
let searchTimer = null;
document.getElementById("search").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  const q = e.target.value.trim();
  const box = document.getElementById("results");
  if (!q) { box.style.display = "none"; return; }
  searchTimer = setTimeout(async () => {
    const r = await api("/api/search?q=" + encodeURIComponent(q)).catch(() => ({ hosts: [], metrics: [] }));
    box.replaceChildren(
      ...r.hosts.map((h) => link(`host ${h.host} (${h.cluster})`, ["host", h.cluster, h.host])),
      ...r.metrics.slice(0, 50).map((m) => link(`${m.metric} on ${m.host}`, ["metric", m.cluster, m.metric])));
    box.style.display = box.children.length ? "block" : "none";
  }, 150);
});
document.addEventListener("click", (e) => { if (!e.target.closest(".search")) document.getElementById("results").style.display = "none"; });

window.addEventListener("hashchange", render);
render();
