"""``manage.py demo_setup``: the demo user of the quick start (staff, for the admin); prints credentials."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    """Create or reset the demo account used by the quick start."""

    help = "Create the demo user and print its credentials."

    def handle(self, *args, **options) -> None:
        """Idempotent: running it twice resets the password and keeps the data."""
        username = os.environ.get("DEMO_USERNAME", "demo")
        password = os.environ.get("DEMO_PASSWORD", "demo-password")
        user, _ = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(self.style.SUCCESS(f"Demo user: {username} / {password} (staff: can open /admin/)"))
