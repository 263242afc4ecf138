"""Production settings: PostgreSQL, an external Redis and an explicit secret key are required."""

import os

from django.core.exceptions import ImproperlyConfigured

_missing = [name for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
if _missing:
    raise ImproperlyConfigured(
        "production settings need these environment variables: " + ", ".join(_missing)
    )

os.environ.setdefault("DEBUG", "false")

from renum.settings import *  # noqa: E402,F403

DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The demo runner starts a thread per run inside the web process: off unless asked for.
RENUM_EXECUTIONS = {**RENUM_EXECUTIONS, "DEMO_ENABLED": env_bool("EXECUTION_DEMO_ENABLED", False)}  # noqa: F405
