import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { RealtimeClient } from "../src/index.js";
import { BroadcastLock } from "../src/election.js";
import { FakeSocket, envelope, tick } from "./fake.js";

// Browsers without the Web Locks API: no navigator.locks, BroadcastChannel only.
beforeEach(() => {
  FakeSocket.all = [];
  vi.stubGlobal("navigator", { onLine: true });
});
afterEach(() => { vi.unstubAllGlobals(); });

const FAST = { aliveMs: 40, deadMs: 150, settleMs: 20 };
let ids = 0;
const nextId = () => `tab-${String(++ids).padStart(4, "0")}`;

/** BroadcastChannel, remembering each instance so that a test can silence a tab. */
class RecordingChannel extends BroadcastChannel {
  static all: RecordingChannel[] = [];
  constructor(name: string) {
    super(name);
    RecordingChannel.all.push(this);
  }
}

it("without Web Locks, tabs elect one leader over BroadcastChannel and the next takes over when it leaves", async () => {
  expect((globalThis as any).navigator.locks).toBeUndefined();
  const log: string[] = [];
  const tabs = ["a", "b", "c"].map((name) => {
    const client = new RealtimeClient({ url: "ws://api.test/ws/", WebSocket: FakeSocket, pollUrl: false,
      shareAcrossTabs: true, getToken: () => "h.eyJ1c2VyX2lkIjo3fQ.s" });
    client.on("message", (m) => log.push(`${name}:${m.channel}@${m.offset}`));
    return client;
  });
  for (const client of tabs) client.connect();
  await tick(600);
  expect(FakeSocket.all).toHaveLength(1);
  FakeSocket.all[0].welcome();
  await tick(20);
  expect(tabs.filter((t) => t.follower)).toHaveLength(2);
  expect(tabs.map((t) => t.state)).toEqual(["connected", "connected", "connected"]);
  FakeSocket.all[0].frame(envelope("user:7", 4));
  await tick(20);
  expect(log.sort()).toEqual(["a:user:7@4", "b:user:7@4", "c:user:7@4"]);

  // The leader leaves (releasing): one of the others opens the next socket, and only one.
  const leader = tabs.find((t) => !t.follower)!;
  leader.disconnect();
  await tick(600);
  expect(FakeSocket.all).toHaveLength(2);
  const rest = tabs.filter((t) => t !== leader);
  expect(rest.filter((t) => !t.follower)).toHaveLength(1);
  for (const client of rest) client.disconnect();
});

it("concurrent claims end with one holder at a time, and every waiter gets its turn", async () => {
  let holding = 0;
  let most = 0;
  const order: number[] = [];
  const locks = Array.from({ length: 5 }, () => new BroadcastLock(BroadcastChannel, nextId, FAST));
  await Promise.all(locks.map((lock, index) => lock.request("renum-test-a", {}, async () => {
    holding += 1;
    most = Math.max(most, holding);
    order.push(index);
    await tick(60);
    holding -= 1;
  })));
  expect(most).toBe(1);
  expect(order.sort()).toEqual([0, 1, 2, 3, 4]);
}, 15_000);

it("a holder that vanishes without a release is replaced after deadMs; an aborted wait gives up", async () => {
  RecordingChannel.all = [];
  const first = new BroadcastLock(RecordingChannel, () => "tab-a", FAST);
  let firstHolds = false;
  void first.request("renum-test-b", {}, () => { firstHolds = true; return new Promise(() => {}); });
  await tick(100);
  expect(firstHolds).toBe(true);

  let secondHolds = false;
  const second = new BroadcastLock(RecordingChannel, () => "tab-b", FAST);
  void second.request("renum-test-b", {}, async () => { secondHolds = true; await new Promise(() => {}); });
  const abort = new AbortController();
  const third = new BroadcastLock(RecordingChannel, () => "tab-c", FAST);
  const thirdWait = third.request("renum-test-b", { signal: abort.signal }, async () => {});
  await tick(300);
  expect(secondHolds).toBe(false); // the holder keeps saying alive

  abort.abort();
  await expect(thirdWait).rejects.toMatchObject({ name: "AbortError" });
  RecordingChannel.all[0].close(); // the first tab crashed: silent, no release
  await tick(400);
  expect(secondHolds).toBe(true);
}, 15_000);
