"""A service key publishes as a service: it cannot claim another sender (system, admin, a user)."""

from __future__ import annotations

import orjson
import pytest

from realtime.storage import redis as rt_redis
from realtime.storage import streams

pytestmark = pytest.mark.django_db(transaction=True)


def _last_sender(channel: str) -> str:
    entries = rt_redis.sync_client().xrevrange(streams.history_key(channel), count=1)
    assert entries, "nothing was published"
    return orjson.loads(entries[0][1][b"r"].split(b"\t", 4)[4])["sender"]


@pytest.mark.parametrize("sender", ["system", "admin", "operator", "user:1", "service:a b", "services", "",
                                    "service:a\nuser:1"])
def test_a_service_cannot_forge_the_sender(api_client, settings, sender):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["k"]}
    body = {"channel": "broadcast", "type": "system_event", "payload": {"title": "re-enter your password"},
            "sender": sender}

    response = api_client.post("/api/realtime/publish/", body, format="json", HTTP_AUTHORIZATION="ApiKey k")

    assert response.status_code == 400
    assert response.json() == {"sender": ["sender must be 'service' or 'service:<name>' (letters, digits, _ . -)"]}
    assert rt_redis.sync_client().xlen(streams.history_key("broadcast")) == 0


@pytest.mark.parametrize(("given", "sent"), [(None, "service"), ("service", "service"),
                                             ("service:billing", "service:billing")])
def test_a_service_publishes_as_itself(api_client, settings, given, sent):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["k"]}
    body = {"channel": "broadcast", "type": "system_event", "payload": {"n": 1}}
    if given is not None:
        body["sender"] = given

    response = api_client.post("/api/realtime/publish/", body, format="json", HTTP_AUTHORIZATION="ApiKey k")

    assert response.status_code == 201
    assert _last_sender("broadcast") == sent
