// Built from clients/js/realtime (npm run build); do not edit: edit the TypeScript sources.
/** Types of the Renum realtime protocol (v1 and v1.1) as the client sees them. */
export declare const State: Readonly<{
    /** Not started, or stopped by `disconnect()`. */
    readonly IDLE: "idle";
    /** Opening the first socket. */
    readonly CONNECTING: "connecting";
    /** Welcomed by the server: live. */
    readonly CONNECTED: "connected";
    /** The socket dropped; attempt `info.attempt` of `info.maxAttempts` is scheduled or running. */
    readonly RECONNECTING: "reconnecting";
    /** The WebSocket keeps failing: messages arrive over HTTP (poll); the socket is probed. */
    readonly DEGRADED: "degraded";
    /** Gave up (socket and polling failed); `retry()` starts again. */
    readonly FAILED: "failed";
    /** The browser reports no network; the client resumes when it comes back. */
    readonly OFFLINE: "offline";
    /** The credentials were refused and `getToken` could not renew them: sign in again. */
    readonly UNAUTHORIZED: "unauthorized";
}>;
export type ConnectionState = (typeof State)[keyof typeof State];
/** The subprotocol of protocol v1. */
export declare const SUBPROTOCOL = "renum.v1";
/** Close codes of the protocol ("Close codes"). */
export declare const CloseCode: Readonly<{
    readonly NORMAL: 1000;
    readonly GOING_AWAY: 1001;
    readonly SERVICE_RESTART: 1012;
    readonly UNAUTHORIZED: 4001;
    readonly FORBIDDEN: 4003;
    readonly POLICY_VIOLATION: 4008;
    readonly SLOW_CONSUMER: 4009;
    readonly TOKEN_EXPIRED: 4011;
    readonly RATE_LIMITED: 4029;
    /** Used by this client when it drops a socket that went silent (reported, never sent). */
    readonly HEARTBEAT_TIMEOUT: 4000;
}>;
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
export type TeamEvent = {
    type: "team_member_joined" | "team_member_left";
    payload: TeamMemberEvent;
} | {
    type: "team_member_role_changed";
    payload: TeamRoleChangedEvent;
} | {
    type: "team_renamed";
    payload: TeamRenamedEvent;
};
export declare const TEAM_EVENT_TYPES: readonly TeamEvent["type"][];
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
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
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

/**
 * One execution shape for REST and socket.
 *
 * The REST API (`GET /api/executions/`, `GET /api/executions/<id>/`) and the socket's
 * `execution_update` payload describe the same execution with different names and types:
 *
 * | Execution     | REST                       | socket (`execution_update`) |
 * |---------------|----------------------------|-----------------------------|
 * | `id`          | `id` (UUID string)         | `execution_id` (string)     |
 * | `teamId`      | `team` (integer)           | `team_id` (string)          |
 * | `status`      | `status`                   | `status`                    |
 * | `progress`    | `progress` (0..100)        | `progress`                  |
 * | `currentStep` | `current_step` or null     | `current_step` or null      |
 * | `result`      | `result`                   | `result`                    |
 * | `error`       | `error` or null            | `error` or null             |
 * | `updatedAt`   | `updated_at`               | `updated_at`                |
 * | `createdAt`   | `created_at`               | (absent: null)              |
 *
 * Ids are strings everywhere in `Execution` (a team id `7` from REST becomes `"7"`), so a
 * state loaded over REST and an update from the socket compare and merge directly.
 */
export interface Execution {
    id: string;
    teamId: string;
    status: ExecutionStatus;
    progress: number;
    currentStep: string | null;
    result: unknown;
    error: string | null;
    updatedAt: string;
    createdAt: string | null;
}
/** An execution as `GET /api/executions/` returns it. */
export interface RestExecution {
    id: string;
    team: number | string;
    status: ExecutionStatus;
    progress: number;
    current_step: string | null;
    result: unknown;
    error: string | null;
    created_by?: number | null;
    created_at?: string;
    started_at?: string | null;
    finished_at?: string | null;
    updated_at: string;
}
export declare function executionFromRest(row: RestExecution): Execution;
/** `previous` keeps what the socket does not send (`createdAt`). */
export declare function executionFromUpdate(update: ExecutionUpdate, previous?: Execution | null): Execution;

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
/** A failed request, an `error` frame, or a lost connection. */
export declare class RealtimeError extends Error {
    /** Protocol code (`forbidden`, `not_found`...) or client code (`unavailable`, `timeout`, `disconnected`, `unauthorized`, `http_<status>`). */
    code: string;
    detail: Record<string, unknown>;
    constructor(code: string, message: string, detail?: Record<string, unknown>);
}
type Options = Required<Omit<RealtimeOptions, "heartbeatS" | "positions" | "fetch" | "WebSocket" | "pollUrl" | "eventsUrl" | "clientId" | "sseUrl" | "ticketUrl" | "EventSource" | "sseEventTypes">> & RealtimeOptions;
type Listener = (...args: any[]) => void;
/**
 * Decode a JWT's claims without verifying it (the server verifies); null when unreadable.
 */
export declare function decodeJwt(token: string): Record<string, any> | null;
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
export declare class RealtimeClient {
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
    state: ConnectionState;
    /** Details of the current state: attempt, maxAttempts, delayMs, code, reason. */
    stateInfo: StateInfo;
    /** The user id from the welcome (or the token), once known. */
    userId: string | null;
    /** The last welcome payload. */
    welcome: Welcome | null;
    private _fetch;
    private _WebSocket;
    private _listeners;
    private _channels;
    private _pending;
    private _nextId;
    private _token;
    private _wanted;
    private _ws;
    private _welcomed;
    private _everWelcomed;
    private _attempt;
    private _renewedAfter4001;
    private _timers;
    private _openGeneration;
    private _pollGeneration;
    private _pollAbort;
    private _pollFailures;
    private _polling;
    /** The server answered 404 to the multiplexed poll: per-channel polling instead. */
    private _legacyPolling;
    private _EventSource;
    /** The stream of this degraded period failed: long-poll until the socket is back. */
    private _sseFailed;
    private _sseTypes;
    /** Adds a listener for one more message type to the open stream. */
    private _sseListen;
    private _lastFrameAt;
    /** `leader` or `follower` while sharing one connection between tabs; null otherwise. */
    private _role;
    private _tab;
    private _bus;
    private _lockAbort;
    private _releaseLock;
    /** Leader: the channels each follower tab wants, with their unsubscribe functions. */
    private _followerWants;
    private _forwarded;
    private _onlineHandler;
    private _offlineHandler;
    constructor(options: RealtimeOptions);
    /** Start (or resume) the connection. Safe to call again; it does nothing while active. */
    connect(): void;
    /** Whether this tab follows another tab's connection (`shareAcrossTabs`). */
    get follower(): boolean;
    /** Close the connection and stop reconnecting and polling. Positions are kept for `connect()`. */
    disconnect(): void;
    /** Try again now: from `failed`, `unauthorized`, `degraded` (probe now) or `reconnecting`. */
    retry(): void;
    /**
     * Follow a channel. `callback(envelope)` gets every message of it, once, in offset order
     * within a connection. The user channel and `broadcast` are followed automatically by the
     * server; subscribing to them only adds a callback.
     */
    subscribe<T = unknown>(channel: string, callback: (message: Envelope<T>) => void): Unsubscribe;
    /**
     * Send a command frame and wait for its reply (matched by `reply_to`).
     * Resolves with the reply's `payload`; rejects with a RealtimeError on an `error` frame, a
     * timeout, or when the socket is not connected (`unavailable`: e.g. in `degraded`).
     */
    send<R = any>(type: string, data?: Record<string, unknown>): Promise<R>;
    /** Run a domain command; resolves with the service's answer (`command_result.payload.result`). */
    command<R = any>(name: string, args?: Record<string, unknown>): Promise<R>;
    /**
     * Listen to a client event: `state` (state, info), `message` (envelope), `resync`
     * ({channel, reason, epoch, offset}), `reconnect` ({userId}), `welcome` (payload),
     * `error` (RealtimeError). Returns the function that removes the listener.
     */
    on(event: "state", callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe;
    on(event: "message", callback: (message: Envelope<any>) => void): Unsubscribe;
    on(event: "resync", callback: (event: ResyncEvent) => void): Unsubscribe;
    on(event: "reconnect", callback: (event: {
        userId: string | null;
    }) => void): Unsubscribe;
    on(event: "welcome", callback: (welcome: Welcome) => void): Unsubscribe;
    on(event: "error", callback: (error: RealtimeError) => void): Unsubscribe;
    on(event: string, callback: Listener): Unsubscribe;
    /** `callback(state, info)` on every state change. */
    onStateChange(callback: (state: ConnectionState, info: StateInfo) => void): Unsubscribe;
    /** `callback({userId})` each time a connection is re-established after a loss. */
    onReconnect(callback: (event: {
        userId: string | null;
    }) => void): Unsubscribe;
    /** `callback({channel, reason, epoch, offset})` when state must be reloaded over REST. */
    onResync(callback: (event: ResyncEvent) => void): Unsubscribe;
    /** `callback(envelope)` for messages of one type, on any channel. */
    onMessage<T = any>(type: string, callback: (message: Envelope<T>) => void): Unsubscribe;
    /** The resume position of every channel: store it to resume across page loads. */
    positions(): Record<string, Position>;
    /** The channels the connection follows (auto, server-subscribed and subscribed). */
    channels(): string[];
    protected _emit(event: string, ...args: unknown[]): void;
    protected _setState(state: ConnectionState, info?: StateInfo): void;
    private _isLive;
    private _channel;
    private _clearTimers;
    private _getToken;
    private _unauthorized;
    private _socketUrl;
    /** Open a socket; `token`, when given, was just obtained for this attempt. */
    private _open;
    /**
     * Close the current socket without reacting to its close event. Always with 1000: browsers
     * refuse any other code below 3000 (`InvalidAccessError`) and would leave the socket open.
     */
    private _closeSocket;
    /** Drop every piece of state that belonged to the current socket (timers, pending replies). */
    private _forgetSocket;
    /** Give up on a socket that went silent, and react at once (its close may take minutes). */
    private _dropSocket;
    private _handleClose;
    /** 4001 / 4011: a new token first; no retry loop with credentials the server refused. */
    private _renewAndReopen;
    private _scheduleReconnect;
    private _giveUp;
    private _offline;
    private _online;
    private _onFrame;
    /**
     * The server subscribed this socket (e.g. the user joined a team). The channel is remembered
     * so that the next reconnect re-subscribes it with its position; otherwise it would be lost.
     */
    private _onServerSubscribed;
    private _onWelcome;
    private _sendSubscribe;
    private _onSubscribed;
    /**
     * Apply the position a subscribe reply or a poll answered for `since`; true when the gap
     * was recovered, else the channel restarts at that position (with a `resync` if it had one).
     */
    private _acceptRecovery;
    private _reposition;
    /** Deliver an envelope once per (channel, epoch, offset). */
    protected _onEnvelope(message: Envelope): void;
    private _dispatch;
    private _request;
    private _rejectPending;
    private _startHeartbeat;
    private _stopHeartbeat;
    private _scheduleRefresh;
    private _refreshToken;
    private _post;
    /** Follow the leader tab, and queue for the lock: the tab that gets it leads. */
    private _joinTabs;
    /** This tab got the lock: it opens the connection, from the positions it saw as a follower. */
    private _lead;
    private _leaveTabs;
    private _onTabMessage;
    /** A follower's request, sent by the leader on its socket. */
    private _forward;
    private _rejectForwarded;
    private _pollChannels;
    private _startDegraded;
    private _startPolling;
    private _useSse;
    /** A new channel while degraded: the one poll or stream restarts with it (legacy: one more loop). */
    private _restartPolling;
    private _stopPolling;
    /** The HTTP transport follows every channel from a known position (see `StateInfo.listening`). */
    private _markListening;
    private _scheduleProbe;
    private _pollFailed;
    private _authorizedFetch;
    /** The multiplexed long poll: one request for every channel (v1.1 `POST /api/realtime/poll/`). */
    private _pollLoop;
    /** What a failed poll request means for its loop: null to stop (aborted, credentials refused,
     *  or degraded mode given up), else how long to back off before the next request. */
    private _afterPollError;
    private _onPollRefused;
    private _pollChannel;
    /** Per-channel long poll (`GET /api/realtime/events/`), for servers without `/poll/`. */
    private _eventsLoop;
    private _tokenForPolling;
    /**
     * The degraded mode over one server-sent events stream for every channel (v1.1
     * `GET /api/realtime/sse/`), with a one-time ticket per opening (EventSource sends no
     * headers). The browser's own reconnect would reuse a spent ticket, so every end of the
     * stream closes it and a new one opens with a fresh ticket and the last cursor (`?since=`).
     * A stream that keeps failing before `ready` hands over to the long poll.
     */
    private _sseLoop;
    /**
     * One stream until it ends: "ended" after `ready` (reopen from the cursor), "failed" before.
     * `ready` gives each channel's position on the server: where one differs from the client's
     * (a stream opened without a cursor starts at the current positions), one poll with timeout 0
     * from the client's positions catches up (or answers `recovered: false`: a resync) while the
     * stream's events wait; then they are applied, de-duplicated by (channel, epoch, offset).
     */
    private _sseStream;
    /** One multiplexed poll with timeout 0 from the client's positions of `names`. */
    private _catchUp;
    private _applyPoll;
}
export default RealtimeClient;
