/** A fake service for the hooks: a scripted WebSocket and a REST handler over `fetch`. */
import { vi } from "vitest";
import type { SocketLike } from "@renum/realtime";

export class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: any[] = [];
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;

  constructor(public url: string, public protocols?: string | string[]) {
    FakeSocket.all.push(this);
  }

  send(text: string): void { this.sent.push(JSON.parse(text)); }
  close(): void { this.readyState = 3; }
  frame(frame: unknown): void { this.onmessage?.({ data: JSON.stringify(frame) }); }
  welcome(): void {
    this.readyState = 1;
    this.frame({ type: "welcome", payload: { user_id: "7", connection_id: "c1", heartbeat_s: 25,
      expires_at: new Date(Date.now() + 600000).toISOString(),
      channels: { "user:7": { epoch: "e1", offset: 0 }, broadcast: { epoch: "b1", offset: 0 } } } });
  }
  serverClose(code: number, reason = ""): void { this.readyState = 3; this.onclose?.({ code, reason }); }
  static open(): FakeSocket[] { return FakeSocket.all.filter((s) => s.readyState !== 3); }
  static last(): FakeSocket { return FakeSocket.all[FakeSocket.all.length - 1]; }
}

let offsets = 0;
export function push(socket: FakeSocket, type: string, payload: unknown, channel = "user:7") {
  offsets += 1;
  socket.frame({ type, channel, offset: offsets, epoch: "e1", id: `m${offsets}`, timestamp: "", sender: "system", payload });
}

export function notification(id: string, extra: Record<string, unknown> = {}) {
  return { id, user_id: "7", type: "info", title: `Title ${id}`, message: `Message ${id}`, read: false,
    created_at: "2026-01-01T00:00:00Z", action: null, archived: false, ...extra };
}

export type Routes = Record<string, (init: RequestInit) => unknown>;

/** Stubs the global fetch with `routes` ("GET /api/..." -> body); records every call. */
export function rest(routes: Routes) {
  const calls: string[] = [];
  vi.stubGlobal("fetch", vi.fn(async (url: string, init: RequestInit = {}) => {
    const path = new URL(url, "http://api.test").pathname + new URL(url, "http://api.test").search;
    const key = `${init.method ?? "GET"} ${path}`;
    calls.push(`${key} ${new Headers(init.headers).get("Authorization")}`);
    const route = routes[key] ?? routes[`${init.method ?? "GET"} ${new URL(url, "http://api.test").pathname}`];
    if (!route) return new Response(JSON.stringify({ detail: "Not found." }), { status: 404 });
    return new Response(JSON.stringify(route(init)), { status: 200, headers: { "Content-Type": "application/json" } });
  }));
  return calls;
}
