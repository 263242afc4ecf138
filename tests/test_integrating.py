"""What docs/integrating.md promises, proven from outside the codebase's Python.

A real server process; the "service" and the "runner" below speak only HTTP with a service
key (``requests``), and the users' tabs are plain WebSocket clients (``websockets``). The ORM
is used only to set up users and a team, and to count rows afterwards.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import requests
import websockets
from asgiref.sync import sync_to_async

from executions.services import team_create, team_membership_add
from notifications.models import Notification
from notifications.services import notification_create
from tests.conftest import access_token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

KEY = "integration-key"


@pytest.fixture
def server(live_server_factory):
    """One server process whose only service key may create notifications and drive executions."""
    return live_server_factory(REALTIME_API_KEYS=f"{KEY}:notifications+executions")


def _http(server, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, server.http_url + path, headers={"Authorization": f"ApiKey {KEY}",
                                                                     **kwargs.pop("headers", {})}, timeout=30, **kwargs)


async def _tab(server, user) -> websockets.ClientConnection:
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", "bearer." + access_token_for(user)],
                                  open_timeout=10)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws


async def _frames(ws, seconds: float) -> list[dict]:
    """Every frame that arrives within ``seconds``."""
    frames = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return frames


async def _until(ws, predicate, timeout: float = 10) -> list[dict]:
    """Frames up to and including the first that matches."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(orjson.loads(await ws.recv()))
            if predicate(frames[-1]):
                return frames


async def test_a_service_notifies_a_team_once_even_when_it_retries(server, make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    team = await sync_to_async(team_create)(name="Ops", slug="ops", owner=alice)
    await sync_to_async(team_membership_add)(team=team, user=bob)
    tabs = [await _tab(server, alice), await _tab(server, bob)]
    body = {"team": team.pk, "type": "warning", "title": "Deploy at 22:00", "message": "Expect a short blip."}
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    first = await asyncio.to_thread(_http, server, "POST", "/api/notifications/", json=body, headers=headers)
    retry = await asyncio.to_thread(_http, server, "POST", "/api/notifications/", json=body, headers=headers)
    received = [await _frames(ws, 2.0) for ws in tabs]

    assert (first.status_code, first.json()) == (201, {"created": 2})
    assert (retry.status_code, retry.json(), retry.headers["Idempotent-Replayed"]) == (201, {"created": 2}, "true")
    for user, frames in zip((alice, bob), received, strict=True):
        rows = await sync_to_async(list)(Notification.objects.filter(user=user).values_list("id", flat=True))
        notifications = [f for f in frames if f["type"] == "notification"]
        assert len(rows) == 1
        assert [n["payload"]["id"] for n in notifications] == [str(rows[0])]
        assert notifications[0]["payload"]["title"] == "Deploy at 22:00"
        assert [f["payload"] for f in frames if f["type"] == "unread_count"] == [{"count": 1}]
    for ws in tabs:
        await ws.close()


async def test_an_execution_driven_only_over_rest_reaches_100_on_a_members_tab(server, make_user):
    member = await sync_to_async(make_user)()
    team = await sync_to_async(team_create)(name="Agents", slug="agents", owner=member)
    tab = await _tab(server, member)

    created = await asyncio.to_thread(_http, server, "POST", "/api/executions/",
                                      json={"team": team.pk, "external_id": "engine-run-1"})
    execution_id = created.json()["id"]
    await tab.send(orjson.dumps({"type": "subscribe", "id": 1, "channel": f"execution:{execution_id}"}))
    await _until(tab, lambda f: f.get("type") == "subscribed")
    reports = [{"status": "running"}] + [{"progress": p, "current_step": f"step {p}"} for p in (25, 50, 75)] + [
        {"status": "completed", "result": {"summary": "done"}}]
    answers = []
    for report in reports:
        answers.append(await asyncio.to_thread(_http, server, "POST", f"/api/executions/{execution_id}/progress/",
                                               json=report))
    updates = await _until(tab, lambda f: f.get("type") == "execution_update" and f["payload"]["status"] == "completed"
                           and f.get("channel") == f"execution:{execution_id}")

    assert created.status_code == 201
    assert [a.status_code for a in answers] == [200] * 5
    final = updates[-1]["payload"]
    assert (final["progress"], final["status"], final["result"]) == (100, "completed", {"summary": "done"})
    seen = [f["payload"]["progress"] for f in updates if f.get("type") == "execution_update"
            and f.get("channel") == f"execution:{execution_id}"]
    assert seen == sorted(seen) and seen[-1] == 100
    await tab.close()


async def test_archive_unread_and_delete_in_one_tab_update_the_other(server, make_user):
    user = await sync_to_async(make_user)()
    notes = [await sync_to_async(notification_create)(user=user, type="info", title=f"n{i}", message="")
             for i in range(3)]
    acting, watching = await _tab(server, user), await _tab(server, user)
    commands = [
        ("notification.archive", [str(notes[0].id)], "notification_archived"),
        ("notification.mark_read", None, "notification_read"),
        ("notification.mark_unread", [str(notes[1].id)], "notification_unread"),
        ("notification.delete", [str(notes[2].id)], "notification_deleted"),
    ]

    seen = []
    for number, (name, ids, event) in enumerate(commands, start=1):
        args = {"ids": ids} if ids is not None else {"id": str(notes[1].id)}
        await acting.send(orjson.dumps({"type": "command", "id": number,
                                        "payload": {"name": name, "args": args}}))
        reply = (await _until(acting, lambda f, n=number: f.get("reply_to") == n))[-1]
        assert reply["type"] == "command_result", reply
        frames = await _until(watching, lambda f, e=event: f.get("type") == e)
        seen.append((frames[-1]["type"], frames[-1]["payload"]["ids"]))

    assert seen == [
        ("notification_archived", [str(notes[0].id)]),
        ("notification_read", [str(notes[1].id)]),
        ("notification_unread", [str(notes[1].id)]),
        ("notification_deleted", [str(notes[2].id)]),
    ]
    count = (await _until(watching, lambda f: f.get("type") == "unread_count"))[-1]
    assert count["payload"] == {"count": 1}  # only n1 is left in the inbox, unread again
    await acting.close()
    await watching.close()
