"""Admin of teams and executions: the changelist, the progress buckets, memberships through the services."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site

from executions.admin import ProgressBucketFilter
from executions.models import Execution, TeamMembership
from executions.services import execution_create, execution_start, execution_update_progress

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_user):
    """A Django test client logged in as a superuser."""
    admin = make_user(username="admin", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


def _at(team, progress: int) -> Execution:
    execution = execution_start(execution=execution_create(team=team))
    return execution_update_progress(execution=execution, progress=progress) if progress else execution


@pytest.mark.parametrize("bucket, expected", [
    ("0-25", [0, 24]), ("25-50", [25]), ("50-75", [74]), ("75-100", [75, 99]), ("100", [100]),
])
def test_progress_buckets(team, rf, bucket, expected):
    for progress in (0, 24, 25, 74, 75, 99, 100):
        _at(team, progress)
    request = rf.get("/", {"progress_bucket": bucket})
    request.user = None
    model_admin = site._registry[Execution]
    bucket_filter = ProgressBucketFilter(request, {"progress_bucket": [bucket]}, Execution, model_admin)

    progresses = sorted(bucket_filter.queryset(request, Execution.objects.all()).values_list("progress", flat=True))

    assert progresses == expected


def test_execution_changelist_filters_by_status_and_bucket(admin_client, team):
    low, high = _at(team, 10), _at(team, 90)

    page = admin_client.get("/admin/executions/execution/", {"progress_bucket": "75-100", "status": "running"})

    assert page.status_code == 200
    assert str(high.id) in page.content.decode() and str(low.id) not in page.content.decode()


def test_admin_cancel_action_fails_active_executions(admin_client, team):
    execution = _at(team, 10)

    admin_client.post("/admin/executions/execution/", {
        "action": "cancel_executions", "_selected_action": [str(execution.id)],
    })

    stored = Execution.objects.get(pk=execution.pk)
    assert (stored.status, stored.error) == ("failed", "cancelled by admin")


def test_team_inline_adds_and_removes_members_through_the_services(admin_client, team, member, make_user):
    newcomer = make_user(username="newcomer")
    membership = TeamMembership.objects.get(team=team, user=member)
    form = {
        "name": team.name, "slug": team.slug,
        "memberships-TOTAL_FORMS": "2", "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-id": str(membership.pk), "memberships-0-team": str(team.pk),
        "memberships-0-user": str(member.pk), "memberships-0-role": "owner", "memberships-0-DELETE": "on",
        "memberships-1-team": str(team.pk), "memberships-1-user": str(newcomer.pk), "memberships-1-role": "member",
    }

    response = admin_client.post(f"/admin/executions/team/{team.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(TeamMembership.objects.filter(team=team).values_list("user__username", "role")) == [
        ("newcomer", "member")
    ]
