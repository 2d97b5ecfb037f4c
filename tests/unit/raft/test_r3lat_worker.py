"""StoreWorker's inline-save test counts the scheduler pass in the loop thread's CPU time: a pass
that is long only in wall time (the OS ran other processes) still saves inline, a pass where
other tasks used the CPU does not. The worker's clock is scripted."""

from __future__ import annotations

import pytest
import trio

import raft.storage.worker as worker_module
from raft.storage import MemoryLogStore
from raft.storage.base import GroupWrite
from raft.storage.worker import INLINE_IDLE_PASS_S, StoreWorker
from raft.types import Entry, HardState


def write(index: int) -> list[GroupWrite]:
    return [GroupWrite("g", HardState(1), (Entry(1, index, data=b"x"),))]


async def fast_worker() -> StoreWorker:
    worker = StoreWorker(MemoryLogStore(), inline_below_s=60.0)
    await worker.save(write(1))  # speed unknown: the thread; then known to be fast
    await worker.save(write(2))
    assert worker.inline_saves == 1
    return worker


def fake_clock(thread_readings: list[float], wall_step_s: float) -> type:
    """time for raft.storage.worker: scripted thread CPU readings, a wall clock that moves
    `wall_step_s` per reading."""
    thread = iter(thread_readings)
    wall = iter(range(1_000_000))

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return next(wall) * wall_step_s

        @staticmethod
        def thread_time() -> float:
            return next(thread)

    return Clock


async def test_a_pass_long_only_in_wall_time_still_saves_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = await fast_worker()
    # The OS ran other processes during the pass: 10x the limit in wall time, none in CPU.
    monkeypatch.setattr(worker_module, "time", fake_clock([0.0, 0.0], 10 * INLINE_IDLE_PASS_S))
    await worker.save(write(3))
    assert worker.inline_saves == 2


async def test_a_pass_that_used_the_cpu_saves_in_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = await fast_worker()
    monkeypatch.setattr(worker_module, "time", fake_clock([0.0, 10 * INLINE_IDLE_PASS_S], 1e-6))
    await worker.save(write(3))
    assert worker.inline_saves == 1
    assert worker.store.load("g").entries[-1].index == 3
