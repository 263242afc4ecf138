"""A database at its connection ceiling answers 503 with Retry-After, never 500.

Each server process has a fixed number of PostgreSQL connections (Django's psycopg pool,
``DATABASE_POOL_MAX_SIZE``; docs/operations.md). A request that finds them all busy waits
``DATABASE_POOL_TIMEOUT_S`` for one, then the pool gives up with ``PoolTimeout``, which
Django wraps in its ``OperationalError``: this middleware turns that into a 503 the client
may retry, instead of the 500 of an unhandled error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from realtime.ops import metrics

try:
    from psycopg_pool import PoolTimeout
except ImportError:  # no pool installed: nothing to translate
    PoolTimeout = None

logger = logging.getLogger("realtime.ops.middleware")
RETRY_AFTER_S = 1


def is_pool_exhausted(exc: BaseException) -> bool:
    """Whether an error is the connection pool's timeout (raw, or wrapped by Django)."""
    if PoolTimeout is None:
        return False
    seen = 0
    while exc is not None and seen < 5:  # Django's wrapper keeps the pool's error as the cause
        if isinstance(exc, PoolTimeout):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


class DatabaseBusyMiddleware:
    """Answers 503 (``Retry-After``) when a view could not get a database connection in time."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Pass the request on (the work is in ``process_exception``)."""
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A 503 for the pool's timeout; None (Django's handling) for anything else."""
        # Django raises its OperationalError, caused by the pool's PoolTimeout.
        if not isinstance(exception, OperationalError) or not is_pool_exhausted(exception):
            return None
        metrics.DATABASE_BUSY.inc()
        logger.warning("%s %s: no database connection within the pool timeout; answered 503",
                       request.method, request.path)
        response = JsonResponse({"detail": "The database is busy; retry shortly."}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
