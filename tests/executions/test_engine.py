"""Executions driven by an engine's service key, cancel propagation, the demo runner's bounds, team events."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from executions.models import Execution
from executions.runner import demo_execution_create
from executions.services import (
    execution_cancel,
    execution_create,
    team_membership_add,
    team_membership_remove,
    team_rename,
)
from tests.conftest import access_token_for
from tests.executions.conftest import published

KEY = "engine-key"


@pytest.fixture
def engine(settings) -> APIClient:
    """A client holding a key with only the executions scope."""
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": [f"{KEY}:executions", "pub:publish"]}
    return APIClient(HTTP_AUTHORIZATION=f"ApiKey {KEY}")


def _user_client(user) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")


def test_an_engine_creates_a_queued_execution_with_its_external_id_and_drives_it(
    engine, team, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = engine.post("/api/executions/", {"team": team.pk, "external_id": "run-42"}, format="json")
    execution_id = created.json()["id"]
    url = f"/api/executions/{execution_id}/progress/"
    with django_capture_on_commit_callbacks(execute=True):
        reports = [engine.post(url, body, format="json") for body in (
            {"status": "running"}, {"progress": 50, "current_step": "half"},
            {"status": "completed", "result": {"ok": True}},
        )]

    assert created.status_code == 201
    assert (created.json()["status"], created.json()["external_id"], created.json()["created_by"]) == (
        "queued", "run-42", None)
    assert [r.status_code for r in reports] == [200, 200, 200]
    assert [(p["payload"]["status"], p["payload"]["progress"]) for p in published(f"execution:{execution_id}")] == [
        ("queued", 0), ("running", 0), ("running", 50), ("completed", 100),
    ]
    assert Execution.objects.get(pk=execution_id).result == {"ok": True}


def test_an_external_id_is_unique_within_a_team(engine, team, make_team, member):
    first = engine.post("/api/executions/", {"team": team.pk, "external_id": "x"}, format="json")
    again = engine.post("/api/executions/", {"team": team.pk, "external_id": "x"}, format="json")
    other_team = engine.post("/api/executions/", {"team": make_team(member).pk, "external_id": "x"}, format="json")

    assert (first.status_code, again.status_code, other_team.status_code) == (201, 409, 201)
    assert again.json()["detail"].startswith(f"team {team.pk} already has an execution")


def test_engine_requests_need_the_executions_scope_and_a_real_team(engine, team):
    publisher = APIClient(HTTP_AUTHORIZATION="ApiKey pub")

    assert publisher.post("/api/executions/", {"team": team.pk}, format="json").status_code == 403
    assert engine.post("/api/executions/", {"team": 987654}, format="json").status_code == 404
    assert engine.post("/api/executions/", {"team": team.pk, "steps": 3}, format="json").status_code == 400
    assert engine.get("/api/executions/").status_code == 403
    assert Execution.objects.count() == 0


def test_a_cancel_reaches_the_engine_by_poll_and_by_409_on_its_next_report(engine, team, member):
    execution = execution_create(team=team)
    engine.post(f"/api/executions/{execution.id}/progress/", {"status": "running"}, format="json")

    cancelled = _user_client(member).post(f"/api/executions/{execution.id}/cancel/")
    polled = engine.get(f"/api/executions/{execution.id}/")
    report = engine.post(f"/api/executions/{execution.id}/progress/", {"progress": 60}, format="json")

    assert cancelled.status_code == 200
    assert (polled.json()["status"], polled.json()["error"]) == ("failed", "cancelled by member")
    assert polled.json()["cancelled_at"] is not None
    assert (report.status_code, report.json()) == (409, {"detail": "the execution was cancelled; stop running it"})


def test_the_demo_runner_is_refused_where_it_is_off(settings, member, team):
    settings.RENUM_EXECUTIONS = {"DEMO_ENABLED": False}

    response = _user_client(member).post("/api/executions/", {"team": team.pk}, format="json")

    assert response.status_code == 403
    assert Execution.objects.count() == 0


@pytest.mark.parametrize(("body", "setting"), [
    ({"steps": 101}, {}),
    ({"steps": 100, "interval_s": 4.0}, {}),
    ({"steps": 5}, {"DEMO_MAX_STEPS": 4}),
])
def test_the_demo_runner_refuses_runs_beyond_its_bounds(settings, member, team, body, setting):
    settings.RENUM_EXECUTIONS = {"DEMO_ENABLED": True, **setting}

    response = _user_client(member).post("/api/executions/", {"team": team.pk, **body}, format="json")

    assert response.status_code == 400
    assert Execution.objects.count() == 0


def test_the_demo_runner_limits_runs_per_team_and_per_user(settings, member, make_user, make_team):
    settings.RENUM_EXECUTIONS = {"DEMO_ENABLED": True, "DEMO_MAX_RUNNING_PER_TEAM": 2, "DEMO_MAX_RUNNING_PER_USER": 3}
    other = make_user()
    team = make_team(member, other)
    second_team = make_team(member)
    third_team = make_team(member)

    # Not committed (the test's transaction), so no thread starts: the rows alone are counted.
    for _ in range(2):
        demo_execution_create(team=team, created_by=member, steps=1, interval_s=0)
    per_team = _user_client(other).post("/api/executions/", {"team": team.pk}, format="json")
    demo_execution_create(team=second_team, created_by=member, steps=1, interval_s=0)
    per_user = _user_client(member).post("/api/executions/", {"team": third_team.pk}, format="json")

    assert (per_team.status_code, per_team.json()["detail"]) == (
        429, "this team already has its maximum of demo runs in progress")
    assert (per_user.status_code, per_user.json()["detail"]) == (
        429, "you already have your maximum of demo runs in progress")
    assert Execution.objects.filter(demo=True).count() == 3


def test_the_demo_runner_limits_threads_per_process(settings, member, team, monkeypatch):
    settings.RENUM_EXECUTIONS = {"DEMO_ENABLED": True, "DEMO_MAX_RUNNING": 0}

    response = _user_client(member).post("/api/executions/", {"team": team.pk}, format="json")

    assert (response.status_code, response.json()["detail"]) == (
        429, "too many demo runs in progress on this server; try again later")


def test_a_cancelled_execution_is_marked_for_its_engine(team, member):
    execution = execution_create(team=team)

    cancelled = execution_cancel(execution=execution, user=member)

    assert (cancelled.status, cancelled.error) == ("failed", "cancelled by member")
    assert cancelled.cancelled_at is not None


# ------------------------------------------------------------------ team events


def test_membership_changes_and_renames_are_published_to_the_team_on_commit(
    team, member, make_user, django_capture_on_commit_callbacks
):
    joiner = make_user(username="joiner")
    old_name = team.name
    channel = f"team:{team.pk}"
    before = len(published(channel))

    with django_capture_on_commit_callbacks(execute=True):
        team_membership_add(team=team, user=joiner)
    with django_capture_on_commit_callbacks(execute=True):
        team_membership_add(team=team, user=joiner)  # same role: nothing to say
    with django_capture_on_commit_callbacks(execute=True):
        team_membership_add(team=team, user=joiner, role="owner")
    with django_capture_on_commit_callbacks(execute=True):
        team_rename(team=team, name="Renamed")
    with django_capture_on_commit_callbacks(execute=True):
        team_rename(team=team, name="Renamed")  # same name: nothing to say
    with django_capture_on_commit_callbacks(execute=True):
        team_membership_remove(team=team, user=joiner)

    team_id, user_id = str(team.pk), str(joiner.pk)
    assert [(e["type"], e["payload"]) for e in published(channel)[before:]] == [
        ("team_member_joined", {"team_id": team_id, "user_id": user_id, "username": "joiner", "role": "member"}),
        ("team_member_role_changed", {"team_id": team_id, "user_id": user_id, "username": "joiner", "role": "owner",
                                      "previous_role": "member"}),
        ("team_renamed", {"team_id": team_id, "name": "Renamed", "previous_name": old_name}),
        ("team_member_left", {"team_id": team_id, "user_id": user_id, "username": "joiner", "role": "owner"}),
    ]


def test_a_rolled_back_membership_change_publishes_nothing(team, make_user):
    from django.db import transaction

    joiner = make_user()
    before = published(f"team:{team.pk}")
    with pytest.raises(RuntimeError), transaction.atomic():
        team_membership_add(team=team, user=joiner)
        raise RuntimeError

    assert published(f"team:{team.pk}") == before


def test_the_admin_rename_sends_team_renamed(client, make_user, team, django_capture_on_commit_callbacks):
    admin_user = make_user(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    form = {"name": "From admin", "slug": team.slug, "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0", "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000"}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/executions/team/{team.pk}/change/", form)

    assert response.status_code == 302
    assert published(f"team:{team.pk}")[-1]["type"] == "team_renamed"
    assert published(f"team:{team.pk}")[-1]["payload"]["name"] == "From admin"
