"""Tuning of a server process: CPython's cyclic garbage collector.

Every live socket keeps a few dozen Python objects (the consumer, its outbox, the ASGI
server's protocol state), and a connect storm allocates thousands more per second. With
CPython's default thresholds (700, 10, 10) the collector then runs constantly, and every
older-generation pass walks all the objects of all the live sockets: the more sockets a
process holds, the more each new one costs. Measured on the connect storm of
docs/performance.md: 5,000 connects took 650-760 us of server CPU each with the defaults and
420-490 us with (50000, 20, 10) and the startup objects frozen; RSS per idle connection did
not change (27-29 KB).

Nothing here changes what is collected, only how often the collector looks: reference
counting still frees every object that is not part of a cycle at once.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("realtime.ops.runtime")

DEFAULT_GC_THRESHOLDS = (50000, 20, 10)


def tune_gc(spec: str | None = None) -> tuple[int, ...] | None:
    """Freeze the objects that exist now (modules, settings, the application) and set the
    collector's thresholds; returns them, or None for ``spec="off"`` (CPython's defaults).

    ``spec`` is "g0,g1,g2" (``REALTIME_GC_THRESHOLDS``); empty or None means the default.
    Call it once, when the application is built and before it serves.
    """
    spec = (spec or "").strip()
    if spec.lower() == "off":
        return None
    thresholds = DEFAULT_GC_THRESHOLDS
    if spec:
        try:
            thresholds = tuple(int(part) for part in spec.split(","))
        except ValueError:
            thresholds = ()
        if len(thresholds) != 3 or min(thresholds) < 1:
            raise ValueError(f"REALTIME_GC_THRESHOLDS must be 'off' or three positive integers g0,g1,g2, not {spec!r}")
    # Startup objects live as long as the process: out of every future collection's way.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return thresholds
