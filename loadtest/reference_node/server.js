// The load tool's Node.js reference server: what a team would run instead of ours.
//
// socket.io 4.8 with the Redis adapter (@socket.io/redis-adapter on node-redis), fed from
// another process by @socket.io/redis-emitter (publisher.js). Compression off. It checks no
// token: the user id is read from the JWT's payload without verifying its signature, and each
// socket joins the room `user:<id>`; a broadcast is an emit to the whole namespace.
//
//   node server.js --port 8765 --key <pub/sub prefix>     # REDIS_URL from the environment
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const { redisOptions } = require("./redis_options");


function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

function userOf(token) {
  try {
    const claims = JSON.parse(Buffer.from(String(token).split(".")[1], "base64url").toString());
    return claims.user_id == null ? null : String(claims.user_id);
  } catch {
    return null;
  }
}

async function main() {
  const host = option("--host", "127.0.0.1");
  const port = Number(option("--port", "0"));
  const backlog = Number(option("--backlog", "4096"));
  const key = option("--key", "socket.io");
  if (!["127.0.0.1", "::1", "localhost"].includes(host)) {
    throw new Error("the reference server binds loopback addresses only");
  }
  const pub = createClient(redisOptions(process.env.REDIS_URL || "redis://127.0.0.1:6379/0"));
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pub, sub, { key }),
    perMessageDeflate: false,
    httpCompression: false,
    pingInterval: 25000,
    pingTimeout: 20000,
    maxHttpBufferSize: 1e6,
    cors: { origin: true },
  });
  io.on("connection", (socket) => {
    const user = userOf(socket.handshake.auth && socket.handshake.auth.token);
    if (user !== null) socket.join("user:" + user);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  httpServer.listen({ host, port, backlog });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
