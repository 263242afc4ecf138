"""Authentication of the platform's other services: scoped API keys, one class for every service API.

A key is configured as ``<key>`` (every scope, as keys always had) or ``<key>:<scope>+<scope>``
(only those scopes) in ``RENUM_REALTIME["API_KEYS"]`` (``REALTIME_API_KEYS``). This layer
defines one scope, ``publish`` (``POST /api/realtime/publish/``: raw messages without a row);
each domain app registers its own with ``register_scope`` from ``AppConfig.ready`` (the
notifications app ``notifications``, the executions app ``executions``), so this module names
no domain and a key's scopes are checked against what the installed apps serve.

Services send ``Authorization: ApiKey <key>``. The older ``Authorization: Runner <key>`` is
accepted too, for keys an app adds with ``register_key_source`` (the executions app's runner
keys, which hold its scope only), so this layer reads no domain app's settings.

Keys are compared as bytes with ``hmac.compare_digest`` against every configured key (no early
exit), so a malformed header (non-ASCII, empty) is a plain 401 and timing tells nothing. The
principal carries a short fingerprint of its key, never the key, so no error page or log line
can show a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from realtime.conf import setting

PUBLISH_SCOPE = "publish"
API_KEY_KEYWORD = b"apikey"
RUNNER_KEYWORD = b"runner"


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """One configured key: its bytes, the scopes it grants, and a fingerprint that names it safely."""

    secret: bytes
    scopes: frozenset[str]

    @property
    def key_id(self) -> str:
        """The first 12 hex digits of the key's SHA-256: identifies the caller in logs and stored rows."""
        return hashlib.sha256(self.secret).hexdigest()[:12]


class ServicePrincipal:
    """``request.user`` of a request authenticated by a service key: a service, not a user."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, key: ServiceKey) -> None:
        self.key_id = key.key_id
        self.scopes = key.scopes
        # Throttles key on ``pk``: one bucket per service key, never shared with a user id.
        self.pk = f"service:{key.key_id}"

    def has_scope(self, scope: str) -> bool:
        """Whether the key grants ``scope``."""
        return scope in self.scopes

    def __str__(self) -> str:
        return f"service {self.key_id}"


_scopes: dict[str, str] = {PUBLISH_SCOPE: "POST /api/realtime/publish/: raw messages without a row"}


def register_scope(name: str, description: str) -> None:
    """Make ``name`` a scope keys may be given (``description``: what it grants, for the docs);
    an app calls it from ``AppConfig.ready``. Registering a name twice with another meaning is
    a programming error."""
    if _scopes.setdefault(name, description) != description:
        raise ImproperlyConfigured(f"service scope {name!r} is already registered as {_scopes[name]!r}")


def known_scopes() -> frozenset[str]:
    """Every registered scope: ``publish`` and those of the installed domain apps."""
    return frozenset(_scopes)


def parse_api_key(entry: str) -> ServiceKey:
    """``"key"`` or ``"key:scope+scope"`` into a ServiceKey; an unknown scope is a configuration error.

    Keys therefore cannot contain ``:``. An unknown scope fails loudly instead of being
    mistaken for part of the key (which would silently grant every scope).
    """
    secret, sep, raw_scopes = entry.strip().partition(":")
    if not secret:
        raise ImproperlyConfigured("an API key must not be empty")
    known = known_scopes()
    if not sep:
        return ServiceKey(secret.encode(), known)
    scopes = frozenset(scope.strip() for scope in raw_scopes.split("+") if scope.strip())
    unknown = scopes - known
    if unknown or not scopes:
        raise ImproperlyConfigured(
            f"API key {hashlib.sha256(secret.encode()).hexdigest()[:12]} has unknown or no scopes "
            f"{sorted(unknown)}; known scopes: {', '.join(sorted(known))}"
        )
    return ServiceKey(secret.encode(), scopes)


_key_sources: dict[Callable[[], Iterable[ServiceKey]], str] = {}


def register_key_source(source: Callable[[], Iterable[ServiceKey]], *, description: str) -> None:
    """Accept the keys ``source()`` gives besides the API keys (read on every request, so they
    follow the settings); an app calls it from ``AppConfig.ready``, once per source.
    ``description`` says which keys these are, for the OpenAPI schema."""
    _key_sources.setdefault(source, description)


def configured_keys() -> list[ServiceKey]:
    """Every key a service may present: the API keys, then those of the registered sources
    (e.g. the executions app's runner keys, which hold its scope only)."""
    keys = [parse_api_key(entry) for entry in setting("API_KEYS")]
    for source in _key_sources:
        keys.extend(source())
    return keys


@checks.register(checks.Tags.security)
def check_api_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A misconfigured key (unknown scope, empty key) stops ``manage.py check`` and every server start."""
    errors = []
    for entry in setting("API_KEYS"):
        try:
            parse_api_key(entry)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), hint="REALTIME_API_KEYS entries are key or key:scope+scope",
                                       id="realtime.E100"))
    return errors


def _match(presented: bytes, keys: list[ServiceKey]) -> ServiceKey | None:
    found = None
    for key in keys:
        # Every key is compared (no early exit), each in constant time, as bytes: never raises.
        if hmac.compare_digest(presented, key.secret):
            found = key
    return found


class ServiceKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: ApiKey <key>`` (or ``Runner <key>``): a ServicePrincipal with the key's scopes.

    Returns None when the header names another scheme, so user authentication can follow;
    raises 401 for a wrong, empty or malformed key.
    """

    keyword = "ApiKey"

    def authenticate(self, request: Request) -> tuple[ServicePrincipal, ServiceKey] | None:
        """The principal for a valid key; None without an ApiKey/Runner header; 401 otherwise."""
        header = authentication.get_authorization_header(request)
        scheme, _, rest = header.partition(b" ")
        scheme = scheme.lower()
        if scheme not in (API_KEY_KEYWORD, RUNNER_KEYWORD):
            return None
        presented = rest.strip()
        if not presented or b" " in presented:
            raise exceptions.AuthenticationFailed("Give exactly one service key.")
        # Both schemes accept every configured key; what a key may do is its scopes' business.
        key = _match(presented, configured_keys())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid service key.")
        return ServicePrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        """Makes DRF answer 401 with ``WWW-Authenticate: ApiKey`` when no credentials were given."""
        return self.keyword


def request_service(request: Request) -> ServicePrincipal | None:
    """The service that made the request, or None when a user (or nobody) did."""
    return request.user if isinstance(request.user, ServicePrincipal) else None


class HasServiceScope(permissions.BasePermission):
    """Allows services whose key grants the view's ``service_scope``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """True for a service key with the scope; a key without it is 403."""
        service = request_service(request)
        return service is not None and service.has_scope(view.service_scope)


class ServiceKeyScheme(OpenApiAuthenticationExtension):
    """Declares ``Authorization: ApiKey <key>`` in the OpenAPI schema (registered by subclassing)."""

    target_class = ServiceKeyAuthentication
    name = "ServiceApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An API key in the Authorization header, prefixed with ``ApiKey`` (or ``Runner``), with the
        registered scopes and key sources."""
        return {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "`ApiKey <key>` with a key of REALTIME_API_KEYS (scoped: "
                           + "; ".join(f"`{name}`: {what}" for name, what in sorted(_scopes.items()))
                           + "), or `Runner <key>` with "
                           + (" or ".join(_key_sources.values()) or "an API key"),
        }
