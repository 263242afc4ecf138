"""A reference client of the Renum realtime protocol (asyncio + websockets).

It implements what every client must: subprotocol authentication, reconnect with exponential
backoff (1, 2, 4, 8, 16 s plus jitter, at most 5 attempts in a row, then ``ClientGaveUp``),
resume with ``since`` on every channel (the auto-subscribed ones included), de-duplication by
``(channel, epoch, offset)``, heartbeats, token refresh on 4011, and a resync callback when a
gap cannot be filled. The failure tests drive real servers with it; it ships with the tests,
not with the server.

    client = RealtimeClient("ws://127.0.0.1:8000/ws/", token_provider)
    client.on_message = lambda envelope: ...
    await client.run()          # returns after close(); raises ClientGaveUp / Unauthorized
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

logger = logging.getLogger(__name__)

TokenProvider = str | Callable[[], str | Awaitable[str]]
RECONNECT_AT_ONCE = {1012, 4009}  # service restart, slow consumer: reconnect at once and resume
NO_RETRY = {4001, 4003}  # bad credentials, too many connections: surface it


class ClientGaveUp(Exception):
    """The server stayed unreachable for every allowed attempt."""


class Unauthorized(Exception):
    """The server refused the credentials (4001): get a new token first."""


class RealtimeClient:
    """One logical connection that survives reconnects without losing or repeating messages."""

    def __init__(self, url: str, token: TokenProvider, *, channels: tuple[str, ...] = (),
                 backoff_base_s: float = 1.0, max_attempts: int = 5, jitter: float = 0.3,
                 heartbeat: bool = True) -> None:
        self.url = url
        self.token = token
        self.wanted = list(channels)
        self.backoff_base_s = backoff_base_s
        self.max_attempts = max_attempts
        self.jitter = jitter
        self.heartbeat = heartbeat
        self.on_message: Callable[[dict], Any] = lambda envelope: None
        self.on_resync: Callable[[str, str], Any] = lambda channel, reason: None
        self.on_state: Callable[[str], Any] = lambda state: None
        self.state = "idle"
        self.positions: dict[str, tuple[str, int]] = {}
        # channel -> replayed frames still expected (None: resuming, reply not yet received)
        self.recovering: dict[str, int | None] = {}
        self.seen: dict[str, set[tuple[str, int]]] = {}
        self.duplicates = 0
        self.connects = 0
        self.attempt_delays: list[float] = []
        self.reconnect_started: float | None = None
        self.reconnect_durations: list[float] = []
        self.last_close: tuple[int | None, str] | None = None
        self.welcome: dict | None = None
        self._ws: Any = None
        self._closing = False
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future] = {}
        self._since: dict[str, tuple[str, int] | None] = {}

    # ------------------------------------------------------------------ public API

    async def run(self) -> None:
        """Connect and keep connected until ``close()``; raises ClientGaveUp or Unauthorized."""
        failures = 0
        at_once = False
        while not self._closing:
            if failures or self.connects:
                delay = self._delay(failures, at_once)
                self.attempt_delays.append(delay)
                self._set_state("reconnecting")
                await asyncio.sleep(delay)
            try:
                await self._session()
                failures, at_once = 0, False
            except (OSError, InvalidStatus, TimeoutError, ConnectionClosed) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if code in NO_RETRY:
                    self._set_state("unauthorized" if code == 4001 else "refused")
                    raise Unauthorized(exc.rcvd.reason) if code == 4001 else ClientGaveUp(exc.rcvd.reason) from None
                if self._closing:
                    break
                if failures == 0:  # the drop that starts a reconnect sequence decides its pace
                    at_once = code in RECONNECT_AT_ONCE or code == 4011
                failures += 1
                if self.reconnect_started is None:
                    self.reconnect_started = time.monotonic()
                if failures > self.max_attempts:
                    self._set_state("failed")
                    raise ClientGaveUp(f"server unreachable after {self.max_attempts} attempts: {exc}") from None
        self._set_state("closed")

    async def close(self) -> None:
        """Stop reconnecting and close the socket."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    async def request(self, message: dict, timeout: float = 10) -> dict:
        """Send a command and wait for the frame that replies to it (reply or error)."""
        message_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._replies[message_id] = future
        await self._ws.send(orjson.dumps({**message, "id": message_id}).decode())
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._replies.pop(message_id, None)

    async def subscribe(self, channel: str) -> dict:
        """Subscribe now (and again after every reconnect)."""
        if channel not in self.wanted:
            self.wanted.append(channel)
        return await self._subscribe(channel)

    # ------------------------------------------------------------------ internals

    def _delay(self, failures: int, at_once: bool) -> float:
        """1, 2, 4, 8, 16 x base (plus jitter); after 1012/4009/4011 the first retry is immediate."""
        step = max(0, failures - 1)
        if at_once:
            base = 0.0 if step == 0 else self.backoff_base_s * 2 ** (step - 1)
        else:
            base = self.backoff_base_s * 2 ** step
        return base + random.uniform(0, self.jitter * (base or self.backoff_base_s * 0.5))

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.on_state(state)

    async def _token(self) -> str:
        token = self.token() if callable(self.token) else self.token
        return await token if inspect.isawaitable(token) else token

    async def _session(self) -> None:
        self._set_state("connecting")
        token = await self._token()
        async with websockets.connect(self.url, subprotocols=["renum.v1", f"bearer.{token}"],
                                      open_timeout=5, close_timeout=2, max_size=2**22) as ws:
            self._ws = ws
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if welcome.get("type") != "welcome":
                raise OSError(f"expected welcome, got {welcome.get('type')}")
            self.welcome = welcome["payload"]
            self.connects += 1
            for channel in self.positions:
                self.recovering[channel] = None  # resuming until its subscribe reply and replay
            reader = asyncio.ensure_future(self._read(ws))
            pinger = asyncio.ensure_future(self._ping(ws, welcome["payload"]["heartbeat_s"]))
            try:
                await self._resume(welcome["payload"]["channels"])
                if self.reconnect_started is not None:
                    self.reconnect_durations.append(time.monotonic() - self.reconnect_started)
                    self.reconnect_started = None
                self._set_state("connected")
                await reader
            finally:
                pinger.cancel()
                reader.cancel()
                self.last_close = (ws.close_code, ws.close_reason or "")
                for future in self._replies.values():
                    if not future.done():
                        future.set_exception(ConnectionError("connection closed"))
                        future.add_done_callback(lambda f: f.exception())  # awaited or not: no warning

    async def _resume(self, auto_positions: dict[str, dict]) -> None:
        for channel, position in auto_positions.items():
            if channel not in self.positions:
                # First connect: everything after the welcome position is ours to receive.
                self.positions[channel] = (position["epoch"], position["offset"])
        channels = list(auto_positions) + [c for c in self.wanted if c not in auto_positions]
        await asyncio.gather(*(self._subscribe(c) for c in channels if c in self.positions or c in self.wanted))

    async def _subscribe(self, channel: str) -> dict:
        message: dict[str, Any] = {"type": "subscribe", "channel": channel}
        position = self.positions.get(channel)
        if position is not None:
            message["since"] = {"epoch": position[0], "offset": position[1]}
        self._since[channel] = position
        reply = await self.request(message)
        if reply["type"] == "error":
            self.recovering.pop(channel, None)
            raise PermissionError(f"{channel}: {reply['payload']}")
        return reply

    def _on_subscribed(self, payload: dict) -> None:
        """Runs in the reader, before any later frame: the replay follows this reply at once."""
        channel = payload["channel"]
        since = self._since.pop(channel, None)
        if since is None or not payload["recovered"]:
            if since is not None:
                self.on_resync(channel, "gap could not be filled" if payload["epoch"] == since[0] else "epoch changed")
            self.recovering.pop(channel, None)
            self.positions[channel] = (payload["epoch"], payload["offset"])
        elif payload.get("replayed", 0) > 0:
            self.recovering[channel] = payload["replayed"]
        else:
            self._recovered(channel, payload["epoch"], since[1])

    def _recovered(self, channel: str, epoch: str, floor: int) -> None:
        self.recovering.pop(channel, None)
        offsets = [o for e, o in self.seen.get(channel, ()) if e == epoch]
        self.positions[channel] = (epoch, max([floor, *offsets]))

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame.get("type") == "subscribed":
                self._on_subscribed(frame["payload"])
            reply_to = frame.get("reply_to")
            if reply_to is not None and reply_to in self._replies:
                future = self._replies[reply_to]
                if not future.done():
                    future.set_result(frame)
                continue
            if "offset" in frame and "channel" in frame:
                self._receive(frame)

    def _receive(self, envelope: dict) -> None:
        channel, epoch, offset = envelope["channel"], envelope["epoch"], envelope["offset"]
        seen = self.seen.setdefault(channel, set())
        if (epoch, offset) in seen:
            self.duplicates += 1
            if channel in self.recovering and self.recovering[channel] is not None:
                self._count_replayed(channel, epoch)
            return
        seen.add((epoch, offset))
        if len(seen) > 20000:
            for old in sorted(seen)[:10000]:
                seen.discard(old)
        position = self.positions.get(channel)
        if channel in self.recovering:
            # Resuming: a live frame that overtook the replay must not move the position past
            # messages the replay has not delivered yet.
            if self.recovering[channel] is not None:
                self._count_replayed(channel, epoch)
        elif position is not None and position[0] != epoch and not envelope.get("snapshot"):
            self.on_resync(channel, "epoch changed")
            self.positions[channel] = (epoch, offset)
        elif position is not None:
            self.positions[channel] = (epoch, max(position[1], offset))
        self.on_message(envelope)

    def _count_replayed(self, channel: str, epoch: str) -> None:
        remaining = self.recovering[channel] - 1
        if remaining > 0:
            self.recovering[channel] = remaining
        else:
            self._recovered(channel, epoch, self.positions.get(channel, (epoch, 0))[1])

    async def _ping(self, ws: Any, heartbeat_s: float) -> None:
        if not self.heartbeat:
            return
        while True:
            await asyncio.sleep(heartbeat_s)
            try:
                await asyncio.wait_for(self.request({"type": "ping"}), heartbeat_s * 1.5)
            except (TimeoutError, ConnectionError):
                logger.warning("no pong within %.1fs: dropping a dead connection", heartbeat_s * 1.5)
                ws.transport.abort()
                return
