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
from renum.settings import env_bool  # noqa: E402

DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# The proxy terminates TLS and says so in X-Forwarded-Proto (docs/operations.md); uvicorn
# believes proxy headers only from the addresses in --forwarded-allow-ips.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only: plain-HTTP requests are redirected, except the probes and the scrape, which
# load balancers and Prometheus send to the process directly.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a commitment browsers ship for months: the operator opts in.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = ["security.W021"]  # "HSTS preload not set": off by the choice above
# The demo runner starts a thread per run inside the web process: off unless asked for.
RENUM_EXECUTIONS = {**RENUM_EXECUTIONS, "DEMO_ENABLED": env_bool("EXECUTION_DEMO_ENABLED", False)}  # noqa: F405
