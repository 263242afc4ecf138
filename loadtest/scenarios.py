"""The scenarios of the load tool and their defaults (the issue's targets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """What one scenario does: how many clients, and what (if anything) is published."""

    name: str
    clients: int
    rate: float = 0.0
    duration: float = 0.0
    # "broadcast": every client gets every message; "personal": each message goes to one user
    # (round robin); "notify": notification_create for one user (round robin); None: no publishing.
    publish: str | None = None
    # Servers a scenario can run on (notify needs the notifications domain: ours only).
    servers: tuple[str, ...] = ("ours", "bare", "textbook", "ours-sio", "node-sio", "pysio")
    description: str = ""
    # "ws": WebSocket clients (loadtest.runner); "http": the HTTP fallback (loadtest.http_fallback).
    transport: str = "ws"


SCENARIOS: dict[str, Scenario] = {
    "broadcast": Scenario("broadcast", 1000, 10.0, 20.0, "broadcast",
                          description="every client subscribed to `broadcast`; 10 messages/s published"),
    "personal": Scenario("personal", 1000, 1000.0, 20.0, "personal",
                         description="1,000 messages/s in total to `user:<id>` channels, round robin"),
    "notify": Scenario("notify", 1000, 1000.0, 20.0, "notify", servers=("ours", "ours-sio"),
                       description="`notification_create` (PostgreSQL row, then publish on commit) -> socket"),
    "storm": Scenario("storm", 5000, description="5,000 JWT connects as fast as possible, until all are welcomed"),
    "idle": Scenario("idle", 10000, description="10,000 idle authenticated connections on one server process"),
    "longpoll": Scenario("longpoll", 5000, 200.0, 20.0, "notify", servers=("ours",), transport="http",
                         description="multiplexed long pollers on user:, broadcast and team:; 200 notifications/s"),
    "sse": Scenario("sse", 5000, 200.0, 20.0, "notify", servers=("ours",), transport="http",
                    description="server-sent event streams on user:, broadcast and team:; 200 notifications/s"),
    "events": Scenario("events", 50, 200.0, 20.0, "notify", servers=("ours",), transport="http",
                       description="the v1 GET /api/realtime/events/, one request per channel; 200 notifications/s"),
}
