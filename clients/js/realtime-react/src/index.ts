"use client";
/** @renum/realtime-react: React bindings of @renum/realtime. */
export {
  ApiError, type ApiCall, connectionLabel, type ConnectionStatus, RealtimeProvider, type RealtimeProviderProps,
  type RealtimeContextValue, useChannel, useConnectionState, useRealtime,
} from "./context.js";
export {
  addNotification, applyRead, applyUnread, insertByCreation, removeNotifications, type NotificationsOptions, type NotificationsResult, useNotifications,
} from "./notifications.js";
export {
  type ExecutionResult, isNewer, mergeExecution, type TeamExecutionsResult, type TeamEventsOptions, type TeamEventsResult,
  useExecution, useTeamEvents, useTeamExecutions,
} from "./executions.js";
export { actionUrl, NotificationBell, type NotificationBellProps } from "./bell.js";
