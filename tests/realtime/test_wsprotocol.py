"""The project's uvicorn WebSocket protocol (``realtime.transports.wsprotocol``): its lean inbox and
back-pressure event, and a real uvicorn server speaking WebSocket through it."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.transports.wsprotocol import KEEPALIVE, TEXTS, Inbox, WebSocketProtocol, Writable


async def test_the_inbox_hands_out_messages_in_order_and_holds_nothing_when_empty():
    inbox = Inbox()
    assert inbox.empty() and inbox.qsize() == 0 and inbox._items is None

    for n in range(3):
        inbox.put_nowait(n)
    assert inbox.qsize() == 3 and not inbox.empty()

    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert inbox.empty() and inbox._items is None and inbox._waiter is None


async def test_the_inbox_wakes_its_waiting_receiver():
    inbox = Inbox()
    getter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()

    inbox.put_nowait({"type": "websocket.connect"})

    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.connect"}
    assert inbox._waiter is None


async def test_the_inbox_serves_one_receiver_at_a_time_and_survives_a_cancelled_one():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one receiver"):
        await inbox.get()

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    inbox.put_nowait("after")  # no waiter left behind: the next receiver gets it
    assert await asyncio.wait_for(inbox.get(), 1) == "after"


async def test_writable_waits_only_while_cleared():
    writable = Writable()
    wait = writable.wait()
    with pytest.raises(StopIteration):  # set: completes in one step, without suspending
        wait.send(None)

    writable.clear()
    writers = [asyncio.ensure_future(writable.wait()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in writers) and not writable.is_set()

    writable.set()
    assert await asyncio.wait_for(asyncio.gather(*writers), 1) == [True, True]
    assert writable._waiters is None


async def test_a_cancelled_writer_leaves_no_waiter_behind():
    writable = Writable()
    writable.clear()
    writer = asyncio.ensure_future(writable.wait())
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert writable._waiters is None


@pytest.fixture
async def served():
    """A real uvicorn server with the protocol, serving an echo application that records
    each connection's protocol object (the bound ``send``'s owner)."""
    protocols = []

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        protocols.append(send.__self__)
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/refuse/":
            await send({"type": "websocket.close"})
            return
        if scope["path"] == "/texts/":
            protocol = send.__self__
            writes = protocol.writes_seen = []
            write = protocol.transport.write
            protocol.transport.write = lambda data: (writes.append(data), write(data))[1]
            assert TEXTS in scope["extensions"]
            await send({"type": "websocket.accept", TEXTS: ["a", "é" * 200]})
            await send({"type": "websocket.send", TEXTS: ["c", "d" * 70_000]})
        if scope["path"] == "/quiet/":
            await send({"type": "websocket.accept", "subprotocol": "echo", KEEPALIVE: False})
        elif scope["path"] != "/texts/":
            await send({"type": "websocket.accept", "subprotocol": "echo"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
                return
            await send({"type": "websocket.send", "text": message.get("text") or message["bytes"].decode()})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, ws=WebSocketProtocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}", protocols
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_a_socket_served_through_the_protocol_keeps_neither_request_nor_response(served):
    url, protocols = served
    async with connect(url + "/ws/", subprotocols=["echo"]) as ws:
        assert ws.subprotocol == "echo"
        for text in ("one", "two", "three"):
            await ws.send(text)
        await ws.send(b"bytes")
        assert [await ws.recv() for _ in range(4)] == ["one", "two", "three", "bytes"]

        protocol = protocols[0]
        assert isinstance(protocol, WebSocketProtocol)
        assert protocol.request is None and protocol.response is None
        assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Writable)
        assert protocol.scope["subprotocols"] == ["echo"]  # the scope was built from the request

        await ws.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4001 and closed.value.rcvd.reason == "asked"


async def test_the_request_parser_keeps_no_headers_and_the_socket_no_extension_factories(served):
    url, protocols = served
    async with connect(url + "/ws/", subprotocols=["echo"], user_agent_header="a client of the test") as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        conn = protocols[0].conn
        # websockets' request parser goes on parsing frames, with the request in its frame
        kept = conn.parser.gi_frame.f_locals["request"]
        assert kept.path == "/ws/"
        assert list(kept.headers.raw_items()) == []
        assert protocols[0].scope["headers"]  # the scope has them
        assert (b"user-agent", b"a client of the test") in protocols[0].scope["headers"]
        assert conn.available_extensions == []


async def test_an_accept_may_ask_for_no_websocket_pings(served):
    url, protocols = served
    async with connect(url + "/ws/", subprotocols=["echo"]) as ws, \
            connect(url + "/quiet/", subprotocols=["echo"]) as quiet:
        await ws.send("one")
        await quiet.send("two")
        assert (await ws.recv(), await quiet.recv()) == ("one", "two")
        pinging, silent = protocols
        assert pinging.keepalive and pinging.ping_timer is not None  # uvicorn's pings (every 20 s)
        assert not silent.keepalive and silent.ping_timer is None


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_texts_go_out_in_order_and_in_one_write_each_where_the_protocol_frames_them(served, compression):
    url, protocols = served
    async with connect(url + "/texts/", compression=compression, max_size=None) as ws:
        assert [await ws.recv() for _ in range(4)] == ["a", "é" * 200, "c", "d" * 70_000]
        writes = list(protocols[0].writes_seen)  # before the close frame
    if compression is None:
        # the handshake's response with the accept's texts, then the two texts of the send
        assert len(writes) == 2 and writes[0].startswith(b"HTTP/1.1 101")
    else:  # compressed: each through websockets, after the response
        assert len(writes) == 5


async def test_a_malformed_handshake_is_answered_400_by_websockets(served):
    url, protocols = served
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ws/ HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")  # no Sec-WebSocket-Key
    answer = await asyncio.wait_for(reader.read(), 5)  # then the server closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    assert protocols == []  # the application never ran


async def test_a_refused_handshake_is_still_a_403(served):
    url, _ = served
    with pytest.raises(Exception, match="403"):
        async with connect(url + "/refuse/"):
            pass


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_text_frame_is_what_websockets_writes_for_it(size):
    from websockets.frames import Frame, Opcode

    from realtime.transports.wsprotocol import text_frame

    payload = ("é" * size).encode()[:size]  # any bytes: the frame does not look into them
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@pytest.mark.parametrize(("compression", "framed_by_websockets"), [(None, 0), ("deflate", 5)])
async def test_texts_of_an_uncompressed_socket_are_framed_by_the_protocol(served, compression, framed_by_websockets):
    url, protocols = served
    texts = ["short", "x" * 126, "é" * 40_000, "y" * 70_000]  # each header length, multibyte text
    async with connect(url + "/ws/", subprotocols=["echo"], compression=compression, max_size=None) as ws:
        await ws.send("warm-up")
        assert await ws.recv() == "warm-up"
        conn = protocols[0].conn
        calls = []
        original = conn.send_text
        conn.send_text = lambda data, fin=True: (calls.append(len(data)), original(data, fin))[1]

        for text in texts:
            await ws.send(text)
        assert [await ws.recv() for _ in texts] == texts
        await ws.send(b"bytes")  # echoed as text
        assert await ws.recv() == "bytes"

    assert bool(conn.extensions) == (compression is not None)
    # without compression no text went through websockets' framing; with it all five did
    assert len(calls) == framed_by_websockets
