"""The ``RENUM_EXECUTIONS`` settings dict, with documented defaults, read through the
project's one accessor (``realtime.conf.AppSettings``).

``renum/settings.py`` fills it from the environment (the only place the environment is read);
a key it does not set takes the default below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realtime.conf import AppSettings

DEFAULTS: dict[str, Any] = {
    # Keys of external runners, ``Authorization: Runner <key>`` (kept for runners configured
    # before scoped API keys): they hold the ``executions`` scope only. Empty: none.
    "RUNNER_KEYS": [],
    # The demo runner (``POST /api/executions/`` by a user starts threads in the web process):
    # on in development, off in production settings. Off, users get 403 and only services
    # create executions.
    "DEMO_ENABLED": False,
    # The pace of a demo run when the request does not say, and its bounds: a request over
    # DEMO_MAX_STEPS or DEMO_MAX_DURATION_S (steps x interval) is refused with 400.
    "DEMO_STEPS": 10,
    "DEMO_INTERVAL_S": 1.0,
    "DEMO_MAX_STEPS": 100,
    "DEMO_MAX_DURATION_S": 300.0,
    # Demo runs queued or running at once (each holds a thread and a database connection):
    # per team, per user, and in the whole deployment. More are refused with 429.
    "DEMO_MAX_RUNNING_PER_TEAM": 2,
    "DEMO_MAX_RUNNING_PER_USER": 2,
    "DEMO_MAX_RUNNING": 20,
    # Page size of GET /api/executions/.
    "PAGE_SIZE": 50,
    # The account ``manage.py demo_setup`` creates (or resets): a staff user owning the demo team.
    "DEMO_USERNAME": "demo",
    "DEMO_PASSWORD": "demo-password",
}


setting: Callable[[str], Any] = AppSettings("RENUM_EXECUTIONS", DEFAULTS).get
