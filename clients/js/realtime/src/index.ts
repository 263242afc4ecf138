/**
 * @renum/realtime: the browser client of the Renum realtime protocol.
 * The file the server publishes at `/static/renum/realtime.js` is this package's build.
 */
export { RealtimeClient, RealtimeError, decodeJwt } from "./client.js";
export { default } from "./client.js";
export { State, CloseCode, SUBPROTOCOL, TEAM_EVENT_TYPES } from "./types.js";
export type {
  ConnectionState, StateInfo, UnauthorizedCause, Position, Envelope, Notification, NotificationAction,
  ExecutionUpdate, ExecutionStatus, Welcome, ResyncEvent, TokenRequest, RealtimeOptions, SocketLike,
  SocketConstructor, EventSourceLike, EventSourceConstructor, Unsubscribe, NotificationIds, TeamRole, TeamMemberEvent, TeamRoleChangedEvent,
  TeamRenamedEvent, TeamEvent, Subscribed, Published, AuthRefreshed, ErrorPayload,
} from "./types.js";
export { executionFromRest, executionFromUpdate, type Execution, type RestExecution } from "./executions.js";
