import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RealtimeClient, executionFromRest, executionFromUpdate, type Envelope } from "../src/index.js";
import { FakeEventSource, FakeSocket, envelope, tick } from "./fake.js";

function make(options: Partial<ConstructorParameters<typeof RealtimeClient>[0]> = {}) {
  const delivered: string[] = [];
  const states: string[] = [];
  const client = new RealtimeClient({
    url: "ws://api.test/ws/", WebSocket: FakeSocket, pollUrl: false, backoffBaseMs: 5, clientId: "tab-1",
    getToken: () => "tok", ...options,
  });
  client.on("message", (m: Envelope) => delivered.push(`${m.channel}@${m.offset}`));
  client.onStateChange((state) => states.push(state));
  return { client, delivered, states };
}

beforeEach(() => { FakeSocket.all = []; });
afterEach(() => { vi.unstubAllGlobals(); });

describe("RealtimeClient", () => {
  it("sends its client_id and the token as a subprotocol", async () => {
    const { client } = make();
    client.connect();
    await tick();
    expect(FakeSocket.all[0].url).toBe("ws://api.test/ws/?client_id=tab-1");
    expect(FakeSocket.all[0].protocols).toEqual(["renum.v1", "bearer.tok"]);
    client.disconnect();
  });

  it("closes with 1000 when the browser goes offline, so no socket is left open", async () => {
    const { client, states } = make();
    client.connect();
    for (let i = 0; i < 30; i++) {
      await tick();
      FakeSocket.all.at(-1)!.welcome();
      window.dispatchEvent(new Event("offline"));
      window.dispatchEvent(new Event("online"));
    }
    await tick();
    expect(FakeSocket.all).toHaveLength(31);
    expect(FakeSocket.all.slice(0, 30).map((s) => s.closedWith)).toEqual(Array(30).fill(1000));
    expect(FakeSocket.open()).toHaveLength(1);
    expect(states.filter((s) => s === "offline")).toHaveLength(30);
    client.disconnect();
  });

  it("delivers each message once across a replay", async () => {
    const { client, delivered } = make();
    client.connect();
    await tick();
    const socket = FakeSocket.all[0];
    socket.welcome();
    socket.frame(envelope("user:7", 4));
    socket.frame(envelope("user:7", 4));
    socket.frame(envelope("user:7", 5));
    expect(delivered).toEqual(["user:7@4", "user:7@5"]);
    client.disconnect();
  });

  it("remembers a channel the server subscribed it to and resumes it after a reconnect", async () => {
    const { client, delivered } = make();
    client.connect();
    await tick();
    const first = FakeSocket.all[0];
    first.welcome();
    first.frame({ type: "subscribed", payload: { channel: "team:9", epoch: "t1", offset: 4, recovered: false } });
    first.frame(envelope("team:9", 5, "t1", "execution_update"));
    first.serverClose(1012);
    await tick(20);
    const second = FakeSocket.all[1];
    second.welcome();
    const resubscribe = second.sent.find((f) => f.type === "subscribe" && f.channel === "team:9");
    expect(resubscribe.since).toEqual({ epoch: "t1", offset: 5 });
    expect(client.channels()).toContain("team:9");
    expect(delivered).toEqual(["team:9@5"]);
    client.disconnect();
  });

  it("forgets a channel the server unsubscribed it from", async () => {
    const { client } = make();
    client.connect();
    await tick();
    FakeSocket.all[0].welcome();
    FakeSocket.all[0].frame({ type: "subscribed", payload: { channel: "team:9", epoch: "t1", offset: 0, recovered: false } });
    FakeSocket.all[0].frame({ type: "unsubscribed", payload: { channel: "team:9" } });
    expect(client.channels()).not.toContain("team:9");
    client.disconnect();
  });

  it("reports a deactivated account, an expired session and a refusal differently", async () => {
    const deactivated = make();
    deactivated.client.connect();
    await tick();
    FakeSocket.all[0].welcome();
    FakeSocket.all[0].serverClose(4001, "account deactivated");
    await tick();
    expect(deactivated.client.state).toBe("unauthorized");
    expect(deactivated.client.stateInfo.cause).toBe("account_deactivated");

    const expired = make({ getToken: ({ reason }) => { if (reason === "expired") throw new Error("refresh failed"); return "tok"; } });
    expired.client.connect();
    await tick();
    FakeSocket.all[1].welcome();
    FakeSocket.all[1].serverClose(4011, "token expired");
    await tick();
    expect(expired.client.stateInfo).toEqual({ reason: "refresh failed", cause: "session_expired", code: 4011 });
  });

  it("leaves connected as soon as a token refresh can no longer succeed", async () => {
    vi.useFakeTimers();
    try {
      const { client } = make({ getToken: ({ reason }) => { if (reason === "refresh") throw new Error("signed out"); return "tok"; } });
      client.connect();
      await vi.advanceTimersByTimeAsync(0);
      const socket = FakeSocket.all[0];
      socket.readyState = 1;
      socket.frame({ type: "welcome", payload: { user_id: "7", connection_id: "c", heartbeat_s: 25,
        expires_at: new Date(Date.now() + 20_000).toISOString(), channels: {} } });
      expect(client.state).toBe("connected");
      await vi.advanceTimersByTimeAsync(17_000);
      expect(client.state).toBe("unauthorized");
      expect(client.stateInfo.cause).toBe("session_expired");
      expect(socket.closedWith).toBe(1000);
    } finally {
      vi.useRealTimers();
    }
  });

  it("keeps the reason of a 4003 refusal in the state", async () => {
    const { client } = make();
    client.connect();
    await tick();
    FakeSocket.all[0].serverClose(4003, "too many connections for this user");
    expect(client.state).toBe("reconnecting");
    expect(client.stateInfo).toMatchObject({ code: 4003, reason: "too many connections for this user" });
    client.disconnect();
  });
});

describe("degraded mode", () => {
  function pollServer(answers: Array<(body: any) => { status: number; json?: unknown }>) {
    const requests: Array<{ url: string; method: string; body: any }> = [];
    const fetch = vi.fn(async (url: string, init: RequestInit) => {
      const body = init.body ? JSON.parse(String(init.body)) : null;
      requests.push({ url, method: init.method ?? "GET", body });
      const answer = answers.shift();
      if (!answer) return new Promise<Response>(() => {}); // a long poll that never ends
      const { status, json } = answer(body);
      return new Response(status === 204 ? null : JSON.stringify(json ?? {}), { status,
        headers: { "Content-Type": "application/json", "X-Poll-Interval": "0" } });
    });
    return { requests, fetch: fetch as unknown as typeof globalThis.fetch };
  }

  async function degrade(client: RealtimeClient) {
    client.connect();
    await tick();
    FakeSocket.all[0].welcome();
    FakeSocket.all[0].serverClose(1006);
    for (let i = 1; i <= 2; i++) {
      await tick(40);
      FakeSocket.all.at(-1)!.serverClose(1006);
    }
    await tick(40);
  }

  it("polls every channel in ONE multiplexed request from the same positions, delivering once", async () => {
    const server = pollServer([
      () => ({ status: 200, json: { channels: {
        "user:7": { epoch: "e1", offset: 5, recovered: true, messages: [envelope("user:7", 4), envelope("user:7", 5)] },
        broadcast: { epoch: "b1", offset: 0, recovered: true, messages: [] },
        "team:9": { error: { code: "forbidden", message: "not a member" } },
      } } }),
      () => ({ status: 200, json: { channels: {
        "user:7": { epoch: "e1", offset: 5, recovered: true, messages: [envelope("user:7", 5)] },
      } } }),
    ]);
    const { client, delivered } = make({ pollUrl: "http://api.test/api/realtime/poll/", fetch: server.fetch,
      maxAttempts: 2, probeIntervalMs: 60_000 });
    const errors: string[] = [];
    client.on("error", (e) => errors.push(`${e.code}:${e.detail.channel}`));
    client.subscribe("team:9", () => {});
    await degrade(client);
    await tick(20);
    expect(client.state).toBe("degraded");
    expect(client.stateInfo).toMatchObject({ polling: true, transport: "poll", listening: true });
    expect(server.requests[0].method).toBe("POST");
    expect(server.requests[0].url).toBe("http://api.test/api/realtime/poll/");
    expect(server.requests[0].body.channels).toEqual({
      broadcast: { epoch: "b1", offset: 0 }, "user:7": { epoch: "e1", offset: 3 }, "team:9": null });
    expect(server.requests[1].body.channels["user:7"]).toEqual({ epoch: "e1", offset: 5 });
    expect(delivered).toEqual(["user:7@4", "user:7@5"]);
    expect(errors).toEqual(["forbidden:team:9"]);
    expect(server.requests).toHaveLength(3); // the third is the pending long poll: one at a time
    client.disconnect();
  });

  it("falls back to per-channel polling against a server without the multiplexed poll", async () => {
    const server = pollServer([() => ({ status: 404, json: { detail: "Not found." } })]);
    const { client } = make({ pollUrl: "http://api.test/api/realtime/poll/", fetch: server.fetch, maxAttempts: 2,
      probeIntervalMs: 60_000 });
    await degrade(client);
    await tick(20);
    expect(client.stateInfo.transport).toBe("events");
    const urls = server.requests.slice(1).map((r) => new URL(r.url));
    expect(urls.map((u) => u.pathname)).toEqual(["/api/realtime/events/", "/api/realtime/events/"]);
    expect(urls.map((u) => u.searchParams.get("channel")).sort()).toEqual(["broadcast", "user:7"]);
    client.disconnect();
  });

  it("signals a resync when the poll cannot recover the gap", async () => {
    const server = pollServer([() => ({ status: 200, json: { channels: {
      "user:7": { epoch: "e2", offset: 10, recovered: false, messages: [] } } } })]);
    const { client } = make({ pollUrl: "http://api.test/api/realtime/poll/", fetch: server.fetch, maxAttempts: 2,
      probeIntervalMs: 60_000 });
    const resyncs: string[] = [];
    client.onResync((e) => resyncs.push(`${e.channel}:${e.reason}`));
    await degrade(client);
    await tick(20);
    expect(resyncs).toEqual(["user:7:epoch_changed"]);
    expect(client.positions()["user:7"]).toEqual({ epoch: "e2", offset: 10 });
    client.disconnect();
  });
});

describe("degraded mode over server-sent events", () => {
  /** Routes fetch by path: tickets are numbered, polls are answered from `polls` in order. */
  function sseServer(polls: Array<(body: any) => unknown>) {
    const requests: Array<{ path: string; body: any; auth: string | null }> = [];
    let tickets = 0;
    const fetch = vi.fn(async (url: string, init: RequestInit) => {
      const path = new URL(url).pathname;
      const body = init.body ? JSON.parse(String(init.body)) : null;
      requests.push({ path, body, auth: new Headers(init.headers).get("Authorization") });
      if (path === "/api/realtime/ticket/") {
        return new Response(JSON.stringify({ ticket: `t${++tickets}`, expires_in: 30 }), { status: 201 });
      }
      const answer = polls.shift();
      if (!answer) return new Promise<Response>(() => {});
      return new Response(JSON.stringify(answer(body)), { status: 200, headers: { "X-Poll-Interval": "0" } });
    });
    return { requests, fetch: fetch as unknown as typeof globalThis.fetch };
  }

  async function degrade(client: RealtimeClient) {
    client.connect();
    await tick();
    FakeSocket.all[0].welcome();
    FakeSocket.all[0].serverClose(1006);
    for (let i = 1; i <= 2; i++) {
      await tick(40);
      FakeSocket.all.at(-1)!.serverClose(1006);
    }
    await tick(40);
  }

  const options = (fetch: typeof globalThis.fetch) => ({ pollUrl: "http://api.test/api/realtime/poll/", fetch,
    EventSource: FakeEventSource, maxAttempts: 2, probeIntervalMs: 60_000 });

  beforeEach(() => { FakeEventSource.all = []; });

  it("follows every channel on ONE stream with a ticket, catching up from the socket's positions, delivering once", async () => {
    const server = sseServer([(body) => ({ channels: {
      "user:7": { epoch: "e1", offset: 6, recovered: true,
        messages: [envelope("user:7", 4), envelope("user:7", 5), envelope("user:7", 6)] } } })]);
    const { client, delivered } = make(options(server.fetch));
    await degrade(client);
    expect(client.state).toBe("degraded");
    expect(client.stateInfo).toMatchObject({ polling: true, transport: "sse", listening: false });
    expect(FakeEventSource.all).toHaveLength(1);
    const stream = FakeEventSource.last();
    expect(new URL(stream.url).pathname).toBe("/api/realtime/sse/");
    expect(stream.params.getAll("channel").sort()).toEqual(["broadcast", "user:7"]);
    expect(stream.params.get("ticket")).toBe("t1");
    expect(stream.params.get("since")).toBeNull();
    expect(server.requests[0]).toMatchObject({ path: "/api/realtime/ticket/", auth: "Bearer tok" });

    // The stream starts at the server's current positions; the client was at user:7@3.
    stream.emit("ready", { channels: { "user:7": { epoch: "e1", offset: 6, recovered: false },
      broadcast: { epoch: "b1", offset: 0, recovered: false } }, heartbeat_s: 25 }, "c6");
    stream.emit("notification", envelope("user:7", 6), "c6");
    stream.emit("notification", envelope("user:7", 7), "c7");
    await tick(20);
    expect(server.requests[1]).toMatchObject({ path: "/api/realtime/poll/",
      body: { channels: { "user:7": { epoch: "e1", offset: 3 } }, timeout: 0 } });
    // Listening once the catch-up placed every channel (not at `ready`: user:7 was behind).
    expect(client.stateInfo.listening).toBe(true);
    stream.emit("unread_count", envelope("user:7", 8, "e1", "unread_count", { count: 1 }), "c8");
    expect(delivered).toEqual(["user:7@4", "user:7@5", "user:7@6", "user:7@7", "user:7@8"]);
    expect(client.positions()["user:7"]).toEqual({ epoch: "e1", offset: 8 });

    // The stream ends (credentials expired, a proxy timeout): a new ticket, resumed by cursor.
    stream.error();
    await tick(20);
    expect(stream.closed).toBe(true);
    const next = FakeEventSource.last();
    expect(FakeEventSource.all).toHaveLength(2);
    expect(next.params.get("ticket")).toBe("t2");
    expect(next.params.get("since")).toBe("c8");
    next.emit("ready", { channels: { "user:7": { epoch: "e1", offset: 7, recovered: true },
      broadcast: { epoch: "b1", offset: 0, recovered: true } }, heartbeat_s: 25 }, "c7");
    next.emit("notification", envelope("user:7", 8), "c8");
    next.emit("notification", envelope("user:7", 9), "c9");
    expect(delivered.slice(5)).toEqual(["user:7@9"]);
    expect(server.requests.filter((r) => r.path === "/api/realtime/poll/")).toHaveLength(1);
    client.disconnect();
    expect(next.closed).toBe(true);
  });

  it("applies the stream's resync and channel_error once", async () => {
    const server = sseServer([() => ({ channels: { "user:7": { epoch: "e2", offset: 10, recovered: false, messages: [] } } })]);
    const { client, delivered } = make(options(server.fetch));
    const resyncs: string[] = [];
    const errors: string[] = [];
    client.onResync((e) => resyncs.push(`${e.channel}:${e.reason}:${e.offset}`));
    client.on("error", (e) => errors.push(`${e.code}:${e.detail.channel}`));
    client.subscribe("team:9", () => {});
    await degrade(client);
    const stream = FakeEventSource.last();
    expect(stream.params.getAll("channel").sort()).toEqual(["broadcast", "team:9", "user:7"]);
    stream.emit("ready", { channels: { "user:7": { epoch: "e2", offset: 10, recovered: false },
      broadcast: { epoch: "b1", offset: 0, recovered: false } }, heartbeat_s: 25 }, "c1");
    stream.emit("channel_error", { channel: "team:9", code: "forbidden", message: "not a member" });
    // The server's resync for the same position as the catch-up poll's answer: one resync in all.
    stream.emit("resync", { channel: "user:7", epoch: "e2", offset: 10 });
    await tick(20);
    expect(resyncs).toEqual(["user:7:epoch_changed:10"]);
    expect(errors).toEqual(["forbidden:team:9"]);
    // Later the channel's history is lost again while streaming.
    stream.emit("resync", { channel: "user:7", epoch: "e3", offset: 2 }, "c2");
    stream.emit("notification", envelope("user:7", 3, "e3"), "c3");
    expect(resyncs).toEqual(["user:7:epoch_changed:10", "user:7:epoch_changed:2"]);
    expect(delivered).toEqual(["user:7@3"]);
    client.disconnect();
  });

  it("long-polls instead when the stream keeps failing before ready, and without EventSource", async () => {
    const server = sseServer([]);
    const { client } = make(options(server.fetch));
    await degrade(client);
    FakeEventSource.last().error();
    await tick(40);
    expect(FakeEventSource.all).toHaveLength(2);
    FakeEventSource.last().error();
    await tick(20);
    expect(client.stateInfo).toMatchObject({ polling: true, transport: "poll" });
    const last = server.requests.at(-1)!;
    expect(last).toMatchObject({ path: "/api/realtime/poll/", body: { timeout: 25 } });
    client.disconnect();

    FakeSocket.all = [];
    const plain = make({ ...options(server.fetch), EventSource: undefined });
    await degrade(plain.client);
    expect(plain.client.stateInfo).toMatchObject({ transport: "poll" });
    plain.client.disconnect();
  });
});

describe("execution shape", () => {
  it("maps REST rows and socket updates to one shape", () => {
    const rest = executionFromRest({ id: "0b5c", team: 7, status: "running", progress: 40, current_step: "step 2",
      result: null, error: null, created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:02Z" });
    const live = executionFromUpdate({ execution_id: "0b5c", team_id: "7", status: "completed", progress: 100,
      current_step: null, result: { ok: true }, error: null, updated_at: "2026-01-01T00:00:05Z" }, rest);
    expect(rest).toEqual({ id: "0b5c", teamId: "7", status: "running", progress: 40, currentStep: "step 2",
      result: null, error: null, updatedAt: "2026-01-01T00:00:02Z", createdAt: "2026-01-01T00:00:00Z" });
    expect(live).toEqual({ id: "0b5c", teamId: "7", status: "completed", progress: 100, currentStep: null,
      result: { ok: true }, error: null, updatedAt: "2026-01-01T00:00:05Z", createdAt: "2026-01-01T00:00:00Z" });
  });
});
