"""Operations: health and readiness probes, the Prometheus endpoint, and the panel's actions.

``/healthz`` says the process answers (no database, no Redis: a load balancer must not take
every process out of rotation because a shared dependency blinked); ``/readyz`` says whether
this process can serve (database and Redis reachable, and the outbox relay not stuck: no
undelivered event older than OUTBOX_STUCK_S), with 503 and the failed checks otherwise.
``/metrics`` serves prometheus-client metrics, aggregated over every process of the host
when PROMETHEUS_MULTIPROC_DIR is set, optionally behind a bearer token (METRICS_TOKEN). The
actions close sockets and broadcast, for the admin's monitoring panel.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from realtime.conf import setting
from realtime.publish import Published, disconnect_user_on_commit, publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from realtime.storage import registry

logger = logging.getLogger("realtime.ops.probes")

# Close codes an operator may choose (docs/protocol.md): what the client does next differs.
CLOSE_CODES = {
    4003: "kick: the client backs off and tells its user",
    1012: "reconnect: the client reconnects at once and resumes (rebalancing, maintenance)",
    4001: "re-authenticate: the client gets a new token before reconnecting",
}
DEFAULT_CLOSE_CODE = 4003
DEFAULT_CLOSE_REASON = "disconnected by an administrator"


# ---------------------------------------------------------------------- probes


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: 200 whenever the process can answer HTTP."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    rt_redis.sync_client().ping()


class RelayStuck(Exception):
    """The outbox holds an event older than OUTBOX_STUCK_S: no relay is delivering."""


def _check_outbox() -> None:
    from realtime.relay import outbox_state

    depth, oldest = outbox_state()
    if oldest > setting("OUTBOX_STUCK_S"):
        raise RelayStuck(f"oldest undelivered event {oldest:.0f} s old ({depth} rows waiting)")


READINESS_CHECKS = {"database": _check_database, "redis": _check_redis, "outbox": _check_outbox}


@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when the database and Redis answer and the outbox drains, else 503 naming what failed."""
    checks: dict[str, str] = {}
    for name, check in READINESS_CHECKS.items():
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "do not send traffic here"
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {exc}" if isinstance(exc, RelayStuck) else f"failed: {type(exc).__name__}"
            if name == "database":
                connection.close()  # the next request reconnects instead of reusing a broken one
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)


# ---------------------------------------------------------------------- metrics


def _metrics_registry() -> CollectorRegistry:
    if settings.PROMETHEUS_MULTIPROC_DIR:
        # Each process writes its values to files in that directory; a fresh collector per
        # scrape reads them all, so any process answers for the whole host.
        collected = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(collected, path=settings.PROMETHEUS_MULTIPROC_DIR)
        return collected
    return REGISTRY


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; ``Authorization: Bearer <METRICS_TOKEN>`` when a token is set."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("metrics token required\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(_metrics_registry()), content_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------- panel actions


def connection_disconnect(*, process: str, connection_id: str, code: int = DEFAULT_CLOSE_CODE,
                          reason: str = DEFAULT_CLOSE_REASON, actor: str = "") -> bool:
    """Close one socket, on whichever process holds it; False when it is no longer live.

    The same control message as every other (``disconnect_user_on_commit``, through the
    outbox and the user's control group), naming the connection: the process that holds it
    closes that one socket, not the user's others.
    """
    raw = rt_redis.sync_client().hget(registry.proc_key(process), connection_id)
    if raw is None:
        return False
    entry = orjson.loads(raw)
    disconnect_user_on_commit(entry["user_id"], code=code, reason=reason, connection=connection_id)
    logger.info("connection %s of user %s disconnected (%s) by %s", connection_id, entry["user_id"], code, actor,
                extra={"event": "admin_disconnect", "connection_id": connection_id, "user_id": entry["user_id"],
                       "code": code, "actor": actor})
    return True


def user_disconnect(*, user_id: Any, code: int = DEFAULT_CLOSE_CODE, reason: str = DEFAULT_CLOSE_REASON,
                    actor: str = "") -> None:
    """Close every socket of a user on every process (through the user's control group)."""
    disconnect_user_on_commit(user_id, code=code, reason=reason)
    logger.info("all connections of user %s disconnected (%s) by %s", user_id, code, actor,
                extra={"event": "admin_disconnect_user", "user_id": str(user_id), "code": code, "actor": actor})


def system_event_broadcast(*, payload: dict[str, Any], actor: str = "") -> Published | None:
    """Send a ``system_event`` to everyone connected; None when Redis refused it.

    Called from a request that changes no data, so there is no transaction to wait for; the
    immediate variant is used for its result, which the operator needs to see.
    """
    published = publish_rollback_unsafe("broadcast", "system_event", payload, sender="admin")
    logger.info("system_event broadcast by %s: %s", actor, "sent" if published else "failed",
                extra={"event": "admin_broadcast", "actor": actor})
    return published
