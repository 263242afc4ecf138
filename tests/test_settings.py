"""Settings from the environment: production refuses to guess."""

from __future__ import annotations

import json
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


def settings_of(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    clean.update(env, DJANGO_SETTINGS_MODULE="renum.settings")
    script = ("from django.conf import settings as s; import json; "
              "print(json.dumps([s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0], s.CACHES['default']['LOCATION']]))")
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {script}"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


def test_a_sentinel_redis_url_configures_the_channel_layer_and_the_cache():
    url = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/main/2"
    result = settings_of(REDIS_URL=url)

    assert result.returncode == 0, result.stderr
    host, location = json.loads(result.stdout)
    assert (host["sentinels"], host["master_name"], host["db"], host["password"]) == (
        [["10.0.0.1", 26379], ["10.0.0.2", 26379]], "main", 2, "pw")
    assert location == [url]


def test_a_malformed_redis_url_stops_the_settings_with_the_reason():
    result = settings_of(REDIS_URL="redis+sentinel://10.0.0.1:26379")

    assert result.returncode != 0
    assert "REDIS_URL: a Sentinel URL ends with /<master name> or /<master name>/<db>" in result.stderr


def test_a_cluster_redis_url_selects_the_cluster_channel_layer():
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    clean.update(REDIS_URL="redis+cluster://10.0.0.1:7000", DJANGO_SETTINGS_MODULE="renum.settings")
    script = ("import django; django.setup(); from django.conf import settings as s; import json; "
              "print(json.dumps(s.CHANNEL_LAYERS['default']))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr
    layer = json.loads(result.stdout)
    assert (layer["BACKEND"], layer["CONFIG"]["cluster_url"], "hosts" in layer["CONFIG"]) == (
        "realtime.layers.ClusterChannelLayer", "redis+cluster://10.0.0.1:7000", False)
