// realtime.js: the platform's browser client, one small ES module (no build step, no dependencies).
//
//   import { Connection, Room, RoomConnection } from "/static/realtime.js";
//   const room = new Room("lobby", { onMessage: (m) => show(m), onState: (s, text) => status(s, text) });
//   room.open();
//   const seq = await room.send("hello");   // resolves once the message is stored, with its seq
//
//   const conn = new RoomConnection({ onState });  // one socket (/ws), many rooms
//   conn.open();
//   const vip = conn.join("VIP", { password, onMessage, onError: (e) => warn(e.reason) });
//
// A Connection reconnects by itself after a close the table below calls "reconnect", with exponential
// backoff and jitter, and stops on a "final" one. A Room resumes where it left off: every reconnect asks
// for the messages after the last seq it delivered (in the same history epoch), so the page shows every
// message once, in order, across drops, deploys, slow-consumer cut-offs and sleeping tabs. Sends carry an
// id; unacknowledged ones are sent again after a reconnect, and the server stores an id only once. Those
// resends are paced (at most RESEND_BURST at once, then RESEND_RATE a second; new sends wait behind them
// meanwhile), below the server's MESSAGE_BURST and MESSAGE_RATE, over which it closes with 1008 (final).
// Identity: `token` (a JWT from the app's login: a string, or a function returning one or a Promise of
// one, asked before every connect so a reconnect never sends an expired token) or `name` (an unverified
// display name); messages, joins, leaves and the welcome carry the sender's `user` and `name` when known.
// A token from a function is refreshed shortly before its exp (a `refresh` frame on the open socket), so
// the server never closes a long-lived member with 4002 "token expired". A send the server refuses (the
// app's publish hook, or a /ws rule) is rejected with an Error carrying its `code`.

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
// 4001 invalid identity token, 4003 wrong password, 4004 no such path, 4010 disconnected by the server;
// 4009, 4011 and 4029 only come in /ws error frames.

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
  4009: "already joined",
  4010: "disconnected by the server",
  4011: "not joined",
  4029: "too many rooms or too fast",
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

export const RESEND_RATE = 15; // messages a second (the server's default MESSAGE_RATE is 20)
export const RESEND_BURST = 30; // messages at once (the server's default MESSAGE_BURST is 40)

/**
 * The server's message rate kept on the page: a token bucket of `rate` a second holding `burst`, full at
 * each connect (so is the server's). Every message sent on the socket counts; `later(step)` runs steps in
 * turn as tokens come (the resends after a welcome), `now(step)` runs a new send at once unless steps are
 * waiting (then behind them), as it always did.
 */
class Pacer {
  constructor(rate = RESEND_RATE, burst = RESEND_BURST) {
    this.rate = rate;
    this.burst = burst;
    this.timer = null;
    this.reset();
  }

  /** A new socket: a full bucket, and nothing left to send from the old one (the welcome resends it). */
  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.tokens = this.burst;
    this.last = Date.now();
  }

  now(step) {
    if (this.queue.length) return this.later(step);
    this._fill();
    this.tokens -= 1;
    step();
  }

  later(step) {
    this.queue.push(step);
    this._drain();
  }

  _fill() {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }

  _drain() {
    if (this.timer !== null) return; // already waiting for a token
    this._fill();
    while (this.queue.length && this.tokens >= 1) {
      this.tokens -= 1;
      this.queue.shift()();
    }
    if (!this.queue.length) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this._drain();
    }, ((1 - this.tokens) / this.rate) * 1000);
  }
}

/**
 * Keeps one socket's token fresh: shortly before its exp (a quarter of what is left, at most 30 s) the
 * token function is asked again and the new token sent as `refresh`, so the server never closes the
 * socket with 4002 "token expired". Room and RoomConnection each hold one.
 */
class TokenRefresher {
  constructor(owner) {
    this.owner = owner; // has .token (the option) and .connection (a Connection)
    this.current = null; // the token the open socket was given
    this.timer = null;
  }

  /** The token a connection attempt is made with (the one to refresh once it is live). */
  took(token) {
    this.current = token;
    return token;
  }

  /** The socket is live with `current`: plan its refresh. */
  schedule(token = this.current) {
    clearTimeout(this.timer);
    const exp = tokenExpiry(token);
    if (typeof this.owner.token !== "function" || exp === null) return;
    const left = exp - Date.now() / 1000;
    this.timer = setTimeout(async () => {
      let fresh;
      try {
        fresh = await this.owner.token();
      } catch {
        return; // the app's login said no: the server closes with 4002 at exp
      }
      if (typeof fresh !== "string") return;
      this.current = fresh;
      this.owner.connection.send(JSON.stringify({ type: "refresh", token: fresh }));
      this.schedule(fresh);
    }, Math.max(0, left - Math.min(30, left / 4)) * 1000);
  }

  stop() {
    clearTimeout(this.timer);
  }
}

/** The Error a refused send is rejected with: the server's reason, and its code as `code`. */
function refusal(event) {
  return Object.assign(new Error(`${event.reason} (${event.code})`), { code: event.code, reason: event.reason });
}

function newId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * What a page knows of one room it is in: the part Room (one socket per room) and a room joined on a
 * RoomConnection (many rooms on one socket) share. Messages reach onMessage once each, in seq order;
 * sends resolve with their stored seq and go again, with the same id, after each welcome until
 * acknowledged, at the pace of the socket's Pacer (`this.pacer`).
 */
class RoomMember {
  constructor(room, { history = 0, onWelcome, onMessage, onPresence } = {}) {
    this.room = room;
    this.history = history;
    this.onWelcome = onWelcome || (() => {});
    this.onMessage = onMessage || (() => {});
    this.onPresence = onPresence || (() => {});
    this.epoch = null; // the history this room's seqs belong to (from the first welcome)
    this.lastSeq = null; // the last message seq delivered to onMessage (or the room's seq at the first join)
    this.you = null;
    this.selves = new Set(); // member ids this page has had (a new one per connection)
    this.pending = new Map(); // id -> { text, resolve, reject }: sent, not acknowledged yet
    this.sentIds = new Set();
  }

  /** Send a message; resolves with its stored seq (sent again after reconnects until acknowledged). */
  send(text) {
    const id = newId();
    this.sentIds.add(id);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { text, resolve, reject });
      if (this.live) this.pacer.now(() => this._transmit(text, id)); // else the welcome after the reconnect sends it
    });
  }

  /** Whether the next join resumes (asks for the messages after lastSeq in this epoch). */
  get resuming() {
    return this.epoch !== null && this.lastSeq !== null;
  }

  _failAll(error) {
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }

  _take(event) {
    if (event.type === "welcome") this._welcome(event);
    else if (event.type === "message") this._message(event);
    else if (event.type === "ack") this._ack(event);
    else if (event.type === "error") this._refused(event);
    else if (event.type !== "refreshed") this.onPresence(event);
  }

  /** One send refused (the app's publish hook denied it, or could not decide: 1013): reject it. */
  _refused(event) {
    const waiting = event.id === undefined ? undefined : this.pending.get(event.id);
    if (waiting === undefined) return;
    this.pending.delete(event.id);
    waiting.reject(refusal(event));
  }

  _welcome(event) {
    const resumed = this.resuming;
    const recovered = resumed ? event.recovered === true : true;
    if (resumed && event.epoch !== this.epoch) this.lastSeq = 0; // a new history: its seqs start again
    if (!resumed) this.lastSeq = this.history > 0 ? 0 : event.seq;
    this.epoch = event.epoch;
    this.you = event.you;
    this.selves.add(event.you);
    this.onWelcome(event, { resumed, recovered });
    for (const [id, { text }] of this.pending) this.pacer.later(() => this.pending.has(id) && this._transmit(text, id));
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

/** A token option (a string, or a function giving one or a Promise of one) as a Promise or a string. */
function tokenOf(token, then) {
  if (typeof token !== "function") return then(token || "");
  const checked = (value) => {
    if (typeof value !== "string") throw new TypeError(`the token function gave ${typeof value}, not a string`);
    return then(value);
  };
  const value = token();
  return value && typeof value.then === "function" ? value.then(checked) : checked(value);
}

/**
 * What Room and RoomConnection share: one Connection whose path carries a fresh token (`_nextPath` asks
 * `path(token)`), the token's refresher, the socket's Pacer, and each JSON frame handed to `_frame`; a final
 * close rejects what is pending (`_ended`).
 */
const OnOneSocket = (Base) =>
  class extends Base {
    _socket({ token, name, resendRate, resendBurst, onState, onOpen, onFinalClose }) {
      this.token = token;
      this.name = name;
      this.refresher = new TokenRefresher(this);
      this.pacer = new Pacer(resendRate, resendBurst);
      this.connection = new Connection(() => this._nextPath(), {
        onState,
        onOpen: () => {
          this.pacer.reset(); // the server's rate starts over with each connection
          if (onOpen) onOpen();
        },
        onMessage: (data) => {
          let event;
          try {
            event = JSON.parse(data);
          } catch {
            return;
          }
          this._frame(event);
        },
        onFinalClose: (event) => {
          this.refresher.stop();
          this.pacer.reset();
          this._ended(new Error(describeClose(event)));
          if (onFinalClose) onFinalClose(event);
        },
      });
    }

    /** The path with a token from the token function, asked afresh for each attempt. */
    _nextPath() {
      return tokenOf(this.token, (token) => this.path(this.refresher.took(token)));
    }

    get live() {
      return this.connection.live;
    }

    open() {
      this.connection.open();
    }

    close() {
      this.refresher.stop();
      this.pacer.reset();
      this.connection.close();
    }
  };

/**
 * A chat room at /ws/{room}?format=json that resumes after every reconnect and acknowledges sends.
 * Options: password; token (an identity token: a string, or a function returning a string or a Promise
 * of one, called before every connect); name (a display name, unverified; the server ignores it when a
 * token is given); history (last N messages on the first join); and callbacks
 *   onWelcome(welcome, { resumed, recovered })  after each (re)connect; recovered false = a gap
 *   onMessage(message, { mine })                each stored message once, in seq order
 *   onPresence(event)                           join, leave, members (in a room above the server's
 *                                               PRESENCE_EVENTS_MAX_MEMBERS, no join or leave: members
 *                                               lists who `joined` and `left` since the last one, or
 *                                               carries the count only when too many did)
 *   onState(state, text), onFinalClose(closeEvent)   4001: the token was refused (final)
 * Welcome, message, join and leave objects are the server's JSON: `user` (a token's sub) and `name`
 * are set when known and undefined otherwise. resendRate and resendBurst (RESEND_RATE, RESEND_BURST)
 * pace the resends after a reconnect: set them to a server's MESSAGE_RATE and MESSAGE_BURST if it has
 * other limits.
 */
export class Room extends OnOneSocket(RoomMember) {
  constructor(
    room,
    {
      password = "",
      token = "",
      name = "",
      history = 0,
      resendRate,
      resendBurst,
      onWelcome,
      onMessage,
      onPresence,
      onState,
      onFinalClose,
    } = {},
  ) {
    super(room, { history, onWelcome, onMessage, onPresence });
    this.password = password;
    this._socket({ token, name, resendRate, resendBurst, onState, onFinalClose });
  }

  /** The URL path of the next attempt: the first join asks for history, later ones resume. */
  path(token = typeof this.token === "string" ? this.token : "") {
    let path = `/ws/${encodeURIComponent(this.room)}?format=json`;
    if (this.password) path += `&pass=${encodeURIComponent(this.password)}`;
    if (this.name) path += `&name=${encodeURIComponent(this.name)}`;
    if (token) path += `&token=${encodeURIComponent(token)}`;
    if (this.resuming) path += `&since=${this.lastSeq}&epoch=${encodeURIComponent(this.epoch)}`;
    if (this.history > 0) path += `&history=${this.history}`;
    return path;
  }

  _welcome(event) {
    super._welcome(event);
    this.refresher.schedule(); // refreshed on the socket this welcome came on
  }

  _transmit(text, id) {
    this.connection.send(JSON.stringify({ text, id }));
  }

  _frame(event) {
    this._take(event);
  }

  _ended(error) {
    this._failAll(error);
  }
}

/**
 * One socket at /ws carrying many rooms (the multiplexed protocol): `join(room, options)` gives a room
 * with Room's send, lastSeq, epoch and callbacks; after a reconnect every room is joined again, each
 * from its own lastSeq/epoch. Options: token, name (for every room: a token's `rooms` claim limits
 * which), onState(state, text), onFinalClose(closeEvent). Room options: password, history, onWelcome,
 * onMessage, onPresence, onError(errorFrame) (a refused join or send: 4003 wrong password, 4001 token
 * not for the room, 4029 too many rooms or too fast, 1008 malformed; the connection and the other rooms
 * go on; a refused join leaves the room), onLeft(). resendRate and resendBurst are as for Room, for the
 * socket as a whole (the server's rate is the connection's, across its rooms).
 */
export class RoomConnection extends OnOneSocket(Object) {
  constructor({ token = "", name = "", resendRate, resendBurst, onState, onFinalClose } = {}) {
    super();
    this.rooms = new Map(); // room id -> JoinedRoom
    this.refs = new Map(); // ref -> JoinedRoom, for joins and leaves not answered yet
    this.nextRef = 0;
    const onOpen = () => {
      this.refs.clear();
      this.refresher.schedule(); // one token for all the rooms: refreshed on the connection
      for (const room of this.rooms.values()) this._join(room);
    };
    this._socket({ token, name, resendRate, resendBurst, onState, onOpen, onFinalClose });
  }

  path(token = typeof this.token === "string" ? this.token : "") {
    const params = new URLSearchParams();
    if (this.name) params.set("name", this.name);
    if (token) params.set("token", token);
    const query = params.toString();
    return query ? `/ws?${query}` : "/ws";
  }

  _ended(error) {
    for (const room of this.rooms.values()) room._failAll(error);
  }

  /** Join a room (now, or when the connection opens); the room's callbacks say what the server said. */
  join(room, options = {}) {
    if (this.rooms.has(room)) throw new Error(`already in ${room}`);
    const joined = new JoinedRoom(this, room, options);
    this.rooms.set(room, joined);
    if (this.live) this._join(joined);
    return joined;
  }

  _join(joined) {
    const frame = { type: "join", room: joined.room, ref: this._ref(joined) };
    if (joined.resuming) Object.assign(frame, { since: joined.lastSeq, epoch: joined.epoch });
    if (joined.history > 0) frame.history = joined.history;
    if (joined.password) frame.pass = joined.password;
    joined.joined = false;
    this.connection.send(JSON.stringify(frame));
  }

  _leave(joined) {
    if (this.rooms.get(joined.room) !== joined) return;
    this.rooms.delete(joined.room);
    joined._failAll(new Error("left the room"));
    this.connection.send(JSON.stringify({ type: "leave", room: joined.room, ref: this._ref(joined) }));
  }

  _ref(joined) {
    this.nextRef += 1;
    const ref = String(this.nextRef);
    this.refs.set(ref, joined);
    return ref;
  }

  _frame(event) {
    if (event.type === "welcome" || event.type === "left") {
      const joined = this.refs.get(String(event.ref));
      this.refs.delete(String(event.ref));
      if (joined === undefined) return;
      if (event.type === "left") joined.onLeft();
      else if (this.rooms.get(joined.room) === joined) {
        joined.joined = true;
        joined._take(event);
      }
    } else if (event.type === "error") {
      this._refused(event);
    } else if (event.type !== "refreshed") {
      const joined = this.rooms.get(event.room);
      if (joined !== undefined && joined.joined) joined._take(event);
    }
  }

  _refused(event) {
    const joined = event.ref !== undefined ? this.refs.get(String(event.ref)) : this.rooms.get(event.room);
    if (event.ref !== undefined) this.refs.delete(String(event.ref));
    if (joined === undefined) return;
    if (event.ref !== undefined && this.rooms.get(joined.room) === joined) {
      if (event.code === 1013) {
        // messaging unavailable on that replica for now: ask again after a pause
        setTimeout(() => this.rooms.get(joined.room) === joined && this.live && this._join(joined), backoff(1));
        return;
      }
      this.rooms.delete(joined.room); // a refused join: the room is not joined
      joined._failAll(new Error(`${event.reason} (${event.code})`));
    } else if (event.id !== undefined && joined.pending.has(event.id)) {
      const waiting = joined.pending.get(event.id);
      if (event.code === 1013) {
        setTimeout(() => joined.pending.has(event.id) && joined._transmit(waiting.text, event.id), backoff(1));
        return;
      }
      joined._refused(event); // the app's publish hook, 4011, 4029, 1008: rejected with its code
    }
    joined.onError(event);
  }
}

/** A room joined on a RoomConnection: send(text), leave(), lastSeq, epoch, you, and its callbacks. */
class JoinedRoom extends RoomMember {
  constructor(connection, room, { password = "", history = 0, onWelcome, onMessage, onPresence, onError, onLeft } = {}) {
    super(room, { history, onWelcome, onMessage, onPresence });
    this.connection = connection;
    this.password = password;
    this.onError = onError || (() => {});
    this.onLeft = onLeft || (() => {});
    this.joined = false; // welcomed on the current socket
  }

  get live() {
    return this.joined && this.connection.live;
  }

  get pacer() {
    return this.connection.pacer; // one rate for the socket, across its rooms
  }

  leave() {
    this.connection._leave(this);
  }

  _transmit(text, id) {
    if (this.joined) this.connection.connection.send(JSON.stringify({ type: "send", room: this.room, text, id }));
  }
}
