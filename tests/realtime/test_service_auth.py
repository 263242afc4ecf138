"""Scoped service keys: parsing, scopes per API, both schemes, and malformed headers."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from realtime.service_auth import ServiceKey, known_scopes, parse_api_key, register_scope
from realtime.storage import redis as rt_redis
from realtime.storage import streams

PUBLISH = {"channel": "broadcast", "type": "system_event", "payload": {"hello": 1}}


def _keys(settings, *entries: str) -> None:
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": list(entries)}


def _client(authorization: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=authorization)


def test_a_key_without_scopes_keeps_every_scope_and_scopes_limit_it():
    assert parse_api_key("plain") == ServiceKey(b"plain", frozenset({"publish", "notifications", "executions"}))
    assert parse_api_key(" k2:publish+notifications ") == ServiceKey(b"k2", frozenset({"publish", "notifications"}))


def test_the_domain_apps_register_their_scopes_and_a_name_keeps_its_meaning():
    # realtime defines publish; the notifications and executions apps add theirs when Django starts.
    assert known_scopes() == {"publish", "notifications", "executions"}

    register_scope("notifications", "POST /api/notifications/: persisted notifications")  # the same: a no-op
    with pytest.raises(ImproperlyConfigured, match="already registered"):
        register_scope("notifications", "something else")
    assert known_scopes() == {"publish", "notifications", "executions"}


@pytest.mark.parametrize("entry", ["secret123:publsh", "secret123:", "secret123:publish+nope"])
def test_an_unknown_scope_is_a_configuration_error_that_names_no_key(entry):
    with pytest.raises(ImproperlyConfigured) as error:
        parse_api_key(entry)

    assert "has unknown or no scopes" in str(error.value)
    assert "secret123" not in str(error.value)


def test_an_empty_key_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="must not be empty"):
        parse_api_key(":publish")


def test_each_api_checks_its_own_scope(db, settings):
    _keys(settings, "pub-only:publish", "notify-only:notifications")

    as_publisher = _client("ApiKey pub-only").post("/api/realtime/publish/", PUBLISH, format="json")
    as_notifier = _client("ApiKey notify-only").post("/api/realtime/publish/", PUBLISH, format="json")
    notifier_creates = _client("ApiKey notify-only").post(
        "/api/notifications/", {"everyone": True, "title": "hi"}, format="json")
    publisher_creates = _client("ApiKey pub-only").post(
        "/api/notifications/", {"everyone": True, "title": "hi"}, format="json")

    assert (as_publisher.status_code, as_notifier.status_code) == (201, 403)
    assert (notifier_creates.status_code, publisher_creates.status_code) == (201, 403)
    assert rt_redis.sync_client().xlen(streams.history_key("broadcast")) == 1


@pytest.mark.parametrize("header", [
    "ApiKey \xe9x", "ApiKey \u00ff\u00fe", "ApiKey a b", "ApiKey ", "Runner \xe9", "APIKEY wrong",
])
def test_a_malformed_or_wrong_key_is_401_and_never_shows_a_key(db, settings, header):
    _keys(settings, "the-real-secret-key")
    settings.DEBUG = True

    response = _client(header).post("/api/realtime/publish/", PUBLISH, format="json")

    assert response.status_code == 401
    assert b"the-real-secret-key" not in response.content


def test_runner_keys_hold_only_the_executions_scope_under_either_scheme(db, settings):
    _keys(settings)
    settings.RENUM_EXECUTIONS = {"RUNNER_KEYS": ["runner-key"]}

    publish = _client("Runner runner-key").post("/api/realtime/publish/", PUBLISH, format="json")
    publish_as_api_key = _client("ApiKey runner-key").post("/api/realtime/publish/", PUBLISH, format="json")

    assert (publish.status_code, publish_as_api_key.status_code) == (403, 403)


def test_a_service_key_cannot_read_a_users_inbox(db, settings):
    _keys(settings, "svc")

    assert _client("ApiKey svc").get("/api/notifications/").status_code == 403
    assert _client("ApiKey svc").get("/api/notifications/unread-count/").status_code == 401


def test_a_misconfigured_key_fails_the_system_checks(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    _keys(settings, "good", "secret123:publsh")

    with pytest.raises(SystemCheckError) as error:
        call_command("check")

    assert "realtime.E100" in str(error.value)
    assert "secret123" not in str(error.value)
