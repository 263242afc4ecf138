"""The node's periodic jobs (realtime.fanout.housekeeping) on sessions without a socket: a recording
transport stands in for the consumer; the node, Redis and the database are real."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async

from realtime.conf import setting
from realtime.core.auth import Identity
from realtime.core.session import Session
from realtime.fanout import housekeeping
from realtime.fanout.node import get_node
from realtime.storage import registry
from tests.realtime.test_session import RecordingTransport

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


async def _started(user, connection_id: str, *,
                   expires_at: datetime | None = None) -> tuple[Session, RecordingTransport]:
    transport = RecordingTransport()
    session = Session(transport, Identity(user, expires_at, "jwt"), connection_id=connection_id, ip="192.0.2.7",
                      session_key=None, send=transport.send, turn=asyncio.Lock(), connected_at=time.time())
    await session.start()
    return session, transport


async def test_the_sweep_closes_silent_and_expired_sessions_and_keeps_the_others(make_user):
    fresh, silent, expired = [await sync_to_async(make_user)() for _ in range(3)]
    kept, kept_transport = await _started(fresh, "fresh")
    quiet, quiet_transport = await _started(silent, "silent")
    late, late_transport = await _started(expired, "expired", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    quiet.last_seen -= setting("HEARTBEAT_S") * setting("IDLE_FACTOR") + 1  # silent for longer than allowed

    await housekeeping.sweep(await get_node())
    await asyncio.sleep(0)  # the closes are scheduled, as from the hub

    assert quiet_transport.closed == [(1001, "heartbeat timeout")]
    assert late_transport.closed == [(4011, "token expired")]
    assert kept_transport.closed == []
    for session in (kept, quiet, late):
        await session.end()


async def test_the_registry_refresh_rewrites_each_sessions_entry_once_due(user, settings):
    node = await get_node()
    session, _ = await _started(user, "c-1")
    await session.receive('{"type": "unsubscribe", "id": 1, "channel": "broadcast"}')

    await housekeeping.refresh_registry(node)  # not due: the node started moments ago
    [before] = await sync_to_async(registry.live_connections)()
    node.stamps["registry"] = 0.0
    await housekeeping.refresh_registry(node)
    [after] = await sync_to_async(registry.live_connections)()

    assert before["channels"] == ["broadcast", f"user:{user.pk}"]
    assert after["channels"] == [f"user:{user.pk}"]
    await session.end()
