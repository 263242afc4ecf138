/**
 * Renum realtime client: protocol v1 (see docs/protocol.md and docs/client.md).
 *
 * A dependency-free ES module for browsers (a plain page or a Next.js app). One
 * `RealtimeClient` keeps one WebSocket, and gives the application:
 *   - channel subscriptions that survive reconnects: the last (epoch, offset) of every channel
 *     is remembered and sent back as `since`, so the server replays what was missed; when it
 *     cannot (`recovered: false`, or the epoch changed) a `resync` event tells the application
 *     to reload its state over REST;
 *   - de-duplication by (channel, epoch, offset), so a message is delivered once;
 *   - request/reply (`send`, `command`) matched by `reply_to`;
 *   - heartbeat, token refresh before expiry, reconnection with exponential backoff and the
 *     close-code rules of the protocol;
 *   - a REST long-polling fallback (`degraded` state) after persistent WebSocket failure,
 *     continuing from the same positions and probing the WebSocket to go back.
 *
 * @module renum/realtime
 */

/**
 * Connection states.
 * @readonly
 * @enum {string}
 */
export const State = Object.freeze({
  /** Not started, or stopped by `disconnect()`. */
  IDLE: "idle",
  /** Opening the first socket. */
  CONNECTING: "connecting",
  /** Welcomed by the server: live. */
  CONNECTED: "connected",
  /** The socket dropped; attempt `info.attempt` of `info.maxAttempts` is scheduled or running. */
  RECONNECTING: "reconnecting",
  /** The WebSocket keeps failing: messages arrive by REST long polling; the socket is probed. */
  DEGRADED: "degraded",
  /** Gave up (socket and polling failed); `retry()` starts again. */
  FAILED: "failed",
  /** The browser reports no network; the client resumes when it comes back. */
  OFFLINE: "offline",
  /** The credentials were refused and `getToken` could not renew them: log in again. */
  UNAUTHORIZED: "unauthorized",
});

/** The subprotocol of protocol v1. */
export const SUBPROTOCOL = "renum.v1";

/** Close codes of the protocol (PROTOCOL.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  SERVICE_RESTART: 1012,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  POLICY_VIOLATION: 4008,
  SLOW_CONSUMER: 4009,
  TOKEN_EXPIRED: 4011,
  RATE_LIMITED: 4029,
  /** Used by this client when it drops a socket that went silent. */
  HEARTBEAT_TIMEOUT: 4000,
});

/** A failed request, an `error` frame, or a lost connection. */
export class RealtimeError extends Error {
  /**
   * @param {string} code protocol error code (`forbidden`, `not_found`...) or a client code
   *   (`unavailable`, `timeout`, `disconnected`, `unauthorized`, `http_<status>`)
   * @param {string} message
   * @param {Record<string, unknown>} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    this.detail = detail;
  }
}

/**
 * @typedef {Object} Envelope
 * @property {string} type
 * @property {string} channel
 * @property {number} offset
 * @property {string} epoch
 * @property {string} id
 * @property {string} timestamp
 * @property {string} sender
 * @property {*} payload
 * @property {string|string[]} [target]
 * @property {boolean} [snapshot] a channel's current state sent on subscribe (not a stored message)
 */

/**
 * @typedef {Object} TokenRequest
 * @property {"connect"|"refresh"|"expired"|"unauthorized"} reason why a token is needed:
 *   `connect` may return a cached token; the others need a new one.
 * @property {string|null} previous the token that was used until now
 */

/**
 * @typedef {Object} RealtimeOptions
 * @property {string} url WebSocket URL, absolute (`wss://host/ws/`) or a path (`/ws/`).
 * @property {(request: TokenRequest) => Promise<string>|string} getToken returns an access JWT.
 * @property {typeof fetch} [fetch] for the polling fallback (default: global fetch).
 * @property {string|false} [pollUrl] REST events URL (default: `/api/realtime/events/` on the
 *   socket's host); `false` disables the fallback (then persistent failure means `failed`).
 * @property {typeof WebSocket} [WebSocket] constructor (default: global WebSocket).
 * @property {number} [maxAttempts=5] reconnect attempts before falling back.
 * @property {number} [backoffBaseMs=1000] first backoff delay; doubled per attempt.
 * @property {number} [connectTimeoutMs=10000] a socket not welcomed by then counts as failed.
 * @property {number} [requestTimeoutMs=10000] `send()` rejects with `timeout` after this.
 * @property {number} [heartbeatS] overrides the server's `heartbeat_s`.
 * @property {number} [refreshLeadMs=60000] refresh the token this long before it expires.
 * @property {number} [pollTimeoutS=25] long-poll wait.
 * @property {number} [probeIntervalMs=30000] in `degraded`, try the socket again this often.
 * @property {number} [maxPollFailures=5] consecutive polling failures before `failed`.
 * @property {Record<string, {epoch: string, offset: number}>} [positions] resume from these.
 * @property {string} [userIdClaim="user_id"] JWT claim with the user id (to poll `user:<id>`
 *   when the socket never opened).
 */

const DEFAULTS = {
  maxAttempts: 5,
  backoffBaseMs: 1000,
  connectTimeoutMs: 10000,
  requestTimeoutMs: 10000,
  heartbeatS: undefined,
  refreshLeadMs: 60000,
  pollTimeoutS: 25,
  probeIntervalMs: 30000,
  maxPollFailures: 5,
  userIdClaim: "user_id",
};

/** How many delivered offsets per channel are remembered beyond the resume position. */
const SEEN_LIMIT = 2048;

/**
 * Decode a JWT's claims without verifying it (the server verifies); null when unreadable.
 * @param {string} token
 * @returns {Record<string, any>|null}
 */
export function decodeJwt(token) {
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
function backoffDelay(baseMs, attempt) {
  return Math.round(baseMs * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4));
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function resolveSocketUrl(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const base = globalThis.location;
  if (!base) throw new RealtimeError("invalid_url", `cannot resolve ${url} without a location`);
  const absolute = new URL(url, base.href);
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
  return absolute.href;
}

function defaultPollUrl(socketUrl) {
  const url = new URL(socketUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = "/api/realtime/events/";
  url.search = "";
  return url.href;
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
  /** @param {RealtimeOptions} options */
  constructor(options) {
    if (!options || typeof options.getToken !== "function") {
      throw new TypeError("RealtimeClient needs options.getToken");
    }
    /** @type {Required<RealtimeOptions>} */
    this.options = { ...DEFAULTS, ...options };
    this.url = resolveSocketUrl(options.url || "/ws/");
    this.pollUrl = options.pollUrl === false ? null : (options.pollUrl
      ? new URL(options.pollUrl, globalThis.location?.href ?? this.url.replace(/^ws/, "http")).href
      : defaultPollUrl(this.url));
    this._fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket || globalThis.WebSocket;

    /** @type {string} */
    this.state = State.IDLE;
    /** Details of the current state: attempt, maxAttempts, delayMs, code, reason. */
    this.stateInfo = {};
    /** The user id from the welcome (or the token), once known. */
    this.userId = null;
    /** The last welcome payload. */
    this.welcome = null;

    this._listeners = new Map();
    /** @type {Map<string, ChannelState>} */
    this._channels = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._token = null;
    this._wanted = false;
    this._ws = null;
    this._welcomed = false;
    this._everWelcomed = false;
    this._attempt = 0;
    this._renewedAfter4001 = false;
    this._timers = {};
    this._pollGeneration = 0;
    this._pollAbort = null;
    this._pollFailures = 0;
    this._polling = new Set();
    this._onlineHandler = () => this._online();
    this._offlineHandler = () => this._offline();

    for (const [channel, position] of Object.entries(options.positions || {})) {
      const ch = this._channel(channel);
      ch.epoch = position.epoch;
      ch.offset = position.offset;
    }
  }

  // ---------------------------------------------------------------- public API

  /** Start (or resume) the connection. Safe to call again; it does nothing while active. */
  connect() {
    if (this._wanted && ![State.FAILED, State.UNAUTHORIZED, State.IDLE].includes(this.state)) return;
    this._wanted = true;
    this._attempt = 0;
    this._renewedAfter4001 = false;
    this._pollFailures = 0;
    if (globalThis.addEventListener) {
      globalThis.addEventListener("online", this._onlineHandler);
      globalThis.addEventListener("offline", this._offlineHandler);
    }
    this._setState(State.CONNECTING);
    this._open("connect");
  }

  /** Close the connection and stop reconnecting and polling. Positions are kept for `connect()`. */
  disconnect() {
    this._wanted = false;
    if (globalThis.removeEventListener) {
      globalThis.removeEventListener("online", this._onlineHandler);
      globalThis.removeEventListener("offline", this._offlineHandler);
    }
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "client disconnect");
    this._setState(State.IDLE);
  }

  /** Try again now: from `failed`, `unauthorized`, `degraded` (probe now) or `reconnecting`. */
  retry() {
    if (!this._wanted || [State.FAILED, State.UNAUTHORIZED].includes(this.state)) {
      this.connect();
      return;
    }
    if (this.state === State.DEGRADED) {
      clearTimeout(this._timers.probe);
      this._open("connect");
    } else if (this.state === State.RECONNECTING) {
      clearTimeout(this._timers.reconnect);
      this._open("connect");
    }
  }

  /**
   * Follow a channel. `callback(envelope)` gets every message of it, once, in offset order
   * within a connection. The user channel and `broadcast` are followed automatically by the
   * server; subscribing to them only adds a callback.
   * @param {string} channel
   * @param {(message: Envelope) => void} callback
   * @returns {() => void} unsubscribe
   */
  subscribe(channel, callback) {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
    const ch = this._channel(channel);
    const entry = { callback };
    const first = !ch.wanted;
    ch.callbacks.add(entry);
    ch.wanted = true;
    if (first && !ch.auto) {
      if (this._isLive()) this._sendSubscribe(ch);
      else if (this.state === State.DEGRADED) this._pollChannel(channel);
    }
    return () => {
      ch.callbacks.delete(entry);
      if (ch.callbacks.size || !ch.wanted) return;
      ch.wanted = false;
      if (ch.auto) return;
      this._channels.delete(channel);
      if (this._isLive()) this.send("unsubscribe", { channel }).catch(() => {});
    };
  }

  /**
   * Send a command frame and wait for its reply (matched by `reply_to`).
   * Resolves with the reply's `payload`; rejects with a RealtimeError on an `error` frame, a
   * timeout, or when the socket is not connected (`unavailable`: e.g. in `degraded`).
   * @param {string} type `subscribe`, `unsubscribe`, `ping`, `auth.refresh`, `publish`, `command`
   * @param {Record<string, unknown>} [data] the command's fields
   * @returns {Promise<any>}
   */
  send(type, data = {}) {
    return this._request(type, data);
  }

  /**
   * Run a domain command (`{"type": "command", "payload": {name, args}}`).
   * Resolves with the service's answer (`command_result.payload.result`).
   * @param {string} name e.g. `notification.mark_read`
   * @param {Record<string, unknown>} [args]
   * @returns {Promise<any>}
   */
  async command(name, args = {}) {
    const reply = await this._request("command", { payload: { name, args } });
    return reply?.result;
  }

  /**
   * Listen to a client event: `state` (state, info), `message` (envelope), `resync`
   * ({channel, reason, epoch, offset}), `reconnect` ({userId}), `welcome` (payload),
   * `error` (RealtimeError).
   * @param {string} event
   * @param {(...args: any[]) => void} callback
   * @returns {() => void} remove the listener
   */
  on(event, callback) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    const entry = { callback };
    this._listeners.get(event).add(entry);
    return () => this._listeners.get(event)?.delete(entry);
  }

  /** `callback(state, info)` on every state change. @returns {() => void} */
  onStateChange(callback) { return this.on("state", callback); }

  /** `callback({userId})` each time a connection is re-established after a loss. @returns {() => void} */
  onReconnect(callback) { return this.on("reconnect", callback); }

  /** `callback({channel, reason, epoch, offset})` when state must be reloaded over REST. @returns {() => void} */
  onResync(callback) { return this.on("resync", callback); }

  /**
   * `callback(envelope)` for messages of one type, on any channel (e.g. `notification` on the
   * user channel). @returns {() => void}
   */
  onMessage(type, callback) {
    return this.on("message", (message) => { if (message.type === type) callback(message); });
  }

  /** The resume position of every channel: store it to resume across page loads. */
  positions() {
    const out = {};
    for (const [name, ch] of this._channels) {
      if (ch.epoch != null) out[name] = { epoch: ch.epoch, offset: ch.offset };
    }
    return out;
  }

  // ---------------------------------------------------------------- events and state

  _emit(event, ...args) {
    for (const { callback } of [...(this._listeners.get(event) || [])]) {
      try {
        callback(...args);
      } catch (error) {
        // A failing listener must not break delivery to the others.
        setTimeout(() => { throw error; });
      }
    }
  }

  _setState(state, info = {}) {
    const same = state === this.state && JSON.stringify(info) === JSON.stringify(this.stateInfo);
    this.state = state;
    this.stateInfo = info;
    if (!same) this._emit("state", state, info);
  }

  _isLive() {
    return this._welcomed && this._ws && this._ws.readyState === 1;
  }

  _channel(name) {
    let ch = this._channels.get(name);
    if (!ch) {
      ch = { name, callbacks: new Set(), wanted: false, auto: false, epoch: null, offset: -1, seen: new Set(),
        resuming: false };
      this._channels.set(name, ch);
    }
    return ch;
  }

  _clearTimers() {
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key]);
      clearInterval(this._timers[key]);
    }
    this._timers = {};
  }

  // ---------------------------------------------------------------- tokens

  async _getToken(reason) {
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

  _unauthorized(reason) {
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "unauthorized");
    this._setState(State.UNAUTHORIZED, { reason });
  }

  // ---------------------------------------------------------------- socket lifecycle

  /** Open a socket; `token`, when given, was just obtained for this attempt. */
  async _open(reason, token = null) {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.probe);
    const generation = (this._openGeneration = (this._openGeneration || 0) + 1);
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      this._offline();
      return;
    }
    try {
      token = token ?? await this._getToken(reason);
    } catch (error) {
      if (generation === this._openGeneration && this._wanted) this._unauthorized(error?.message || String(error));
      return;
    }
    if (generation !== this._openGeneration || !this._wanted) return;
    this._closeSocket(CloseCode.NORMAL, "replaced");
    let ws;
    try {
      ws = new this._WebSocket(this.url, [SUBPROTOCOL, `bearer.${token}`]);
    } catch (error) {
      this._handleClose({ code: 1006, reason: String(error?.message || error) });
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

  /** Close the current socket without reacting to its close event. */
  _closeSocket(code, reason) {
    const ws = this._ws;
    this._forgetSocket();
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(code, reason); } catch { /* already closing */ }
    }
  }

  /** Drop every piece of state that belonged to the current socket (timers, pending replies). */
  _forgetSocket() {
    this._ws = null;
    this._welcomed = false;
    this._stopHeartbeat();
    clearTimeout(this._timers.welcome);
    clearTimeout(this._timers.refresh);
    this._rejectPending("disconnected", "the connection closed");
  }

  /** Give up on a socket that went silent, and react at once (its close may take minutes). */
  _dropSocket(code, reason) {
    this._closeSocket(code, reason);
    this._handleClose({ code, reason });
  }

  _handleClose(event) {
    const code = event.code;
    const reason = event.reason || "";
    const welcomed = this._welcomed;
    this._forgetSocket();
    if (!this._wanted || this.state === State.OFFLINE || this.state === State.UNAUTHORIZED) return;

    if (code === CloseCode.UNAUTHORIZED) {
      this._renewAndReopen("unauthorized", reason);
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED) {
      this._renewAndReopen("expired", reason);
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
  async _renewAndReopen(why, closeReason) {
    const refused = this._token;
    if (why === "unauthorized" && this._renewedAfter4001) {
      this._unauthorized(closeReason || "the server refused the credentials");
      return;
    }
    let token;
    try {
      token = await this._getToken(why);
    } catch (error) {
      if (this._wanted) this._unauthorized(error?.message || closeReason || "the session could not be renewed");
      return;
    }
    if (!this._wanted) return;
    if (why === "unauthorized") {
      if (token === refused) {
        this._unauthorized(closeReason || "the server refused the credentials");
        return;
      }
      this._renewedAfter4001 = true;
    }
    if (this.state !== State.DEGRADED) {
      this._setState(this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
        this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts, code: why === "expired" ? 4011 : 4001 } : {});
    }
    this._open(why, token);
  }

  _scheduleReconnect({ immediate = false, minDelayMs = 0, code, reason }) {
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
    this._timers.reconnect = setTimeout(() => this._open("connect"), delay);
  }

  _giveUp(info) {
    if (this.pollUrl && this._fetch) this._startDegraded(info);
    else this._setState(State.FAILED, info);
  }

  // ---------------------------------------------------------------- online / offline

  _offline() {
    if (!this._wanted || this.state === State.UNAUTHORIZED) return;
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.GOING_AWAY, "offline");
    this._setState(State.OFFLINE);
  }

  _online() {
    if (!this._wanted || this.state !== State.OFFLINE) return;
    this._attempt = 0;
    this._setState(this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
      this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts } : {});
    this._open("connect");
  }

  // ---------------------------------------------------------------- frames

  _onFrame(data) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (typeof frame.channel === "string" && typeof frame.offset === "number") {
      this._onEnvelope(frame);
      return;
    }
    if (frame.type === "welcome") {
      this._onWelcome(frame.payload || {});
      return;
    }
    if (frame.reply_to != null && this._pending.has(frame.reply_to)) {
      const pending = this._pending.get(frame.reply_to);
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
    if (frame.type === "error") {
      const { code = "error", message = "" } = frame.payload || {};
      this._emit("error", new RealtimeError(code, message));
    }
    // Anything else (pong, unknown control frames) is ignored, as the protocol asks.
  }

  _onWelcome(payload) {
    clearTimeout(this._timers.welcome);
    const reconnected = this._everWelcomed;
    this._welcomed = true;
    this._everWelcomed = true;
    this._attempt = 0;
    this._renewedAfter4001 = false;
    this._pollFailures = 0;
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
      if (ch.wanted && !ch.auto) this._sendSubscribe(ch);
    }
    this._startHeartbeat(this.options.heartbeatS ?? payload.heartbeat_s ?? 25);
    this._scheduleRefresh(payload.expires_at);
    this._emit("welcome", payload);
    this._setState(State.CONNECTED, { connectionId: payload.connection_id });
    if (reconnected) this._emit("reconnect", { userId: this.userId });
  }

  _sendSubscribe(ch) {
    const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
    // While a resume is pending, live messages are delivered but do not move the position:
    // the replay that follows the reply fills everything before them.
    ch.resuming = since !== null;
    const data = since ? { channel: ch.name, since } : { channel: ch.name };
    this._request("subscribe", data, (payload) => this._onSubscribed(ch, since, payload)).catch((error) => {
      ch.resuming = false;
      if (error.code === "disconnected") return;
      error.detail = { ...error.detail, channel: ch.name };
      this._emit("error", error);
    });
  }

  _onSubscribed(ch, since, payload) {
    ch.resuming = false;
    this._acceptRecovery(ch, since, payload);
    // Recovered: the missed messages follow this reply and move the position themselves.
  }

  /**
   * Apply the position a subscribe reply or a poll answered for `since`; true when the gap
   * was recovered, else the channel restarts at that position (with a `resync` if it had one).
   */
  _acceptRecovery(ch, since, answer) {
    if (since && answer.recovered && answer.epoch === since.epoch) return true;
    this._reposition(ch, answer.epoch, answer.offset);
    if (since) {
      this._emit("resync", { channel: ch.name, reason: answer.epoch !== since.epoch ? "epoch_changed" : "gap",
        epoch: answer.epoch, offset: answer.offset });
    }
    return false;
  }

  _reposition(ch, epoch, offset) {
    if (ch.epoch !== epoch) ch.seen = new Set();
    ch.epoch = epoch;
    ch.offset = offset;
  }

  /** Deliver an envelope once per (channel, epoch, offset). */
  _onEnvelope(message) {
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
      this._emit("resync", { channel: ch.name, reason: "epoch_changed", epoch: message.epoch, offset: message.offset });
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
      if (ch.seen.size > SEEN_LIMIT) ch.seen.delete(ch.seen.values().next().value);
    }
    if (!duplicate) this._dispatch(ch, message);
  }

  _dispatch(ch, message) {
    for (const { callback } of [...ch.callbacks]) {
      try {
        callback(message);
      } catch (error) {
        setTimeout(() => { throw error; });
      }
    }
    this._emit("message", message);
  }

  _request(type, data, onReply) {
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
        this._ws.send(JSON.stringify({ ...data, type, id }));
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new RealtimeError("unavailable", String(error?.message || error)));
      }
    });
  }

  _rejectPending(code, message) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(new RealtimeError(code, message));
    }
  }

  // ---------------------------------------------------------------- heartbeat and token refresh

  _startHeartbeat(heartbeatS) {
    this._stopHeartbeat();
    const intervalMs = Math.max(0.05, heartbeatS) * 1000;
    this._lastFrameAt = Date.now();
    this._timers.ping = setInterval(() => {
      if (this._isLive()) {
        try { this._ws.send(JSON.stringify({ type: "ping", id: `p${this._nextId++}` })); } catch { /* closing */ }
      }
    }, intervalMs);
    this._timers.dead = setInterval(() => {
      if (this._ws && Date.now() - this._lastFrameAt > 2.5 * intervalMs) {
        this._dropSocket(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
      }
    }, Math.min(intervalMs / 2, 5000));
  }

  _stopHeartbeat() {
    clearInterval(this._timers.ping);
    clearInterval(this._timers.dead);
  }

  _scheduleRefresh(expiresAt) {
    clearTimeout(this._timers.refresh);
    const expires = expiresAt ? Date.parse(expiresAt) : NaN;
    if (Number.isNaN(expires)) return;
    const remaining = expires - Date.now();
    const lead = Math.min(this.options.refreshLeadMs, remaining / 5);
    const delay = Math.min(2 ** 31 - 1, Math.max(1000, remaining - lead));
    this._timers.refresh = setTimeout(() => this._refreshToken(expires), delay);
  }

  async _refreshToken(expires) {
    try {
      const token = await this._getToken("refresh");
      const reply = await this._request("auth.refresh", { token });
      this._scheduleRefresh(reply?.expires_at);
    } catch (error) {
      if (error?.code === "disconnected" || !this._isLive()) return;
      this._emit("error", error instanceof RealtimeError ? error : new RealtimeError("refresh_failed", String(error)));
      // Try again shortly while the session lasts; past expiry the server closes with 4011.
      if (expires - Date.now() > 5000) this._timers.refresh = setTimeout(() => this._refreshToken(expires), 5000);
    }
  }

  // ---------------------------------------------------------------- REST long-polling fallback

  _startDegraded(info) {
    this._stopPolling();
    this._setState(State.DEGRADED, { ...info, polling: true });
    this._pollAbort = new AbortController();
    const generation = ++this._pollGeneration;
    const channels = new Set(["broadcast"]);
    if (this.userId) channels.add(`user:${this.userId}`);
    for (const ch of this._channels.values()) if (ch.wanted || ch.auto) channels.add(ch.name);
    for (const name of channels) this._pollChannel(name, generation);
    this._scheduleProbe();
  }

  _stopPolling() {
    this._pollGeneration += 1;
    this._pollAbort?.abort();
    this._pollAbort = null;
    this._polling.clear();
  }

  _scheduleProbe() {
    clearTimeout(this._timers.probe);
    const delay = Math.round(this.options.probeIntervalMs * (0.8 + Math.random() * 0.4));
    this._timers.probe = setTimeout(() => { if (this.state === State.DEGRADED) this._open("connect"); }, delay);
  }

  _pollChannel(name, generation = this._pollGeneration) {
    if (this._polling.has(name)) return;
    this._polling.add(name);
    this._pollLoop(name, generation).finally(() => {
      if (generation === this._pollGeneration) this._polling.delete(name);
    });
  }

  async _pollLoop(name, generation) {
    const signal = this._pollAbort?.signal;
    let failures = 0;
    let renewed = false;
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    while (current()) {
      const ch = this._channel(name);
      if (!ch.wanted && !ch.auto && name !== "broadcast" && name !== `user:${this.userId}`) return;
      const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
      const url = new URL(this.pollUrl);
      url.searchParams.set("channel", name);
      url.searchParams.set("timeout", String(this.options.pollTimeoutS));
      if (since) url.searchParams.set("since", `${since.epoch}:${since.offset}`);
      let waitMs = 0;
      try {
        const token = await this._tokenForPolling();
        const response = await this._fetch(url.href, {
          headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
          cache: "no-store",
          signal,
        });
        if (!current()) return;
        if (response.status === 401) {
          if (renewed) throw new RealtimeError("unauthorized", "the server refused the credentials");
          renewed = true;
          await this._getToken("unauthorized");
          continue;
        }
        if (response.status === 403 || response.status === 404) {
          this._emit("error", new RealtimeError(response.status === 403 ? "forbidden" : "not_found",
            `cannot read ${name}`, { channel: name }));
          return;
        }
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `events answered ${response.status}`);
        const body = await response.json();
        if (!current()) return;
        renewed = false;
        failures = 0;
        this._pollFailures = 0;
        this._applyPoll(ch, since, body);
        const interval = Number(response.headers.get("X-Poll-Interval"));
        waitMs = body.messages?.length ? 0 : (Number.isFinite(interval) ? interval * 1000 : 1000);
      } catch (error) {
        if (!current() || error?.name === "AbortError") return;
        if (error?.code === "unauthorized") {
          this._unauthorized(error.message);
          return;
        }
        failures += 1;
        this._pollFailures += 1;
        if (this._pollFailures >= this.options.maxPollFailures) {
          this._stopPolling();
          clearTimeout(this._timers.probe);
          this._setState(State.FAILED, { reason: `polling failed: ${error?.message || error}` });
          return;
        }
        waitMs = backoffDelay(this.options.backoffBaseMs, Math.min(failures, 5));
      }
      if (waitMs) await sleep(waitMs, signal);
    }
  }

  async _tokenForPolling() {
    const claims = this._token ? decodeJwt(this._token) : null;
    const expiresSoon = !claims?.exp || claims.exp * 1000 - Date.now() < 30000;
    return expiresSoon ? this._getToken(this._token ? "refresh" : "connect") : this._token;
  }

  _applyPoll(ch, since, body) {
    if (!this._acceptRecovery(ch, since, body)) return;
    for (const message of body.messages || []) this._onEnvelope(message);
    // Recovery is all or nothing up to the head, so the head is the new position (messages
    // addressed to other users are left out and must not be waited for).
    if (body.offset > ch.offset) ch.offset = body.offset;
  }
}

export default RealtimeClient;
