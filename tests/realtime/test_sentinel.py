"""Redis behind Sentinel: REDIS_URL parsing, and every Redis user following a failover.

The sets are of the test's own (``tests.redis_servers.SentinelSet``: master, replica and
three ``redis-server --sentinel`` processes on free ports), killed after each test.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.core.cache import caches

from realtime import publish as rt_publish
from realtime import relay as rt_relay
from realtime.publish import publish_on_commit
from realtime.storage import layers, registry, streams, topology
from realtime.storage import redis as rt_redis
from tests.redis_servers import SentinelSet, reset_realtime_clients

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_plain_url_is_one_server():
    assert topology.parse("redis://127.0.0.1:6379/3") == topology.Topology("single", "redis://127.0.0.1:6379/3")


def test_a_sentinel_url_names_sentinels_master_db_and_passwords():
    parsed = topology.parse("redis+sentinel://:s%40cret@h1:26379,[::1]:26380/prod-master/4?sentinel_password=x")

    assert (parsed.kind, parsed.sentinels, parsed.master, parsed.db) == (
        "sentinel", (("h1", 26379), ("::1", 26380)), "prod-master", 4)
    assert (parsed.username, parsed.password, parsed.sentinel_password) == (None, "s@cret", "x")


def test_a_cluster_url_names_its_startup_nodes():
    parsed = topology.parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")

    assert (parsed.kind, parsed.sentinels, parsed.password) == (
        "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)), "pw")


@pytest.mark.parametrize(("url", "error"), [
    ("redis+cluster://10.0.0.1:7000/3", "a Redis Cluster has only database 0"),
    ("redis+cluster://10.0.0.1", "cluster node address '10.0.0.1' is not host:port"),
    ("redis+sentinel://h1/m/0", "sentinel address 'h1' is not host:port"),
    ("redis+sentinel://h1:26379", "a Sentinel URL ends with /<master name> or /<master name>/<db>"),
    ("redis+sentinel://h1:26379/m/x", "database 'x' is not a number"),
    ("redis+sentinel://h1:26379/m/0?timeout=3", "unknown Sentinel option(s) timeout"),
])
def test_a_malformed_sentinel_url_says_what_is_wrong(url, error):
    with pytest.raises(topology.RedisUrlError) as raised:
        topology.parse(url)
    assert str(raised.value) == "REDIS_URL: " + error


def test_a_short_timeout_pool_asks_the_sentinels_within_it_too():
    parsed = topology.parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/m/0")

    fast = topology.sync_pool(parsed, socket_timeout=0.05, socket_connect_timeout=0.05)
    normal = topology.sync_pool(parsed, socket_timeout=5, socket_connect_timeout=2)

    def sentinel_timeouts(pool) -> set:
        kwargs = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
        return {(k["socket_timeout"], k["socket_connect_timeout"]) for k in kwargs}

    assert (sentinel_timeouts(fast), sentinel_timeouts(normal)) == ({(0.05, 0.05)}, {(1.0, 1.0)})


@pytest.fixture
def sentinel_set(tmp_path, settings):
    """A Sentinel set of this test's own, used by this process's realtime clients and cache."""
    group = SentinelSet(tmp_path).start()
    original = settings.REDIS_URL

    def point(url: str) -> None:
        settings.REDIS_URL = url
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": [url]}}
        reset_realtime_clients()

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


# ---------------------------------------------------------------------- live: 100 clients


class Tracker:
    """What one client's application holds: notification ids received live or fetched on resync."""

    def __init__(self, server_url: str, token: str) -> None:
        self.server_url = server_url
        self.token = token
        self.live: list[str] = []
        self.fetched: set[str] = set()
        self.resyncs = 0
        self.fetching: set[asyncio.Task] = set()

    def on_message(self, message: dict) -> None:
        if message["type"] == "notification":
            self.live.append(message["payload"]["id"])

    def on_resync(self, channel: str, reason: str) -> None:
        # What an application does on resync: read the state again over REST.
        if channel.startswith("user:"):
            self.resyncs += 1
            task = asyncio.ensure_future(self._fetch())
            self.fetching.add(task)
            task.add_done_callback(self.fetching.discard)

    async def _fetch(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = await asyncio.to_thread(_get_json, f"{self.server_url}/api/notifications/", self.token)
                self.fetched.update(item["id"] for item in body["results"])
                return
            except Exception:  # the server's own Redis calls may fail while there is no master
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def holds(self, ids: set[str]) -> bool:
        return ids <= (set(self.live) | self.fetched)


def _get_json(url: str, token: str) -> dict:
    import urllib.request

    import orjson

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


@pytest.mark.live
async def test_a_failover_under_load_with_100_clients_loses_no_notification(sentinel_set, live_server_factory,
                                                                           reliability):
    from asgiref.sync import sync_to_async

    from notifications.models import Notification
    from notifications.services import notification_create
    from tests.conftest import access_token_for
    from tests.realtime.test_failures import NO_LIMITS, create_users, wait_until
    from tests.reference_client import RealtimeClient

    users = await sync_to_async(create_users)(100)
    servers = [live_server_factory(REDIS_URL=sentinel_set.url, **NO_LIMITS) for _ in range(2)]
    clients = []
    for index, user in enumerate(users):
        server = servers[index % 2]
        token = access_token_for(user)
        tracker = Tracker(server.http_url, token)
        client = RealtimeClient(server.ws_url, token)
        client.on_message, client.on_resync = tracker.on_message, tracker.on_resync
        clients.append((user, client, tracker, asyncio.ensure_future(client.run())))
    await wait_until(lambda: all(c.state == "connected" for _, c, _, _ in clients), 60, "100 clients to connect")

    create = sync_to_async(notification_create, thread_sensitive=False)
    expected: dict[int, set[str]] = {user.pk: set() for user in users}

    async def notify_all(title: str) -> None:
        created = await asyncio.gather(*(create(user=u, type="info", title=title, message=title) for u in users))
        for user, notification in zip(users, created, strict=True):
            expected[user.pk].add(str(notification.id))

    await notify_all("before")
    await wait_until(lambda: all(t.holds(expected[u.pk]) for u, _, t, _ in clients), 20, "the first notifications")
    sentinel_set.master.kill()  # kill -9 under load: no replica promotion yet, no warning
    killed_at = time.monotonic()
    rounds = 0
    while sentinel_set.master_port() != sentinel_set.replica.port:  # committed while there is no master
        await notify_all(f"during {rounds}")
        rounds += 1
        await asyncio.sleep(0.2)
        assert time.monotonic() - killed_at < 30, "the sentinels did not fail over"
    promoted_at = time.monotonic()
    await notify_all("right after the failover")
    await wait_until(lambda: all(t.holds(expected[u.pk]) and c.state == "connected" for u, c, t, _ in clients),
                     15, "every client to hold every notification within 15 s of the failover")
    whole_s = time.monotonic() - promoted_at
    await notify_all("after")
    await wait_until(lambda: all(t.holds(expected[u.pk]) for u, _, t, _ in clients), 15, "live delivery again")

    stored = await sync_to_async(Notification.objects.filter(user__in=users).count)()
    total = sum(len(ids) for ids in expected.values())
    lost = sum(len(expected[u.pk] - set(t.live) - t.fetched) for u, _, t, _ in clients)
    twice = sum(len(t.live) - len(set(t.live)) for _, _, t, _ in clients)
    resynced = sum(1 for _, _, t, _ in clients if t.resyncs)
    assert (stored, lost, twice) == (total, 0, 0)
    assert resynced == 100  # the new master has another run id: every user channel got a new epoch
    reliability(scenario="Sentinel failover: master killed with kill -9", clients=100,
                expected=f"{total // 100} notifications per client", lost=lost, twice=twice,
                reconnect_s=(round(whole_s, 1), round(whole_s, 1)), result="pass",
                details=f"master + replica + 3 sentinels, 2 server processes; the master was killed while "
                        f"notifications were being created ({rounds} rounds of 100 committed while there was no "
                        f"master, delivered by the outbox relays to the promoted replica); the sentinels promoted "
                        f"it {promoted_at - killed_at:.1f} s after the kill; every server process reconnected by "
                        f"itself, the new run id gave every channel a new epoch, all 100 clients resynced over "
                        f"REST and held every notification {whole_s:.1f} s after the promotion.")
    for _, client, tracker, task in clients:
        await client.close()
        task.cancel()
        for fetch in list(tracker.fetching):
            fetch.cancel()
    await asyncio.gather(*(task for *_, task in clients), return_exceptions=True)
