"""The ``RENUM_EXECUTIONS`` settings dict, with documented defaults, read through one accessor.

Each default may come from an environment variable, so deployments can configure the app
without editing ``renum/settings.py``; a key set in ``settings.RENUM_EXECUTIONS`` wins.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _defaults() -> dict[str, Any]:
    # Built on each read, not at import, so a changed environment (tests, reloads) is seen.
    return {
        # Keys of external runners for POST /api/executions/<id>/progress/
        # (``Authorization: Runner <key>``). Empty: the endpoint refuses everyone.
        "RUNNER_KEYS": _env_list("EXECUTION_RUNNER_KEYS"),
        # The demo run that POST /api/executions/ starts: how many steps, how far apart.
        "DEMO_STEPS": int(os.environ.get("EXECUTION_DEMO_STEPS", "10")),
        "DEMO_INTERVAL_S": float(os.environ.get("EXECUTION_DEMO_INTERVAL_S", "1.0")),
        # Page size of GET /api/executions/.
        "PAGE_SIZE": 50,
    }


def setting(name: str) -> Any:
    """Return ``settings.RENUM_EXECUTIONS[name]``, or its default when the project does not set it."""
    overrides = getattr(settings, "RENUM_EXECUTIONS", {})
    if name in overrides:
        return overrides[name]
    defaults = _defaults()
    if name not in defaults:
        raise KeyError(f"unknown RENUM_EXECUTIONS setting {name!r}")
    return defaults[name]
