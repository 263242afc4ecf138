"""The periodic jobs of a node (``realtime.fanout.node``): idle and expired sockets, the registry's
expiry, deactivated users and ended sessions.

Each job takes the node and runs every couple of seconds; those that cost a query or a
Redis write keep their own, longer period in ``node.stamps``. The node runs ``JOBS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async

from realtime.conf import setting
from realtime.core import auth, sessions, users
from realtime.storage import registry

if TYPE_CHECKING:
    from realtime.fanout.node import Node


async def sweep(node: Node) -> None:
    """Close zombie sockets (silent for IDLE_FACTOR x HEARTBEAT_S) and expired sessions (4011)."""
    idle_limit = setting("HEARTBEAT_S") * setting("IDLE_FACTOR")
    now = time.monotonic()
    wall = datetime.now(UTC)
    for conn in list(node.hub.connections.values()):
        if conn.identity is None:
            continue
        if now - conn.last_seen > idle_limit:
            conn.close_soon(1001, "heartbeat timeout")
        elif conn.identity.expires_at is not None and conn.identity.expires_at <= wall:
            conn.close_soon(4011, "session expired" if conn.identity.method == "session" else "token expired")


async def refresh_registry(node: Node) -> None:
    """Push this process's registry entries forward (activity and channels included)."""
    now = time.monotonic()
    stamps = node.stamps
    if now - stamps.get("registry", 0.0) >= min(setting("REGISTRY_REFRESH_S"), setting("REGISTRY_TTL_S") / 3):
        stamps["registry"] = now
        await registry.refresh([c.registry_entry() for c in list(node.hub.connections.values()) if c.identity])
    control = node.control
    if control is not None and now - stamps.setdefault("groups", now) >= control.layer.group_expiry / 3:
        # Keeps control-group memberships younger than the layer's group_expiry.
        stamps["groups"] = now
        await control.refresh()


async def close_deactivated(node: Node) -> None:
    """Close the sockets of users deactivated or deleted since they connected (4001).

    A periodic check, not a signal: it also catches changes made by bulk updates or SQL.
    """
    now = time.monotonic()
    if now - node.stamps.get("users", 0.0) < setting("USER_RECHECK_S"):
        return
    node.stamps["users"] = now
    connections = node.hub.connections
    connected = {c.identity.user_id for c in list(connections.values()) if c.identity is not None}
    if not connected:
        return
    ids = sorted(connected)
    active: set[str] = set()
    for start in range(0, len(ids), 5000):  # within every backend's limit on query parameters
        active |= await users.active_ids(ids[start:start + 5000])
    gone = connected - active
    for conn in list(connections.values()):
        if conn.identity is not None and conn.identity.user_id in gone:
            conn.close_soon(4001, "account deactivated")


async def close_ended_sessions(node: Node) -> None:
    """Close session-cookie sockets whose session ended (expired, logged out, password changed,
    deleted) with 4001, and follow a session whose expiry moved (``SESSION_SAVE_EVERY_REQUEST``).

    Periodic, like ``close_deactivated``: it catches every way a session ends, however it
    happened; logout and password changes also close at once (``realtime.core.sessions``).
    """
    now = time.monotonic()
    if now - node.stamps.get("sessions", 0.0) < setting("USER_RECHECK_S"):
        return
    node.stamps["sessions"] = now
    conns = [c for c in list(node.hub.connections.values())
             if c.identity is not None and c.identity.method == "session" and c.session_key]
    if not conns:
        return
    live = await database_sync_to_async(sessions.live_sessions)([(c.session_key, c.identity.user_id) for c in conns])
    for conn in conns:
        if conn.identity is None:
            continue
        if conn.session_key not in live:
            conn.close_soon(4001, "session ended")
        elif live[conn.session_key] != conn.identity.expires_at:
            conn.identity = auth.Identity(conn.identity.user, live[conn.session_key], "session")


JOBS = (sweep, refresh_registry, close_deactivated, close_ended_sessions)
