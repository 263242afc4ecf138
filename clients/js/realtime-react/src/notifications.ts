"use client";
/**
 * `useNotifications()`: the user's notifications, loaded over REST page by page, kept live by
 * the socket (new ones, reads from other tabs and devices, the unread count), reloaded when the
 * user channel must resync. The list is bounded (`maxItems`): a burst of thousands costs a
 * bounded amount of memory and DOM.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import type { Envelope, Notification } from "@renum/realtime";
import { useConnectionState, useRealtime } from "./context.js";

export interface NotificationsOptions {
  /** REST page size (default 20, at most 200). */
  pageSize?: number;
  /** Notifications kept in memory; the oldest are dropped past it (default 100). */
  maxItems?: number;
  /** Only unread ones (`?unread=true`). */
  unreadOnly?: boolean;
  /** Called for each notification that arrives live (not for loaded pages): toasts. */
  onNotification?: (notification: Notification) => void;
}

export interface NotificationsResult {
  items: Notification[];
  unreadCount: number;
  loading: boolean;
  error: Error | null;
  /** There is an older page to load. */
  hasMore: boolean;
  loadMore: () => Promise<void>;
  reload: () => Promise<void>;
  markRead: (id: string) => Promise<void>;
  markAllRead: () => Promise<void>;
}

interface Page {
  next: string | null;
  results: Notification[];
}

interface ReadEvent {
  ids: string[];
  all: boolean;
  before?: string;
}

/** Apply a `notification_read` event (or a local read) to a list. */
export function applyRead(items: Notification[], event: ReadEvent): Notification[] {
  const ids = new Set(event.ids);
  const before = event.before ? Date.parse(event.before) : Infinity;
  let changed = false;
  const out = items.map((item) => {
    const hit = event.all ? !item.read && Date.parse(item.created_at) <= before : !item.read && ids.has(item.id);
    if (!hit) return item;
    changed = true;
    return { ...item, read: true };
  });
  return changed ? out : items;
}

/** Put a live notification first (once), keeping at most `max`. */
export function addNotification(items: Notification[], notification: Notification, max: number): Notification[] {
  if (items.some((item) => item.id === notification.id)) return items;
  const out = [notification, ...items];
  return out.length > max ? out.slice(0, max) : out;
}

export function useNotifications(options: NotificationsOptions = {}): NotificationsResult {
  const { client, api } = useRealtime();
  const pageSize = Math.min(200, options.pageSize ?? 20);
  const maxItems = options.maxItems ?? 100;
  const unreadOnly = options.unreadOnly ?? false;
  const onNotification = useRef(options.onNotification);
  onNotification.current = options.onNotification;

  const [items, setItems] = useState<Notification[]>([]);
  const itemsRef = useRef(items);
  itemsRef.current = items;
  const [unreadCount, setUnreadCount] = useState(0);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<Error | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const generation = useRef(0);

  const query = `/api/notifications/?page_size=${pageSize}${unreadOnly ? "&unread=true" : ""}`;

  const reload = useCallback(async () => {
    const mine = ++generation.current;
    setLoading(true);
    try {
      const [page, count] = await Promise.all([
        api<Page>(query),
        api<{ count: number }>("/api/notifications/unread-count/"),
      ]);
      if (mine !== generation.current) return;
      setItems(page.results.slice(0, maxItems));
      setNext(page.next);
      setUnreadCount(count.count);
      setError(null);
    } catch (caught) {
      if (mine === generation.current) setError(caught as Error);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, [api, query, maxItems]);

  const loadMore = useCallback(async () => {
    if (!next) return;
    const mine = generation.current;
    setLoading(true);
    try {
      const page = await api<Page>(next);
      if (mine !== generation.current) return;
      setItems((current) => {
        const known = new Set(current.map((item) => item.id));
        return [...current, ...page.results.filter((item) => !known.has(item.id))];
      });
      setNext(page.next);
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setLoading(false);
    }
  }, [api, next]);

  useEffect(() => {
    if (!client) return;
    void reload();
    const offs = [
      client.onMessage<Notification>("notification", (message: Envelope<Notification>) => {
        setItems((current) => addNotification(current, message.payload, maxItems));
        onNotification.current?.(message.payload);
      }),
      client.onMessage<{ count: number }>("unread_count", (message) => setUnreadCount(message.payload.count)),
      client.onMessage<ReadEvent>("notification_read", (message) => setItems((current) => applyRead(current, message.payload))),
      client.onResync((event) => {
        if (event.channel.startsWith("user:")) void reload();
      }),
    ];
    return () => { for (const off of offs) off(); };
  }, [client, reload, maxItems]);

  // Reads made in this tab reach the user's other tabs at once, before the server's
  // `notification_read` and `unread_count` (which then confirm them).
  const tabs = useRef<BroadcastChannel | null>(null);
  const applyLocalRead = useCallback((event: ReadEvent) => {
    // Decided from the rendered list: state updaters may run later (and twice in StrictMode).
    const unread = itemsRef.current.filter((item) => !item.read && (event.all || event.ids.includes(item.id))).length;
    if (event.all) setUnreadCount(0);
    else if (unread) setUnreadCount((count) => Math.max(0, count - unread));
    setItems((current) => applyRead(current, event));
  }, []);
  useConnectionState(); // re-render when the client learns its user id (from the token, then the welcome)
  const userId = client?.userId ?? null;
  useEffect(() => {
    const Channel = (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
    if (!client || !userId || !Channel) return;
    // Per user: two tabs may be signed in as different users.
    const channel = new Channel(`renum-notifications:${client.url}:${userId}`);
    channel.onmessage = (message: MessageEvent<ReadEvent>) => applyLocalRead(message.data);
    tabs.current = channel;
    return () => { channel.close(); if (tabs.current === channel) tabs.current = null; };
  }, [client, userId, applyLocalRead]);
  const shareRead = (event: ReadEvent) => {
    try { tabs.current?.postMessage(event); } catch { /* closed */ }
  };

  const markRead = useCallback(async (id: string) => {
    applyLocalRead({ ids: [id], all: false });
    shareRead({ ids: [id], all: false });
    try {
      if (client?.state === "connected") await client.command("notification.mark_read", { id });
      else await api(`/api/notifications/${encodeURIComponent(id)}/read/`, { method: "POST" });
    } catch (caught) {
      setError(caught as Error);
      void reload();
    }
  }, [api, client, reload, applyLocalRead]);

  const markAllRead = useCallback(async () => {
    applyLocalRead({ ids: [], all: true });
    shareRead({ ids: [], all: true });
    try {
      if (client?.state === "connected") await client.command("notification.mark_all_read", {});
      else await api("/api/notifications/read-all/", { method: "POST" });
    } catch (caught) {
      setError(caught as Error);
      void reload();
    }
  }, [api, client, reload, applyLocalRead]);

  return { items, unreadCount, loading, error, hasMore: next !== null, loadMore, reload, markRead, markAllRead };
}
