"""A database at its connection ceiling: a REST call waits briefly, then gets 503 with Retry-After."""

from __future__ import annotations

import concurrent.futures
import http.client
import time

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory
from psycopg_pool import PoolTimeout

from realtime.ops.middleware import DatabaseBusyMiddleware, is_pool_exhausted
from tests.conftest import access_token_for


def _wrapped_pool_timeout() -> OperationalError:
    # What Django raises: its OperationalError, caused by the pool's PoolTimeout.
    try:
        try:
            raise PoolTimeout("couldn't get a connection after 2.00 sec")
        except PoolTimeout as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as wrapped:
        return wrapped


def test_the_pool_timeout_becomes_503_with_retry_after():
    middleware = DatabaseBusyMiddleware(lambda request: None)
    request = RequestFactory().get("/api/notifications/unread-count/")

    response = middleware.process_exception(request, _wrapped_pool_timeout())

    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert b"retry" in response.content


def test_other_database_errors_are_left_to_django():
    middleware = DatabaseBusyMiddleware(lambda request: None)
    request = RequestFactory().get("/")

    assert middleware.process_exception(request, OperationalError("server closed the connection")) is None
    assert middleware.process_exception(request, ValueError("no")) is None
    assert is_pool_exhausted(_wrapped_pool_timeout()) and not is_pool_exhausted(OperationalError("x"))


def _unread(port: int, token: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/notifications/unread-count/", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


@pytest.mark.django_db(transaction=True)
def test_a_server_at_its_ceiling_answers_503_never_500(live_server_factory, user):
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's (DATABASE_URL=postgres://...)")
    # One pooled connection, a 50 ms wait: 40 concurrent REST calls cannot all get it in time.
    server = live_server_factory(DATABASE_POOL_MAX_SIZE="1", DATABASE_POOL_TIMEOUT_S="0.05",
                                 API_THROTTLE_USER="100000/min")
    token = access_token_for(user)
    assert _unread(server.port, token)[0] == 200
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: _unread(server.port, token), range(120)))

    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, answers
    assert all(retry == "1" for status, retry in answers if status == 503)
    assert 200 in statuses and 503 in statuses  # the ceiling held, and was felt as 503s, not 500s
    assert time.monotonic() - started < 60
