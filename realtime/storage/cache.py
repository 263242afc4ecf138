"""Django's Redis cache on whatever Redis ``REDIS_URL`` names (it backs the DRF throttles).

Django's ``RedisCache`` makes a pool per server URL and a ``redis.Redis`` on it: for one server
and Sentinel the pool comes from ``realtime.storage.topology.CachePool`` (the OPTIONS' ``pool_class``);
for a Redis Cluster the client is a ``RedisCluster``, which routes each key to its node. The
throttles read and write one key at a time; ``get_many``/``set_many`` on a Cluster need keys of
one slot.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from realtime.storage import topology


class _Client(RedisCacheClient):
    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._topology = topology.parse(servers[0])
        self._cluster = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if self._topology.kind != "cluster":
            return super().get_client(key, write=write)
        if self._cluster is None:
            self._cluster = topology.cluster_client(self._topology, asynchronous=False, socket_timeout=5,
                                                    socket_connect_timeout=2)
        return self._cluster


class RedisCache(DjangoRedisCache):
    """``django.core.cache.backends.redis.RedisCache`` for one server, Sentinel or Cluster."""

    def __init__(self, server: Any, params: dict) -> None:
        super().__init__(server, params)
        self._class = _Client
