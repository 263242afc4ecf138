"""Concurrent changes of one execution are serialized by the row lock: each sees the last committed state."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from executions.models import Execution
from executions.services import (
    ExecutionError,
    execution_complete,
    execution_create,
    execution_fail,
    execution_start,
    execution_update_progress,
)
from tests.executions.conftest import published_payloads

pytestmark = pytest.mark.django_db(transaction=True)


def _race(actions: list[Callable[[], object]]) -> list[str]:
    """Run the actions in threads released together; each one's outcome as 'ok' or the error class."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[str] = [""] * len(actions)

    def run(index: int, action: Callable[[], object]) -> None:
        try:
            barrier.wait()
            action()
            outcomes[index] = "ok"
        except ExecutionError as exc:
            outcomes[index] = type(exc).__name__
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_complete_and_fail_racing_end_the_execution_exactly_once(team):
    execution = execution_start(execution=execution_create(team=team))
    stale = Execution.objects.get(pk=execution.pk)

    outcomes = _race([
        lambda: execution_complete(execution=stale, result="done"),
        lambda: execution_fail(execution=stale, error="crashed"),
    ])

    assert sorted(outcomes) == ["ExecutionTransitionError", "ok"]
    final = Execution.objects.get(pk=execution.pk)
    winner = "completed" if outcomes[0] == "ok" else "failed"
    assert final.status == winner
    assert [u["status"] for u in published_payloads(f"execution:{execution.id}")] == ["queued", "running", winner]


def test_racing_progress_reports_never_store_a_lower_value(team):
    execution = execution_start(execution=execution_create(team=team))
    stale = Execution.objects.get(pk=execution.pk)

    outcomes = _race([lambda p=p: execution_update_progress(execution=stale, progress=p) for p in range(10, 90, 10)])

    # Each accepted report was checked against the one committed before it, so the stored
    # value is the highest accepted one. (Publications run after commit, in each thread, so
    # their order in the stream is not asserted: clients order by progress and updated_at.)
    applied = [u["progress"] for u in published_payloads(f"execution:{execution.id}")][2:]
    assert len(applied) == len(set(applied)) == outcomes.count("ok") >= 1
    assert set(outcomes) <= {"ok", "ExecutionValueError"}
    assert Execution.objects.get(pk=execution.pk).progress == max(applied)
