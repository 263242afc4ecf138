"""Who is connecting: JWTs (subprotocol or path), one-time tickets, session cookies, origins.

Authentication failures are reported to the consumer, which accepts and then closes with
4001 so that a browser sees the code (a close before accept is an HTTP 403 / 1006).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import get_user as channels_get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.http.cookie import parse_cookie
from django.http.request import validate_host
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from realtime.conf import setting
from realtime.core import sessions, tokens, users
from realtime.storage import redis as rt_redis

SUBPROTOCOL = "renum.v1"
BEARER_PREFIX = "bearer."
TICKET_TTL_S = 30


class AuthFailure(Exception):
    """Credentials missing, invalid, expired, or of an inactive user (close code 4001)."""


@dataclass(frozen=True)
class Identity:
    """An authenticated socket user and until when the credentials hold."""

    user: Any
    expires_at: datetime | None
    method: str
    user_id: str = field(init=False)  # the user's id as the protocol spells it (a string)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_id", str(self.user.pk))


def header(scope: dict, name: bytes) -> str | None:
    """A request header of an ASGI scope, decoded, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict) -> bool:
    """Whether the socket's Origin is allowed (configurable; see docs/security.md)."""
    origin = header(scope, b"origin")
    if origin is None:
        return bool(setting("ALLOW_NO_ORIGIN"))
    allowed = setting("ALLOWED_ORIGINS")
    if allowed:
        return "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return validate_host(parts.hostname, settings.ALLOWED_HOSTS) or validate_host(host, settings.ALLOWED_HOSTS)


def decode_access_token(token: str) -> tuple[str, datetime]:
    """Validate a simplejwt access token; return (user id, expiry) or raise AuthFailure.

    Signature, expiry and token type are checked as for REST requests (``realtime.core.tokens``).
    """
    try:
        access = tokens.access_token(token)
    except TokenError as exc:
        raise AuthFailure(f"invalid token: {exc}") from None
    user_id = access.get(jwt_settings.USER_ID_CLAIM)
    if user_id is None:
        raise AuthFailure("invalid token: no user id")
    return str(user_id), datetime.fromtimestamp(access["exp"], tz=UTC)


async def user_from_token(token: str) -> tuple[Any, datetime]:
    """The active user of an access token and its expiry, or AuthFailure."""
    user_id, expires_at = decode_access_token(token)
    user = await users.active_user(user_id)
    if user is None:
        raise AuthFailure("unknown or inactive user")
    return user, expires_at


def ticket_key(ticket: str) -> str:
    """Redis key of a one-time connection ticket."""
    return f"{setting('KEY_PREFIX')}:ticket:{ticket}"


def ticket_issue(*, user: Any) -> tuple[str, int]:
    """Create a one-time ticket for a user; returns (ticket, seconds it is valid)."""
    ticket = secrets.token_urlsafe(32)
    rt_redis.sync_client().set(ticket_key(ticket), str(user.pk), ex=TICKET_TTL_S)
    return ticket, TICKET_TTL_S


async def redeem_ticket(ticket: str) -> Any:
    """The active user a one-time ticket was issued to; the ticket is used up."""
    # GETDEL makes the ticket single-use even when two sockets race with it.
    user_id = await rt_redis.async_client().getdel(ticket_key(ticket))
    if user_id is None:
        raise AuthFailure("invalid, expired or already used ticket")
    user = await users.active_user(user_id.decode())
    if user is None:
        raise AuthFailure("unknown or inactive user")
    return user


async def token_identity(token: str, method: str) -> Identity:
    """The identity of an access token (``method``: how the transport was given it), or AuthFailure."""
    user, expires_at = await user_from_token(token)
    return Identity(user, expires_at, method)


async def ticket_identity(ticket: str) -> Identity:
    """The identity of a one-time ticket (used up), or AuthFailure. A ticket authenticates the
    connect or the request; the session then lasts one access-token lifetime."""
    user = await redeem_ticket(ticket)
    return Identity(user, datetime.now(UTC) + jwt_settings.ACCESS_TOKEN_LIFETIME, "ticket")


def _bearer_from_subprotocols(scope: dict) -> str | None:
    for proto in scope.get("subprotocols", ()):
        if proto.startswith(BEARER_PREFIX):
            return proto[len(BEARER_PREFIX):]
    return None


async def authenticate(scope: dict) -> Identity:
    """Authenticate a socket by subprotocol bearer, ticket, path token or session, in that order."""
    token = _bearer_from_subprotocols(scope)
    if token is not None:
        return await token_identity(token, "subprotocol")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "ticket" in query:
        return await ticket_identity(query["ticket"][0])
    token = scope.get("url_route", {}).get("kwargs", {}).get("token")
    if token:
        return await token_identity(token, "path")
    session_user = scope.get("user")
    if session_user is not None and session_user.is_authenticated and session_user.is_active:
        session = scope.get("session")
        # The session's own end (its row's expire_date), not "now + SESSION_COOKIE_AGE".
        expires_at = await database_sync_to_async(sessions.expiry)(session) if session is not None else None
        return Identity(session_user, expires_at, "session")
    raise AuthFailure("missing credentials")


class SessionAuthMiddleware:
    """Sets ``scope["user"]`` and ``scope["session"]`` from the session cookie, once, at connect.

    Channels' AuthMiddlewareStack would do the same but also wrap ``send`` to save a modified
    session after every frame: a cost on every delivery that sockets never need, and a hop
    to the database thread on connects that carry no session at all.
    """

    _asgi_single_callable = True  # a hint for asgiref: called once with (scope, receive, send)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        """Resolve the session user when the cookie is there; pass everything else through.

        A plain function returning the inner application's awaitable: without a cookie no
        frame of this middleware stays suspended under the socket for its whole life.
        """
        session_key = _session_key(scope)
        if session_key:
            return self._with_session(scope, session_key, receive, send)
        return self.inner(scope, receive, send)

    async def _with_session(self, scope: dict, session_key: str, receive: Any, send: Any) -> Any:
        scope = dict(scope, session=import_module(settings.SESSION_ENGINE).SessionStore(session_key))
        scope["user"] = await channels_get_user(scope)
        return await self.inner(scope, receive, send)


def _session_key(scope: dict) -> str | None:
    cookie = header(scope, b"cookie")
    return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None


async def session_user(scope: dict) -> tuple[Any, Any] | None:
    """The active user of a request's session cookie and its session, or None (no query without a cookie)."""
    session_key = _session_key(scope)
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await channels_get_user({"session": session})
    if not user.is_authenticated or not user.is_active:
        return None
    return user, session
