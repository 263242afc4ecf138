// The load tool's publisher for the Node.js reference server: @socket.io/redis-emitter.
//
// Same contract as `python -m loadtest.publisher`: the JSON config as the first argument,
// prints `ready`, waits for `go` on stdin, publishes `rate x duration` messages on a fixed
// schedule (catching up when behind), then prints one JSON line with what it did. Each
// message is the event `system_event` with an envelope whose payload carries `t` (the
// publisher's clock, seconds), `seq` and `run`; the target `broadcast` is an emit to the
// whole namespace, any other target (`user:<id>`) an emit to that room.
"use strict";

const crypto = require("node:crypto");
const readline = require("node:readline");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");
const { redisOptions } = require("./redis_options");


function envelope(channel, offset, payload) {
  return {
    type: "system_event", channel, offset, epoch: "loadtest", id: crypto.randomUUID(),
    timestamp: new Date().toISOString(), sender: "system", payload,
  };
}

async function main() {
  const config = JSON.parse(process.argv[2]);
  const total = Math.floor(config.rate * config.duration);
  const client = createClient(redisOptions(config.redis_url));
  await client.connect();
  const emitter = new Emitter(client, { key: config.key });
  const targets = config.targets;
  console.log("ready");
  const lines = readline.createInterface({ input: process.stdin });
  const first = await new Promise((resolve) => {
    lines.once("line", resolve);
    lines.once("close", () => resolve(""));
  });
  if (first.trim() !== "go") {
    await client.quit();
    return;
  }
  const started = Date.now() / 1000;
  const cpuStart = process.cpuUsage();
  const t0 = performance.now();
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * config.rate) + 1);
    for (; i < due; i++) {
      const target = targets[i % targets.length];
      const message = envelope(target, i + 1, { t: Date.now() / 1000, seq: i, run: config.run });
      (target === "broadcast" ? emitter : emitter.to(target)).emit("system_event", message);
    }
    if (i < total) {
      const wait = t0 + ((i / config.rate) * 1000) - performance.now();
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
    }
  }
  await client.ping(); // the commands are ordered: every PUBLISH before it has been sent and answered
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  console.log(JSON.stringify({
    published: total, failed: 0, elapsed, started, cpu_s: (cpu.user + cpu.system) / 1e6,
    rate_achieved: elapsed ? total / elapsed : 0,
  }));
  await client.quit();
  lines.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
