"""The seeded fault schedule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen.schedule import FAMILIES, FaultKind, ScheduleConfig, plan

import pytest


def test_same_seed_same_schedule_and_different_seed_differs() -> None:
    cfg = ScheduleConfig(time_s=60, n_nodes=3, families=("kill", "partition"))
    assert plan(7, cfg) == plan(7, cfg)
    assert any(plan(7, cfg) != plan(s, cfg) for s in range(8, 12))


def test_short_run_covers_every_family_in_turn() -> None:
    for seed in range(20):
        cfg = ScheduleConfig.for_run(time_s=16, n_nodes=3, families=("kill", "partition"))
        windows = plan(seed, cfg)
        assert len(windows) >= 2
        assert windows[0].kind is FaultKind.KILL
        assert windows[1].kind.value.startswith("partition")


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(ValueError, match="clock"):
        plan(1, ScheduleConfig(time_s=10, n_nodes=3, families=("clock",)))


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    time_s=st.floats(5, 300),
    n=st.sampled_from([3, 5]),
    families=st.lists(st.sampled_from(FAMILIES), min_size=1, max_size=5, unique=True),
)
def test_windows_are_ordered_disjoint_and_end_before_the_quiet_tail(seed, time_s, n, families) -> None:
    cfg = ScheduleConfig(time_s=time_s, n_nodes=n, families=tuple(families))
    windows = plan(seed, cfg)
    for a, b in zip(windows, windows[1:]):
        assert a.end_s < b.start_s
    for w in windows:
        assert 0 < w.start_s <= w.end_s <= time_s - cfg.tail_quiet_s
        assert all(0 <= i < n for i in w.nodes)
        if w.kind is FaultKind.PAUSE:
            assert len(w.nodes) < n  # pause never takes every node
        if w.kind is FaultKind.PARTITION_HALVES:
            assert 0 < len(w.nodes) < n / 2
