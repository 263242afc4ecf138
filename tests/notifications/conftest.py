"""Fixtures of the notifications tests: what a user's channel holds in the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.conftest import read_history


def channel_events(user: Any) -> list[dict[str, Any]]:
    """Every envelope stored in the history of ``user:<id>``, oldest first."""
    return [orjson.loads(record.body) for record in read_history(f"user:{user.pk}")]


@pytest.fixture
def events() -> Callable[[Any], list[dict[str, Any]]]:
    """``events(user)``: the user's channel history as ``(type, payload)`` pairs."""

    def read(user: Any) -> list[tuple[str, Any]]:
        return [(event["type"], event["payload"]) for event in channel_events(user)]

    return read


