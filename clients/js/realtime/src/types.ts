/** Types of the Renum realtime protocol (v1 and v1.1) as the client sees them. */

export const State = Object.freeze({
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
  UNAUTHORIZED: "unauthorized",
} as const);

export type ConnectionState = (typeof State)[keyof typeof State];

/** The subprotocol of protocol v1. */
export const SUBPROTOCOL = "renum.v1";

/** Close codes of the protocol ("Close codes"). */
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
  /** Used by this client when it drops a socket that went silent (reported, never sent). */
  HEARTBEAT_TIMEOUT: 4000,
} as const);

/**
 * Why the client stopped in `unauthorized`, so that an app can tell the user the right thing:
 * the session ended (sign in again), the account was deactivated (signing in will not help),
 * or the credentials were refused for another reason.
 */
export type UnauthorizedCause = "session_expired" | "account_deactivated" | "credentials_refused";

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
  /** Human-readable reason (the server's close reason, or why credentials could not be renewed). */
  reason?: string;
  /** `unauthorized`: which kind of refusal it was. */
  cause?: UnauthorizedCause;
  /** `connected`: the server's connection id. */
  connectionId?: string;
  /** `degraded`: messages arrive over HTTP. */
  polling?: boolean;
  /**
   * `degraded`: which HTTP transport: `sse` (one server-sent events stream), `poll` (multiplexed
   * long poll) or `events` (per channel, v1 servers).
   */
  transport?: "sse" | "poll" | "events";
  /**
   * `degraded`: the HTTP transport has placed every channel (the stream's `ready`, or the first
   * poll answered). Until then, events of a channel the client held no position for are not
   * yet followed: an app that loaded its state before should reload it once this turns true.
   */
  listening?: boolean;
  /** This tab follows another tab's connection (see `shareAcrossTabs`). */
  follower?: boolean;
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

export interface NotificationAction {
  type: string;
  payload: unknown;
}

/** A notification, as the socket and the REST API send it. */
export interface Notification {
  id: string;
  user_id: string;
  type: "info" | "success" | "warning" | "error";
  title: string;
  message: string;
  read: boolean;
  created_at: string;
  action: NotificationAction | null;
  /** In the archive, not the inbox (a new notification: false). */
  archived: boolean;
}

/**
 * Payload of `notification_unread`, `notification_archived`, `notification_unarchived` and
 * `notification_deleted` on `user:<id>`: the notifications that changed state.
 */
export interface NotificationIds {
  ids: string[];
}

export type TeamRole = "owner" | "member";

/** `team_member_joined` / `team_member_left` payload on `team:<id>`. */
export interface TeamMemberEvent {
  team_id: string;
  user_id: string;
  username: string;
  role: TeamRole;
}

/** `team_member_role_changed` payload on `team:<id>`. */
export interface TeamRoleChangedEvent extends TeamMemberEvent {
  previous_role: TeamRole;
}

/** `team_renamed` payload on `team:<id>`. */
export interface TeamRenamedEvent {
  team_id: string;
  name: string;
  previous_name: string;
}

/** A team event as `useTeamEvents` / `onMessage` deliver it, discriminated by `type`. */
export type TeamEvent =
  | { type: "team_member_joined" | "team_member_left"; payload: TeamMemberEvent }
  | { type: "team_member_role_changed"; payload: TeamRoleChangedEvent }
  | { type: "team_renamed"; payload: TeamRenamedEvent };

export const TEAM_EVENT_TYPES: readonly TeamEvent["type"][] = Object.freeze([
  "team_member_joined", "team_member_left", "team_member_role_changed", "team_renamed",
] as const);

export type ExecutionStatus = "queued" | "running" | "completed" | "failed";

/** An execution update as the socket sends it (`execution_update` payload). */
export interface ExecutionUpdate {
  execution_id: string;
  team_id: string;
  status: ExecutionStatus;
  progress: number;
  current_step: string | null;
  result: unknown;
  error: string | null;
  updated_at: string;
}

/** The first frame of a connection (`welcome` payload). Times: ISO 8601, UTC, milliseconds. */
export interface Welcome {
  user_id: string;
  connection_id: string;
  expires_at: string | null;
  heartbeat_s: number;
  channels: Record<string, Position>;
}

/** Reply to `subscribe` (and a server-side subscribe, without `reply_to`): `subscribed` payload. */
export interface Subscribed {
  channel: string;
  epoch: string;
  offset: number;
  /** False: the gap since `since` could not be filled; reload state over REST. */
  recovered: boolean;
  /** How many of the frames that follow are the replay of missed messages. */
  replayed: number;
}

/** Reply to `publish`: where the publication was stored (`published` payload). */
export interface Published {
  channel: string;
  offset: number;
  epoch: string;
}

/** Reply to `auth.refresh` (`auth.refreshed` payload). */
export interface AuthRefreshed {
  expires_at: string | null;
}

/** An `error` frame's payload: one of the protocol's codes and a message. */
export interface ErrorPayload {
  code: string;
  message: string;
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

/** The subset of the WebSocket API the client uses (tests pass a fake). */
export interface SocketLike {
  readyState: number;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketConstructor = new (url: string, protocols?: string | string[]) => SocketLike;

/** The subset of the EventSource API the client uses (tests pass a fake). */
export interface EventSourceLike {
  onerror: ((event: unknown) => void) | null;
  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void;
  close(): void;
}

export type EventSourceConstructor = new (url: string) => EventSourceLike;

export interface RealtimeOptions {
  /** WebSocket URL: absolute (`wss://host/ws/`) or a path (`/ws/`) on the page's host. */
  url?: string;
  /** Returns an access JWT; throw (or reject) when the user must sign in again. */
  getToken: (request: TokenRequest) => Promise<string> | string;
  /** fetch for the HTTP fallback (default: the global fetch). */
  fetch?: typeof fetch;
  /**
   * Multiplexed poll URL (default: `/api/realtime/poll/` on the socket's host); `false` disables
   * the HTTP fallback (then persistent failure means `failed`).
   */
  pollUrl?: string | false;
  /** Per-channel events URL used when the server has no multiplexed poll (v1 servers). */
  eventsUrl?: string;
  /**
   * Server-sent events URL (default: `/api/realtime/sse/` on the socket's host); `false`: the
   * degraded mode long-polls instead. Used only where `EventSource` exists and the poll is on.
   */
  sseUrl?: string | false;
  /** One-time ticket URL for the stream (default: `/api/realtime/ticket/` on the socket's host). */
  ticketUrl?: string;
  /** EventSource constructor (default: the global EventSource). */
  EventSource?: EventSourceConstructor;
  /**
   * Message types to listen for on the stream beyond the protocol's and those given to
   * `onMessage()` (EventSource delivers a named event only to listeners of that name).
   */
  sseEventTypes?: string[];
  /** WebSocket constructor (default: the global WebSocket). */
  WebSocket?: SocketConstructor;
  /** Shown in the admin's connection list (`client_id`, at most 64 characters). */
  clientId?: string;
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
  /**
   * One connection per browser, not per tab (default false; the React provider turns it on):
   * tabs of the same user and socket URL elect a leader with the Web Locks API (or, without
   * them, an election over BroadcastChannel); the leader keeps
   * the one socket (or the one stream or poll when degraded) and fans messages, state and resyncs out to
   * the other tabs over a BroadcastChannel; their subscriptions and commands go through it.
   * When the leader tab closes, another takes over, resuming from the positions it saw. Without
   * BroadcastChannel each tab keeps its own connection.
   */
  shareAcrossTabs?: boolean;
  /** JWT claim holding the user id (default `user_id`). */
  userIdClaim?: string;
}

export type Unsubscribe = () => void;
