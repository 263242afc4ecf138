"""Garbage-collector tuning of server processes (realtime.ops.runtime)."""

from __future__ import annotations

import gc

import pytest

from realtime.ops.runtime import DEFAULT_GC_THRESHOLDS, tune_gc


@pytest.fixture(autouse=True)
def _restore_gc():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


@pytest.mark.parametrize(("spec", "expected"), [
    (None, DEFAULT_GC_THRESHOLDS), ("", DEFAULT_GC_THRESHOLDS), (" 20000, 15 ,5 ", (20000, 15, 5)),
])
def test_thresholds_are_set_and_startup_objects_frozen(spec, expected):
    assert tune_gc(spec) == expected
    assert gc.get_threshold() == expected
    assert gc.get_freeze_count() > 0


def test_off_leaves_the_collector_alone():
    gc.set_threshold(700, 10, 10)

    assert tune_gc("off") is None
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("spec", ["1,2", "a,b,c", "0,10,10", "1,2,3,4"])
def test_a_bad_value_is_refused_with_what_is_expected(spec):
    with pytest.raises(ValueError, match="three positive integers"):
        tune_gc(spec)
