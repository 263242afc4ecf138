// Built from clients/js/realtime (npm run build); do not edit: edit the TypeScript sources.
const State = Object.freeze({
  /** Not started, or stopped by `disconnect()`. */
  IDLE: "idle",
  /** Opening the first socket. */
  CONNECTING: "connecting",
  /** Welcomed by the server: live. */
  CONNECTED: "connected",
  /** The socket dropped; attempt `info.attempt` of `info.maxAttempts` is scheduled or running. */
  RECONNECTING: "reconnecting",
  /** The WebSocket keeps failing: messages arrive over HTTP (poll); the socket is probed. */
  DEGRADED: "degraded",
  /** Gave up (socket and polling failed); `retry()` starts again. */
  FAILED: "failed",
  /** The browser reports no network; the client resumes when it comes back. */
  OFFLINE: "offline",
  /** The credentials were refused and `getToken` could not renew them: sign in again. */
  UNAUTHORIZED: "unauthorized"
});
const SUBPROTOCOL = "renum.v1";
const CloseCode = Object.freeze({
  NORMAL: 1e3,
  GOING_AWAY: 1001,
  SERVICE_RESTART: 1012,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  POLICY_VIOLATION: 4008,
  SLOW_CONSUMER: 4009,
  TOKEN_EXPIRED: 4011,
  RATE_LIMITED: 4029,
  /** Used by this client when it drops a socket that went silent (reported, never sent). */
  HEARTBEAT_TIMEOUT: 4e3
});
const TEAM_EVENT_TYPES = Object.freeze([
  "team_member_joined",
  "team_member_left",
  "team_member_role_changed",
  "team_renamed"
]);
const ELECTION_TIMINGS = Object.freeze({ aliveMs: 1e3, deadMs: 3500, settleMs: 150 });
class BroadcastLock {
  constructor(Channel, id, timings = ELECTION_TIMINGS) {
    this.Channel = Channel;
    this.id = id;
    this.timings = timings;
  }
  Channel;
  id;
  timings;
  request(name, options, callback) {
    const { aliveMs, deadMs, settleMs } = this.timings;
    const me = this.id();
    const bus = new this.Channel(`${name}:election`);
    let role = "waiting";
    let heard = 0;
    let settle;
    let check;
    let alive;
    const say = (kind) => {
      try {
        bus.postMessage({ kind, id: me });
      } catch {
      }
    };
    const pagehide = () => {
      if (role === "holding") say("release");
    };
    return new Promise((resolve, reject) => {
      const finish = (error) => {
        if (role === "done") return;
        if (role === "holding") say("release");
        role = "done";
        clearTimeout(settle);
        clearInterval(check);
        clearInterval(alive);
        options.signal?.removeEventListener("abort", aborted);
        globalThis.removeEventListener?.("pagehide", pagehide);
        bus.close();
        if (error === void 0) resolve();
        else reject(error);
      };
      const aborted = () => {
        if (role !== "holding") finish(new DOMException("the lock request was aborted", "AbortError"));
      };
      if (options.signal?.aborted) {
        aborted();
        return;
      }
      options.signal?.addEventListener("abort", aborted);
      const claim = () => {
        if (role !== "waiting") return;
        role = "claiming";
        say("claim");
        settle = setTimeout(() => {
          if (role !== "claiming") return;
          role = "holding";
          clearInterval(check);
          say("alive");
          alive = setInterval(() => say("alive"), aliveMs);
          globalThis.addEventListener?.("pagehide", pagehide);
          Promise.resolve().then(callback).then(() => finish(), (error) => finish(error));
        }, settleMs);
      };
      const yieldTo = () => {
        heard = Date.now();
        if (role === "claiming") {
          clearTimeout(settle);
          role = "waiting";
        }
      };
      bus.onmessage = (event) => {
        const vote = event.data;
        if (!vote || typeof vote !== "object" || vote.id === me || role === "done") return;
        if (role === "holding") {
          if (vote.kind === "probe" || vote.kind === "claim") say("alive");
          else if (vote.kind === "alive" && vote.id < me) clearInterval(alive);
          return;
        }
        if (vote.kind === "alive") yieldTo();
        else if (vote.kind === "claim" && vote.id < me) yieldTo();
        else if (vote.kind === "release") {
          heard = 0;
          claim();
        }
      };
      say("probe");
      settle = setTimeout(() => {
        if (!heard) claim();
      }, settleMs);
      check = setInterval(() => {
        if (role === "waiting" && heard && Date.now() - heard > deadMs) claim();
      }, aliveMs);
    });
  }
}
class RealtimeError extends Error {
  /** Protocol code (`forbidden`, `not_found`...) or client code (`unavailable`, `timeout`, `disconnected`, `unauthorized`, `http_<status>`). */
  code;
  detail;
  constructor(code, message, detail = {}) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    this.detail = detail;
  }
}
const PROTOCOL_TYPES = [
  "notification",
  "notification_read",
  "notification_unread",
  "notification_archived",
  "notification_unarchived",
  "notification_deleted",
  "unread_count",
  "team_member_joined",
  "team_member_left",
  "team_member_role_changed",
  "team_renamed",
  "execution_update",
  "system_event",
  "publication",
  "message"
];
const MAX_SSE_FAILURES = 2;
const DEFAULTS = {
  url: "/ws/",
  maxAttempts: 5,
  backoffBaseMs: 1e3,
  connectTimeoutMs: 1e4,
  requestTimeoutMs: 1e4,
  refreshLeadMs: 6e4,
  pollTimeoutS: 25,
  probeIntervalMs: 3e4,
  maxPollFailures: 5,
  userIdClaim: "user_id",
  shareAcrossTabs: false
};
function tabApis() {
  const Channel = globalThis.BroadcastChannel;
  if (!Channel) return null;
  const locks = globalThis.navigator?.locks;
  return { locks: locks ?? new BroadcastLock(Channel, randomId), Channel };
}
const SEEN_LIMIT = 2048;
const OPEN = 1;
const DEACTIVATED = /deactivated|inactive user/i;
function decodeJwt(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const json = decodeURIComponent(
      Array.from(atob(base64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join("")
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}
function backoffDelay(baseMs, attempt) {
  return Math.round(baseMs * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4));
}
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
function pageHref() {
  return globalThis.location?.href;
}
function resolveSocketUrl(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const base = pageHref();
  if (!base) throw new RealtimeError("invalid_url", `cannot resolve ${url} without a location`);
  const absolute = new URL(url, base);
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
  return absolute.href;
}
function httpUrl(socketUrl, path) {
  const url = new URL(socketUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = path;
  url.search = "";
  return url.href;
}
function randomId() {
  const crypto = globalThis.crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}
class RealtimeClient {
  options;
  url;
  /** Multiplexed poll URL, or null when the HTTP fallback is off. */
  pollUrl;
  /** Per-channel events URL (servers without the multiplexed poll). */
  eventsUrl;
  /** Server-sent events URL, or null when the degraded mode does not use SSE. */
  sseUrl;
  /** One-time ticket URL (EventSource cannot send an Authorization header). */
  ticketUrl;
  /** Sent as `client_id`: shown in the admin's connection list. */
  clientId;
  state = State.IDLE;
  /** Details of the current state: attempt, maxAttempts, delayMs, code, reason. */
  stateInfo = {};
  /** The user id from the welcome (or the token), once known. */
  userId = null;
  /** The last welcome payload. */
  welcome = null;
  _fetch;
  _WebSocket;
  _listeners = /* @__PURE__ */ new Map();
  _channels = /* @__PURE__ */ new Map();
  _pending = /* @__PURE__ */ new Map();
  _nextId = 1;
  _token = null;
  _wanted = false;
  _ws = null;
  _welcomed = false;
  _everWelcomed = false;
  _attempt = 0;
  _renewedAfter4001 = false;
  _timers = {};
  _openGeneration = 0;
  _pollGeneration = 0;
  _pollAbort = null;
  _pollFailures = 0;
  _polling = /* @__PURE__ */ new Set();
  /** The server answered 404 to the multiplexed poll: per-channel polling instead. */
  _legacyPolling = false;
  _EventSource;
  /** The stream of this degraded period failed: long-poll until the socket is back. */
  _sseFailed = false;
  _sseTypes = new Set(PROTOCOL_TYPES);
  /** Adds a listener for one more message type to the open stream. */
  _sseListen = null;
  _lastFrameAt = 0;
  /** `leader` or `follower` while sharing one connection between tabs; null otherwise. */
  _role = null;
  _tab = randomId();
  _bus = null;
  _lockAbort = null;
  _releaseLock = null;
  /** Leader: the channels each follower tab wants, with their unsubscribe functions. */
  _followerWants = /* @__PURE__ */ new Map();
  _forwarded = /* @__PURE__ */ new Map();
  _onlineHandler = () => this._online();
  _offlineHandler = () => this._offline();
  constructor(options) {
    if (!options || typeof options.getToken !== "function") {
      throw new TypeError("RealtimeClient needs options.getToken");
    }
    this.options = { ...DEFAULTS, ...options };
    this.url = resolveSocketUrl(options.url || "/ws/");
    const base = pageHref() ?? this.url.replace(/^ws/, "http");
    this.pollUrl = options.pollUrl === false ? null : options.pollUrl ? new URL(options.pollUrl, base).href : httpUrl(this.url, "/api/realtime/poll/");
    this.eventsUrl = options.pollUrl === false ? null : options.eventsUrl ? new URL(options.eventsUrl, base).href : httpUrl(this.url, "/api/realtime/events/");
    this.sseUrl = options.pollUrl === false || options.sseUrl === false ? null : options.sseUrl ? new URL(options.sseUrl, base).href : httpUrl(this.url, "/api/realtime/sse/");
    this.ticketUrl = options.ticketUrl ? new URL(options.ticketUrl, base).href : httpUrl(this.url, "/api/realtime/ticket/");
    this._EventSource = options.EventSource || globalThis.EventSource;
    for (const type of options.sseEventTypes || []) this._sseTypes.add(type);
    this.clientId = (options.clientId || `web-${randomId()}`).slice(0, 64);
    this._fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
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
  get follower() {
    return this._role === "follower";
  }
  /** Close the connection and stop reconnecting and polling. Positions are kept for `connect()`. */
  disconnect() {
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
  retry() {
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
  subscribe(channel, callback) {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a non-empty string");
    const ch = this._channel(channel);
    const entry = { callback };
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
      else if (this._isLive()) this.send("unsubscribe", { channel }).catch(() => {
      });
    };
  }
  /**
   * Send a command frame and wait for its reply (matched by `reply_to`).
   * Resolves with the reply's `payload`; rejects with a RealtimeError on an `error` frame, a
   * timeout, or when the socket is not connected (`unavailable`: e.g. in `degraded`).
   */
  send(type, data = {}) {
    return this._request(type, data);
  }
  /** Run a domain command; resolves with the service's answer (`command_result.payload.result`). */
  async command(name, args = {}) {
    const reply = await this._request("command", { payload: { name, args } });
    return reply?.result;
  }
  on(event, callback) {
    let listeners = this._listeners.get(event);
    if (!listeners) this._listeners.set(event, listeners = /* @__PURE__ */ new Set());
    const entry = { callback };
    listeners.add(entry);
    return () => {
      this._listeners.get(event)?.delete(entry);
    };
  }
  /** `callback(state, info)` on every state change. */
  onStateChange(callback) {
    return this.on("state", callback);
  }
  /** `callback({userId})` each time a connection is re-established after a loss. */
  onReconnect(callback) {
    return this.on("reconnect", callback);
  }
  /** `callback({channel, reason, epoch, offset})` when state must be reloaded over REST. */
  onResync(callback) {
    return this.on("resync", callback);
  }
  /** `callback(envelope)` for messages of one type, on any channel. */
  onMessage(type, callback) {
    if (!this._sseTypes.has(type)) {
      this._sseTypes.add(type);
      this._sseListen?.(type);
    }
    return this.on("message", (message) => {
      if (message.type === type) callback(message);
    });
  }
  /** The resume position of every channel: store it to resume across page loads. */
  positions() {
    const out = {};
    for (const [name, ch] of this._channels) {
      if (ch.epoch != null) out[name] = { epoch: ch.epoch, offset: ch.offset };
    }
    return out;
  }
  /** The channels the connection follows (auto, server-subscribed and subscribed). */
  channels() {
    return [...this._channels.values()].filter((ch) => ch.wanted || ch.auto || ch.server).map((ch) => ch.name);
  }
  // ---------------------------------------------------------------- events and state
  _emit(event, ...args) {
    if (event === "resync" && this._role === "leader") this._post({ kind: "resync", event: args[0] });
    for (const { callback } of [...this._listeners.get(event) || []]) {
      try {
        callback(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
  _setState(state, info = {}) {
    const same = state === this.state && JSON.stringify(info) === JSON.stringify(this.stateInfo);
    this.state = state;
    this.stateInfo = info;
    if (!same && this._role === "leader") this._post({ kind: "state", state, info });
    if (!same) this._emit("state", state, info);
  }
  _isLive() {
    return this._welcomed && this._ws !== null && this._ws.readyState === OPEN;
  }
  _channel(name) {
    let ch = this._channels.get(name);
    if (!ch) {
      ch = {
        name,
        callbacks: /* @__PURE__ */ new Set(),
        wanted: false,
        auto: false,
        server: false,
        epoch: null,
        offset: -1,
        seen: /* @__PURE__ */ new Set(),
        resuming: false
      };
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
  _unauthorized(reason, cause, code) {
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "unauthorized");
    const info = { reason, cause };
    if (code !== void 0) info.code = code;
    this._setState(State.UNAUTHORIZED, info);
  }
  // ---------------------------------------------------------------- socket lifecycle
  _socketUrl() {
    const url = new URL(this.url);
    url.searchParams.set("client_id", this.clientId);
    return url.href;
  }
  /** Open a socket; `token`, when given, was just obtained for this attempt. */
  async _open(reason, token = null) {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.probe);
    const generation = ++this._openGeneration;
    const navigator = globalThis.navigator;
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
    let ws;
    try {
      if (!this._WebSocket) throw new Error("no WebSocket in this environment");
      ws = new this._WebSocket(this._socketUrl(), [SUBPROTOCOL, `bearer.${token}`]);
    } catch (error) {
      this._handleClose({ code: 1006, reason: errorMessage(error) });
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    ws.onmessage = (event) => {
      if (ws === this._ws) this._onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this._ws) this._handleClose(event);
    };
    ws.onerror = () => {
    };
    this._timers.welcome = setTimeout(() => {
      if (ws === this._ws && !this._welcomed) this._dropSocket(CloseCode.HEARTBEAT_TIMEOUT, "no welcome in time");
    }, this.options.connectTimeoutMs);
  }
  /**
   * Close the current socket without reacting to its close event. Always with 1000: browsers
   * refuse any other code below 3000 (`InvalidAccessError`) and would leave the socket open.
   */
  _closeSocket(_code, reason) {
    const ws = this._ws;
    this._forgetSocket();
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(CloseCode.NORMAL, reason.slice(0, 100));
      } catch {
      }
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
      if (DEACTIVATED.test(reason)) {
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
      this._scheduleProbe();
      return;
    }
    if (welcomed) this._attempt = 0;
    if (code === CloseCode.SERVICE_RESTART || code === CloseCode.SLOW_CONSUMER) {
      this._scheduleReconnect({ immediate: true, code, reason });
      return;
    }
    const retryAfter = /retry after (\d+)\s*s/i.exec(reason);
    this._scheduleReconnect({ code, reason, minDelayMs: retryAfter ? Number(retryAfter[1]) * 1e3 : 0 });
  }
  /** 4001 / 4011: a new token first; no retry loop with credentials the server refused. */
  async _renewAndReopen(why, closeReason) {
    const refused = this._token;
    const code = why === "expired" ? CloseCode.TOKEN_EXPIRED : CloseCode.UNAUTHORIZED;
    const cause = why === "expired" || /expired/i.test(closeReason) ? "session_expired" : "credentials_refused";
    if (why === "unauthorized" && this._renewedAfter4001) {
      this._unauthorized(closeReason || "the server refused the credentials", cause, code);
      return;
    }
    let token;
    try {
      token = await this._getToken(why);
    } catch (error) {
      if (this._wanted) this._unauthorized(
        errorMessage(error) || closeReason || "the session could not be renewed",
        "session_expired",
        code
      );
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
      this._setState(
        this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
        this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts, code } : {}
      );
    }
    void this._open(why, token);
  }
  _scheduleReconnect({ immediate = false, minDelayMs = 0, code, reason }) {
    this._attempt += 1;
    const max = this.options.maxAttempts;
    if (this._attempt > max) {
      this._giveUp({ code, reason });
      return;
    }
    const delay = Math.max(minDelayMs, immediate ? Math.round(Math.random() * Math.min(1e3, this.options.backoffBaseMs)) : backoffDelay(this.options.backoffBaseMs, this._attempt));
    this._setState(State.RECONNECTING, { attempt: this._attempt, maxAttempts: max, delayMs: delay, code, reason });
    this._timers.reconnect = setTimeout(() => {
      void this._open("connect");
    }, delay);
  }
  _giveUp(info) {
    if (this.pollUrl && this._fetch) this._startDegraded(info);
    else this._setState(State.FAILED, info);
  }
  // ---------------------------------------------------------------- online / offline
  _offline() {
    if (!this._wanted || this.state === State.UNAUTHORIZED || this._role === "follower") return;
    this._clearTimers();
    this._stopPolling();
    this._closeSocket(CloseCode.NORMAL, "offline");
    this._setState(State.OFFLINE);
  }
  _online() {
    if (!this._wanted || this.state !== State.OFFLINE || this._role === "follower") return;
    this._attempt = 0;
    this._setState(
      this._everWelcomed ? State.RECONNECTING : State.CONNECTING,
      this._everWelcomed ? { attempt: 1, maxAttempts: this.options.maxAttempts } : {}
    );
    void this._open("connect");
  }
  // ---------------------------------------------------------------- frames
  _onFrame(data) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(String(data));
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
  }
  /**
   * The server subscribed this socket (e.g. the user joined a team). The channel is remembered
   * so that the next reconnect re-subscribes it with its position; otherwise it would be lost.
   */
  _onServerSubscribed(payload) {
    const ch = this._channel(payload.channel);
    ch.server = true;
    if (ch.epoch == null || ch.epoch !== payload.epoch) this._reposition(ch, payload.epoch, payload.offset);
    this._emit("subscribed", { channel: ch.name, server: true });
  }
  _onWelcome(payload) {
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
  _sendSubscribe(ch) {
    const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
    ch.resuming = since !== null;
    const data = since ? { channel: ch.name, since } : { channel: ch.name };
    this._request("subscribe", data, (payload) => this._onSubscribed(ch, since, payload)).catch((error) => {
      ch.resuming = false;
      if (error.code === "disconnected") return;
      if (ch.server && (error.code === "forbidden" || error.code === "not_found")) {
        ch.server = false;
      }
      error.detail = { ...error.detail, channel: ch.name };
      this._emit("error", error);
    });
  }
  _onSubscribed(ch, since, payload) {
    ch.resuming = false;
    this._acceptRecovery(ch, since, payload);
  }
  /**
   * Apply the position a subscribe reply or a poll answered for `since`; true when the gap
   * was recovered, else the channel restarts at that position (with a `resync` if it had one).
   */
  _acceptRecovery(ch, since, answer) {
    if (since && answer.recovered && answer.epoch === since.epoch) return true;
    this._reposition(ch, answer.epoch, answer.offset);
    if (since) {
      this._emit("resync", {
        channel: ch.name,
        reason: answer.epoch !== since.epoch ? "epoch_changed" : "gap",
        epoch: answer.epoch,
        offset: answer.offset
      });
    }
    return false;
  }
  _reposition(ch, epoch, offset) {
    if (ch.epoch !== epoch) ch.seen = /* @__PURE__ */ new Set();
    ch.epoch = epoch;
    ch.offset = offset;
  }
  /** Deliver an envelope once per (channel, epoch, offset). */
  _onEnvelope(message) {
    const ch = this._channel(message.channel);
    if (message.snapshot) {
      if (ch.epoch !== message.epoch || message.offset > ch.offset) this._reposition(ch, message.epoch, message.offset);
      this._dispatch(ch, message);
      return;
    }
    if (ch.epoch != null && message.epoch !== ch.epoch) {
      this._reposition(ch, message.epoch, message.offset - 1);
      this._emit("resync", {
        channel: ch.name,
        reason: "epoch_changed",
        epoch: message.epoch,
        offset: message.offset
      });
    } else if (ch.epoch == null) {
      this._reposition(ch, message.epoch, message.offset - 1);
    }
    const duplicate = message.offset <= ch.offset || ch.seen.has(message.offset);
    if (!ch.resuming && message.offset > ch.offset) {
      ch.offset = message.offset;
      if (ch.seen.size) {
        for (const offset of ch.seen) if (offset <= ch.offset) ch.seen.delete(offset);
      }
    } else if (ch.resuming && !duplicate) {
      ch.seen.add(message.offset);
      if (ch.seen.size > SEEN_LIMIT) ch.seen.delete(ch.seen.values().next().value);
    }
    if (!duplicate) this._dispatch(ch, message);
  }
  _dispatch(ch, message) {
    if (this._role === "leader") this._post({ kind: "message", message });
    for (const { callback } of [...ch.callbacks]) {
      try {
        callback(message);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
    this._emit("message", message);
  }
  _request(type, data, onReply) {
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
        this._ws.send(JSON.stringify({ ...data, type, id }));
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new RealtimeError("unavailable", errorMessage(error)));
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
    const intervalMs = Math.max(0.05, heartbeatS) * 1e3;
    this._lastFrameAt = Date.now();
    this._timers.ping = setInterval(() => {
      if (this._isLive()) {
        try {
          this._ws.send(JSON.stringify({ type: "ping", id: `p${this._nextId++}` }));
        } catch {
        }
      }
    }, intervalMs);
    this._timers.dead = setInterval(() => {
      if (this._ws && Date.now() - this._lastFrameAt > 2.5 * intervalMs) {
        this._dropSocket(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
      }
    }, Math.min(intervalMs / 2, 5e3));
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
    const delay = Math.min(2 ** 31 - 1, Math.max(1e3, remaining - lead));
    this._timers.refresh = setTimeout(() => {
      void this._refreshToken(expires);
    }, delay);
  }
  async _refreshToken(expires) {
    let token;
    try {
      token = await this._getToken("refresh");
    } catch (error) {
      if (this._wanted) this._unauthorized(errorMessage(error) || "the session could not be renewed", "session_expired");
      return;
    }
    try {
      const reply = await this._request("auth.refresh", { token });
      this._scheduleRefresh(reply?.expires_at);
    } catch (error) {
      if (error?.code === "disconnected" || !this._isLive()) return;
      const code = error?.code;
      if (code === "unauthorized" || code === "forbidden") {
        this._unauthorized(error.message, DEACTIVATED.test(error.message) ? "account_deactivated" : "session_expired");
        return;
      }
      this._emit("error", error instanceof RealtimeError ? error : new RealtimeError("refresh_failed", String(error)));
      if (expires - Date.now() > 5e3) this._timers.refresh = setTimeout(() => {
        void this._refreshToken(expires);
      }, 5e3);
    }
  }
  // ---------------------------------------------------------------- one connection per browser
  _post(message) {
    try {
      this._bus?.postMessage(message);
    } catch {
    }
  }
  /** Follow the leader tab, and queue for the lock: the tab that gets it leads. */
  async _joinTabs() {
    const apis = tabApis();
    try {
      await this._getToken("connect");
    } catch (error) {
      if (this._wanted) this._unauthorized(errorMessage(error), "credentials_refused");
      return;
    }
    if (!this._wanted || this._role !== null) return;
    const name = `renum-realtime:${this.url}:${this.userId ?? "anonymous"}`;
    this._role = "follower";
    this._bus = new apis.Channel(name);
    this._bus.onmessage = (event) => this._onTabMessage(event.data);
    this._lockAbort = new AbortController();
    this._post({ kind: "hello", tab: this._tab });
    apis.locks.request(name, { signal: this._lockAbort.signal }, async () => {
      if (!this._wanted || this._role === null) return;
      this._lead();
      await new Promise((resolve) => {
        this._releaseLock = resolve;
      });
    }).catch(() => {
    });
  }
  /** This tab got the lock: it opens the connection, from the positions it saw as a follower. */
  _lead() {
    this._role = "leader";
    this._rejectForwarded("disconnected", "the leader tab changed");
    this._post({ kind: "leader", tab: this._tab });
    this._attempt = 0;
    this._setState(
      this._everWelcomed || this._channels.size ? State.RECONNECTING : State.CONNECTING,
      this._channels.size ? { attempt: 1, maxAttempts: this.options.maxAttempts } : {}
    );
    void this._open("connect");
  }
  _leaveTabs() {
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
  _onTabMessage(message) {
    if (!message || typeof message !== "object" || !this._wanted) return;
    if (this._role === "leader") {
      switch (message.kind) {
        case "hello":
          this._post({ kind: "state", state: this.state, info: this.stateInfo });
          break;
        case "want": {
          let wants = this._followerWants.get(message.tab);
          if (!wants) this._followerWants.set(message.tab, wants = /* @__PURE__ */ new Map());
          for (const channel of message.channels) {
            if (!wants.has(channel)) wants.set(channel, this.subscribe(channel, () => {
            }));
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
            (error) => this._post({
              kind: "reply",
              tab: message.tab,
              id: message.id,
              error: { code: error.code ?? "error", message: error.message }
            })
          );
          break;
      }
      return;
    }
    if (this._role !== "follower") return;
    switch (message.kind) {
      case "leader": {
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
  _forward(type, data) {
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
  _rejectForwarded(code, message) {
    const pending = [...this._forwarded.values()];
    this._forwarded.clear();
    for (const { reject, timer } of pending) {
      clearTimeout(timer);
      reject(new RealtimeError(code, message));
    }
  }
  // ---------------------------------------------------------------- HTTP fallback
  _pollChannels() {
    const channels = /* @__PURE__ */ new Set(["broadcast"]);
    if (this.userId) channels.add(`user:${this.userId}`);
    for (const ch of this._channels.values()) if (ch.wanted || ch.auto || ch.server) channels.add(ch.name);
    return [...channels];
  }
  _startDegraded(info) {
    this._stopPolling();
    this._setState(State.DEGRADED, {
      ...info,
      polling: true,
      listening: false,
      transport: this._legacyPolling ? "events" : this._useSse() ? "sse" : "poll"
    });
    this._startPolling();
    this._scheduleProbe();
  }
  _startPolling() {
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
  _useSse() {
    return Boolean(this.sseUrl && this.pollUrl && this._EventSource && this._fetch) && !this._sseFailed && !this._legacyPolling;
  }
  /** A new channel while degraded: the one poll or stream restarts with it (legacy: one more loop). */
  _restartPolling() {
    if (this._legacyPolling) {
      for (const name of this._pollChannels()) this._pollChannel(name, this._pollGeneration);
      return;
    }
    this._stopPolling();
    this._startPolling();
  }
  _stopPolling() {
    this._pollGeneration += 1;
    this._pollAbort?.abort();
    this._sseListen = null;
    this._pollAbort = null;
    this._polling.clear();
  }
  /** The HTTP transport follows every channel from a known position (see `StateInfo.listening`). */
  _markListening() {
    if (this.state === State.DEGRADED && !this.stateInfo.listening) {
      this._setState(State.DEGRADED, { ...this.stateInfo, listening: true });
    }
  }
  _scheduleProbe() {
    clearTimeout(this._timers.probe);
    const delay = Math.round(this.options.probeIntervalMs * (0.8 + Math.random() * 0.4));
    this._timers.probe = setTimeout(() => {
      if (this.state === State.DEGRADED) void this._open("connect");
    }, delay);
  }
  _pollFailed(error) {
    this._pollFailures += 1;
    if (this._pollFailures >= this.options.maxPollFailures) {
      this._stopPolling();
      clearTimeout(this._timers.probe);
      this._setState(State.FAILED, { reason: `polling failed: ${errorMessage(error)}` });
      return true;
    }
    return false;
  }
  async _authorizedFetch(url, init, renewed) {
    const token = await this._tokenForPolling();
    const response = await this._fetch(url, {
      ...init,
      headers: { ...init.headers, Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store"
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
  async _pollLoop(generation) {
    const signal = this._pollAbort?.signal;
    let failures = 0;
    const renewed = { done: false };
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    while (current()) {
      const names = this._pollChannels();
      const since = {};
      for (const name of names) {
        const ch = this._channel(name);
        since[name] = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
      }
      let waitMs = 0;
      try {
        const response = await this._authorizedFetch(this.pollUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ channels: since, timeout: this.options.pollTimeoutS }),
          signal
        }, renewed);
        if (!current()) return;
        if (response === null) continue;
        if (response.status === 404 || response.status === 405) {
          this._legacyPolling = true;
          this._setState(State.DEGRADED, { ...this.stateInfo, transport: "events", listening: false });
          this._stopPolling();
          this._startPolling();
          return;
        }
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `poll answered ${response.status}`);
        const body = await response.json();
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
        const header = response.headers.get("X-Poll-Interval");
        const interval = header === null || header === "" ? NaN : Number(header);
        waitMs = delivered ? 0 : Number.isFinite(interval) && interval >= 0 ? interval * 1e3 : 1e3;
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
  _afterPollError(error, failures) {
    if (error?.name === "AbortError") return null;
    if (error?.code === "unauthorized") {
      this._unauthorized(error.message, "session_expired");
      return null;
    }
    if (this._pollFailed(error)) return null;
    return backoffDelay(this.options.backoffBaseMs, Math.min(failures, 5));
  }
  _onPollRefused(name, code, message) {
    const ch = this._channel(name);
    ch.server = false;
    if (!ch.callbacks.size) ch.wanted = false;
    this._emit("error", new RealtimeError(code, message || `cannot read ${name}`, { channel: name }));
  }
  _pollChannel(name, generation) {
    if (this._polling.has(name)) return;
    this._polling.add(name);
    void this._eventsLoop(name, generation).finally(() => {
      if (generation === this._pollGeneration) this._polling.delete(name);
    });
  }
  /** Per-channel long poll (`GET /api/realtime/events/`), for servers without `/poll/`. */
  async _eventsLoop(name, generation) {
    const signal = this._pollAbort?.signal;
    let failures = 0;
    const renewed = { done: false };
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    while (current()) {
      const ch = this._channel(name);
      if (!ch.wanted && !ch.auto && !ch.server && name !== "broadcast" && name !== `user:${this.userId}`) return;
      const since = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
      const url = new URL(this.eventsUrl);
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
        const body = await response.json();
        if (!current()) return;
        renewed.done = false;
        failures = 0;
        this._pollFailures = 0;
        this._applyPoll(ch, since, body);
        if (this._pollChannels().every((other) => this._channel(other).epoch != null)) this._markListening();
        const interval = Number(response.headers.get("X-Poll-Interval"));
        waitMs = body.messages?.length ? 0 : Number.isFinite(interval) && interval > 0 ? interval * 1e3 : 1e3;
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
  async _tokenForPolling() {
    const claims = this._token ? decodeJwt(this._token) : null;
    const expiresSoon = !claims?.exp || claims.exp * 1e3 - Date.now() < 3e4;
    return expiresSoon ? this._getToken(this._token ? "refresh" : "connect") : this._token;
  }
  /**
   * The degraded mode over one server-sent events stream for every channel (v1.1
   * `GET /api/realtime/sse/`), with a one-time ticket per opening (EventSource sends no
   * headers). The browser's own reconnect would reuse a spent ticket, so every end of the
   * stream closes it and a new one opens with a fresh ticket and the last cursor (`?since=`).
   * A stream that keeps failing before `ready` hands over to the long poll.
   */
  async _sseLoop(generation) {
    const signal = this._pollAbort?.signal;
    const current = () => generation === this._pollGeneration && this.state === State.DEGRADED;
    const names = this._pollChannels();
    const renewed = { done: false };
    const cursor = { value: null };
    let failures = 0;
    let quickEnds = 0;
    while (current()) {
      let outcome;
      const startedAt = Date.now();
      try {
        const response = await this._authorizedFetch(this.ticketUrl, { method: "POST", signal }, renewed);
        if (!current()) return;
        if (response === null) continue;
        if (!response.ok) throw new RealtimeError(`http_${response.status}`, `ticket answered ${response.status}`);
        const { ticket } = await response.json();
        if (!current()) return;
        renewed.done = false;
        outcome = await this._sseStream(names, ticket, cursor, generation, renewed);
      } catch (error) {
        if (!current() || error?.name === "AbortError") return;
        if (error?.code === "unauthorized") {
          this._unauthorized(error.message, "session_expired");
          return;
        }
        outcome = "failed";
      }
      if (!current()) return;
      if (outcome === "ended") {
        failures = 0;
        quickEnds = Date.now() - startedAt < 1e3 ? quickEnds + 1 : 0;
        if (quickEnds > 1) await sleep(backoffDelay(this.options.backoffBaseMs, Math.min(quickEnds - 1, 5)), signal);
        continue;
      }
      failures += 1;
      if (failures >= MAX_SSE_FAILURES) {
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
  _sseStream(names, ticket, cursor, generation, renewed) {
    return new Promise((resolve) => {
      const url = new URL(this.sseUrl);
      for (const name of names) url.searchParams.append("channel", name);
      url.searchParams.set("ticket", ticket);
      if (cursor.value) url.searchParams.set("since", cursor.value);
      const source = new this._EventSource(url.href);
      const signal = this._pollAbort?.signal;
      let opened = false;
      let held = null;
      let done = false;
      const finish = (outcome) => {
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
      const apply = (kind, event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        if (kind === "channel_error") {
          this._onPollRefused(String(data.channel), String(data.code), String(data.message ?? ""));
        } else if (kind === "resync") {
          const ch = this._channel(String(data.channel));
          if (!(ch.epoch === data.epoch && ch.offset >= data.offset)) {
            const reason = ch.epoch !== data.epoch ? "epoch_changed" : "gap";
            this._reposition(ch, data.epoch, data.offset);
            this._emit("resync", { channel: ch.name, reason, epoch: data.epoch, offset: data.offset });
          }
        } else if (data && typeof data === "object" && typeof data.channel === "string") {
          this._onEnvelope(data);
        }
        if (event.lastEventId) cursor.value = event.lastEventId;
      };
      const on = (kind) => (event) => {
        if (done) return;
        if (!live()) {
          finish("ended");
          return;
        }
        if (held) held.push({ kind, event });
        else apply(kind, event);
      };
      source.addEventListener("ready", (event) => {
        if (done) return;
        if (!live()) {
          finish("ended");
          return;
        }
        opened = true;
        this._pollFailures = 0;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          finish("failed");
          return;
        }
        const behind = [];
        for (const [name, position] of Object.entries(data.channels || {})) {
          const ch = this._channel(name);
          if (ch.epoch == null) this._reposition(ch, position.epoch, position.offset);
          else if (!(position.epoch === ch.epoch && (position.recovered || position.offset === ch.offset))) behind.push(name);
        }
        if (event.lastEventId) cursor.value = event.lastEventId;
        if (!behind.length) {
          this._markListening();
          return;
        }
        held = [];
        void this._catchUp(behind, renewed).then(() => {
          const waiting = held || [];
          held = null;
          if (done || !live()) return;
          for (const { kind, event: next } of waiting) apply(kind, next);
          this._markListening();
        }, (error) => {
          if (error?.code === "unauthorized") {
            this._unauthorized(error.message, "session_expired");
          }
          finish("failed");
        });
      });
      source.addEventListener("resync", on("resync"));
      source.addEventListener("channel_error", on("channel_error"));
      const listen = (type) => source.addEventListener(type, on("envelope"));
      for (const type of this._sseTypes) listen(type);
      this._sseListen = listen;
      source.onerror = () => finish(opened ? "ended" : "failed");
    });
  }
  /** One multiplexed poll with timeout 0 from the client's positions of `names`. */
  async _catchUp(names, renewed) {
    const since = {};
    for (const name of names) {
      const ch = this._channel(name);
      since[name] = ch.epoch != null ? { epoch: ch.epoch, offset: ch.offset } : null;
    }
    const init = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channels: since, timeout: 0 }),
      signal: this._pollAbort?.signal
    };
    const response = await this._authorizedFetch(this.pollUrl, init, renewed) ?? await this._authorizedFetch(this.pollUrl, init, renewed);
    if (!response?.ok) throw new RealtimeError(`http_${response?.status}`, `poll answered ${response?.status}`);
    const body = await response.json();
    for (const [name, answer] of Object.entries(body.channels || {})) {
      if (!(name in since)) continue;
      if (answer.error) this._onPollRefused(name, answer.error.code, answer.error.message);
      else this._applyPoll(this._channel(name), since[name], answer);
    }
  }
  _applyPoll(ch, since, body) {
    if (!this._acceptRecovery(ch, since, body)) return;
    for (const message of body.messages || []) this._onEnvelope(message);
    if (body.offset > ch.offset) ch.offset = body.offset;
  }
}
function errorMessage(error) {
  if (error && typeof error === "object" && "message" in error) return String(error.message);
  return String(error);
}
function executionFromRest(row) {
  return {
    id: String(row.id),
    teamId: String(row.team),
    status: row.status,
    progress: row.progress,
    currentStep: row.current_step ?? null,
    result: row.result ?? null,
    error: row.error ?? null,
    updatedAt: row.updated_at,
    createdAt: row.created_at ?? null
  };
}
function executionFromUpdate(update, previous) {
  return {
    id: String(update.execution_id),
    teamId: String(update.team_id),
    status: update.status,
    progress: update.progress,
    currentStep: update.current_step ?? null,
    result: update.result ?? null,
    error: update.error ?? null,
    updatedAt: update.updated_at,
    createdAt: previous?.createdAt ?? null
  };
}
export {
  CloseCode,
  RealtimeClient,
  RealtimeError,
  SUBPROTOCOL,
  State,
  TEAM_EVENT_TYPES,
  decodeJwt,
  RealtimeClient as default,
  executionFromRest,
  executionFromUpdate
};
