// realtime.js: the platform's browser client, one small ES module (no build step, no dependencies).
//
//   import { Connection, Room } from "/static/realtime.js";
//   const room = new Room("lobby", { onMessage: (m) => show(m), onState: (s, text) => status(s, text) });
//   room.open();
//   const seq = await room.send("hello");   // resolves once the message is stored, with its seq
//
// A Connection reconnects by itself after a close the table below calls "reconnect", with exponential
// backoff and jitter, and stops on a "final" one. A Room resumes where it left off: every reconnect asks
// for the messages after the last seq it delivered (in the same history epoch), so the page shows every
// message once, in order, across drops, deploys, slow-consumer cut-offs and sleeping tabs. Sends carry an
// id; unacknowledged ones are sent again after a reconnect, and the server stores an id only once.
// Identity: `token` (a JWT from the app's login: a string, or a function returning one or a Promise of
// one, asked before every connect so a reconnect never sends an expired token) or `name` (an unverified
// display name); messages, joins, leaves and the welcome carry the sender's `user` and `name` when known.

/** Close codes after which trying again can help (the README's close-code table). */
export const RECONNECT_CODES = new Set([
  1001, // the service is shutting down (deploy)
  1005, // closed without a code
  1006, // the connection dropped (network, sleep, a refusal before the upgrade such as a connection cap)
  1011, // unexpected server error
  1012, // the gateway lost its upstream (a replica restarted)
  1013, // try again later: no upstream, overloaded, or cut off as a slow consumer
  4002, // token expired: connect again with a fresh token
]);
// Everything else is final: 1000 normal, 1008 policy (rate limit, invalid room id), 1009 too big,
// 4001 invalid identity token, 4003 wrong password, 4004 no such path, 4010 disconnected by the server.

export const CLOSE_TEXT = {
  1000: "closed",
  1001: "server going away",
  1006: "connection lost",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
  1012: "service restarted",
  1013: "try again later",
  4001: "invalid token",
  4002: "token expired",
  4003: "wrong password",
  4004: "no such path",
  4010: "disconnected by the server",
};

export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 10_000;

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export function describeClose(event) {
  const text = event.reason || CLOSE_TEXT[event.code] || "closed";
  return event.code == null ? text : `${text} (${event.code})`;
}

/** The delay before reconnect attempt `attempt` (0, 1, ...): doubling from 0.5 s to 10 s, +-25% jitter. */
export function backoff(attempt) {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.75 + Math.random() / 2);
}

/**
 * One WebSocket that comes back by itself after a "reconnect" close and reports its state.
 * `path` is a string or a function called before every attempt (a Room adds `since` and a fresh token
 * there); the function may return a Promise of the path. If it throws or rejects, the connection stops
 * ("closed") and onFinalClose gets `{ code: null, reason, error }` instead of a close event.
 * Callbacks: onState(state, text) with state connecting | live | reconnecting | closed; onOpen();
 * onMessage(data); onFinalClose(closeEvent).
 */
export class Connection {
  constructor(path, { onState, onOpen, onMessage, onFinalClose } = {}) {
    this.path = typeof path === "function" ? path : () => path;
    this.onState = onState || (() => {});
    this.onOpen = onOpen || (() => {});
    this.onMessage = onMessage || (() => {});
    this.onFinalClose = onFinalClose || (() => {});
    this.ws = null;
    this.timer = null;
    this.attempt = 0;
    this.stopped = true;
    this.generation = 0; // bumped by open() and close(): a path that resolves late for an older one is dropped
    this._online = () => this._retryNow();
  }

  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  open() {
    this.stopped = false;
    this.attempt = 0;
    this.generation += 1;
    window.addEventListener("online", this._online);
    this._connect();
  }

  send(data) {
    if (!this.live) return false;
    this.ws.send(data);
    return true;
  }

  close() {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.timer);
    window.removeEventListener("online", this._online);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
    else this.onState("closed", "left");
  }

  _connect() {
    this.timer = null;
    this.onState("connecting", this.attempt ? `connecting (try ${this.attempt + 1})` : "connecting");
    const generation = this.generation;
    let path;
    try {
      path = this.path();
    } catch (error) {
      this._giveUp(error);
      return;
    }
    if (path && typeof path.then === "function") {
      path.then(
        (resolved) => generation === this.generation && !this.stopped && this._open(resolved),
        (error) => generation === this.generation && !this.stopped && this._giveUp(error),
      );
      return;
    }
    this._open(path);
  }

  /** The path (or the token inside it) could not be made: stop, as after a final close. */
  _giveUp(error) {
    this.stopped = true;
    window.removeEventListener("online", this._online);
    const reason = `could not connect: ${error && error.message ? error.message : error}`;
    this.onState("closed", `closed: ${reason}`);
    this.onFinalClose({ code: null, reason, error });
  }

  _open(path) {
    const ws = new WebSocket(wsUrl(path));
    this.ws = ws;
    ws.onopen = () => {
      this.onState("live", "live");
      this.onOpen();
    };
    ws.onmessage = (event) => {
      // The backoff starts over once the server has said something (a room's welcome, a pulse), not at
      // the upgrade: a server that accepts and closes at once (1013 "messaging unavailable" at join,
      // "no upstream available") must still see the delay grow.
      this.attempt = 0;
      this.onMessage(event.data);
    };
    ws.onerror = () => {}; // the close event that follows says what happened
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      if (this.stopped) {
        this.onState("closed", "left");
        return;
      }
      if (RECONNECT_CODES.has(event.code)) {
        const delay = backoff(this.attempt);
        this.attempt += 1;
        this.onState("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s: ${describeClose(event)}`);
        this.timer = setTimeout(() => this._connect(), delay);
        return;
      }
      this.stopped = true;
      window.removeEventListener("online", this._online);
      this.onState("closed", `closed: ${describeClose(event)}`);
      this.onFinalClose(event);
    };
  }

  _retryNow() {
    // The network came back (a laptop woke up): do not wait out the backoff.
    if (!this.stopped && this.timer !== null) {
      clearTimeout(this.timer);
      this._connect();
    }
  }
}

/** A JWT's exp (Unix seconds), read without checking it (the server checks); null when there is none. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

function newId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * A chat room at /ws/{room}?format=json that resumes after every reconnect and acknowledges sends.
 * Options: password; token (an identity token: a string, or a function returning a string or a Promise
 * of one, called before every connect); name (a display name, unverified; the server ignores it when a
 * token is given); history (last N messages on the first join); and callbacks
 *   onWelcome(welcome, { resumed, recovered })  after each (re)connect; recovered false = a gap
 *   onMessage(message, { mine })                each stored message once, in seq order
 *   onPresence(event)                           join, leave, members
 *   onState(state, text), onFinalClose(closeEvent)   4001: the token was refused (final)
 * Welcome, message, join and leave objects are the server's JSON: `user` (a token's sub) and `name`
 * are set when known and undefined otherwise.
 */
export class Room {
  constructor(
    room,
    { password = "", token = "", name = "", history = 0, onWelcome, onMessage, onPresence, onState, onFinalClose } = {},
  ) {
    this.room = room;
    this.password = password;
    this.token = token;
    this.name = name;
    this.history = history;
    this.onWelcome = onWelcome || (() => {});
    this.onMessage = onMessage || (() => {});
    this.onPresence = onPresence || (() => {});
    this.epoch = null; // the history this room's seqs belong to (from the first welcome)
    this.lastSeq = null; // the last message seq delivered to onMessage (or the room's seq at the first join)
    this.you = null;
    this.selves = new Set(); // member ids this page has had (a new one per connection)
    this.pending = new Map(); // id -> { payload, resolve, reject }: sent, not acknowledged yet
    this.sentIds = new Set();
    this.connection = new Connection(() => this._nextPath(), {
      onState,
      onMessage: (data) => this._receive(data),
      onFinalClose: (event) => {
        for (const { reject } of this.pending.values()) reject(new Error(describeClose(event)));
        this.pending.clear();
        if (onFinalClose) onFinalClose(event);
      },
    });
  }

  /** The URL path of the next attempt: the first join asks for history, later ones resume. */
  path(token = typeof this.token === "string" ? this.token : "") {
    let path = `/ws/${encodeURIComponent(this.room)}?format=json`;
    if (this.password) path += `&pass=${encodeURIComponent(this.password)}`;
    if (this.name) path += `&name=${encodeURIComponent(this.name)}`;
    if (token) path += `&token=${encodeURIComponent(token)}`;
    if (this.epoch !== null && this.lastSeq !== null) {
      path += `&since=${this.lastSeq}&epoch=${encodeURIComponent(this.epoch)}`;
    }
    if (this.history > 0) path += `&history=${this.history}`;
    return path;
  }

  /** The path with a token from the token function, asked afresh for each attempt. */
  _nextPath() {
    if (typeof this.token !== "function") return this.path();
    const checked = (token) => {
      if (typeof token !== "string") throw new TypeError(`the token function gave ${typeof token}, not a string`);
      this.currentToken = token; // its exp says when to refresh (after the welcome)
      return this.path(token);
    };
    const token = this.token();
    return token && typeof token.then === "function" ? token.then(checked) : checked(token);
  }

  get live() {
    return this.connection.live;
  }

  open() {
    this.connection.open();
  }

  close() {
    clearTimeout(this.refreshTimer);
    this.connection.close();
  }

  /** Shortly before the token's exp (a quarter of what is left, at most 30 s), send a fresh one as
   * `refresh`, so the server never closes this member with 4002 "token expired". */
  _refreshLater(token) {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(token);
    if (typeof this.token !== "function" || exp === null) return;
    const left = exp - Date.now() / 1000;
    this.refreshTimer = setTimeout(async () => {
      let fresh;
      try {
        fresh = await this.token();
      } catch {
        return; // the app's login said no: the server closes with 4002 at exp
      }
      if (typeof fresh !== "string") return;
      this.currentToken = fresh;
      this.connection.send(JSON.stringify({ type: "refresh", token: fresh }));
      this._refreshLater(fresh);
    }, Math.max(0, left - Math.min(30, left / 4)) * 1000);
  }

  /** Send a message; resolves with its stored seq (sent again after reconnects until acknowledged). */
  send(text) {
    const id = newId();
    const payload = JSON.stringify({ text, id });
    this.sentIds.add(id);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { payload, resolve, reject });
      this.connection.send(payload); // when not live, the welcome after the reconnect sends it
    });
  }

  _receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.type === "welcome") this._welcome(event);
    else if (event.type === "message") this._message(event);
    else if (event.type === "ack") this._ack(event);
    else if (event.type === "error") this._refused(event);
    else if (event.type !== "refreshed") this.onPresence(event);
  }

  _welcome(event) {
    const resumed = this.epoch !== null && this.lastSeq !== null;
    const recovered = resumed ? event.recovered === true : true;
    if (resumed && event.epoch !== this.epoch) this.lastSeq = 0; // a new history: its seqs start again
    if (!resumed) this.lastSeq = this.history > 0 ? 0 : event.seq;
    this.epoch = event.epoch;
    this.you = event.you;
    this.selves.add(event.you);
    this.onWelcome(event, { resumed, recovered });
    for (const { payload } of this.pending.values()) this.connection.send(payload);
    this._refreshLater(this.currentToken);
  }

  _refused(event) {
    // The app's publish hook denied a send (or could not decide: 1013): not stored, reject it.
    const waiting = event.id === undefined ? undefined : this.pending.get(event.id);
    if (waiting === undefined) return;
    this.pending.delete(event.id);
    waiting.reject(Object.assign(new Error(event.reason), { code: event.code }));
  }

  _message(event) {
    if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return; // delivered already
    this.lastSeq = event.seq;
    const sentHere = event.id !== undefined && this.sentIds.delete(event.id);
    this.onMessage(event, { mine: sentHere || this.selves.has(event.sender) });
  }

  _ack(event) {
    const waiting = this.pending.get(event.id);
    if (waiting === undefined) return;
    this.pending.delete(event.id);
    waiting.resolve(event.seq);
  }
}
