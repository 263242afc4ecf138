"""Process-local fan-out: one Redis pub/sub connection per process, bytes written to sockets.

The textbook Channels setup gives every consumer its own channel-layer queue and wakes one
task per message per consumer, then hops through the sync thread before each handler. Here a
message arrives once per process, is decoded once, and the hub writes the same pre-serialized
frame to each local subscriber without creating a task per delivery (see ``Outbox``).

The hub also remembers the last offset it delivered per channel. After its own Redis
connection drops it replays what it missed from the channel history, so messages published
during the outage are not silently lost; where the history cannot fill the gap it closes the
affected sockets with 1012 so that their clients resubscribe and resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Protocol

from redis.exceptions import RedisError

from realtime.fanout.lifecycle import StartOnce
from realtime.ops import metrics
from realtime.storage import redis as rt_redis
from realtime.storage import streams

logger = logging.getLogger("realtime.fanout.hub")
# Bound once: a metric call on the hot path is one method call, not a label lookup.
_RECEIVED_INC = metrics.RECEIVED.inc
_DELIVERED_INC = metrics.DELIVERED.inc
_FANOUT_OBSERVE = metrics.FANOUT_SECONDS.observe


class _Resumed:
    """Awaitable that finishes a coroutine which already ran to its first suspension.

    The outbox drives each socket send synchronously (``coro.send(None)``): nearly always it
    completes without suspending, and costs no task. When it does suspend (the transport is
    full) the rest of it is handed to a task through this object, which forwards what the
    task sends or throws, exactly as ``await`` would have.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self):  # noqa: ANN204 - a generator by protocol
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation included: forwarded, not swallowed
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Outbox:
    """The bounded outbound buffer of one socket.

    Frames go straight to the ASGI ``send`` while it keeps up; once a send suspends, later
    frames queue here. A queued frame with a coalesce key is replaced by a newer one with the
    same key (only the latest state of e.g. a progress bar matters; the hub qualifies keys by
    channel, so each channel keeps its own latest state), so under pressure those
    are dropped first; notifications and system events are never dropped. More than
    ``limit`` queued bytes make the socket a slow consumer: ``on_overflow`` closes it (4009)
    and nothing else waits on it.
    """

    __slots__ = ("_send", "_queue", "_queued_bytes", "_writer", "_keyed", "limit", "on_overflow", "closed",
                 "coalesced")

    def __init__(self, send: Callable[[dict], Awaitable[None]], limit: int,
                 on_overflow: Callable[[], None]) -> None:
        self._send = send
        # [text, key] entries (text None once coalesced away), and the entries by key: made
        # when a frame first has to wait (an idle socket never needs them; a deque allocates
        # ~600 bytes up front).
        self._queue: deque[list] | None = None
        self._keyed: dict[bytes, list] | None = None
        self._queued_bytes = 0
        self._writer: asyncio.Task | None = None
        self.limit = limit
        self.on_overflow = on_overflow
        self.closed = False
        self.coalesced = 0

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the socket."""
        return self._queued_bytes

    def push(self, text: str, key: bytes = b"", message: dict | None = None) -> None:
        """Send a text frame now if the socket keeps up, else queue it (bounded, coalescing).

        ``message`` is the ready ASGI event for ``text``; the hub builds it once per record
        and shares it between recipients (servers only read it).
        """
        if self.closed:
            return
        if self._writer is None:
            coro = self._send(message or {"type": "websocket.send", "text": text})
            try:
                first = coro.send(None)
            except StopIteration:
                return
            except Exception:  # the socket is gone; the consumer's disconnect cleans up
                self.closed = True
                return
            self._writer = asyncio.ensure_future(self._finish(_Resumed(coro, first)))
            return
        if self._queue is None:
            self._queue, self._keyed = deque(), {}
        if key:
            previous = self._keyed.get(key)
            if previous is not None and previous[0] is not None:
                self._queued_bytes -= len(previous[0])
                previous[0] = None
                self.coalesced += 1
        entry = [text, key]
        self._queue.append(entry)
        if key:
            self._keyed[key] = entry
        self._queued_bytes += len(text)
        if self._queued_bytes > self.limit:
            self.close()
            self.on_overflow()

    async def _finish(self, pending: _Resumed) -> None:
        try:
            await pending
            while self._queue and not self.closed:
                text, key = self._queue.popleft()
                if key and self._keyed.get(key) is not None and self._keyed[key][0] is text:
                    del self._keyed[key]
                if text is None:
                    continue
                self._queued_bytes -= len(text)
                await self._send({"type": "websocket.send", "text": text})
        except Exception:
            self.closed = True
        finally:
            self._writer = None
            if not self._queue:  # drained: back to what an idle socket holds
                self._queue = self._keyed = None

    def close(self) -> None:
        """Drop what is queued and refuse further frames."""
        self.closed = True
        self._queue = self._keyed = None
        self._queued_bytes = 0
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()


class Subscriber(Protocol):
    """What the hub needs of a connection (a session, ``realtime.core.session``: a socket's or an HTTP request's)."""

    connection_id: str
    user_key: bytes
    held: list | None  # frames held while a welcome or recovery is sent; None: deliver at once
    outbox: Outbox
    subscribed: set[str]  # every channel it joined (or is joining) through the hub

    def deliver(self, channel: str, offset: int, text: str, key: bytes, message: dict) -> None: ...
    def close_soon(self, code: int, reason: str) -> None: ...


def audience_allows(audience: bytes, user_key: bytes) -> bool:
    """Whether a record's audience rule lets a user receive it (see ``realtime.storage.streams``)."""
    if not audience:
        return True
    listed = user_key in audience[1:].split(b",")
    return listed if audience[:1] == b"+" else not listed


class Hub(StartOnce):
    """Channel subscriptions of the connections of one process, owned by its node (``realtime.fanout.node``)."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[Subscriber, None]] = {}
        self.connections: dict[str, Subscriber] = {}
        # Last delivered position per channel, to de-duplicate and to fill gaps after reconnects.
        self.positions: dict[str, tuple[str, int]] = {}
        self._pubsub: Any = None
        self._client: Any = None
        self._confirmations: dict[str, asyncio.Future] = {}
        self._subscribe_queue: list[str] = []
        self._reader: asyncio.Task | None = None
        self._prefix = streams.pubsub_prefix()
        self._prefix_len = len(self._prefix)

    # -------------------------------------------------------------- lifecycle


    async def _start(self) -> None:
        """Open the pub/sub connection and start the reader (``start`` runs this once)."""
        if rt_redis.is_cluster():  # SSUBSCRIBE, each channel on the node of its slot
            self._pubsub = rt_redis.sharded_pubsub(self._prefix)
        else:
            self._client = rt_redis.new_async_connection_client()
            self._pubsub = self._client.pubsub()
        # A channel of its own keeps the pub/sub connection open while no socket is subscribed.
        await self._pubsub.subscribe(self._prefix + "__hub__")
        # Fresh contexts: these tasks serve every socket, not the one whose connect started them.
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read_forever(), context=contextvars.Context())
        self._reader.add_done_callback(_log_if_crashed)

    async def stop(self) -> None:
        """Stop the reader and close the pub/sub connection (the node's ``stop``); a later
        ``start`` opens a new one."""
        self._forget_start()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None:
            await client.aclose()

    # -------------------------------------------------------------- membership

    def register(self, conn: Subscriber) -> None:
        """Track a live connection of this process."""
        self.connections[conn.connection_id] = conn

    async def unregister(self, conn: Subscriber) -> None:
        """Forget a connection and leave all its channels (those it lists: a scan of every
        channel per socket would make a mass disconnect quadratic)."""
        self.connections.pop(conn.connection_id, None)
        for channel in list(conn.subscribed):
            if conn in self.channels.get(channel, ()):
                await self.leave(conn, channel)

    async def join(self, conn: Subscriber, channel: str) -> None:
        """Subscribe a connection; returns once Redis confirmed the process's subscription."""
        await self.join_many(conn, (channel,))

    async def join_many(self, conn: Subscriber, channels: tuple[str, ...] | list[str]) -> None:
        """Subscribe a connection to several channels; one SUBSCRIBE for those new to the process."""
        pending = self.join_soon(conn, channels)
        try:
            # shield: a socket giving up must not cancel a confirmation others wait for. The
            # wait is bounded by the batch's own timer (``_flush_subscribes``).
            for confirmation in pending:
                await asyncio.shield(confirmation)
        except BaseException:
            self.drop(conn, channels)
            raise

    def join_soon(self, conn: Subscriber, channels: tuple[str, ...] | list[str]) -> list[asyncio.Future]:
        """Add a connection to channels now; returns the confirmations it must wait for before
        reading their positions: Redis's, of the SUBSCRIBE of channels new to the process."""
        new: list[str] = []
        pending: list[asyncio.Future] = []
        for channel in channels:
            subs = self.channels.get(channel)
            if subs is not None:
                subs[conn] = None
                confirmation = self._confirmations.get(channel)
                if confirmation is not None:
                    pending.append(confirmation)
                continue
            self.channels[channel] = {conn: None}
            self._confirmations[channel] = confirmation = asyncio.get_running_loop().create_future()
            pending.append(confirmation)
            new.append(channel)
        if new:
            self._queue_subscribe(new)
        return pending

    def drop(self, conn: Subscriber, channels: tuple[str, ...] | list[str]) -> None:
        """Undo ``join_soon`` for a connection whose join failed (the process stays subscribed)."""
        for channel in channels:
            subs = self.channels.get(channel, {})
            subs.pop(conn, None)
            if not subs:
                self.channels.pop(channel, None)

    def _queue_subscribe(self, channels: list[str]) -> None:
        # Sockets connecting in the same moment share one SUBSCRIBE command: a connect storm
        # would otherwise send one per socket.
        if not self._subscribe_queue:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush_subscribes()))
        self._subscribe_queue.extend(channels)

    async def _flush_subscribes(self) -> None:
        channels, self._subscribe_queue = self._subscribe_queue, []
        waiting = [(channel, self._confirmations.get(channel)) for channel in channels]
        asyncio.get_running_loop().call_later(SUBSCRIBE_TIMEOUT_S, self._settle, waiting, None)
        try:
            await self._pubsub.subscribe(*(self._prefix + channel for channel in channels))
        except Exception as exc:  # the joins waiting on these confirmations fail with it
            self._settle([(channel, self._confirmations.get(channel)) for channel in channels], exc)

    def _settle(self, waiting: list[tuple[str, asyncio.Future | None]], exc: BaseException | None) -> None:
        """Fail the joins still waiting on these confirmations: with ``exc``, or (the batch's
        timer, ``SUBSCRIBE_TIMEOUT_S`` after its SUBSCRIBE) with a timeout."""
        for channel, confirmation in waiting:
            if confirmation is None or confirmation.done():
                continue
            if self._confirmations.get(channel) is confirmation:
                del self._confirmations[channel]
            confirmation.set_exception(exc or TimeoutError(f"Redis did not confirm the subscription to {channel}"))

    async def leave(self, conn: Subscriber, channel: str) -> None:
        """Unsubscribe a connection; the process unsubscribes from Redis when none is left."""
        subs = self.channels.get(channel)
        if subs is None:
            return
        subs.pop(conn, None)
        if not subs:
            del self.channels[channel]
            self.positions.pop(channel, None)
            try:
                await self._pubsub.unsubscribe(self._prefix + channel)
            except RedisError:
                metrics.REDIS_ERRORS.labels("hub").inc()

    # -------------------------------------------------------------- fan-out

    def dispatch(self, channel: str, raw: bytes) -> None:
        """Deliver one record to every local subscriber of its channel (the hot path)."""
        offset_b, epoch_b, audience, key, body = raw.split(b"\t", 4)
        offset = int(offset_b)
        epoch = epoch_b.decode()
        if not body:
            self.epoch_changed(channel, epoch, offset)
            return
        last = self.positions.get(channel)
        if last is not None and last[0] == epoch and offset <= last[1]:
            return  # already delivered (a replay after reconnect overlapped the live stream)
        self.positions[channel] = (epoch, offset)
        subs = self.channels.get(channel)
        if not subs:
            return
        started = perf_counter()
        text = body.decode()
        if key:
            # Coalescing is per channel and key: the copies of one update on two channels
            # (``team:`` and ``execution:``) must not replace each other in a socket that
            # follows both, or one channel would never see the final state.
            key = channel.encode() + b"\t" + key
        if audience:
            targets = [c for c in subs if audience_allows(audience, c.user_key)]
        else:
            targets = list(subs)
        message = {"type": "websocket.send", "text": text}
        for conn in targets:
            if conn.held is None:  # what ``deliver`` would do, inlined: one call less per delivery
                conn.outbox.push(text, key, message)
            else:
                conn.deliver(channel, offset, text, key, message)
        _DELIVERED_INC(len(targets))
        _FANOUT_OBSERVE(perf_counter() - started)

    def epoch_changed(self, channel: str, epoch: str, offset: int) -> None:
        """A channel got a new epoch because some of its events were discarded (``ROTATE_LUA``):
        its local sockets are closed with 1012, so their clients resubscribe and resync."""
        last = self.positions.get(channel)
        if last is not None and last[0] == epoch:
            return
        self.positions[channel] = (epoch, offset)
        for conn in list(self.channels.get(channel, ())):
            conn.close_soon(1012, "events lost; resubscribe and resync")

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=None)
                backoff = 0.05
            except (RedisError, OSError) as exc:
                metrics.REDIS_ERRORS.labels("hub").inc()
                logger.warning("hub lost its Redis subscription: %s; reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                await self._reconnect()
                continue
            except asyncio.CancelledError:
                raise
            if message is None or message["channel"] is None:  # e.g. the pong of _reconnect's ping
                continue
            kind = message["type"]
            name = message["channel"].decode()
            if not name.startswith(self._prefix):
                continue
            channel = name[self._prefix_len:]
            if kind == "message":
                _RECEIVED_INC()
                try:
                    self.dispatch(channel, message["data"])
                except Exception:  # one bad record must not stop the process's fan-out
                    logger.exception("dispatch failed on channel %s", channel)
            elif kind == "subscribe":
                confirmation = self._confirmations.pop(channel, None)
                if confirmation is not None:
                    if not confirmation.done():
                        confirmation.set_result(None)
                elif channel in self.positions:
                    # redis-py re-subscribed after a reconnect (its own retry or ours): fill
                    # the gap from history now that live messages flow again.
                    asyncio.ensure_future(self._fill_gap(channel))

    async def _reconnect(self) -> None:
        try:
            # Reconnecting re-subscribes every channel of the PubSub object; each confirmation
            # then triggers _fill_gap for that channel.
            await self._pubsub.ping()
        except (RedisError, OSError):
            return

    def note_position(self, channel: str, epoch: str, offset: int) -> None:
        """Remember a channel's position read right after joining, so a gap is detectable
        even before the first live message arrives."""
        self.positions.setdefault(channel, (epoch, offset))

    async def _fill_gap(self, channel: str) -> None:
        """Replay from history what local subscribers of a channel missed while the
        subscription was down; where history cannot fill it, make them resubscribe (1012)."""
        position = self.positions.get(channel)
        if position is None:
            return
        epoch, offset = position
        try:
            script = rt_redis.async_script(streams.READ_LUA)
            result = streams.parse_read(await script(*streams.read_args(channel, offset)))
        except RedisError:
            metrics.REDIS_ERRORS.labels("hub").inc()
            records = None
        else:
            records = streams.recover(result, epoch, offset)
        if records is None:
            logger.warning("gap on %s cannot be filled from history; closing its sockets with 1012", channel)
            for conn in list(self.channels.get(channel, ())):
                conn.close_soon(1012, "history lost; resubscribe and resync")
            return
        for record in records:
            self.dispatch(channel, record.raw)


def _log_if_crashed(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.critical("the hub's Redis reader stopped: %r; this process no longer delivers", task.exception())


# Seconds a join waits for Redis to confirm a new subscription.
SUBSCRIBE_TIMEOUT_S = 10


async def get_hub() -> Hub:
    """The hub of the running event loop's node (``realtime.fanout.node``), started on first use."""
    from realtime.fanout.node import get_node  # the node owns the hub: imported when first asked for

    return (await get_node()).hub
