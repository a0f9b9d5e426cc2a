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
  if (!peers && !newest) return;
  const events = new EventSource("/events");
  events.addEventListener("status", (e) => {
    const data = JSON.parse(e.data);
    for (const p of data.peers) {
      const row = peers && peers.querySelector(`tr[data-peer="${CSS.escape(p.hostname)}"]`);
      if (!row) continue;
      const state = row.querySelector(".state");
      state.textContent = p.state;
      state.className = "state " + p.state;
      row.querySelector(".sync").textContent = p.admin_off ? "disconnected"
        : p.state === "refused" ? "refused" : p.state !== "up" ? "no link"
        : p.behind ? `behind by ${p.behind}` : "in sync";
    }
  });
  events.addEventListener("history", (e) => {
    const [c] = JSON.parse(e.data);
    if (newest && c) newest.textContent = `${c.id} by ${c.user} on ${c.origin}: ${c.comment || "(no comment)"}`;
  });
});
