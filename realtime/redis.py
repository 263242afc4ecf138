"""Redis clients of the realtime layer, one sync and one async pool per process and event loop.

Both pools *wait* for a free connection instead of raising when they are exhausted: the
default redis-py pool raises at ``max_connections`` and turns a connect storm into errors.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

_POOL_SIZE = int(os.environ.get("REALTIME_REDIS_POOL_SIZE", "64"))
_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def sync_client() -> redis.Redis:
    """The process's synchronous client (thread-safe; used by on-commit publishing)."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                pool = redis.BlockingConnectionPool.from_url(
                    settings.REDIS_URL, max_connections=_POOL_SIZE, timeout=5,
                    socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
                )
                _sync_client = redis.Redis(connection_pool=pool)
    return _sync_client


def async_client() -> aioredis.Redis:
    """The async client of the running event loop (pools cannot be shared across loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=_POOL_SIZE, timeout=5,
            socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def new_async_connection_client() -> aioredis.Redis:
    """A client with its own dedicated pool, for long-lived pub/sub readers."""
    return aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=0)


def sync_script(source: str):
    """A Lua script bound to the sync client (EVALSHA, loading the script when Redis lost it)."""
    client = sync_client()
    script = _sync_scripts.get(source)
    if script is None:
        script = _sync_scripts[source] = client.register_script(source)
    return script


def async_script(source: str):
    """A Lua script bound to the running loop's async client."""
    client = async_client()
    scripts = _async_scripts.setdefault(client, {})
    script = scripts.get(source)
    if script is None:
        script = scripts[source] = client.register_script(source)
    return script


_sync_scripts: dict[str, object] = {}
_async_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
