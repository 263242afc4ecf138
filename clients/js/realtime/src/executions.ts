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
import type { ExecutionStatus, ExecutionUpdate } from "./types.js";

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

export function executionFromRest(row: RestExecution): Execution {
  return {
    id: String(row.id),
    teamId: String(row.team),
    status: row.status,
    progress: row.progress,
    currentStep: row.current_step ?? null,
    result: row.result ?? null,
    error: row.error ?? null,
    updatedAt: row.updated_at,
    createdAt: row.created_at ?? null,
  };
}

/** `previous` keeps what the socket does not send (`createdAt`). */
export function executionFromUpdate(update: ExecutionUpdate, previous?: Execution | null): Execution {
  return {
    id: String(update.execution_id),
    teamId: String(update.team_id),
    status: update.status,
    progress: update.progress,
    currentStep: update.current_step ?? null,
    result: update.result ?? null,
    error: update.error ?? null,
    updatedAt: update.updated_at,
    createdAt: previous?.createdAt ?? null,
  };
}
