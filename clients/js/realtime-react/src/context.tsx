"use client";
/**
 * The provider and the basic hooks. Nothing here touches `window` at import: the client is
 * created in an effect, so server rendering (Next.js) renders children with no client, and
 * the hooks report `idle` until the browser mounts.
 */
import {
  createContext,
  type ReactNode,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import {
  type ConnectionState,
  type Envelope,
  RealtimeClient,
  type RealtimeOptions,
  type StateInfo,
  type TokenRequest,
} from "@renum/realtime";

/** Makes an authenticated REST call to the service; throws `ApiError` on a non-2xx answer. */
export type ApiCall = <T = unknown>(path: string, init?: RequestInit) => Promise<T>;

export class ApiError extends Error {
  status: number;
  body: unknown;

  constructor(status: number, message: string, body: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export interface RealtimeContextValue {
  /** null during server rendering and before the first effect. */
  client: RealtimeClient | null;
  /** REST calls with the same credentials (`/api/...` on `apiUrl`). */
  api: ApiCall;
}

const RealtimeContext = createContext<RealtimeContextValue | null>(null);

export interface RealtimeProviderProps {
  /** Returns an access JWT (see `TokenRequest`); throw when the user must sign in again. */
  getToken: (request: TokenRequest) => Promise<string> | string;
  /** WebSocket URL (default `/ws/` on the page's host; e.g. `ws://localhost:8000/ws/`). */
  url?: string;
  /** Base of the REST API (default: the socket's host over http(s)). */
  apiUrl?: string;
  /** Any other client option (`maxAttempts`, `probeIntervalMs`, `shareAcrossTabs: false`...). Read once, at creation. */
  options?: Omit<RealtimeOptions, "getToken" | "url">;
  /** A client made by the application (tests, or sharing one outside React). Not disconnected on unmount. */
  client?: RealtimeClient;
  /** Changing it (e.g. the signed-in user's id) replaces the client. */
  sessionKey?: string | number | null;
  children?: ReactNode;
}

function apiBase(socketUrl: string): string {
  const url = new URL(socketUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = "/";
  url.search = "";
  return url.href.replace(/\/$/, "");
}

/**
 * One client per signed-in user for the whole tree. Safe under StrictMode: the unmount and
 * re-mount of the double effect reuse the same client (its teardown is deferred one task and
 * cancelled by the re-mount), so there is one socket and no reconnect.
 */
export function RealtimeProvider({ getToken, url, apiUrl, options, client: given, sessionKey, children }:
  RealtimeProviderProps) {
  const [client, setClient] = useState<RealtimeClient | null>(given ?? null);
  const tokenRef = useRef(getToken);
  tokenRef.current = getToken;
  const optionsRef = useRef(options);
  const owned = useRef<{ client: RealtimeClient; key: unknown; teardown?: ReturnType<typeof setTimeout> } | null>(null);

  useEffect(() => {
    if (given) {
      setClient(given);
      return;
    }
    let entry = owned.current;
    if (entry && entry.key === (sessionKey ?? null)) {
      clearTimeout(entry.teardown);
      entry.teardown = undefined;
    } else {
      if (entry) entry.client.disconnect();
      const created = new RealtimeClient({
        // One connection per browser: tabs of the same user share the leader tab's socket.
        shareAcrossTabs: true,
        ...optionsRef.current,
        url: url ?? "/ws/",
        getToken: (request) => tokenRef.current(request),
      });
      entry = owned.current = { client: created, key: sessionKey ?? null };
    }
    const current = entry;
    current.client.connect();
    setClient(current.client);
    return () => {
      current.teardown = setTimeout(() => {
        current.client.disconnect();
        if (owned.current === current) owned.current = null;
      }, 0);
    };
  }, [given, url, sessionKey]);

  const api = useCallback<ApiCall>(async <T,>(path: string, init: RequestInit = {}) => {
    const base = apiUrl ?? (client ? apiBase(client.url) : "");
    const call = async (reason: TokenRequest["reason"]) => {
      const token = await tokenRef.current({ reason, previous: null });
      const headers = new Headers(init.headers);
      headers.set("Authorization", `Bearer ${token}`);
      headers.set("Accept", "application/json");
      if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
      return fetch(/^https?:\/\//.test(path) ? path : base + path, { ...init, headers });
    };
    let response = await call("connect");
    if (response.status === 401) response = await call("unauthorized");
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (!response.ok) {
      throw new ApiError(response.status, (body && typeof body === "object" && "detail" in body
        ? String((body as { detail: unknown }).detail) : `${path} answered ${response.status}`), body);
    }
    return body as T;
  }, [apiUrl, client]);

  const value = useMemo(() => ({ client, api }), [client, api]);
  return <RealtimeContext.Provider value={value}>{children}</RealtimeContext.Provider>;
}

/** The client (null before mount) and the REST helper. Throws outside a `RealtimeProvider`. */
export function useRealtime(): RealtimeContextValue {
  const value = useContext(RealtimeContext);
  if (!value) throw new Error("useRealtime() needs a <RealtimeProvider> above it");
  return value;
}

export interface ConnectionStatus {
  state: ConnectionState;
  info: StateInfo;
  /** For a status pill: `connected`, `reconnecting (2 of 5)`, `degraded: polling`, a refusal's reason... */
  label: string;
}

const IDLE: { state: ConnectionState; info: StateInfo } = { state: "idle", info: {} };

/** A short human label of a state (the bell shows it). */
export function connectionLabel(state: ConnectionState, info: StateInfo): string {
  switch (state) {
    case "reconnecting":
      return info.reason && info.code === 4003
        ? `reconnecting (${info.attempt} of ${info.maxAttempts}): ${info.reason}`
        : `reconnecting (${info.attempt} of ${info.maxAttempts})`;
    case "degraded":
      return "degraded: polling";
    case "failed":
    case "unauthorized":
      return info.reason ? `${state}: ${info.reason}` : state;
    default:
      return state;
  }
}

/** The connection state, re-rendering on every change. */
export function useConnectionState(): ConnectionStatus {
  const { client } = useRealtime();
  const snapshot = useRef(IDLE);
  const subscribe = useCallback((notify: () => void) => {
    if (!client) return () => {};
    return client.onStateChange(notify);
  }, [client]);
  const read = useCallback(() => {
    if (!client) return IDLE;
    const last = snapshot.current;
    // The same object while nothing changed: useSyncExternalStore compares by identity.
    if (last.state !== client.state || last.info !== client.stateInfo) {
      snapshot.current = { state: client.state, info: client.stateInfo };
    }
    return snapshot.current;
  }, [client]);
  const { state, info } = useSyncExternalStore(subscribe, read, () => IDLE);
  return { state, info, label: connectionLabel(state, info) };
}

/**
 * Follow a channel while the component is mounted. The handler may change on every render: the
 * latest one is called, and the subscription is made once per (client, channel).
 */
export function useChannel<T = unknown>(channel: string | null | undefined,
  handler: (message: Envelope<T>) => void): void {
  const { client } = useRealtime();
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  useEffect(() => {
    if (!client || !channel) return;
    return client.subscribe<T>(channel, (message) => handlerRef.current(message));
  }, [client, channel]);
}
