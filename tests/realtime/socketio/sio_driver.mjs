// A line-driven socket.io-client for the tests (tests/realtime/socketio/test_socketio_client.py).
// Reads one JSON command per stdin line: {"op": "connect", "url", "options"} or
// {"op": "emit", "event", "arg"} or {"op": "close"}; writes one JSON line per thing the client
// sees: {"connect": {"recovered", "id"}}, {"connect_error": {"message", "data"}},
// {"event": name, "args": [...]}, {"ack": {"event", "value"}}, {"disconnect": reason}.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

let socket = null;
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "connect") {
    socket = io(command.url, { reconnectionDelay: 100, reconnectionDelayMax: 500, ...command.options });
    socket.on("connect", () => out({ connect: { recovered: socket.recovered, id: socket.id } }));
    socket.on("connect_error", (err) => out({ connect_error: { message: err.message, data: err.data ?? null } }));
    socket.on("disconnect", (reason) => out({ disconnect: reason }));
    socket.onAny((event, ...args) => out({ event, args }));
    socket.io.on("open", () => socket.io.engine.on("upgrade", (transport) => out({ upgrade: transport.name })));
  } else if (command.op === "emit") {
    socket.timeout(10000).emit(command.event, command.arg, (err, value) =>
      out({ ack: { event: command.event, value: err ? { timeout: true } : value } }));
  } else if (command.op === "close") {
    socket?.close();
    process.exit(0);
  }
});
