"use client";
/**
 * `useNotifications()`: the user's inbox (archived ones are not in it), loaded over REST page by
 * page, kept live by the socket (new ones; reads, unreads, archiving, unarchiving and deletions
 * made in other tabs and devices; the unread count), reloaded when the user channel must resync. The list is bounded (`maxItems`): a burst of thousands costs a
 * bounded amount of memory and DOM.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import type { Envelope, Notification, NotificationIds } from "@renum/realtime";
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
  /** Marks one unread again. */
  markUnread: (id: string) => Promise<void>;
  /** Moves one to the archive: it leaves the list (and the unread count). */
  archive: (id: string) => Promise<void>;
  /** Brings one back from the archive into the list, at its place by creation time. */
  unarchive: (id: string) => Promise<void>;
  /** Deletes one for good. */
  remove: (id: string) => Promise<void>;
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

/** A change made in this tab, shared with the user's other tabs before the server confirms it. */
type LocalChange =
  | ({ kind: "read" } & ReadEvent)
  | { kind: "unread" | "archive" | "delete"; ids: string[] };

/** Apply a `notification_unread` event (or a local unread) to a list. */
export function applyUnread(items: Notification[], ids: string[]): Notification[] {
  const wanted = new Set(ids);
  let changed = false;
  const out = items.map((item) => {
    if (!item.read || !wanted.has(item.id)) return item;
    changed = true;
    return { ...item, read: false };
  });
  return changed ? out : items;
}

/** Drop notifications that were archived or deleted. */
export function removeNotifications(items: Notification[], ids: string[]): Notification[] {
  const gone = new Set(ids);
  const out = items.filter((item) => !gone.has(item.id));
  return out.length === items.length ? items : out;
}

/**
 * Put notifications back (unarchived) at their place, newest first by `created_at`, once each.
 * With older pages still to load (`complete` false), one older than the last shown is left for
 * `loadMore()` to bring, so that the list never shows a hole.
 */
export function insertByCreation(items: Notification[], restored: Notification[], max: number,
  complete: boolean): Notification[] {
  let out = items;
  for (const notification of restored) {
    if (out.some((item) => item.id === notification.id)) continue;
    const at = Date.parse(notification.created_at);
    const last = out[out.length - 1];
    if (!complete && last && at < Date.parse(last.created_at)) continue;
    const index = out.findIndex((item) => Date.parse(item.created_at) < at);
    out = index < 0 ? [...out, notification] : [...out.slice(0, index), notification, ...out.slice(index)];
  }
  return out.length > max ? out.slice(0, max) : out;
}

/** Socket command and REST call of each single-notification change. */
const CHANGES = {
  unread: { command: "notification.mark_unread", path: "unread/", method: "POST" },
  archive: { command: "notification.archive", path: "archive/", method: "POST" },
  unarchive: { command: "notification.unarchive", path: "unarchive/", method: "POST" },
  delete: { command: "notification.delete", path: "", method: "DELETE" },
} as const;

/** Beyond this many unarchived at once, reloading costs less than fetching each. */
const MAX_RESTORE = 20;

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

  const nextRef = useRef(next);
  nextRef.current = next;
  // Unarchived ones come back as ids: fetch them and put them in place.
  const restore = useCallback(async (ids: string[]) => {
    if (ids.length > MAX_RESTORE) { void reload(); return; }
    const mine = generation.current;
    const found = await Promise.all(ids.map((id) =>
      api<Notification>(`/api/notifications/${encodeURIComponent(id)}/`).catch(() => null)));
    if (mine !== generation.current) return; // a reload brings them
    const back = found.filter((item): item is Notification =>
      item !== null && !item.archived && !(unreadOnly && item.read));
    if (back.length) setItems((current) => insertByCreation(current, back, maxItems, nextRef.current === null));
  }, [api, reload, unreadOnly, maxItems]);

  useEffect(() => {
    if (!client) return;
    void reload();
    const offs = [
      client.onMessage<Notification>("notification", (message: Envelope<Notification>) => {
        if (message.payload.archived) return; // not for the inbox
        setItems((current) => addNotification(current, message.payload, maxItems));
        onNotification.current?.(message.payload);
      }),
      client.onMessage<{ count: number }>("unread_count", (message) => setUnreadCount(message.payload.count)),
      client.onMessage<ReadEvent>("notification_read", (message) => setItems((current) => applyRead(current, message.payload))),
      client.onMessage<NotificationIds>("notification_unread", (message) =>
        setItems((current) => applyUnread(current, message.payload.ids))),
      client.onMessage<NotificationIds>("notification_archived", (message) =>
        setItems((current) => removeNotifications(current, message.payload.ids))),
      client.onMessage<NotificationIds>("notification_deleted", (message) =>
        setItems((current) => removeNotifications(current, message.payload.ids))),
      client.onMessage<NotificationIds>("notification_unarchived", (message) => void restore(message.payload.ids)),
      client.onResync((event) => {
        if (event.channel.startsWith("user:")) void reload();
      }),
    ];
    return () => { for (const off of offs) off(); };
  }, [client, reload, restore, maxItems]);

  // Reads made in this tab reach the user's other tabs at once, before the server's
  // `notification_read` and `unread_count` (which then confirm them).
  const tabs = useRef<BroadcastChannel | null>(null);
  const applyLocal = useCallback((change: LocalChange) => {
    // Counts are decided from the rendered list: state updaters may run later (and twice in
    // StrictMode). The server's `unread_count` then confirms them.
    const all = change.kind === "read" && change.all;
    const hits = itemsRef.current.filter((item) => all || change.ids.includes(item.id));
    const unread = hits.filter((item) => !item.read).length;
    if (change.kind === "read") {
      if (all) setUnreadCount(0);
      else if (unread) setUnreadCount((count) => Math.max(0, count - unread));
      setItems((current) => applyRead(current, change));
    } else if (change.kind === "unread") {
      const read = hits.length - unread;
      if (read) setUnreadCount((count) => count + read);
      setItems((current) => applyUnread(current, change.ids));
    } else {
      if (unread) setUnreadCount((count) => Math.max(0, count - unread));
      setItems((current) => removeNotifications(current, change.ids));
    }
  }, []);
  useConnectionState(); // re-render when the client learns its user id (from the token, then the welcome)
  const userId = client?.userId ?? null;
  useEffect(() => {
    const Channel = (globalThis as { BroadcastChannel?: typeof BroadcastChannel }).BroadcastChannel;
    if (!client || !userId || !Channel) return;
    // Per user: two tabs may be signed in as different users.
    const channel = new Channel(`renum-notifications:${client.url}:${userId}`);
    channel.onmessage = (message: MessageEvent<LocalChange>) => applyLocal(message.data);
    tabs.current = channel;
    return () => { channel.close(); if (tabs.current === channel) tabs.current = null; };
  }, [client, userId, applyLocal]);
  const share = (change: LocalChange) => {
    try { tabs.current?.postMessage(change); } catch { /* closed */ }
  };

  const markRead = useCallback(async (id: string) => {
    applyLocal({ kind: "read", ids: [id], all: false });
    share({ kind: "read", ids: [id], all: false });
    try {
      if (client?.state === "connected") await client.command("notification.mark_read", { id });
      else await api(`/api/notifications/${encodeURIComponent(id)}/read/`, { method: "POST" });
    } catch (caught) {
      setError(caught as Error);
      void reload();
    }
  }, [api, client, reload, applyLocal]);

  const markAllRead = useCallback(async () => {
    applyLocal({ kind: "read", ids: [], all: true });
    share({ kind: "read", ids: [], all: true });
    try {
      if (client?.state === "connected") await client.command("notification.mark_all_read", {});
      else await api("/api/notifications/read-all/", { method: "POST" });
    } catch (caught) {
      setError(caught as Error);
      void reload();
    }
  }, [api, client, reload, applyLocal]);

  const change = useCallback(async (kind: keyof typeof CHANGES, id: string) => {
    // Unarchiving needs the notification itself: it is shown once the server has it back.
    if (kind !== "unarchive") {
      applyLocal({ kind, ids: [id] });
      share({ kind, ids: [id] });
    }
    const { command, path, method } = CHANGES[kind];
    try {
      if (client?.state === "connected") await client.command(command, { ids: [id] });
      else await api(`/api/notifications/${encodeURIComponent(id)}/${path}`, { method });
      // Also without a live channel (the event does the same in every tab; inserting is once).
      if (kind === "unarchive") await restore([id]);
    } catch (caught) {
      setError(caught as Error);
      void reload();
    }
  }, [api, client, reload, restore, applyLocal]);

  const markUnread = useCallback((id: string) => change("unread", id), [change]);
  const archive = useCallback((id: string) => change("archive", id), [change]);
  const unarchive = useCallback((id: string) => change("unarchive", id), [change]);
  const remove = useCallback((id: string) => change("delete", id), [change]);

  return { items, unreadCount, loading, error, hasMore: next !== null, loadMore, reload, markRead, markAllRead,
    markUnread, archive, unarchive, remove };
}
