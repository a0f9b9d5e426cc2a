// clusterd's pages: a mode change follows the menu (and the word "Mode" flashes), and
// open pages follow the node's server-sent events (status, the newest commit).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const select = document.getElementById("mode-select");
  if (select) {
    select.addEventListener("change", () => {
      document.getElementById("mode-form").classList.add("flash");
      select.form.submit();
    });
  }
  const peers = document.getElementById("peers");
  const newest = document.getElementById("newest");
  const history = document.querySelector("#history tbody");
  if (!peers && !newest && !history) return;
  const events = new EventSource("/events");
  events.addEventListener("status", (e) => {
    const data = JSON.parse(e.data);
    for (const p of data.peers) {
      const row = peers && peers.querySelector(`tr[data-peer="${CSS.escape(p.hostname)}"]`);
      if (!row) continue;
      const state = row.querySelector(".state");
      state.textContent = p.state;
      state.className = "state " + p.state;
      const sync = row.querySelector(".sync");  // the node's words (node/syncstate.py)
      sync.textContent = p.sync.text;
      sync.title = p.sync.action;
      sync.className = "sync " + p.sync.state;
    }
  });
  events.addEventListener("history", (e) => {
    const [c] = JSON.parse(e.data);
    if (!c) return;
    if (newest) newest.textContent = `${c.id} by ${c.user} on ${c.origin}: ${c.comment || "(no comment)"}`;
    if (history && !history.querySelector(`tr[data-commit="${CSS.escape(c.id)}"]`)) {
      const row = history.insertRow(0);  // a commit made since the page was loaded
      row.dataset.commit = c.id;
      const when = new Date(c.at * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
      const link = document.createElement("a");
      link.href = `/history/${encodeURIComponent(c.id)}`;
      link.textContent = c.id;
      row.insertCell().append(link);
      for (const text of [when, c.origin, c.user, c.comment, c.changed.join(", ")]) {
        row.insertCell().textContent = text;  // (text, never markup)
      }
      const seal = row.insertCell();
      seal.className = c.seal.ok ? "seal" : "seal notice";
      seal.title = c.seal.text;
      seal.textContent = (c.seal.hash ? c.seal.hash.slice(0, 12) + " " : "") + c.seal.label;
    }
  });
});
