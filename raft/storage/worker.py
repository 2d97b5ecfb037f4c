"""Runs a synchronous LogStore off the trio event loop, one call at a time, with group commit.

`save()` callers append their writes to a pending list. If no flush is running, the caller
becomes the flusher: it takes everything pending, runs `store.save(batch)` in a worker thread
(a CapacityLimiter(1) keeps the database on one thread at a time), wakes every caller whose
writes were in that batch, and repeats while more writes queued up during the fsync. So one
fsync covers every write that arrived while the previous one ran, across all groups.

The flush loop is shielded from cancellation: a write handed to the thread always completes and
its waiters always learn the outcome.

A save may also run inline on the event loop (`inline_below_s`): when the store's recent saves
(fsync included, an exponential average of their wall time) took less than that and, after one
checkpoint that lets the tasks already woken (e.g. the transport writers carrying a leader's
early APPENDs) run, that pass was short (INLINE_IDLE_PASS_S of this thread's CPU time: little
else to do; wall time would also count the OS running other processes, which on a loaded host
sent a third of the saves to the thread) and no other store call is running in the thread. The loop would only wait for the thread then, and the hand-off
costs more than a fast fsync: a thread round trip, a GIL hand-off and two more wakeups per save
(3-node cluster, one-at-a-time publish: 12-13% less server CPU per message, A/B run side by
side). A slow disk (or a busy loop) keeps every save in the thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import trio

from raft.storage.base import GroupWrite, LogStore

T = TypeVar("T")
INLINE_BELOW_S = 0.002  # saves recently faster than this may run on the event loop
# ...if the loop is nearly idle: one scheduler pass (the tasks already woken, e.g. the transport
# writers of a leader's early APPENDs) took less than this much CPU time of the loop's thread. (trio's current_statistics() would
# count the runnable tasks, but it walks every registered file descriptor.)
INLINE_IDLE_PASS_S = 0.0003
SAVE_AVERAGE_WEIGHT = 0.25  # weight of the newest save in the average


@attrs.define
class _Flush:
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


class StoreWorker:
    def __init__(
        self, store: LogStore, *, batch_writes_max: int = 100_000, offload: bool = True,
        inline_below_s: float = INLINE_BELOW_S,
    ) -> None:
        self.store = store
        self.offload = offload
        self.inline_below_s = inline_below_s  # 0: every save in the thread (when offloading)
        self.save_s = math.inf  # average wall time of recent saves (unknown: use the thread)
        self.inline_saves = 0
        self.batch_writes_max = batch_writes_max
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[GroupWrite] = []
        self._pending_sync = False
        self._next = _Flush()
        self._flushing = False
        self.flush_count = 0  # batches written, for tests and metrics

    async def save(self, writes: Sequence[GroupWrite], sync: bool = True, yield_first: bool = True) -> None:
        """Save `writes` (durably when `sync`), sharing the fsync with every concurrent caller.
        Not `yield_first`: the caller knows nothing it woke must run before an inline save (its
        messages were written out already), so the save skips the checkpoint and the idle test."""
        if not writes:
            return
        self._pending.extend(writes)
        self._pending_sync = self._pending_sync or sync
        flush = self._next
        if not self._flushing:
            self._flushing = True
            try:
                with trio.CancelScope(shield=True):
                    await self._flush_all(yield_first)
            finally:
                self._flushing = False
        if not flush.done.is_set():  # (when this caller just flushed it, a checkpoint here would
            await flush.done.wait()  # let readers take what came during an inline fsync, which
        if flush.error is not None:  # the host's round reads itself: RaftHost poll passes)
            raise flush.error

    async def _flush_all(self, yield_first: bool = True) -> None:
        for _ in range(1_000_000):  # bounded: each round drains the pending list
            if not self._pending:
                return
            batch = self._pending[: self.batch_writes_max]
            del self._pending[: self.batch_writes_max]
            flush, sync = self._next, self._pending_sync
            if not self._pending:
                self._next, self._pending_sync = _Flush(), False
            try:
                await self._save(batch, sync, yield_first)
                yield_first = True  # (a later round: others may have woken meanwhile)
                self.flush_count += 1
            except Exception as exc:  # handed to every waiter of this batch
                flush.error = exc
            if flush is not self._next:
                flush.done.set()

    async def _save(self, batch: list[GroupWrite], sync: bool, yield_first: bool = True) -> None:
        if not self.offload:
            await self.run(self.store.save, batch, sync)
            return
        if self.save_s < self.inline_below_s and not yield_first and self._limiter.borrowed_tokens == 0:
            self._inline(batch, sync)
            return
        if self.save_s < self.inline_below_s:
            started = time.thread_time()
            await trio.lowlevel.checkpoint()  # what is already woken goes first (sends)
            if (time.thread_time() - started < INLINE_IDLE_PASS_S
                    and self._limiter.borrowed_tokens == 0):  # no other store call in the thread
                self._inline(batch, sync)
                return
        await self.run(self._timed_save, batch, sync)

    def _inline(self, batch: list[GroupWrite], sync: bool) -> None:
        self._limiter.acquire_nowait()
        try:
            self._timed_save(batch, sync)
        finally:
            self._limiter.release()
        self.inline_saves += 1

    def _timed_save(self, batch: list[GroupWrite], sync: bool) -> None:
        started = time.perf_counter()
        try:
            self.store.save(batch, sync)
        finally:
            took = time.perf_counter() - started
            avg = self.save_s
            self.save_s = took if avg == math.inf else avg + SAVE_AVERAGE_WEIGHT * (took - avg)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run any other store call (load, compact, ...) on the store's thread. Without
        `offload` (deterministic tests under MockClock) it runs inline on the event loop."""
        if not self.offload:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
