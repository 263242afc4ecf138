"""The HTTP side of the attack matrix: who may get a ticket, who may publish, and the DRF throttles.

Throttles are checked against real server processes (two of them, sharing the Redis cache), with
low rates set through their environment: API_THROTTLE_USER=5/min, API_THROTTLE_ANON=3/min.
"""

from __future__ import annotations

import asyncio
import http.client
from datetime import timedelta
from typing import Any

import jwt
import orjson
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from realtime.core import auth
from realtime.storage import redis as rt_redis
from realtime.storage import streams
from tests.conftest import access_token_for
from tests.live import LiveServer

pytestmark = pytest.mark.django_db(transaction=True)

USER_RATE, ANON_RATE = 5, 3


def bearer(token: str) -> APIClient:
    """A DRF test client presenting ``Authorization: Bearer <token>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def crafted(case: str, user: Any) -> str:
    """Tokens that must not authenticate a REST call."""
    claims = dict(AccessToken.for_user(user).payload)
    if case == "refresh_as_access":
        return str(RefreshToken.for_user(user))
    if case == "alg_none":
        return jwt.encode(claims, None, algorithm="none")
    if case == "forged_signature":
        return jwt.encode(claims, "an-attackers-own-secret-of-32-bytes-or-more", algorithm="HS256")
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    return str(token)


# ------------------------------------------------------------------ tickets


@pytest.mark.parametrize("case", ["refresh_as_access", "alg_none", "forged_signature", "expired"])
def test_ticket_endpoint_refuses_tokens_that_are_not_a_valid_access_token(user, case):
    response = bearer(crafted(case, user)).post("/api/realtime/ticket/")

    assert response.status_code == 401
    assert "ticket" not in response.json()
    assert list(rt_redis.sync_client().scan_iter(match=auth.ticket_key("*"))) == []


def test_ticket_endpoint_refuses_an_inactive_user_and_a_service_key(user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["svc-key-1"]}
    token = access_token_for(user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    service = APIClient()
    service.credentials(HTTP_AUTHORIZATION="ApiKey svc-key-1")

    assert bearer(token).post("/api/realtime/ticket/").status_code == 401
    assert service.post("/api/realtime/ticket/").status_code == 401


def test_a_ticket_is_bound_to_the_requesting_user_and_short_lived(auth_client, user):
    response = auth_client.post("/api/realtime/ticket/")
    ticket = response.json()["ticket"]
    key = auth.ticket_key(ticket)

    assert response.status_code == 201
    assert rt_redis.sync_client().get(key) == str(user.pk).encode()
    assert 0 < rt_redis.sync_client().ttl(key) <= auth.TICKET_TTL_S
    assert len(ticket) >= 40  # 32 random bytes, URL-safe: not guessable
    assert auth_client.get("/api/realtime/ticket/").status_code == 405


# ------------------------------------------------------------------ service publishing


def test_publish_endpoint_refuses_every_user_credential(make_user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": ["svc-key-1"]}
    staff = make_user(is_staff=True, is_superuser=True)
    body = {"channel": "broadcast", "type": "system_event", "payload": {"forged": True}}
    session = APIClient()
    session.force_login(staff)
    attempts = {
        "user JWT": bearer(access_token_for(make_user())),
        "superuser JWT": bearer(access_token_for(staff)),
        "superuser session": session,
        "right key, Bearer scheme": bearer("svc-key-1"),
        "prefix of the key": APIClient(HTTP_AUTHORIZATION="ApiKey svc-key"),
        "empty key": APIClient(HTTP_AUTHORIZATION="ApiKey "),
    }

    statuses = {name: client.post("/api/realtime/publish/", body, format="json") for name, client in attempts.items()}

    assert {name: r.status_code for name, r in statuses.items()} == dict.fromkeys(attempts, 401)
    assert statuses["user JWT"]["WWW-Authenticate"] == "ApiKey"
    assert rt_redis.sync_client().xlen(streams.history_key("broadcast")) == 0  # nothing was published


def test_publish_endpoint_without_configured_keys_refuses_everyone(api_client, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": []}

    response = api_client.post("/api/realtime/publish/", {"channel": "broadcast", "type": "t", "payload": {}},
                               format="json", HTTP_AUTHORIZATION="ApiKey ")

    assert response.status_code == 401


@pytest.mark.usefixtures("close_thread_connections")
async def test_http_transports_refuse_a_refresh_token(user):
    from tests.realtime.test_transports import call

    token = await sync_to_async(crafted)("refresh_as_access", user)
    events = await call("GET", "/api/realtime/events/", token=token, query=f"channel=user:{user.pk}")
    polled = await call("POST", "/api/realtime/poll/", token=token, body={"channels": {f"user:{user.pk}": None}})
    streamed = await call("GET", "/api/realtime/sse/", token=token, query=f"channel=user:{user.pk}",
                          content_type=None)

    assert [events.status, polled.status, streamed.status] == [401, 401, 401]
    assert all("invalid token" in r.json()["detail"] for r in (events, polled, streamed))


# ------------------------------------------------------------------ throttles (live)




@pytest.fixture(scope="module")
def throttled_servers(django_db_setup):
    """Two server processes with low DRF throttle rates, sharing the test Redis cache."""
    env = {"API_THROTTLE_USER": f"{USER_RATE}/min", "API_THROTTLE_ANON": f"{ANON_RATE}/min"}
    with LiveServer(**env) as first, LiveServer(**env) as second:
        yield first, second


def _request(server: LiveServer, method: str, path: str, *, headers: dict[str, str] | None = None,
             body: bytes | None = None, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def call(server: LiveServer, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to a live server, off the event loop."""
    return await asyncio.to_thread(_request, server, method, path, **kwargs)


@pytest.mark.live
async def test_user_throttle_answers_429_across_processes(throttled_servers, make_user, close_thread_connections):
    first, second = throttled_servers
    greedy, other = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    headers = {"Authorization": f"Bearer {access_token_for(greedy)}"}

    statuses = [(await call(server, "POST", "/api/realtime/ticket/", headers=headers))
                for server in [first, second] * 4]
    other_status = (await call(first, "POST", "/api/realtime/ticket/",
                               headers={"Authorization": f"Bearer {access_token_for(other)}"}))[0]

    assert [s for s, _, _ in statuses] == [201] * USER_RATE + [429] * (8 - USER_RATE)
    throttled = statuses[USER_RATE]
    assert 0 < int(throttled[1]["retry-after"]) <= 60
    assert "throttled" in orjson.loads(throttled[2])["detail"].lower()
    assert other_status == 201  # the limit is per user


def _login_body() -> bytes:
    return orjson.dumps({"username": "nobody", "password": "wrong-password"})


@pytest.mark.live
async def test_login_brute_force_is_throttled_per_address(throttled_servers):
    first, second = throttled_servers

    statuses = [(await call(server, "POST", "/api/auth/token/", body=_login_body()))[0]
                for server in [first, second, first, second, first]]

    assert statuses == [401] * ANON_RATE + [429] * (5 - ANON_RATE)


@pytest.mark.live
async def test_rotating_x_forwarded_for_does_not_escape_the_anonymous_throttle(throttled_servers):
    first, _ = throttled_servers

    # From 127.0.0.2, which uvicorn does not trust as a proxy: its X-Forwarded-For is the client's own claim.
    statuses = [(await call(first, "POST", "/api/auth/token/", body=_login_body(), source="127.0.0.2",
                            headers={"X-Forwarded-For": f"10.0.0.{n}"}))[0] for n in range(ANON_RATE + 2)]

    assert statuses == [401] * ANON_RATE + [429] * 2

