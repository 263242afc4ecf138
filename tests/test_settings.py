"""Settings from the environment: production refuses to guess."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.live import ROOT


def run_check(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="renum.settings_production")
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


def test_production_settings_name_every_missing_variable():
    result = run_check(SECRET_KEY="s" * 50)

    assert result.returncode != 0
    assert "production settings need these environment variables: DATABASE_URL, REDIS_URL" in result.stderr


def test_production_settings_start_when_given_what_they_need():
    result = run_check(SECRET_KEY="s" * 50, DATABASE_URL="sqlite:////tmp/renum-settings-check.sqlite3",
                       REDIS_URL="redis://127.0.0.1:6379/0")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def settings_value(expression: str, **env: str) -> str:
    """What ``expression`` gives under the development settings, in a fresh process with ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTION_", "REALTIME_API"))}
    clean.update(env)
    clean.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", f"print({expression})"], cwd=ROOT,
                            env=clean, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_execution_runner_keys_and_the_demo_switch_come_from_the_environment():
    expression = "__import__('executions.conf').conf.setting('RUNNER_KEYS'), " \
                 "__import__('executions.conf').conf.setting('DEMO_ENABLED')"

    assert settings_value(expression) == "[] True"
    assert settings_value(expression, EXECUTION_RUNNER_KEYS="alpha, beta", EXECUTION_DEMO_ENABLED="false") == \
        "['alpha', 'beta'] False"


def test_production_settings_turn_the_demo_runner_off_unless_asked():
    production = {"DJANGO_SETTINGS_MODULE": "renum.settings_production", "SECRET_KEY": "s" * 50,
                  "DATABASE_URL": "sqlite:////tmp/renum-settings-check.sqlite3", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    expression = "__import__('executions.conf').conf.setting('DEMO_ENABLED')"

    assert settings_value(expression, **production) == "False"
    assert settings_value(expression, **production, EXECUTION_DEMO_ENABLED="true") == "True"
