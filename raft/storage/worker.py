"""Runs a synchronous LogStore off the trio event loop, one call at a time, with group commit.

`save()` callers append their writes to a pending list. If no flush is running, the caller
becomes the flusher: it takes everything pending, runs `store.save(batch)` in a worker thread
(a CapacityLimiter(1) keeps the database on one thread at a time), wakes every caller whose
writes were in that batch, and repeats while more writes queued up during the fsync. So one
fsync covers every write that arrived while the previous one ran, across all groups.

The flush loop is shielded from cancellation: a write handed to the thread always completes and
its waiters always learn the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import trio

from raft.storage.base import GroupWrite, LogStore

T = TypeVar("T")


@attrs.define
class _Flush:
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


class StoreWorker:
    def __init__(
        self, store: LogStore, *, batch_writes_max: int = 100_000, offload: bool = True
    ) -> None:
        self.store = store
        self.offload = offload
        self.batch_writes_max = batch_writes_max
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[GroupWrite] = []
        self._pending_sync = False
        self._next = _Flush()
        self._flushing = False
        self.flush_count = 0  # batches written, for tests and metrics

    async def save(self, writes: Sequence[GroupWrite], sync: bool = True) -> None:
        """Save `writes` (durably when `sync`), sharing the fsync with every concurrent caller."""
        if not writes:
            return
        self._pending.extend(writes)
        self._pending_sync = self._pending_sync or sync
        flush = self._next
        if not self._flushing:
            self._flushing = True
            try:
                with trio.CancelScope(shield=True):
                    await self._flush_all()
            finally:
                self._flushing = False
        await flush.done.wait()
        if flush.error is not None:
            raise flush.error

    async def _flush_all(self) -> None:
        for _ in range(1_000_000):  # bounded: each round drains the pending list
            if not self._pending:
                return
            batch = self._pending[: self.batch_writes_max]
            del self._pending[: self.batch_writes_max]
            flush, sync = self._next, self._pending_sync
            if not self._pending:
                self._next, self._pending_sync = _Flush(), False
            try:
                await self.run(self.store.save, batch, sync)
                self.flush_count += 1
            except Exception as exc:  # handed to every waiter of this batch
                flush.error = exc
            if flush is not self._next:
                flush.done.set()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run any other store call (load, compact, ...) on the store's thread. Without
        `offload` (deterministic tests under MockClock) it runs inline on the event loop."""
        if not self.offload:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
