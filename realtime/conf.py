"""The settings accessor of every app, and the ``RENUM_REALTIME`` settings dict with its defaults.

Each app has one namespaced dict in the Django settings (``RENUM_REALTIME``,
``RENUM_NOTIFICATIONS``, ``RENUM_EXECUTIONS``) and one ``conf.py`` that declares its keys with
documented defaults and reads them through ``AppSettings``: ``setting("NAME")`` everywhere.
``renum/settings.py`` fills the dicts from the environment (the only place it is read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class AppSettings:
    """One app's settings dict: ``settings.<name>[key]``, or the app's default when it is not set.

    Values are remembered until the dict changes (tests, ``override_settings``): a connect
    reads a dozen settings, and reading Django's settings object costs more than a dict lookup.
    """

    def __init__(self, name: str, defaults: dict[str, Any]) -> None:
        self.name = name
        self.defaults = defaults
        self._values: dict[str, Any] = {}
        _accessors[name] = self

    def get(self, key: str) -> Any:
        """The value of ``key``; KeyError for a key the app does not declare."""
        try:
            return self._values[key]
        except KeyError:
            pass
        overrides = getattr(settings, self.name, {})
        if key in overrides:
            value = overrides[key]
        else:
            try:
                value = self.defaults[key]
            except KeyError:
                raise KeyError(f"unknown {self.name} setting {key!r}") from None
        self._values[key] = value
        return value

    def forget(self) -> None:
        """Drop the remembered values: the next read sees the settings as they are now."""
        self._values.clear()


_accessors: dict[str, AppSettings] = {}


@receiver(setting_changed)
def _forget_values(*, setting: str, **kwargs: Any) -> None:
    accessor = _accessors.get(setting)
    if accessor is not None:
        accessor.forget()


DEFAULTS: dict[str, Any] = {
    # Seconds between client pings; a connection silent for IDLE_FACTOR x this is closed.
    "HEARTBEAT_S": 25,
    "IDLE_FACTOR": 2.5,
    # Origins allowed to open sockets ("https://app.example.com"); empty = the ALLOWED_HOSTS
    # on http and https; "*" = any.
    "ALLOWED_ORIGINS": [],
    # Server-to-server clients send no Origin header; browsers always do.
    "ALLOW_NO_ORIGIN": True,
    # Keys accepted by the HTTP publish endpoint (Authorization: ApiKey <key>).
    "API_KEYS": [],
    # Largest inbound frame in bytes; larger ones get `too_large`.
    "MAX_FRAME_BYTES": 64 * 1024,
    # Invalid or oversized frames tolerated per connection before closing with 4008.
    "MAX_INVALID_FRAMES": 20,
    "MAX_CHANNELS_PER_CONNECTION": 128,
    # Bytes queued for one socket before it is closed as a slow consumer (4009).
    "OUTBOX_MAX_BYTES": 1024 * 1024,
    # History kept per channel in Redis: message count and seconds since the last publish.
    "HISTORY_SIZE": 1000,
    "HISTORY_TTL_S": 24 * 3600,
    # How long a channel's offset and epoch survive without publications.
    "META_TTL_S": 30 * 24 * 3600,
    # Connection registry entries expire this long after their process stops refreshing them.
    "REGISTRY_TTL_S": 90,
    "REGISTRY_REFRESH_S": 30,
    # Publish circuit breaker: consecutive Redis failures that open it, and for how long.
    "CIRCUIT_FAILURES": 3,
    "CIRCUIT_COOLDOWN_S": 5.0,
    # Inbound commands per connection: sustained rate per second and burst; after
    # RATE_LIMIT_STRIKES refused commands in a row the socket is closed with 4029.
    "COMMAND_RATE": 20.0,
    "COMMAND_BURST": 60,
    "RATE_LIMIT_STRIKES": 50,
    "RATE_LIMIT_RETRY_S": 30,
    # Concurrent sockets per user across all processes (more are closed with 4003).
    "MAX_CONNECTIONS_PER_USER": 20,
    # Socket connect attempts per client IP per minute, across processes (0 = no limit).
    "CONNECTS_PER_IP_PER_MINUTE": 600,
    "CONNECT_LIMIT_EXEMPT_IPS": [],
    # Seconds between checks that connected users are still active (deactivated -> 4001)
    # and that session-cookie sockets' sessions still hold (ended -> 4001).
    "USER_RECHECK_S": 10,
    # Security events of one kind one source (an IP, else a user) may add to the admin's recent
    # list (and the log) per minute; more are still counted, so a flood from one source cannot push out the others.
    "SECURITY_EVENTS_PER_SOURCE_PER_MINUTE": 20,
    # The transactional outbox (realtime/relay.py). Seconds the delivery attempt right after a
    # commit may wait for Redis before leaving the events to the relay (a request never waits
    # longer than this on Redis).
    "PUBLISH_ATTEMPT_TIMEOUT_S": 0.04,
    # A transaction that published more messages than this (a fan-out to thousands of users)
    # does not deliver them in the committing thread: the call returns after the commit and
    # the relay thread delivers them, computing the messages made after commit (the unread
    # counts) as it does. Smaller ones are tried at once, as above.
    "AFTER_COMMIT_MAX_MESSAGES": 5000,
    # Seconds a process owns the outbox rows it wrote or claimed; rows of a process that died
    # are taken over by another one once this has passed.
    "OUTBOX_LEASE_S": 30,
    # Seconds between the relay's looks for rows whose lease ran out.
    "RELAY_POLL_S": 1.0,
    # Undelivered events older than this are discarded, and their channels get a new epoch.
    "OUTBOX_RETENTION_S": 24 * 3600,
    # Deliveries refused by Redis itself (not a connection failure) before a row is discarded.
    "OUTBOX_MAX_ATTEMPTS": 10,
    # /readyz fails while the oldest undelivered event is older than this (a stuck relay).
    "OUTBOX_STUCK_S": 60,
    # On PostgreSQL, a single write outside a transaction (``notification_create``) inserts its
    # row and its outbox row in one statement, and runs its after-commit query (the unread
    # count) in the same round trip, after the COMMIT (``realtime.relay.write_with_insert``);
    # False: the ORM's save and the outbox row in a transaction, the query after it (the plain
    # path, which every write inside a transaction takes). Both store and send the same.
    "OUTBOX_ONE_STATEMENT": True,
    # Whether server processes (and any process that publishes) run a relay thread; a
    # deployment may run ``manage.py realtime_relay`` instead and set this to False.
    "RELAY_IN_PROCESS": True,
    # Seconds a long poll or event stream reuses a user's granted channel permission before
    # asking the channel policy again (0: every request asks). A socket asks once per subscribe.
    "HTTP_PERMISSION_TTL_S": 10,
    # Socket.IO binding at /socket.io/ (realtime/transports/socketio/): Engine.IO ping interval and
    # timeout (the client is closed when a pong does not come within the timeout), the largest
    # packet or polling body in bytes, and seconds a new session may take to send its CONNECT.
    "SOCKETIO_PING_INTERVAL_S": 25.0,
    "SOCKETIO_PING_TIMEOUT_S": 20.0,
    "SOCKETIO_MAX_PAYLOAD": 1_000_000,
    "SOCKETIO_CONNECT_TIMEOUT_S": 45.0,
    # Redis key prefix of everything the realtime layer stores.
    "KEY_PREFIX": "renum:rt",
    # Access tokens of sockets and streams decoded by the fast path of realtime/core/tokens.py (a
    # cached HMAC key, a segment check in C, over a private method of PyJWT); False: by
    # simplejwt's AccessToken, as REST requests. Both accept and refuse the same tokens.
    "FAST_JWT": True,
    # On PostgreSQL, the connect-time user lookup runs on a psycopg connection of the event loop
    # (realtime/core/users.py); False: on Django's connection in the database thread.
    "USER_LOOKUP_ON_LOOP": True,
    # Redis connections per process and pool (the pools wait when all are busy); the event
    # loop's client on a Redis Cluster gets at least 1000 per node (it raises instead of waiting).
    "REDIS_POOL_SIZE": 64,
    # Garbage-collector thresholds of a server process, "g0,g1,g2"; empty: (50000, 20, 10);
    # "off": CPython's defaults (realtime/ops/runtime.py). Applied once, when renum/asgi.py loads.
    "GC_THRESHOLDS": "",
}


#: ``setting("NAME")``: the bound method, so a read costs one call, as a plain function's would.
setting: Callable[[str], Any] = AppSettings("RENUM_REALTIME", DEFAULTS).get
