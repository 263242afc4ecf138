"""The channel layer: channels_redis, with one channel joining or leaving many groups at once.

``group_add`` of channels_redis costs two round trips (ZADD, then EXPIRE) and
``group_discard`` one. The control plane (``realtime.control``) changes the memberships of
its process channel in many users' groups at once in a connect storm, a mass disconnect or
a periodic refresh; here those go to each shard as one script call. Group keys, scores and
expiry are exactly those of ``group_add``/``group_discard``, so ``group_send`` and every
other layer call see no difference.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from channels_redis.core import RedisChannelLayer

from realtime import topology

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
