"""Failed password logins (the admin's form, the JWT endpoint) throttled per username and per
client IP, in the shared cache (Redis).

Per username, so that one account cannot be guessed from many addresses; per IP, so that one
address cannot try many accounts. Counted over a fixed window from the first failure, across
every server process. The client IP is ``REMOTE_ADDR``: behind the proxy, uvicorn sets it from
X-Forwarded-For only for the proxies named in ``--forwarded-allow-ips`` (docs/operations.md),
so a client cannot pick its own address.
"""

from __future__ import annotations

import hashlib
import math
import time

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer


class TooManyFailures(Exception):
    """Logins for this username or from this address are refused for ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


def _keys(username: str, ip: str) -> list[tuple[str, int]]:
    # The username is hashed: any string a client sends must make a valid, bounded cache key.
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [(f"login-fail:user:{name}", settings.LOGIN_MAX_FAILURES_PER_USERNAME),
            (f"login-fail:ip:{ip}", settings.LOGIN_MAX_FAILURES_PER_IP)]


def check(username: str, ip: str) -> None:
    """Raise TooManyFailures while the username or the address is over its limit."""
    window = settings.LOGIN_FAILURE_WINDOW_S
    stored = cache.get_many([key for key, _ in _keys(username, ip)])
    for key, limit in _keys(username, ip):
        count, started = stored.get(key, (0, 0.0))
        if count >= limit:
            raise TooManyFailures(max(1, math.ceil(started + window - time.time())))


def failed(username: str, ip: str) -> None:
    """Count a failed login for the username and the address."""
    window = settings.LOGIN_FAILURE_WINDOW_S
    now = time.time()
    for key, _ in _keys(username, ip):
        # Not atomic (get then set): two concurrent failures may count once, which only
        # loosens the limit by the number of requests in flight at once.
        count, started = cache.get(key, (0, now))
        cache.set(key, (count + 1, started), timeout=max(1, math.ceil(started + window - now)))


def succeeded(username: str) -> None:
    """A correct password clears the username's failures (not the address's)."""
    cache.delete(_keys(username, "")[0][0])


def client_ip(request) -> str:
    """The client's address as the ASGI server determined it."""
    return request.META.get("REMOTE_ADDR", "") or "-"


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing to check passwords for throttled usernames or addresses."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed login attempts. Try again in %(minutes)s minute(s).",
    }

    def clean(self):
        """Check the throttle before the password, count the outcome after."""
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        try:
            check(username, ip)
        except TooManyFailures as refused:
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled",
                                        params={"minutes": math.ceil(refused.retry_after / 60)}) from None
        try:
            cleaned = super().clean()
        except forms.ValidationError:  # a wrong password, or a user who may not use the admin
            failed(username, ip)
            raise
        succeeded(username)
        return cleaned


class ThrottledTokenObtainPairSerializer(TokenObtainPairSerializer):
    """The JWT endpoint's credentials check, under the same throttle (429 with Retry-After)."""

    def validate(self, attrs: dict) -> dict:
        """Check the throttle before the password, count the outcome after."""
        username = str(attrs.get(self.username_field, ""))
        ip = client_ip(self.context["request"])
        try:
            check(username, ip)
        except TooManyFailures as refused:
            raise Throttled(wait=refused.retry_after, detail="Too many failed login attempts.") from None
        try:
            data = super().validate(attrs)
        except AuthenticationFailed:
            failed(username, ip)
            raise
        succeeded(username)
        return data
