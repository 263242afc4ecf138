/**
 * The realtime client: protocol v1 and v1.1 (see docs/protocol.md and docs/client.md).
 *
 * One `RealtimeClient` keeps one WebSocket and gives the application:
 *   - channel subscriptions that survive reconnects: the last (epoch, offset) of every channel
 *     is remembered and sent back as `since`, so the server replays what was missed; when it
 *     cannot (`recovered: false`, or the epoch changed) a `resync` event tells the application
 *     to reload its state over REST;
 *   - de-duplication by (channel, epoch, offset), so a message is delivered once;
 *   - request/reply (`send`, `command`) matched by `reply_to`;
 *   - heartbeat, token refresh before expiry, reconnection with exponential backoff and the
 *     close-code rules of the protocol;
 *   - an HTTP fallback (`degraded`) after persistent WebSocket failure: ONE multiplexed long
 *     poll for all channels (per-channel polling only against servers without it), continuing
 *     from the same positions and probing the WebSocket to go back.
 */

import {
  CloseCode,
  type ConnectionState,
  type Envelope,
  type EventSourceConstructor,
  type Position,
  type RealtimeOptions,
  type ResyncEvent,
  type SocketConstructor,
  type SocketLike,
  State,
  type StateInfo,
  type Subscribed,
  type TokenRequest,
  type UnauthorizedCause,
  type Unsubscribe,
  type Welcome,
  SUBPROTOCOL,
} from "./types.js";
import { BroadcastLock } from "./election.js";

/** A failed request, an `error` frame, or a lost connection. */
export class RealtimeError extends Error {
  /** Protocol code (`forbidden`, `not_found`...) or client code (`unavailable`, `timeout`, `disconnected`, `unauthorized`, `http_<status>`). */
  code: string;
  detail: Record<string, unknown>;

  constructor(code: string, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    this.detail = detail;
  }
}

type Options = Required<Omit<RealtimeOptions, "heartbeatS" | "positions" | "fetch" | "WebSocket" | "pollUrl"
  | "eventsUrl" | "clientId" | "sseUrl" | "ticketUrl" | "EventSource" | "sseEventTypes">> & RealtimeOptions;

/**
 * The protocol's message types: EventSource hands a named event only to listeners of that
 * name, so the stream listens for these, the ones given to `onMessage()` and `sseEventTypes`.
 */
const PROTOCOL_TYPES = [
  "notification", "notification_read", "notification_unread", "notification_archived", "notification_unarchived",
  "notification_deleted", "unread_count", "team_member_joined", "team_member_left", "team_member_role_changed",
  "team_renamed", "execution_update", "system_event", "publication", "message",
];

/** Stream failures (before `ready`) in a row after which the degraded mode long-polls instead. */
const MAX_SSE_FAILURES = 2;

const DEFAULTS = {
  url: "/ws/",
  maxAttempts: 5,
  backoffBaseMs: 1000,
  connectTimeoutMs: 10000,
  requestTimeoutMs: 10000,
  refreshLeadMs: 60000,
  pollTimeoutS: 25,
  probeIntervalMs: 30000,
  maxPollFailures: 5,
  userIdClaim: "user_id",
  shareAcrossTabs: false,
};

/** What tabs say to each other over the BroadcastChannel (see `shareAcrossTabs`). */
type TabMessage =
  | { kind: "hello"; tab: string }
  | { kind: "leader"; tab: string }
  | { kind: "state"; state: ConnectionState; info: StateInfo }
  | { kind: "message"; message: Envelope }
  | { kind: "resync"; event: ResyncEvent }
  | { kind: "want"; tab: string; channels: string[] }
  | { kind: "unwant"; tab: string; channel: string }
  | { kind: "bye"; tab: string }
  | { kind: "request"; tab: string; id: string; type: string; data: Record<string, unknown> }
  | { kind: "reply"; tab: string; id: string; payload?: unknown; error?: { code: string; message: string } };

interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<void>;
}

/** Web Locks where the browser has them; else an election over BroadcastChannel (election.ts). */
function tabApis(): { locks: LockManagerLike; Channel: typeof BroadcastChannel } | null {
  const Channel = (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
  if (!Channel) return null;
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  return { locks: locks ?? new BroadcastLock(Channel, randomId), Channel };
}

/** How many delivered offsets per channel are remembered beyond the resume position. */
const SEEN_LIMIT = 2048;

/** The socket's open state (WebSocket.OPEN), without needing the global at import. */
const OPEN = 1;

/** Close reasons (server `realtime/core/auth.py`, `consumers.py`) that no new token can fix. */
const DEACTIVATED = /deactivated|inactive user/i;

type Listener = (...args: any[]) => void;

interface ChannelState {
  name: string;
  callbacks: Set<{ callback: (message: Envelope<any>) => void }>;
  /** The application follows it (subscribe() callbacks, or the server subscribed the socket). */
  wanted: boolean;
  /** Followed by the server on connect (`user:<id>`, `broadcast`). */
  auto: boolean;
  /** Subscribed by the server (a `subscribed` frame without `reply_to`), kept across reconnects. */
  server: boolean;
  epoch: string | null;
  offset: number;
  seen: Set<number>;
  resuming: boolean;
}

interface Pending {
  resolve: (value: any) => void;
  reject: (error: RealtimeError) => void;
  timer: ReturnType<typeof setTimeout>;
  onReply?: (payload: any) => void;
}

interface PollAnswer {
  epoch: string;
  offset: number;
  recovered: boolean;
  messages?: Envelope[];
  error?: { code: string; message: string };
}

/**
 * Decode a JWT's claims without verifying it (the server verifies); null when unreadable.
 */
export function decodeJwt(token: string): Record<string, any> | null {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const json = decodeURIComponent(
      Array.from(atob(base64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/** Backoff delay for attempt n (1-based): base * 2^(n-1), with +-20 % jitter. */
function backoffDelay(baseMs: number, attempt: number): number {
  return Math.round(baseMs * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function pageHref(): string | undefined {
  return (globalThis as { location?: Location }).location?.href;
}

function resolveSocketUrl(url: string): string {
  if (/^wss?:\/\//.test(url)) return url;
  const base = pageHref();
  if (!base) throw new RealtimeError("invalid_url", `cannot resolve ${url} without a location`);
  const absolute = new URL(url, base);
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
  return absolute.href;
}

/** An HTTP URL on the socket's host: `/api/...` paths default there, not on the page's host. */
function httpUrl(socketUrl: string, path: string): string {
  const url = new URL(socketUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = path;
  url.search = "";
  return url.href;
}

function randomId(): string {
  const crypto = (globalThis as { crypto?: Crypto }).crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

/**
 * The realtime client. Create one per signed-in user and call `connect()`.
 *
 * @example
 * const client = new RealtimeClient({ url: "/ws/", getToken: () => auth.accessToken() });
 * client.onStateChange((state, info) => console.log(state, info));
 * client.onMessage("notification", (msg) => showToast(msg.payload));
 * const off = client.subscribe("team:7", (msg) => render(msg.payload));
 * client.connect();
 */
export class RealtimeClient {
  readonly options: Options;
  readonly url: string;
  /** Multiplexed poll URL, or null when the HTTP fallback is off. */
  readonly pollUrl: string | null;
  /** Per-channel events URL (servers without the multiplexed poll). */
  readonly eventsUrl: string | null;
  /** Server-sent events URL, or null when the degraded mode does not use SSE. */
  readonly sseUrl: string | null;
  /** One-time ticket URL (EventSource cannot send an Authorization header). */
  readonly ticketUrl: string;
  /** Sent as `client_id`: shown in the admin's connection list. */
  readonly clientId: string;
  state: ConnectionState = State.IDLE;
  /** Details of the current state: attempt, maxAttempts, delayMs, code, reason. */
  stateInfo: StateInfo = {};
  /** The user id from the welcome (or the token), once known. */
  userId: string | null = null;
  /** The last welcome payload. */
  welcome: Welcome | null = null;

  private _fetch: typeof fetch | undefined;
  private _WebSocket: SocketConstructor | undefined;
  private _listeners = new Map<string, Set<{ callback: Listener }>>();
  private _channels = new Map<string, ChannelState>();
  private _pending = new Map<string, Pending>();
  private _nextId = 1;
  private _token: string | null = null;
  private _wanted = false;
  private _ws: SocketLike | null = null;
  private _welcomed = false;
  private _everWelcomed = false;
  private _attempt = 0;
  private _renewedAfter4001 = false;
  private _timers: Record<string, ReturnType<typeof setTimeout> | undefined> = {};
  private _openGeneration = 0;
  private _pollGeneration = 0;
  private _pollAbort: AbortController | null = null;
  private _pollFailures = 0;
  private _polling = new Set<string>();
  /** The server answered 404 to the multiplexed poll: per-channel polling instead. */
  private _legacyPolling = false;
  private _EventSource: EventSourceConstructor | undefined;
  /** The stream of this degraded period failed: long-poll until the socket is back. */
  private _sseFailed = false;
  private _sseTypes = new Set(PROTOCOL_TYPES);
  /** Adds a listener for one more message type to the open stream. */
  private _sseListen: ((type: string) => void) | null = null;
  private _lastFrameAt = 0;
  /** `leader` or `follower` while sharing one connection between tabs; null otherwise. */
  private _role: "leader" | "follower" | null = null;
  private _tab = randomId();
  private _bus: BroadcastChannel | null = null;
  private _lockAbort: AbortController | null = null;
  private _releaseLock: (() => void) | null = null;
  /** Leader: the channels each follower tab wants, with their unsubscribe functions. */
  private _followerWants = new Map<string, Map<string, Unsubscribe>>();
  private _forwarded = new Map<string, Pending>();
  private _onlineHandler = () => this._online();
  private _offlineHandler = () => this._offline();

  constructor(options: RealtimeOptions) {
    if (!options || typeof options.getToken !== "function") {
      throw new TypeError("RealtimeClient needs options.getToken");
    }
    this.options = { ...DEFAULTS, ...options } as Options;
    this.url = resolveSocketUrl(options.url || "/ws/");
    const base = pageHref() ?? this.url.replace(/^ws/, "http");
    this.pollUrl = options.pollUrl === false ? null
      : options.pollUrl ? new URL(options.pollUrl, base).href : httpUrl(this.url, "/api/realtime/poll/");
    this.eventsUrl = options.pollUrl === false ? null
      : options.eventsUrl ? new URL(options.eventsUrl, base).href : httpUrl(this.url, "/api/realtime/events/");
    this.sseUrl = options.pollUrl === false || options.sseUrl === false ? null
      : options.sseUrl ? new URL(options.sseUrl, base).href : httpUrl(this.url, "/api/realtime/sse/");
    this.ticketUrl = options.ticketUrl ? new URL(options.ticketUrl, base).href : httpUrl(this.url, "/api/realtime/ticket/");
    this._EventSource = options.EventSource || (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    for (const type of options.sseEventTypes || []) this._sseTypes.add(type);
    this.clientId = (options.clientId || `web-${randomId()}`).slice(0, 64);
    this._fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket || (globalThis as { WebSocket?: SocketConstructor }).WebSocket;

    for (const [channel, position] of Object.entries(options.positions || {})) {
      const ch = this._channel(channel);
      ch.epoch = position.epoch;
      ch.offset = position.offset;
    }
  }

  // ---------------------------------------------------------------- public API

  /** Start (or resume) the connection. Safe to call again; it does nothing while active. */
  connect(): void {
    if (this._wanted && !([State.FAILED, State.UNAUTHORIZED, State.IDLE] as string[]).includes(this.state)) return;
    this._wanted = true;
    this._attempt = 0;
    this._renewedAfter4001 = false;
    this._pollFailures = 0;
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onlineHandler);
      globalThis.addEventListener("offline", this._offlineHandler);
    }
    this._setState(State.CONNECTING);
    if (this.options.shareAcrossTabs && tabApis() && this._role === null) {
      void this._joinTabs();
      return;
    }
    void this._open("connect");
  }

  /** Whether this tab follows another tab's connection (`shareAcrossTabs`). */
  get follower(): boolean {
    return this._role === "follower";
  }

  /** Close the connection and stop reconnecting and polling. Positions are kept for `connect()`. */
  disconnect(): void {
    this._wanted = false;
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onlineHandler);
      globalThis.removeEventListener("offline", this._offlineHandler);
    }
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "client disconnect");
    this._leaveTabs();
    this._setState(State.IDLE);
  }

  /** Try again now: from `failed`, `unauthorized`, `degraded` (probe now) or `reconnecting`. */
  retry(): void {
    if (this._role === "follower") {
      this._post({ kind: "request", tab: this._tab, id: `retry-${this._nextId++}`, type: "__retry", data: {} });
      return;
    }
    if (!this._wanted || this.state === State.FAILED || this.state === State.UNAUTHORIZED) {
      this.connect();
      return;
    }
    if (this.state === State.DEGRADED) {
      clearTimeout(this._timers.probe);
      void this._open("connect");
    } else if (this.state === State.RECONNECTING) {
      clearTimeout(this._timers.reconnect);
      void this._open("connect");
    }
  }

  /**
   * Follow a channel. `callback(envelope)` gets every message of it, once, in offset order
   * within a connection. The user channel and `broadcast` are followed automatically by the
   * server; subscribing to them only adds a callback.
   */
  subscribe<T = unknown>(channel: string, callback: (message: Envelope<T>) => void): Unsubscribe {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
    const ch = this._channel(channel);
    const entry = { callback: callback as (message: Envelope<any>) => void };
    const first = !ch.wanted;
    ch.callbacks.add(entry);
    ch.wanted = true;
    if (first && !ch.auto && !ch.server) {
      if (this._role === "follower") this._post({ kind: "want", tab: this._tab, channels: [channel] });
      else if (this._isLive()) this._sendSubscribe(ch);
      else if (this.state === State.DEGRADED) this._restartPolling();
    }
    return () => {
      ch.callbacks.delete(entry);
      if (ch.callbacks.size || !ch.wanted) return;
      if (ch.auto || ch.server) return;
      ch.wanted = false;
      this._channels.delete(channel);
      if (this._role === "follower") this._post({ kind: "unwant", tab: this._tab, channel });
      else if (this._isLive()) this.send("unsubscribe", { channel }).catch(() => {});
    };
  }

  /**
   * Send a command frame and wait for its reply (matched by `reply_to`).
   * Resolves with the reply's `payload`; rejects with a RealtimeError on an `error` frame, a
   * timeout, or when the socket is not connected (`unavailable`: e.g. in `degraded`).
   */
  send<R = any>(type: string, data: Record<string, unknown> = {}): Promise<R> {
    return this._request(type, data);
  }

  /** Run a domain command; resolves with the service's answer (`command_result.payload.result`). */
  async command<R = any>(name: string, args: Record<string, unknown> = {}): Promise<R> {
    const reply = await this._request("command", { payload: { name, args } });
    return reply?.result;
  }

  /**
   * Listen to a client event: `state` (state, info), `message` (envelope), `resync`
   * ({channel, reason, epoch, offset}), `reconnect` ({userId}), `welcome` (payload),
   * `error` (RealtimeError). Returns the function that removes the listener.
   */
  on(event: "state", callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe;
  on(event: "message", callback: (message: Envelope<any>) => void): Unsubscribe;
  on(event: "resync", callback: (event: ResyncEvent) => void): Unsubscribe;
  on(event: "reconnect", callback: (event: { userId: string | null }) => void): Unsubscribe;
  on(event: "welcome", callback: (welcome: Welcome) => void): Unsubscribe;
  on(event: "error", callback: (error: RealtimeError) => void): Unsubscribe;
  on(event: string, callback: Listener): Unsubscribe;
  on(event: string, callback: Listener): Unsubscribe {
    let listeners = this._listeners.get(event);
    if (!listeners) this._listeners.set(event, (listeners = new Set()));
    const entry = { callback };
    listeners.add(entry);
    return () => { this._listeners.get(event)?.delete(entry); };
  }

  /** `callback(state, info)` on every state change. */
  onStateChange(callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe {
    return this.on("state", callback);
  }

  /** `callback({userId})` each time a connection is re-established after a loss. */
  onReconnect(callback: (event: { userId: string | null }) => void): Unsubscribe {
    return this.on("reconnect", callback);
  }

  /** `callback({channel, reason, epoch, offset})` when state must be reloaded over REST. */
  onResync(callback: (event: ResyncEvent) => void): Unsubscribe {
    return this.on("resync", callback);
  }

  /** `callback(envelope)` for messages of one type, on any channel. */
  onMessage<T = any>(type: string, callback: (message: Envelope<T>) => void): Unsubscribe {
    if (!this._sseTypes.has(type)) {
      this._sseTypes.add(type);
      this._sseListen?.(type);
    }
    return this.on("message", (message: Envelope<T>) => { if (message.type === type) callback(message); });
  }

  /** The resume position of every channel: store it to resume across page loads. */
  positions(): Record<string, Position> {
    const out: Record<string, Position> = {};
    for (const [name, ch] of this._channels) {
      if (ch.epoch != null) out[name] = { epoch: ch.epoch, offset: ch.offset };
    }
    return out;
  }

  /** The channels the connection follows (auto, server-subscribed and subscribed). */
  channels(): string[] {
    return [...this._channels.values()].filter((ch) => ch.wanted || ch.auto || ch.server).map((ch) => ch.name);
  }

  // ---------------------------------------------------------------- events and state

  protected _emit(event: string, ...args: unknown[]): void {
    if (event === "resync" && this._role === "leader") this._post({ kind: "resync", event: args[0] as ResyncEvent });
    for (const { callback } of [...(this._listeners.get(event) || [])]) {
      try {
        callback(...args);
      } catch (error) {
        // A failing listener must not break delivery to the others.
        setTimeout(() => { throw error; });
      }
    }
  }

  protected _setState(state: ConnectionState, info: StateInfo = {}): void {
    const same = state === this.state && JSON.stringify(info) === JSON.stringify(this.stateInfo);
    this.state = state;
    this.stateInfo = info;
    if (!same && this._role === "leader") this._post({ kind: "state", state, info });
    if (!same) this._emit("state", state, info);
  }

  private _isLive(): boolean {
    return this._welcomed && this._ws !== null && this._ws.readyState === OPEN;
  }

  private _channel(name: string): ChannelState {
    let ch = this._channels.get(name);
    if (!ch) {
      ch = { name, callbacks: new Set(), wanted: false, auto: false, server: false, epoch: null, offset: -1,
        seen: new Set(), resuming: false };
      this._channels.set(name, ch);
    }
    return ch;
  }

  private _clearTimers(): void {
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key]);
      clearInterval(this._timers[key]);
    }
    this._timers = {};
  }

  // ---------------------------------------------------------------- tokens

  private async _getToken(reason: TokenRequest["reason"]): Promise<string> {
    const token = await this.options.getToken({ reason, previous: this._token });
    if (typeof token !== "string" || !token) throw new RealtimeError("unauthorized", "no access token");
    this._token = token;
    if (!this.userId) {
      const claims = decodeJwt(token);
      const id = claims?.[this.options.userIdClaim];
      if (id != null) this.userId = String(id);
    }
    return token;
  }

  private _unauthorized(reason: string, cause: UnauthorizedCause, code?: number): void {
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "unauthorized");
    const info: StateInfo = { reason, cause };
    if (code !== undefined) info.code = code;
    this._setState(State.UNAUTHORIZED, info);
  }

  // ---------------------------------------------------------------- socket lifecycle

  private _socketUrl(): string {
    const url = new URL(this.url);
    url.searchParams.set("client_id", this.clientId);
    return url.href;
  }

  /** Open a socket; `token`, when given, was just obtained for this attempt. */
  private async _open(reason: TokenRequest["reason"], token: string | null = null): Promise<void> {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.probe);
    const generation = ++this._openGeneration;
    const navigator = (globalThis as { navigator?: Navigator }).navigator;
    if (navigator && navigator.onLine === false) {
      this._offline();
      return;
    }
    try {
      token = token ?? await this._getToken(reason);
    } catch (error) {
      if (generation === this._openGeneration && this._wanted) {
        this._unauthorized(errorMessage(error), reason === "connect" ? "credentials_refused" : "session_expired");
      }
      return;
    }
    if (generation !== this._openGeneration || !this._wanted) return;
    this._closeSocket(CloseCode.NORMAL, "replaced");
    let ws: SocketLike;
    try {
      if (!this._WebSocket) throw new Error("no WebSocket in this environment");
      ws = new this._WebSocket(this._socketUrl(), [SUBPROTOCOL, `bearer.${token}`]);
    } catch (error) {
      this._handleClose({ code: 1006, reason: errorMessage(error) });
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    ws.onmessage = (event) => { if (ws === this._ws) this._onFrame(event.data); };
    ws.onclose = (event) => { if (ws === this._ws) this._handleClose(event); };
    ws.onerror = () => {};
    this._timers.welcome = setTimeout(() => {
      if (ws === this._ws && !this._welcomed) this._dropSocket(CloseCode.HEARTBEAT_TIMEOUT, "no welcome in time");
    }, this.options.connectTimeoutMs);
  }

  /**
   * Close the current socket without reacting to its close event. Always with 1000: browsers
   * refuse any other code below 3000 (`InvalidAccessError`) and would leave the socket open.
   */
  private _closeSocket(_code: number, reason: string): void {
    const ws = this._ws;
    this._forgetSocket();
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(CloseCode.NORMAL, reason.slice(0, 100)); } catch { /* already closing */ }
    }
  }

  /** Drop every piece of state that belonged to the current socket (timers, pending replies). */
  private _forgetSocket(): void {
    this._ws = null;
    this._welcomed = false;
    this._stopHeartbeat();
    clearTimeout(this._timers.welcome);
    clearTimeout(this._timers.refresh);
    this._rejectPending("disconnected", "the connection closed");
  }

  /** Give up on a socket that went silent, and react at once (its close may take minutes). */
  private _dropSocket(code: number, reason: string): void {
    this._closeSocket(code, reason);
    this._handleClose({ code, reason });
  }

  private _handleClose(event: { code: number; reason?: string }): void {
    const code = event.code;
    const reason = event.reason || "";
    const welcomed = this._welcomed;
    this._forgetSocket();
    if (!this._wanted || this.state === State.OFFLINE || this.state === State.UNAUTHORIZED) return;

    if (code === CloseCode.UNAUTHORIZED) {
      if (DEACTIVATED.test(reason)) {
        // No token can fix a deactivated account: say so instead of "session expired".
        this._unauthorized(reason, "account_deactivated", code);
        return;
      }
      void this._renewAndReopen("unauthorized", reason);
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED) {
      void this._renewAndReopen("expired", reason);
      return;
    }
    if (this.state === State.DEGRADED) {
      // A failed probe: keep polling and try the socket again later.
      this._scheduleProbe();
      return;
    }
    if (welcomed) this._attempt = 0;
    if (code === CloseCode.SERVICE_RESTART || code === CloseCode.SLOW_CONSUMER) {
      this._scheduleReconnect({ immediate: true, code, reason });
      return;
    }
    const retryAfter = /retry after (\d+)\s*s/i.exec(reason);
    this._scheduleReconnect({ code, reason, minDelayMs: retryAfter ? Number(retryAfter[1]) * 1000 : 0 });
  }

  /** 4001 / 4011: a new token first; no retry loop with credentials the server refused. */
  private async _renewAndReopen(why: "unauthorized" | "expired", closeReason: string): Promise<void> {
    const refused = this._token;
    const code = why === "expired" ? CloseCode.TOKEN_EXPIRED : CloseCode.UNAUTHORIZED;
    const cause: UnauthorizedCause = why === "expired" || /expired/i.test(closeReason)
      ? "session_expired" : "credentials_refused";
    if (why === "unauthorized" && this._renewedAfter4001) {
      this._unauthorized(closeReason || "the server refused the credentials", cause, code);
      return;
    }
    let token: string;
    try {
      token = await this._getToken(why);
    } catch (error) {
      if (this._wanted) this._unauthorized(errorMessage(error) || closeReason || "the session could not be renewed",
        "session_expired", code);
      return;
    }
    if (!this._wanted) return;
    if (why === "unauthorized") {
      if (token === refused) {
        this._unauthorized(closeReason || "the server refused the credentials", cause, code);
        return;
      }
      this._renewedAfter4001 = true;
    }
    if (this.state !== State.DEGRADED) {
      this._setState(this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
        this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts, code } : {});
    }
    void this._open(why, token);
  }

  private _scheduleReconnect({ immediate = false, minDelayMs = 0, code, reason }:
    { immediate?: boolean; minDelayMs?: number; code: number; reason: string }): void {
    this._attempt += 1;
    const max = this.options.maxAttempts;
    if (this._attempt > max) {
      this._giveUp({ code, reason });
      return;
    }
    const delay = Math.max(minDelayMs, immediate
      ? Math.round(Math.random() * Math.min(1000, this.options.backoffBaseMs))
      : backoffDelay(this.options.backoffBaseMs, this._attempt));
    this._setState(State.RECONNECTING, { attempt: this._attempt, maxAttempts: max, delayMs: delay, code, reason });
    this._timers.reconnect = setTimeout(() => { void this._open("connect"); }, delay);
  }

  private _giveUp(info: StateInfo): void {
    if (this.pollUrl && this._fetch) this._startDegraded(info);
    else this._setState(State.FAILED, info);
  }

  // ---------------------------------------------------------------- online / offline

  private _offline(): void {
    if (!this._wanted || this.state === State.UNAUTHORIZED || this._role === "follower") return;
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "offline");
    this._setState(State.OFFLINE);
  }

  private _online(): void {
    if (!this._wanted || this.state !== State.OFFLINE || this._role === "follower") return;
    this._attempt = 0;
    this._setState(this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
      this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts } : {});
    void this._open("connect");
  }

  // ---------------------------------------------------------------- frames

  private _onFrame(data: unknown): void {
    this._lastFrameAt = Date.now();
    let frame: any;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (typeof frame.channel === "string" && typeof frame.offset === "number") {
      this._onEnvelope(frame as Envelope);
      return;
    }
    if (frame.type === "welcome") {
      this._onWelcome(frame.payload || {});
      return;
    }
    if (frame.reply_to != null && this._pending.has(frame.reply_to)) {
      const pending = this._pending.get(frame.reply_to)!;
      this._pending.delete(frame.reply_to);
      clearTimeout(pending.timer);
      if (frame.type === "error") {
        const { code = "error", message = "request failed" } = frame.payload || {};
        pending.reject(new RealtimeError(code, message, { reply_to: frame.reply_to }));
      } else {
        pending.onReply?.(frame.payload);
        pending.resolve(frame.payload);
      }
      return;
    }
    if (frame.reply_to == null && frame.type === "subscribed" && typeof frame.payload?.channel === "string") {
      this._onServerSubscribed(frame.payload);
      return;
    }
    if (frame.reply_to == null && frame.type === "unsubscribed" && typeof frame.payload?.channel === "string") {
      const ch = this._channels.get(frame.payload.channel);
      if (ch) {
        ch.server = false;
        if (!ch.callbacks.size && !ch.auto) this._channels.delete(ch.name);
      }
      return;
    }
    if (frame.type === "error") {
      const { code = "error", message = "" } = frame.payload || {};
      this._emit("error", new RealtimeError(code, message));
    }
    // Anything else (pong, unknown control frames) is ignored, as the protocol asks.
  }

  /**
   * The server subscribed this socket (e.g. the user joined a team). The channel is remembered
   * so that the next reconnect re-subscribes it with its position; otherwise it would be lost.
   */
  private _onServerSubscribed(payload: Subscribed): void {
    const ch = this._channel(payload.channel);
    ch.server = true;
    if (ch.epoch == null || ch.epoch !== payload.epoch) this._reposition(ch, payload.epoch, payload.offset);
    this._emit("subscribed", { channel: ch.name, server: true });
  }

  private _onWelcome(payload: Welcome): void {
    clearTimeout(this._timers.welcome);
    const reconnected = this._everWelcomed;
    this._welcomed = true;
    this._everWelcomed = true;
    this._attempt = 0;
    this._renewedAfter4001 = false;
    this._pollFailures = 0;
    this._sseFailed = false;
    this.welcome = payload;
    this.userId = payload.user_id != null ? String(payload.user_id) : this.userId;
    this._stopPolling();
    clearTimeout(this._timers.probe);

    for (const [name, position] of Object.entries(payload.channels || {})) {
      const ch = this._channel(name);
      ch.auto = true;
      if (ch.epoch == null) {
        ch.epoch = position.epoch;
        ch.offset = position.offset;
      } else {
        this._sendSubscribe(ch);
      }
    }
    for (const ch of this._channels.values()) {
      if ((ch.wanted || ch.server) && !ch.auto) this._sendSubscribe(ch);
    }
    this._startHeartbeat(this.options.heartbeatS ?? payload.heartbeat_s ?? 25);
    this._scheduleRefresh(payload.expires_at);
    this._emit("welcome", payload);
    this._setState(State.CONNECTED, { connectionId: payload.connection_id });
    if (reconnected) this._emit("reconnect", { userId: this.userId });
  }

  private _sendSubscribe(ch: ChannelState): void {
    const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
    // While a resume is pending, live messages are delivered but do not move the position:
    // the replay that follows the reply fills everything before them.
    ch.resuming = since !== null;
    const data = since ? { channel: ch.name, since } : { channel: ch.name };
    this._request("subscribe", data, (payload) => this._onSubscribed(ch, since, payload)).catch((error) => {
      ch.resuming = false;
      if (error.code === "disconnected") return;
      if (ch.server && (error.code === "forbidden" || error.code === "not_found")) {
        ch.server = false; // no longer a member (e.g. removed from the team while away)
      }
      error.detail = { ...error.detail, channel: ch.name };
      this._emit("error", error);
    });
  }

  private _onSubscribed(ch: ChannelState, since: Position | null, payload: PollAnswer): void {
    ch.resuming = false;
    this._acceptRecovery(ch, since, payload);
    // Recovered: the missed messages follow this reply and move the position themselves.
  }

  /**
   * Apply the position a subscribe reply or a poll answered for `since`; true when the gap
   * was recovered, else the channel restarts at that position (with a `resync` if it had one).
   */
  private _acceptRecovery(ch: ChannelState, since: Position | null, answer: PollAnswer): boolean {
    if (since && answer.recovered && answer.epoch === since.epoch) return true;
    this._reposition(ch, answer.epoch, answer.offset);
    if (since) {
      this._emit("resync", { channel: ch.name, reason: answer.epoch !== since.epoch ? "epoch_changed" : "gap",
        epoch: answer.epoch, offset: answer.offset } satisfies ResyncEvent);
    }
    return false;
  }

  private _reposition(ch: ChannelState, epoch: string, offset: number): void {
    if (ch.epoch !== epoch) ch.seen = new Set();
    ch.epoch = epoch;
    ch.offset = offset;
  }

  /** Deliver an envelope once per (channel, epoch, offset). */
  protected _onEnvelope(message: Envelope): void {
    const ch = this._channel(message.channel);
    if (message.snapshot) {
      // A state snapshot, not a stored message: always delivered, and it marks the position.
      if (ch.epoch !== message.epoch || message.offset > ch.offset) this._reposition(ch, message.epoch, message.offset);
      this._dispatch(ch, message);
      return;
    }
    if (ch.epoch != null && message.epoch !== ch.epoch) {
      // The channel's history was lost while we were connected: what came between is gone.
      this._reposition(ch, message.epoch, message.offset - 1);
      this._emit("resync", { channel: ch.name, reason: "epoch_changed", epoch: message.epoch,
        offset: message.offset } satisfies ResyncEvent);
    } else if (ch.epoch == null) {
      this._reposition(ch, message.epoch, message.offset - 1);
    }
    const duplicate = message.offset <= ch.offset || ch.seen.has(message.offset);
    if (!ch.resuming && message.offset > ch.offset) {
      // A replayed copy of a message already delivered live still moves the position.
      ch.offset = message.offset;
      if (ch.seen.size) for (const offset of ch.seen) if (offset <= ch.offset) ch.seen.delete(offset);
    } else if (ch.resuming && !duplicate) {
      ch.seen.add(message.offset);
      if (ch.seen.size > SEEN_LIMIT) ch.seen.delete(ch.seen.values().next().value as number);
    }
    if (!duplicate) this._dispatch(ch, message);
  }

  private _dispatch(ch: ChannelState, message: Envelope): void {
    if (this._role === "leader") this._post({ kind: "message", message });
    for (const { callback } of [...ch.callbacks]) {
      try {
        callback(message);
      } catch (error) {
        setTimeout(() => { throw error; });
      }
    }
    this._emit("message", message);
  }

  private _request(type: string, data: Record<string, unknown>, onReply?: (payload: any) => void): Promise<any> {
    if (this._role === "follower") return this._forward(type, data);
    if (!this._isLive()) {
      return Promise.reject(new RealtimeError("unavailable", `not connected (${this.state})`));
    }
    const id = `c${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RealtimeError("timeout", `no reply to ${type} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer, onReply });
      try {
        this._ws!.send(JSON.stringify({ ...data, type, id }));
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new RealtimeError("unavailable", errorMessage(error)));
      }
    });
  }

  private _rejectPending(code: string, message: string): void {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(new RealtimeError(code, message));
    }
  }

  // ---------------------------------------------------------------- heartbeat and token refresh

  private _startHeartbeat(heartbeatS: number): void {
    this._stopHeartbeat();
    const intervalMs = Math.max(0.05, heartbeatS) * 1000;
    this._lastFrameAt = Date.now();
    this._timers.ping = setInterval(() => {
      if (this._isLive()) {
        try { this._ws!.send(JSON.stringify({ type: "ping", id: `p${this._nextId++}` })); } catch { /* closing */ }
      }
    }, intervalMs);
    this._timers.dead = setInterval(() => {
      if (this._ws && Date.now() - this._lastFrameAt > 2.5 * intervalMs) {
        this._dropSocket(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
      }
    }, Math.min(intervalMs / 2, 5000));
  }

  private _stopHeartbeat(): void {
    clearInterval(this._timers.ping);
    clearInterval(this._timers.dead);
  }

  private _scheduleRefresh(expiresAt: string | null | undefined): void {
    clearTimeout(this._timers.refresh);
    const expires = expiresAt ? Date.parse(expiresAt) : NaN;
    if (Number.isNaN(expires)) return;
    const remaining = expires - Date.now();
    const lead = Math.min(this.options.refreshLeadMs, remaining / 5);
    const delay = Math.min(2 ** 31 - 1, Math.max(1000, remaining - lead));
    this._timers.refresh = setTimeout(() => { void this._refreshToken(expires); }, delay);
  }

  private async _refreshToken(expires: number): Promise<void> {
    let token: string;
    try {
      token = await this._getToken("refresh");
    } catch (error) {
      // getToken threw: the user must sign in again. Staying "connected" until the server's
      // 4011 would show a live state that can no longer last.
      if (this._wanted) this._unauthorized(errorMessage(error) || "the session could not be renewed", "session_expired");
      return;
    }
    try {
      const reply = await this._request("auth.refresh", { token });
      this._scheduleRefresh(reply?.expires_at);
    } catch (error) {
      if ((error as RealtimeError)?.code === "disconnected" || !this._isLive()) return;
      const code = (error as RealtimeError)?.code;
      if (code === "unauthorized" || code === "forbidden") {
        this._unauthorized((error as RealtimeError).message, DEACTIVATED.test((error as RealtimeError).message)
          ? "account_deactivated" : "session_expired");
        return;
      }
      this._emit("error", error instanceof RealtimeError ? error : new RealtimeError("refresh_failed", String(error)));
      // Try again shortly while the session lasts; past expiry the server closes with 4011.
      if (expires - Date.now() > 5000) this._timers.refresh = setTimeout(() => { void this._refreshToken(expires); }, 5000);
    }
  }

  // ---------------------------------------------------------------- one connection per browser

  private _post(message: TabMessage): void {
    try { this._bus?.postMessage(message); } catch { /* the channel closed */ }
  }

  /** Follow the leader tab, and queue for the lock: the tab that gets it leads. */
  private async _joinTabs(): Promise<void> {
    const apis = tabApis()!;
    try {
      await this._getToken("connect"); // the user id names the lock
    } catch (error) {
      if (this._wanted) this._unauthorized(errorMessage(error), "credentials_refused");
      return;
    }
    if (!this._wanted || this._role !== null) return;
    // Per user and server: another account signed in elsewhere keeps its own connection.
    const name = `renum-realtime:${this.url}:${this.userId ?? "anonymous"}`;
    this._role = "follower";
    this._bus = new apis.Channel(name);
    this._bus.onmessage = (event: MessageEvent<TabMessage>) => this._onTabMessage(event.data);
    this._lockAbort = new AbortController();
    this._post({ kind: "hello", tab: this._tab });
    apis.locks.request(name, { signal: this._lockAbort.signal }, async () => {
      if (!this._wanted || this._role === null) return;
      this._lead();
      await new Promise<void>((resolve) => { this._releaseLock = resolve; });
    }).catch(() => { /* aborted by disconnect() */ });
  }

  /** This tab got the lock: it opens the connection, from the positions it saw as a follower. */
  private _lead(): void {
    this._role = "leader";
    this._rejectForwarded("disconnected", "the leader tab changed");
    this._post({ kind: "leader", tab: this._tab });
    this._attempt = 0;
    this._setState(this._everWelcomed || this._channels.size ? State.RECONNECTING : State.CONNECTING,
      this._channels.size ? { attempt: 1, maxAttempts: this.options.maxAttempts } : {});
    // A fresh token: the one this tab got when it joined may have expired while it followed.
    void this._open("connect");
  }

  private _leaveTabs(): void {
    if (this._role === null) return;
    if (this._role === "follower") this._post({ kind: "bye", tab: this._tab });
    for (const wants of this._followerWants.values()) for (const off of wants.values()) off();
    this._followerWants.clear();
    this._rejectForwarded("disconnected", "the client disconnected");
    this._role = null;
    this._releaseLock?.();
    this._releaseLock = null;
    this._lockAbort?.abort();
    this._lockAbort = null;
    this._bus?.close();
    this._bus = null;
  }

  private _onTabMessage(message: TabMessage): void {
    if (!message || typeof message !== "object" || !this._wanted) return;
    if (this._role === "leader") {
      switch (message.kind) {
        case "hello":
          this._post({ kind: "state", state: this.state, info: this.stateInfo });
          break;
        case "want": {
          let wants = this._followerWants.get(message.tab);
          if (!wants) this._followerWants.set(message.tab, (wants = new Map()));
          for (const channel of message.channels) {
            if (!wants.has(channel)) wants.set(channel, this.subscribe(channel, () => {}));
          }
          break;
        }
        case "unwant":
          this._followerWants.get(message.tab)?.get(message.channel)?.();
          this._followerWants.get(message.tab)?.delete(message.channel);
          break;
        case "bye":
          for (const off of this._followerWants.get(message.tab)?.values() ?? []) off();
          this._followerWants.delete(message.tab);
          break;
        case "request":
          if (message.type === "__retry") {
            this.retry();
            break;
          }
          this._request(message.type, message.data).then(
            (payload) => this._post({ kind: "reply", tab: message.tab, id: message.id, payload }),
            (error: RealtimeError) => this._post({ kind: "reply", tab: message.tab, id: message.id,
              error: { code: error.code ?? "error", message: error.message } }),
          );
          break;
      }
      return;
    }
    if (this._role !== "follower") return;
    switch (message.kind) {
      case "leader": {
        // A new leader knows nothing of this tab: say again what it follows.
        this._rejectForwarded("disconnected", "the leader tab changed");
        const channels = [...this._channels.values()].filter((ch) => ch.wanted && !ch.auto).map((ch) => ch.name);
        if (channels.length) this._post({ kind: "want", tab: this._tab, channels });
        break;
      }
      case "state":
        if (message.state === State.CONNECTED) this._everWelcomed = true;
        this._setState(message.state, { ...message.info, follower: true });
        if (message.state === State.CONNECTED) {
          const channels = [...this._channels.values()].filter((ch) => ch.wanted && !ch.auto).map((ch) => ch.name);
          if (channels.length) this._post({ kind: "want", tab: this._tab, channels });
        }
        break;
      case "message":
        this._onEnvelope(message.message);
        break;
      case "resync": {
        const ch = this._channel(message.event.channel);
        this._reposition(ch, message.event.epoch, message.event.offset);
        this._emit("resync", message.event);
        break;
      }
      case "reply": {
        if (message.tab !== this._tab) break;
        const pending = this._forwarded.get(message.id);
        if (!pending) break;
        this._forwarded.delete(message.id);
        clearTimeout(pending.timer);
        if (message.error) pending.reject(new RealtimeError(message.error.code, message.error.message));
        else pending.resolve(message.payload);
        break;
      }
    }
  }

  /** A follower's request, sent by the leader on its socket. */
  private _forward(type: string, data: Record<string, unknown>): Promise<any> {
    if (this.state !== State.CONNECTED) {
      return Promise.reject(new RealtimeError("unavailable", `not connected (${this.state})`));
    }
    const id = `${this._tab}:${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._forwarded.delete(id);
        reject(new RealtimeError("timeout", `no reply to ${type} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this._forwarded.set(id, { resolve, reject, timer });
      this._post({ kind: "request", tab: this._tab, id, type, data });
    });
  }

  private _rejectForwarded(code: string, message: string): void {
    const pending = [...this._forwarded.values()];
    this._forwarded.clear();
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(new RealtimeError(code, message));
    }
  }

  // ---------------------------------------------------------------- HTTP fallback

  private _pollChannels(): string[] {
    const channels = new Set(["broadcast"]);
    if (this.userId) channels.add(`user:${this.userId}`);
    for (const ch of this._channels.values()) if (ch.wanted || ch.auto || ch.server) channels.add(ch.name);
    return [...channels];
  }

  private _startDegraded(info: StateInfo): void {
    this._stopPolling();
    this._setState(State.DEGRADED, { ...info, polling: true, listening: false,
      transport: this._legacyPolling ? "events" : this._useSse() ? "sse" : "poll" });
    this._startPolling();
    this._scheduleProbe();
  }

  private _startPolling(): void {
    this._pollAbort = new AbortController();
    const generation = ++this._pollGeneration;
    if (this._legacyPolling) {
      for (const name of this._pollChannels()) this._pollChannel(name, generation);
    } else if (this._useSse()) {
      void this._sseLoop(generation);
    } else {
      void this._pollLoop(generation);
    }
  }

  private _useSse(): boolean {
    return Boolean(this.sseUrl && this.pollUrl && this._EventSource && this._fetch) && !this._sseFailed
      && !this._legacyPolling;
  }

  /** A new channel while degraded: the one poll or stream restarts with it (legacy: one more loop). */
  private _restartPolling(): void {
    if (this._legacyPolling) {
      for (const name of this._pollChannels()) this._pollChannel(name, this._pollGeneration);
      return;
    }
    this._stopPolling();
    this._startPolling();
  }

  private _stopPolling(): void {
    this._pollGeneration += 1;
    this._pollAbort?.abort();
    this._sseListen = null;
    this._pollAbort = null;
    this._polling.clear();
  }

  /** The HTTP transport follows every channel from a known position (see `StateInfo.listening`). */
  private _markListening(): void {
    if (this.state === State.DEGRADED && !this.stateInfo.listening) {
      this._setState(State.DEGRADED, { ...this.stateInfo, listening: true });
    }
  }

  private _scheduleProbe(): void {
    clearTimeout(this._timers.probe);
    const delay = Math.round(this.options.probeIntervalMs * (0.8 + Math.random() * 0.4));
    this._timers.probe = setTimeout(() => { if (this.state === State.DEGRADED) void this._open("connect"); }, delay);
  }

  private _pollFailed(error: unknown): boolean {
    this._pollFailures += 1;
    if (this._pollFailures >= this.options.maxPollFailures) {
      this._stopPolling();
      clearTimeout(this._timers.probe);
      this._setState(State.FAILED, { reason: `polling failed: ${errorMessage(error)}` });
      return true;
    }
    return false;
  }

  private async _authorizedFetch(url: string, init: RequestInit, renewed: { done: boolean }): Promise<Response | null> {
    const token = await this._tokenForPolling();
    const response = await this._fetch!(url, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
    if (response.status === 401) {
      if (renewed.done) throw new RealtimeError("unauthorized", "the server refused the credentials");
      renewed.done = true;
      await this._getToken("unauthorized");
      return null;
    }
    return response;
  }

  /** The multiplexed long poll: one request for every channel (v1.1 `POST /api/realtime/poll/`). */
  private async _pollLoop(generation: number): Promise<void> {
    const signal = this._pollAbort?.signal;
    let failures = 0;
    const renewed = { done: false };
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    while (current()) {
      const names = this._pollChannels();
      const since: Record<string, Position | null> = {};
      for (const name of names) {
        const ch = this._channel(name);
        since[name] = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
      }
      let waitMs = 0;
      try {
        const response = await this._authorizedFetch(this.pollUrl!, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ channels: since, timeout: this.options.pollTimeoutS }),
          signal,
        }, renewed);
        if (!current()) return;
        if (response === null) continue;
        if (response.status === 404 || response.status === 405) {
          // A server without the multiplexed poll (protocol v1): one loop per channel.
          this._legacyPolling = true;
          this._setState(State.DEGRADED, { ...this.stateInfo, transport: "events", listening: false });
          this._stopPolling();
          this._startPolling();
          return;
        }
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `poll answered ${response.status}`);
        const body = await response.json() as { channels?: Record<string, PollAnswer> };
        if (!current()) return;
        renewed.done = false;
        failures = 0;
        this._pollFailures = 0;
        let delivered = 0;
        for (const [name, answer] of Object.entries(body.channels || {})) {
          if (!(name in since)) continue;
          if (answer.error) {
            this._onPollRefused(name, answer.error.code, answer.error.message);
            continue;
          }
          delivered += answer.messages?.length ?? 0;
          this._applyPoll(this._channel(name), since[name], answer);
        }
        this._markListening();
        // The server's pace when it says one (0: poll again at once); else a second.
        const header = response.headers.get("X-Poll-Interval");
        const interval = header === null || header === "" ? NaN : Number(header);
        waitMs = delivered ? 0 : (Number.isFinite(interval) && interval >= 0 ? interval * 1000 : 1000);
      } catch (error) {
        if (!current()) return;
        failures += 1;
        const backoff = this._afterPollError(error, failures);
        if (backoff === null) return;
        waitMs = backoff;
      }
      if (waitMs) await sleep(waitMs, signal);
    }
  }

  /** What a failed poll request means for its loop: null to stop (aborted, credentials refused,
   *  or degraded mode given up), else how long to back off before the next request. */
  private _afterPollError(error: unknown, failures: number): number | null {
    if ((error as Error)?.name === "AbortError") return null;
    if ((error as RealtimeError)?.code === "unauthorized") {
      this._unauthorized((error as RealtimeError).message, "session_expired");
      return null;
    }
    if (this._pollFailed(error)) return null;
    return backoffDelay(this.options.backoffBaseMs, Math.min(failures, 5));
  }

  private _onPollRefused(name: string, code: string, message: string): void {
    const ch = this._channel(name);
    ch.server = false;
    if (!ch.callbacks.size) ch.wanted = false;
    this._emit("error", new RealtimeError(code, message || `cannot read ${name}`, { channel: name }));
  }

  private _pollChannel(name: string, generation: number): void {
    if (this._polling.has(name)) return;
    this._polling.add(name);
    void this._eventsLoop(name, generation).finally(() => {
      if (generation === this._pollGeneration) this._polling.delete(name);
    });
  }

  /** Per-channel long poll (`GET /api/realtime/events/`), for servers without `/poll/`. */
  private async _eventsLoop(name: string, generation: number): Promise<void> {
    const signal = this._pollAbort?.signal;
    let failures = 0;
    const renewed = { done: false };
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    while (current()) {
      const ch = this._channel(name);
      if (!ch.wanted && !ch.auto && !ch.server && name !== "broadcast" && name !== `user:${this.userId}`) return;
      const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
      const url = new URL(this.eventsUrl!);
      url.searchParams.set("channel", name);
      url.searchParams.set("timeout", String(this.options.pollTimeoutS));
      if (since) url.searchParams.set("since", `${since.epoch}:${since.offset}`);
      let waitMs = 0;
      try {
        const response = await this._authorizedFetch(url.href, { signal }, renewed);
        if (!current()) return;
        if (response === null) continue;
        if (response.status === 403 || response.status === 404) {
          this._onPollRefused(name, response.status === 403 ? "forbidden" : "not_found", `cannot read ${name}`);
          return;
        }
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `events answered ${response.status}`);
        const body = await response.json() as PollAnswer;
        if (!current()) return;
        renewed.done = false;
        failures = 0;
        this._pollFailures = 0;
        this._applyPoll(ch, since, body);
        if (this._pollChannels().every((other) => this._channel(other).epoch != null)) this._markListening();
        const interval = Number(response.headers.get("X-Poll-Interval"));
        waitMs = body.messages?.length ? 0 : (Number.isFinite(interval) && interval > 0 ? interval * 1000 : 1000);
      } catch (error) {
        if (!current()) return;
        failures += 1;
        const backoff = this._afterPollError(error, failures);
        if (backoff === null) return;
        waitMs = backoff;
      }
      if (waitMs) await sleep(waitMs, signal);
    }
  }

  private async _tokenForPolling(): Promise<string> {
    const claims = this._token ? decodeJwt(this._token) : null;
    const expiresSoon = !claims?.exp || claims.exp * 1000 - Date.now() < 30000;
    return expiresSoon ? this._getToken(this._token ? "refresh" : "connect") : this._token!;
  }

  /**
   * The degraded mode over one server-sent events stream for every channel (v1.1
   * `GET /api/realtime/sse/`), with a one-time ticket per opening (EventSource sends no
   * headers). The browser's own reconnect would reuse a spent ticket, so every end of the
   * stream closes it and a new one opens with a fresh ticket and the last cursor (`?since=`).
   * A stream that keeps failing before `ready` hands over to the long poll.
   */
  private async _sseLoop(generation: number): Promise<void> {
    const signal = this._pollAbort?.signal;
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    const names = this._pollChannels();
    const renewed = { done: false };
    const cursor = { value: null as string | null };
    let failures = 0;
    let quickEnds = 0;
    while (current()) {
      let outcome: "ended" | "failed";
      const startedAt = Date.now();
      try {
        const response = await this._authorizedFetch(this.ticketUrl, { method: "POST", signal }, renewed);
        if (!current()) return;
        if (response === null) continue;
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `ticket answered ${response.status}`);
        const { ticket } = await response.json() as { ticket: string };
        if (!current()) return;
        renewed.done = false;
        outcome = await this._sseStream(names, ticket, cursor, generation, renewed);
      } catch (error) {
        if (!current() || (error as Error)?.name === "AbortError") return;
        if ((error as RealtimeError)?.code === "unauthorized") {
          this._unauthorized((error as RealtimeError).message, "session_expired");
          return;
        }
        outcome = "failed";
      }
      if (!current()) return;
      if (outcome === "ended") {
        failures = 0;
        // A stream that keeps ending at once (a proxy's short timeout) is reopened with a backoff.
        quickEnds = Date.now() - startedAt < 1000 ? quickEnds + 1 : 0;
        if (quickEnds > 1) await sleep(backoffDelay(this.options.backoffBaseMs, Math.min(quickEnds - 1, 5)), signal);
        continue;
      }
      failures += 1;
      if (failures >= MAX_SSE_FAILURES) {
        // The stream does not get through (a proxy that buffers it, an old server): long-poll.
        this._sseFailed = true;
        this._setState(State.DEGRADED, { ...this.stateInfo, transport: "poll", listening: false });
        void this._pollLoop(generation);
        return;
      }
      await sleep(backoffDelay(this.options.backoffBaseMs, failures), signal);
    }
  }

  /**
   * One stream until it ends: "ended" after `ready` (reopen from the cursor), "failed" before.
   * `ready` gives each channel's position on the server: where one differs from the client's
   * (a stream opened without a cursor starts at the current positions), one poll with timeout 0
   * from the client's positions catches up (or answers `recovered: false`: a resync) while the
   * stream's events wait; then they are applied, de-duplicated by (channel, epoch, offset).
   */
  private _sseStream(names: string[], ticket: string, cursor: { value: string | null }, generation: number,
    renewed: { done: boolean }): Promise<"ended" | "failed"> {
    return new Promise((resolve) => {
      const url = new URL(this.sseUrl!);
      for (const name of names) url.searchParams.append("channel", name);
      url.searchParams.set("ticket", ticket);
      if (cursor.value) url.searchParams.set("since", cursor.value);
      const source = new this._EventSource!(url.href);
      const signal = this._pollAbort?.signal;
      let opened = false;
      let held: { kind: string; event: MessageEvent<string> }[] | null = null;
      let done = false;
      const finish = (outcome: "ended" | "failed") => {
        if (done) return;
        done = true;
        source.close();
        signal?.removeEventListener("abort", aborted);
        if (this._sseListen === listen) this._sseListen = null;
        resolve(outcome);
      };
      const aborted = () => finish("ended");
      signal?.addEventListener("abort", aborted);
      const live = () => generation === this._pollGeneration && this.state === State.DEGRADED;

      const apply = (kind: string, event: MessageEvent<string>) => {
        let data: any;
        try { data = JSON.parse(event.data); } catch { return; }
        if (kind === "channel_error") {
          this._onPollRefused(String(data.channel), String(data.code), String(data.message ?? ""));
        } else if (kind === "resync") {
          const ch = this._channel(String(data.channel));
          // Already repositioned there (the catch-up poll answered `recovered: false`): once.
          if (!(ch.epoch === data.epoch && ch.offset >= data.offset)) {
            const reason = ch.epoch !== data.epoch ? "epoch_changed" : "gap";
            this._reposition(ch, data.epoch, data.offset);
            this._emit("resync", { channel: ch.name, reason, epoch: data.epoch, offset: data.offset } satisfies ResyncEvent);
          }
        } else if (data && typeof data === "object" && typeof data.channel === "string") {
          this._onEnvelope(data as Envelope);
        }
        if (event.lastEventId) cursor.value = event.lastEventId;
      };
      const on = (kind: string) => (event: MessageEvent<string>) => {
        if (done) return;
        if (!live()) { finish("ended"); return; }
        if (held) held.push({ kind, event });
        else apply(kind, event);
      };

      source.addEventListener("ready", (event) => {
        if (done) return;
        if (!live()) { finish("ended"); return; }
        opened = true;
        this._pollFailures = 0;
        let data: { channels?: Record<string, { epoch: string; offset: number; recovered: boolean }> };
        try { data = JSON.parse(event.data); } catch { finish("failed"); return; }
        const behind: string[] = [];
        for (const [name, position] of Object.entries(data.channels || {})) {
          const ch = this._channel(name);
          if (ch.epoch == null) this._reposition(ch, position.epoch, position.offset); // new: starts there
          else if (!(position.epoch === ch.epoch && (position.recovered || position.offset === ch.offset))) behind.push(name);
        }
        if (event.lastEventId) cursor.value = event.lastEventId;
        if (!behind.length) { this._markListening(); return; }
        held = [];
        void this._catchUp(behind, renewed).then(() => {
          const waiting = held || [];
          held = null;
          if (done || !live()) return;
          for (const { kind, event: next } of waiting) apply(kind, next);
          this._markListening();
        }, (error) => {
          if ((error as RealtimeError)?.code === "unauthorized") {
            this._unauthorized((error as RealtimeError).message, "session_expired");
          }
          finish("failed");
        });
      });
      source.addEventListener("resync", on("resync"));
      source.addEventListener("channel_error", on("channel_error"));
      const listen = (type: string) => source.addEventListener(type, on("envelope"));
      for (const type of this._sseTypes) listen(type);
      this._sseListen = listen;
      // Errors and ends alike: the browser would retry with the spent ticket.
      source.onerror = () => finish(opened ? "ended" : "failed");
    });
  }

  /** One multiplexed poll with timeout 0 from the client's positions of `names`. */
  private async _catchUp(names: string[], renewed: { done: boolean }): Promise<void> {
    const since: Record<string, Position | null> = {};
    for (const name of names) {
      const ch = this._channel(name);
      since[name] = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
    }
    const init = { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channels: since, timeout: 0 }), signal: this._pollAbort?.signal };
    const response = await this._authorizedFetch(this.pollUrl!, init, renewed)
      ?? await this._authorizedFetch(this.pollUrl!, init, renewed);
    if (!response?.ok) throw new RealtimeError(`http_${response?.status}`, `poll answered ${response?.status}`);
    const body = await response.json() as { channels?: Record<string, PollAnswer> };
    for (const [name, answer] of Object.entries(body.channels || {})) {
      if (!(name in since)) continue;
      if (answer.error) this._onPollRefused(name, answer.error.code, answer.error.message);
      else this._applyPoll(this._channel(name), since[name], answer);
    }
  }

  private _applyPoll(ch: ChannelState, since: Position | null, body: PollAnswer): void {
    if (!this._acceptRecovery(ch, since, body)) return;
    for (const message of body.messages || []) this._onEnvelope(message);
    // Recovery is all or nothing up to the head, so the head is the new position (messages
    // addressed to other users are left out and must not be waited for).
    if (body.offset > ch.offset) ch.offset = body.offset;
  }
}

function errorMessage(error: unknown): string {
  if (error && typeof error === "object" && "message" in error) return String((error as Error).message);
  return String(error);
}

export default RealtimeClient;
