"use client";
/**
 * `<NotificationBell />`: the badge, a bounded list (mark read, mark all read, load more), toasts
 * for live notifications (at most `maxToasts` on screen, the rest collapsed into "+N more"),
 * each notification's `action` as a link (a `url` in its payload) or a button, and the
 * connection state ("degraded: polling", a refusal's reason).
 *
 * Built for bursts: list rows are memoized by notification, so a new notification renders one
 * row, not the list; toasts are a fixed-size window.
 */
import { memo, useCallback, useEffect, useRef, useState } from "react";
import type { Notification, NotificationAction } from "@renum/realtime";
import { useConnectionState } from "./context.js";
import { useNotifications } from "./notifications.js";

export interface NotificationBellProps {
  /** Rows shown in the panel (default 20; "Load more" pages further). */
  pageSize?: number;
  /** Notifications kept (default 100). */
  maxItems?: number;
  /** Toasts on screen at once (default 3); more are counted in "+N more". */
  maxToasts?: number;
  /** How long a toast stays (default 5000 ms). */
  toastMs?: number;
  /** Called for an action that is not a link (`{type, payload}` without a `url`). */
  onAction?: (action: NotificationAction, notification: Notification) => void;
  /** Open the panel at first render. */
  defaultOpen?: boolean;
}

/** The link of an action: `payload.url` (http(s) or a path), else null. */
export function actionUrl(action: NotificationAction | null): string | null {
  const payload = action?.payload as { url?: unknown } | null | undefined;
  const url = payload && typeof payload === "object" ? payload.url : undefined;
  if (typeof url !== "string") return null;
  return /^(https?:\/\/|\/)/.test(url) ? url : null; // never javascript: or data: URLs
}

function actionLabel(action: NotificationAction): string {
  const payload = action.payload as { label?: unknown } | null;
  return payload && typeof payload === "object" && typeof payload.label === "string" ? payload.label : action.type;
}

function ActionControl({ notification, onAction }: { notification: Notification;
  onAction?: NotificationBellProps["onAction"] }) {
  const action = notification.action;
  if (!action) return null;
  const url = actionUrl(action);
  if (url) return <a className="renum-action" href={url}>{actionLabel(action)}</a>;
  return (
    <button type="button" className="renum-action" onClick={() => onAction?.(action, notification)}>
      {actionLabel(action)}
    </button>
  );
}

const Row = memo(function Row({ notification, onRead, onAction }: { notification: Notification;
  onRead: (id: string) => void; onAction?: NotificationBellProps["onAction"] }) {
  return (
    <li className={`renum-notification renum-${notification.type}`} data-id={notification.id}
      data-read={notification.read ? "true" : "false"}>
      <strong>{notification.title}</strong>
      <span>{notification.message}</span>
      <ActionControl notification={notification} onAction={onAction} />
      {notification.read ? null : (
        <button type="button" onClick={() => onRead(notification.id)}>Mark read</button>
      )}
    </li>
  );
});

interface Toast {
  key: number;
  notification: Notification;
}

export function NotificationBell({ pageSize = 20, maxItems = 100, maxToasts = 3, toastMs = 5000, onAction,
  defaultOpen = false }: NotificationBellProps) {
  const [open, setOpen] = useState(defaultOpen);
  // One state for the window and the overflow count, so that updates stay pure (StrictMode
  // runs updaters twice).
  const [toastState, setToastState] = useState<{ toasts: Toast[]; hidden: number }>({ toasts: [], hidden: 0 });
  const counter = useRef(0);
  const timers = useRef(new Set<ReturnType<typeof setTimeout>>());

  const onNotification = useCallback((notification: Notification) => {
    const key = ++counter.current;
    setToastState(({ toasts, hidden }) => {
      const next = [...toasts, { key, notification }];
      // The overflow is counted, not rendered: hundreds of toasts would cover the page.
      const overflow = Math.max(0, next.length - maxToasts);
      return { toasts: overflow ? next.slice(overflow) : next, hidden: hidden + overflow };
    });
    const timer = setTimeout(() => {
      timers.current.delete(timer);
      setToastState(({ toasts, hidden }) => {
        const left = toasts.filter((toast) => toast.key !== key);
        return { toasts: left, hidden: left.length ? hidden : 0 };
      });
    }, toastMs);
    timers.current.add(timer);
  }, [maxToasts, toastMs]);

  useEffect(() => () => { for (const timer of timers.current) clearTimeout(timer); }, []);
  const { toasts, hidden } = toastState;

  const { items, unreadCount, hasMore, loadMore, markRead, markAllRead, loading } = useNotifications({
    pageSize, maxItems, onNotification,
  });
  const { state, label } = useConnectionState();
  const onRead = useCallback((id: string) => { void markRead(id); }, [markRead]);
  const shown = open ? items : [];

  return (
    <div className="renum-bell" data-state={state}>
      <button type="button" className="renum-bell-button" aria-expanded={open}
        aria-label={`Notifications, ${unreadCount} unread`} onClick={() => setOpen((value) => !value)}>
        <span aria-hidden="true">🔔</span>
        <span className="renum-badge" data-unread={unreadCount}>{unreadCount}</span>
      </button>
      <span className="renum-connection" role="status" data-state={state}>{label}</span>
      {open ? (
        <div className="renum-panel" role="region" aria-label="Notifications">
          <button type="button" onClick={() => { void markAllRead(); }} disabled={unreadCount === 0}>
            Mark all read
          </button>
          <ul className="renum-list">
            {shown.map((notification) => (
              <Row key={notification.id} notification={notification} onRead={onRead} onAction={onAction} />
            ))}
          </ul>
          {items.length === 0 && !loading ? <p>No notifications</p> : null}
          {hasMore && items.length < maxItems ? (
            <button type="button" onClick={() => { void loadMore(); }} disabled={loading}>Load more</button>
          ) : null}
        </div>
      ) : null}
      <div className="renum-toasts" aria-live="polite">
        {toasts.map(({ key, notification }) => (
          <div key={key} className={`renum-toast renum-${notification.type}`} role="alert">
            <strong>{notification.title}</strong>
            <span>{notification.message}</span>
            <ActionControl notification={notification} onAction={onAction} />
          </div>
        ))}
        {hidden > 0 ? <div className="renum-toast-more">+{hidden} more</div> : null}
      </div>
    </div>
  );
}
