// Drives gateway/src/gateway/static/realtime.js's RoomConnection under Node (its WebSocket is the
// browser's API) against a running stack: node --experimental-websocket realtime_js_rooms.mjs HOST:PORT
// Prints one JSON line: what each room heard and what the server refused.
const [host] = process.argv.slice(2);
globalThis.location = { protocol: "http:", host };
globalThis.window = { addEventListener() {}, removeEventListener() {} };
const { Room, RoomConnection } = await import(new URL("../../gateway/src/gateway/static/realtime.js", import.meta.url));

const result = { states: [], welcomes: {}, messages: {}, errors: [], acks: {} };
const conn = new RoomConnection({ name: "Node", onState: (state) => result.states.push(state) });
conn.open();
const joined = {};
const welcomed = (room) =>
  new Promise((resolve) => {
    joined[room] = conn.join(room, {
      password: room === "VIP" ? "wrong" : "",
      onWelcome: (event) => {
        result.welcomes[room] = { ref: event.ref !== undefined, name: event.name, room: event.room };
        resolve(true);
      },
      onMessage: (event, { mine }) => (result.messages[room] ||= []).push([event.text, event.room, mine]),
      onError: (event) => {
        result.errors.push({ room: event.room, code: event.code });
        resolve(false);
      },
    });
  });
const timeout = setTimeout(() => {
  console.log(JSON.stringify({ ...result, timeout: true }));
  process.exit(1);
}, 40000);
await Promise.all(["js-a", "VIP", "js-b"].map(welcomed));
// a Room (one socket per room, /ws/js-b) in the same room hears the same messages
const single = [];
const room = new Room("js-b", { onMessage: (event) => single.push(event.text) });
await new Promise((resolve) => {
  room.onWelcome = resolve;
  room.open();
});
for (const room of ["js-a", "js-b"]) result.acks[room] = await joined[room].send(`hello ${room}`);
while (!(result.messages["js-a"] && result.messages["js-b"])) await new Promise((r) => setTimeout(r, 20));
joined["js-a"].leave();
await new Promise((r) => setTimeout(r, 100));
result.rooms = [...conn.rooms.keys()];
result.singleSeq = await room.send("from the single socket");
while (single.length < 2 || result.messages["js-b"].length < 2) await new Promise((r) => setTimeout(r, 20));
result.single = single;
room.close();
// 100 sends waiting before the welcome go out after it, paced: with the default MESSAGE_BURST (40) the
// server closes a socket that sends them all at once with 1008 (final). On a Room and on a RoomConnection.
result.backlog = {};
const finalClose = (kind) => (event) => (result.backlog[`${kind} closed`] = event.code);
const backlogRoom = new Room("js-backlog", { onFinalClose: finalClose("room") });
const backlogConn = new RoomConnection({ onFinalClose: finalClose("connection") });
const backlogJoined = backlogConn.join("js-backlog-mux");
const sends = (member) => Array.from({ length: 100 }, (_, n) => member.send(`b${n}`));
const stored = async (kind, promises) => {
  try {
    result.backlog[kind] = new Set(await Promise.all(promises)).size;
  } catch (error) {
    result.backlog[kind] = String(error.message);
  }
};
const waiting = [stored("room", sends(backlogRoom)), stored("connection", sends(backlogJoined))];
backlogRoom.open();
backlogConn.open();
await Promise.all(waiting);
backlogRoom.close();
backlogConn.close();
clearTimeout(timeout);
conn.close();
console.log(JSON.stringify(result));
process.exit(0);
