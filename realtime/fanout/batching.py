"""Coalescing of concurrent calls: what many sockets ask for at the same moment, asked once.

A connect storm makes thousands of sockets each want a user row, a registry entry and a
channel-layer membership. Each ``Batcher`` collects the items submitted while its previous
call is in flight (or in the same event-loop turn) and hands them to one call of ``run``:
one query or one Redis pipeline for the batch instead of one round trip per socket. With
no concurrency a batch holds one item and costs one loop turn more than a direct call.

Under load a batch also waits ``linger_s`` (2 ms) before it starts, Nagle-style, so that
it fills up: in a connect storm the round trips, not the items, are what costs CPU. It
waits only when the previous batch ended moments ago, so a lone call is never delayed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Failed:
    """A result of ``run`` meaning that this item failed (the others of the batch did not)."""

    __slots__ = ("exception",)

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception


class Batcher(Generic[T, R]):
    """Runs ``run(items)`` for the items submitted together; ``run`` returns one result per item
    (a ``Failed`` for an item whose caller is to get an exception).

    Belongs to one event loop (its futures do); ``per_loop`` keeps one per loop.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 1000,
                 linger_s: float = 0.002) -> None:
        self._run = run
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._items: list[T] = []
        self._futures: list[asyncio.Future] = []
        self._flushing = False
        self._last_end = float("-inf")

    async def submit(self, item: T) -> R:
        """The result of ``run`` for this item (its exception, if the batch failed)."""
        future = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
        if not self._flushing:
            self._flushing = True
            asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._linger_s and loop.time() - self._last_end < 5 * self._linger_s:
                await asyncio.sleep(self._linger_s)  # busy: let the batch fill up
            while self._items:
                items, futures = self._items[:self._max_batch], self._futures[:self._max_batch]
                del self._items[:self._max_batch], self._futures[:self._max_batch]
                try:
                    results = await self._run(items)
                    if len(results) != len(items):
                        raise ValueError(f"{self._run!r} returned {len(results)} results for {len(items)} items")
                except BaseException as exc:  # every waiter learns of it; none hangs
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for future, result in zip(futures, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Failed):
                        future.set_exception(result.exception)
                    else:
                        future.set_result(result)
        finally:
            self._flushing = False
            self._last_end = loop.time()


class PerLoop(Generic[T, R]):
    """One ``Batcher`` per event loop (test suites and ``async_to_sync`` run several loops)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 1000,
                 linger_s: float = 0.002) -> None:
        self._run = run
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def submit(self, item: T) -> R:
        """Submit to the running loop's batcher."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = Batcher(self._run, self._max_batch, self._linger_s)
        return await batcher.submit(item)
