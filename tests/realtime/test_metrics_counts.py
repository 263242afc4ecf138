"""The documented metrics count what docs/operations.md says they count."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from prometheus_client import REGISTRY

from realtime.publish import Message, disconnect_user_on_commit, publish_many_on_commit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_published_total_counts_messages_not_pipelines():
    before = _sample("renum_realtime_published_total", result="ok")

    with transaction.atomic():
        publish_many_on_commit([Message(f"user:{i % 3}", "system_event", {"n": i}) for i in range(1201)],
                               batch_size=500)

    assert _sample("renum_realtime_published_total", result="ok") - before == 1201


async def test_disconnects_total_counts_server_initiated_closes_by_code(connect, user):
    before = {code: _sample("renum_realtime_disconnects_total", code=code) for code in ("4008", "4003", "1000")}
    _, garbage, _ = await connect(user)
    _, kicked, _ = await connect(user)
    _, leaving, _ = await connect(user)

    for _ in range(21):
        await garbage.send("not json")
    while (await garbage.communicator.receive_output(3))["type"] != "websocket.close":
        pass
    await leaving.close()  # the client's close is not the server's
    await sync_to_async(disconnect_user_on_commit)(user.pk, code=4003, reason="kick")
    while (await kicked.communicator.receive_output(3))["type"] != "websocket.close":
        pass

    after = {code: _sample("renum_realtime_disconnects_total", code=code) for code in ("4008", "4003", "1000")}
    assert {code: after[code] - before[code] for code in after} == {"4008": 1, "4003": 1, "1000": 0}
