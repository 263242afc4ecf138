"""The publisher process: publishes at a target rate, each server in its own way, with a timestamp.

Run by the orchestrator as ``python -m loadtest.publisher '<json config>'`` with the server's
environment. It prints ``ready``, waits for ``go`` on stdin, publishes ``rate x duration``
messages paced on a fixed schedule (falling behind is caught up, and shows in the achieved
rate), then prints one JSON line with what it did.

Modes: ``ours`` (``realtime.publish.publish_rollback_unsafe``: the Lua publish with offsets
and history), ``notify`` (``notifications.services.notification_create``: a PostgreSQL row,
then publish on commit), ``bare`` (raw Redis PUBLISH of a ready envelope) and ``textbook``
(``channel_layer.group_send``), ``pysio`` (python-socketio's write-only ``RedisManager``;
the Node.js server has its own publisher, ``reference_node/publisher.js``). Every payload
carries ``t``: ``time.time()`` just before the publishing call, ``seq`` and ``run`` (the run
id, so clients ignore anyone else's messages).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def _envelope(channel: str, offset: int, payload: dict) -> dict[str, Any]:
    """The protocol's envelope, for the reference servers (ours builds its own)."""
    return {"type": "system_event", "channel": channel, "offset": offset, "epoch": "loadtest",
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sender": "system", "payload": payload}


def _paced_threads(total: int, rate: float, threads: int, publish: Callable[[int], bool],
                   setup: Callable[[], None] | None = None, teardown: Callable[[], None] | None = None) -> dict:
    """Call ``publish(i)`` for i in range(total), message i not before start + i/rate, from N threads."""
    counter = itertools.count()
    failed = [0]
    lock = threading.Lock()
    start = time.perf_counter()

    def run() -> None:
        if setup:
            setup()
        try:
            while True:
                i = next(counter)
                if i >= total:
                    return
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if not publish(i):
                    with lock:
                        failed[0] += 1
        finally:
            if teardown:
                teardown()

    pool = [threading.Thread(target=run, daemon=True) for _ in range(max(1, threads))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"published": total - failed[0], "failed": failed[0], "elapsed": time.perf_counter() - start}


def _prepare_ours(config: dict) -> Callable[[], dict]:
    run = config["run"]
    import django

    django.setup()
    from realtime.publish import publish_rollback_unsafe

    targets = config["targets"]

    def publish(i: int) -> bool:
        channel = targets[i % len(targets)]
        return publish_rollback_unsafe(channel, "system_event", {"t": time.time(), "seq": i, "run": run}) is not None

    return lambda: _paced_threads(config["total"], config["rate"], config["threads"], publish)


# The action type of every notification the notify mode creates: what the next run deletes.
NOTIFY_ACTION = "loadtest"


def _forget_earlier_runs() -> None:
    """Delete the notifications earlier runs created, and vacuum, before this run is timed.

    The load database is the load tool's own, but its notifications used to pile up run after
    run (hundreds of thousands of rows), so each run's inserts and unread counts worked on a
    bigger table than the last, and the notify rate fell run to run.
    """
    from django.db import connection

    from notifications.models import Notification

    Notification.objects.filter(action__type=NOTIFY_ACTION).delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {Notification._meta.db_table}")


def _prepare_notify(config: dict) -> Callable[[], dict]:
    run = config["run"]
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from notifications.services import notification_create
    from realtime.relay import relay

    user_model = get_user_model()
    users = [user_model(pk=uid) for uid in config["targets"]]
    _forget_earlier_runs()

    def publish(i: int) -> bool:
        try:
            notification_create(user=users[i % len(users)], type="info", title=f"loadtest {i}", message="",
                                action={"type": NOTIFY_ACTION, "payload": {"t": time.time(), "seq": i, "run": run}})
        except Exception:  # e.g. the database refused the connection: counted, not fatal to the thread
            connections.close_all()
            return False
        return True

    def publish_all() -> dict:
        result = _paced_threads(config["total"], config["rate"], config["threads"], publish,
                                teardown=connections.close_all)
        # As a service process would, the publisher lives on until its relay has delivered
        # what it committed (and deleted the rows): a process killed before that leaves rows
        # that another process's relay takes over only when their lease runs out, which the
        # run would count as 30 s late deliveries.
        result["relay_drained"] = relay().drain(timeout=30.0)
        return result

    return publish_all


def _prepare_bare(config: dict) -> Callable[[], dict]:
    run = config["run"]
    import orjson
    import redis

    client = redis.Redis.from_url(config["redis_url"])
    targets = config["targets"]
    prefix = config["bare_prefix"]

    def publish(i: int) -> bool:
        channel = targets[i % len(targets)]
        body = orjson.dumps(_envelope(channel, i + 1, {"t": time.time(), "seq": i, "run": run}))
        client.publish(prefix + channel, body)
        return True

    client.ping()
    return lambda: _paced_threads(config["total"], config["rate"], config["threads"], publish)


def _prepare_textbook(config: dict) -> Callable[[], dict]:
    run = config["run"]
    import django

    django.setup()
    from channels.layers import get_channel_layer

    async def main() -> dict:
        layer = get_channel_layer()
        targets, total, rate = config["targets"], config["total"], config["rate"]
        failed = 0
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group = targets[i % len(targets)]
            payload = {"t": time.time(), "seq": i, "run": run}
            try:
                await layer.group_send(group, {"type": "lt.message", "message": _envelope(group, i + 1, payload)})
            except Exception:
                failed += 1
        return {"published": total - failed, "failed": failed, "elapsed": time.perf_counter() - start}

    return lambda: asyncio.run(main())


def _prepare_pysio(config: dict) -> Callable[[], dict]:
    """python-socketio's write-only Redis manager: the way to emit to its servers from another process."""
    run = config["run"]
    import socketio

    manager = socketio.RedisManager(config["redis_url"], channel=config["key"], write_only=True)
    targets = config["targets"]

    def publish(i: int) -> bool:
        target = targets[i % len(targets)]
        message = _envelope(target, i + 1, {"t": time.time(), "seq": i, "run": run})
        manager.emit("system_event", message, namespace="/", room=None if target == "broadcast" else target)
        return True

    return lambda: _paced_threads(config["total"], config["rate"], config["threads"], publish)


PREPARE = {"ours": _prepare_ours, "notify": _prepare_notify, "bare": _prepare_bare, "textbook": _prepare_textbook,
           "pysio": _prepare_pysio}


def main() -> None:
    """Entry point: ready, wait for go, publish, report."""
    config = json.loads(sys.argv[1])
    config["total"] = int(config["rate"] * config["duration"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")
    runner = PREPARE[config["mode"]](config)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    started, cpu_started = time.time(), time.process_time()
    result = runner()
    result["cpu_s"] = time.process_time() - cpu_started
    result["started"] = started
    result["rate_achieved"] = result["published"] / result["elapsed"] if result["elapsed"] else 0.0
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
