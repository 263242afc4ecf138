"""``run_demo_execution``: create an execution and walk it through N steps, for demos and load tests."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions.models import Execution, Team
from executions.runner import ExecutionRunner, demo_run


class Command(BaseCommand):
    """Create an execution of a team and report progress every ``--interval`` seconds."""

    help = "Create an execution of a team and walk it through --steps steps, --interval seconds apart."

    def add_arguments(self, parser: Any) -> None:
        """--team (id or slug), --steps, --interval, --fail-at."""
        parser.add_argument("--team", required=True, help="team id or slug")
        parser.add_argument("--steps", type=int, default=10)
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between steps")
        parser.add_argument("--fail-at", type=int, default=None, help="fail at this step (1-based) instead")

    def handle(self, *args: Any, team: str, steps: int, interval: float, fail_at: int | None, **options: Any) -> None:
        """Run the demo and print one line per update."""
        if steps < 1:
            raise CommandError("--steps must be at least 1")
        if interval < 0:
            raise CommandError("--interval cannot be negative")
        if fail_at is not None and not 1 <= fail_at <= steps:
            raise CommandError("--fail-at must be within 1..--steps")
        found = Team.objects.filter(slug=team).first() or (
            Team.objects.filter(pk=int(team)).first() if team.isdigit() else None
        )
        if found is None:
            raise CommandError(f"no team with id or slug {team!r}")
        runner = ExecutionRunner.create(team=found)
        self.stdout.write(f"execution {runner.execution_id} of team {found.pk} ({found.slug}): queued")
        final = demo_run(
            runner=runner, steps=steps, interval_s=interval, fail_at=fail_at, on_update=self._print_update
        )
        # A failure asked for with --fail-at is the demo working, so it is no command error.
        self.stdout.write(f"execution {final.id} ended {final.status}")

    def _print_update(self, execution: Execution) -> None:
        step = f" {execution.current_step}" if execution.current_step else ""
        line = f"execution {execution.id}: {execution.status} {execution.progress:3d}%{step}"
        self.stdout.write(line + (f" ({execution.error})" if execution.error else ""))
