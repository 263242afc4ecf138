"""Control messages (server-side subscribe, unsubscribe, disconnect) through the channel layer.

The textbook consumer opens a channel-layer channel per socket and joins a group per socket:
a receive task, a new channel and two Redis round trips on every connect. Here each server
process (event loop) has one channel-layer channel, and the group ``rt.user.<id>`` holds the
channels of the processes where that user has live sockets: joined when the user's first
socket arrives in the process, left when the last one goes. ``group_send`` to the group
reaches each of those processes once; the process hands the message to the user's local
sockets (or to one socket, when the message names a ``connection_id``), each handling it in
turn with its own frames. Membership changes of sockets connecting at the same moment are
written in one pipeline (``realtime.storage.layers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Any, Protocol

from redis.exceptions import RedisError

from realtime.fanout.batching import Batcher
from realtime.ops import metrics

logger = logging.getLogger("realtime.fanout.control")

CHANNEL_PREFIX = "rtcontrol"


def control_group(user_id: Any) -> str:
    """Channel-layer group holding the control channels of every process where a user is connected."""
    return f"rt.user.{user_id}"


class Controlled(Protocol):
    """What the control plane needs of a connection (implemented by the session, ``realtime.core.session``)."""

    connection_id: str

    def control(self, message: dict) -> None: ...


class ControlPlane:
    """The channel-layer side of one process's sockets."""

    def __init__(self, layer: Any, connections: dict[str, Controlled]) -> None:
        self.layer = layer
        self.connections = connections  # the hub's, by connection id
        self.channel_name = ""
        self.users: dict[str, dict[Controlled, None]] = {}
        self._writes: Batcher[str, None] = Batcher(self._write_memberships)
        self._receiver: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the process's channel and start receiving on it."""
        self.channel_name = await self.layer.new_channel(CHANNEL_PREFIX)
        # A fresh context: this task serves every socket, not the one whose connect started it.
        self._receiver = asyncio.get_running_loop().create_task(self._receive_forever(), context=contextvars.Context())

    async def stop(self) -> None:
        """Stop receiving (the node's ``stop``); the group memberships expire with the layer's group_expiry."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    # -------------------------------------------------------------- membership

    async def join(self, user_id: str, conn: Controlled) -> None:
        """Route the user's control messages to ``conn`` too; returns once the group holds this process."""
        if self.join_soon(user_id, conn):
            await self._writes.submit(user_id)

    def join_soon(self, user_id: str, conn: Controlled) -> bool:
        """Route the user's control messages to ``conn`` too, locally; True when the group does
        not hold this process yet: the caller then writes it, with ``write_joins``."""
        conns = self.users.setdefault(user_id, {})
        first = not conns
        conns[conn] = None
        return first

    async def write_joins(self, user_ids: list[str]) -> None:
        """Write the memberships ``join_soon`` asked for (batched by the caller, with other writes)."""
        await self._write_memberships(user_ids)

    def joins_for_script(self, user_ids: list[str], redis_url: str) -> tuple[list[bytes], str, int] | None:
        """What a script on the Redis at ``redis_url`` needs to write the memberships ``join_soon``
        asked for, as (group keys, member, expiry); None when the layer's groups live elsewhere
        (then ``write_joins``). Users who left meanwhile are skipped."""
        keys_in = getattr(self.layer, "group_keys_in", None)
        if keys_in is None:
            return None
        keys = keys_in(redis_url, [control_group(u) for u in dict.fromkeys(user_ids) if u in self.users])
        if keys is None:
            return None
        return keys, self.channel_name, self.layer.group_expiry

    async def leave(self, user_id: str, conn: Controlled) -> None:
        """Stop routing to ``conn``; the process leaves the group with the user's last socket."""
        conns = self.users.get(user_id)
        if conns is None:
            return
        conns.pop(conn, None)
        if not conns:
            del self.users[user_id]
            await self._writes.submit(user_id)

    async def _write_memberships(self, user_ids: list[str]) -> list[None]:
        # The state at write time wins: a user who left and came back (or the reverse) while
        # an earlier write was in flight gets the membership they have now.
        wanted = dict.fromkeys(user_ids)
        gone = [u for u in wanted if u not in self.users]
        adds = [control_group(u) for u in wanted if u in self.users]
        if adds:
            await _group_add_many(self.layer, adds, self.channel_name)
        if gone:
            await _group_discard_many(self.layer, [control_group(u) for u in gone], self.channel_name)
            # A user who came back while the discard was on its way may have had the new
            # membership written (``write_joins``) before the discard landed: write it again.
            back = [control_group(u) for u in gone if u in self.users]
            if back:
                await _group_add_many(self.layer, back, self.channel_name)
        return [None] * len(user_ids)

    async def refresh(self) -> None:
        """Re-add every local user's membership, so none outlives the layer's group_expiry."""
        if self.users:
            await _group_add_many(self.layer, [control_group(u) for u in list(self.users)], self.channel_name)

    # -------------------------------------------------------------- delivery

    def route(self, message: dict) -> None:
        """Hand a control message to the sockets it is meant for in this process."""
        connection_id = message.get("connection_id")
        if connection_id is not None:
            conn = self.connections.get(connection_id)
            targets = [conn] if conn is not None else []
        else:
            targets = list(self.users.get(str(message.get("user_id")), ()))
        for conn in targets:
            conn.control(message)

    async def _receive_forever(self) -> None:
        delay = 0.1
        rejoin = False
        while True:
            try:
                if rejoin:
                    # After an outage the group keys may be gone (a Redis restarted without
                    # persistence): write this process's memberships again before waiting.
                    await self.refresh()
                    rejoin = False
                message = await self.layer.receive(self.channel_name)
                delay = 0.1
            except (RedisError, OSError) as exc:  # a Redis blip delays control messages, no more
                metrics.REDIS_ERRORS.labels("control").inc()
                logger.warning("control channel unavailable (%s); retrying in %.1fs", exc, delay)
                rejoin = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                self.route(message)
            except Exception:
                logger.exception("control message %r could not be routed", message.get("type"))


async def _group_add_many(layer: Any, groups: list[str], channel: str) -> None:
    await _change_groups(layer, "group_add", groups, channel)


async def _group_discard_many(layer: Any, groups: list[str], channel: str) -> None:
    await _change_groups(layer, "group_discard", groups, channel)


async def _change_groups(layer: Any, method: str, groups: list[str], channel: str) -> None:
    many = getattr(layer, f"{method}_many", None)
    if many is not None:
        await many(groups, channel)
    else:  # another layer backend: one call per group
        await asyncio.gather(*(getattr(layer, method)(group, channel) for group in groups))
