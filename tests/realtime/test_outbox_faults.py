"""Redis faults with the outbox: every notification committed during the fault reaches its client.

A real server process and this test process (the publisher, through ``notification_create``)
use a Redis of the test's own, through a TCP proxy of the test's own; the shared Redis is never
faulted. Each scenario connects reference clients (``tests/reference_client.py``), creates
notifications before, during and after the fault, and checks for every user that each one
arrived exactly once and in order, or that the client was told to resync and the REST reload
contains it; and that creating a notification during the fault took no longer than without
it (plus the delivery attempt's short timeout). ``bash scripts/reliability.sh`` records the
figures in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from notifications.services import notification_create
from realtime import relay as rt_relay
from tests.conftest import access_token_for
from tests.realtime.test_failures import create_users, start_client, stop_clients, wait_until
from tests.redis_servers import RedisServer, TcpProxy

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

NO_LIMITS = {"REALTIME_CONNECTS_PER_IP_PER_MINUTE": "0"}
USERS = 5
DURING = 3  # notifications per user created during the fault

SCENARIOS = {
    "pause": "Redis writes paused (CLIENT PAUSE 3000 WRITE)",
    "kill9_aof": "Redis killed with kill -9 (AOF, fsync always) and restarted",
    "restart_empty": "Redis killed and restarted empty",
    "proxy_cut": "network cut mid-publish (proxy swallows replies, then cuts and refuses)",
    "replica_promoted": "failover to a replica that missed writes (REPLICAOF NO ONE)",
}



def rest_notification_ids(server, user) -> list[str]:
    """What the client's REST reload returns: the user's notification ids, newest first."""
    request = urllib.request.Request(f"{server.http_url}/api/notifications/?page_size=200",
                                     headers={"Authorization": f"Bearer {access_token_for(user)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return [n["id"] for n in orjson.loads(response.read())["results"]]


@pytest.mark.parametrize("fault", list(SCENARIOS))
async def test_notifications_committed_during_a_redis_fault_reach_every_client_exactly_once(
        fault, tmp_path, live_server_factory, use_redis, reliability, close_thread_connections):
    primary = RedisServer(tmp_path / "primary", aof=fault == "kill9_aof").start()
    replica = None
    if fault == "replica_promoted":
        replica = RedisServer(tmp_path / "replica").start()
        replica.client().replicaof("127.0.0.1", primary.port)
    proxy = TcpProxy(primary.port)
    use_redis(proxy.url)
    server = live_server_factory(REDIS_URL=proxy.url, **NO_LIMITS)
    users = await sync_to_async(create_users)(USERS)
    clients = [start_client(server.ws_url, user, backoff_base_s=0.1, max_attempts=20) for user in users]
    await wait_until(lambda: all(c.state == "connected" for c, _, _ in clients), 30, "clients to connect")
    resynced_at: dict[int, float] = {}
    for (client, inbox, _), user in zip(clients, users, strict=True):
        client.on_resync = lambda channel, reason, inbox=inbox, pk=user.pk: (
            inbox.resyncs.append((channel, reason)), resynced_at.setdefault(pk, time.monotonic()))

    expected: dict[int, list[str]] = {user.pk: [] for user in users}

    def create(title: str) -> list[float]:
        durations = []
        try:
            for user in users:
                started = time.perf_counter()
                notification = notification_create(user=user, type="info", title=title, message=fault)
                durations.append(time.perf_counter() - started)
                expected[user.pk].append(str(notification.id))
        finally:
            connections.close_all()  # a pool thread's connection would outlive the test database
        return durations

    screate = sync_to_async(create, thread_sensitive=False)
    baseline = []
    for n in range(3):
        baseline += await screate(f"before {n}")
    await wait_until(lambda: all(len([m for m in inbox.messages if m["type"] == "notification"]) >= 3
                                 for _, inbox, _ in clients), 15, "the notifications before the fault")

    # ------------------------------------------------------------ the fault
    during: list[float] = []
    fault_started = time.monotonic()
    if fault == "pause":
        primary.client().execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        for n in range(DURING):
            during += await screate(f"during {n}")
        await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - fault_started)))
    elif fault in ("kill9_aof", "restart_empty"):
        primary.kill()
        if fault == "restart_empty":
            primary.wipe()
        for n in range(DURING):
            during += await screate(f"during {n}")
        primary.start()
    elif fault == "proxy_cut":
        proxy.swallow_replies = True  # publishes reach Redis, their replies do not come back
        during += await screate("during 0")
        proxy.refuse = True
        proxy.cut()
        for n in range(1, DURING):
            during += await screate(f"during {n}")
        await asyncio.sleep(1.0)
        proxy.swallow_replies = proxy.refuse = False
    elif fault == "replica_promoted":
        await asyncio.sleep(0.5)  # the replica has what was published so far
        replica.client().replicaof("no", "one")  # from now on it misses the primary's writes
        during += await screate("during 0")  # delivered live by the primary, missing on the replica
        primary.kill()
        proxy.target_port = replica.port
        proxy.cut()
        for n in range(1, DURING):
            during += await screate(f"during {n}")
    fault_s = time.monotonic() - fault_started

    await screate("after")  # and once it is over: live again

    def whole() -> bool:
        for (_, inbox, _), user in zip(clients, users, strict=True):
            live = {m["payload"]["id"] for m in inbox.messages if m["type"] == "notification"}
            if user.pk in resynced_at:
                continue  # checked below against the REST reload
            if not set(expected[user.pk]) <= live:
                return False
        return True

    await wait_until(whole, 60, "every notification to arrive (or every client to resync)")
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
    assert await sync_to_async(rt_relay.relay().drain)(10)

    lost = twice = out_of_order = 0
    for (_, inbox, _), user in zip(clients, users, strict=True):
        live = [m["payload"]["id"] for m in inbox.messages if m["type"] == "notification"]
        twice += len(live) - len(set(live))
        order = [i for i in expected[user.pk] if i in set(live)]
        out_of_order += int([i for i in live if i in set(expected[user.pk])] != order)
        reloaded = set(await sync_to_async(rest_notification_ids)(server, user)) if user.pk in resynced_at else set()
        lost += len(set(expected[user.pk]) - set(live) - reloaded)
    assert (lost, twice, out_of_order) == (0, 0, 0)

    slower_s = max(during) - max(baseline)
    # The bound is 50 ms over the same write without the fault; 50 ms more of slack for
    # a shared 2-core machine (the measured figure is what docs/reliability.md shows).
    assert slower_s <= 0.1, (baseline, during)
    resyncs = len(resynced_at)
    if fault in ("pause", "proxy_cut"):
        assert resyncs == 0  # Redis kept everything: replayed, no resync needed
    else:
        assert resyncs == USERS  # continuity lost: every client was told so
    reconnects = [d for c, _, _ in clients for d in c.reconnect_durations]
    reliability(
        scenario=f"outbox: {SCENARIOS[fault]}", clients=USERS,
        expected=f"{3 + DURING + 1} notifications", lost=lost, twice=twice,
        reconnect_s=(statistics.median(reconnects), max(reconnects)) if reconnects else None,
        result="pass",
        details=f"fault {fault_s:.1f} s; {DURING} notifications per user created during it, all committed; "
                f"create time without the fault p50 {statistics.median(baseline) * 1000:.1f} ms / max "
                f"{max(baseline) * 1000:.1f} ms, during it p50 {statistics.median(during) * 1000:.1f} ms / max "
                f"{max(during) * 1000:.1f} ms (max over max: {slower_s * 1000:+.1f} ms); "
                + (f"{resyncs}/{USERS} clients were told to resync (new epoch) and their REST reload held every "
                   "notification" if resyncs else "every client got every notification live or replayed, "
                   "without a resync")
                + f"; {out_of_order} out of order, {twice} twice.")
    await stop_clients(clients)
    proxy.close()
    primary.kill()
    if replica is not None:
        replica.kill()
