"""Prometheus metrics of the realtime layer (prometheus-client; multiprocess-safe).

With several server processes set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by
them; ``/metrics`` then aggregates every process (see docs/operations.md). Counters are
incremented once per message or event, never once per recipient on the fan-out path.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("renum_realtime_connections", "Open authenticated sockets", multiprocess_mode="livesum")
CONNECTS = Counter("renum_realtime_connects_total", "Socket connection attempts by outcome", ["outcome"])
DISCONNECTS = Counter("renum_realtime_disconnects_total", "Server-initiated closes by code", ["code"])
PUBLISHED = Counter("renum_realtime_published_total", "Messages published by this process", ["result"])
RECEIVED = Counter("renum_realtime_hub_received_total", "Messages received from Redis by the hub")
DELIVERED = Counter("renum_realtime_delivered_total", "Frames handed to local sockets by the hub")
FANOUT_SECONDS = Histogram(
    "renum_realtime_fanout_seconds", "Time to hand one message to every local subscriber",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SLOW_CONSUMERS = Counter("renum_realtime_slow_consumer_disconnects_total",
                         "Sockets closed with 4009 and event streams ended for a slow reader")
RATE_LIMITED = Counter("renum_realtime_rate_limited_total", "Refusals by rate limits", ["limit"])
AUTH_FAILURES = Counter("renum_realtime_auth_failures_total", "Failed socket authentications")
PROTOCOL_ERRORS = Counter("renum_realtime_protocol_errors_total", "Error frames sent, by code", ["code"])
REDIS_ERRORS = Counter("renum_realtime_redis_errors_total", "Redis failures", ["where"])
CIRCUIT_OPEN = Gauge("renum_realtime_publish_circuit_open", "1 while the publish circuit breaker is open",
                     multiprocess_mode="livemax")
OUTBOX_DEPTH = Gauge("renum_realtime_outbox_depth", "Outbox rows waiting for delivery to Redis (all processes)",
                     multiprocess_mode="max")
OUTBOX_OLDEST_AGE = Gauge("renum_realtime_outbox_oldest_age_seconds",
                          "Age of the oldest undelivered outbox row (0 when the outbox is empty)",
                          multiprocess_mode="max")
OUTBOX_DISCARDED = Counter("renum_realtime_outbox_discarded_total",
                           "Outbox rows discarded as undeliverable (their channels got a new epoch)")
EPOCHS_ROTATED = Counter("renum_realtime_epochs_rotated_total", "Channels given a new epoch after discarded events")
DATABASE_BUSY = Counter("renum_database_busy_total",
                        "Requests answered 503: no database connection within the pool timeout")
HTTP_WAITERS = Gauge("renum_realtime_http_waiters", "Long polls and event streams waiting on the hub",
                     multiprocess_mode="livesum")
