"""HTTP fallback clients: long pollers and event-stream readers on raw asyncio streams.

No HTTP library: one keep-alive HTTP/1.1 connection per client, written by hand so that a
worker process can hold thousands of them on one event loop. Used by the load tool's
``longpoll``/``sse``/``events`` scenarios and by the crowd test. Nothing here imports Django.

A client follows the protocol as a browser client would: the multiplexed poll (positions per
channel, the server's ``X-Poll-Interval``), the event stream (resume with ``Last-Event-ID``),
or the v1 ``GET /api/realtime/events/`` with one request per channel.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson

# (seq, publisher time, receive time) of each data message of the run; duplicates are kept.
OnMessage = Callable[[dict[str, Any], float], None]


class HttpError(Exception):
    """A non-2xx answer or a broken connection."""


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened after any failure)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        """Drop the connection."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        """Write a request."""
        await self._open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def head(self) -> tuple[int, dict[str, str]]:
        """The status and headers of the answer."""
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str]) -> bytes:
        """A whole body (Content-Length or chunked)."""
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        chunks = []
        async for chunk in self.chunks():
            chunks.append(chunk)
        return b"".join(chunks)

    async def chunks(self):  # noqa: ANN201 - an async generator of bytes
        """The chunks of a chunked body, as they come."""
        while True:
            size_line = await self.reader.readline()
            if not size_line:
                raise HttpError("connection closed mid-body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """One request and its whole answer; the connection is dropped after a failure."""
        try:
            await self.send(method, path, headers, body)
            status, answer_headers = await self.head()
            data = await self.body(answer_headers)
        except (OSError, asyncio.IncompleteReadError, HttpError, ValueError, IndexError):
            self.close()
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, data


def marks(envelope: dict[str, Any]) -> tuple[int, float, str] | None:
    """(seq, publisher time, run id) of a load message: a notification's ``action.payload`` or a payload."""
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        return None
    if "seq" not in payload:
        action = payload.get("action")
        payload = action.get("payload") if isinstance(action, dict) else None
        if not isinstance(payload, dict) or "seq" not in payload:
            return None
    return payload["seq"], payload.get("t", 0.0), payload.get("run", "")


class Stats:
    """What the clients of one process saw: the messages of one run (``run``: its id; None: any)."""

    def __init__(self, run: str | None = None) -> None:
        self.run = run
        self.foreign = 0  # load messages of another run (left over from an earlier one)
        self.received: list[tuple[int, float, float]] = []  # (seq, sent, received)
        self.errors: Counter[str] = Counter()
        self.requests = 0
        self.ready = 0

    def message(self, envelope: dict[str, Any], now: float) -> None:
        """Note a delivered envelope (only the load's messages count)."""
        found = marks(envelope)
        if found is None:
            return
        if self.run is not None and found[2] != self.run:
            self.foreign += 1
            return
        self.received.append((found[0], found[1], now))


async def _answer(connection: Connection, stats: Stats, method: str, path: str, headers: dict[str, str],
                  body: bytes = b"") -> tuple[dict[str, str], bytes] | None:
    """One request of a poller: the headers and body of a 200, else None after counting the
    error and waiting (a second, or the server's ``Retry-After``)."""
    try:
        status, answer, content = await connection.request(method, path, headers, body)
    except Exception as exc:
        stats.errors[type(exc).__name__] += 1
        await asyncio.sleep(1)
        return None
    stats.requests += 1
    if status != 200:
        stats.errors[f"http {status}"] += 1
        await asyncio.sleep(float(answer.get("retry-after", "1")))
        return None
    return answer, content


async def long_poller(host: str, port: int, token: str, channels: list[str], stats: Stats,
                      stop: asyncio.Event, timeout: int = 25) -> None:
    """``POST /api/realtime/poll/`` in a loop, with every channel, from its own positions."""
    connection = Connection(host, port)
    positions: dict[str, Any] = dict.fromkeys(channels)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first = True
    while not stop.is_set():
        answered = await _answer(connection, stats, "POST", "/api/realtime/poll/", headers,
                                 orjson.dumps({"channels": positions, "timeout": timeout}))
        if answered is None:
            continue
        answer, body = answered
        now = time.time()
        for channel, entry in orjson.loads(body)["channels"].items():
            if "error" in entry:
                stats.errors[f"channel {entry['error']['code']}"] += 1
                positions.pop(channel, None)
                continue
            positions[channel] = {"epoch": entry["epoch"], "offset": entry["offset"]}
            for envelope in entry["messages"]:
                stats.message(envelope, now)
        if first:
            stats.ready += 1
            first = False
        interval = float(answer.get("x-poll-interval", "0") or 0)
        if interval:
            await asyncio.sleep(interval)
    connection.close()


async def event_stream(host: str, port: int, token: str, channels: list[str], stats: Stats,
                       stop: asyncio.Event) -> None:
    """``GET /api/realtime/sse/``, reconnecting with ``Last-Event-ID`` as a browser does."""
    query = urlencode([("channel", c) for c in channels])
    last_id = ""
    first = True
    while not stop.is_set():
        connection = Connection(host, port)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            await connection.send("GET", f"/api/realtime/sse/?{query}", headers)
            status, answer = await connection.head()
            stats.requests += 1
            if status != 200:
                stats.errors[f"http {status}"] += 1
                await connection.body(answer)
                connection.close()
                await asyncio.sleep(1)
                continue
            buffer = b""
            async for chunk in connection.chunks():
                buffer += chunk
                now = time.time()
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    kind, data, event_id = "message", None, None
                    for line in block.split(b"\n"):
                        if line.startswith(b"event: "):
                            kind = line[7:].decode()
                        elif line.startswith(b"data: "):
                            data = line[6:]
                        elif line.startswith(b"id: "):
                            event_id = line[4:].decode()
                    if event_id:
                        last_id = event_id
                    if kind == "ready" and first:
                        stats.ready += 1
                        first = False
                    elif kind == "resync":
                        stats.errors["resync"] += 1
                    elif kind == "channel_error":
                        stats.errors["channel error"] += 1
                    elif data is not None:
                        stats.message(orjson.loads(data), now)
                if stop.is_set():
                    break
        except Exception as exc:
            stats.errors[type(exc).__name__] += 1
            await asyncio.sleep(1)
        finally:
            connection.close()


async def v1_poller(host: str, port: int, token: str, channels: list[str], stats: Stats,
                    stop: asyncio.Event, timeout: int = 25) -> None:
    """The v1 fallback: one ``GET /api/realtime/events/`` loop per channel, each on its own connection."""

    async def follow(channel: str) -> None:
        connection = Connection(host, port)
        headers = {"Authorization": f"Bearer {token}"}
        since = ""
        first = True
        while not stop.is_set():
            query = urlencode({"channel": channel, "timeout": timeout, **({"since": since} if since else {})})
            answered = await _answer(connection, stats, "GET", f"/api/realtime/events/?{query}", headers)
            if answered is None:
                continue
            answer, body = answered
            now = time.time()
            entry = orjson.loads(body)
            since = f"{entry['epoch']}:{entry['offset']}"
            for envelope in entry["messages"]:
                stats.message(envelope, now)
            if first and channel == channels[0]:
                stats.ready += 1
            first = False
            interval = float(answer.get("x-poll-interval", "0") or 0)
            if interval:
                await asyncio.sleep(interval)
        connection.close()

    await asyncio.gather(*(follow(c) for c in channels))


CLIENTS = {"longpoll": long_poller, "sse": event_stream, "events": v1_poller}
