"""Redis behind Sentinel: REDIS_URL parsing, and every Redis user following a failover.

The sets are of the test's own (``tests.redis_servers.SentinelSet``: master, replica and
three ``redis-server --sentinel`` processes on free ports), killed after each test.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.core.cache import caches

from realtime import layers, registry, streams, topology
from realtime import publish as rt_publish
from realtime import redis as rt_redis
from realtime import relay as rt_relay
from realtime.publish import publish_on_commit
from tests.redis_servers import SentinelSet

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_plain_url_is_one_server():
    assert topology.parse("redis://127.0.0.1:6379/3") == topology.Topology("single", "redis://127.0.0.1:6379/3")


def test_a_sentinel_url_names_sentinels_master_db_and_passwords():
    parsed = topology.parse("redis+sentinel://:s%40cret@h1:26379,[::1]:26380/prod-master/4?sentinel_password=x")

    assert (parsed.kind, parsed.sentinels, parsed.master, parsed.db) == (
        "sentinel", (("h1", 26379), ("::1", 26380)), "prod-master", 4)
    assert (parsed.username, parsed.password, parsed.sentinel_password) == (None, "s@cret", "x")


@pytest.mark.parametrize(("url", "error"), [
    ("redis+sentinel://h1/m/0", "sentinel address 'h1' is not host:port"),
    ("redis+sentinel://h1:26379", "a Sentinel URL ends with /<master name> or /<master name>/<db>"),
    ("redis+sentinel://h1:26379/m/x", "database 'x' is not a number"),
    ("redis+sentinel://h1:26379/m/0?timeout=3", "unknown Sentinel option(s) timeout"),
])
def test_a_malformed_sentinel_url_says_what_is_wrong(url, error):
    with pytest.raises(topology.RedisUrlError) as raised:
        topology.parse(url)
    assert str(raised.value) == "REDIS_URL: " + error


@pytest.fixture
def sentinel_set(tmp_path, settings):
    """A Sentinel set of this test's own, used by this process's realtime clients and cache."""
    group = SentinelSet(tmp_path).start()
    original = settings.REDIS_URL

    def point(url: str) -> None:
        settings.REDIS_URL = url
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": [url]}}
        rt_redis.reset()
        rt_publish._breaker = None
        rt_relay.reset()

    point(group.url)
    yield group
    point(original)
    group.stop()


def _layer(url: str) -> layers.RealtimeRedisChannelLayer:
    host = topology.channel_layer_host(topology.parse(url), socket_timeout=5, socket_connect_timeout=1)
    return layers.RealtimeRedisChannelLayer(hosts=[host], prefix="rtsentinel")


def _retry(call, timeout: float = 20):
    """Call until it stops raising (the first calls after a failover meet broken connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_after_a_failover_every_redis_user_reaches_the_new_master(sentinel_set):
    first = rt_publish.publish_rollback_unsafe("user:7", "system_event", {"n": 1})
    caches["default"].set("throttle-probe", 1)
    layer = _layer(sentinel_set.url)

    async def layer_round_trip(text: str) -> dict:
        channel = await layer.new_channel("rtcontrol")
        await layer.group_add_many(["rt.user.7"], channel)
        await layer.group_send("rt.user.7", {"type": "rt.probe", "text": text})
        return await asyncio.wait_for(layer.receive(channel), 5)

    assert asyncio.run(layer_round_trip("before"))["text"] == "before"
    assert first is not None
    _retry(lambda: sentinel_set.replica.client().exists(streams.meta_key("user:7")) or 1 / 0)

    failover_s = sentinel_set.fail_over()

    second = _retry(lambda: rt_publish.publish_rollback_unsafe("user:7", "system_event", {"n": 2}) or 1 / 0)
    # The promoted replica has another run id: the generation was renewed, the epoch changed,
    # and offsets keep counting (what clients saw is never handed out again in one epoch).
    assert (second.epoch != first.epoch, second.offset) == (True, 2)
    assert rt_redis.sync_client().connection_pool.get_master_address() == ("127.0.0.1", sentinel_set.replica.port)
    # Django's cache (DRF throttles) asks the sentinels too; the replica had the key.
    assert _retry(lambda: caches["default"].get("throttle-probe")) == 1
    assert _retry(lambda: asyncio.run(layer_round_trip("after")))["text"] == "after"
    assert failover_s < 30


def test_the_outbox_relay_delivers_what_was_committed_during_the_failover(sentinel_set):
    publish_on_commit("user:8", "system_event", {"n": 1})
    assert rt_relay.relay().drain(10)
    _retry(lambda: sentinel_set.replica.client().exists(streams.meta_key("user:8")) or 1 / 0)
    sentinel_set.master.kill()  # the sentinels notice after down-after-milliseconds
    for n in range(2, 7):  # committed while there is no master: the relay holds them
        publish_on_commit("user:8", "system_event", {"n": n})
    assert rt_relay.relay().drain(40)

    entries = rt_redis.sync_client().xrange(streams.history_key("user:8"))
    records = [streams.Record.parse(fields[b"r"]) for _, fields in entries]
    # Delivered to the new master, exactly once each, in commit order, in one new epoch.
    assert [r.offset for r in records] == [2, 3, 4, 5, 6]
    assert [int(r.body.split(b'"n":')[1].split(b"}")[0]) for r in records] == [2, 3, 4, 5, 6]
    assert sentinel_set.master_port() == sentinel_set.replica.port


def test_the_registry_script_runs_on_the_new_master(sentinel_set):
    entry = {"connection_id": "c1", "user_id": "5", "connected_at": 1.0}

    async def add() -> list:
        return await registry.add_many([(entry, ("user:5",))])

    before = asyncio.run(add())
    sentinel_set.fail_over()
    after = _retry(lambda: asyncio.run(add()))

    assert before[0][0] == 1 and after[0][0] == 1  # the same connection id, counted once
    assert after[0][1][0].epoch != before[0][1][0].epoch
