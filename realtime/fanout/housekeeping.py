"""The periodic jobs of a node (``realtime.fanout.node``): idle and expired sockets and the
registry's expiry, plus the jobs a layer above registers (the session core's identity
rechecks: deactivated users, ended cookie sessions, ``realtime.core.rechecks``).

Each job takes the node and runs every couple of seconds; those that cost a query or a
Redis write keep their own, longer period in ``node.stamps``. A node runs ``default_jobs()``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from realtime.conf import setting
from realtime.storage import registry

if TYPE_CHECKING:
    from realtime.fanout.node import Node

Job = Callable[["Node"], Awaitable[None]]
_registered: list[Job] = []


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


JOBS = (sweep, refresh_registry)


def register_jobs(*jobs: Job) -> None:
    """Add periodic jobs every node runs after its own (``JOBS``); a layer above calls it from
    ``AppConfig.ready`` (the session core's identity rechecks, ``realtime.core.rechecks``), so
    the node runs them without importing what they check."""
    for job in jobs:
        if job not in _registered:
            _registered.append(job)


def default_jobs() -> tuple[Job, ...]:
    """The jobs of a new node: its own, then the registered ones."""
    return (*JOBS, *_registered)
