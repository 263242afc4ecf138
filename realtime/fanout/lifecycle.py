"""An idempotent asynchronous start, shared by the node and its hub."""

from __future__ import annotations

import asyncio


class StartOnce:
    """Base of objects whose ``async _start()`` must run once, however many callers ``start``.

    Concurrent callers wait for the same run (shielded: a caller that is cancelled does not
    cancel the start the others wait for); once it succeeded, ``start`` returns at once; a run
    that failed raises its error to every later caller. ``_forget_start`` (from ``stop``)
    cancels a run still in flight, so that a later ``start`` runs anew.
    """

    _starting: asyncio.Future | None = None

    async def start(self) -> None:
        """Run ``_start`` once (idempotent; concurrent callers wait for the same run)."""
        starting = self._starting
        if starting is None:
            starting = self._starting = asyncio.ensure_future(self._start())
        elif starting.done() and not starting.cancelled() and starting.exception() is None:
            return
        await asyncio.shield(starting)

    async def _start(self) -> None:
        raise NotImplementedError

    def _forget_start(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
