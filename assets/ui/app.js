// ffrtmp console: the live parts of server-rendered pages, and the buttons.
// Buttons call the API itself with the session's CSRF token; live parts follow the
// event stream (GET /events) and, when a page is stale, swap in its fresh <main>
// (`?fragment=1`). No inline scripts anywhere: the Content-Security-Policy forbids them.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const page = document.body.dataset.page;
  const main = document.getElementById("main");
  // Stored job event types (progress and log lines are transient and asked for apart).
  const JOB_STATES = ["job.submitted", "job.rejected", "job.queued", "job.assigned", "job.started",
    "job.paused", "job.resumed", "job.retrying", "job.timed_out", "job.completed", "job.failed",
    "job.canceled", "job.output_stored"];
  const NODE_EVENTS = ["node.registered", "node.lost", "node.revived", "node.drained", "node.undrained",
    "node.removed"];
  const LOG_LINES_KEPT = 500;

  async function api(method, path, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await res.json(); } catch (_) { /* an empty answer */ }
    return { ok: res.ok, status: res.status, json };
  }

  function say(text) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    t.classList.add("shown");
    clearTimeout(say.timer);
    say.timer = setTimeout(() => t.classList.remove("shown"), 4000);
  }

  function errorText(r) {
    return (r.json && (r.json.message || r.json.error)) || ("HTTP " + r.status);
  }

  // ---- figures, as the server renders them ------------------------------------
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function rateText(d) {
    if (!d) return "";
    const parts = [];
    if (d.fps != null) parts.push(Math.round(d.fps) + " fps");
    if (d.speed != null) parts.push(d.speed.toFixed(2) + "×");
    if (d.eta_seconds != null) parts.push("ETA " + duration(d.eta_seconds));
    return parts.join(" · ");
  }

  function setProgress(jobId, percent, detail) {
    document.querySelectorAll('.prog[data-job-id="' + CSS.escape(jobId) + '"]').forEach((el) => {
      const p = Math.max(0, Math.min(100, percent));
      el.querySelector("progress").value = p;
      el.querySelector(".pct").textContent = Math.round(p) + " %";
      if (detail !== undefined) el.querySelector(".rate").textContent = rateText(detail);
    });
  }

  function setStatus(jobId, status) {
    document.querySelectorAll('tr[data-job-id="' + CSS.escape(jobId) + '"] .status .badge, ' +
      '[data-live="job"][data-job-id="' + CSS.escape(jobId) + '"] .status .badge').forEach((b) => {
      b.textContent = status;
      b.dataset.status = status;
    });
    if (status === "completed") setProgress(jobId, 100, null);
  }

  function tickAges() {
    const now = Date.now();
    document.querySelectorAll("time.ago").forEach((t) => {
      const at = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(at)) t.textContent = duration((now - at) / 1000) + " ago";
    });
  }

  // ---- fresh <main> ------------------------------------------------------------
  let refreshing = false, again = false, lastRefresh = 0;

  async function refresh() {
    if (refreshing) { again = true; return; }
    const wait = 1000 - (Date.now() - lastRefresh);
    if (wait > 0) { refreshing = true; setTimeout(() => { refreshing = false; refresh(); }, wait); return; }
    refreshing = true;
    lastRefresh = Date.now();
    try {
      const sep = location.search ? "&" : "?";
      const res = await fetch(location.pathname + location.search + sep + "fragment=1", { credentials: "same-origin" });
      if (res.status === 303 || res.redirected) { location.reload(); return; }
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString("<main>" + (await res.text()) + "</main>", "text/html");
      const fresh = doc.querySelector("main");
      const checked = new Set([...main.querySelectorAll('input[name="job"]:checked')].map((c) => c.value));
      // What lives longer than one render: the log tail, a playing video, a bulk result.
      for (const id of ["log", "player", "bulk-result"]) {
        const old = document.getElementById(id), now = fresh.querySelector("#" + id);
        if (old && now && !(id === "log" && now.textContent.length > old.textContent.length)) now.replaceWith(old);
      }
      const focused = document.activeElement && document.activeElement.id;
      main.replaceChildren(...fresh.childNodes);
      main.querySelectorAll('input[name="job"]').forEach((c) => { c.checked = checked.has(c.value); });
      if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
      tickAges();
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  // ---- the event stream ----------------------------------------------------------
  // Open streams of this page. A browser allows six HTTP/1.1 connections per host and a
  // page kept in the back/forward cache keeps its streams: close them when the page is
  // hidden, open them again if it is shown from that cache.
  const streams = [];
  window.addEventListener("pagehide", () => { streams.splice(0).forEach((es) => es.close()); });
  window.addEventListener("pageshow", (e) => { if (e.persisted) { startLive(); refresh(); } });

  function follow(query, handlers) {
    const es = new EventSource("/events?" + query);
    streams.push(es);
    for (const [kind, fn] of Object.entries(handlers)) {
      es.addEventListener(kind, (m) => {
        let ev;
        try { ev = JSON.parse(m.data); } catch (_) { return; }
        fn(ev);
      });
    }
    return es;
  }

  function onEach(kinds, fn) {
    const h = {};
    kinds.forEach((k) => { h[k] = fn; });
    return h;
  }

  function onProgress(ev) {
    const d = ev.data || {};
    if (d.progress) setProgress(ev.job_id, d.progress.percent, d.progress);
  }

  function startLive() {
    const live = main.querySelector("[data-live]");
    if (page === "overview") {
      follow("type=" + JOB_STATES.concat(NODE_EVENTS).join(","), onEach(JOB_STATES.concat(NODE_EVENTS), refresh));
    } else if (page === "jobs" && live) {
      const h = onEach(JOB_STATES, (ev) => {
        const status = ev.data && ev.data.status;
        if (status && document.querySelector('tr[data-job-id="' + CSS.escape(ev.job_id) + '"]')) setStatus(ev.job_id, status);
        else if (ev.type === "job.submitted" && live.dataset.firstPage === "true") refresh();
      });
      h["job.progress"] = onProgress;
      follow("type=job.progress," + JOB_STATES.join(","), h);
    } else if (page === "job" && live) {
      const id = live.dataset.jobId;
      const h = onEach(JOB_STATES, (ev) => {
        if (ev.data && ev.data.status) setStatus(ev.job_id, ev.data.status);
        refresh();
      });
      h["job.progress"] = onProgress;
      h["job.log"] = (ev) => {
        const log = document.getElementById("log");
        const lines = (ev.data && ev.data.lines) || [];
        if (!log || !lines.length) return;
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        const kept = (log.textContent ? log.textContent.split("\n") : []).concat(lines);
        log.textContent = kept.slice(-LOG_LINES_KEPT).join("\n");
        if (atEnd) log.scrollTop = log.scrollHeight;
      };
      follow("job_id=" + encodeURIComponent(id), h);
      if (live.dataset.hasChildren === "true") {
        const c = onEach(JOB_STATES, (ev) => { if (ev.data && ev.data.status) setStatus(ev.job_id, ev.data.status); });
        c["job.progress"] = onProgress;
        follow("parent_id=" + encodeURIComponent(id) + "&type=job.progress," + JOB_STATES.join(","), c);
      }
    } else if (page === "nodes") {
      follow("type=" + NODE_EVENTS.join(","), onEach(NODE_EVENTS, refresh));
      // Heartbeats and utilisation are not events: look again every few seconds.
      poll(5000);
    } else if (page === "webhooks") {
      poll(5000);
    }
  }

  let poller = null;
  function poll(ms) {
    if (poller === null) poller = setInterval(refresh, ms);
  }

  // ---- buttons ---------------------------------------------------------------------
  async function bulk(action) {
    const ids = [...main.querySelectorAll('input[name="job"]:checked')].map((c) => c.value);
    const out = document.getElementById("bulk-result");
    if (!ids.length) { if (out) out.textContent = "Select jobs first."; return; }
    const results = await Promise.all(ids.map((id) => api("POST", "/jobs/" + id + "/" + action)));
    const refused = results.filter((r) => !r.ok);
    let text = (ids.length - refused.length) + " of " + ids.length + " jobs: " + action + " accepted";
    if (refused.length) text += "; refused: " + errorText(refused[0]);
    if (out) out.textContent = text;
    refresh();
  }

  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    let r = null;
    if (b.dataset.action) {
      r = await api("POST", "/jobs/" + b.dataset.job + "/" + b.dataset.action);
      say(r.ok ? (b.dataset.action + ": " + ((r.json && r.json.message) || "accepted")) : errorText(r));
    } else if (b.dataset.post) {
      r = await api("POST", b.dataset.post);
      say(r.ok ? b.textContent.trim() + ": done" : errorText(r));
    } else if (b.dataset.delete) {
      if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
      r = await api("DELETE", b.dataset.delete);
      say(r.ok ? "Removed" : errorText(r));
    } else if (b.dataset.bulk) {
      await bulk(b.dataset.bulk);
      return;
    } else {
      return;
    }
    refresh();
  });

  document.addEventListener("change", (e) => {
    if (e.target.id === "select-all") {
      main.querySelectorAll('input[name="job"]').forEach((c) => { c.checked = e.target.checked; });
    }
    if (e.target.id === "template") showTemplate();
  });

  // ---- the submit form ---------------------------------------------------------------
  function catalog() {
    const el = document.getElementById("templates");
    try { return el ? JSON.parse(el.textContent) : {}; } catch (_) { return {}; }
  }

  function showTemplate() {
    const name = document.getElementById("template").value;
    const t = catalog()[name];
    document.getElementById("template-description").textContent = t ? t.description : "";
    document.getElementById("template-parameters").textContent = t ? JSON.stringify(t.parameters, null, 2) : "";
  }

  const form = document.getElementById("submit-form");
  if (form) {
    showTemplate();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const err = document.getElementById("submit-error");
      const fail = (text) => { err.textContent = text; err.hidden = false; err.focus(); };
      err.hidden = true;
      let parameters = {};
      const raw = form.overrides.value.trim();
      if (raw) {
        try { parameters = JSON.parse(raw); } catch (x) { return fail("Overrides are not JSON: " + x.message); }
        if (typeof parameters !== "object" || Array.isArray(parameters) || parameters === null) {
          return fail("Overrides must be a JSON object.");
        }
      }
      if (form.input.value.trim()) parameters.input = form.input.value.trim();
      const file = form.upload.files[0];
      if (file) {
        // Stored on the master first; the job names it as upload://<id>/<name>.
        const status = document.getElementById("upload-status");
        const name = file.name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "").slice(-200) || "upload";
        status.textContent = "Uploading " + file.name + "…";
        const res = await fetch("/uploads?name=" + encodeURIComponent(name), {
          method: "POST", credentials: "same-origin", body: file,
          headers: { "X-CSRF-Token": csrf, "Content-Type": "application/octet-stream" },
        });
        let json = null;
        try { json = await res.json(); } catch (_) { /* no body */ }
        if (!res.ok) { status.textContent = ""; return fail(errorText({ status: res.status, json })); }
        status.textContent = "Uploaded " + file.name + " (" + json.bytes + " bytes).";
        parameters.input = json.input;
      }
      const body = { queue: form.queue.value, priority: form.priority.value, parameters };
      if (form.template.value) body.template = form.template.value;
      if (form.scenario.value.trim()) body.scenario = form.scenario.value.trim();
      const r = await api("POST", "/jobs", body);
      if (!r.ok) return fail(errorText(r));
      const id = r.json && (r.json.id || r.json.job_id);
      location.assign(id ? "/ui/jobs/" + id : "/ui/jobs");
    });
  }

  tickAges();
  setInterval(tickAges, 1000);
  startLive();
})();
