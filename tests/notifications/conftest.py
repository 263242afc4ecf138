"""Fixtures of the notifications tests: what a user's channel holds in the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from realtime import redis as rt_redis
from realtime import streams


def channel_events(user: Any) -> list[dict[str, Any]]:
    """Every envelope stored in the history of ``user:<id>``, oldest first."""
    entries = rt_redis.sync_client().xrange(streams.history_key(f"user:{user.pk}"))
    return [orjson.loads(streams.Record.parse(fields[b"r"]).body) for _, fields in entries]


@pytest.fixture
def events() -> Callable[[Any], list[dict[str, Any]]]:
    """``events(user)``: the user's channel history as ``(type, payload)`` pairs."""

    def read(user: Any) -> list[tuple[str, Any]]:
        return [(event["type"], event["payload"]) for event in channel_events(user)]

    return read


