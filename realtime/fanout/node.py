"""The node: the one object per server process that runs the realtime machinery.

It owns the hub (fan-out of Redis pub/sub to local connections), the control plane
(channel-layer control messages), the batching of session starts (registry entries, welcome
positions, control memberships) and the periodic housekeeping jobs. ``start`` opens them and
``stop`` closes them; nothing runs at import time. Sessions reach it through ``get_node``.

A process serves its sockets on one event loop, so there is one node per event loop: test
suites and ``async_to_sync`` run several loops in one process, each with its own node (the
hub's futures and tasks belong to a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.fanout import housekeeping
from realtime.fanout.batching import Batcher, Failed
from realtime.fanout.control import ControlPlane
from realtime.fanout.hub import Hub, Subscriber
from realtime.fanout.lifecycle import StartOnce
from realtime.storage import registry

logger = logging.getLogger("realtime.fanout.node")

Job = housekeeping.Job


@dataclass(slots=True)
class _Start:
    """What a socket's session start writes to Redis, once its subscriptions are confirmed."""

    entry: dict[str, Any]  # its registry entry
    channels: tuple[str, ...]  # whose positions its welcome names
    confirmations: list[asyncio.Future]  # of the SUBSCRIBE of those channels, where pending
    control: ControlPlane | None  # the node's, when the user's group must now hold this process


class Node(StartOnce):
    """The hub, the control plane, connect batching and housekeeping of one process."""

    def __init__(self, jobs: tuple[Job, ...] | None = None) -> None:
        self.hub = Hub()
        self.control: ControlPlane | None = None  # set by ``start`` when a channel layer is configured
        self.jobs = housekeeping.default_jobs() if jobs is None else jobs
        # When each periodic job last ran (``realtime.fanout.housekeeping``), by job.
        self.stamps: dict[str, float] = {}
        self._starts: Batcher[_Start, Any] = Batcher(self._start_sessions, max_batch=500)
        self._housekeeping: asyncio.Task | None = None

    # -------------------------------------------------------------- lifecycle


    async def _start(self) -> None:
        """Open the hub's pub/sub connection and the control channel, start housekeeping and
        this process's outbox relay (``start`` runs this once)."""
        await self.hub.start()
        # Periodic jobs count from now: a registry refresh or a user recheck moments after
        # start would redo what the first connects just did, in the middle of a connect storm.
        now = time.monotonic()
        self.stamps.update(registry=now, users=now)
        # A fresh context: this task serves every socket, not the one whose connect started it.
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._run_housekeeping(), context=contextvars.Context())
        # The outbox relay of this process: delivers what waits in the outbox (this process's
        # rows after a Redis outage, and those of processes that died).
        from realtime.relay import relay

        relay().start()
        layer = get_channel_layer()
        if layer is not None:
            control = ControlPlane(layer, self.hub.connections)
            await control.start()
            self.control = control

    async def stop(self) -> None:
        """Stop housekeeping, the control channel and the hub's reader, and close the hub's
        connection. Sockets still open stop receiving; what they left in Redis (registry
        entries, control memberships) expires on its own. The relay is the process's and
        outlives the node (``realtime.relay``)."""
        self._forget_start()
        if self._housekeeping is not None:
            await _cancelled(self._housekeeping)
            self._housekeeping = None
        if self.control is not None:
            await self.control.stop()
            self.control = None
        await self.hub.stop()

    # -------------------------------------------------------------- sessions

    async def attach(self, conn: Any, entry: dict[str, Any], channels: tuple[str, ...]) -> tuple[int, list]:
        """Start a session: register ``conn`` in the hub, join ``channels`` and the user's control
        routing, write its registry ``entry``; returns how many live connections its user now
        has and the positions of ``channels`` (``streams.ReadResult``).

        Sessions starting in the same moment share one wait for their SUBSCRIBE and one
        script call (``_start_sessions``). On failure the caller runs ``detach``.
        """
        self.hub.register(conn)
        control = self.control
        user_id = entry["user_id"]
        start = _Start(entry, channels, self.hub.join_soon(conn, channels),
                       control if control is not None and control.join_soon(user_id, conn) else None)
        return await self._starts.submit(start)

    async def detach(self, conn: Subscriber, user_id: str) -> None:
        """End a session: leave the channels, the control routing and the registry ``attach`` joined."""
        await self.hub.unregister(conn)
        try:
            if self.control is not None:
                await self.control.leave(user_id, conn)
            await registry.remove(conn.connection_id, user_id)
        except RedisError as exc:  # the registry entry expires by itself
            logger.warning("cleanup of a connection failed: %s", exc)

    @property
    def control_channel(self) -> str:
        """Where control messages for this process's sockets go (their registry entries name it)."""
        return self.control.channel_name if self.control is not None else ""

    async def _start_sessions(self, starts: list[_Start]) -> list[Any]:
        """The registry entries, welcome positions and control memberships of the sockets starting
        together: one wait for their subscriptions, then one script call and one membership write
        (a socket of its own would wait three times, each a future and a wake-up)."""
        pending = {f for start in starts for f in start.confirmations if not f.done()}
        if pending:
            await asyncio.wait(pending)  # each is settled by Redis or the SUBSCRIBE timer
        results: list[Any] = [None] * len(starts)
        ready = []
        for index, start in enumerate(starts):
            failures = [e for e in map(_failure, start.confirmations) if e is not None]
            if failures:
                results[index] = Failed(failures[0])
            else:
                ready.append(index)
        if ready:
            joining = [starts[i] for i in ready if starts[i].control is not None]
            control = self.control if joining else None
            user_ids = [start.entry["user_id"] for start in joining]
            # The memberships go into the registry's script when the layer keeps its groups in the
            # same Redis (the default): one round trip for the batch instead of two.
            scripted = control.joins_for_script(user_ids, settings.REDIS_URL) if control is not None else None
            added, *_ = await asyncio.gather(
                registry.add_many([(starts[i].entry, starts[i].channels) for i in ready], scripted),
                *([control.write_joins(user_ids)] if control is not None and scripted is None else []),
            )
            for index, result in zip(ready, added, strict=True):
                results[index] = result
        return results

    # -------------------------------------------------------------- housekeeping

    async def _run_housekeeping(self) -> None:
        interval_s = min(2.0, setting("HEARTBEAT_S") / 2)
        while True:
            await asyncio.sleep(interval_s)
            for job in self.jobs:
                try:
                    await job(self)
                except RedisError as exc:
                    logger.warning("housekeeping job %s: Redis unavailable (%s)", job.__name__, exc)
                except Exception:
                    logger.exception("housekeeping job %s failed", getattr(job, "__name__", job))


def _failure(confirmation: asyncio.Future) -> BaseException | None:
    if confirmation.cancelled():
        return ConnectionError("the subscription was given up")
    return confirmation.exception()


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


_nodes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Node] = weakref.WeakKeyDictionary()


async def get_node() -> Node:
    """The node of the running event loop, started on first use."""
    loop = asyncio.get_running_loop()
    node = _nodes.get(loop)
    if node is None:
        node = _nodes[loop] = Node()
    await node.start()
    return node
