"""End to end: what staff send in the admin reaches the user's open socket, and socket commands work.

In-process sockets on the real ASGI app, and one real uvicorn process with a real client, both
on the real Redis and database.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.test import Client

from notifications.events import notification_payload
from notifications.models import Notification
from notifications.services import notification_create
from tests.conftest import access_token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

SEND_URL = "/admin/notifications/notification/send/"


def _admin_sends(admin_user, recipients, title: str) -> int:
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        SEND_URL, {"users": [r.pk for r in recipients], "type": "info", "title": title, "message": "hi"}
    )
    return response.status_code


async def test_admin_send_reaches_the_recipients_open_socket_and_only_theirs(connect, make_user):  # noqa: F811
    admin_user = await sync_to_async(make_user)(username="boss", is_staff=True, is_superuser=True)
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    _, alice_socket, _ = await connect(alice)
    _, bob_socket, _ = await connect(bob)

    status = await sync_to_async(_admin_sends)(admin_user, [alice], "Deploy at 22:00")

    assert status == 302
    stored = await Notification.objects.aget(user=alice)
    frame = await alice_socket.recv()
    assert (frame["type"], frame["channel"], frame["offset"]) == ("notification", f"user:{alice.pk}", 1)
    assert frame["payload"] == notification_payload(stored)
    count = await alice_socket.recv()
    assert (count["type"], count["payload"], count["offset"]) == ("unread_count", {"count": 1}, 2)
    assert await bob_socket.nothing()


async def test_mark_read_command_over_the_socket_answers_and_pushes_the_change(connect, user):  # noqa: F811
    notification = await sync_to_async(notification_create)(user=user, type="info", title="t", message="")
    _, socket, _ = await connect(user)

    args = {"id": str(notification.id)}
    await socket.send({"type": "command", "id": 7, "payload": {"name": "notification.mark_read", "args": args}})
    frames = [await socket.recv() for _ in range(3)]

    by_type = {f["type"]: f for f in frames}
    assert set(by_type) == {"command_result", "notification_read", "unread_count"}
    assert by_type["command_result"]["reply_to"] == 7
    assert by_type["command_result"]["payload"]["result"]["count"] == 0
    assert by_type["notification_read"]["payload"] == {"ids": [str(notification.id)], "all": False}
    assert by_type["unread_count"]["payload"] == {"count": 0}


async def test_mark_read_command_for_a_foreign_id_is_an_error_frame(connect, user):  # noqa: F811
    _, socket, _ = await connect(user)

    args = {"id": str(uuid.uuid4())}
    await socket.send({"type": "command", "id": 8, "payload": {"name": "notification.mark_read", "args": args}})
    frame = await socket.recv()

    assert frame["type"] == "error"
    assert frame["reply_to"] == 8
    assert frame["payload"]["code"] == "not_found"


@pytest.mark.live
async def test_admin_send_reaches_a_real_client_of_a_server_process(live_server_proc, make_user):  # noqa: F811
    admin_user = await sync_to_async(make_user)(username="boss", is_staff=True, is_superuser=True)
    alice = await sync_to_async(make_user)()
    ws = await websockets.connect(
        live_server_proc.ws_url, subprotocols=["renum.v1", f"bearer.{access_token_for(alice)}"], open_timeout=10
    )
    try:
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome"

        status = await sync_to_async(_admin_sends)(admin_user, [alice], "From the admin")
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    finally:
        await ws.close()

    assert status == 302
    assert frame["type"] == "notification"
    assert frame["payload"]["title"] == "From the admin"
    assert frame["payload"]["user_id"] == str(alice.pk)
