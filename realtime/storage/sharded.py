"""The hub's pub/sub on a Redis Cluster: sharded channels, one connection per node.

On a Cluster the publish script sends a channel's records with SPUBLISH to the shard channel
``<prefix>:p:{<channel>}``, which lives in the slot of the channel's keys: only the node that
owns the channel (and its replicas) carries the message, instead of every node as with
PUBLISH. ``ShardedPubSub`` gives the hub what it uses of redis-py's ``PubSub`` (subscribe,
unsubscribe, get_message, ping) on top of SSUBSCRIBE: each subscription goes to the node
owning its slot, one reader per node feeds one queue, and the messages come out as plain
``message``/``subscribe`` messages named ``<prefix>:p:<channel>``, so the hub runs unchanged.

A node whose connection breaks reconnects and re-subscribes its shard channels (redis-py),
and the hub fills the gap from history as on one server. Slots moving between nodes while
the service runs (resharding) are not followed: restart the server processes after one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger("realtime.storage.sharded")

_KINDS = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class ShardedPubSub:
    """SSUBSCRIBE to the shard channels of ``<prefix><channel>`` names, each on its node."""

    def __init__(self, cluster: Any, prefix: str, *, username: str | None = None,
                 password: str | None = None) -> None:
        self._cluster = cluster  # redis.asyncio.cluster.RedisCluster: its slot map
        self._prefix = prefix
        self._credentials = {"username": username, "password": password}
        self._pubsubs: dict[str, asyncio.Future] = {}  # node name -> its PubSub, connected
        self._readers: dict[str, asyncio.Task] = {}
        self._queue: asyncio.Queue = asyncio.Queue()

    def _shard(self, name: str) -> str:
        return f"{self._prefix}{{{name[len(self._prefix):]}}}"

    async def _node_pubsub(self, shard: str) -> tuple[str, aioredis.client.PubSub]:
        await self._cluster.initialize()
        node = self._cluster.get_node_from_key(shard)
        opening = self._pubsubs.get(node.name)
        if opening is None:
            opening = self._pubsubs[node.name] = asyncio.ensure_future(self._open(node))
        return node.name, await asyncio.shield(opening)

    async def _open(self, node: Any) -> aioredis.client.PubSub:
        # Connected here, once per node: redis-py's PubSub connects on its first command, and
        # two subscribes racing there would each open a connection, one of them never read.
        try:
            client = aioredis.Redis(host=node.host, port=node.port, socket_connect_timeout=2, **self._credentials)
            pubsub = client.pubsub()
            await pubsub.connect()
            return pubsub
        except BaseException:
            self._pubsubs.pop(node.name, None)
            raise

    async def subscribe(self, *names: str) -> None:
        """SSUBSCRIBE each name's shard channel on its node (one command per slot: SSUBSCRIBE
        refuses channels of several slots)."""
        by_slot: dict[int, list[str]] = {}
        for name in names:
            shard = self._shard(name)
            by_slot.setdefault(self._cluster.keyslot(shard), []).append(shard)
        for shards in by_slot.values():
            node, pubsub = await self._node_pubsub(shards[0])
            await pubsub.ssubscribe(*shards)
            if node not in self._readers:  # after the first SSUBSCRIBE: a reader needs a connection
                loop = asyncio.get_running_loop()
                self._readers[node] = loop.create_task(self._read(pubsub), context=contextvars.Context())

    async def unsubscribe(self, *names: str) -> None:
        """SUNSUBSCRIBE, on the node that holds each subscription."""
        for name in names:
            shard = self._shard(name)
            _, pubsub = await self._node_pubsub(shard)
            await pubsub.sunsubscribe(shard)

    async def get_message(self, ignore_subscribe_messages: bool = False, timeout: float | None = None) -> dict | None:
        """The next message of any node, as redis-py's PubSub gives it; a node's connection
        error is raised here (the hub logs it and calls ``ping`` to reconnect)."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def ping(self) -> None:
        """Reconnect every node's connection that broke (their subscriptions are renewed)."""
        for opening in list(self._pubsubs.values()):
            if not opening.done() or opening.exception() is not None:
                continue
            try:
                await opening.result().ping()
            except (RedisError, OSError) as exc:
                logger.warning("sharded pub/sub: a node is still unreachable (%s)", exc)

    async def aclose(self) -> None:
        """Stop reading and close every node's connection (the hub's ``stop``)."""
        for reader in self._readers.values():
            reader.cancel()
        self._readers.clear()
        openings, self._pubsubs = list(self._pubsubs.values()), {}
        for opening in openings:
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                pubsub = opening.result()
                await pubsub.aclose()
                await pubsub.connection_pool.aclose()
            else:
                opening.cancel()

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        prefix_len = len(self._prefix)
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
            except (RedisError, OSError) as exc:
                await self._queue.put(exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message["channel"] is None:
                continue
            kind = message["type"]
            kind = _KINDS.get(kind.decode() if isinstance(kind, bytes) else kind)
            if kind is None:
                continue
            shard = message["channel"]
            # <prefix>{<channel>} -> <prefix><channel>
            name = shard[:prefix_len] + shard[prefix_len + 1:-1]
            await self._queue.put({**message, "type": kind, "channel": name})
