// Alerts in the dashboard: problem counts in the header, a problems view
// (#/problems), an events timeline with handler output (#/events), alert
// state on host and cluster pages and the heatmap coloured by state. Reads
// GET /api/alerts and GET /api/events (web/API.md); when the aggregator runs
// without alerts those answer 404 and everything here stays hidden.
// Uses app.js's helpers (api, el, link, age) at call time; every text from
// the server goes in through text nodes, so handler output is shown escaped.
"use strict";

window.Alerts = (() => {
  const STATE_COLORS = { DOWN: "#dc2626", CRITICAL: "#dc2626", WARNING: "#f59e0b", UNKNOWN: "#9333ea", UP: "#16a34a", OK: "#16a34a", FLAPPING: "#ea580c" };
  const RANK = { OK: 0, UP: 0, FLAPPING: 1, UNKNOWN: 1, WARNING: 2, CRITICAL: 3, DOWN: 4 };
  let last = null;

  (function style() {
    const s = document.createElement("style");
    s.textContent = `
#alert-counts { display:flex; gap:.3rem; align-items:center; }
#alert-counts .b { padding:.1rem .45rem; border-radius:10px; font-size:.85em; background:#374151; color:#e5e7eb; }
#alert-counts .b.n { color:#fff; }
.st { display:inline-block; padding:.05rem .4rem; border-radius:4px; color:#fff; font-size:.85em; font-weight:600; }
.alerts-table { width:100%; margin-bottom:1rem; }
.alerts-table td.out { font-family:ui-monospace, monospace; font-size:.9em; }
.timeline { list-style:none; padding:0; margin:0; }
.timeline li { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:.4rem .7rem; margin-bottom:.4rem; }
.timeline .when { color:var(--muted); margin-right:.5rem; font-variant-numeric:tabular-nums; }
.timeline pre { background:#0f172a; color:#e2e8f0; padding:.5rem .7rem; border-radius:4px; overflow:auto; max-height:20rem; margin:.3rem 0; white-space:pre-wrap; }
.timeline .kind { font-weight:600; margin-right:.4rem; }
.heat a.alerting { outline:3px solid var(--fg); outline-offset:-3px; }
`;
    document.head.append(s);
  })();

  function stateBadge(state) {
    const b = el("span", { class: "st", "data-state": state }, state);
    b.style.background = STATE_COLORS[state] || "#6b7280";
    return b;
  }
  function since(t) { return t ? age(Math.max(0, Math.floor(Date.now() / 1000) - t)) : "–"; }
  function when(t) { return new Date(t * 1000).toLocaleString(); }

  // The current states, or null when alerts are off or unreachable.
  async function fetchAlerts() {
    try { last = await api("/api/alerts", 1); } catch (e) { last = null; }
    return last;
  }

  async function header() {
    let box = document.getElementById("alert-counts");
    if (!box) {
      box = el("a", { id: "alert-counts", href: "#/problems", "data-testid": "alert-counts", title: "problems" });
      document.getElementById("ranges").before(box);
    }
    const a = await fetchAlerts();
    if (!a) { box.style.display = "none"; return; }
    box.style.display = "";
    const c = a.counts || {};
    const badge = (name, n, color) => {
      const b = el("span", { class: "b" + (n ? " n" : ""), "data-count": name }, `${n || 0} ${name}`);
      if (n) b.style.background = color;
      return b;
    };
    box.replaceChildren(...[
      badge("down", c.down, STATE_COLORS.DOWN), badge("critical", c.critical, STATE_COLORS.CRITICAL),
      badge("warning", c.warning, STATE_COLORS.WARNING), badge("unknown", c.unknown, STATE_COLORS.UNKNOWN),
      c.flapping ? badge("flapping", c.flapping, STATE_COLORS.FLAPPING) : null,
      a.incidents && a.incidents.length ? badge("incidents", a.incidents.length, STATE_COLORS.CRITICAL) : null,
      a.warming_up ? el("span", { class: "b" }, "warming up") : null].filter(Boolean));
  }

  function problemRows(a, filter) {
    const rows = [];
    for (const h of a.hosts_down || []) {
      if (filter && !filter(h.cluster, h.host)) continue;
      rows.push({ cluster: h.cluster, host: h.host, what: "host", state: "DOWN", type: h.state_type, attempt: `${h.attempt}/${h.max_attempts}`, since: h.since, output: h.output + (h.flapping ? " · flapping" : "") });
    }
    // Hosts that flap while UP (the DOWN ones are listed above).
    for (const h of a.hosts_flapping || []) {
      if (!h.up || (filter && !filter(h.cluster, h.host))) continue;
      rows.push({ cluster: h.cluster, host: h.host, what: "host", state: "FLAPPING", type: h.state_type, attempt: `${h.attempt}/${h.max_attempts}`, since: h.since, output: "host flapping: it keeps going DOWN and coming back" });
    }
    for (const p of a.problems || []) {
      if (filter && !filter(p.cluster, p.host)) continue;
      rows.push({ cluster: p.cluster, host: p.host, what: `${p.rule} (${p.metric})`, state: p.state, type: p.state_type, attempt: `${p.attempt}/${p.max_attempts}`, since: p.since, output: p.output + (p.flapping ? " · flapping" : "") });
    }
    rows.sort((x, y) => (RANK[y.state] || 0) - (RANK[x.state] || 0) || x.since - y.since);
    return rows;
  }

  function problemTable(rows) {
    if (!rows.length) return el("p", { class: "muted", "data-testid": "no-problems" }, "No problems.");
    return el("table", { class: "alerts-table", "data-testid": "problems" },
      el("tr", {}, ...["state", "host", "check", "type", "attempt", "age", "output"].map((h) => el("th", {}, h))),
      ...rows.map((r) => el("tr", { "data-host": r.host },
        el("td", {}, stateBadge(r.state)),
        el("td", {}, link(r.host, ["host", r.cluster, r.host]), el("span", { class: "muted" }, ` ${r.cluster}`)),
        el("td", {}, r.what), el("td", {}, r.type), el("td", {}, r.attempt),
        el("td", { title: r.since ? when(r.since) : "" }, since(r.since)), el("td", { class: "out" }, r.output))));
  }

  function incidentList(incidents) {
    if (!incidents || !incidents.length) return null;
    return el("ul", { class: "timeline", "data-testid": "incidents" }, ...incidents.map((i) => el("li", {},
      stateBadge("CRITICAL"), " ", el("span", { class: "kind" }, `cluster incident ${i.cluster}`),
      `${i.down} of ${i.total} hosts down, since ${since(i.since)} — ${i.output}`)));
  }

  async function problemsView(view) {
    document.title = "Ganglion — problems";
    const a = await fetchAlerts();
    if (!a) { view.append(el("p", { class: "muted" }, "Alerts are not enabled on this aggregator.")); return; }
    view.append(el("h1", {}, "Problems ", el("span", { class: "muted" }, a.warming_up ? "(warming up: no events yet)" : ""),
      " ", link("events", ["events"])));
    const inc = incidentList(a.incidents);
    if (inc) view.append(el("h2", {}, "Cluster incidents"), inc);
    view.append(problemTable(problemRows(a)));
  }

  function eventItem(e) {
    const head = el("div", {},
      el("span", { class: "when" }, when(e.time)),
      el("span", { class: "kind", "data-kind": e.kind }, e.kind.replaceAll("_", " ")),
      stateBadge(e.state), " ",
      e.host ? link(e.host, ["host", e.cluster, e.host]) : link(e.cluster, ["cluster", e.cluster]),
      e.rule ? ` · ${e.rule}` : "",
      el("span", { class: "muted" }, ` ${e.state_type} ${e.attempt}/${e.max_attempts}`),
      " — ", e.output);
    const li = el("li", { "data-testid": "event", "data-kind": e.kind }, head);
    const h = e.handler;
    if (h) {
      const status = h.error ? `error: ${h.error}` : h.timed_out ? `timed out, killed (signal ${h.signal})`
        : h.signal ? `killed by signal ${h.signal}` : `exit ${h.exit_code}`;
      const det = el("details", { "data-testid": "handler-run", open: "" },
        el("summary", {}, `handler ${h.name}: ${status}, ${h.duration_ms} ms`),
        el("div", { class: "muted" }, "argv: ", el("code", {}, JSON.stringify(h.argv))));
      if (h.stdout) det.append(el("div", {}, "stdout" + (h.stdout_truncated ? " (truncated)" : "")), el("pre", { "data-testid": "handler-stdout" }, h.stdout));
      if (h.stderr) det.append(el("div", {}, "stderr" + (h.stderr_truncated ? " (truncated)" : "")), el("pre", { "data-testid": "handler-stderr" }, h.stderr));
      li.append(det);
    }
    return li;
  }

  async function eventList(query) {
    const p = new URLSearchParams(query);
    if (!p.get("limit")) p.set("limit", "100");
    const r = await api("/api/events?" + p.toString(), 1);
    const events = r.events || [];
    if (!events.length) return el("p", { class: "muted" }, "No events.");
    return el("ul", { class: "timeline", "data-testid": "events" }, ...events.map(eventItem));
  }

  async function eventsView(view) {
    document.title = "Ganglion — events";
    const { params } = parseHash();
    const q = {};
    for (const k of ["cluster", "host", "rule", "kind"]) if (params.get(k)) q[k] = params.get(k);
    const kinds = ["", "host_down", "host_up", "alert", "recovery", "flap_start", "flap_stop", "cluster_incident", "cluster_recovered", "handler_run"];
    const sel = el("select", { onchange: (e) => setParams({ kind: e.target.value }) },
      ...kinds.map((k) => el("option", k === (q.kind || "") ? { selected: "", value: k } : { value: k }, k || "all kinds")));
    const hostIn = el("input", { type: "search", placeholder: "host", value: q.host || "", onchange: (e) => setParams({ host: e.target.value }) });
    view.append(el("h1", {}, "Events ", link("problems", ["problems"])), el("div", { class: "toolbar" }, sel, hostIn));
    try { view.append(await eventList(q)); } catch (e) { view.append(el("p", { class: "muted" }, "Events are not available: " + e.message)); }
  }

  // On a host page: its problems and its recent events (handler runs included).
  async function hostPanel(view, cluster, host) {
    const a = await fetchAlerts();
    if (!a) return;
    const box = el("section", { "data-testid": "host-alerts" }, el("h2", {}, "Alerts"));
    box.append(problemTable(problemRows(a, (c, h) => c === cluster && h === host)));
    try { box.append(el("h2", {}, "Recent events"), await eventList({ cluster, host, limit: "20" })); } catch (e) { /* store off */ }
    view.append(box);
  }

  async function clusterPanel(view, cluster) {
    const a = await fetchAlerts();
    if (!a) return;
    const box = el("section", { "data-testid": "cluster-alerts" }, el("h2", {}, "Alerts"));
    const inc = incidentList((a.incidents || []).filter((i) => i.cluster === cluster));
    if (inc) box.append(inc);
    box.append(problemTable(problemRows(a, (c) => c === cluster)));
    box.append(el("div", {}, el("a", { href: "#/events?cluster=" + encodeURIComponent(cluster) }, "events of this cluster")));
    view.append(box);
  }

  // The heatmap's cells (a[data-host]) take their host's worst state's colour.
  function colorHeat(heat, cluster) {
    const a = last;
    if (!a) return;
    const worst = new Map();
    for (const r of problemRows(a, (c) => c === cluster)) {
      if ((RANK[r.state] || 0) > (RANK[worst.get(r.host)] ?? -1)) worst.set(r.host, r.state);
    }
    for (const cell of heat.querySelectorAll("a[data-host]")) {
      const s = worst.get(cell.dataset.host);
      if (!s) continue;
      cell.style.background = STATE_COLORS[s];
      cell.classList.add("alerting");
      cell.dataset.state = s;
      cell.title += ` — ${s}`;
    }
  }

  return { header, problemsView, eventsView, hostPanel, clusterPanel, colorHeat };
})();
