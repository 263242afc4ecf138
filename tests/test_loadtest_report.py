"""The load tool's report: repeated runs are reduced to each server's median run, all listed."""

from __future__ import annotations

import pytest
from django.conf import settings

from loadtest.report import Result, markdown, median_run
from loadtest.runner import LoadConfig, run


def storm(connect_s: float, cpu_s: float) -> Result:
    return Result(server="ours", kind="ours", scenario="storm", clients=100, connected=100,
                  connect_s=connect_s, connect_cpu_s=cpu_s)


def test_the_median_run_is_shown_and_every_run_listed_in_order():
    runs = [storm(3.0, 0.03), storm(2.0, 0.02), storm(5.0, 0.05)]

    chosen = median_run(runs)
    table = markdown([chosen], "storm")

    assert chosen is runs[0]
    assert "| connect time, all welcomed | 3.00 s |" in table
    assert "| runs, in order (the median run is shown): connect time | 3.00 / 2.00 / 5.00 s |" in table
    assert "| runs: server CPU per connect | 300 / 200 / 500 us |" in table


def test_an_even_number_of_runs_shows_the_lower_middle_one():
    runs = [storm(4.0, 0.04), storm(1.0, 0.01), storm(3.0, 0.03), storm(2.0, 0.02)]

    assert median_run(runs).connect_s == 2.0


def test_publishing_runs_are_ranked_by_cpu_per_delivery():
    def broadcast(cpu_s: float, connect_s: float) -> Result:
        return Result(server="ours", kind="ours", scenario="broadcast", clients=10, connected=10,
                      connect_s=connect_s, rate_target=10, published=10, expected=100, delivered=100, cpu_s=cpu_s)

    runs = [broadcast(0.003, 1.0), broadcast(0.001, 3.0), broadcast(0.002, 2.0)]

    assert median_run(runs) is runs[2]
    assert "| runs: server CPU per delivery | 30.0 / 10.0 / 20.0 us |" in markdown([runs[2]], "b")


def test_publishing_runs_list_each_runs_rate_losses_and_p99():
    def notify(rate: float, delivered: int, p99_ms: float) -> Result:
        return Result(server="ours", kind="ours", scenario="notify", clients=10, connected=10, rate_target=1000,
                      published=100, rate_achieved=rate, expected=100, delivered=delivered, cpu_s=0.01,
                      latencies_ms=[1.0] * 98 + [p99_ms, p99_ms])

    runs = [notify(1001.4, 100, 12.0), notify(954.6, 98, 7.25), notify(1000.0, 100, 150.0)]
    table = markdown([median_run(runs)], "notify")

    assert "| runs: achieved rate | 1001 / 955 / 1000 /s |" in table
    assert "| runs: lost | 0 / 2 / 0 |" in table
    assert "| runs: latency p99 | 12.0 / 7.2 / 150 ms |" in table


def test_a_single_run_adds_no_runs_rows():
    assert "runs" not in markdown([median_run([storm(1.0, 0.01)])], "storm")


def test_repeat_below_one_is_refused():
    with pytest.raises(ValueError, match="--repeat must be at least 1"):
        run(LoadConfig(scenario="storm", secret_key=settings.SECRET_KEY, repeat=0))
