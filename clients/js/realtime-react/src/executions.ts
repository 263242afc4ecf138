"use client";
/**
 * `useExecution(id)` and `useTeamExecutions(teamId)`: REST state merged with live
 * `execution_update`s, in the one `Execution` shape of @renum/realtime (`executionFromRest`,
 * `executionFromUpdate`). An update older than what is shown (`updated_at`) never moves a
 * progress bar backwards.
 *
 * `useTeamEvents(teamId)`: the team's membership and name events (`team_member_joined`,
 * `team_member_left`, `team_member_role_changed`, `team_renamed`) as they arrive, typed.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  type Execution,
  type ExecutionUpdate,
  executionFromRest,
  executionFromUpdate,
  type RestExecution,
  TEAM_EVENT_TYPES,
  type TeamEvent,
} from "@renum/realtime";
import { useChannel, useRealtime } from "./context.js";

export interface ExecutionResult {
  execution: Execution | null;
  loading: boolean;
  error: Error | null;
  reload: () => Promise<void>;
}

/** Whether `update` is at least as new as `current` (updates can cross a REST answer). */
export function isNewer(current: Execution | null | undefined, update: Execution): boolean {
  return !current || Date.parse(update.updatedAt) >= Date.parse(current.updatedAt);
}

export function useExecution(id: string | null | undefined): ExecutionResult {
  const { client, api } = useRealtime();
  const [execution, setExecution] = useState<Execution | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<Error | null>(null);

  const reload = useCallback(async () => {
    if (!id) return;
    setLoading(true);
    try {
      const row = await api<RestExecution>(`/api/executions/${encodeURIComponent(id)}/`);
      const loaded = executionFromRest(row);
      setExecution((current) => (current?.id === loaded.id && !isNewer(current, loaded) ? current : loaded));
      setError(null);
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setLoading(false);
    }
  }, [api, id]);

  useEffect(() => {
    setExecution(null);
    if (client && id) void reload();
  }, [client, id, reload]);

  useChannel<ExecutionUpdate>(id ? `execution:${id}` : null, (message) => {
    if (message.type !== "execution_update") return;
    setExecution((current) => {
      const next = executionFromUpdate(message.payload, current);
      return isNewer(current, next) ? next : current;
    });
  });

  useEffect(() => {
    if (!client || !id) return;
    return client.onResync((event) => { if (event.channel === `execution:${id}`) void reload(); });
  }, [client, id, reload]);

  return { execution, loading, error, reload };
}

export interface TeamExecutionsResult {
  /** Newest first (by creation, then by first sight for executions created while watching). */
  executions: Execution[];
  loading: boolean;
  error: Error | null;
  reload: () => Promise<void>;
}

interface Page {
  next: string | null;
  results: RestExecution[];
}

/** Merge one execution into a list kept newest first; a new one goes on top. */
export function mergeExecution(list: Execution[], execution: Execution): Execution[] {
  const index = list.findIndex((item) => item.id === execution.id);
  if (index < 0) return [execution, ...list];
  if (!isNewer(list[index], execution)) return list;
  const out = list.slice();
  out[index] = { ...execution, createdAt: execution.createdAt ?? list[index].createdAt };
  return out;
}

export function useTeamExecutions(teamId: string | number | null | undefined, { limit = 20 } = {}): TeamExecutionsResult {
  const { client, api } = useRealtime();
  const team = teamId == null ? null : String(teamId);
  const [executions, setExecutions] = useState<Execution[]>([]);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<Error | null>(null);

  const reload = useCallback(async () => {
    if (!team) return;
    setLoading(true);
    try {
      const page = await api<Page>(`/api/executions/?team=${encodeURIComponent(team)}&page_size=${limit}`);
      const loaded = page.results.map(executionFromRest);
      setExecutions((current) => {
        // Keep live ones newer than the page (started after the query ran).
        let out = loaded;
        for (const live of current) out = mergeExecution(out, live);
        return out.slice(0, limit);
      });
      setError(null);
    } catch (caught) {
      setError(caught as Error);
    } finally {
      setLoading(false);
    }
  }, [api, team, limit]);

  useEffect(() => {
    setExecutions([]);
    if (client && team) void reload();
  }, [client, team, reload]);

  useChannel<ExecutionUpdate>(team ? `team:${team}` : null, (message) => {
    if (message.type !== "execution_update") return;
    setExecutions((current) => mergeExecution(current, executionFromUpdate(message.payload,
      current.find((item) => item.id === String(message.payload.execution_id)))).slice(0, limit));
  });

  useEffect(() => {
    if (!client || !team) return;
    return client.onResync((event) => { if (event.channel === `team:${team}`) void reload(); });
  }, [client, team, reload]);

  return { executions, loading, error, reload };
}

export interface TeamEventsOptions {
  /** Events kept, newest first (default 50). */
  limit?: number;
  /** Called for each event as it arrives (e.g. to reload a member list). */
  onEvent?: (event: TeamEvent) => void;
}

export interface TeamEventsResult {
  /** The events seen since mounting, newest first, at most `limit`. */
  events: TeamEvent[];
  /** The team's name from the latest `team_renamed`, or null until one arrives. */
  name: string | null;
}

const TEAM_TYPES = new Set<string>(TEAM_EVENT_TYPES);

/**
 * Live team events. Nothing is loaded over REST: the events say what changed while the page
 * was open (a member list loaded elsewhere can be reloaded from `onEvent`). A `resync` of the
 * channel means some may have been missed; `onEvent` is not called for those.
 */
export function useTeamEvents(teamId: string | number | null | undefined,
  { limit = 50, onEvent }: TeamEventsOptions = {}): TeamEventsResult {
  const team = teamId == null ? null : String(teamId);
  const [events, setEvents] = useState<TeamEvent[]>([]);
  const [name, setName] = useState<string | null>(null);
  const handler = useRef(onEvent);
  handler.current = onEvent;

  useEffect(() => { setEvents([]); setName(null); }, [team]);

  useChannel<TeamEvent["payload"]>(team ? `team:${team}` : null, (message) => {
    if (!TEAM_TYPES.has(message.type)) return;
    const event = { type: message.type, payload: message.payload } as TeamEvent;
    setEvents((current) => [event, ...current].slice(0, limit));
    if (event.type === "team_renamed") setName(event.payload.name);
    handler.current?.(event);
  });

  return { events, name };
}
