"""The realtime HTTP API: tickets, service publishing, long-poll events."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import sync_to_async

from realtime.publish import publish_rollback_unsafe

pytestmark = pytest.mark.django_db(transaction=True)


def test_ticket_requires_authentication(api_client):
    assert api_client.post("/api/realtime/ticket/").status_code == 401


async def test_ticket_connects_once(connect, auth_client, user):
    response = await sync_to_async(auth_client.post)("/api/realtime/ticket/")
    ticket = response.json()["ticket"]
    assert response.status_code == 201 and response.json()["expires_in"] == 30

    connected, sock, _ = await connect(path=f"/ws/?ticket={ticket}", subprotocols=["renum.v1"])
    assert connected and sock.welcome["payload"]["user_id"] == str(user.pk)

    replayed, again, _ = await connect(path=f"/ws/?ticket={ticket}", subprotocols=["renum.v1"], expect_welcome=False)
    assert replayed
    closed = await again.communicator.receive_output(2)
    assert closed["code"] == 4001 and "already used" in closed["reason"]


def test_publish_endpoint_needs_a_service_key(api_client, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["svc-key-1"]}
    body = {"channel": "broadcast", "type": "system_event", "payload": {"a": 1}}

    missing = api_client.post("/api/realtime/publish/", body, format="json")
    wrong = api_client.post("/api/realtime/publish/", body, format="json", HTTP_AUTHORIZATION="ApiKey nope")
    ok = api_client.post("/api/realtime/publish/", body, format="json", HTTP_AUTHORIZATION="ApiKey svc-key-1")

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert ok.status_code == 201
    assert ok.json()["offset"] == 1 and ok.json()["channel"] == "broadcast"


def test_publish_endpoint_rejects_bad_input(api_client, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["k"]}
    headers = {"HTTP_AUTHORIZATION": "ApiKey k"}

    bad_channel = api_client.post("/api/realtime/publish/", {"channel": "a b", "type": "t", "payload": {}},
                                  format="json", **headers)
    bad_payload = api_client.post("/api/realtime/publish/", {"channel": "team:1", "type": "execution_update",
                                                             "payload": {"progress": 500}}, format="json", **headers)
    missing = api_client.post("/api/realtime/publish/", {"channel": "broadcast"}, format="json", **headers)

    assert bad_channel.status_code == 400 and "channel" in bad_channel.json()
    assert bad_payload.status_code == 400 and "payload" in bad_payload.json()
    assert missing.status_code == 400 and set(missing.json()) == {"type", "payload"}


def test_events_returns_missed_messages_in_the_envelope(auth_client, user):
    first = publish_rollback_unsafe(f"user:{user.pk}", "system_event", {"n": 1})
    publish_rollback_unsafe(f"user:{user.pk}", "system_event", {"n": 2})

    body = auth_client.get(f"/api/realtime/events/?channel=user:{user.pk}&since={first.epoch}:0&timeout=0").json()

    assert body["recovered"] is True and body["offset"] == 2 and body["epoch"] == first.epoch
    assert [(m["offset"], m["payload"]["n"]) for m in body["messages"]] == [(1, 1), (2, 2)]


def test_events_long_poll_wakes_up_on_a_new_message(auth_client, user):
    position = publish_rollback_unsafe(f"user:{user.pk}", "system_event", {"n": 1})
    timer = threading.Timer(0.5, publish_rollback_unsafe, args=(f"user:{user.pk}", "system_event", {"n": 2}))
    timer.start()

    started = time.monotonic()
    response = auth_client.get(
        f"/api/realtime/events/?channel=user:{user.pk}&since={position.epoch}:{position.offset}&timeout=10")
    waited = time.monotonic() - started

    assert 0.4 < waited < 5
    assert [m["payload"] for m in response.json()["messages"]] == [{"n": 2}]
    assert response["X-Poll-Interval"] == "0"


def test_events_of_another_epoch_are_not_recovered(auth_client, user):
    publish_rollback_unsafe(f"user:{user.pk}", "system_event", {"n": 1})

    body = auth_client.get(f"/api/realtime/events/?channel=user:{user.pk}&since=gone:1&timeout=0").json()

    assert body["recovered"] is False and body["messages"] == []


def test_events_are_isolated_between_users(auth_client, make_user):
    other = make_user()
    publish_rollback_unsafe(f"user:{other.pk}", "system_event", {"secret": 1})

    response = auth_client.get(f"/api/realtime/events/?channel=user:{other.pk}&timeout=0")

    assert response.status_code == 403
    assert "secret" not in response.content.decode()


def test_events_reject_bad_parameters(auth_client):
    assert auth_client.get("/api/realtime/events/?channel=bad%20name").status_code == 400
    assert auth_client.get("/api/realtime/events/?channel=broadcast&since=nocolon").status_code == 400
    assert auth_client.get("/api/realtime/events/?channel=nosuch:1").status_code == 404
