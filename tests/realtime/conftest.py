"""Fixtures of the realtime tests that point this process at a Redis of the test's own."""

from __future__ import annotations

import pytest

from tests.redis_servers import reset_realtime_clients


@pytest.fixture
def use_redis(settings):
    """``use_redis(url)`` points this process's realtime clients (the publisher) at another Redis."""
    original = settings.REDIS_URL

    def point(url: str) -> None:
        settings.REDIS_URL = url
        reset_realtime_clients()

    yield point
    point(original)
