"""Redis clients of the realtime layer, one sync and one async pool per process and event loop.

Both pools *wait* for a free connection instead of raising when they are exhausted: the
default redis-py pool raises at ``max_connections`` and turns a connect storm into errors.

Every new connection first checks that the server is the one that confirmed the data set's
generation (``streams.GENERATION_LUA``): a Redis restarted from its AOF (which may lack the
last second of writes) or a replica promoted in its place has another run id, and the
generation is renewed before the connection runs anything else, so no offset a client has
seen is handed out again in the same epoch. Behind Sentinel (``realtime.storage.topology``) each new
connection goes to the master the sentinels name, so after a failover the first connection
to the promoted replica renews the generation the same way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

from realtime.conf import setting
from realtime.storage import topology

logger = logging.getLogger("realtime.storage.redis")


def _run_id(info: bytes | str) -> str:
    text = info.decode() if isinstance(info, bytes) else info
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[7:].strip()
    raise redis.exceptions.ResponseError("INFO server has no run_id")


def _generation_command(run_id: str) -> list:
    from realtime.storage import streams

    return ["EVAL", streams.CHECK_GENERATION_LUA, 2, streams.generation_key(), streams.generation_run_key(),
            run_id, streams.new_epoch()]


def _check_generation(connection: redis.Connection) -> None:
    """``redis_connect_func`` of the sync pool: the usual handshake, then the generation check."""
    connection.on_connect()
    connection.send_command("INFO", "server")
    run_id = _run_id(connection.read_response())
    connection.send_command(*_generation_command(run_id))
    if connection.read_response() == 1:
        logger.warning("Redis server %s is new to this data set: channel epochs will change", run_id)


async def _acheck_generation(connection: aioredis.Connection) -> None:
    """The async twin of ``_check_generation``."""
    await connection.on_connect()
    await connection.send_command("INFO", "server")
    run_id = _run_id(await connection.read_response())
    await connection.send_command(*_generation_command(run_id))
    if await connection.read_response() == 1:
        logger.warning("Redis server %s is new to this data set: channel epochs will change", run_id)


def _topology() -> topology.Topology:
    """Single server, Sentinel or Cluster, as ``REDIS_URL`` says (``realtime.storage.topology``)."""
    url = settings.REDIS_URL
    if _parsed[0] != url:
        _parsed[:] = [url, topology.parse(url)]
    return _parsed[1]


_parsed: list = ["", None]


_sync_client: redis.Redis | None = None
_fast_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def is_cluster() -> bool:
    """Whether ``REDIS_URL`` names a Redis Cluster (sharded pub/sub, per-slot registry writes)."""
    return _topology().kind == "cluster"


def _sync(timeout: float) -> redis.Redis:
    if is_cluster():
        return topology.cluster_client(_topology(), asynchronous=False, max_connections=setting("REDIS_POOL_SIZE"),
                                       socket_timeout=timeout, socket_connect_timeout=min(timeout, 2))
    pool = topology.sync_pool(
        _topology(), max_connections=setting("REDIS_POOL_SIZE"), timeout=timeout,
        socket_timeout=timeout, socket_connect_timeout=min(timeout, 2), health_check_interval=30,
        redis_connect_func=_check_generation,
    )
    return redis.Redis(connection_pool=pool)


def sync_client() -> redis.Redis:
    """The process's synchronous client (thread-safe; used by on-commit publishing)."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                _sync_client = _sync(5)
    return _sync_client


def async_client() -> aioredis.Redis:
    """The async client of the running event loop (pools cannot be shared across loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        if is_cluster():
            # Per node; the async cluster client raises (not waits) past it, and holds a
            # connection per command in flight: room for a connect storm.
            client = topology.cluster_client(_topology(), asynchronous=True,
                                             max_connections=max(setting("REDIS_POOL_SIZE"), 1000),
                                             socket_timeout=5, socket_connect_timeout=2)
        else:
            pool = topology.async_pool(
                _topology(), max_connections=setting("REDIS_POOL_SIZE"), timeout=5,
                socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
                redis_connect_func=_acheck_generation,
            )
            client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def fast_client() -> redis.Redis:
    """A sync client with short timeouts, for the delivery attempt made right after a commit:
    a request never waits long on Redis (what fails goes to the relay, with normal timeouts)."""
    global _fast_client
    if _fast_client is None:
        from realtime.conf import setting

        with _sync_lock:
            if _fast_client is None:
                _fast_client = _sync(setting("PUBLISH_ATTEMPT_TIMEOUT_S"))
    return _fast_client


def reset() -> None:
    """Forget the sync clients (tests that point REDIS_URL elsewhere)."""
    global _sync_client, _fast_client
    _sync_client = _fast_client = None
    _sync_scripts.clear()


def new_async_connection_client() -> aioredis.Redis:
    """A client with its own dedicated pool, for long-lived pub/sub readers."""
    pool = topology.async_pool(_topology(), blocking=False, socket_connect_timeout=2, health_check_interval=0)
    return aioredis.Redis.from_pool(pool)


def script_source(source: str) -> str:
    """A script as this topology runs it. The scripts are written for one server; on a Redis
    Cluster their generation is the node's run id (a cluster has no key every slot can read;
    the run id changes exactly when ``streams.GENERATION_LUA``'s key would be renewed: a restarted or
    promoted node) and they publish with SPUBLISH, to the shard of the channel only."""
    if not is_cluster():
        return source
    from realtime.storage import streams

    return (source.replace(streams.GENERATION_LUA, streams.CLUSTER_GENERATION_LUA)
            .replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))


def sharded_pubsub(prefix: str):
    """The hub's pub/sub on a Redis Cluster (``realtime.storage.sharded``), for the running loop."""
    from realtime.storage.sharded import ShardedPubSub

    parsed = _topology()
    return ShardedPubSub(async_client(), prefix, username=parsed.username, password=parsed.password)


def sync_script(source: str):
    """A Lua script bound to the sync client (EVALSHA, loading the script when Redis lost it)."""
    client = sync_client()
    script = _sync_scripts.get(source)
    if script is None:
        script = _sync_scripts[source] = client.register_script(script_source(source))
    return script


def async_script(source: str):
    """A Lua script bound to the running loop's async client."""
    client = async_client()
    scripts = _async_scripts.setdefault(client, {})
    script = scripts.get(source)
    if script is None:
        script = scripts[source] = client.register_script(script_source(source))
    return script


async def evalsha_many(source: str, calls: list[tuple[list, list]]) -> list:
    """Run a script once per ``(keys, args)`` in one pipeline of the loop's client; returns the
    replies in order, raising the first error after the whole pipeline ran.

    A Script object in a pipeline makes redis-py ask SCRIPT EXISTS first, a round trip more on
    every pipeline; here the pipeline is EVALSHA alone, and only when Redis lost the script (a
    restart, SCRIPT FLUSH) are the calls that failed with NOSCRIPT sent again after loading it.
    """
    script = async_script(source)
    client = async_client()
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        await client.script_load(script.script)
        async with client.pipeline(transaction=False) as pipe:
            for i in missing:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


_sync_scripts: dict[str, object] = {}
_async_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
