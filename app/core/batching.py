"""Coalescing of concurrent calls into one database round trip (group commit, batched reads).

While one batch is in flight, new items queue; when it returns, everything that queued
meanwhile goes as the next batch. Nothing waits for a timer: an idle process sends each item
alone, a busy one sends them together, so a round trip's fixed cost (a statement, a commit,
a WAL flush) is shared by the calls that arrived during the previous one. Each caller awaits
its own item's outcome; when a batch fails, every caller in it gets the error.

Only the calls in flight are held, never state across requests: a stopping process has only
items of calls not yet answered, and those callers see the connection drop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("eid.batching")


class Coalescer(Generic[T, R]):
    """What every batching loop shares: callers queue items and await their own futures; one
    worker task per process drains the queue (``_drain``, in subclasses) and exits when it is
    empty; the next item starts a new one."""

    def __init__(self, error: Callable[[], Exception], max_batch: int = 500) -> None:
        self._error = error
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, done))
        if self._worker is None:
            # A fresh context: the worker serves many requests, none of them the first caller's.
            self._worker = loop.create_task(self._run_worker(), context=contextvars.Context())
        # A caller that goes away cancels only its own future: its item stays in its batch.
        return await done

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        """The next batch: what has queued, up to the batch size."""
        batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        return batch

    async def _run_worker(self) -> None:
        try:
            await self._drain()
        except Exception:
            log.exception("batching worker stopped")  # a defect: its calls answer 503
        finally:
            self._worker = None
            # Cancelled mid-way (shutdown): nobody waits forever.
            self._fail([done for _, done in self._pending])
            self._pending = []

    async def _drain(self) -> None:
        raise NotImplementedError

    def _fail(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        for done in futures:
            if not done.done():
                done.set_exception(self._error())
                done.exception()  # retrieved here too: its caller may have gone

    async def close(self) -> None:
        """Let the batch in flight (and what queued behind it) finish."""
        if self._worker is not None:
            await asyncio.shield(self._worker)


class Batcher(Coalescer[T, R]):
    """``await batcher.submit(item)`` → that item's result from ``run(batch)``, which answers one
    result per item, in order: a value, or an exception raised to that item's caller alone (or
    ``run`` raises, for the whole batch)."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        error: Callable[[], Exception],
        max_batch: int = 500,
    ) -> None:
        super().__init__(error, max_batch)
        self._name = name
        self._run = run

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    results = await self._run([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except Exception as exc:  # the database is down, or refused the batch
                    log.error("%s: a batch of %d call(s) failed: %s", self._name, len(batch), type(exc).__name__)
                    self._fail([done for _, done in batch])
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, Exception):
                        done.set_exception(result)
                        done.exception()  # retrieved here too: its caller may have gone
                    else:
                        done.set_result(result)
                batch = []
        finally:
            self._fail([done for _, done in batch])
