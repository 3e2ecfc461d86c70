// The page uses the same WebSocket paths as any client: /echo, /ws/{room}?format=json, /ws, /stats.

import { Connection, Room, RoomConnection, describeClose } from "/static/realtime.js";

const CHART_WINDOW_MS = 5 * 60 * 1000;
const ROOM_HISTORY = 50; // messages a page shows from before it joined

const $ = (id) => document.getElementById(id);

function setState(el, state, text) {
  el.dataset.state = state;
  el.textContent = text || state;
  el.title = text || state;
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
    onState: (state, text) => setState($("echo-state"), state, text),
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
  let room = null;
  let myName = ""; // the name the room shows for this page (from its welcome)

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function setJoined(joined) {
    $("join-button").disabled = joined;
    $("leave-button").disabled = !joined;
    $("room-input").disabled = joined;
    $("name-input").disabled = joined;
    $("pass-input").disabled = joined;
    say.disabled = !joined;
    $("say-button").disabled = !joined;
    say.placeholder = joined ? `message to ${room.room}` : "join a room to chat";
  }

  // Who a member is, as the room said: its name when it has one (a token's, or a display name), else
  // its member id. Always set with textContent: a name is whatever the member typed.
  function whoIs(event, id) {
    return event.name || id;
  }

  function showCount(count) {
    meta.textContent = `in ${room.room} as ${myName || room.you} · ${count} here`;
  }

  function onWelcome(event, { resumed, recovered }) {
    myName = event.name || "";
    showCount(event.count);
    log.dataset.lastSeq = String(room.lastSeq);
    if (!resumed) {
      appendLine(log, "sys", `joined ${event.room} as ${whoIs(event, event.you)}`);
      return;
    }
    // What this resume asked for and what the room had stored by then (the browser test reads them).
    log.dataset.resumedAfter = String(room.lastSeq);
    log.dataset.resumedAt = String(event.seq);
    if (recovered) appendLine(log, "sys", `reconnected as ${event.you}: nothing missed`);
    else appendLine(log, "gap", "reconnected: some earlier messages are no longer in the room's history");
  }

  function onMessage(event, { mine }) {
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = mine ? "you" : whoIs(event, event.sender);
    // A token member's name is its app's word for it; a display name is anyone's pick.
    who.title = event.user ? `user ${event.user}` : event.name ? `${event.sender} (display name, unverified)` : "";
    if (event.user) who.dataset.user = event.user;
    const li = appendLine(log, mine ? "me" : "", timeOf(event.ts), who, event.text);
    li.dataset.seq = String(event.seq);
    log.dataset.lastSeq = String(event.seq);
  }

  function onPresence(event) {
    if (event.type === "join" || event.type === "leave") {
      if (!room.selves.has(event.member)) {
        const verb = event.type === "join" ? "joined" : "left";
        appendLine(log, "sys", timeOf(event.ts), `${whoIs(event, event.member)} ${verb} · ${event.count} here`);
      }
      if (typeof event.count === "number") showCount(event.count);
    } else if (event.type === "members") {
      showCount(event.count);
    }
  }

  function onFinalClose(event) {
    setJoined(false);
    if (event.code === 4003) {
      showNotice(`Wrong password for room “${room.room}”.`);
    } else if (event.code === 1008 && /room id/.test(event.reason)) {
      showNotice(`“${room.room}” is not a valid room id: use letters, digits, - and _.`);
    } else if (event.code === 1008 && /name/.test(event.reason)) {
      showNotice(`The room refused the name: ${event.reason}.`);
    } else if (event.code === 1000) {
      showNotice("");
    } else {
      showNotice(`The room closed the connection: ${describeClose(event)}.`);
    }
  }

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const roomId = $("room-input").value.trim();
    if (!roomId) return;
    showNotice("");
    log.replaceChildren();
    meta.textContent = "";
    myName = "";
    room = new Room(roomId, {
      password: $("pass-input").value,
      name: $("name-input").value.trim(), // a display name: unverified (a real app passes a token)
      history: ROOM_HISTORY,
      onState: (state, text) => setState($("chat-state"), state, text),
      onWelcome,
      onMessage,
      onPresence,
      onFinalClose,
    });
    setJoined(true);
    room.open();
  });
  $("leave-button").addEventListener("click", () => {
    if (room) room.close();
    setJoined(false);
    meta.textContent = "";
  });
  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!say.value || !room) return;
    if (!room.live) appendLine(log, "sys", "not connected: the message goes out when the room is back");
    room.send(say.value).catch((error) => appendLine(log, "err", `not sent: ${error.message}`));
    say.value = "";
  });
}

// --- rooms on one connection (/ws) ---------------------------------------------------------------
// Several rooms in one tab over one socket: a tab per room with its unread count, one log per room.
// The socket opens at the first join (a page that never uses it holds no connection for it).
function setupRooms() {
  const tabs = $("rooms-tabs");
  const logs = $("rooms-logs");
  const meta = $("rooms-meta");
  const notice = $("rooms-notice");
  const say = $("rooms-say-input");
  let conn = null;
  let shown = null; // the room whose log is shown
  const views = new Map(); // room id -> { room, tab, badge, log, unread, count }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function refresh() {
    const view = shown && views.get(shown);
    say.disabled = !view;
    $("rooms-say-button").disabled = !view;
    $("rooms-leave-button").disabled = !view;
    say.placeholder = view ? `message to ${shown}` : "join rooms to chat in them";
    meta.textContent = view ? `in ${shown} · ${view.count} here · ${views.size} room(s) on one connection` : "";
    for (const [id, v] of views) {
      const selected = id === shown;
      v.tab.setAttribute("aria-selected", String(selected));
      v.log.hidden = !selected;
      if (selected) v.unread = 0;
      v.badge.textContent = v.unread ? String(v.unread) : "";
      v.tab.dataset.unread = String(v.unread);
    }
  }

  function show(roomId) {
    shown = roomId;
    refresh();
  }

  function connection() {
    if (conn === null) {
      conn = new RoomConnection({
        onState: (state, text) => setState($("rooms-state"), state, text),
        onFinalClose: (event) => showNotice(`The connection closed: ${describeClose(event)}.`),
      });
      conn.open();
    }
    return conn;
  }

  function drop(roomId) {
    const view = views.get(roomId);
    if (!view) return;
    views.delete(roomId);
    view.tab.parentElement.remove();
    view.log.remove();
    if (shown === roomId) shown = views.size ? views.keys().next().value : null;
    refresh();
  }

  function join(roomId, password) {
    const li = document.createElement("li");
    const tab = document.createElement("button");
    tab.type = "button";
    tab.setAttribute("role", "tab");
    tab.dataset.room = roomId;
    const badge = document.createElement("span");
    badge.className = "unread";
    tab.append(roomId, badge);
    li.append(tab);
    const log = document.createElement("ol");
    log.className = "log chat";
    log.dataset.room = roomId;
    log.setAttribute("aria-live", "polite");
    const view = { room: null, tab, badge, log, unread: 0, count: 0 };
    views.set(roomId, view);
    tabs.append(li);
    logs.append(log);
    tab.addEventListener("click", () => show(roomId));
    view.room = connection().join(roomId, {
      password,
      history: ROOM_HISTORY,
      onWelcome: (event, { resumed, recovered }) => {
        view.count = event.count;
        if (!resumed) appendLine(log, "sys", `joined ${roomId} as ${event.name || event.you}`);
        else if (!recovered) appendLine(log, "gap", "reconnected: some earlier messages are no longer in the room's history");
        refresh();
      },
      onMessage: (event, { mine }) => {
        const who = document.createElement("span");
        who.className = "who";
        who.textContent = mine ? "you" : event.name || event.sender;
        const line = appendLine(log, mine ? "me" : "", timeOf(event.ts), who, event.text);
        line.dataset.seq = String(event.seq);
        if (roomId !== shown) view.unread += 1;
        refresh();
      },
      onPresence: (event) => {
        if (typeof event.count === "number") view.count = event.count;
        refresh();
      },
      onError: (event) => {
        if (event.ref === undefined) {
          appendLine(log, "err", `not sent: ${event.reason} (${event.code})`);
          return;
        }
        drop(roomId);
        const why = event.code === 4003 ? "wrong password" : `${event.reason} (${event.code})`;
        showNotice(`Could not join “${roomId}”: ${why}. The other rooms go on.`);
      },
    });
    show(roomId);
  }

  $("rooms-join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const roomId = $("rooms-room-input").value.trim();
    if (!roomId) return;
    showNotice("");
    if (views.has(roomId)) {
      show(roomId);
      return;
    }
    join(roomId, $("rooms-pass-input").value);
    $("rooms-room-input").value = "";
    $("rooms-pass-input").value = "";
  });
  $("rooms-leave-button").addEventListener("click", () => {
    const view = shown && views.get(shown);
    if (!view) return;
    view.room.leave();
    drop(shown);
  });
  $("rooms-say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const view = shown && views.get(shown);
    if (!say.value || !view) return;
    const log = view.log;
    view.room.send(say.value).catch((error) => appendLine(log, "err", `not sent: ${error.message}`));
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

  new Connection("/stats", { onState: (state, text) => setState($("pulse-state"), state, text), onMessage: onPulse }).open();
  window.addEventListener("resize", draw);
  setInterval(draw, 5000); // slide the time axis between pulses
  draw();
}

setupEcho();
setupChat();
setupRooms();
setupPulse();
