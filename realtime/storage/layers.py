"""The channel layer: channels_redis, with one channel joining or leaving many groups at once;
on a Redis Cluster, ``ClusterChannelLayer``.

``group_add`` of channels_redis costs two round trips (ZADD, then EXPIRE) and
``group_discard`` one. The control plane (``realtime.fanout.control``) changes the memberships of
its process channel in many users' groups at once in a connect storm, a mass disconnect or
a periodic refresh; here those go to each shard as one script call. Group keys, scores and
expiry are exactly those of ``group_add``/``group_discard``, so ``group_send`` and every
other layer call see no difference.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Iterable
from typing import Any

import orjson
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from channels_redis.core import RedisChannelLayer

from realtime.storage import topology

# One command for a batch of memberships: KEYS are group keys, ARGV[1] the channel, ARGV[2]
# the score (now), ARGV[3] the group expiry; exactly group_add's ZADD and EXPIRE per key.
_GROUP_ADD_LUA = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return #KEYS
"""
_GROUP_DISCARD_LUA = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return #KEYS
"""


class RealtimeRedisChannelLayer(RedisChannelLayer):
    """channels_redis's ``RedisChannelLayer`` plus ``group_add_many``/``group_discard_many``."""

    async def group_add_many(self, groups: Iterable[str], channel: str) -> None:
        """``group_add(group, channel)`` for every group: one script call per shard."""
        await self._run(_GROUP_ADD_LUA, groups, channel, repr(time.time()), self.group_expiry)

    async def group_discard_many(self, groups: Iterable[str], channel: str) -> None:
        """``group_discard(group, channel)`` for every group: one script call per shard."""
        await self._run(_GROUP_DISCARD_LUA, groups, channel)

    def group_keys_in(self, redis_url: str, groups: Iterable[str]) -> list[bytes] | None:
        """The Redis keys of ``groups``, when this layer keeps them all in the Redis at
        ``redis_url`` (one host, that server or that Sentinel master): another script there can
        then write them as ``group_add`` does (ZADD now channel, EXPIRE group_expiry). None
        otherwise."""
        if len(self.hosts) != 1 or not _same_redis(self.hosts[0], topology.parse(redis_url)):
            return None
        return [self._group_key(group) for group in groups]

    async def _run(self, script: str, groups: Iterable[str], channel: str, *args: object) -> None:
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        by_shard: dict[int, list[bytes]] = {}
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
            by_shard.setdefault(self.consistent_hash(group), []).append(self._group_key(group))
        for index, keys in by_shard.items():
            # eval, not evalsha: a Redis that restarted has no scripts, and these run once per
            # batch (Redis caches the compiled script either way).
            await self.connection(index).eval(script, len(keys), *keys, channel, *args)


def _same_redis(host: dict, target: topology.Topology) -> bool:
    """Whether a channels_redis ``hosts`` entry names the Redis of ``target``."""
    if target.kind == "single":
        return host.get("address") == target.url
    return (host.get("master_name") == target.master and host.get("db", 0) == target.db
            and [tuple(s) for s in host.get("sentinels", ())] == list(target.sentinels))


# ---------------------------------------------------------------------- Redis Cluster

# KEYS[1] the channel's list; ARGV: message, capacity, expiry. One key: one slot.
_SEND_LUA = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class ClusterChannelLayer(BaseChannelLayer):
    """A channel layer on a Redis Cluster, with channels_redis's semantics for what the control
    plane uses: channels, groups (``group_add``/``group_discard``/``group_send`` and the
    ``_many`` forms), capacities, expiry and group expiry.

    channels_redis cannot run on a Cluster: its scripts touch the keys of many channels at once.
    Here every command touches one key: a channel is a list ``<prefix>:{<channel>}`` (RPUSH,
    BLPOP), a group a sorted set ``<prefix>:group:{<group>}`` of channels scored by when they
    joined, and ``group_send`` reads the group, then sends to each member (a full channel is
    skipped, as in channels_redis). Messages are JSON (the control messages are).
    """

    extensions = ["groups"]

    def __init__(self, cluster_url: str, prefix: str = "asgi", expiry: int = 60, group_expiry: int = 86400,
                 capacity: int = 100, channel_capacity: dict | None = None, **_: Any) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(self.channel_capacity)
        self.topology = topology.parse(cluster_url)
        self.prefix = prefix
        self.group_expiry = group_expiry
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # BLPOP waits up to _RECEIVE_WAIT_S: reads may take longer than that.
            client = self._clients[loop] = topology.cluster_client(
                self.topology, asynchronous=True, max_connections=2000, socket_timeout=_RECEIVE_WAIT_S + 10,
                socket_connect_timeout=2)
        return client

    def _channel_key(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}"

    def _group_key(self, group: str) -> str:
        return f"{self.prefix}:group:{{{group}}}"

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel name, unique to this call."""
        return f"{prefix}.{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict) -> None:
        """Queue a message on a channel; ChannelFull when it holds its capacity already."""
        assert self.require_valid_channel_name(channel)
        sent = await self._client().eval(_SEND_LUA, 1, self._channel_key(channel), orjson.dumps(message),
                                         self.get_capacity(channel), self.expiry)
        if not sent:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> dict:
        """The next message of a channel, waiting as long as it takes."""
        assert self.require_valid_channel_name(channel, receive=True)
        key = self._channel_key(channel)
        while True:
            popped = await self._client().blpop([key], timeout=_RECEIVE_WAIT_S)
            if popped is not None:
                return orjson.loads(popped[1])

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel to a group (until group_expiry, unless added again)."""
        await self.group_add_many([group], channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group."""
        await self.group_discard_many([group], channel)

    async def group_add_many(self, groups: Iterable[str], channel: str) -> None:
        """``group_add(group, channel)`` for every group, in one pipeline (each node its part)."""
        assert self.require_valid_channel_name(channel)
        pipe = self._client().pipeline()
        for group in groups:
            assert self.require_valid_group_name(group)
            pipe.zadd(self._group_key(group), {channel: time.time()})
            pipe.expire(self._group_key(group), self.group_expiry)
        await pipe.execute()

    async def group_discard_many(self, groups: Iterable[str], channel: str) -> None:
        """``group_discard(group, channel)`` for every group, in one pipeline."""
        assert self.require_valid_channel_name(channel)
        pipe = self._client().pipeline()
        for group in groups:
            assert self.require_valid_group_name(group)
            pipe.zrem(self._group_key(group), channel)
        await pipe.execute()

    async def group_send(self, group: str, message: dict) -> None:
        """Send a message to every channel of a group (full channels are skipped)."""
        assert self.require_valid_group_name(group)
        key = self._group_key(group)
        client = self._client()
        await client.zremrangebyscore(key, 0, time.time() - self.group_expiry)
        for channel in await client.zrange(key, 0, -1):
            try:
                await self.send(channel.decode(), message)
            except ChannelFull:
                pass

    def group_keys_in(self, redis_url: str, groups: Iterable[str]) -> None:
        """The groups are never written by another script here (one slot per script)."""
        return None


# Seconds one BLPOP waits before receive() asks again.
_RECEIVE_WAIT_S = 5
