"""The realtime HTTP API: tickets and service publishing (long polls: test_transports.py)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

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
