"""Redis Cluster: a 3-master cluster of the test's own (``tests.redis_servers.ClusterSet``).

Keys of one channel share a slot, fan-out is sharded pub/sub (each message reaches only the
node that owns its channel), the registry and per-user limits work per slot, the control plane
runs on ``ClusterChannelLayer``, and a live server on the cluster runs the core scenarios.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from redis.cluster import key_slot

from realtime import publish as rt_publish
from realtime import relay as rt_relay
from realtime.storage import redis as rt_redis
from realtime.storage import registry, streams
from realtime.storage.layers import ClusterChannelLayer
from tests.conftest import access_token_for
from tests.redis_servers import ClusterSet, reset_realtime_clients

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module (creating one takes seconds); each test uses its own prefix."""
    group = ClusterSet(tmp_path_factory.mktemp("cluster")).start()
    yield group
    group.stop()


@pytest.fixture
def on_cluster(cluster, settings):
    """This process's realtime clients, cache and channel layer on the cluster."""
    prefix = f"t{time.monotonic_ns()}:rt"  # as the servers started by the test derive theirs
    settings.REDIS_URL = cluster.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": [cluster.url]}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.storage.layers.ClusterChannelLayer", "CONFIG": {
        **settings.CHANNEL_LAYERS["default"]["CONFIG"], "cluster_url": cluster.url, "prefix": prefix + ":layer"}}}
    settings.CHANNEL_LAYERS["default"]["CONFIG"].pop("hosts", None)
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "KEY_PREFIX": prefix}
    reset_realtime_clients()
    yield cluster
    reset_realtime_clients()


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_every_key_of_a_channel_and_a_users_limit_share_the_channels_slot(on_cluster):
    for channel in ("user:42", "team:7", "broadcast", "execution:9f1c"):
        keys = [streams.meta_key(channel), streams.history_key(channel), streams.idempotency_key(channel),
                streams.pubsub_name(channel)]
        assert {slot(k) for k in keys} == {slot(f"{{{channel}}}")}
    assert slot(registry.user_key("42")) == slot(streams.meta_key("user:42"))


def _calls(node, command: str) -> int:
    return int(node.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_message_goes_only_to_the_node_that_owns_its_channel(on_cluster):
    nodes = {port: on_cluster.node(port) for port in on_cluster.ports}
    owner = {port: set() for port in on_cluster.ports}
    client = rt_redis.sync_client()
    channels = [f"user:{n}" for n in range(30)]
    for channel in channels:
        owner[client.get_node_from_key(streams.meta_key(channel)).port].add(channel)
    before = {port: (_calls(node, "spublish"), _calls(node, "publish")) for port, node in nodes.items()}

    published = [rt_publish.publish_rollback_unsafe(channel, "system_event", {"c": channel}) for channel in channels]

    assert all(p is not None and p.offset == 1 for p in published)
    assert all(len(owned) > 0 for owned in owner.values())  # 30 channels spread over all 3 nodes
    for port, node in nodes.items():
        spublish, publish = _calls(node, "spublish") - before[port][0], _calls(node, "publish") - before[port][1]
        assert (spublish, publish) == (len(owner[port]), 0)


def test_the_outbox_relay_publishes_exactly_once_per_channel_slot(on_cluster):
    from realtime.publish import Message, publish_many_on_commit

    publish_many_on_commit([Message(f"user:{n}", "system_event", {"n": n}) for n in range(20)])
    assert rt_relay.relay().drain(10)

    for n in range(20):
        entries = rt_redis.sync_client().xrange(streams.history_key(f"user:{n}"))
        assert [orjson.loads(streams.Record.parse(f[b"r"]).body)["payload"] for _, f in entries] == [{"n": n}]


def test_the_registry_counts_connections_per_user_across_slots(on_cluster):
    entries = [({"connection_id": f"c{n}", "user_id": str(n % 4), "connected_at": 1.0}, (f"user:{n % 4}",))
               for n in range(8)]

    added = asyncio.run(registry.add_many(entries))

    assert [count for count, _ in added] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [positions[0].offset for _, positions in added] == [0] * 8
    assert registry.user_connection_count("3") == 2
    assert sorted(e["connection_id"] for e in registry.live_connections()) == [f"c{n}" for n in range(8)]


def test_the_cluster_channel_layer_keeps_group_semantics(on_cluster):
    layer = ClusterChannelLayer(on_cluster.url, prefix=f"g{time.monotonic_ns()}", capacity=2)

    async def scenario() -> tuple:
        first, second = await layer.new_channel("rtcontrol"), await layer.new_channel("rtcontrol")
        await layer.group_add_many(["rt.user.1", "rt.user.2"], first)
        await layer.group_add("rt.user.2", second)
        await layer.group_send("rt.user.2", {"type": "rt.x", "n": 1})
        got = (await layer.receive(first), await layer.receive(second))
        await layer.group_discard("rt.user.2", first)
        await layer.group_send("rt.user.2", {"type": "rt.x", "n": 2})
        await layer.group_send("rt.user.1", {"type": "rt.x", "n": 3})
        later = (await layer.receive(second), await layer.receive(first))
        await layer.send(second, {"n": 4})
        await layer.send(second, {"n": 5})
        with pytest.raises(Exception) as full:
            await layer.send(second, {"n": 6})
        return got, later, type(full.value).__name__

    got, later, full = asyncio.run(scenario())
    assert got == ({"type": "rt.x", "n": 1}, {"type": "rt.x", "n": 1})
    assert later == ({"type": "rt.x", "n": 2}, {"type": "rt.x", "n": 3})
    assert full == "ChannelFull"


# ---------------------------------------------------------------------- live: the core scenarios


async def _open(server, user, path: str = "") -> tuple:
    ws = await websockets.connect(server.ws_url + path, subprotocols=["renum.v1", "bearer." + access_token_for(user)],
                                  open_timeout=10)
    return ws, orjson.loads(await asyncio.wait_for(ws.recv(), 10))


async def _next(ws, wanted, timeout: float = 10) -> dict:
    """The next frame for which ``wanted(frame)`` holds (others, e.g. pongs, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if wanted(frame):
            return frame


def _get_json(url: str, token: str) -> dict:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return orjson.loads(response.read())


def _post_json(url: str, token: str) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return orjson.loads(response.read())


@pytest.mark.live
async def test_a_server_on_the_cluster_runs_the_core_scenarios(on_cluster, live_server_factory, make_user):
    from executions.services import team_create, team_membership_add
    from notifications.services import notification_create
    from realtime.conf import setting

    owner, member, other = [await sync_to_async(make_user)() for _ in range(3)]
    # The connect-rate limit stays on: its counters live on the cluster too.
    env = {"REDIS_URL": on_cluster.url, "REALTIME_KEY_PREFIX": setting("KEY_PREFIX")}
    ssubscribes = sum(_calls(on_cluster.node(port), "ssubscribe") for port in on_cluster.ports)
    first, second = live_server_factory(**env), live_server_factory(**env)

    # connect: the welcome names the positions of the user's channel and broadcast
    ws_owner, welcome = await _open(first, owner)
    ws_member, _ = await _open(second, member)
    # A one-time ticket (POST /api/realtime/ticket/), stored on the cluster, opens a socket once.
    ticket = await asyncio.to_thread(_post_json, f"{second.http_url}/api/realtime/ticket/", access_token_for(other))
    ws_other = await websockets.connect(f"{second.ws_url}?ticket={ticket['ticket']}", open_timeout=10)
    assert orjson.loads(await asyncio.wait_for(ws_other.recv(), 10))["payload"]["user_id"] == str(other.pk)
    assert welcome["type"] == "welcome"
    assert sorted(welcome["payload"]["channels"]) == ["broadcast", f"user:{owner.pk}"]

    # personal: a notification reaches its user only
    await sync_to_async(notification_create)(user=owner, type="info", title="hello", message="on the cluster")
    frame = await _next(ws_owner, lambda f: f["type"] == "notification")
    assert (frame["channel"], frame["payload"]["title"]) == (f"user:{owner.pk}", "hello")

    # broadcast: every socket of both processes
    await sync_to_async(rt_publish.publish_rollback_unsafe)("broadcast", "system_event", {"all": 1})
    for ws in (ws_owner, ws_member, ws_other):
        frame = await _next(ws, lambda f: f["channel"] == "broadcast")
        assert frame["payload"] == {"all": 1}

    # team channel: joining the team subscribes the member's live socket server-side (a control
    # message through ClusterChannelLayer), then the team's publications reach them
    team = await sync_to_async(team_create)(name="Cluster", slug=f"cluster-{owner.pk}", owner=owner)
    await sync_to_async(team_membership_add)(team=team, user=member)
    channel = f"team:{team.pk}"
    subscribed = await _next(ws_member, lambda f: f["type"] == "subscribed" and f["payload"]["channel"] == channel)
    await sync_to_async(rt_publish.publish_rollback_unsafe)(channel, "system_event", {"team": 1})
    # Every message of the channel after the subscription, in order: the team's own events
    # (the member's `team_member_joined` may land after the subscription), then ours.
    seen = [await _next(ws_member, lambda f: f["channel"] == channel)]
    while seen[-1]["type"] != "system_event":
        seen.append(await _next(ws_member, lambda f: f["channel"] == channel))
    frame = seen[-1]
    assert frame["payload"] == {"team": 1}
    assert [f["offset"] for f in seen] == list(range(subscribed["payload"]["offset"] + 1, frame["offset"] + 1))
    assert {f["type"] for f in seen[:-1]} <= {"team_member_joined"}

    # recovery: away while three messages are published, back with `since`: all three, in order
    position = {"epoch": frame["epoch"], "offset": frame["offset"]}
    await ws_member.close()
    for n in range(3):
        await sync_to_async(rt_publish.publish_rollback_unsafe)(channel, "system_event", {"missed": n})
    ws_member, _ = await _open(first, member)
    await ws_member.send(orjson.dumps({"type": "subscribe", "id": 1, "channel": channel, "since": position}).decode())
    reply = await _next(ws_member, lambda f: f["type"] == "subscribed")
    assert (reply["payload"]["recovered"], reply["payload"]["replayed"]) == (True, 3)
    replayed = [await _next(ws_member, lambda f: f["channel"] == channel) for _ in range(3)]
    assert [f["payload"] for f in replayed] == [{"missed": 0}, {"missed": 1}, {"missed": 2}]

    # long poll: the REST fallback waits on the cluster and answers with what was published meanwhile
    last = replayed[-1]
    url = f"{first.http_url}/api/realtime/events/?channel={channel}&since={last['epoch']}:{last['offset']}&timeout=10"
    polling = asyncio.ensure_future(asyncio.to_thread(_get_json, url, access_token_for(member)))
    await asyncio.sleep(1.0)
    await sync_to_async(rt_publish.publish_rollback_unsafe)(channel, "system_event", {"polled": 1})
    body = await polling
    assert (body["recovered"], [m["payload"] for m in body["messages"]]) == (True, [{"polled": 1}])

    for ws in (ws_owner, ws_member, ws_other):
        await ws.close()
    # The servers' hubs subscribed with SSUBSCRIBE on the nodes, and nothing used plain PUBLISH.
    assert sum(_calls(on_cluster.node(port), "ssubscribe") for port in on_cluster.ports) > ssubscribes
    assert sum(_calls(on_cluster.node(port), "publish") for port in on_cluster.ports) == 0


def test_the_admin_numbers_add_up_the_masters(on_cluster):
    from realtime.ops import stats

    before = stats.published_total()
    for n in range(6):
        rt_publish.publish_rollback_unsafe(f"user:{n}", "system_event", {"n": n})

    assert stats.published_total() - before == 6
    summary = stats.redis_summary()
    assert summary["version"].startswith("7.") and summary["used_memory"].count(" + ") == 2


def test_realtime_prune_finds_the_user_sets_of_every_node(on_cluster):
    from io import StringIO

    from django.core.management import call_command

    client = rt_redis.sync_client()
    now = time.time()
    for n in range(12):
        client.zadd(registry.user_key(str(n)), {"gone": now - 5, "live": now + 60})
    out = StringIO()

    call_command("realtime_prune", stdout=out)

    assert "removed 12 expired connection id(s) from 12 user set(s)" in out.getvalue()
    assert {client.get_node_from_key(registry.user_key(str(n))).port for n in range(12)} == set(on_cluster.ports)


@pytest.mark.live
async def test_a_connect_storm_on_the_cluster_leaves_every_socket_subscribed(on_cluster, live_server_factory):
    from realtime.conf import setting
    from tests.realtime.test_failures import create_users

    users = await sync_to_async(create_users)(300)
    server = live_server_factory(REDIS_URL=on_cluster.url, REALTIME_KEY_PREFIX=setting("KEY_PREFIX"),
                                 REALTIME_CONNECTS_PER_IP_PER_MINUTE="0")
    sockets = await asyncio.gather(*(_open(server, user) for user in users))

    for user in users:
        await sync_to_async(rt_publish.publish_rollback_unsafe)(f"user:{user.pk}", "system_event", {"u": user.pk})
    frames = await asyncio.gather(*(_next(ws, lambda f: f["type"] == "system_event") for ws, _ in sockets),
                                  return_exceptions=True)

    missing = [user.pk for user, frame in zip(users, frames, strict=True) if isinstance(frame, BaseException)]
    assert missing == []
    assert [frame["payload"]["u"] for frame in frames] == [user.pk for user in users]
    for ws, _ in sockets:
        await ws.close()
