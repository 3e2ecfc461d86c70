"use strict";
// The page uses the same WebSocket paths as any client: /echo, /ws/{room}?format=json, /stats.

// Close codes after which a connection comes back by itself (see the README's close-code table).
const RETRY = new Set([1001, 1005, 1006, 1011, 1012, 1013]);
const CLOSE_TEXT = {
  1000: "closed",
  1001: "server going away",
  1006: "connection lost",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
  1012: "service restarted",
  1013: "try again later",
  4003: "wrong password",
  4004: "no such path",
};
const CHART_WINDOW_MS = 5 * 60 * 1000;

const $ = (id) => document.getElementById(id);

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

function describeClose(event) {
  const text = event.reason || CLOSE_TEXT[event.code] || "closed";
  return `${text} (${event.code})`;
}

function setState(el, state, text) {
  el.dataset.state = state;
  el.textContent = text || state;
  el.title = text || state;
}

/** One WebSocket that reconnects with exponential backoff after a drop, 1001 or 1012, and shows its state. */
class Connection {
  constructor(path, { stateEl, onOpen, onMessage, onFinalClose }) {
    this.path = path;
    this.stateEl = stateEl;
    this.onOpen = onOpen || (() => {});
    this.onMessage = onMessage || (() => {});
    this.onFinalClose = onFinalClose || (() => {});
    this.ws = null;
    this.timer = null;
    this.attempt = 0;
    this.stopped = false;
  }

  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  open() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  connect() {
    setState(this.stateEl, "connecting", this.attempt ? `connecting (try ${this.attempt + 1})` : "connecting");
    const ws = new WebSocket(wsUrl(this.path));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      setState(this.stateEl, "live");
      this.onOpen();
    };
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onerror = () => {}; // the close event that follows says what happened
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      if (this.stopped) {
        setState(this.stateEl, "closed", "left");
        return;
      }
      if (RETRY.has(event.code)) {
        const delay = Math.min(10000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
        this.attempt += 1;
        setState(this.stateEl, "reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s: ${describeClose(event)}`);
        this.timer = setTimeout(() => this.connect(), delay);
        return;
      }
      setState(this.stateEl, "closed", `closed: ${describeClose(event)}`);
      this.onFinalClose(event);
    };
  }

  send(text) {
    if (!this.live) return false;
    this.ws.send(text);
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
    else setState(this.stateEl, "closed", "left");
  }
}

function appendLine(list, className, ...parts) {
  const li = document.createElement("li");
  if (className) li.className = className;
  for (const part of parts) li.append(part);
  list.append(li);
  while (list.children.length > 500) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
  return li;
}

function timeOf(seconds) {
  const el = document.createElement("time");
  const date = seconds ? new Date(seconds * 1000) : new Date();
  el.dateTime = date.toISOString();
  el.textContent = date.toLocaleTimeString([], { hour12: false });
  return el;
}

// --- echo console --------------------------------------------------------------------------------
function setupEcho() {
  const log = $("echo-log");
  const conn = new Connection("/echo", {
    stateEl: $("echo-state"),
    onMessage: (data) => appendLine(log, "in", typeof data === "string" ? data : "(binary frame)"),
  });
  $("echo-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("echo-input");
    if (!input.value) return;
    if (conn.send(input.value)) appendLine(log, "out", `> ${input.value}`);
    else appendLine(log, "err", "not connected yet");
    input.value = "";
  });
  conn.open();
}

// --- room chat -----------------------------------------------------------------------------------
function setupChat() {
  const log = $("chat-log");
  const notice = $("chat-notice");
  const meta = $("chat-meta");
  const say = $("say-input");
  let conn = null;
  let me = null;
  let room = null;

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function setJoined(joined) {
    $("join-button").disabled = joined;
    $("leave-button").disabled = !joined;
    $("room-input").disabled = joined;
    $("pass-input").disabled = joined;
    say.disabled = !joined;
    $("say-button").disabled = !joined;
    say.placeholder = joined ? `message to ${room}` : "join a room to chat";
  }

  function onEvent(raw) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      appendLine(log, "sys", raw);
      return;
    }
    if (event.type === "welcome") {
      me = event.you;
      meta.textContent = `in ${event.room} as ${me} · ${event.count} here`;
      appendLine(log, "sys", `joined ${event.room} as ${me}`);
    } else if (event.type === "message") {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = event.sender === me ? "you" : event.sender;
      appendLine(log, event.sender === me ? "me" : "", timeOf(event.ts), who, event.text);
    } else if (event.type === "join" || event.type === "leave") {
      if (event.member !== me) {
        const verb = event.type === "join" ? "joined" : "left";
        appendLine(log, "sys", timeOf(event.ts), `${event.member} ${verb} · ${event.count} here`);
      }
      if (typeof event.count === "number") meta.textContent = `in ${event.room} as ${me} · ${event.count} here`;
    } else if (event.type === "members") {
      meta.textContent = `in ${event.room} as ${me} · ${event.count} here`;
    }
  }

  function onFinalClose(event) {
    setJoined(false);
    if (event.code === 4003) {
      showNotice(`Wrong password for room “${room}”.`);
    } else if (event.code === 1008 && /room id/.test(event.reason)) {
      showNotice(`“${room}” is not a valid room id: use letters, digits, - and _.`);
    } else if (event.code === 1000) {
      showNotice("");
    } else {
      showNotice(`The room closed the connection: ${describeClose(event)}.`);
    }
  }

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    room = $("room-input").value.trim();
    const password = $("pass-input").value;
    if (!room) return;
    showNotice("");
    log.replaceChildren();
    meta.textContent = "";
    me = null;
    let path = `/ws/${encodeURIComponent(room)}?format=json`;
    if (password) path += `&pass=${encodeURIComponent(password)}`;
    conn = new Connection(path, { stateEl: $("chat-state"), onMessage: onEvent, onFinalClose });
    setJoined(true);
    conn.open();
  });
  $("leave-button").addEventListener("click", () => {
    if (conn) conn.close();
    setJoined(false);
    meta.textContent = "";
  });
  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!say.value || !conn) return;
    if (!conn.send(say.value)) appendLine(log, "err", "not connected: message not sent");
    say.value = "";
  });
}

// --- live dashboard ------------------------------------------------------------------------------
function setupPulse() {
  const canvas = $("cpu-chart");
  const points = []; // {t: ms, cpu}
  let lastTick = null;

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 36, right = 10, top = 10, bottom = 22;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#5d6b7a";
    ctx.strokeStyle = "#e5e9ef";
    ctx.lineWidth = 1;
    for (const pct of [0, 25, 50, 75, 100]) {
      const y = top + plotH * (1 - pct / 100);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
      ctx.stroke();
      ctx.fillText(`${pct}%`, 4, y + 4);
    }
    const now = Date.now();
    const from = now - CHART_WINDOW_MS;
    ctx.fillText("5 min ago", left, height - 6);
    ctx.fillText("now", left + plotW - 20, height - 6);
    const visible = points.filter((p) => p.t >= from);
    if (!visible.length) return;
    const x = (t) => left + (plotW * (t - from)) / CHART_WINDOW_MS;
    const y = (cpu) => top + plotH * (1 - Math.max(0, Math.min(100, cpu)) / 100);
    ctx.beginPath();
    visible.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.cpu)) : ctx.moveTo(x(p.t), y(p.cpu))));
    ctx.strokeStyle = "#2563eb";
    ctx.lineWidth = 2;
    ctx.stroke();
    ctx.lineTo(x(visible[visible.length - 1].t), top + plotH);
    ctx.lineTo(x(visible[0].t), top + plotH);
    ctx.closePath();
    ctx.fillStyle = "rgba(37, 99, 235, 0.08)";
    ctx.fill();
    const last = visible[visible.length - 1];
    ctx.fillStyle = "#2563eb";
    ctx.beginPath();
    ctx.arc(x(last.t), y(last.cpu), 3, 0, Math.PI * 2);
    ctx.fill();
  }

  function megabytes(bytes) {
    return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function showInstances(instances) {
    const body = $("instances").tBodies[0];
    const rows = [...instances].sort((a, b) =>
      a.service === b.service ? String(a.instance).localeCompare(String(b.instance)) : a.service.localeCompare(b.service),
    );
    body.replaceChildren(
      ...rows.map((inst) => {
        const tr = document.createElement("tr");
        const cells = [inst.service, inst.instance, Number(inst.cpu).toFixed(1), megabytes(inst.memory), inst.connections];
        cells.forEach((value, i) => {
          const td = document.createElement("td");
          td.textContent = value;
          if (i >= 2) td.className = "num";
          tr.append(td);
        });
        return tr;
      }),
    );
  }

  function onPulse(raw) {
    let pulse;
    try {
      pulse = JSON.parse(raw);
    } catch {
      return;
    }
    if (typeof pulse.cpu !== "number") return;
    const instances = Array.isArray(pulse.instances) ? pulse.instances : [];
    $("cpu-now").textContent = pulse.cpu.toFixed(1);
    // Clients are the sessions at the gateway; each is counted again by the service behind it.
    const gateways = instances.filter((i) => i.service === "gateway");
    const front = gateways.length ? gateways : instances;
    $("conn-now").textContent = front.reduce((sum, i) => sum + (i.connections || 0), 0);
    $("inst-now").textContent = instances.length;
    $("tick-now").textContent = `tick ${pulse.tick} · ${new Date((pulse.ts || Date.now() / 1000) * 1000).toLocaleTimeString([], { hour12: false })}`;
    showInstances(instances);
    // A reconnect may deliver the latest pulse again: one point per tick.
    if (lastTick === null || pulse.tick > lastTick) {
      lastTick = pulse.tick;
      points.push({ t: (pulse.ts || Date.now() / 1000) * 1000, cpu: pulse.cpu });
      while (points.length && points[0].t < Date.now() - CHART_WINDOW_MS) points.shift();
      canvas.dataset.points = String(points.length);
      canvas.dataset.lastTick = String(lastTick);
      draw();
    }
  }

  new Connection("/stats", { stateEl: $("pulse-state"), onMessage: onPulse }).open();
  window.addEventListener("resize", draw);
  setInterval(draw, 5000); // slide the time axis between pulses
  draw();
}

setupEcho();
setupChat();
setupPulse();
