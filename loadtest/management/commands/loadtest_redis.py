"""Measure what the capacity model (docs/scaling.md) needs of Redis, on a Redis of the run's own.

    python manage.py loadtest_redis --redis-url redis://127.0.0.1:23790/0

1. Pub/sub fan-out: Redis CPU per PUBLISH of a 400-byte record with 1, 10, 50 and 100
   subscribed connections (each stands for one server process subscribed to the channel, as
   for ``broadcast``). Subscribers are raw sockets that read and discard, so the client side
   never holds Redis back.
2. Redis CPU per message of the publish script when pipelined as the relay sends (the cost
   per message when Redis is busy, without the per-command network round trip).
3. Memory: a channel's history and meta after HISTORY_SIZE notification-sized messages
   published with the real publish script, and the registry's keys per connection after
   registering 1,000 connections with the real registry code.

Redis CPU is the process's (INFO cpu), over the whole Redis: use a Redis nobody else uses. The
keys written are under a prefix of this run's own and are deleted at the end.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from realtime.conf import setting
from realtime.relay import PIPELINE_SIZE
from realtime.storage import redis as rt_redis
from realtime.storage import registry, streams


class Command(BaseCommand):
    """Pub/sub fan-out cost and memory per history entry and per connection, on a private Redis."""

    help = "Measure Redis CPU per PUBLISH by subscriber count, and memory per history entry and per connection."

    def add_arguments(self, parser) -> None:  # noqa: ANN001 - argparse parser
        parser.add_argument("--redis-url", required=True, help="a Redis of this run's own (one server)")
        parser.add_argument("--messages", type=int, default=20000, help="PUBLISH commands per subscriber count")

    def handle(self, *args, **o) -> None:
        """Measure and print a markdown table."""
        url = o["redis_url"]
        if not url.startswith(("redis://", "unix://")):
            raise CommandError("--redis-url must name one Redis server (redis:// or unix://)")
        client = redis.Redis.from_url(url)
        self.stdout.write("| subscribed connections | Redis CPU per PUBLISH | per subscriber |")
        self.stdout.write("|---|---|---|")
        base = None
        for subscribers in (1, 10, 50, 100):
            usec = _fanout(client, url, subscribers, o["messages"])
            base = usec if base is None else base
            per = (usec - base) / (subscribers - 1) if subscribers > 1 else 0.0
            self.stdout.write(f"| {subscribers} | {usec:.2f} us | {per:.3f} us |" if subscribers > 1
                              else f"| {subscribers} | {usec:.2f} us | - |")
        prefix = f"capacity{uuid.uuid4().hex[:8]}:rt"
        realtime = {**getattr(settings, "RENUM_REALTIME", {}), "KEY_PREFIX": prefix}
        with override_settings(REDIS_URL=url, RENUM_REALTIME=realtime):
            rt_redis.reset()
            try:
                pipelined = _script_cpu(client, o["messages"])
                history, meta, size = _history_memory(client)
                per_connection = asyncio.run(_registry_memory(client))
            finally:
                for key in client.scan_iter(match=f"{prefix}*", count=1000):
                    client.delete(key)
                rt_redis.reset()
        self.stdout.write("")
        self.stdout.write(f"- Redis CPU per message published by the publish script in pipelines of "
                          f"{PIPELINE_SIZE} (as the relay sends), 1,000 channels, no subscriber: {pipelined:.1f} us")
        self.stdout.write(f"- history of one channel after {size} notification-sized messages: "
                          f"{history / 1024:.0f} KB ({history / size:.0f} bytes per message); meta hash {meta} bytes")
        self.stdout.write(f"- registry per connection (process hash entry + user set): {per_connection:.0f} bytes")


def _cpu_us(client: redis.Redis) -> float:
    info = client.info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6


def _fanout(client: redis.Redis, url: str, subscribers: int, messages: int) -> float:
    """Redis CPU (us) per PUBLISH with ``subscribers`` raw subscriber connections."""
    kwargs = client.connection_pool.connection_kwargs
    channel = f"capacity:{uuid.uuid4().hex}"
    record = b"x" * 400
    # What each subscriber receives per message (RESP2 push: message, channel, data).
    frame = (b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
             % (len(channel), channel.encode(), len(record), record))
    sockets, received, done = [], [0] * subscribers, threading.Event()
    for index in range(subscribers):
        sock = socket.create_connection((kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)))
        if kwargs.get("password"):
            sock.sendall(b"AUTH %s\r\n" % kwargs["password"].encode())
            sock.recv(64)
        sock.sendall(b"SUBSCRIBE %s\r\n" % channel.encode())
        confirmation = b""
        while confirmation.count(b"\r\n") < 6:
            confirmation += sock.recv(256)
        sockets.append(sock)
        threading.Thread(target=_drain, args=(sock, received, index, len(frame) * messages, done),
                         daemon=True).start()
    try:
        before = _cpu_us(client)
        pipe = client.pipeline(transaction=False)
        for n in range(messages):
            pipe.publish(channel, record)
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
        deadline = time.monotonic() + 120
        while min(received) < len(frame) * messages and time.monotonic() < deadline:
            time.sleep(0.05)
        if min(received) < len(frame) * messages:
            raise CommandError(f"subscribers did not receive every message ({min(received)} bytes)")
        return (_cpu_us(client) - before) / messages
    finally:
        done.set()
        for sock in sockets:
            sock.close()


def _drain(sock: socket.socket, received: list[int], index: int, total: int, done: threading.Event) -> None:
    try:
        while received[index] < total and not done.is_set():
            data = sock.recv(1 << 20)
            if not data:
                return
            received[index] += len(data)
    except OSError:
        return


def _script_cpu(client: redis.Redis, messages: int) -> float:
    """Redis CPU (us) per message of the publish script, pipelined as the relay sends them."""
    from realtime.relay import publish_pipelined
    from realtime.schemas import envelope_parts

    items = []
    for n in range(messages):
        channel = f"user:{n % 1000}"
        head, tail = envelope_parts(channel=channel, message_type="system_event", payload={"n": n, "pad": "x" * 300},
                                    sender="system")
        items.append(streams.publish_args(channel, head, tail, "", "", f"capacity:{n}"))
    publish_pipelined(rt_redis.sync_client(), items[:100])  # loads the script, warms the connection
    before = _cpu_us(client)
    publish_pipelined(rt_redis.sync_client(), items[100:])
    return (_cpu_us(client) - before) / (messages - 100)


def _history_memory(client: redis.Redis) -> tuple[int, int, int]:
    """Bytes of one channel's history and meta after HISTORY_SIZE notification-sized publishes."""
    from realtime.publish import publish_rollback_unsafe

    size = setting("HISTORY_SIZE")
    payload = {"id": str(uuid.uuid4()), "user_id": "123456", "type": "info", "title": "Execution finished",
               "message": "Your agent team finished the run you started; open it to see the report.",
               "read": False, "created_at": "2026-11-29T23:00:00.000000Z", "action": None}
    for _ in range(size):
        if publish_rollback_unsafe("user:123456", "system_event", payload) is None:
            raise CommandError("publishing failed")
    return (int(client.memory_usage(streams.history_key("user:123456"), samples=0)),
            int(client.memory_usage(streams.meta_key("user:123456"), samples=0)), size)


async def _registry_memory(client: redis.Redis) -> float:
    """Bytes per connection of the registry (process hash entry and a user set of one)."""
    count = 1000
    entries: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    for n in range(count):
        entry = {"connection_id": uuid.uuid4().hex, "user_id": str(100000 + n), "username": f"user{100000 + n}",
                 "ip": "10.1.2.3", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", "client_id": "",
                 "auth": "jwt", "connected_at": time.time(), "last_activity": time.time(),
                 "channels": [f"user:{100000 + n}", "broadcast"], "channel_name": "rtcontrol.abcdef0123456789"}
        entries.append((entry, ()))
    await registry.add_many(entries)
    used = int(client.memory_usage(registry.proc_key(), samples=0))
    used += sum(int(client.memory_usage(registry.user_key(e["user_id"]), samples=0)) for e, _ in entries)
    return used / count
