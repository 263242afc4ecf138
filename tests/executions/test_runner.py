"""The in-process runner API and the run_demo_execution management command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from executions.models import Execution
from executions.runner import ExecutionRunner, demo_run
from executions.services import ExecutionTransitionError, execution_cancel
from tests.executions.conftest import published_payloads

pytestmark = pytest.mark.django_db(transaction=True)


def test_runner_drives_an_execution_through_its_life(team, member):
    runner = ExecutionRunner.create(team=team, created_by=member)

    runner.start()
    runner.progress(30, "planning")
    runner.progress(60)
    final = runner.complete({"answer": 42})

    assert (final.status, final.progress, final.current_step, final.result) == (
        "completed", 100, "planning", {"answer": 42}
    )
    assert [(u["status"], u["progress"]) for u in published_payloads(f"team:{team.id}")] == [
        ("queued", 0), ("running", 0), ("running", 30), ("running", 60), ("completed", 100),
    ]


def test_runner_accepts_a_string_id_and_raises_the_service_errors(team):
    runner = ExecutionRunner(str(ExecutionRunner.create(team=team).execution_id))

    with pytest.raises(ExecutionTransitionError):
        runner.progress(10)
    runner.start()
    assert runner.fail("crashed").error == "crashed"


def test_demo_run_stops_quietly_when_a_member_cancelled(team, member):
    runner = ExecutionRunner.create(team=team)
    seen = []

    def cancel_after_first_step(execution: Execution) -> None:
        seen.append(execution.progress)
        if execution.progress > 0:
            execution_cancel(execution=execution, user=member)

    final = demo_run(runner=runner, steps=4, interval_s=0, on_update=cancel_after_first_step)

    assert (final.status, final.error, final.progress) == ("failed", "cancelled by member", 25)
    assert seen == [0, 25]


def test_command_walks_an_execution_to_100(team, capsys):
    call_command("run_demo_execution", "--team", str(team.id), "--steps", "4", "--interval", "0")

    execution = Execution.objects.get(team=team)
    assert (execution.status, execution.progress) == ("completed", 100)
    updates = published_payloads(f"execution:{execution.id}")
    assert [(u["status"], u["progress"], u["current_step"]) for u in updates] == [
        ("queued", 0, None),
        ("running", 0, None),
        ("running", 25, "step 1/4: planning"),
        ("running", 50, "step 2/4: researching"),
        ("running", 75, "step 3/4: analysing"),
        ("completed", 100, "step 3/4: analysing"),
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"execution {execution.id} of team {team.id} ({team.slug}): queued"
    assert lines[1:] == [
        f"execution {execution.id}: running   0%",
        f"execution {execution.id}: running  25% step 1/4: planning",
        f"execution {execution.id}: running  50% step 2/4: researching",
        f"execution {execution.id}: running  75% step 3/4: analysing",
        f"execution {execution.id}: completed 100% step 3/4: analysing",
        f"execution {execution.id} ended completed",
    ]


def test_command_accepts_a_slug_and_fails_at_the_requested_step(team, capsys):
    call_command("run_demo_execution", "--team", team.slug, "--steps", "5", "--interval", "0", "--fail-at", "3")

    execution = Execution.objects.get(team=team)
    assert (execution.status, execution.progress, execution.error) == (
        "failed", 40, "demo failure at step 3/5: analysing"
    )
    assert capsys.readouterr().out.splitlines()[-1] == f"execution {execution.id} ended failed"


def test_command_takes_its_time_between_steps(team):
    import time

    started = time.monotonic()
    call_command("run_demo_execution", "--team", team.slug, "--steps", "3", "--interval", "0.1")

    assert 0.3 <= time.monotonic() - started < 3


@pytest.mark.parametrize("args, message", [
    (["--team", "nope"], "no team with id or slug 'nope'"),
    (["--team", "99999"], "no team with id or slug '99999'"),
    (["--team", "x", "--steps", "0"], "--steps must be at least 1"),
    (["--team", "x", "--interval", "-1"], "--interval cannot be negative"),
    (["--team", "x", "--steps", "3", "--fail-at", "4"], "--fail-at must be within 1..--steps"),
])
def test_command_refuses_bad_arguments(team, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("run_demo_execution", *args)

    assert Execution.objects.count() == 0
