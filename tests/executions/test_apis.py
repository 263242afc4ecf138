"""REST API of executions: visibility, filters, demo creation, cancel, and the runner progress endpoint."""

from __future__ import annotations

import time
import uuid

import pytest
from rest_framework.test import APIClient

from executions.models import Execution
from executions.services import execution_complete, execution_create, execution_start, execution_update_progress
from tests.conftest import access_token_for
from tests.executions.conftest import published_payloads

pytestmark = pytest.mark.django_db

RUNNER_KEY = "runner-key-123"


def _client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    return client


def _runner_client(key: str | None = RUNNER_KEY) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Runner {key}")
    return client


@pytest.fixture
def runner_keys(settings):
    """The project accepts RUNNER_KEY from runners."""
    settings.RENUM_EXECUTIONS = {"RUNNER_KEYS": ["other-key", RUNNER_KEY]}


@pytest.fixture
def running(team):
    """A running execution of ``team``."""
    return execution_start(execution=execution_create(team=team))


def test_list_shows_only_executions_of_the_callers_teams(team, member, outsider, make_team):
    mine = execution_create(team=team)
    execution_create(team=make_team(outsider))

    response = _client_for(member).get("/api/executions/")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(mine.id)]


def test_list_filters_by_team_and_status(member, make_team):
    first, second = make_team(member), make_team(member)
    queued = execution_create(team=first)
    running = execution_start(execution=execution_create(team=first))
    other = execution_create(team=second)
    client = _client_for(member)

    by_team = client.get("/api/executions/", {"team": first.id}).json()["results"]
    by_status = client.get("/api/executions/", {"status": "queued"}).json()["results"]
    by_both = client.get("/api/executions/", {"team": first.id, "status": "running"}).json()["results"]

    assert {row["id"] for row in by_team} == {str(queued.id), str(running.id)}
    assert {row["id"] for row in by_status} == {str(queued.id), str(other.id)}
    assert [row["id"] for row in by_both] == [str(running.id)]


def test_list_filter_of_another_team_is_empty(member, outsider, make_team):
    foreign = make_team(outsider)
    execution_create(team=foreign)

    response = _client_for(member).get("/api/executions/", {"team": foreign.id})

    assert response.json()["results"] == []


def test_list_refuses_a_bad_status_filter(member, team):
    response = _client_for(member).get("/api/executions/", {"status": "paused"})

    assert response.status_code == 400
    assert list(response.json()) == ["status"]


@pytest.mark.parametrize("team_filter", ["1" * 21, str(2**63), "-1", "0", "x"])
def test_list_refuses_a_team_filter_out_of_the_id_range_with_400(member, team, team_filter):
    response = _client_for(member).get("/api/executions/", {"team": team_filter})

    assert response.status_code == 400
    assert list(response.json()) == ["team"]


def test_list_is_paginated_newest_first_with_a_cursor(member, team, settings):
    settings.RENUM_EXECUTIONS = {"PAGE_SIZE": 2}
    created = [execution_create(team=team) for _ in range(3)]
    client = _client_for(member)

    first = client.get("/api/executions/").json()
    second = client.get(first["next"]).json()

    assert [row["id"] for row in first["results"] + second["results"]] == [str(e.id) for e in reversed(created)]
    assert second["next"] is None


def test_list_needs_authentication():
    assert APIClient().get("/api/executions/").status_code == 401


def test_detail_shows_the_current_state_to_a_member(member, running):
    execution_update_progress(execution=running, progress=25, current_step="planning")

    body = _client_for(member).get(f"/api/executions/{running.id}/").json()

    assert {k: body[k] for k in ("id", "team", "status", "progress", "current_step", "result", "error")} == {
        "id": str(running.id), "team": running.team_id, "status": "running", "progress": 25,
        "current_step": "planning", "result": None, "error": None,
    }
    assert body["updated_at"].endswith("Z")


def test_detail_is_404_for_non_members_and_unknown_ids(outsider, running):
    client = _client_for(outsider)

    assert client.get(f"/api/executions/{running.id}/").status_code == 404
    assert client.get(f"/api/executions/{uuid.uuid4()}/").status_code == 404


def test_create_starts_a_demo_execution_of_the_callers_team(member, team, settings):
    settings.RENUM_EXECUTIONS = {"DEMO_ENABLED": True, "DEMO_INTERVAL_S": 60.0}

    response = _client_for(member).post("/api/executions/", {"team": team.id, "steps": 3}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["team"], body["status"], body["progress"], body["created_by"]) == (team.id, "running", 0, member.id)
    assert Execution.objects.filter(pk=body["id"], status="running").exists()


def test_create_for_a_team_the_caller_is_not_in_is_404(member, outsider, make_team):
    foreign = make_team(outsider)

    response = _client_for(member).post("/api/executions/", {"team": foreign.id}, format="json")

    assert response.status_code == 404
    assert Execution.objects.count() == 0


def test_create_needs_a_team(member):
    response = _client_for(member).post("/api/executions/", {}, format="json")

    assert (response.status_code, list(response.json())) == (400, ["team"])


@pytest.mark.django_db(transaction=True)
def test_the_demo_runs_in_the_background_to_completion(member, team):
    started = time.monotonic()

    response = _client_for(member).post(
        "/api/executions/", {"team": team.id, "steps": 4, "interval_s": 0.4}, format="json"
    )

    assert time.monotonic() - started < 1.2  # the request did not wait for the 1.6 s run
    assert response.status_code == 201, response.content
    execution_id = response.json()["id"]
    deadline = time.monotonic() + 10
    while Execution.objects.get(pk=execution_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    # The last update is published after its commit (by the outbox relay when Redis was slow to answer).
    while len(published_payloads(f"execution:{execution_id}")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(u["status"], u["progress"]) for u in published_payloads(f"execution:{execution_id}")] == [
        ("queued", 0), ("running", 0), ("running", 25), ("running", 50), ("running", 75), ("completed", 100),
    ]


def test_cancel_by_a_member(member, running):
    response = _client_for(member).post(f"/api/executions/{running.id}/cancel/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error"]) == ("failed", "cancelled by member")


def test_cancel_by_a_non_member_is_404_and_changes_nothing(outsider, running):
    response = _client_for(outsider).post(f"/api/executions/{running.id}/cancel/")

    assert response.status_code == 404
    assert Execution.objects.get(pk=running.pk).status == "running"


def test_cancel_of_an_ended_execution_is_400(member, running):
    execution_complete(execution=running)

    response = _client_for(member).post(f"/api/executions/{running.id}/cancel/")

    assert response.status_code == 400
    assert response.json() == {"detail": "cannot cancel an execution that already ended (completed)"}


def test_runner_reports_progress_with_a_good_key(runner_keys, running):
    response = _runner_client().post(
        f"/api/executions/{running.id}/progress/", {"progress": 40, "current_step": "drafting"}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["progress"], response.json()["current_step"]) == (40, "drafting")
    stored = Execution.objects.get(pk=running.pk)
    assert (stored.progress, stored.current_step) == (40, "drafting")


def test_runner_walks_a_queued_execution_to_completion(runner_keys, team):
    execution = execution_create(team=team)
    client = _runner_client()
    url = f"/api/executions/{execution.id}/progress/"

    started = client.post(url, {"status": "running", "progress": 10}, format="json")
    completed = client.post(url, {"status": "completed", "result": {"ok": True}}, format="json")

    assert (started.status_code, started.json()["status"], started.json()["progress"]) == (200, "running", 10)
    assert (completed.status_code, completed.json()["status"], completed.json()["progress"]) == (200, "completed", 100)
    assert completed.json()["result"] == {"ok": True}


def test_runner_reports_a_failure(runner_keys, running):
    response = _runner_client().post(
        f"/api/executions/{running.id}/progress/", {"status": "failed", "error": "out of tokens"}, format="json"
    )

    assert (response.status_code, response.json()["status"], response.json()["error"]) == (
        200, "failed", "out of tokens"
    )


@pytest.mark.parametrize("key", ["wrong-key", "", None])
def test_runner_endpoint_refuses_bad_and_missing_keys(runner_keys, running, key):
    client = _runner_client(key) if key is not None else _runner_client(None)

    response = client.post(f"/api/executions/{running.id}/progress/", {"progress": 40}, format="json")

    assert response.status_code == 401
    assert Execution.objects.get(pk=running.pk).progress == 0


def test_runner_endpoint_refuses_user_tokens(runner_keys, member, running):
    response = _client_for(member).post(f"/api/executions/{running.id}/progress/", {"progress": 40}, format="json")

    assert response.status_code == 401


def test_runner_endpoint_refuses_everyone_when_no_keys_are_configured(settings, monkeypatch, running):
    monkeypatch.delenv("EXECUTION_RUNNER_KEYS", raising=False)
    settings.RENUM_EXECUTIONS = {}

    url = f"/api/executions/{running.id}/progress/"

    response = _runner_client("anything").post(url, {"progress": 1}, format="json")

    assert response.status_code == 401


def test_runner_keys_are_read_from_the_settings(settings, running):
    settings.RENUM_EXECUTIONS = {"RUNNER_KEYS": ["alpha", "beta"]}

    response = _runner_client("beta").post(f"/api/executions/{running.id}/progress/", {"progress": 5}, format="json")

    assert response.status_code == 200


def test_runner_progress_going_down_is_400(runner_keys, running):
    execution_update_progress(execution=running, progress=60)

    response = _runner_client().post(f"/api/executions/{running.id}/progress/", {"progress": 30}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": "progress cannot go down: it is 60, got 30"}


@pytest.mark.parametrize("progress", [-5, 101])
def test_runner_progress_out_of_range_is_400(runner_keys, running, progress):
    response = _runner_client().post(
        f"/api/executions/{running.id}/progress/", {"progress": progress}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["progress"]


def test_runner_progress_on_an_ended_execution_is_400(runner_keys, running):
    execution_complete(execution=running)

    response = _runner_client().post(f"/api/executions/{running.id}/progress/", {"progress": 100}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "cannot report progress of an execution that is completed; only of a running one"
    }


@pytest.mark.parametrize("body, field", [
    ({}, "non_field_errors"),
    ({"status": "failed"}, "error"),
    ({"error": "x"}, "error"),
    ({"result": 1, "status": "running"}, "result"),
    ({"status": "queued"}, "status"),
])
def test_runner_report_must_be_consistent(runner_keys, running, body, field):
    response = _runner_client().post(f"/api/executions/{running.id}/progress/", body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_runner_report_of_an_unknown_execution_is_404(runner_keys):
    response = _runner_client().post(f"/api/executions/{uuid.uuid4()}/progress/", {"progress": 1}, format="json")

    assert response.status_code == 404


def test_teams_lists_the_callers_teams_with_their_role(member, outsider, make_team):
    owned = make_team(member, name="Alpha")
    joined = make_team(outsider, member, name="Beta")
    make_team(outsider, name="Gamma")

    response = _client_for(member).get("/api/teams/")

    assert [(t["id"], t["name"], t["slug"], t["role"]) for t in response.json()] == [
        (owned.id, "Alpha", owned.slug, "owner"), (joined.id, "Beta", joined.slug, "member"),
    ]


def test_openapi_schema_documents_the_endpoints(member):
    response = _client_for(member).get("/api/schema/", {"format": "json"})

    paths = response.json()["paths"]
    assert {"/api/executions/", "/api/executions/{execution_id}/", "/api/executions/{execution_id}/cancel/",
            "/api/executions/{execution_id}/progress/", "/api/teams/"} <= set(paths)
