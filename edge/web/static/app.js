// fallwatch's setup and review page: plain JavaScript, no build step. Talks to the JSON API of
// edge/web/server.py; every POST carries X-Fallwatch: 1 (the server refuses POSTs without it).
"use strict";

const state = { cameras: [], liveFps: 3, page: null, timers: [], zones: [], selected: -1, drawing: null,
                drag: null, zoneCamera: null, size: [640, 360] };

function $(id) { return document.getElementById(id); }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  if (opts.body !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers = { "Content-Type": "application/json", "X-Fallwatch": "1" };
    opts.body = JSON.stringify(opts.body);
  }
  const response = await fetch(path, opts);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (!response.ok) throw new Error(data && data.error ? data.error : response.statusText);
  return data;
}
function every(ms, fn) { fn(); state.timers.push(setInterval(fn, ms)); }
function stopTimers() { state.timers.forEach(clearInterval); state.timers = []; }
function liveUrl(camera) { return "/api/live/" + encodeURIComponent(camera) + ".jpg?t=" + Date.now(); }
function refreshImage(img, camera) {
  // Load the next picture off-screen and swap it in: no flicker, and no request piles up.
  if (img.dataset.loading === "1") return;
  img.dataset.loading = "1";
  const next = new Image();
  next.onload = () => { img.src = next.src; img.dataset.loading = "0"; img.dataset.loaded = "1"; };
  next.onerror = () => { img.dataset.loading = "0"; };
  next.src = liveUrl(camera);
}

// ------------------------------------------------------------------ pages

function show(page) {
  stopTimers();
  state.page = page;
  document.querySelectorAll(".page").forEach(p => p.classList.toggle("active", p.id === "page-" + page));
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page));
  ({ live: showLive, status: showStatus, zones: showZones, review: showReview })[page]();
}

function showLive() {
  const box = $("live-cameras");
  box.textContent = "";
  for (const cam of state.cameras) {
    const img = el("img", { id: "live-" + cam.name, alt: "live view of " + cam.name });
    const people = el("table", { id: "people-" + cam.name });
    box.append(el("div", { class: "camera" }, el("h2", {}, cam.name), img, people));
    every(1000 / state.liveFps, () => refreshImage(img, cam.name));
    every(1000, async () => {
      try { renderPeople(people, await api("/api/live/" + encodeURIComponent(cam.name) + "/people")); }
      catch (e) { people.textContent = e.message; }
    });
  }
}

function renderPeople(table, data) {
  table.textContent = "";
  table.append(el("tr", {}, el("th", {}, "track"), el("th", {}, "state"), el("th", {}, "parts seen")));
  for (const p of data.people) {
    const seen = p.keypoints.filter(k => k[2] > 0).length;
    table.append(el("tr", { class: "person" }, el("td", {}, p.track ? "#" + p.track : "?"),
      el("td", { class: "state-" + p.state }, p.state), el("td", {}, seen + " / 18")));
  }
  if (!data.people.length) table.append(el("tr", {}, el("td", { colspan: 3 }, "nobody in view")));
}

function kv(rows) {
  const table = el("table");
  for (const [k, v] of rows) table.append(el("tr", {}, el("th", {}, k), el("td", {}, v)));
  return table;
}

function showStatus() {
  every(2000, async () => {
    const body = $("status-body");
    let s;
    try { s = await api("/api/status"); } catch (e) { body.textContent = e.message; return; }
    body.textContent = "";
    if (!s.running) { body.append("The pipeline is not running (starting or reloading)."); return; }
    const card = (title, ...content) => body.append(el("div", { class: "card" }, el("h3", {}, title), ...content));
    card("Daemon", kv([["frames per second", s.fps_processed], ["frames processed", s.frames_processed],
      ["people seen", s.people_seen], ["events", s.events], ["frame errors", s.frame_errors],
      ["uptime, s", s.uptime_s], ["memory, MB", s.rss_mb], ["configuration reloads", s.config_generation - 1]]));
    const stages = el("table", { id: "status-stages" }, el("tr", {}, el("th", {}, "stage"), el("th", {}, "median ms"), el("th", {}, "p90 ms")));
    for (const [name, st] of Object.entries(s.stages)) stages.append(el("tr", {}, el("td", {}, name), el("td", {}, st.median_ms), el("td", {}, st.p90_ms)));
    card("Stage times", stages);
    const cams = el("table", { id: "status-cameras" }, el("tr", {}, ...["camera", "state", "fps", "frames", "dropped", "reconnects", "tracks", "zones in force", "last error"].map(h => el("th", {}, h))));
    for (const [name, c] of Object.entries(s.cameras)) {
      const zones = (s.zones_in_force[name] || []).map(z => z.kind + " (" + z.polygon.length + " corners)").join(", ") || "none";
      cams.append(el("tr", {}, ...[name, c.state, c.fps_processed, c.frames_processed, c.dropped, c.reconnects, c.tracks, zones, c.last_error || ""].map(v => el("td", {}, v))));
    }
    card("Cameras", cams);
    if (s.mqtt) card("MQTT", kv([["connected", s.mqtt.connected ? "yes" : "no"], ["outbox backlog", s.mqtt.outbox_depth],
      ["outbox state", s.mqtt.outbox_state], ["events emitted", s.mqtt.events_emitted],
      ["events acknowledged", s.mqtt.events_acked], ["connects", s.mqtt.connects], ["disconnects", s.mqtt.disconnects]]));
    else card("MQTT", el("p", {}, "off (mqtt.enabled: false)"));
    if (s.jetson) card("Jetson", el("pre", {}, JSON.stringify(s.jetson, null, 1)));
  });
}

// ------------------------------------------------------------------ zone editor

const COLOURS = { ignore: "rgba(40, 140, 255, ", floor: "rgba(60, 200, 90, " };

function showZones() {
  const select = $("zone-camera");
  if (!select.options.length) for (const cam of state.cameras) select.append(el("option", { value: cam.name }, cam.name));
  loadZones(select.value);
  every(1000, () => refreshImage($("zone-image"), select.value));
}

async function loadZones(camera) {
  state.zoneCamera = camera;
  state.selected = -1; state.drawing = null;
  const data = await api("/api/cameras");
  state.cameras = data.cameras;
  const cam = data.cameras.find(c => c.name === camera);
  state.zones = (cam && cam.zones ? cam.zones : []).map(z => ({ kind: z.kind, polygon: z.polygon.map(p => p.slice()) }));
  drawZones();
}

function canvasPoint(ev) {
  const canvas = $("zone-canvas"), r = canvas.getBoundingClientRect();
  return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
}
function inside(poly, p) {
  let hit = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > p[1]) !== (yj > p[1]) && p[0] < (xj - xi) * (p[1] - yi) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}
function round4(v) { return Math.round(v * 10000) / 10000; }

function drawZones() {
  const canvas = $("zone-canvas"), img = $("zone-image");
  if (img.naturalWidth) canvas.height = Math.round(canvas.width * img.naturalHeight / img.naturalWidth);
  canvas.style.height = canvas.height + "px";
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const paint = (poly, kind, selected, open) => {
    if (!poly.length) return;
    ctx.beginPath();
    poly.forEach(([x, y], i) => i ? ctx.lineTo(x * W, y * H) : ctx.moveTo(x * W, y * H));
    if (!open) { ctx.closePath(); ctx.fillStyle = COLOURS[kind] + (selected ? "0.35)" : "0.2)"); ctx.fill(); }
    ctx.lineWidth = selected ? 3 : 2; ctx.strokeStyle = COLOURS[kind] + "1)"; ctx.stroke();
    for (const [x, y] of poly) { ctx.beginPath(); ctx.arc(x * W, y * H, selected || open ? 5 : 3, 0, 7); ctx.fillStyle = "#fff"; ctx.fill(); ctx.stroke(); }
  };
  state.zones.forEach((z, i) => paint(z.polygon, z.kind, i === state.selected, false));
  if (state.drawing) paint(state.drawing.polygon, state.drawing.kind, true, true);
  const list = $("zone-list");
  list.textContent = "";
  state.zones.forEach((z, i) => list.append(el("li", { class: i === state.selected ? "selected" : "", onclick: () => { state.selected = i; drawZones(); } },
    (i === state.selected ? "▶ " : "") + z.kind + ": " + z.polygon.map(p => "[" + p[0].toFixed(3) + ", " + p[1].toFixed(3) + "]").join(" "))));
  $("zone-close").disabled = !state.drawing;
  $("zone-delete").disabled = state.selected < 0;
}

function zoneMouseDown(ev) {
  const p = canvasPoint(ev), canvas = $("zone-canvas");
  if (state.drawing) { state.drawing.polygon.push(p.map(round4)); drawZones(); return; }
  const sel = state.zones[state.selected];
  if (sel) {
    const near = sel.polygon.findIndex(([x, y]) => Math.hypot((x - p[0]) * canvas.width, (y - p[1]) * canvas.height) < 9);
    if (near >= 0) { state.drag = { corner: near }; return; }
    if (inside(sel.polygon, p)) { state.drag = { from: p, start: sel.polygon.map(q => q.slice()) }; return; }
  }
  state.selected = state.zones.findIndex(z => inside(z.polygon, p));
  drawZones();
}
function zoneMouseMove(ev) {
  if (!state.drag) return;
  const p = canvasPoint(ev), zone = state.zones[state.selected];
  if (state.drag.corner !== undefined) zone.polygon[state.drag.corner] = p.map(round4);
  else {
    const dx = p[0] - state.drag.from[0], dy = p[1] - state.drag.from[1];
    zone.polygon = state.drag.start.map(([x, y]) => [round4(Math.min(1, Math.max(0, x + dx))), round4(Math.min(1, Math.max(0, y + dy)))]);
  }
  drawZones();
}
function message(id, text, ok) { const m = $(id); m.textContent = text; m.className = "message " + (ok ? "ok" : "error"); }

async function saveZones() {
  message("zone-message", "saving ...", true);
  try {
    const result = await api("/api/zones/" + encodeURIComponent(state.zoneCamera), { body: { zones: state.zones } });
    message("zone-message", result.message, result.reloaded);
  } catch (e) { message("zone-message", "refused: " + e.message, false); }
}

function setupZoneEditor() {
  const canvas = $("zone-canvas");
  canvas.addEventListener("mousedown", zoneMouseDown);
  canvas.addEventListener("mousemove", zoneMouseMove);
  window.addEventListener("mouseup", () => { state.drag = null; });
  $("zone-image").addEventListener("load", () => { if (!state.drag) drawZones(); });
  $("zone-camera").addEventListener("change", ev => loadZones(ev.target.value));
  $("zone-new").addEventListener("click", () => { state.drawing = { kind: $("zone-kind").value, polygon: [] }; state.selected = -1; drawZones(); });
  $("zone-close").addEventListener("click", () => {
    if (state.drawing && state.drawing.polygon.length) { state.zones.push(state.drawing); state.selected = state.zones.length - 1; }
    state.drawing = null; drawZones();
  });
  $("zone-delete").addEventListener("click", () => { if (state.selected >= 0) state.zones.splice(state.selected, 1); state.selected = -1; drawZones(); });
  $("zone-save").addEventListener("click", saveZones);
}

// ------------------------------------------------------------------ alert review

function showReview() { every(5000, loadEvents); }

async function loadEvents() {
  const box = $("review-events");
  let data;
  try { data = await api("/api/events"); } catch (e) { box.textContent = e.message; return; }
  const known = new Set(data.events.map(e => e.id));
  box.querySelectorAll(".event").forEach(n => { if (!known.has(n.dataset.id)) n.remove(); });
  for (const ev of data.events.slice().reverse()) {  // newest first: each new one goes on top
    let node = box.querySelector('.event[data-id="' + CSS.escape(ev.id) + '"]');
    if (!node) {
      const base = "/api/events/" + encodeURIComponent(ev.id);
      node = el("div", { class: "event", "data-id": ev.id },
        el("img", { class: "snapshot", src: base + "/snapshot.jpg", alt: "skeleton snapshot" }),
        el("img", { class: "timeline", src: base + "/timeline.png", alt: "timeline of the person's features" }),
        el("div", { class: "info" },
          el("div", {}, el("strong", {}, ev.camera), " · " + ev.time + " · track #" + ev.track_id),
          el("div", { class: "label" }),
          el("p", {},
            el("button", { type: "button", class: "real-fall", onclick: () => label(ev.id, "fall") }, "Real fall"), " ",
            el("button", { type: "button", class: "false-alarm", onclick: () => label(ev.id, "adl") }, "False alarm"))));
      box.prepend(node);
    }
    node.querySelector(".label").textContent = ev.label ? "labelled: " + (ev.label === "fall" ? "real fall" : "false alarm") : "not labelled yet";
  }
  if (!data.events.length) box.textContent = "No events yet.";
}

async function label(id, value) {
  try {
    const result = await api("/api/events/" + encodeURIComponent(id) + "/label", { body: { label: value } });
    message("review-message", "saved " + (value === "fall" ? "a real fall" : "a false alarm") + ": " + result.path, true);
    loadEvents();
  } catch (e) { message("review-message", "not saved: " + e.message, false); }
}

// ------------------------------------------------------------------ start

async function start() {
  const data = await api("/api/cameras");
  state.cameras = data.cameras; state.liveFps = data.live_fps;
  $("live-privacy").textContent = data.show_video ? "The camera's picture is shown (web.show_video: true)."
    : "Skeletons over a blurred or blank picture: the camera's picture is never sent (web.show_video: false).";
  setupZoneEditor();
  const go = () => show((location.hash || "#live").slice(1) in { live: 1, status: 1, zones: 1, review: 1 } ? (location.hash || "#live").slice(1) : "live");
  window.addEventListener("hashchange", go);
  go();
}
start();
