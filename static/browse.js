// The live parts of the browsable API: the idle timer, the warning a minute before the end
// with "Stay logged in", and the banner that says why this page's session ended, the moment
// it ends (Server-Sent Events), without a reload. Background requests send
// X-Session-Quiet: 1, so they never keep an idle session alive.
"use strict";
(function () {
  const body = document.body;
  const sessionId = body.dataset.sessionId;
  let left = body.dataset.timeout ? parseInt(body.dataset.timeout, 10) : null;
  if (!sessionId || left === null) return;

  const timer = document.getElementById("session-timer");
  const warning = document.getElementById("session-warning");
  const warningSeconds = document.getElementById("warning-seconds");
  const ended = document.getElementById("session-ended");
  const endedDetail = document.getElementById("session-ended-detail");
  const endedLogin = document.getElementById("session-ended-login");
  let deadline = Date.now() + left * 1000;
  let over = false;
  let events = null;

  function format(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
  }

  function showEnded(reason, detail) {
    if (over) return;
    over = true;
    if (events) events.close();
    warning.hidden = true;
    timer.textContent = "session ended";
    endedDetail.textContent = detail;
    const next = encodeURIComponent(location.pathname + location.search);
    endedLogin.href = `/api/login/?next=${next}&reason=${encodeURIComponent(reason)}`;
    ended.hidden = false;
    document.title = "Logged out · Bouncer";
  }

  // Asks the server how things stand, without moving the idle timer.
  async function check() {
    try {
      const response = await fetch("/api/v2/me/?format=json", {
        credentials: "same-origin",
        headers: { "X-Session-Quiet": "1", Accept: "application/json" },
      });
      if (response.status === 401) {
        const error = await response.json();
        showEnded(error.reason, error.detail);
      } else if (response.ok) {
        const header = response.headers.get("Auth-Token-Timeout");
        if (header !== null) deadline = Date.now() + parseInt(header, 10) * 1000;
      }
    } catch (_) {
      // The server is unreachable; try again later.
    }
  }

  function tick() {
    if (over) return;
    left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    timer.textContent = `session ends in ${format(left)}`;
    timer.classList.toggle("low", left <= 60);
    warning.hidden = left > 60;
    warningSeconds.textContent = format(left);
    if (left === 0) check();
  }

  document.getElementById("stay-logged-in").addEventListener("click", async function () {
    // One ordinary (not quiet) request: it moves the idle timer.
    const response = await fetch("/api/v2/me/?format=json", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      const error = await response.json();
      showEnded(error.reason, error.detail);
      return;
    }
    const header = response.headers.get("Auth-Token-Timeout");
    if (header !== null) deadline = Date.now() + parseInt(header, 10) * 1000;
    tick();
  });

  // The raw-data form shows, for each method, what it would send.
  const method = document.getElementById("raw-method");
  const content = document.getElementById("raw-content");
  if (method && content) {
    method.addEventListener("change", function () {
      const option = method.options[method.selectedIndex];
      content.value = option.dataset.prefill || "";
    });
  }

  if (window.EventSource) {
    events = new EventSource("/api/v2/me/events/");
    events.addEventListener("session_ended", function (event) {
      const data = JSON.parse(event.data);
      if (String(data.session_id) === sessionId) showEnded(data.reason, data.detail);
    });
    events.addEventListener("error", function () {
      // The stream dropped (the session may have ended): ask, quietly.
      if (!over) check();
    });
  }
  tick();
  setInterval(tick, 1000);
  setInterval(check, 30000);
})();
