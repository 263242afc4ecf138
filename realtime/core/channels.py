"""Channel namespaces and their permissions: who may subscribe, who may publish.

A policy is registered for a prefix (``"room:"``) or an exact name (``"broadcast"``). Checks
receive the authenticated user and the channel name, never ids taken from a payload. Checks
may be sync (run in Django's database thread) or async. Domain apps register their
namespaces in ``AppConfig.ready``; ``team:`` and ``execution:`` come from the executions app.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from realtime.schemas import ProtocolError, validate_channel_name

Check = Callable[[Any, str], bool | Awaitable[bool]]
# Returns (type, payload) of the current state sent to a new subscriber, or None.
Snapshot = Callable[[Any, str], tuple[str, dict] | None | Awaitable[tuple[str, dict] | None]]


@dataclass(frozen=True)
class ChannelPolicy:
    """Rules of one channel namespace."""

    name: str
    can_subscribe: Check
    can_publish: Check | None = None
    snapshot: Snapshot | None = None
    exact: bool = False


_policies: dict[str, ChannelPolicy] = {}


def register_channel(
    name: str,
    *,
    can_subscribe: Check,
    can_publish: Check | None = None,
    snapshot: Snapshot | None = None,
) -> ChannelPolicy:
    """Register a namespace (a name ending with ``:`` is a prefix, anything else exact).

    ``can_publish`` set means clients may publish where it returns true; services always may.
    """
    policy = ChannelPolicy(name, can_subscribe, can_publish, snapshot, exact=not name.endswith(":"))
    _policies[name] = policy
    return policy


def policy_for(channel: str) -> ChannelPolicy:
    """The policy of a channel, or ProtocolError(not_found) for an unknown namespace."""
    policy = _policies.get(channel)
    if policy is None:
        prefix, sep, rest = channel.partition(":")
        policy = _policies.get(prefix + sep) if sep and rest else None
    if policy is None or (policy.exact and policy.name != channel):
        raise ProtocolError("not_found", f"no channel namespace for {channel!r}")
    return policy


async def call_check(check: Callable, user: Any, channel: str) -> Any:
    """Run a sync or async check or snapshot function for a user and channel."""
    if inspect.iscoroutinefunction(check):
        return await check(user, channel)
    return await database_sync_to_async(check)(user, channel)


def suffix(channel: str) -> str:
    """What follows the namespace prefix: ``"42"`` for ``"user:42"``."""
    return channel.partition(":")[2]


# Async: no database work, so no hop to the database thread on every subscribe.
async def _own_user_channel(user: Any, channel: str) -> bool:
    return suffix(channel) == str(user.pk)


async def _everyone(user: Any, channel: str) -> bool:
    return True


def register_builtin_policies() -> None:
    """The transport's own namespaces: a user's personal channel and the broadcast channel."""
    register_channel("user:", can_subscribe=_own_user_channel)
    register_channel("broadcast", can_subscribe=_everyone)


def user_channel(user_id: Any) -> str:
    """Name of a user's personal channel."""
    return f"user:{user_id}"


BROADCAST = "broadcast"


async def authorize_subscribe(user: Any, channel: str) -> ChannelPolicy:
    """The policy of a channel a user may read, or ProtocolError: ``invalid_message`` (bad
    name), ``not_found`` (unknown namespace) or ``forbidden``. Every transport (socket, long
    poll, server-sent events) asks this one function."""
    validate_channel_name(channel)
    policy = policy_for(channel)
    if not await call_check(policy.can_subscribe, user, channel):
        raise ProtocolError("forbidden", f"not allowed to subscribe to {channel}")
    return policy
