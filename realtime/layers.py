"""The channel layer: channels_redis, with group changes for many channels in one pipeline.

``group_add`` of channels_redis costs two round trips (ZADD, then EXPIRE) and
``group_discard`` one. The control plane (``realtime.control``) changes the memberships of
many users at once in a connect storm, a mass disconnect or a periodic refresh; here those
go to each shard as one pipeline. Group keys, scores and expiry are exactly those of
``group_add``/``group_discard``, so ``group_send`` and every other layer call see no difference.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from channels_redis.core import RedisChannelLayer


class RealtimeRedisChannelLayer(RedisChannelLayer):
    """channels_redis's ``RedisChannelLayer`` plus ``group_add_many``/``group_discard_many``."""

    async def group_add_many(self, memberships: Iterable[tuple[str, str]]) -> None:
        """``group_add(group, channel)`` for every pair, one pipeline per shard."""
        now = time.time()
        await self._pipelined(memberships, lambda pipe, key, channel: (
            pipe.zadd(key, {channel: now}), pipe.expire(key, self.group_expiry)))

    async def group_discard_many(self, memberships: Iterable[tuple[str, str]]) -> None:
        """``group_discard(group, channel)`` for every pair, one pipeline per shard."""
        await self._pipelined(memberships, lambda pipe, key, channel: pipe.zrem(key, channel))

    async def _pipelined(self, memberships: Iterable[tuple[str, str]], command) -> None:  # noqa: ANN001
        pipes: dict[int, object] = {}
        for group, channel in memberships:
            assert self.require_valid_group_name(group), "Group name not valid"
            assert self.require_valid_channel_name(channel), "Channel name not valid"
            index = self.consistent_hash(group)
            pipe = pipes.get(index)
            if pipe is None:
                pipe = pipes[index] = self.connection(index).pipeline(transaction=False)
            command(pipe, self._group_key(group), channel)
        for pipe in pipes.values():
            await pipe.execute()
