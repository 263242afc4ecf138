"""Identity rechecks: the session core's periodic jobs, run by every node.

A socket's identity was checked when it connected; these jobs check again what can end it
later, however it happened (a bulk update, SQL, another process): a user deactivated or
deleted, a cookie session that ended or whose expiry moved. ``RealtimeConfig.ready``
registers ``JOBS`` with the node (``realtime.fanout.housekeeping.register_jobs``); token
expiry needs no query and is the node's own sweep.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async

from realtime.conf import setting
from realtime.core import auth, sessions, users

if TYPE_CHECKING:
    from realtime.fanout.node import Node


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


JOBS = (close_deactivated, close_ended_sessions)
