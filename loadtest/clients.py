"""Client worker processes: many authenticated WebSocket connections on one uvloop event loop.

The orchestrator starts ``workers`` processes (``WorkerPool``) and drives them with commands
over a pipe: connect to a server, reset the measurement, collect latencies, disconnect.
Live counts (connected, delivered, ...) are shared through an array the orchestrator polls
for its progress display. Nothing here imports Django.

Latency of a delivery = receive time - the publisher's ``time.time()`` embedded in the
payload (``{"t": ...}``, or a notification's ``action.payload.t``); same clock, same machine.

Two protocols, by the server's kind: ``v1`` (``/ws/``: the ``renum.v1`` and ``bearer.<jwt>``
subprotocols, wait for ``welcome``, send the v1 ``ping``) and ``socketio`` (``ours-sio``,
``node-sio``, ``pysio``): a lean Engine.IO 4 / Socket.IO 5 client over the WebSocket transport
only (``/socket.io/?EIO=4&transport=websocket``): read the OPEN packet, send CONNECT with
``{"token": <jwt>}`` as its auth, count the connect done at the CONNECT answer, answer the
server's pings (``2`` -> ``3``), and count an EVENT whose first argument is an envelope of
this run (the same ``t``/``seq``/``run`` marks), whatever the event's name.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from array import array
from collections import Counter
from typing import Any

import orjson

from loadtest import procstat

C_CONNECTED, C_DELIVERED, C_OTHER, C_ERRORS, C_DROPPED = range(5)
COUNTERS = 5
PING = '{"type":"ping"}'
SIO_PING, SIO_PONG = "2", "3"  # Engine.IO 4: the server pings, the client answers


class _Client:
    __slots__ = ("user_id", "token", "ws", "reader", "next_ping", "heartbeat_s", "sio")

    def __init__(self, user_id: int, token: str) -> None:
        self.user_id = user_id
        self.token = token
        self.ws: Any = None
        self.reader: asyncio.Task | None = None
        self.next_ping = 0.0
        self.heartbeat_s = 25.0
        self.sio = False


def stamp_of(message: str | bytes, run: str) -> float | None:
    """The publisher's send time in a data frame of this run, or None for any other frame.

    The run id keeps out messages that other processes publish on the same Redis.
    """
    if isinstance(message, bytes):
        message = message.decode()
    if run not in message:
        return None
    return _stamp_of_envelope(orjson.loads(message), run)


def sio_stamp_of(message: str | bytes, run: str) -> float | None:
    """The publisher's send time in a Socket.IO EVENT (``42[name, envelope, ...]``) of this run, or None."""
    if isinstance(message, bytes):
        message = message.decode()
    if run not in message or not message.startswith("42"):
        return None
    start = message.find("[", 2)  # after a namespace ("/admin,") or an ack id, when there is one
    if start < 0:
        return None
    args = orjson.loads(message[start:])
    return _stamp_of_envelope(args[1], run) if len(args) > 1 and isinstance(args[1], dict) else None


def _stamp_of_envelope(envelope: dict, run: str) -> float | None:
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        return None
    if "run" not in payload:  # a notification: the marks are in its action's payload
        action = payload.get("action")
        payload = action.get("payload") if isinstance(action, dict) else None
        if not isinstance(payload, dict):
            return None
    return payload.get("t") if payload.get("run") == run else None


class Worker:
    """The clients of one worker process."""

    def __init__(self, index: int, pipe: Any, counters: Any, clients: list[tuple[int, str]]) -> None:
        self.pipe = pipe
        self.base = index * COUNTERS
        self.counters = counters
        self.clients = [_Client(uid, token) for uid, token in clients]
        self.latencies = array("d")
        self.close_codes: Counter[str] = Counter()
        self.closing = False
        self.pinger: asyncio.Task | None = None
        self.run_id = "\x00"  # matches no frame until the orchestrator sends ``reset``

    def _count(self, which: int, n: int = 1) -> None:
        self.counters[self.base + which] += n

    async def run(self) -> None:
        """Serve the orchestrator's commands until ``exit``."""
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, self.pipe.recv)
            try:
                if command == "connect":
                    reply: Any = await self.connect_all(**args)
                elif command == "reset":
                    self.run_id = args["run"]
                    del self.latencies[:]  # in place: the readers hold a bound append
                    self.close_codes.clear()
                    for which in (C_DELIVERED, C_OTHER, C_DROPPED):
                        self.counters[self.base + which] = 0
                    reply = None
                elif command == "collect":
                    reply = {"latencies": self.latencies.tobytes(), "close_codes": dict(self.close_codes),
                             "cpu_s": procstat.cpu_seconds(multiprocessing.current_process().pid)}
                elif command == "disconnect":
                    reply = await self.disconnect_all()
                elif command == "exit":
                    await self.disconnect_all()
                    self.pipe.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as exc:  # reported to the orchestrator, which decides
                self.pipe.send(("error", repr(exc)))
                continue
            self.pipe.send(("ok", reply))

    # ---------------------------------------------------------------- connect

    async def connect_all(self, url: str, concurrency: int, attempts: int, open_timeout: float,
                          compression: bool, protocol: str = "v1") -> dict[str, Any]:
        """Connect every client (at most ``concurrency`` handshakes at once), until each is welcomed."""
        for which in (C_CONNECTED, C_ERRORS, C_DELIVERED, C_OTHER, C_DROPPED):
            self.counters[self.base + which] = 0
        self.closing = False
        gate = asyncio.Semaphore(max(1, concurrency))
        errors: Counter[str] = Counter()
        started = time.time()
        if protocol not in ("v1", "socketio"):
            raise ValueError(f"unknown client protocol {protocol!r}")
        for client in self.clients:
            client.sio = protocol == "socketio"
        results = await asyncio.gather(*(
            self._connect(c, url, gate, attempts, open_timeout, compression, errors) for c in self.clients
        ))
        durations = [r[0] for r in results if r is not None]
        finished = max((r[1] for r in results if r is not None), default=started)
        if self.pinger is None:
            self.pinger = asyncio.ensure_future(self._ping_forever())
        return {"started": started, "finished": finished, "ok": len(durations),
                "failed": len(results) - len(durations), "errors": dict(errors), "durations": durations,
                "users": [c.user_id for c in self.clients if c.ws is not None]}

    async def _connect(self, client: _Client, url: str, gate: asyncio.Semaphore, attempts: int,
                       open_timeout: float, compression: bool, errors: Counter[str]) -> tuple[float, float] | None:
        """Connect one client with retries; returns (handshake-to-welcome seconds, welcome time)."""
        from websockets.asyncio.client import connect

        for attempt in range(attempts):
            ws = None
            async with gate:
                began = time.time()
                try:
                    ws = await connect(
                        url, subprotocols=None if client.sio else ["renum.v1", "bearer." + client.token],
                        compression="deflate" if compression else None, ping_interval=None,
                        open_timeout=open_timeout, close_timeout=2, max_size=None, user_agent_header=None,
                        proxy=None,
                    )
                    if client.sio:
                        await asyncio.wait_for(sio_handshake(ws, client.token), open_timeout)
                        client.heartbeat_s = float("inf")  # the server pings; the reader answers
                    else:
                        first = await asyncio.wait_for(ws.recv(), open_timeout)
                        hello = orjson.loads(first)
                        if hello.get("type") != "welcome":
                            raise RuntimeError(f"first frame is {hello.get('type')!r}, not welcome")
                        client.heartbeat_s = float((hello.get("payload") or {}).get("heartbeat_s") or 25)
                    welcomed = time.time()
                except Exception as exc:
                    errors[_error_name(exc)] += 1
                    self._count(C_ERRORS)
                    if ws is not None:
                        ws.transport.abort()
                    ws = None
            if ws is None:
                await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))
                continue
            client.ws = ws
            client.next_ping = welcomed + client.heartbeat_s * random.uniform(0.5, 1.0)
            client.reader = asyncio.ensure_future(self._read_sio(client) if client.sio else self._read(client))
            self._count(C_CONNECTED)
            return welcomed - began, welcomed
        return None

    # ---------------------------------------------------------------- receive

    async def _read(self, client: _Client) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = client.ws
        record = self.latencies.append
        counters, delivered, other = self.counters, self.base + C_DELIVERED, self.base + C_OTHER
        now = time.time
        try:
            async for message in ws:
                received = now()
                stamp = stamp_of(message, self.run_id)
                if stamp is None:
                    counters[other] += 1
                    continue
                record(received - stamp)
                counters[delivered] += 1
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.close_codes[_error_name(exc)] += 1
        self._reader_ended(ws)

    def _reader_ended(self, ws: Any) -> None:
        """A socket's reader stopped: unless the run is closing them, count a dropped connection."""
        if not self.closing:
            self._count(C_DROPPED)
            self.close_codes[str(ws.close_code)] += 1
            self._count(C_CONNECTED, -1)

    async def _read_sio(self, client: _Client) -> None:
        """The Socket.IO reader: answer pings, count this run's events, and the rest as other frames."""
        from websockets.exceptions import ConnectionClosed

        ws = client.ws
        record = self.latencies.append
        counters, delivered, other = self.counters, self.base + C_DELIVERED, self.base + C_OTHER
        now = time.time
        try:
            async for message in ws:
                received = now()
                if message == SIO_PING:
                    await ws.send(SIO_PONG)
                    continue
                stamp = sio_stamp_of(message, self.run_id)
                if stamp is None:
                    counters[other] += 1
                    continue
                record(received - stamp)
                counters[delivered] += 1
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.close_codes[_error_name(exc)] += 1
        self._reader_ended(ws)

    async def _ping_forever(self) -> None:
        """The protocol's client heartbeat (``ping`` every heartbeat_s), for all clients from one task."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for client in self.clients:
                if client.ws is not None and now >= client.next_ping:
                    client.next_ping = now + client.heartbeat_s
                    asyncio.ensure_future(_send_quietly(client.ws, PING))

    # ---------------------------------------------------------------- disconnect

    async def disconnect_all(self) -> None:
        """Drop every connection at once (abort: the server sees the sockets close)."""
        self.closing = True
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        readers = []
        for client in self.clients:
            if client.ws is not None:
                client.ws.transport.abort()
                client.ws = None
            if client.reader is not None:
                client.reader.cancel()
                readers.append(client.reader)
                client.reader = None
        if readers:
            await asyncio.wait(readers, timeout=10)
        self.counters[self.base + C_CONNECTED] = 0


async def sio_handshake(ws: Any, token: str) -> dict:
    """Engine.IO OPEN, then Socket.IO CONNECT with the token as auth; returns the CONNECT answer.

    A CONNECT_ERROR raises ``SioRefused`` with its ``data.code`` (the v1 close code on ours).
    Frames before the answer (a ping) are answered or skipped.
    """
    opened = await ws.recv()
    if not isinstance(opened, str) or not opened.startswith("0"):
        raise RuntimeError(f"first frame is {str(opened)[:20]!r}, not an Engine.IO OPEN")
    await ws.send("40" + orjson.dumps({"token": token}).decode())
    while True:
        frame = await ws.recv()
        if frame == SIO_PING:
            await ws.send(SIO_PONG)
        elif isinstance(frame, str) and frame.startswith("40"):
            return orjson.loads(frame[2:] or "{}")
        elif isinstance(frame, str) and frame.startswith("44"):
            error = orjson.loads(frame[2:] or "{}")
            raise SioRefused((error.get("data") or {}).get("code") if isinstance(error, dict) else None)


class SioRefused(Exception):
    """A Socket.IO CONNECT_ERROR; ``code`` is its ``data.code`` when there is one."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code


async def _send_quietly(ws: Any, text: str) -> None:
    try:
        await ws.send(text)
    except Exception:  # the reader notices a closed connection
        pass


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, SioRefused):
        return f"SioRefused({exc.code})" if exc.code else "SioRefused"
    code = getattr(getattr(exc, "rcvd", None), "code", None) or getattr(getattr(exc, "response", None),
                                                                         "status_code", None)
    return f"{type(exc).__name__}({code})" if code else type(exc).__name__


def worker_main(index: int, pipe: Any, counters: Any, clients: list[tuple[int, str]]) -> None:
    """Entry point of a worker process."""
    procstat.raise_nofile()
    import uvloop

    uvloop.install()
    asyncio.run(Worker(index, pipe, counters, clients).run())


class WorkerPool:
    """The orchestrator's handle on the worker processes."""

    def __init__(self, workers: int, clients: list[tuple[int, str]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        workers = max(1, min(workers, len(clients)))
        self.counters = ctx.Array("q", workers * COUNTERS, lock=False)
        self.pipes = []
        self.processes = []
        for index in range(workers):
            ours, theirs = ctx.Pipe()
            share = clients[index::workers]
            process = ctx.Process(target=worker_main, args=(index, theirs, self.counters, share),
                                  daemon=True, name=f"loadtest-worker-{index}")
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def call(self, command: str, args: dict | None = None, timeout: float = 60) -> list[Any]:
        """Send a command to every worker and wait (bounded) for all replies."""
        for pipe in self.pipes:
            pipe.send((command, args or {}))
        replies = []
        deadline = time.monotonic() + timeout
        for index, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"worker {index} did not answer {command!r} within {timeout}s")
            status, reply = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"worker {index} failed {command!r}: {reply}")
            replies.append(reply)
        return replies

    def total(self, which: int) -> int:
        """A counter summed over the workers."""
        return sum(self.counters[i * COUNTERS + which] for i in range(len(self.processes)))

    def close(self, timeout: float = 15) -> None:
        """Stop the workers (ask, then terminate, then kill)."""
        try:
            self.call("exit", timeout=timeout)
        except Exception:
            pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=3)
            if process.is_alive():
                process.kill()
                process.join(timeout=3)
