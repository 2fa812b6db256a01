// teal's dashboard: polls the admin API every second with the token kept in this tab's
// session storage, draws each model's slots, traffic split, rollout and charts, and sends
// promote, abort, switch and rollback through the same API.
"use strict";

const POINTS = 120;            // two minutes of history at one sample a second
const series = {};             // "model|version" -> {slot, last: counts, rps:[], p95:[], err:[]}
let token = sessionStorage.getItem("teal-token") || "";
let timer = null;
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "text") node.textContent = v;
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

async function api(path, method = "GET") {
  const response = await fetch(path, {
    method,
    headers: { authorization: "Bearer " + token, "x-teal-actor": "dashboard" },
  });
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401) { showLogin("the token was refused"); throw new Error("401"); }
  if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
  return body;
}

function say(text, bad = false) {
  const footer = $("#message");
  footer.textContent = text;
  footer.className = "show" + (bad ? " error" : "");
  clearTimeout(say.timer);
  say.timer = setTimeout(() => (footer.className = ""), 5000);
}

function showLogin(reason) {
  clearInterval(timer);
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#models").replaceChildren();
  $("#login-error").textContent = reason || "";
  $("#conn").textContent = "signed out";
  $("#conn").className = "pill muted";
}

function start() {
  $("#login").hidden = true;
  $("#logout").hidden = false;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 1000);
}

// Latency quantile (ms) from bucket counts of an interval.
function quantile(buckets, first, growth, q) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (!total) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i];
    if (seen >= rank) return first * Math.pow(growth, i) / 1000;
  }
  return null;
}

function sample(model) {
  for (const slot of model.slots) {
    const key = model.name + "|" + slot.version;
    const s = series[key] || (series[key] = { slot: slot.color, version: slot.version, last: null, rps: [], p95: [], err: [] });
    s.slot = slot.color;
    const now = { at: performance.now(), ...slot.stats };
    if (s.last) {
      const dt = (now.at - s.last.at) / 1000;
      const n = now.requests - s.last.requests;
      const e = now.errors - s.last.errors;
      const delta = now.buckets.map((b, i) => b - (s.last.buckets[i] || 0));
      push(s.rps, dt > 0 ? n / dt : 0);
      push(s.p95, quantile(delta, now.first_bucket_us, now.bucket_growth, 0.95));
      push(s.err, n > 0 ? (100 * e) / n : null);
    }
    s.last = now;
  }
}

function push(list, value) {
  list.push(value);
  if (list.length > POINTS) list.shift();
}

function draw(canvas, model, field, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const lines = Object.entries(series).filter(([k]) => k.startsWith(model + "|")).map(([, s]) => s);
  const values = lines.flatMap(s => s[field].filter(v => v !== null));
  const top = Math.max(unit === "%" ? 1 : 0.001, ...values) * 1.15;
  g.strokeStyle = "#263444"; g.lineWidth = 1;
  for (let i = 1; i < 4; i++) { const y = (height * i) / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(width, y); g.stroke(); }
  g.fillStyle = "#8b9bab"; g.font = "11px system-ui";
  g.fillText(format(top, unit), 4, 12);
  let points = 0;
  for (const s of lines) {
    const color = s.slot === "blue" ? "#4b9bff" : "#3fcf8e";
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let moved = false;
    s[field].forEach((v, i) => {
      if (v === null) { moved = false; return; }
      const x = width - ((s[field].length - 1 - i) * width) / (POINTS - 1);
      const y = height - (v / top) * (height - 4) - 2;
      if (moved) g.lineTo(x, y); else { g.moveTo(x, y); moved = true; }
      points++;
    });
    g.stroke();
  }
  canvas.setAttribute("data-points", String(points));
  canvas.setAttribute("data-samples", String(Math.max(0, ...lines.map(s => s[field].length))));
}

function format(v, unit) {
  if (v === null || v === undefined) return "-";
  if (unit === "ms") return v < 1 ? v.toFixed(2) + " ms" : v.toFixed(1) + " ms";
  if (unit === "%") return v.toFixed(1) + "%";
  return v >= 100 ? v.toFixed(0) + "/s" : v.toFixed(1) + "/s";
}

function latest(model, field) {
  return Object.entries(series).filter(([k]) => k.startsWith(model + "|"))
    .map(([, s]) => s.version + " " + format(s[field].filter(v => v !== null).slice(-1)[0], field === "p95" ? "ms" : field === "err" ? "%" : "/s"))
    .join(" · ");
}

// Dangerous actions need two clicks within 5 s; the armed state outlives the redraws.
const armed = {};

function actionButton(model, label, action, enabled, danger = false) {
  const key = model.name + "|" + action;
  const isArmed = () => (armed[key] || 0) > Date.now();
  const button = el("button", {
    text: isArmed() ? "Click again: " + label.toLowerCase() : label,
    disabled: !enabled,
    class: (danger ? "danger" : "") + (isArmed() ? " armed" : ""),
    "data-action": action,
    "data-model": model.name,
  });
  button.addEventListener("click", async () => {
    if (danger && !isArmed()) {
      armed[key] = Date.now() + 5000;
      button.classList.add("armed");
      button.textContent = "Click again: " + label.toLowerCase();
      return;
    }
    delete armed[key];
    button.disabled = true;
    try {
      const [path, body] = action.startsWith("switch-") ? ["switch", action.slice(7)] : [action, null];
      const response = await fetch(`/api/v1/models/${encodeURIComponent(model.name)}/${path}`, {
        method: "POST",
        headers: { authorization: "Bearer " + token, "content-type": "application/json", "x-teal-actor": "dashboard" },
        body: JSON.stringify(body ? { to: body } : {}),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
      say(`${model.name}: ${label.toLowerCase()} done`);
    } catch (e) {
      say(`${model.name}: ${label.toLowerCase()} refused: ${e.message}`, true);
    }
    refresh();
  });
  return button;
}

async function render(model, history, report) {
  const card = el("section", { class: "card", "data-model": model.name });
  const rollout = model.rollout;
  const head = el("div", { class: "model-head" },
    el("h2", { text: model.name }),
    el("span", { class: "pill " + model.live, text: `live: ${model.live_version || "-"} (${model.live})` }));
  if (rollout) head.append(el("span", { class: "pill warn", "data-phase": rollout.phase_name, text: `rollout #${rollout.id} ${rollout.version}: ${rollout.phase_name.replaceAll("_", " ")}` }));
  card.append(head);

  // Traffic split.
  const weight = model.candidate_weight / 100;
  const other = model.live === "blue" ? "green" : "blue";
  const hasOther = model.slots.some(s => s.color === other);
  const liveShare = hasOther ? 100 - weight : 100;
  card.append(el("h3", { text: "Traffic" }),
    el("div", { class: "split" },
      el("div", { class: model.live, style: `width:${liveShare}%` }),
      el("div", { class: other, style: `width:${hasOther ? weight : 0}%` })),
    el("div", { class: "legend" },
      el("span", { text: `${model.live} ${liveShare.toFixed(2)}%` }),
      el("span", { text: `${other} ${(hasOther ? weight : 0).toFixed(2)}%` }),
      el("span", { text: `mirrored ${(model.shadow / 100).toFixed(2)}%` }),
      el("span", { text: `route generation ${model.generation}` })));

  // Slots.
  const slots = el("table", {}, el("tr", {}, ...["Slot", "Version", "Kind", "In flight", "State"].map(h => el("th", { text: h }))));
  for (const s of model.slots) {
    slots.append(el("tr", { "data-slot": s.color },
      el("td", {}, el("span", { class: "pill " + s.color, text: s.color })),
      el("td", { text: s.version }),
      el("td", { text: s.kind }),
      el("td", { text: String(s.in_flight) }),
      el("td", {}, el("span", { class: "pill " + (s.ready ? "ok" : "bad"), text: (s.live ? "live, " : "standby, ") + (s.ready ? "ready" : "not ready") }))));
  }
  card.append(el("h3", { text: "Slots" }), slots);

  // Charts.
  const charts = el("div", { class: "grid" });
  for (const [field, title, unit] of [["rps", "Requests per second", "/s"], ["p95", "p95 latency", "ms"], ["err", "Errors", "%"]]) {
    const canvas = el("canvas", { "data-chart": field });
    charts.append(el("div", { class: "chart" }, el("div", { class: "title" }, el("span", { text: title }), el("span", { text: latest(model.name, field) })), canvas));
    requestAnimationFrame(() => draw(canvas, model.name, field, unit));
  }
  card.append(el("h3", { text: "Per version, last two minutes" }), charts);

  // Rollout and timeline.
  const panes = el("div", { class: "grid" });
  const timeline = el("ul", { class: "timeline" });
  for (const e of (history.events || []).slice(-14).reverse()) {
    const what = e.kind === "rollout" ? `${e.detail.to.replaceAll("_", " ")}: ${e.detail.cause}` : e.kind.replaceAll("_", " ");
    timeline.append(el("li", {}, el("span", { class: "when", text: e.at.slice(11, 19) }), `${what} `, el("span", { class: "muted", text: `(${e.actor})` })));
  }
  const rolloutPane = el("div", {}, el("h3", { text: "Rollout" }));
  if (rollout) {
    rolloutPane.append(el("div", { text: `#${rollout.id} ${rollout.version}, ${rollout.strategy}, ${rollout.phase_name.replaceAll("_", " ")}` }));
    if (rollout.waiting) rolloutPane.append(el("div", { class: "waiting", "data-waiting": "", text: `waiting: ${rollout.waiting}` }));
    if (rollout.next_at_ms) rolloutPane.append(el("div", { class: "muted", text: `next step in ${Math.max(0, Math.round((rollout.next_at_ms - Date.now()) / 1000))} s` }));
    for (const c of rollout.last_check || []) {
      rolloutPane.append(el("div", {}, el("span", { class: "pill " + (c.verdict === "pass" ? "ok" : c.verdict === "fail" ? "bad" : "muted"), text: c.rule }), " ", el("span", { class: "muted", text: c.detail })));
    }
  } else {
    rolloutPane.append(el("div", { class: "muted", text: "no rollout in progress" }));
  }
  rolloutPane.append(el("h3", { text: "Timeline" }), timeline);
  panes.append(rolloutPane);

  // Last gate report.
  const gates = el("div", {}, el("h3", { text: "Last gate report" }));
  if (report && report.gates) {
    gates.append(el("div", { class: "muted", text: `${report.candidate.version} against ${report.live.version}, ${report.samples} samples, verdict ${report.verdict}` }));
    const table = el("table", {}, el("tr", {}, ...["Gate", "Value", "Threshold", "Verdict", "Why"].map(h => el("th", { text: h }))));
    for (const g of report.gates) {
      table.append(el("tr", {}, el("td", { text: g.gate }), el("td", { text: g.value === null || g.value === undefined ? "-" : Number(g.value).toPrecision(4) }),
        el("td", { text: g.threshold }), el("td", {}, el("span", { class: "pill " + (g.verdict === "pass" ? "ok" : g.verdict === "fail" ? "bad" : "muted"), text: g.verdict })),
        el("td", { class: "muted", text: g.verdict === "pass" ? "" : g.reason })));
    }
    gates.append(table);
  } else {
    gates.append(el("div", { class: "muted", text: "no validation yet" }));
  }
  panes.append(gates);
  card.append(panes);

  // Actions.
  const phase = rollout ? rollout.phase_name : null;
  const canPromote = ["awaiting_approval", "switch_delay", "canary", "observing", "promoted"].includes(phase);
  const canAbort = rollout && !["switching", "observing", "promoted", "tearing_down"].includes(phase);
  const canRollback = rollout ? ["canary", "canary_gates", "switching", "observing", "promoted"].includes(phase) : model.rollback_to !== null;
  const actions = el("div", { class: "actions" },
    actionButton(model, "Promote", "promote", canPromote),
    actionButton(model, "Abort", "abort", !!canAbort, true),
    actionButton(model, "Roll back", "rollback", canRollback, true));
  if (!rollout && hasOther) actions.append(actionButton(model, `Switch to ${other}`, "switch-" + other, true, true));
  card.append(actions);
  return card;
}

async function refresh() {
  try {
    const status = await api("/api/v1/status");
    const cards = [];
    for (const model of status.models) {
      sample(model);
      const name = encodeURIComponent(model.name);
      const [history, report] = await Promise.all([
        api(`/api/v1/models/${name}/history?limit=40`).catch(() => ({})),
        api(`/api/v1/models/${name}/report`).catch(() => null),
      ]);
      cards.push(await render(model, history, report));
    }
    $("#models").replaceChildren(...cards);
    $("#conn").textContent = "live · " + new Date().toLocaleTimeString();
    $("#conn").className = "pill ok";
  } catch (e) {
    if (e.message !== "401") {
      $("#conn").textContent = "unreachable: " + e.message;
      $("#conn").className = "pill bad";
    }
  }
}

$("#login").addEventListener("submit", event => {
  event.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("teal-token", token);
  start();
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("teal-token");
  token = "";
  showLogin();
});
if (token) start(); else showLogin();
