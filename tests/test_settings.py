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


def test_every_redis_key_of_a_deployment_is_under_its_prefix(settings):
    from django.core.cache import cache

    prefix = settings.RENUM_REALTIME["KEY_PREFIX"]

    assert cache.make_key("throttle_anon_127.0.0.1").startswith(prefix + ":cache:")
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] == prefix + ":layer"


def test_the_key_prefix_comes_from_the_environment():
    script = ("import django; django.setup(); from django.conf import settings; from django.core.cache import cache; "
              "print(settings.RENUM_REALTIME['KEY_PREFIX'], cache.make_key('k'))")
    env = dict(os.environ, REALTIME_KEY_PREFIX="staging:rt", DJANGO_SETTINGS_MODULE="renum.settings")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["staging:rt", "staging:rt:cache:1:k"]
