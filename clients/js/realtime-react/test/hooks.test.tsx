import { StrictMode, type ReactNode } from "react";
import { act, cleanup, fireEvent, render, renderHook, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RealtimeClient } from "@renum/realtime";
import {
  NotificationBell, RealtimeProvider, useChannel, useConnectionState, useExecution, useNotifications,
  useTeamEvents, useTeamExecutions,
} from "../src/index.js";
import { FakeSocket, notification, push, rest } from "./server.js";

const OPTIONS = { WebSocket: FakeSocket, backoffBaseMs: 5, pollUrl: false as const };

function wrapper({ children }: { children: ReactNode }) {
  return (
    <RealtimeProvider url="ws://api.test/ws/" getToken={() => "tok"} options={OPTIONS}>{children}</RealtimeProvider>
  );
}

async function connected() {
  await waitFor(() => expect(FakeSocket.all.length).toBeGreaterThan(0));
  act(() => FakeSocket.last().welcome());
  return FakeSocket.last();
}

beforeEach(() => { FakeSocket.all = []; });
afterEach(async () => {
  cleanup();
  // Let the providers' deferred teardowns run, so no client of this test outlives it.
  await new Promise((resolve) => setTimeout(resolve, 20));
  vi.unstubAllGlobals();
});

describe("RealtimeProvider", () => {
  it("opens one socket under StrictMode's double mount and closes it on unmount", async () => {
    rest({});
    const view = render(
      <StrictMode>
        <RealtimeProvider url="ws://api.test/ws/" getToken={() => "tok"} options={OPTIONS}><span>app</span></RealtimeProvider>
      </StrictMode>,
    );
    // (jsdom has no Web Locks: the tab first wins the BroadcastChannel election, ~0.3 s)
    await waitFor(() => expect(FakeSocket.all.length).toBeGreaterThan(0));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(FakeSocket.all).toHaveLength(1);
    view.unmount();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(FakeSocket.open()).toHaveLength(0);
  });

  it("subscribes a channel once per mount, with the latest handler, under StrictMode", async () => {
    rest({});
    const seen: string[] = [];
    function Team({ label }: { label: string }) {
      useChannel<{ n: number }>("team:3", (message) => seen.push(`${label}:${message.payload.n}`));
      return null;
    }
    const view = render(
      <StrictMode>
        <RealtimeProvider url="ws://api.test/ws/" getToken={() => "tok"} options={OPTIONS}><Team label="a" /></RealtimeProvider>
      </StrictMode>,
    );
    const socket = await connected();
    view.rerender(
      <StrictMode>
        <RealtimeProvider url="ws://api.test/ws/" getToken={() => "tok"} options={OPTIONS}><Team label="b" /></RealtimeProvider>
      </StrictMode>,
    );
    expect(socket.sent.filter((f) => f.type === "subscribe" && f.channel === "team:3")).toHaveLength(1);
    act(() => push(socket, "execution_update", { n: 1 }, "team:3"));
    expect(seen).toEqual(["b:1"]);
  });

  it("reports the connection state with a label", async () => {
    rest({});
    const { result } = renderHook(() => useConnectionState(), { wrapper });
    expect(result.current.state).toBe("connecting");
    await connected();
    expect(result.current).toMatchObject({ state: "connected", label: "connected" });
    act(() => FakeSocket.last().serverClose(4003, "too many connections for this user"));
    expect(result.current.label).toBe("reconnecting (1 of 5): too many connections for this user");
  });
});

describe("useNotifications", () => {
  it("loads a page and the count, adds live ones once, applies reads and counts", async () => {
    const calls = rest({
      "GET /api/notifications/": () => ({ next: "http://api.test/api/notifications/?cursor=abc", results: [notification("a")] }),
      "GET /api/notifications/unread-count/": () => ({ count: 1 }),
      "GET /api/notifications/?cursor=abc": () => ({ next: null, results: [notification("z")] }),
    });
    const { result } = renderHook(() => useNotifications({ pageSize: 1 }), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual(["a"]));
    expect(calls[0]).toBe("GET /api/notifications/?page_size=1 Bearer tok");
    expect(result.current).toMatchObject({ unreadCount: 1, hasMore: true });

    act(() => push(socket, "notification", notification("b")));
    act(() => push(socket, "notification", notification("b")));
    act(() => push(socket, "unread_count", { count: 2 }));
    expect(result.current.items.map((n) => n.id)).toEqual(["b", "a"]);
    expect(result.current.unreadCount).toBe(2);

    act(() => push(socket, "notification_read", { ids: ["a"], all: false }));
    expect(result.current.items.map((n) => n.read)).toEqual([false, true]);

    await act(() => result.current.loadMore());
    expect(result.current.items.map((n) => n.id)).toEqual(["b", "a", "z"]);
    expect(result.current.hasMore).toBe(false);
  });

  it("marks read over the socket when connected and over REST when not", async () => {
    const calls = rest({
      "GET /api/notifications/": () => ({ next: null, results: [notification("a"), notification("b")] }),
      "GET /api/notifications/unread-count/": () => ({ count: 2 }),
      "POST /api/notifications/b/read/": () => ({ ...notification("b"), read: true }),
    });
    const { result } = renderHook(() => useNotifications(), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.items).toHaveLength(2));

    let done: Promise<void>;
    act(() => { done = result.current.markRead("a"); });
    const command = socket.sent.find((f) => f.type === "command");
    expect(command.payload).toEqual({ name: "notification.mark_read", args: { id: "a" } });
    act(() => socket.frame({ type: "command_result", reply_to: command.id, payload: { result: { id: "a" } } }));
    await act(() => done);
    expect(result.current.unreadCount).toBe(1);

    act(() => socket.serverClose(1006));
    await act(() => result.current.markRead("b"));
    expect(calls).toContain("POST /api/notifications/b/read/ Bearer tok");
    expect(result.current.items.map((n) => n.read)).toEqual([true, true]);
    expect(result.current.unreadCount).toBe(0);
  });

  it("reloads when the user channel must resync", async () => {
    let page = 0;
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [notification(`p${++page}`)] }),
      "GET /api/notifications/unread-count/": () => ({ count: page }),
    });
    const { result } = renderHook(() => useNotifications(), { wrapper });
    const first = await connected();
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual(["p1"]));
    act(() => first.serverClose(1012));
    await waitFor(() => expect(FakeSocket.all).toHaveLength(2));
    const second = FakeSocket.last();
    act(() => second.welcome());
    const request = second.sent.find((f) => f.type === "subscribe" && f.channel === "user:7");
    act(() => second.frame({ type: "subscribed", reply_to: request.id,
      payload: { channel: "user:7", epoch: "e9", offset: 40, recovered: false } }));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual(["p2"]));
  });
});

describe("useNotifications: unread, archive, unarchive, delete", () => {
  const at = (minute: number) => `2026-01-01T00:${String(minute).padStart(2, "0")}:00Z`;

  it("applies the server's events so every tab converges: unread flips, archived and deleted leave, unarchived come back in place", async () => {
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [
        notification("c", { created_at: at(30), read: true }), notification("b", { created_at: at(20) }),
        notification("a", { created_at: at(10), read: true })] }),
      "GET /api/notifications/unread-count/": () => ({ count: 1 }),
      "GET /api/notifications/x/": () => notification("x", { created_at: at(25) }),
      "GET /api/notifications/y/": () => notification("y", { created_at: at(5), archived: true }),
    });
    const { result } = renderHook(() => useNotifications(), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual(["c", "b", "a"]));

    act(() => push(socket, "notification_unread", { ids: ["c", "zz"] }));
    expect(result.current.items.map((n) => [n.id, n.read])).toEqual([["c", false], ["b", false], ["a", true]]);
    act(() => push(socket, "notification_archived", { ids: ["b"] }));
    act(() => push(socket, "notification_deleted", { ids: ["a"] }));
    act(() => push(socket, "unread_count", { count: 1 }));
    expect(result.current.items.map((n) => n.id)).toEqual(["c"]);
    expect(result.current.unreadCount).toBe(1);

    // x is back in the inbox; y (archived again meanwhile) stays out.
    act(() => push(socket, "notification_unarchived", { ids: ["x", "y"] }));
    await waitFor(() => expect(result.current.items.map((n) => n.id)).toEqual(["c", "x"]));
    act(() => push(socket, "notification_unarchived", { ids: ["x"] }));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(result.current.items.map((n) => n.id)).toEqual(["c", "x"]);
  });

  it("archives and marks unread over the socket, deletes and unarchives over REST when not connected", async () => {
    const calls = rest({
      "GET /api/notifications/": () => ({ next: null, results: [
        notification("b", { created_at: at(20) }), notification("a", { created_at: at(10), read: true })] }),
      "GET /api/notifications/unread-count/": () => ({ count: 1 }),
      "DELETE /api/notifications/a/": () => "",
      "POST /api/notifications/b/unarchive/": () => notification("b", { created_at: at(20) }),
      "GET /api/notifications/b/": () => notification("b", { created_at: at(20) }),
    });
    const { result } = renderHook(() => useNotifications(), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.items).toHaveLength(2));

    let done: Promise<void>;
    act(() => { done = result.current.markUnread("a"); });
    expect(result.current.items.map((n) => n.read)).toEqual([false, false]);
    expect(result.current.unreadCount).toBe(2);
    let command = socket.sent.filter((f) => f.type === "command").at(-1);
    expect(command.payload).toEqual({ name: "notification.mark_unread", args: { ids: ["a"] } });
    act(() => socket.frame({ type: "command_result", reply_to: command.id, payload: { result: { changed: ["a"], count: 2 } } }));
    await act(() => done);

    act(() => { done = result.current.archive("b"); });
    expect(result.current.items.map((n) => n.id)).toEqual(["a"]);
    expect(result.current.unreadCount).toBe(1);
    command = socket.sent.filter((f) => f.type === "command").at(-1);
    expect(command.payload).toEqual({ name: "notification.archive", args: { ids: ["b"] } });
    act(() => socket.frame({ type: "command_result", reply_to: command.id, payload: { result: { changed: ["b"], count: 1 } } }));
    await act(() => done);

    act(() => socket.serverClose(1006));
    await act(() => result.current.remove("a"));
    expect(calls).toContain("DELETE /api/notifications/a/ Bearer tok");
    expect(result.current.items).toEqual([]);
    expect(result.current.unreadCount).toBe(0);
    await act(() => result.current.unarchive("b"));
    expect(calls).toContain("POST /api/notifications/b/unarchive/ Bearer tok");
    expect(result.current.items.map((n) => n.id)).toEqual(["b"]);
    expect(result.current.error).toBeNull();
  });

  it("an archive in one tab leaves the other tab's list at once", async () => {
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [notification("a"), notification("b")] }),
      "GET /api/notifications/unread-count/": () => ({ count: 2 }),
      "POST /api/notifications/a/archive/": () => new Promise(() => {}), // the server never answers
    });
    const tab = () => renderHook(() => useNotifications(), { wrapper: ({ children }) => (
      <RealtimeProvider url="ws://api.test/ws/" getToken={() => "h.eyJ1c2VyX2lkIjo3fQ.s"}
        options={{ ...OPTIONS, shareAcrossTabs: false }}>{children}</RealtimeProvider>) });
    const one = tab();
    const two = tab();
    await waitFor(() => expect(two.result.current.items).toHaveLength(2));
    await waitFor(() => expect(one.result.current.items).toHaveLength(2));
    act(() => { void one.result.current.archive("a"); });
    await waitFor(() => expect(two.result.current.items.map((n) => n.id)).toEqual(["b"]));
    expect(two.result.current.unreadCount).toBe(1);
  });
});

describe("useTeamEvents", () => {
  it("delivers the team's membership and name events, typed, newest first", async () => {
    rest({});
    const seen: string[] = [];
    const { result } = renderHook(() => useTeamEvents(3, { onEvent: (event) => seen.push(event.type) }), { wrapper });
    const socket = await connected();
    expect(socket.sent.filter((f) => f.type === "subscribe").map((f) => f.channel)).toEqual(["team:3"]);
    const member = { team_id: "3", user_id: "9", username: "ann", role: "member" };
    act(() => push(socket, "team_member_joined", member, "team:3"));
    act(() => push(socket, "execution_update", { execution_id: "x" }, "team:3"));
    act(() => push(socket, "team_member_role_changed", { ...member, role: "owner", previous_role: "member" }, "team:3"));
    act(() => push(socket, "team_renamed", { team_id: "3", name: "Blue", previous_name: "Red" }, "team:3"));
    expect(seen).toEqual(["team_member_joined", "team_member_role_changed", "team_renamed"]);
    expect(result.current.name).toBe("Blue");
    expect(result.current.events[1]).toEqual({ type: "team_member_role_changed",
      payload: { ...member, role: "owner", previous_role: "member" } });
  });
});

describe("executions", () => {
  const row = { id: "x1", team: 3, status: "running", progress: 20, current_step: "one", result: null, error: null,
    created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:01Z" };
  const update = (progress: number, at: string) => ({ execution_id: "x1", team_id: "3", status: progress === 100
    ? "completed" : "running", progress, current_step: null, result: null, error: null, updated_at: at });

  it("useExecution merges REST and live updates into one shape, never going back", async () => {
    rest({ "GET /api/executions/x1/": () => row });
    const { result } = renderHook(() => useExecution("x1"), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.execution?.progress).toBe(20));
    expect(socket.sent.find((f) => f.type === "subscribe").channel).toBe("execution:x1");
    act(() => push(socket, "execution_update", update(100, "2026-01-01T00:00:09Z"), "execution:x1"));
    act(() => push(socket, "execution_update", update(60, "2026-01-01T00:00:05Z"), "execution:x1"));
    expect(result.current.execution).toMatchObject({ id: "x1", teamId: "3", progress: 100, status: "completed",
      createdAt: "2026-01-01T00:00:00Z" });
  });

  it("useTeamExecutions lists the team's executions and puts new ones first", async () => {
    rest({ "GET /api/executions/": () => ({ next: null, results: [row] }) });
    const { result } = renderHook(() => useTeamExecutions(3), { wrapper });
    const socket = await connected();
    await waitFor(() => expect(result.current.executions).toHaveLength(1));
    act(() => push(socket, "execution_update", { ...update(0, "2026-01-01T00:01:00Z"), execution_id: "x2" }, "team:3"));
    act(() => push(socket, "execution_update", update(50, "2026-01-01T00:00:30Z"), "team:3"));
    expect(result.current.executions.map((e) => [e.id, e.progress])).toEqual([["x2", 0], ["x1", 50]]);
  });
});

describe("NotificationBell", () => {
  it("shows the badge, caps toasts with +N more, renders actions and the connection state", async () => {
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [
        notification("a", { action: { type: "open", payload: { url: "/executions/x1", label: "Open execution" } } }),
        notification("b", { action: { type: "retry", payload: { id: 4 } } }),
      ] }),
      "GET /api/notifications/unread-count/": () => ({ count: 2 }),
    });
    const actions: string[] = [];
    render(<NotificationBell maxToasts={3} onAction={(action) => actions.push(action.type)} />, { wrapper });
    const socket = await connected();
    await waitFor(() => expect(screen.getByText("2").dataset.unread).toBe("2"));
    expect(screen.getByRole("status").textContent).toBe("connected");

    act(() => { for (let i = 0; i < 50; i++) push(socket, "notification", notification(`n${i}`)); });
    expect(screen.getAllByRole("alert")).toHaveLength(3);
    expect(screen.getByText("+47 more")).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: /Notifications/ }));
    const link = screen.getByRole("link", { name: "Open execution" });
    expect(link.getAttribute("href")).toBe("/executions/x1");
    fireEvent.click(screen.getByRole("button", { name: "retry" }));
    expect(actions).toEqual(["retry"]);
    expect(document.querySelectorAll(".renum-list li").length).toBe(52);
  });

  it("never renders a javascript: URL as a link", async () => {
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [
        notification("a", { action: { type: "open", payload: { url: "javascript:alert(1)" } } })] }),
      "GET /api/notifications/unread-count/": () => ({ count: 1 }),
    });
    render(<NotificationBell defaultOpen />, { wrapper });
    await connected();
    await waitFor(() => expect(screen.getByText("Title a")).toBeTruthy());
    expect(screen.queryByRole("link")).toBeNull();
    expect(screen.getByRole("button", { name: "open" })).toBeTruthy();
  });

  it("says degraded: polling when the socket is given up", async () => {
    rest({ "GET /api/notifications/": () => ({ next: null, results: [] }),
      "GET /api/notifications/unread-count/": () => ({ count: 0 }),
      "POST /api/realtime/poll/": () => new Promise(() => {}) });
    const client = new RealtimeClient({ url: "ws://api.test/ws/", getToken: () => "tok", WebSocket: FakeSocket,
      backoffBaseMs: 1, maxAttempts: 1, pollUrl: "http://api.test/api/realtime/poll/" });
    client.connect();
    render(<RealtimeProvider getToken={() => "tok"} client={client}><NotificationBell /></RealtimeProvider>);
    await waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    act(() => FakeSocket.all[0].serverClose(1006));
    await waitFor(() => expect(FakeSocket.all).toHaveLength(2));
    act(() => FakeSocket.all[1].serverClose(1006));
    await waitFor(() => expect(screen.getByRole("status").textContent).toBe("degraded: polling"));
    client.disconnect();
  });
});

describe("reads across tabs", () => {
  it("a read in one tab shows in another at once, before the server confirms it", async () => {
    rest({
      "GET /api/notifications/": () => ({ next: null, results: [notification("a"), notification("b")] }),
      "GET /api/notifications/unread-count/": () => ({ count: 2 }),
      "POST /api/notifications/a/read/": () => new Promise(() => {}), // the server never answers
    });
    const tab = () => renderHook(() => useNotifications(), { wrapper: ({ children }) => (
      <RealtimeProvider url="ws://api.test/ws/" getToken={() => "h.eyJ1c2VyX2lkIjo3fQ.s"}
        options={{ ...OPTIONS, shareAcrossTabs: false }}>{children}</RealtimeProvider>) });
    const one = tab();
    const two = tab();
    await waitFor(() => expect(two.result.current.items).toHaveLength(2));
    await waitFor(() => expect(one.result.current.items).toHaveLength(2));
    act(() => { void one.result.current.markRead("a"); });
    await waitFor(() => expect(two.result.current.items.map((n) => n.read)).toEqual([true, false]));
    expect(two.result.current.unreadCount).toBe(1);
  });
});
