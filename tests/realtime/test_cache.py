"""realtime.storage.cache: Django's Redis cache (DRF throttles) on REDIS_URL, one connection pool per process."""

from __future__ import annotations

import contextvars

from django.core.cache import caches

from realtime.storage import redis as rt_redis


def _in_a_new_context(function):
    """Run ``function`` in a fresh context, as Django's ASGI handler runs each request."""
    return contextvars.Context().run(function)


def test_each_request_context_gets_its_own_cache_object_but_they_share_one_pool():
    def pool_and_cache():
        cache = caches["default"]
        cache.set("probe", 1, 30)
        return cache, cache._cache.get_client(write=True).connection_pool

    first_cache, first_pool = _in_a_new_context(pool_and_cache)
    second_cache, second_pool = _in_a_new_context(pool_and_cache)

    assert first_cache is not second_cache  # Django's context-local cache objects
    assert first_pool is second_pool


def test_a_thousand_requests_open_no_new_redis_connections():
    def throttle_like_get():
        return caches["default"].get("probe-counter")

    _in_a_new_context(throttle_like_get)  # the pool's first connection
    client = rt_redis.sync_client()
    before = int(client.info("stats")["total_connections_received"])

    for _ in range(1000):
        _in_a_new_context(throttle_like_get)

    opened = int(client.info("stats")["total_connections_received"]) - before
    assert opened <= 2  # (other clients of this test process may connect meanwhile; not a thousand)
