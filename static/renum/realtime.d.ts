/**
 * Types of the Renum realtime client (static/renum/realtime.js), protocol v1.
 * See docs/client.md for the behaviour behind each state and event.
 */

export declare const State: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  CONNECTED: "connected";
  RECONNECTING: "reconnecting";
  DEGRADED: "degraded";
  FAILED: "failed";
  OFFLINE: "offline";
  UNAUTHORIZED: "unauthorized";
}>;

export type ConnectionState = (typeof State)[keyof typeof State];

export declare const SUBPROTOCOL: "renum.v1";

export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  SERVICE_RESTART: 1012;
  UNAUTHORIZED: 4001;
  FORBIDDEN: 4003;
  POLICY_VIOLATION: 4008;
  SLOW_CONSUMER: 4009;
  TOKEN_EXPIRED: 4011;
  RATE_LIMITED: 4029;
  HEARTBEAT_TIMEOUT: 4000;
}>;

/** Details that come with a state change. */
export interface StateInfo {
  /** `reconnecting`: this attempt (1-based) ... */
  attempt?: number;
  /** ... of this many. */
  maxAttempts?: number;
  /** `reconnecting`: milliseconds until the attempt. */
  delayMs?: number;
  /** The close code that caused the change, if any. */
  code?: number;
  /** Human-readable reason (close reason, or why credentials could not be renewed). */
  reason?: string;
  /** `connected`: the server's connection id. */
  connectionId?: string;
  /** `degraded`: messages arrive by REST long polling. */
  polling?: boolean;
}

export interface Position {
  epoch: string;
  offset: number;
}

/** A channel message (the protocol's envelope). */
export interface Envelope<T = unknown> {
  type: string;
  channel: string;
  offset: number;
  epoch: string;
  id: string;
  timestamp: string;
  sender: string;
  payload: T;
  target?: string | string[];
  /** A channel's current state sent on subscribe, not a stored message. */
  snapshot?: boolean;
}

export interface Notification {
  id: string;
  user_id: string;
  type: "info" | "success" | "warning" | "error";
  title: string;
  message: string;
  read: boolean;
  created_at: string;
  action: { type: string; payload: unknown } | null;
}

export interface ExecutionUpdate {
  execution_id: string;
  team_id: string;
  status: "queued" | "running" | "completed" | "failed";
  progress: number;
  current_step: string | null;
  result: unknown;
  error: string | null;
  updated_at: string;
}

export interface Welcome {
  user_id: string;
  connection_id: string;
  expires_at: string | null;
  heartbeat_s: number;
  channels: Record<string, Position>;
}

export interface ResyncEvent {
  channel: string;
  reason: "gap" | "epoch_changed";
  epoch: string;
  offset: number;
}

export interface TokenRequest {
  /** `connect` may return a cached token; `refresh`, `expired` and `unauthorized` need a new one. */
  reason: "connect" | "refresh" | "expired" | "unauthorized";
  /** The token used until now. */
  previous: string | null;
}

export interface RealtimeOptions {
  /** WebSocket URL: absolute (`wss://host/ws/`) or a path (`/ws/`) on the page's host. */
  url: string;
  /** Returns an access JWT; throw (or reject) when the user must log in again. */
  getToken: (request: TokenRequest) => Promise<string> | string;
  /** fetch for the polling fallback (default: the global fetch). */
  fetch?: typeof fetch;
  /** REST events URL (default: `/api/realtime/events/` on the socket's host); `false` disables polling. */
  pollUrl?: string | false;
  /** WebSocket constructor (default: the global WebSocket). */
  WebSocket?: typeof WebSocket;
  /** Reconnect attempts before falling back to polling (default 5). */
  maxAttempts?: number;
  /** First backoff delay in ms, doubled per attempt, +-20 % jitter (default 1000: 1, 2, 4, 8, 16 s). */
  backoffBaseMs?: number;
  /** A socket not welcomed within this counts as failed (default 10000). */
  connectTimeoutMs?: number;
  /** `send()` rejects with `timeout` after this (default 10000). */
  requestTimeoutMs?: number;
  /** Overrides the server's `heartbeat_s`. */
  heartbeatS?: number;
  /** Refresh the token this long before it expires (default 60000). */
  refreshLeadMs?: number;
  /** Long-poll wait in seconds (default 25). */
  pollTimeoutS?: number;
  /** In `degraded`, probe the WebSocket this often (default 30000). */
  probeIntervalMs?: number;
  /** Consecutive polling failures before `failed` (default 5). */
  maxPollFailures?: number;
  /** Resume from these positions (e.g. saved with `positions()`). */
  positions?: Record<string, Position>;
  /** JWT claim holding the user id (default `user_id`). */
  userIdClaim?: string;
}

export declare class RealtimeError extends Error {
  constructor(code: string, message: string, detail?: Record<string, unknown>);
  /** Protocol code (`forbidden`, `not_found`, `rate_limited`...) or client code (`unavailable`, `timeout`, `disconnected`, `unauthorized`). */
  code: string;
  detail: Record<string, unknown>;
}

export type Unsubscribe = () => void;

export declare class RealtimeClient {
  constructor(options: RealtimeOptions);
  readonly options: Required<RealtimeOptions>;
  readonly url: string;
  readonly pollUrl: string | null;
  readonly state: ConnectionState;
  readonly stateInfo: StateInfo;
  readonly userId: string | null;
  readonly welcome: Welcome | null;

  connect(): void;
  disconnect(): void;
  retry(): void;
  subscribe<T = unknown>(channel: string, callback: (message: Envelope<T>) => void): Unsubscribe;
  send<R = unknown>(type: string, data?: Record<string, unknown>): Promise<R>;
  command<R = unknown>(name: string, args?: Record<string, unknown>): Promise<R>;

  on(event: "state", callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe;
  on(event: "message", callback: (message: Envelope) => void): Unsubscribe;
  on(event: "resync", callback: (event: ResyncEvent) => void): Unsubscribe;
  on(event: "reconnect", callback: (event: { userId: string | null }) => void): Unsubscribe;
  on(event: "welcome", callback: (welcome: Welcome) => void): Unsubscribe;
  on(event: "error", callback: (error: RealtimeError) => void): Unsubscribe;

  onStateChange(callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe;
  onReconnect(callback: (event: { userId: string | null }) => void): Unsubscribe;
  onResync(callback: (event: ResyncEvent) => void): Unsubscribe;
  onMessage(type: "notification", callback: (message: Envelope<Notification>) => void): Unsubscribe;
  onMessage(type: "execution_update", callback: (message: Envelope<ExecutionUpdate>) => void): Unsubscribe;
  onMessage(type: "unread_count", callback: (message: Envelope<{ count: number }>) => void): Unsubscribe;
  onMessage<T = unknown>(type: string, callback: (message: Envelope<T>) => void): Unsubscribe;

  /** Resume positions of every channel. */
  positions(): Record<string, Position>;
}

/** Decode a JWT's claims without verifying it; null when unreadable. */
export declare function decodeJwt(token: string): Record<string, any> | null;

export default RealtimeClient;
