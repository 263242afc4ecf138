"""``manage.py demo_setup``: the quick start's demo user (staff, for the admin) and demo team."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from executions.conf import setting
from executions.models import Team
from executions.services import team_create, team_membership_add


class Command(BaseCommand):
    """Create or reset the demo account used by the quick start."""

    help = "Create the demo user and the demo team it owns, and print the credentials."

    def handle(self, *args, **options) -> None:
        """Idempotent: running it twice resets the password and keeps the data."""
        username, password = setting("DEMO_USERNAME"), setting("DEMO_PASSWORD")
        user, _ = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        team = Team.objects.filter(slug="demo").first()
        if team is None:
            team = team_create(name="Demo team", slug="demo", owner=user)
        elif not team.memberships.filter(user=user).exists():
            team_membership_add(team=team, user=user, role="owner")
        self.stdout.write(f"Demo team: {team.name} (id {team.pk})")
        self.stdout.write(self.style.SUCCESS(f"Demo user: {username} / {password} (staff: can open /admin/)"))
