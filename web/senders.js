// Authenticated senders (GET /api/senders, web/API.md): a senders table with
// loss % and auth state under each cluster whose `auth` is on, a mark on the
// heat map for hosts that send authenticated, and a badge on the host page.
// Loaded after app.js; app.js calls window.senders.cluster/host if present.
"use strict";

window.senders = (() => {
  let cache = null; // { at, data }: one fetch serves a page's calls
  async function load() {
    if (cache && Date.now() - cache.at < 5000) return cache.data;
    const resp = await fetch("/api/senders");
    const data = resp.ok ? await resp.json() : { clusters: [], senders: [] };
    cache = { at: Date.now(), data };
    return data;
  }
  const mk = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k.nodeType ? k : document.createTextNode(String(k)));
    return e;
  };
  // The names a sender's rows may carry for one dashboard host: its host
  // string, the name of a spoofed "IP:name", or its source address.
  function names(s) {
    const out = new Set();
    if (s.host) { out.add(s.host); const i = s.host.indexOf(":"); if (i > 0) out.add(s.host.slice(i + 1)); }
    if (!s.restored) out.add(s.address.replace(/^\[?([^\]]*?)\]?:\d+$/, "$1"));
    return out;
  }
  const lossPct = (s) => (s.received + s.lost ? (100 * s.lost / (s.received + s.lost)).toFixed(2) + " %" : "-");
  const ago = (t, now) => { const s = Math.max(0, now - t); return s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h"; };

  async function cluster(view, name, heat) {
    const box = mk("div", { "data-testid": "senders" });
    view.append(box);
    const d = await load().catch(() => null);
    const c = d && d.clusters.find((x) => x.name === name);
    if (!c) return; // auth off: nothing to show
    const rows = d.senders.filter((s) => s.cluster === name);
    const authed = new Set();
    for (const s of rows) for (const n of names(s)) authed.add(n);
    for (const a of heat ? heat.querySelectorAll("a[data-host]") : []) {
      if (authed.has(a.dataset.host)) { a.classList.add("authed"); a.style.outline = "2px solid #2563eb"; a.title += " · authenticated"; }
    }
    box.append(mk("h2", {}, `Senders (auth = ${c.auth})`));
    if (!rows.length) { box.append(mk("p", { class: "muted" }, "No authenticated datagram yet.")); return; }
    const head = ["host", "address", "sender", "key", "epoch", "received", "lost", "loss %", "duplicates", "reordered", "replays refused", "state", "last seen"];
    const table = mk("table", { class: "senders", "data-testid": "senders-table" }, mk("tr", {}, ...head.map((h) => mk("th", {}, h))));
    for (const s of rows) {
      const state = s.cloned ? "CLONED" : s.restored ? "restored (nothing since restart)" : s.oneshot ? "authenticated (send)" : "authenticated";
      const tr = mk("tr", s.cloned ? { class: "down" } : {},
        mk("td", {}, s.host || "?"), mk("td", {}, s.address), mk("td", {}, s.sender_id), mk("td", {}, s.key_id),
        mk("td", {}, s.epoch), mk("td", {}, s.received), mk("td", {}, s.oneshot ? "-" : s.lost),
        mk("td", {}, s.oneshot ? "-" : lossPct(s)), mk("td", {}, s.duplicates), mk("td", {}, s.reordered),
        mk("td", {}, s.replays_rejected), mk("td", {}, state), mk("td", {}, s.restored ? "-" : ago(s.last_seen, d.localtime)));
      table.append(tr);
    }
    box.append(table);
  }

  async function host(view, clusterName, h) {
    const badge = mk("p", { "data-testid": "host-auth" });
    view.append(badge);
    const d = await load().catch(() => null);
    const c = d && d.clusters.find((x) => x.name === clusterName);
    if (!c) return;
    const mine = d.senders.filter((s) => s.cluster === clusterName && (names(s).has(h.name) || names(s).has(h.ip)));
    if (!mine.length) { badge.append(mk("span", { class: "muted" }, `plain (unauthenticated) · cluster auth = ${c.auth}`)); return; }
    for (const s of mine) {
      badge.append(mk("span", { class: s.cloned ? "down" : "up" },
        `${s.cloned ? "CLONED sender" : "authenticated"}: key ${s.key_id}, sender ${s.sender_id}, epoch ${s.epoch}, ` +
        (s.oneshot ? `${s.received} one-shot datagrams` : `loss ${lossPct(s)} (${s.lost} of ${s.received + s.lost})`) + " "));
    }
  }

  return { cluster, host };
})();
