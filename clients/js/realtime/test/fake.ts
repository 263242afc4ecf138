/** A scripted WebSocket whose instances a test drives (open, server frames, close codes). */
import type { SocketLike } from "../src/types.js";

export class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: any[] = [];
  closedWith: number | null = null;
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;

  constructor(public url: string, public protocols?: string | string[]) {
    FakeSocket.all.push(this);
  }

  send(text: string): void {
    this.sent.push(JSON.parse(text));
  }

  close(code?: number): void {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      // What browsers do: the socket stays open.
      throw new DOMException("invalid close code", "InvalidAccessError");
    }
    this.closedWith = code ?? 1000;
    this.readyState = 3;
  }

  frame(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  welcome(channels: Record<string, { epoch: string; offset: number }> = {
    "user:7": { epoch: "e1", offset: 3 }, broadcast: { epoch: "b1", offset: 0 } }): void {
    this.readyState = 1;
    this.frame({ type: "welcome", payload: { user_id: "7", connection_id: "c", heartbeat_s: 25,
      expires_at: new Date(Date.now() + 600000).toISOString(), channels } });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  reply(type: string, payload: unknown): void {
    const request = [...this.sent].reverse().find((f) => f.type === type);
    this.frame({ type: type === "subscribe" ? "subscribed" : `${type}_result`, reply_to: request.id, payload });
  }

  static open(): FakeSocket[] {
    return FakeSocket.all.filter((socket) => socket.readyState !== 3);
  }
}

export function envelope(channel: string, offset: number, epoch = "e1", type = "notification", payload: unknown = {}) {
  return { type, channel, offset, epoch, id: `m${offset}`, timestamp: "", sender: "system", payload };
}

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** A scripted EventSource: the test sends the server's events and errors. */
export class FakeEventSource {
  static all: FakeEventSource[] = [];
  closed = false;
  onerror: ((event: unknown) => void) | null = null;
  private listeners = new Map<string, Array<(event: MessageEvent<string>) => void>>();

  constructor(public url: string) {
    FakeEventSource.all.push(this);
  }

  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
  }

  /** What the browser does with `event: <type>`, `data: <json>`, `id: <cursor>`. */
  emit(type: string, data: unknown, id = ""): void {
    if (this.closed) return;
    const event = { data: JSON.stringify(data), lastEventId: id } as MessageEvent<string>;
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }

  error(): void {
    if (!this.closed) this.onerror?.({});
  }

  get params(): URLSearchParams {
    return new URL(this.url).searchParams;
  }

  static last(): FakeEventSource {
    return FakeEventSource.all[FakeEventSource.all.length - 1];
  }
}
