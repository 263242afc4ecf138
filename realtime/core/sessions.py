"""Sockets authenticated by a session cookie end when their session does.

A session ends by expiry, by logout (the row is deleted), by a password change (Django's
session auth hash no longer matches, so the cookie no longer authenticates) or by an operator
deleting it. The consumers recheck their sessions every ``USER_RECHECK_S`` (one query for every
session socket of the process, ``live_sessions``), which catches each of those however it
happened, even in SQL; logout and password changes also close the sockets at once through the
user's control group (the receivers below), so a shared computer is safe right away.

The expiry a session socket announces (``expires_at`` in ``welcome``) is the session's own:
the ``expire_date`` its store holds, not "now + SESSION_COOKIE_AGE".
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare


def session_tag(session_key: str) -> str:
    """A digest that names a session in control messages (the key itself stays out of Redis)."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def _store_class() -> type[SessionBase]:
    return import_module(settings.SESSION_ENGINE).SessionStore


def expiry(session: SessionBase) -> datetime | None:
    """When a loaded session ends: the ``expire_date`` of its row for the database engines;
    the store's own answer for the others (those are rechecked periodically all the same)."""
    if isinstance(session, DatabaseSessionStore) and session.session_key:
        model = session.get_model_class()
        return model.objects.filter(session_key=session.session_key).values_list("expire_date", flat=True).first()
    return session.get_expiry_date()


def live_sessions(sockets: list[tuple[str, str]]) -> dict[str, datetime | None]:
    """Of (session key, user id) pairs, those whose session still authenticates that user,
    with its expiry. A session is live while its store has it unexpired, it names the user,
    and its auth hash matches the user's current password (what ``django.contrib.auth.get_user``
    checks on every request)."""
    if not sockets:
        return {}
    store_class = _store_class()
    keys = sorted({key for key, _ in sockets})
    found: dict[str, tuple[datetime | None, dict[str, Any]]] = {}
    if issubclass(store_class, DatabaseSessionStore):
        decoder = store_class()
        rows = store_class.get_model_class().objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
        for row in rows.only("session_key", "session_data", "expire_date"):
            found[row.session_key] = (row.expire_date, decoder.decode(row.session_data))
    else:
        for key in keys:
            store = store_class(key)
            data = store.load()
            if data:
                found[key] = (store.get_expiry_date(), data)
    model = get_user_model()
    users = {str(u.pk): u for u in model._default_manager.filter(pk__in={uid for _, uid in sockets}, is_active=True)}
    live: dict[str, datetime | None] = {}
    for key, user_id in sockets:
        session = found.get(key)
        user = users.get(user_id)
        if session is None or user is None:
            continue
        ends, data = session
        if str(data.get(SESSION_KEY)) == user_id and constant_time_compare(
                data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
            live[key] = ends
    return live


def disconnect_sessions_on_commit(user_id: Any, *, session_key: str | None = None, code: int = 4001,
                                  reason: str = "session ended") -> None:
    """Close a user's session-cookie sockets after commit: those of one session, or all of them."""
    from realtime.publish import disconnect_user_on_commit

    disconnect_user_on_commit(user_id, code=code, reason=reason, auth="session",
                              session=session_tag(session_key) if session_key is not None else None)


def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``user_logged_out``: the session's sockets close now (it is flushed right after)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        disconnect_sessions_on_commit(user.pk, session_key=session_key, reason="logged out")


def on_user_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_save`` of the user model: a new password ends every session of the user
    (``set_password`` leaves the raw password in ``_password`` until the save)."""
    if instance.pk is not None and getattr(instance, "_password", None) is not None:
        disconnect_sessions_on_commit(instance.pk, reason="password changed")
