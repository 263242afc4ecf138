"""Settings for development and tests, read from the environment (every variable is in the README).

Production uses ``renum.settings_production``, which imports this module and refuses to start
without the variables it must not guess.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

from realtime.storage import topology as redis_topology

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RENUM_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable into a list of stripped, non-empty items."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _development_secret_key() -> str:
    # Generated once per checkout so sessions and tokens survive restarts in development;
    # readable by its owner only (it signs sessions and tokens). Created with 0600 at once, not
    # chmod-ed after the write, so no other user can open it in between.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a key file created by an older version: close it
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or _development_secret_key()
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "realtime",
    "notifications",
    "executions",
    # The load tool's management commands (``manage.py loadtest``, ``loadtest_redis``).
    "loadtest",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before CommonMiddleware, so that preflights and redirects carry the CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    # A database at its connection ceiling: 503 with Retry-After, not 500.
    "realtime.ops.middleware.DatabaseBusyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# CORS for the REST API (django-cors-headers), for front ends on another origin (a Next.js app
# on :3000 against the API on :8000; app.example.com against api.example.com). One list serves
# both transports: unset, CORS_ALLOWED_ORIGINS is REALTIME_ALLOWED_ORIGINS, the origins that may
# open sockets, so a front end allowed to hold a socket can also call the REST API and poll.
# `*` allows any origin. Credentials are bearer JWTs, never cookies, so no credentialed CORS.
_cors_origins = env_list("CORS_ALLOWED_ORIGINS", os.environ.get("REALTIME_ALLOWED_ORIGINS", ""))
CORS_ALLOW_ALL_ORIGINS = "*" in _cors_origins
CORS_ALLOWED_ORIGINS = [origin.rstrip("/") for origin in _cors_origins if origin != "*"]
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = [
    "accept", "authorization", "content-type", "idempotency-key", "if-none-match", "last-event-id",
    "cache-control", "x-requested-with",
]
# What the client reads from answers: conditional polling, the poll pace, back-off hints.
CORS_EXPOSE_HEADERS = ["ETag", "X-Poll-Interval", "Retry-After"]
CORS_PREFLIGHT_MAX_AGE = 600

ROOT_URLCONF = "renum.urls"
ASGI_APPLICATION = "renum.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
# No health checks: Django would run one before every database_sync_to_async call (a round
# trip per socket connect); a broken connection is closed after its error instead.
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
# A fixed ceiling of PostgreSQL connections per process, whatever the traffic: Django's psycopg
# pool. Under ASGI every sync view runs in a thread of its own request, so persistent
# connections (CONN_MAX_AGE > 0) grew with concurrent requests, and CONN_MAX_AGE = 0 alone
# would too, besides paying a connect per request (docs/operations.md has the measurements).
# A request finding every connection busy waits DATABASE_POOL_TIMEOUT_S, then gets 503
# (realtime.ops.middleware). The process also has one connection of its own for the connect-path
# user lookup (realtime.core.users): the ceiling is DATABASE_POOL_MAX_SIZE + 1.
DATABASE_POOL_MAX_SIZE = int(os.environ.get("DATABASE_POOL_MAX_SIZE", "8"))
DATABASE_POOL_TIMEOUT_S = float(os.environ.get("DATABASE_POOL_TIMEOUT_S", "2"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE), "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT_S,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that server processes started by the tests see the test data.
    _sqlite_name = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite_name.with_name(_sqlite_name.stem + "-test.sqlite3"))}
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# One server (redis://, rediss://, unix://), a master behind Sentinel
# (redis+sentinel://host:26379,host2:26379/<master name>/<db>) or a Redis Cluster
# (redis+cluster://host:7000,host2:7001): realtime/storage/topology.py.
REDIS_URL = os.environ.get("REDIS_URL", "")
if not REDIS_URL:
    from renum.embedded_redis import ensure_embedded_redis

    REDIS_URL = ensure_embedded_redis(VAR_DIR)
REDIS_TOPOLOGY = redis_topology.parse(REDIS_URL)

# Every Redis key of a deployment is under this prefix: the realtime layer's, the channel
# layer's and the cache's (throttle counters); deployments sharing a Redis keep theirs apart.
REALTIME_KEY_PREFIX = os.environ.get("REALTIME_KEY_PREFIX", "renum:rt")

CACHES = {
    # Shared by every process, so DRF throttles and login throttles hold across server processes.
    "default": {
        "BACKEND": "realtime.storage.cache.RedisCache",
        # A list: Django splits a string LOCATION at commas (a Sentinel URL has some).
        "LOCATION": [REDIS_URL],
        "KEY_PREFIX": REALTIME_KEY_PREFIX + ":cache",
        "OPTIONS": {"pool_class": "realtime.storage.topology.CachePool"},
    }
}

CHANNEL_LAYERS = {
    "default": {
        # Only control messages (disconnect, server-side subscribe) travel through the channel
        # layer, one channel per server process (realtime.fanout.control); data fan-out goes through
        # realtime.fanout.hub. The backend is channels_redis's, plus group changes in pipelines.
        "BACKEND": "realtime.storage.layers.RealtimeRedisChannelLayer",
        "CONFIG": {
            # redis-py's default 5 s read timeout equals channels_redis's 5 s BZPOPMIN wait: an idle
            # receive would time out and end the consumer. Reads may take longer than the wait.
            # redis-py's pool raises (not waits) past max_connections: room for connect storms.
            "hosts": [redis_topology.channel_layer_host(REDIS_TOPOLOGY, socket_timeout=15, socket_connect_timeout=2,
                                                        max_connections=2000)],
            # Under the realtime prefix: deployments (and test runs) sharing a Redis stay apart.
            "prefix": REALTIME_KEY_PREFIX + ":layer",
            "capacity": 1000,
            # A process's control channel carries the messages of all its users' sockets.
            "channel_capacity": {"rtcontrol.*": 100000},
            # Memberships are refreshed by every live connection, so this only bounds ghosts.
            "group_expiry": 3600,
            "expiry": 60,
        },
    }
}

if REDIS_TOPOLOGY.kind == "cluster":
    # channels_redis cannot run on a Cluster (its scripts span many keys): the same semantics
    # with one key per command (realtime/storage/layers.py).
    CHANNEL_LAYERS["default"]["BACKEND"] = "realtime.storage.layers.ClusterChannelLayer"
    CHANNEL_LAYERS["default"]["CONFIG"].pop("hosts")
    CHANNEL_LAYERS["default"]["CONFIG"]["cluster_url"] = REDIS_URL

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve /static/ from the ASGI app (renum/asgi.py) when no proxy or CDN does; DEBUG always does.
SERVE_STATIC = env_bool("SERVE_STATIC", False)

# /metrics (realtime/ops/probes.py): the bearer token scrapers must send (empty: open), and the
# directory all server processes of a host share so that any of them reports them all.
# prometheus-client reads PROMETHEUS_MULTIPROC_DIR itself too, when its metrics are created.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "120/min"),
        "user": os.environ.get("API_THROTTLE_USER", "1200/min"),
    },
    # Throttles key anonymous clients on REMOTE_ADDR, never on a client-supplied
    # X-Forwarded-For; which proxies are believed is uvicorn's --forwarded-allow-ips.
    "NUM_PROXIES": 0,
}

# Failed password logins (the admin's form and the token endpoint) per username and per client
# IP within a window; over either limit, logins are refused until the window ends.
LOGIN_MAX_FAILURES_PER_USERNAME = int(os.environ.get("LOGIN_MAX_FAILURES_PER_USERNAME", "5"))
LOGIN_MAX_FAILURES_PER_IP = int(os.environ.get("LOGIN_MAX_FAILURES_PER_IP", "20"))
LOGIN_FAILURE_WINDOW_S = int(os.environ.get("LOGIN_FAILURE_WINDOW_S", "900"))

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_ACCESS_LIFETIME_S", "900"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_REFRESH_LIFETIME_S", "86400"))),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "TOKEN_OBTAIN_SERIALIZER": "renum.login_throttle.ThrottledTokenObtainPairSerializer",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Renum realtime API",
    "DESCRIPTION": "REST fallback and management endpoints of the Renum realtime service.",
    "VERSION": "1.0.0",
}

RENUM_REALTIME = {
    "HEARTBEAT_S": int(os.environ.get("REALTIME_HEARTBEAT_S", "25")),
    "ALLOWED_ORIGINS": env_list("REALTIME_ALLOWED_ORIGINS", ""),
    "ALLOW_NO_ORIGIN": env_bool("REALTIME_ALLOW_NO_ORIGIN", True),
    "API_KEYS": env_list("REALTIME_API_KEYS", ""),
    "CONNECTS_PER_IP_PER_MINUTE": int(os.environ.get("REALTIME_CONNECTS_PER_IP_PER_MINUTE", "600")),
    "MAX_CONNECTIONS_PER_USER": int(os.environ.get("REALTIME_MAX_CONNECTIONS_PER_USER", "20")),
    "OUTBOX_MAX_BYTES": int(os.environ.get("REALTIME_OUTBOX_MAX_BYTES", str(1024 * 1024))),
    "REGISTRY_TTL_S": int(os.environ.get("REALTIME_REGISTRY_TTL_S", "90")),
    "REGISTRY_REFRESH_S": int(os.environ.get("REALTIME_REGISTRY_REFRESH_S", "30")),
    # Transactional outbox: the relay's lease and the age at which /readyz calls it stuck.
    "RELAY_IN_PROCESS": env_bool("REALTIME_RELAY_IN_PROCESS", True),
    "OUTBOX_LEASE_S": int(os.environ.get("REALTIME_OUTBOX_LEASE_S", "30")),
    "OUTBOX_RETENTION_S": int(os.environ.get("REALTIME_OUTBOX_RETENTION_S", str(24 * 3600))),
    "OUTBOX_STUCK_S": int(os.environ.get("REALTIME_OUTBOX_STUCK_S", "60")),
    # Two deployments sharing one Redis need different prefixes (pub/sub ignores db numbers).
    "KEY_PREFIX": REALTIME_KEY_PREFIX,
    "REDIS_POOL_SIZE": int(os.environ.get("REALTIME_REDIS_POOL_SIZE", "64")),
    "GC_THRESHOLDS": os.environ.get("REALTIME_GC_THRESHOLDS", ""),
    # Socket.IO binding (/socket.io/): Engine.IO heartbeat in seconds.
    "SOCKETIO_PING_INTERVAL_S": float(os.environ.get("REALTIME_SOCKETIO_PING_INTERVAL_S", "25")),
    "SOCKETIO_PING_TIMEOUT_S": float(os.environ.get("REALTIME_SOCKETIO_PING_TIMEOUT_S", "20")),
}

RENUM_EXECUTIONS = {
    "RUNNER_KEYS": env_list("EXECUTION_RUNNER_KEYS", ""),
    # The demo runner holds a thread and a database connection per run: development only.
    "DEMO_ENABLED": env_bool("EXECUTION_DEMO_ENABLED", True),
    "DEMO_STEPS": int(os.environ.get("EXECUTION_DEMO_STEPS", "10")),
    "DEMO_INTERVAL_S": float(os.environ.get("EXECUTION_DEMO_INTERVAL_S", "1.0")),
    # The account ``manage.py demo_setup`` creates (or resets) for the quick start.
    "DEMO_USERNAME": os.environ.get("DEMO_USERNAME", "demo"),
    "DEMO_PASSWORD": os.environ.get("DEMO_PASSWORD", "demo-password"),
}

RENUM_NOTIFICATIONS = {
    # How long a POST /api/notifications/ answer is kept for retries with the same Idempotency-Key.
    "IDEMPOTENCY_TTL_S": int(os.environ.get("NOTIFICATIONS_IDEMPOTENCY_TTL_S", str(24 * 3600))),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [conn=%(connection_id)s user=%(user_id)s] %(message)s"},
        "json": {"()": "realtime.ops.logs.JsonFormatter"},
    },
    "filters": {"connection": {"()": "realtime.ops.logs.ConnectionContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("LOG_FORMAT", "text"),
            "filters": ["connection"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
