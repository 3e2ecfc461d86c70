// realtime.js's Room (or, with KIND=connection, a room on a RoomConnection at /ws) under Node (no
// browser on this machine): joins a room through the gateway with a
// token function that hands out the short-lived tokens given in TOKENS (JSON list), stays SECONDS, then
// prints what happened as one JSON line: welcomes, closes seen, refresh frames sent, a send's seq.
// Run: node --experimental-websocket js_refresh.mjs <realtime.js path> <gateway host:port> <room>
const [modulePath, host, room] = process.argv.slice(2);
const tokens = JSON.parse(process.env.TOKENS);
const seconds = Number(process.env.SECONDS_TO_STAY);
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.location = { protocol: "http:", host };

const sent = [];
const RealSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends RealSocket {
  send(data) {
    if (String(data).includes('"refresh"')) sent.push("refresh");
    super.send(data);
  }
};

const { Room, RoomConnection } = await import(modulePath);
const report = { welcomes: 0, states: [], finals: [], refreshes: 0, seq: null };
let next = 0;
const options = {
  token: () => tokens[Math.min(next++, tokens.length - 1)],
  onWelcome: () => (report.welcomes += 1),
  onState: (state, text) => report.states.push(`${state}: ${text}`),
  onFinalClose: (event) => report.finals.push(event.code),
};
let member;
if (process.env.KIND === "connection") {
  const connection = new RoomConnection(options);
  connection.open();
  member = connection.join(room, { onWelcome: options.onWelcome });
  member.close = () => connection.close();
} else {
  member = new Room(room, options);
  member.open();
}
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
report.seq = await Promise.race([member.send("after refreshes"), new Promise((r) => setTimeout(() => r(null), 5000))]);
report.refreshes = sent.length;
member.close();
console.log(JSON.stringify(report));
process.exit(0);
