"""realtime.core.auth: who is connecting (subprotocol bearer, ticket, path token, session) and from where."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from realtime.core import auth
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)


def scope(**fields) -> dict:
    return {"type": "websocket", "path": "/ws/", "headers": [], "query_string": b"", "subprotocols": [], **fields}


def with_origin(origin: str | None) -> dict:
    return scope(headers=[(b"origin", origin.encode())] if origin is not None else [])


async def test_a_bearer_subprotocol_authenticates_with_the_token_s_expiry(user):
    identity = await auth.authenticate(scope(subprotocols=["renum.v1", "bearer." + access_token_for(user)]))

    assert (identity.user.pk, identity.method, identity.user_id) == (user.pk, "subprotocol", str(user.pk))
    assert identity.expires_at is not None


async def test_a_bearer_token_of_an_inactive_user_is_refused(user):
    token = access_token_for(user)
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)

    with pytest.raises(auth.AuthFailure, match="unknown or inactive user"):
        await auth.authenticate(scope(subprotocols=["bearer." + token]))


async def test_a_bad_token_is_refused_with_the_reason():
    with pytest.raises(auth.AuthFailure, match="invalid token"):
        await auth.authenticate(scope(subprotocols=["bearer.not-a-jwt"]))


async def test_a_ticket_works_once_even_when_two_sockets_race_with_it(user):
    ticket, ttl = await sync_to_async(auth.ticket_issue)(user=user)
    assert ttl == auth.TICKET_TTL_S

    outcomes = await asyncio.gather(
        *(auth.authenticate(scope(query_string=f"ticket={ticket}".encode())) for _ in range(2)),
        return_exceptions=True)

    identities = [o for o in outcomes if isinstance(o, auth.Identity)]
    refusals = [o for o in outcomes if isinstance(o, auth.AuthFailure)]
    assert len(identities) == 1 and len(refusals) == 1
    assert identities[0].method == "ticket" and identities[0].user.pk == user.pk
    assert "already used" in str(refusals[0])


async def test_a_token_in_the_path_authenticates(user):
    identity = await auth.authenticate(scope(url_route={"kwargs": {"token": access_token_for(user)}}))
    assert identity.method == "path"


async def test_no_credentials_at_all_is_missing_credentials():
    with pytest.raises(auth.AuthFailure, match="missing credentials"):
        await auth.authenticate(scope())


async def test_the_subprotocol_bearer_wins_over_a_ticket(user, make_user):
    other = await sync_to_async(make_user)()
    ticket, _ = await sync_to_async(auth.ticket_issue)(user=other)

    identity = await auth.authenticate(scope(subprotocols=["bearer." + access_token_for(user)],
                                             query_string=f"ticket={ticket}".encode()))

    assert identity.user.pk == user.pk


async def test_a_session_cookie_gives_the_session_user_until_the_session_ends(user):
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    found = await auth.session_user(scope(headers=[(b"cookie", cookie)]))
    assert found is not None and found[0].pk == user.pk

    middleware_scope = {}

    async def inner(s, receive, send):
        middleware_scope.update(s)

    await auth.SessionAuthMiddleware(inner)(scope(headers=[(b"cookie", cookie)]), None, None)
    identity = await auth.authenticate(middleware_scope)
    assert identity.method == "session" and identity.user.pk == user.pk and identity.expires_at is not None


async def test_no_cookie_costs_no_session_lookup():
    assert await auth.session_user(scope()) is None
    seen = {}

    async def inner(s, receive, send):
        seen.update(s)

    await auth.SessionAuthMiddleware(inner)(scope(), None, None)
    assert "user" not in seen and "session" not in seen


def test_origins_by_the_allow_list_or_else_allowed_hosts(settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "ALLOWED_ORIGINS": [], "ALLOW_NO_ORIGIN": False}
    assert auth.origin_allowed(with_origin("https://app.example.com"))
    assert not auth.origin_allowed(with_origin("https://evil.example.net"))
    assert not auth.origin_allowed(with_origin("null"))
    assert not auth.origin_allowed(with_origin(None))

    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "ALLOWED_ORIGINS": ["https://front.example.com/"],
                               "ALLOW_NO_ORIGIN": True}
    assert auth.origin_allowed(with_origin("https://front.example.com"))
    assert not auth.origin_allowed(with_origin("https://app.example.com"))  # the list replaces ALLOWED_HOSTS
    assert auth.origin_allowed(with_origin(None))  # a native client, when allowed


def test_header_reads_the_first_value_decoded():
    s = scope(headers=[(b"user-agent", b"caf\xe9"), (b"user-agent", b"second")])
    assert auth.header(s, b"user-agent") == "café"
    assert auth.header(s, b"origin") is None
