"""Coalescing of concurrent calls (realtime.fanout.batching)."""

from __future__ import annotations

import asyncio

import pytest

from realtime.fanout.batching import Batcher, Failed


async def test_calls_made_while_a_batch_runs_share_the_next_call():
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [n * 10 for n in items]

    batcher = Batcher(run)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(5)))
    later = await batcher.submit(7)

    assert results == [0, 10, 20, 30, 40]
    assert later == 70
    assert calls == [[0, 1, 2, 3, 4], [7]]


async def test_batches_are_capped():
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    batcher = Batcher(run, max_batch=2)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(5))) == [0, 1, 2, 3, 4]
    assert calls == [[0, 1], [2, 3], [4]]


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    async def run(items: list[int]) -> list[int]:
        if 0 in items:
            raise ConnectionError("database went away")
        return items

    batcher = Batcher(run)
    outcomes = await asyncio.gather(batcher.submit(0), batcher.submit(1), return_exceptions=True)
    after = await batcher.submit(2)

    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    assert after == 2


async def test_a_run_returning_the_wrong_number_of_results_is_an_error_not_a_hang():
    async def run(items: list[int]) -> list[int]:
        return []

    with pytest.raises(ValueError):
        await asyncio.wait_for(Batcher(run).submit(1), timeout=2)


async def test_an_item_can_fail_alone():
    async def run(items: list[int]) -> list:
        return [Failed(LookupError(f"no {n}")) if n % 2 else n for n in items]

    batcher = Batcher(run)
    outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(4)), return_exceptions=True)

    assert outcomes[0::2] == [0, 2]
    assert [str(o) for o in outcomes[1::2]] == ["no 1", "no 3"]
    assert all(isinstance(o, LookupError) for o in outcomes[1::2])
