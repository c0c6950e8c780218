// Dashboard status lines for [[forward]] (GET /api/forwards): one line per
// forward under the grid's cluster cards. Loaded before app.js, which calls
// window.forwardStatus(view) from the grid view; nothing shows when no
// forward is configured.
(function () {
  "use strict";
  function mb(b) { return (b / 1048576).toFixed(1) + " MiB"; }
  function ago(t) {
    if (!t) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 - t));
    return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }
  function line(f) {
    const row = document.createElement("div");
    row.className = "forward";
    row.setAttribute("data-testid", "forward-status");
    const state = document.createElement("span");
    state.className = f.up ? "up" : "down";
    state.textContent = f.up ? "up" : "down";
    const name = document.createElement("strong");
    name.textContent = f.name;
    const dropped = Object.entries(f.dropped).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`);
    const text = ` ${f.kind} → ${f.target} · sent ${f.sent} of ${f.samples} · ` +
      `dropped ${dropped.length ? dropped.join(", ") : "0"} · retried ${f.retried} · ` +
      `queue ${mb(f.queue_bytes)} of ${mb(f.queue_max_bytes)} · last success ${ago(f.last_success)}` +
      (f.mean_send_seconds ? ` · ${(f.mean_send_seconds * 1000).toFixed(1)} ms per send` : "");
    row.append(state, " ", name, text);
    if (!f.up && f.last_error) {
      const err = document.createElement("span");
      err.className = "muted";
      err.textContent = " · " + f.last_error;
      row.append(err);
    }
    return row;
  }
  window.forwardStatus = async function (view) {
    let list;
    try {
      const r = await fetch("/api/forwards");
      if (!r.ok) return;
      list = await r.json();
    } catch (e) {
      return;
    }
    if (!Array.isArray(list) || list.length === 0) return;
    const h = document.createElement("h2");
    h.textContent = "Forwards";
    const box = document.createElement("div");
    box.className = "forwards";
    box.append(...list.map(line));
    view.append(h, box);
  };
})();
