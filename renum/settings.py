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

from realtime import topology as redis_topology

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
    # Generated once per checkout so sessions and tokens survive restarts in development.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
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
    "rest_framework",
    "drf_spectacular",
    "realtime",
    "notifications",
    "executions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that server processes started by the tests see the test data.
    _sqlite_name = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite_name.with_name(_sqlite_name.stem + "-test.sqlite3"))}
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# One server (redis://, rediss://, unix://), a master behind Sentinel
# (redis+sentinel://host:26379,host2:26379/<master name>/<db>) or a Redis Cluster
# (redis+cluster://host:7000,host2:7001): realtime/topology.py.
REDIS_URL = os.environ.get("REDIS_URL", "")
if not REDIS_URL:
    from renum.embedded_redis import ensure_embedded_redis

    REDIS_URL = ensure_embedded_redis(VAR_DIR)
REDIS_TOPOLOGY = redis_topology.parse(REDIS_URL)

CACHES = {
    # Shared by every process, so DRF throttles hold across server processes.
    "default": {
        "BACKEND": "realtime.cache.RedisCache",
        # A list: Django splits a string LOCATION at commas (a Sentinel URL has some).
        "LOCATION": [REDIS_URL],
        "KEY_PREFIX": "renum:cache",
        "OPTIONS": {"pool_class": "realtime.topology.CachePool"},
    }
}

CHANNEL_LAYERS = {
    "default": {
        # Only control messages (disconnect, server-side subscribe) travel through the channel
        # layer, one channel per server process (realtime.control); data fan-out goes through
        # realtime.hub. The backend is channels_redis's, plus group changes in pipelines.
        "BACKEND": "realtime.layers.RealtimeRedisChannelLayer",
        "CONFIG": {
            # redis-py's default 5 s read timeout equals channels_redis's 5 s BZPOPMIN wait: an idle
            # receive would time out and end the consumer. Reads may take longer than the wait.
            # redis-py's pool raises (not waits) past max_connections: room for connect storms.
            "hosts": [redis_topology.channel_layer_host(REDIS_TOPOLOGY, socket_timeout=15, socket_connect_timeout=2,
                                                        max_connections=2000)],
            # Under the realtime prefix: deployments (and test runs) sharing a Redis stay apart.
            "prefix": os.environ.get("REALTIME_KEY_PREFIX", "renum:rt") + ":layer",
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
    # with one key per command (realtime/layers.py).
    CHANNEL_LAYERS["default"]["BACKEND"] = "realtime.layers.ClusterChannelLayer"
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

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_ACCESS_LIFETIME_S", "900"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("JWT_REFRESH_LIFETIME_S", "86400"))),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
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
    "KEY_PREFIX": os.environ.get("REALTIME_KEY_PREFIX", "renum:rt"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [conn=%(connection_id)s user=%(user_id)s] %(message)s"},
        "json": {"()": "realtime.logs.JsonFormatter"},
    },
    "filters": {"connection": {"()": "realtime.logs.ConnectionContextFilter"}},
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
