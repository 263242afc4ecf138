"""The two paths of access-token decoding (realtime/core/tokens.py) accept and refuse the same tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from rest_framework_simplejwt.utils import aware_utcnow

from realtime.core import tokens
from realtime.core.auth import AuthFailure, decode_access_token

IN_AN_HOUR = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
ACCEPTED = ("7", datetime.fromtimestamp(IN_AN_HOUR, tz=UTC))  # the user id and the expiry


def access(**claims) -> str:
    token = AccessToken()
    token["exp"] = IN_AN_HOUR
    for name, value in claims.items():
        if value is None:
            del token[name]
        else:
            token[name] = value
    return str(token)


def expired() -> str:
    token = AccessToken()
    token["user_id"] = "7"
    token.set_exp(from_time=aware_utcnow() - timedelta(hours=1), lifetime=timedelta(minutes=1))
    return str(token)


def signed_with_another_key() -> str:
    claims = jwt.decode(access(user_id="7"), options={"verify_signature": False})
    return jwt.encode(claims, "not-the-signing-key-of-this-deployment", algorithm=jwt_settings.ALGORITHM)


def refresh() -> str:
    token = RefreshToken()
    token["user_id"] = "7"
    return str(token)


CASES = {
    "valid": (lambda: access(user_id="7"), ACCEPTED),
    "expired": (expired, "invalid token: Token is expired"),
    "bad signature": (signed_with_another_key, "invalid token: Token is invalid"),
    "wrong type": (refresh, "invalid token: Token has wrong type"),
    "no expiry": (lambda: access(user_id="7", exp=None), "invalid token: Token has no 'exp' claim"),
    "no user id": (lambda: access(), "invalid token: no user id"),
    "not a token": (lambda: "abc.def.ghi", "invalid token: Token is invalid"),
    "padded signature": (lambda: access(user_id="7") + "=", ACCEPTED),  # padding PyJWT accepts
    "bad signature characters": (lambda: access(user_id="7")[:-1] + "!", "invalid token: Token is invalid"),
}


def outcome(token: str) -> tuple[str, datetime] | str:
    try:
        return decode_access_token(token)
    except AuthFailure as failure:
        return str(failure)


@pytest.mark.parametrize("case", CASES)
def test_the_fast_and_the_plain_path_give_the_same_claims_and_the_same_errors(settings, monkeypatch, case):
    make, expected = CASES[case]
    token = make()
    fast_decodes = []
    monkeypatch.setattr(tokens, "_verified_payload",
                        lambda t, decode=tokens._verified_payload: fast_decodes.append(t) or decode(t))

    settings.RENUM_REALTIME = {"FAST_JWT": True}
    fast = outcome(token)
    settings.RENUM_REALTIME = {"FAST_JWT": False}
    plain = outcome(token)

    assert fast == plain == expected
    assert fast_decodes == [token]  # the fast path ran once, the plain one did not use it
