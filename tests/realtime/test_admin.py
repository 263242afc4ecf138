"""The admin's realtime monitor: staff with its permissions only, lists live sockets of real processes, acts on them."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import websockets
from asgiref.sync import async_to_sync, sync_to_async
from django.test import Client
from django.urls import reverse
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.storage import registry
from tests.conftest import access_token_for

MONITOR = "/admin/realtime/monitor/"
DATA = "/admin/realtime/monitor/data/"


def grant(user, *codenames: str):
    """Give a user realtime permissions, as the admin's user page does."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="realtime", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


@pytest.fixture
def staff(make_user):
    """An active staff user holding the realtime permissions (view, disconnect, broadcast)."""
    return grant(make_user(is_staff=True), "view_monitor", "disconnect", "broadcast")


@pytest.fixture
def staff_client(staff):
    """A test client logged in as staff."""
    client = Client()
    client.force_login(staff)
    return client


async def open_ws(server, user, **kwargs):
    """A real client on a live server; returns (websocket, welcome)."""
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", "bearer." + access_token_for(user)],
                                  open_timeout=10, **kwargs)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws, welcome


async def recv_until(ws, predicate, timeout: float = 5) -> dict:
    """The next frame that matches, skipping others.

    Pub/sub channels are Redis-server-wide, not per database: broadcasts of other test runs on
    the same server can reach these sockets too.
    """
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if predicate(frame):
            return frame


async def assert_open(ws) -> None:
    """The socket still answers a ping."""
    await ws.send(orjson.dumps({"type": "ping", "id": 1}).decode())
    assert (await recv_until(ws, lambda f: f["type"] == "pong"))["reply_to"] == 1


async def close_code(ws, timeout: float = 5) -> tuple[int, str]:
    """Wait until the server closes the socket; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    return closed.value.rcvd.code, closed.value.rcvd.reason


# ---------------------------------------------------------------------- access


def test_urls_are_the_admins():
    assert reverse("admin:realtime_monitor") == MONITOR
    assert reverse("admin:realtime_monitor_data") == DATA


@pytest.mark.parametrize("url", [MONITOR, DATA])
def test_anonymous_and_non_staff_are_sent_to_the_login(url, make_user):
    anonymous = Client()
    member = Client()
    member.force_login(make_user())

    for client in (anonymous, member):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/admin/login/?next={url}"


def test_non_staff_cannot_act(make_user):
    member = Client()
    member.force_login(make_user())

    for action in ("disconnect/", "disconnect-user/", "broadcast/"):
        response = member.post(MONITOR + action, {"user_id": "1", "title": "x"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_the_monitor(staff_client, make_user):
    index = staff_client.get("/admin/")
    member = Client()
    member.force_login(make_user())

    assert index.status_code == 200
    assert f'<a href="{MONITOR}"' in index.content.decode()
    assert "Live monitor" in index.content.decode()
    assert member.get("/admin/").status_code == 302


def test_staff_without_the_realtime_permissions_gets_403_everywhere(make_user):
    client = Client()
    client.force_login(make_user(is_staff=True))

    responses = [client.get(MONITOR), client.get(DATA)] + [
        client.post(MONITOR + action, {"user_id": "1", "title": "phish", "level": "info",
                                       "process": "p", "connection_id": "c", "code": "4003"})
        for action in ("disconnect/", "disconnect-user/", "broadcast/")]

    assert [r.status_code for r in responses] == [403] * 5
    assert "Live monitor" not in client.get("/admin/").content.decode()


def test_each_action_needs_its_own_permission(make_user, monkeypatch):
    from realtime.ops import probes

    calls: list[str] = []
    monkeypatch.setattr(probes, "user_disconnect", lambda **kw: calls.append("disconnect"))
    monkeypatch.setattr(probes, "system_event_broadcast", lambda **kw: calls.append("broadcast"))
    viewer = grant(make_user(is_staff=True), "view_monitor")
    disconnecter = grant(make_user(is_staff=True), "view_monitor", "disconnect")
    broadcaster = grant(make_user(is_staff=True), "view_monitor", "broadcast")
    statuses = {}
    for name, user in (("viewer", viewer), ("disconnecter", disconnecter), ("broadcaster", broadcaster)):
        client = Client()
        client.force_login(user)
        page = client.get(MONITOR).content.decode()
        statuses[name] = (
            client.post(MONITOR + "disconnect-user/", {"user_id": "1", "code": "4003"}).status_code,
            client.post(MONITOR + "broadcast/", {"level": "info", "title": "hello"}).status_code,
            "rt-broadcast" in page,
        )

    assert statuses == {"viewer": (403, 403, False), "disconnecter": (302, 403, False),
                        "broadcaster": (403, 302, True)}
    assert calls == ["disconnect", "broadcast"]


# ---------------------------------------------------------------------- what it shows


def test_the_panel_derives_subscribers_per_channel_from_registry_entries(staff_client):
    def entry(cid: str, user_id: str, channels: list[str]) -> dict:
        return {"connection_id": cid, "user_id": user_id, "username": f"u{user_id}", "ip": "10.0.0.9",
                "user_agent": "<script>alert(1)</script>", "client_id": "", "auth": "jwt",
                "connected_at": time.time() - 60, "last_activity": time.time() - 5, "channels": channels,
                "channel_name": f"specific.{cid}"}

    async_to_sync(registry.refresh)([
        entry("c1", "1", ["broadcast", "team:3", "user:1"]),
        entry("c2", "2", ["broadcast", "user:2"]),
        entry("c3", "2", ["broadcast", "team:3", "user:2"]),
    ])

    data = staff_client.get(DATA).json()
    page = staff_client.get(MONITOR).content.decode()

    assert data["channels"] == [["broadcast", 3], ["team:3", 2], ["user:2", 2], ["user:1", 1]]
    assert data["processes"] == [[registry.PROCESS_ID, 3]]
    assert (data["connections_total"], data["users_total"]) == (3, 2)
    assert [c["connection_id"] for c in data["connections"]] == ["c1", "c2", "c3"]
    assert all("channel_name" not in c for c in data["connections"])
    assert data["circuit"]["state"] == "closed"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "<td>team:3</td><td>2</td>" in page


def test_the_filter_narrows_the_connections(staff_client):
    async_to_sync(registry.refresh)([
        {"connection_id": cid, "user_id": uid, "username": name, "ip": ip, "user_agent": "ua", "client_id": "",
         "auth": "jwt", "connected_at": time.time(), "last_activity": time.time(), "channels": [],
         "channel_name": "x"}
        for cid, uid, name, ip in [("c1", "1", "alice", "10.0.0.1"), ("c2", "2", "bob", "10.0.0.2")]
    ])

    data = staff_client.get(DATA, {"q": "10.0.0.2"}).json()

    assert [c["username"] for c in data["connections"]] == ["bob"]
    assert (data["connections_matching"], data["connections_total"]) == (1, 2)


def test_the_panel_shows_security_events(staff_client):
    from realtime.core import security

    async_to_sync(security.record)("auth_failure", ip="203.0.113.7", detail="invalid token")

    data = staff_client.get(DATA).json()
    page = staff_client.get(MONITOR).content.decode()

    assert [(e["kind"], e["ip"], e["detail"]) for e in data["security_events"]] == [
        ("auth_failure", "203.0.113.7", "invalid token")]
    assert data["top_ips"] == [["203.0.113.7", 1]]
    assert "<td>auth_failure</td><td>203.0.113.7</td>" in page


def test_the_panel_still_renders_when_redis_is_down(staff_client, monkeypatch):
    def unavailable():
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(registry, "live_connections", unavailable)

    page = staff_client.get(MONITOR)

    assert page.status_code == 200
    assert "Redis is unavailable: Connection refused" in page.content.decode()


# ---------------------------------------------------------------------- with real server processes

@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_the_panel_lists_a_live_connection_of_a_server_process(live_server_proc, user, staff_client):
    ws, welcome = await open_ws(live_server_proc, user, user_agent_header="panel-test/1.0")
    connection_id = welcome["payload"]["connection_id"]

    page = (await sync_to_async(staff_client.get)(MONITOR)).content.decode()
    data = (await sync_to_async(staff_client.get)(DATA)).json()

    [row] = data["connections"]
    assert row["connection_id"] == connection_id
    assert (row["user_id"], row["username"], row["ip"], row["user_agent"]) == (
        str(user.pk), user.username, "127.0.0.1", "panel-test/1.0")
    assert f"-{live_server_proc.process.pid}-" in row["process"]
    assert f'data-connection-id="{connection_id}"' in page
    assert "panel-test/1.0" in page and user.username in page
    await ws.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_disconnect_closes_that_socket_only(live_server_proc, user, staff_client):
    ws, welcome = await open_ws(live_server_proc, user)
    other, _ = await open_ws(live_server_proc, user)
    [entry] = [e for e in registry.live_connections() if e["connection_id"] == welcome["payload"]["connection_id"]]

    response = await sync_to_async(staff_client.post)(MONITOR + "disconnect/", {
        "process": entry["process"], "connection_id": entry["connection_id"], "code": "4003"})

    assert response.status_code == 302 and response["Location"] == MONITOR
    assert await close_code(ws) == (4003, "disconnected by an administrator")
    await assert_open(other)
    await other.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_disconnect_of_a_gone_connection_says_so(live_server_proc, user, staff_client):
    response = await sync_to_async(staff_client.post)(MONITOR + "disconnect/", {
        "process": registry.PROCESS_ID, "connection_id": "nope", "code": "4003"}, follow=True)

    assert "Connection nope is no longer live." in response.content.decode()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_disconnect_user_closes_every_socket_of_that_user_on_every_process(
        live_server_factory, make_user, staff_client):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    alice_1, _ = await open_ws(first, alice)
    alice_2, _ = await open_ws(second, alice)
    bob_1, _ = await open_ws(first, bob)

    response = await sync_to_async(staff_client.post)(MONITOR + "disconnect-user/",
                                                       {"user_id": str(alice.pk), "code": "4001"})

    assert response.status_code == 302
    assert await close_code(alice_1) == (4001, "disconnected by an administrator")
    assert await close_code(alice_2) == (4001, "disconnected by an administrator")
    await assert_open(bob_1)
    await bob_1.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_invalid_close_codes_are_refused(live_server_proc, user, staff_client):
    ws, welcome = await open_ws(live_server_proc, user)
    [entry] = registry.live_connections()

    response = await sync_to_async(staff_client.post)(MONITOR + "disconnect/", {
        "process": entry["process"], "connection_id": entry["connection_id"], "code": "1000"}, follow=True)

    assert "Invalid request" in response.content.decode()
    await assert_open(ws)
    await ws.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_system_event_reaches_every_socket(live_server_proc, make_user, staff_client):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    ws_a, _ = await open_ws(live_server_proc, alice)
    ws_b, _ = await open_ws(live_server_proc, bob)

    response = await sync_to_async(staff_client.post)(MONITOR + "broadcast/", {
        "level": "warning", "title": "Maintenance at 22:00", "message": "About 5 minutes."}, follow=True)

    for ws in (ws_a, ws_b):
        frame = await recv_until(ws, lambda f: f.get("sender") == "admin")
        assert (frame["type"], frame["channel"], frame["offset"]) == ("system_event", "broadcast", 1)
        assert frame["payload"] == {"level": "warning", "title": "Maintenance at 22:00", "message": "About 5 minutes."}
        await ws.close()
    assert "Sent a system_event to broadcast (offset 1)." in response.content.decode()
