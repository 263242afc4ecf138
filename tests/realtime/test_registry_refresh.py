"""The registry's periodic refresh, on a redis-server of the test's own (its commands are counted)."""

from __future__ import annotations

import asyncio

import pytest

from realtime.storage import redis as rt_redis
from realtime.storage import registry
from tests.redis_servers import RedisServer


@pytest.fixture
def own_server(tmp_path, settings):
    server = RedisServer(tmp_path / "redis").start()
    original = settings.REDIS_URL
    settings.REDIS_URL = server.url
    rt_redis.reset()
    yield server
    settings.REDIS_URL = original
    rt_redis.reset()
    server.kill()


def test_a_refresh_rewrites_every_entry_in_hsets_of_a_thousand(own_server):
    entries = [{"connection_id": f"c{n}", "user_id": str(n % 700), "connected_at": 1.0} for n in range(2500)]
    client = own_server.client()
    client.config_resetstat()

    asyncio.run(registry.refresh(entries))

    calls = client.info("commandstats")
    assert calls["cmdstat_hset"]["calls"] == 3
    assert client.hlen(registry.proc_key()) == 2500
    assert client.zcard(registry.user_key("3")) == 4  # connections 3, 703, 1403, 2103
