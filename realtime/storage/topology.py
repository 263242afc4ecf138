"""Which Redis the service talks to, chosen by one URL: one server, a master behind Sentinel,
or a Redis Cluster.

``REDIS_URL`` is either a plain redis-py URL (``redis://host:6379/0``, ``rediss://...``,
``unix:///path/redis.sock``) or a Sentinel URL::

    redis+sentinel://[[user]:password@]host:26379[,host2:26379...]/<master name>[/<db>][?sentinel_password=...]

or a Cluster URL (any reachable nodes; the client learns the rest)::

    redis+cluster://[[user]:password@]host:7000[,host2:7001...]

For Sentinel every pool (history and publishing, the hub's pub/sub, the registry, the outbox
relay, limits, the Django cache behind DRF throttles, the channel layer) asks the sentinels
for the current master before each new connection, so after a failover every process finds the
new master by itself once its old connections break. The password of the URL is the master's;
``sentinel_password`` is the sentinels' own, when they require one.

For Cluster the keys of one channel share a hash slot (``{channel}`` tags), fan-out uses sharded
pub/sub (SPUBLISH/SSUBSCRIBE: a message goes to the shard of its channel only) and the control
plane uses ``realtime.storage.layers.ClusterChannelLayer``; see docs/operations.md.

This module reads no settings (``renum.settings`` builds CHANNEL_LAYERS and CACHES with it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
# How long a sentinel may take to name the master: a dead sentinel costs the next one this long.
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Topology:
    """A parsed ``REDIS_URL``: ``kind`` is ``single``, ``sentinel`` or ``cluster`` (whose
    ``sentinels`` are the startup nodes)."""

    kind: str
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def master_kwargs(self) -> dict[str, Any]:
        """Connection arguments of the master (Sentinel only names its address)."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def sentinel_kwargs(self, timeout: float = SENTINEL_TIMEOUT_S) -> dict[str, Any]:
        """Connection arguments of the sentinels themselves."""
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "password": self.sentinel_password}


class RedisUrlError(ValueError):
    """``REDIS_URL`` cannot be understood; the message says what is wrong."""


def parse(url: str) -> Topology:
    """Parse ``REDIS_URL``; raises RedisUrlError naming the problem for a malformed Sentinel URL."""
    if url.startswith(CLUSTER_SCHEME + "://"):
        return _parse_cluster(url)
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return Topology("single", url)
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    userinfo, hosts = netloc[0], netloc[2]
    username, password = _credentials(userinfo)
    sentinels = _addresses(hosts, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise RedisUrlError("REDIS_URL: a Sentinel URL ends with /<master name> or /<master name>/<db>")
    if len(path) == 2 and not path[1].isdigit():
        raise RedisUrlError(f"REDIS_URL: database {path[1]!r} is not a number")
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise RedisUrlError(f"REDIS_URL: unknown Sentinel option(s) {', '.join(sorted(unknown))}")
    return Topology("sentinel", url, tuple(sentinels), unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                    username, password, query.get("sentinel_password", [None])[0])


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, _, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) or None


def _addresses(hosts: str, what: str) -> list[tuple[str, int]]:
    addresses = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise RedisUrlError(f"REDIS_URL: {what} address {item!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _parse_cluster(url: str) -> Topology:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    nodes = _addresses(hosts, "cluster node")
    if parts.path.strip("/") not in ("", "0"):
        raise RedisUrlError("REDIS_URL: a Redis Cluster has only database 0")
    if parts.query:
        raise RedisUrlError(f"REDIS_URL: unknown Cluster option(s) {parts.query}")
    return Topology("cluster", url, tuple(nodes), username=username, password=password)


# ---------------------------------------------------------------------- pools


class _SentinelBlockingPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection (as ``realtime.storage.redis`` wants) instead of raising."""


class _AsyncSentinelBlockingPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The async twin of ``_SentinelBlockingPool``."""


def cluster_client(topology: Topology, *, asynchronous: bool, max_connections: int = 64,
                   **kwargs: Any) -> Any:
    """A RedisCluster client (sync or for the running loop) of a ``cluster`` topology; it
    routes each command to the node owning its key's slot and follows MOVED replies."""
    kwargs.pop("timeout", None)  # a pool-wait timeout: cluster pools do not wait
    kwargs.pop("redis_connect_func", None)  # the cluster's own; generations are per node there
    kwargs.pop("health_check_interval", None)
    if asynchronous:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in topology.sentinels],
                            username=topology.username, password=topology.password,
                            max_connections=max_connections, **kwargs)
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in topology.sentinels],
                        username=topology.username, password=topology.password,
                        max_connections=max_connections, **kwargs)


def sync_pool(topology: Topology, *, blocking: bool = True, **kwargs: Any) -> redis.ConnectionPool:
    """A sync pool of the master (``kwargs``: redis-py connection and pool arguments)."""
    if topology.kind == "single":
        pool_class = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
        return pool_class.from_url(topology.url, **kwargs)
    # A pool with short timeouts (the delivery attempt right after a commit) asks the sentinels
    # within them too: a dead sentinel must not hold a request longer than its Redis calls.
    timeout = min(SENTINEL_TIMEOUT_S, kwargs.get("socket_connect_timeout") or SENTINEL_TIMEOUT_S)
    manager = redis.sentinel.Sentinel(list(topology.sentinels), sentinel_kwargs=topology.sentinel_kwargs(timeout))
    pool_class = _SentinelBlockingPool if blocking else redis.sentinel.SentinelConnectionPool
    return pool_class(topology.master, manager, is_master=True, **topology.master_kwargs(), **kwargs)


def async_pool(topology: Topology, *, blocking: bool = True, **kwargs: Any) -> aioredis.ConnectionPool:
    """An async pool of the master, for the running event loop."""
    if topology.kind == "single":
        pool_class = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
        return pool_class.from_url(topology.url, **kwargs)
    manager = aiosentinel.Sentinel(list(topology.sentinels), sentinel_kwargs=topology.sentinel_kwargs())
    pool_class = _AsyncSentinelBlockingPool if blocking else aiosentinel.SentinelConnectionPool
    return pool_class(topology.master, manager, is_master=True, **topology.master_kwargs(), **kwargs)


def channel_layer_host(topology: Topology, **kwargs: Any) -> dict[str, Any]:
    """A ``hosts`` entry of channels_redis for this topology (it speaks Sentinel itself)."""
    if topology.kind == "single":
        return {"address": topology.url, **kwargs}
    return {"sentinels": list(topology.sentinels), "master_name": topology.master,
            "sentinel_kwargs": topology.sentinel_kwargs(), **topology.master_kwargs(), **kwargs}


class CachePool:
    """``pool_class`` of Django's RedisCache: its LOCATION is ``REDIS_URL``, whatever the topology.

    One pool per URL and options for the whole process. Django keeps its cache objects in a
    context-local store, and under ASGI each request runs in a context of its own: every
    request made a new ``RedisCache``, whose client made a new pool, and so opened a new Redis
    connection for the DRF throttle's one GET (a third of an ``unread-count`` call's time).
    """

    _pools: dict[tuple[str, str], redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> redis.ConnectionPool:
        key = (url, repr(sorted(options.items(), key=lambda item: item[0])))
        pool = cls._pools.get(key)
        if pool is None:
            with cls._lock:
                pool = cls._pools.get(key)
                if pool is None:
                    pool = cls._pools[key] = sync_pool(parse(url), blocking=False, **options)
        return pool
