import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { RealtimeClient, type Envelope } from "../src/index.js";
import { FakeEventSource, FakeSocket, envelope, tick } from "./fake.js";

/** The Web Locks API's exclusive request, as browsers do it within one origin. */
class FakeLocks {
  held = new Map<string, Promise<void>>();
  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<void> {
    const before = this.held.get(name) ?? Promise.resolve();
    let aborted = false;
    options.signal?.addEventListener("abort", () => { aborted = true; });
    const run = before.then(async () => { if (!aborted) await callback(); });
    this.held.set(name, run.catch(() => {}));
    return run;
  }
}

function tab(name: string, log: string[]) {
  const client = new RealtimeClient({ url: "ws://api.test/ws/", WebSocket: FakeSocket, pollUrl: false,
    shareAcrossTabs: true, getToken: () => "h.eyJ1c2VyX2lkIjo3fQ.s" });
  client.on("message", (m: Envelope) => log.push(`${name}:${m.channel}@${m.offset}`));
  return client;
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.stubGlobal("navigator", { onLine: true, locks: new FakeLocks() });
});
afterEach(() => { vi.unstubAllGlobals(); });

it("tabs share one socket; messages, state and commands go through the leader; a follower takes over", async () => {
  const log: string[] = [];
  const tabs = ["a", "b", "c"].map((name) => tab(name, log));
  for (const client of tabs) client.connect();
  await tick(20);
  expect(FakeSocket.all).toHaveLength(1);
  const socket = FakeSocket.all[0];
  socket.welcome();
  await tick(20);
  expect(tabs.map((t) => [t.state, t.follower])).toEqual([["connected", false], ["connected", true], ["connected", true]]);

  // A follower's subscription is made on the leader's socket; its messages reach every tab once.
  const seenByB: number[] = [];
  tabs[1].subscribe("team:4", (m) => seenByB.push(m.offset));
  await tick(20);
  const subscribe = socket.sent.find((f) => f.type === "subscribe" && f.channel === "team:4");
  expect(subscribe).toBeTruthy();
  socket.frame(envelope("user:7", 4));
  socket.frame(envelope("team:4", 1, "t1", "execution_update"));
  await tick(20);
  expect(log.sort()).toEqual(["a:team:4@1", "a:user:7@4", "b:team:4@1", "b:user:7@4", "c:team:4@1", "c:user:7@4"]);
  expect(seenByB).toEqual([1]);

  // A follower's command is sent by the leader and answered to the follower.
  const answer = tabs[2].command("notification.mark_all_read", {});
  await tick(20);
  const command = socket.sent.find((f) => f.type === "command");
  socket.frame({ type: "command_result", reply_to: command.id, payload: { result: { count: 3 } } });
  await expect(answer).resolves.toEqual({ count: 3 });

  // The leader closes: the next tab leads, resuming from the positions it saw.
  tabs[0].disconnect();
  await tick(20);
  expect(FakeSocket.all).toHaveLength(2);
  const second = FakeSocket.all[1];
  second.welcome();
  await tick(20);
  const resume = second.sent.filter((f) => f.type === "subscribe").map((f) => [f.channel, f.since]);
  expect(resume).toContainEqual(["user:7", { epoch: "e1", offset: 4 }]);
  expect(resume).toContainEqual(["team:4", { epoch: "t1", offset: 1 }]);
  expect(tabs[1].follower).toBe(false);
  expect(tabs[2].state).toBe("connected");
  tabs[1].disconnect();
  tabs[2].disconnect();
});

it("degraded tabs share ONE server-sent events stream through the leader", async () => {
  FakeEventSource.all = [];
  const fetch = vi.fn(async (url: string) => new URL(url).pathname === "/api/realtime/ticket/"
    ? new Response(JSON.stringify({ ticket: "t1", expires_in: 30 }), { status: 201 })
    : new Promise<Response>(() => {}));
  const log: string[] = [];
  const tabs = ["a", "b"].map((name) => {
    const client = new RealtimeClient({ url: "ws://api.test/ws/", WebSocket: FakeSocket, shareAcrossTabs: true,
      getToken: () => "h.eyJ1c2VyX2lkIjo3fQ.s", pollUrl: "http://api.test/api/realtime/poll/",
      fetch: fetch as unknown as typeof globalThis.fetch, EventSource: FakeEventSource, maxAttempts: 1,
      backoffBaseMs: 5, probeIntervalMs: 60_000 });
    client.on("message", (m: Envelope) => log.push(`${name}:${m.channel}@${m.offset}`));
    return client;
  });
  for (const client of tabs) client.connect();
  await tick(20);
  FakeSocket.all[0].welcome();
  FakeSocket.all[0].serverClose(1006);
  await tick(40);
  FakeSocket.all.at(-1)!.serverClose(1006);
  await tick(40);
  expect(tabs.map((t) => [t.state, t.stateInfo.transport, t.follower])).toEqual([
    ["degraded", "sse", false], ["degraded", "sse", true]]);
  // A follower's channel joins the one stream (which reopens with it).
  tabs[1].subscribe("team:4", () => {});
  await tick(40);
  expect(FakeEventSource.all.filter((s) => !s.closed)).toHaveLength(1);
  const stream = FakeEventSource.last();
  expect(stream.params.getAll("channel").sort()).toEqual(["broadcast", "team:4", "user:7"]);
  stream.emit("ready", { channels: { "user:7": { epoch: "e1", offset: 3, recovered: true },
    broadcast: { epoch: "b1", offset: 0, recovered: true }, "team:4": { epoch: "t1", offset: 0, recovered: false } },
    heartbeat_s: 25 }, "c0");
  stream.emit("notification", envelope("user:7", 4), "c1");
  stream.emit("execution_update", envelope("team:4", 1, "t1", "execution_update"), "c2");
  await tick(20);
  expect(log.sort()).toEqual(["a:team:4@1", "a:user:7@4", "b:team:4@1", "b:user:7@4"]);
  for (const client of tabs) client.disconnect();
});
