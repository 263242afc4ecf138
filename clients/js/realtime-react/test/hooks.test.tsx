import { StrictMode, type ReactNode } from "react";
import { act, cleanup, fireEvent, render, renderHook, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RealtimeClient } from "@renum/realtime";
import {
  NotificationBell, RealtimeProvider, useChannel, useConnectionState, useExecution, useNotifications,
  useTeamExecutions,
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
    await new Promise((resolve) => setTimeout(resolve, 20));
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
