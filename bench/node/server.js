// bench rooms' "Node ws (1 process)" row: the broadcast server a JavaScript team would write, as in the
// ws README ("Server broadcast"): every message a client sends goes to every open client, written with
// ws and its bufferutil addon (pinned in package.json / package-lock.json, installed by the bench with
// `npm ci` into this folder). One process, one port, compression off (ws's server default).
//
//   node bench/node/server.js PORT
import { WebSocket, WebSocketServer } from "ws";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const port = Number(process.argv[2] || process.env.PORT || 9002);

// Say whether ws found the native masking addon (a bench without it would measure the wrong thing).
let native = false;
try {
  require("node-gyp-build")(require("node:path").dirname(require.resolve("bufferutil/package.json")));
  native = true;
} catch {
  native = false;
}

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

wss.on("connection", function connection(ws) {
  ws.on("error", console.error);
  ws.on("message", function message(data, isBinary) {
    wss.clients.forEach(function each(client) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on("listening", () => {
  console.log(JSON.stringify({ event: "listening", port, bufferutil: native ? "native" : "missing" }));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const client of wss.clients) client.terminate();
    wss.close(() => process.exit(0));
  });
}
