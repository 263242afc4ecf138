"""Access tokens of sockets and streams: simplejwt's ``AccessToken``, by one of two equal paths.

The plain path is simplejwt's own ``AccessToken(token)``, as REST requests use it. The fast
path (``RENUM_REALTIME["FAST_JWT"]``, on by default) decodes HMAC tokens with a PyJWS whose key
is prepared once and whose segment check runs in C, and decodes the claims once: in a connect
storm PyJWT re-validated the key (a JSON parse among other things) and tested each character of
every token in a Python loop. The fast path overrides ``PyJWS._decode_base64url_segment``,
a private method of PyJWT; ``FAST_JWT = False`` is the way back when a PyJWT upgrade changes it.

Both paths accept the same tokens and refuse the others with the same simplejwt errors
(``TokenError``, ``ExpiredTokenError``): tests/realtime/test_tokens.py holds them side by side.
Settings the fast path does not handle (another algorithm, an audience, an issuer) take the
plain path.
"""

from __future__ import annotations

import binascii
import functools
import re
from datetime import datetime
from typing import Any

import jwt
import orjson
from django.utils.translation import gettext_lazy as _
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from jwt.utils import base64url_decode, base64url_encode
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import aware_utcnow

from realtime.conf import setting


def access_token(token: str) -> AccessToken:
    """The verified access token (signature, expiry, type, as for REST requests), or TokenError."""
    if setting("FAST_JWT") and _fast_path_applies():
        return _fast_access_token(token)
    return AccessToken(token)


def _fast_path_applies() -> bool:
    return jwt_settings.ALGORITHM in _HMAC_BITS and not jwt_settings.AUDIENCE and not jwt_settings.ISSUER


def _fast_access_token(token: str) -> AccessToken:
    # What AccessToken(token) does, with the cached key and the C segment check, and the
    # errors simplejwt's token backend gives for what PyJWT refuses.
    try:
        payload = _verified_payload(token)
    except jwt.InvalidTokenError as exc:
        raise TokenError(_("Token is invalid")) from exc
    access = _DecodedAccessToken.__new__(_DecodedAccessToken)
    access.token, access.current_time, access.payload = token, aware_utcnow(), payload
    access.verify()
    return access


class _DecodedAccessToken(AccessToken):
    """An AccessToken of claims decoded by the fast path: an expired one is refused in the words
    of ``AccessToken(token)``, whose decoding by PyJWT checks a present ``exp`` before verify()."""

    def check_exp(self, claim: str = "exp", current_time: datetime | None = None) -> None:
        """simplejwt's check; a present, passed ``exp`` raises ExpiredTokenError("Token is expired")."""
        try:
            super().check_exp(claim, current_time)
        except TokenError:
            if claim == "exp" and claim in self.payload:
                raise ExpiredTokenError(_("Token is expired")) from None
            raise


class _PreparedKeyHMAC(HMACAlgorithm):
    """HMAC whose key is checked once: PyJWT re-validates the key on every decode (a JSON
    parse among other things), which shows up in profiles of connect storms."""

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one module-level instance, a handful of keys
    def prepare_key(self, key: str | bytes) -> bytes:
        """The validated key bytes, computed once per key."""
        return super().prepare_key(key)


_SEGMENT_CHARACTERS = re.compile(rb"[A-Za-z0-9_-]*")


class _PyJWS(PyJWS):
    """PyJWS whose segment check runs in C: PyJWT 2.15 tests each character of a token in a
    Python loop (three segments, a few hundred bytes per connect) before decoding it."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        # The same rules as PyJWT's: at most two '=' and only on a whole 4-character group,
        # no length that base64 cannot produce, nothing outside the base64url alphabet, only
        # canonical encodings (tested against PyJWT's own in tests/realtime/test_parser_properties.py).
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (padding > 2 or (padding and len(segment) % 4 != 0) or len(stripped) % 4 == 1
                or _SEGMENT_CHARACTERS.fullmatch(stripped) is None):
            raise DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:  # only the canonical encoding of the bytes
            raise DecodeError(f"Invalid {name} padding")
        return decoded


_HMAC_BITS = {"HS256": HMACAlgorithm.SHA256, "HS384": HMACAlgorithm.SHA384, "HS512": HMACAlgorithm.SHA512}
_jws = _PyJWS()
for _name, _hash in _HMAC_BITS.items():
    _jws.unregister_algorithm(_name)
    _jws.register_algorithm(_name, _PreparedKeyHMAC(_hash))


def _verified_payload(token: str) -> dict[str, Any]:
    """The claims of a token whose signature checks out with the cached key."""
    decoded = _jws.decode_complete(token, key=jwt_settings.SIGNING_KEY, algorithms=[jwt_settings.ALGORITHM])
    try:
        payload = orjson.loads(decoded["payload"])
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"Invalid payload string: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("Invalid payload string: must be a json object")
    return payload
