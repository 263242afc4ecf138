"""The Socket.IO binding's refusals and limits, spoken at the packet level against a live server.

Same rules as ``/ws/``: the origin check, the per-IP connect rate, the per-user socket limit, the
one-time ticket; refusals are CONNECT_ERROR packets with the v1 close code in ``data.code``.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async

from realtime.core.auth import ticket_issue
from realtime.transports.http import decode_cursor, encode_cursor
from tests.conftest import access_token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Database work from asgiref's thread: its connections are closed after each test."""


def sio_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"


async def recv(ws, timeout: float = 5) -> str:
    return await asyncio.wait_for(ws.recv(), timeout)


async def open_sio(server, auth: dict | None, **kwargs):
    """An Engine.IO WebSocket session that sent its CONNECT; returns (socket, open payload, answer)."""
    ws = await websockets.connect(sio_url(server), open_timeout=10, **kwargs)
    opened = orjson.loads((await recv(ws))[1:])
    await ws.send("40" + (orjson.dumps(auth).decode() if auth is not None else ""))
    return ws, opened, await recv(ws)


def connect_error(packet: str) -> dict:
    assert packet.startswith("44"), packet
    return orjson.loads(packet[2:])


async def test_open_packet_carries_the_configured_heartbeat(live_server_factory, user):
    server = live_server_factory(REALTIME_SOCKETIO_PING_INTERVAL_S="0.5", REALTIME_SOCKETIO_PING_TIMEOUT_S="1.5")
    ws, opened, answer = await open_sio(server, {"token": access_token_for(user)})

    assert opened["upgrades"] == [] and opened["maxPayload"] == 1_000_000
    assert (opened["pingInterval"], opened["pingTimeout"]) == (500, 1500)
    assert answer.startswith("40")
    assert (await recv(ws)).startswith('42["welcome"')
    assert await recv(ws, 3) == "2"
    await ws.send("3")
    assert await recv(ws, 3) == "2"
    # No pong this time: the session ends one ping timeout later.
    with pytest.raises(websockets.ConnectionClosed):
        await recv(ws, 4)


async def test_a_one_time_ticket_connects_once(live_server_proc, user):
    ticket, _ = await sync_to_async(ticket_issue)(user=user)

    first, _, accepted = await open_sio(live_server_proc, {"ticket": ticket})
    second, _, refused = await open_sio(live_server_proc, {"ticket": ticket})

    assert accepted.startswith("40{")
    assert connect_error(refused) == {"message": "invalid, expired or already used ticket", "data": {"code": 4001}}
    await first.close()
    await second.close()


async def test_missing_credentials_are_refused_with_4001(live_server_proc):
    ws, _, refused = await open_sio(live_server_proc, None)
    assert connect_error(refused) == {"message": "missing credentials", "data": {"code": 4001}}
    await ws.close()


async def test_a_user_over_the_socket_limit_is_refused_with_4003(live_server_factory, user):
    server = live_server_factory(REALTIME_MAX_CONNECTIONS_PER_USER="1")
    token = access_token_for(user)
    first, _, accepted = await open_sio(server, {"token": token})

    second, _, refused = await open_sio(server, {"token": token})

    assert accepted.startswith("40{")
    assert connect_error(refused)["data"] == {"code": 4003}
    await first.close()
    await second.close()


async def test_connects_over_the_ip_rate_are_refused_with_4029(live_server_factory, user):
    server = live_server_factory(REALTIME_CONNECTS_PER_IP_PER_MINUTE="1")
    token = access_token_for(user)
    first, _, accepted = await open_sio(server, {"token": token})

    second, _, refused = await open_sio(server, {"token": token})

    assert accepted.startswith("40{")
    assert connect_error(refused)["data"] == {"code": 4029}
    await first.close()
    await second.close()


async def test_an_origin_that_is_not_allowed_is_refused_before_the_upgrade(live_server_proc):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(sio_url(live_server_proc), origin="https://evil.example")
    assert refused.value.response.status_code == 403


async def test_binary_events_and_unknown_events_get_an_error_ack(live_server_proc, user):
    ws, _, _ = await open_sio(live_server_proc, {"token": access_token_for(user)})
    await recv(ws)  # welcome

    await ws.send('451-7["subscribe",{"_placeholder":true,"num":0}]')
    await ws.send(b"\x01")
    binary = await recv(ws)
    await ws.send('428["launch",{}]')
    unknown = await recv(ws)

    assert orjson.loads(binary[3:])[0]["error"]["code"] == "invalid_message"
    assert orjson.loads(unknown[3:])[0]["error"]["code"] == "unknown_command"
    await ws.close()


async def test_a_stale_offset_is_answered_with_a_new_pid_and_a_resync(live_server_proc, user):
    ws, _, answer = await open_sio(live_server_proc, {"token": access_token_for(user)})
    welcome = await recv(ws)
    offset = orjson.loads(welcome[2:])[2]
    positions = decode_cursor(offset)
    assert set(positions) == {f"user:{user.pk}", "broadcast"}
    pid = orjson.loads(answer[2:])["pid"]
    await ws.close()
    channel = f"user:{user.pk}"
    stale = dict(positions, **{channel: ("another-epoch", 3)})
    ws, _, answer = await open_sio(live_server_proc, {"token": access_token_for(user), "pid": pid,
                                                      "offset": encode_cursor(stale)})
    frames = [await recv(ws) for _ in range(2)]

    assert orjson.loads(answer[2:])["pid"] != pid  # socket.recovered is false
    assert frames[0].startswith('42["welcome"')
    assert orjson.loads(frames[1][2:])[:2] == ["resync", {"channel": channel, "epoch": positions[channel][0],
                                                          "offset": positions[channel][1]}]
    await ws.close()
