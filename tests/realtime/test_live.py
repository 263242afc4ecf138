"""Integration: real server processes, real WebSocket clients, real Redis and database."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async

from realtime.publish import publish_rollback_unsafe
from tests.conftest import access_token_for
from tests.live import ROOT, server_env

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


async def open_ws(server, user=None, *, token=None, **kwargs):
    """Connect a real client; returns (websocket, welcome frame)."""
    subprotocols = ["renum.v1"]
    if user is not None or token is not None:
        subprotocols.append("bearer." + (token or access_token_for(user)))
    ws = await websockets.connect(server.ws_url, subprotocols=subprotocols, open_timeout=10, **kwargs)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    return ws, welcome


async def recv_json(ws, timeout=5):
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_real_client_sees_welcome_and_4001(live_server_proc, user):
    ws, welcome = await open_ws(live_server_proc, user)
    assert welcome["type"] == "welcome"
    assert ws.subprotocol == "renum.v1"
    await ws.close()

    bad = await websockets.connect(live_server_proc.ws_url, subprotocols=["renum.v1", "bearer.invalid"])
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(bad.recv(), 5)
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason.startswith("invalid token")


async def test_publish_from_another_os_process_reaches_the_socket(live_server_proc, user):
    ws, _ = await open_ws(live_server_proc, user)

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "realtime_publish", f"user:{user.pk}", "system_event", '{"from": "cli"}'],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "offset 1" in result.stdout
    frame = await recv_json(ws)
    assert frame["payload"] == {"from": "cli"} and frame["channel"] == f"user:{user.pk}"
    await ws.close()


async def test_two_server_processes_share_one_redis(live_server_factory, make_user):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    ws_a, _ = await open_ws(first, alice)
    ws_b, _ = await open_ws(second, bob)

    await sync_to_async(publish_rollback_unsafe)("broadcast", "system_event", {"to": "all"})
    await sync_to_async(publish_rollback_unsafe)(f"user:{bob.pk}", "system_event", {"to": "bob"})

    assert (await recv_json(ws_a))["payload"] == {"to": "all"}
    assert (await recv_json(ws_b))["payload"] == {"to": "all"}
    assert (await recv_json(ws_b))["payload"] == {"to": "bob"}
    with pytest.raises(TimeoutError):
        await recv_json(ws_a, timeout=0.5)
    await ws_a.close()
    await ws_b.close()
