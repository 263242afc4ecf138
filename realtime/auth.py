"""Who is connecting: JWTs (subprotocol or path), one-time tickets, session cookies, origins.

Authentication failures are reported to the consumer, which accepts and then closes with
4001 so that a browser sees the code (a close before accept is an HTTP 403 / 1006).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http.request import validate_host
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from realtime import redis as rt_redis
from realtime.conf import setting

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

    @property
    def user_id(self) -> str:
        """The user's id as the protocol spells it (a string)."""
        return str(self.user.pk)


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
    """Validate a simplejwt access token; return (user id, expiry) or raise AuthFailure."""
    try:
        access = AccessToken(token)
    except TokenError as exc:
        raise AuthFailure(f"invalid token: {exc}") from None
    user_id = access.get(jwt_settings.USER_ID_CLAIM)
    if user_id is None:
        raise AuthFailure("invalid token: no user id")
    return str(user_id), datetime.fromtimestamp(access["exp"], tz=UTC)


@database_sync_to_async
def _active_user(user_id: str) -> Any:
    try:
        return get_user_model().objects.filter(pk=user_id, is_active=True).first()
    except (ValueError, TypeError):
        return None


async def user_from_token(token: str) -> tuple[Any, datetime]:
    """The active user of an access token and its expiry, or AuthFailure."""
    user_id, expires_at = decode_access_token(token)
    user = await _active_user(user_id)
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


async def _redeem_ticket(ticket: str) -> Any:
    # GETDEL makes the ticket single-use even when two sockets race with it.
    user_id = await rt_redis.async_client().getdel(ticket_key(ticket))
    if user_id is None:
        raise AuthFailure("invalid, expired or already used ticket")
    user = await _active_user(user_id.decode())
    if user is None:
        raise AuthFailure("unknown or inactive user")
    return user


def _bearer_from_subprotocols(scope: dict) -> str | None:
    for proto in scope.get("subprotocols", ()):
        if proto.startswith(BEARER_PREFIX):
            return proto[len(BEARER_PREFIX):]
    return None


async def authenticate(scope: dict) -> Identity:
    """Authenticate a socket by subprotocol bearer, ticket, path token or session, in that order."""
    token = _bearer_from_subprotocols(scope)
    if token is not None:
        user, expires_at = await user_from_token(token)
        return Identity(user, expires_at, "subprotocol")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "ticket" in query:
        user = await _redeem_ticket(query["ticket"][0])
        # A ticket authenticates the connect; the session then lasts one access-token lifetime.
        return Identity(user, datetime.now(UTC) + jwt_settings.ACCESS_TOKEN_LIFETIME, "ticket")
    token = scope.get("url_route", {}).get("kwargs", {}).get("token")
    if token:
        user, expires_at = await user_from_token(token)
        return Identity(user, expires_at, "path")
    session_user = scope.get("user")
    if session_user is not None and session_user.is_authenticated and session_user.is_active:
        session = scope.get("session")
        expires_at = session.get_expiry_date() if session is not None else None
        return Identity(session_user, expires_at, "session")
    raise AuthFailure("missing credentials")
