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


def test_production_settings_pass_the_deploy_check_without_security_warnings():
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="renum.settings_production", SECRET_KEY="k" * 20 + "-Qz9" * 10,
               DATABASE_URL="sqlite:////tmp/renum-settings-check.sqlite3", REDIS_URL="redis://127.0.0.1:6379/0")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert "security." not in result.stdout + result.stderr, result.stdout + result.stderr
    script = ("import django; django.setup(); from django.conf import settings as s; "
              "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
              "s.SECURE_HSTS_PRELOAD, s.SECURE_REDIRECT_EXEMPT)")
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.stdout.strip() == "True 31536000 True False ['^healthz$', '^readyz$', '^metrics$']"
    configured = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=dict(env, SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="600"))
    assert configured.stdout.split()[:2] == ["False", "600"]


def test_the_development_secret_key_file_is_readable_by_its_owner_only(tmp_path, settings):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="renum.settings", RENUM_VAR_DIR=str(tmp_path), REDIS_URL=settings.REDIS_URL)
    script = "import django; django.setup(); from django.conf import settings; print(len(settings.SECRET_KEY))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


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


def test_the_process_settings_come_from_the_environment_with_their_defaults(tmp_path):
    expression = ("(lambda s, rt, ex: [s.METRICS_TOKEN, s.PROMETHEUS_MULTIPROC_DIR, s.SERVE_STATIC, "
                  "rt('REDIS_POOL_SIZE'), rt('GC_THRESHOLDS'), ex('DEMO_USERNAME'), ex('DEMO_PASSWORD')])"
                  "(__import__('django.conf').conf.settings, __import__('realtime.conf').conf.setting, "
                  "__import__('executions.conf').conf.setting)")
    given = {"METRICS_TOKEN": "scrape", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "SERVE_STATIC": "yes",
             "REALTIME_REDIS_POOL_SIZE": "16", "REALTIME_GC_THRESHOLDS": "off", "DEMO_USERNAME": "ada",
             "DEMO_PASSWORD": "ada-password"}

    assert settings_value(expression) == "['', '', False, 64, '', 'demo', 'demo-password']"
    assert settings_value(expression, **given) == f"['scrape', '{tmp_path}', True, 16, 'off', 'ada', 'ada-password']"


def test_production_settings_turn_the_demo_runner_off_unless_asked():
    production = {"DJANGO_SETTINGS_MODULE": "renum.settings_production", "SECRET_KEY": "s" * 50,
                  "DATABASE_URL": "sqlite:////tmp/renum-settings-check.sqlite3", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    expression = "__import__('executions.conf').conf.setting('DEMO_ENABLED')"

    assert settings_value(expression, **production) == "False"
    assert settings_value(expression, **production, EXECUTION_DEMO_ENABLED="true") == "True"


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
        "realtime.storage.layers.ClusterChannelLayer", "redis+cluster://10.0.0.1:7000", False)
