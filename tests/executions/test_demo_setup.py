"""``manage.py demo_setup``: the quick start's demo account and team (executions' command)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from executions.models import Team

pytestmark = pytest.mark.django_db


def test_demo_setup_creates_the_configured_staff_user_owning_the_demo_team_and_resets_it_when_run_again(settings):
    settings.RENUM_EXECUTIONS = {"DEMO_USERNAME": "ada", "DEMO_PASSWORD": "first-password"}
    call_command("demo_setup", stdout=StringIO())
    settings.RENUM_EXECUTIONS = {"DEMO_USERNAME": "ada", "DEMO_PASSWORD": "second-password"}
    out = StringIO()

    call_command("demo_setup", stdout=out)

    user = get_user_model().objects.get(username="ada")
    team = Team.objects.get(slug="demo")
    assert (user.is_staff, user.is_superuser, user.check_password("second-password")) == (True, True, True)
    assert list(team.memberships.values_list("user__username", "role")) == [("ada", "owner")]
    assert out.getvalue().splitlines()[-1] == "Demo user: ada / second-password (staff: can open /admin/)"
