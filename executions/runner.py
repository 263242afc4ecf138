"""A small Python API for runners that execute agent teams in this process.

::

    runner = ExecutionRunner.create(team=team)      # or ExecutionRunner(execution_id)
    runner.start()
    runner.progress(40, "researching")
    runner.complete({"summary": "..."})             # or runner.fail("model timed out")

Each call is one service call (one transaction, one publication to the team's and the
execution's channels), and raises the services' errors when the rules refuse it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from executions import services
from executions.conf import setting
from executions.models import Execution, Team

logger = logging.getLogger("executions.runner")

DEMO_STEP_NAMES = ("planning", "researching", "analysing", "drafting", "reviewing", "finalizing")


class ExecutionRunner:
    """Drives one execution through its life by calling the services."""

    def __init__(self, execution_id: uuid.UUID | str) -> None:
        self.execution_id = uuid.UUID(str(execution_id))

    @classmethod
    def create(cls, *, team: Team, created_by: Any = None) -> ExecutionRunner:
        """Create a queued execution of a team and return its runner."""
        return cls(services.execution_create(team=team, created_by=created_by).id)

    def execution(self) -> Execution:
        """The execution's current state, read from the database."""
        return Execution.objects.get(pk=self.execution_id)

    def start(self) -> Execution:
        """Mark the execution running."""
        return services.execution_start(execution=self.execution())

    def progress(self, progress: int, step: str | None = None) -> Execution:
        """Report progress (0..100, never lower than before) and optionally the current step."""
        return services.execution_update_progress(execution=self.execution(), progress=progress, current_step=step)

    def complete(self, result: Any = None) -> Execution:
        """End the execution successfully with a result."""
        return services.execution_complete(execution=self.execution(), result=result)

    def fail(self, error: str) -> Execution:
        """End the execution as failed with an error message."""
        return services.execution_fail(execution=self.execution(), error=error)


def demo_run(
    *,
    runner: ExecutionRunner,
    steps: int,
    interval_s: float,
    fail_at: int | None = None,
    on_update: Callable[[Execution], None] | None = None,
) -> Execution:
    """Walk a started or queued execution through ``steps`` demo steps, ``interval_s`` apart.

    At step ``fail_at`` (1-based) the run fails instead. Stops quietly when someone else ended
    the execution meanwhile (e.g. a member cancelled it), returning its final state.
    """
    if steps < 1:
        raise ValueError("a demo run needs at least one step")
    report = on_update or (lambda execution: None)
    try:
        execution = runner.execution()
        if execution.status == Execution.Status.QUEUED:
            execution = runner.start()
            report(execution)
        for step in range(1, steps + 1):
            # No database connection is held while sleeping: runs are bounded by count, and a
            # connection per sleeping run would still add up (the next query reconnects).
            # Inside a caller's transaction the connection is the caller's to keep.
            if not connection.in_atomic_block:
                connection.close()
            time.sleep(interval_s)
            name = f"step {step}/{steps}: {DEMO_STEP_NAMES[(step - 1) % len(DEMO_STEP_NAMES)]}"
            if fail_at is not None and step == fail_at:
                execution = runner.fail(f"demo failure at {name}")
                report(execution)
                return execution
            if step < steps:
                execution = runner.progress(step * 100 // steps, name)
            else:
                execution = runner.complete({"steps": steps, "summary": f"demo finished {steps} steps"})
            report(execution)
        return execution
    except services.ExecutionTransitionError:
        execution = runner.execution()
        if not execution.is_terminal:
            raise
        logger.info("demo run of %s stopped: execution is %s", runner.execution_id, execution.status)
        return execution


class DemoError(Exception):
    """The demo runner refuses to start a run."""


class DemoDisabledError(DemoError):
    """The demo runner is off here (production settings): executions come from an engine."""


class DemoBoundsError(DemoError):
    """A run longer than the demo's bounds (steps, duration)."""


class DemoLimitError(DemoError):
    """Too many demo runs going on for the team, the user, or this process."""


DEMO_THREAD_PREFIX = "demo-execution-"


def demo_threads_running() -> int:
    """Demo runs alive in this process: each is a thread that holds a database connection while it works."""
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(DEMO_THREAD_PREFIX))


def demo_run_in_background(*, execution_id: uuid.UUID, steps: int, interval_s: float) -> threading.Thread:
    """Run ``demo_run`` in a daemon thread so the request that asked for it returns at once."""

    def run() -> None:
        """Run the demo, then release this thread's database connection."""
        try:
            demo_run(runner=ExecutionRunner(execution_id), steps=steps, interval_s=interval_s)
        except Exception:
            logger.exception("demo run of %s failed", execution_id)
        finally:
            # A thread's connection is not closed by Django's request cycle; leaving it open
            # would leak one database connection per demo run.
            connection.close()

    thread = threading.Thread(target=run, name=f"{DEMO_THREAD_PREFIX}{execution_id}", daemon=True)
    thread.start()
    return thread


def demo_execution_create(*, team: Team, created_by: Any, steps: int, interval_s: float) -> Execution:
    """Create and start an execution of a team, then let a background demo run walk it to the end.

    Refused when the demo runner is off (``DemoDisabledError``), when the run would exceed
    ``DEMO_MAX_STEPS`` or ``DEMO_MAX_DURATION_S`` (``DemoBoundsError``), or when the team, the
    user or this process already has its maximum of demo runs going (``DemoLimitError``).
    The thread starts only after commit: before that it could not see the row, and a rolled
    back request must not leave a run going.
    """
    if not setting("DEMO_ENABLED"):
        raise DemoDisabledError("the demo runner is off here; executions are created by an engine's service key")
    if not 1 <= steps <= setting("DEMO_MAX_STEPS"):
        raise DemoBoundsError(f"steps must be within 1..{setting('DEMO_MAX_STEPS')}")
    if steps * interval_s > setting("DEMO_MAX_DURATION_S"):
        raise DemoBoundsError(f"a demo run may last at most {setting('DEMO_MAX_DURATION_S')} s (steps x interval_s)")
    # Threads are counted, not reserved: nothing can leak a slot, and Django runs sync views
    # of a process one after the other, so the count is current when the next request looks.
    if demo_threads_running() >= setting("DEMO_MAX_RUNNING"):
        raise DemoLimitError("too many demo runs in progress on this server; try again later")
    with transaction.atomic():
        # The team's and the user's rows are locked so that two requests (in two processes)
        # cannot both see room for one more run.
        Team.objects.select_for_update().filter(pk=team.pk).first()
        get_user_model().objects.select_for_update().filter(pk=created_by.pk).first()
        active = Execution.objects.filter(demo=True, status__in=services.ACTIVE_STATUSES)
        if active.filter(team=team).count() >= setting("DEMO_MAX_RUNNING_PER_TEAM"):
            raise DemoLimitError("this team already has its maximum of demo runs in progress")
        if active.filter(created_by=created_by).count() >= setting("DEMO_MAX_RUNNING_PER_USER"):
            raise DemoLimitError("you already have your maximum of demo runs in progress")
        execution = services.execution_create(team=team, created_by=created_by, demo=True)
        execution = services.execution_start(execution=execution)
        execution_id = execution.id
        transaction.on_commit(
            lambda: demo_run_in_background(execution_id=execution_id, steps=steps, interval_s=interval_s)
        )
    return execution
