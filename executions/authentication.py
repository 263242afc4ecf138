"""Authentication of external runners: ``Authorization: Runner <key>``, keys from RENUM_EXECUTIONS."""

from __future__ import annotations

import hmac
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from executions.conf import setting

KEYWORD = "Runner"


class RunnerPrincipal:
    """The caller of a runner endpoint: a service holding a runner key, not a user."""

    is_authenticated = True
    is_anonymous = False
    pk = None

    def __str__(self) -> str:
        return "runner"


class RunnerKeyAuthentication(authentication.BaseAuthentication):
    """Accepts ``Authorization: Runner <key>`` when the key is one of ``RUNNER_KEYS``."""

    def authenticate(self, request: Any) -> tuple[RunnerPrincipal, str] | None:
        """The runner principal for a valid key; None without a Runner header; 401 for a wrong key."""
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Runner authorization needs exactly one key.")
        try:
            key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid runner key.") from None
        # Compare against every key without stopping early, so timing tells nothing about them.
        matches = [hmac.compare_digest(key.encode(), known.encode()) for known in setting("RUNNER_KEYS")]
        if not any(matches):
            raise exceptions.AuthenticationFailed("Invalid runner key.")
        return RunnerPrincipal(), key

    def authenticate_header(self, request: Any) -> str:
        """Makes DRF answer 401 (not 403) when the key is missing."""
        return KEYWORD


class IsRunner(permissions.BasePermission):
    """Only callers authenticated with a runner key."""

    def has_permission(self, request: Any, view: Any) -> bool:
        """Whether the request carries a valid runner key."""
        return isinstance(request.user, RunnerPrincipal)


class RunnerKeyScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Runner <key>`` in the OpenAPI schema (registered by subclassing)."""

    target_class = RunnerKeyAuthentication
    name = "RunnerKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An API key in the Authorization header, prefixed with ``Runner``."""
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Runner <key>"}
