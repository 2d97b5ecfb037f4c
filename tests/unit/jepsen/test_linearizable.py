"""The register linearizability search: known linearizable and non-linearizable histories."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen.checkers.linearizable import Call, Verdict, check_register


def call(i: int, f: str, arg, ret, t0: float, t1: float = math.inf, required: bool = True) -> Call:
    return Call(i, f, arg, ret, t0, t1, required)


def test_sequential_register_is_linearizable() -> None:
    calls = [call(0, "write", 1, None, 0, 1), call(1, "read", None, 1, 2, 3), call(2, "cas", (1, 2), None, 4, 5),
             call(3, "read", None, 2, 6, 7)]
    assert check_register(calls).verdict is Verdict.LINEARIZABLE


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    calls = [call(0, "write", 1, None, 0, 1), call(1, "write", 2, None, 2, 3), call(2, "read", None, 1, 4, 5)]
    result = check_register(calls)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert 2 in result.stuck_at


def test_concurrent_read_may_see_either_value() -> None:
    calls = [call(0, "write", 1, None, 0, 1), call(1, "write", 2, None, 2, 5), call(2, "read", None, 1, 3, 4)]
    assert check_register(calls).verdict is Verdict.LINEARIZABLE


def test_read_of_never_written_value_is_not_linearizable() -> None:
    calls = [call(0, "write", 1, None, 0, 1), call(1, "read", None, 7, 2, 3)]
    assert check_register(calls).verdict is Verdict.NOT_LINEARIZABLE


def test_two_cas_from_same_expected_value_cannot_both_succeed() -> None:
    calls = [call(0, "write", 0, None, 0, 1), call(1, "cas", (0, 1), None, 2, 5), call(2, "cas", (0, 2), None, 2, 5)]
    assert check_register(calls).verdict is Verdict.NOT_LINEARIZABLE


def test_unknown_write_may_or_may_not_have_happened() -> None:
    took_effect = [call(0, "write", 1, None, 0, required=False), call(1, "read", None, 1, 5, 6)]
    never_seen = [call(0, "write", 1, None, 0, required=False), call(1, "read", None, None, 5, 6)]
    assert check_register(took_effect).verdict is Verdict.LINEARIZABLE
    assert check_register(never_seen).verdict is Verdict.LINEARIZABLE


def test_unknown_write_cannot_take_effect_before_its_invocation() -> None:
    calls = [call(0, "read", None, 1, 0, 1), call(1, "write", 1, None, 2, required=False)]
    assert check_register(calls).verdict is Verdict.NOT_LINEARIZABLE


def test_value_cannot_flip_back_after_being_observed() -> None:
    # write 1 is over before write 2 begins; once 2 was read, reading 1 again is impossible
    calls = [call(0, "write", 1, None, 0, 1), call(1, "write", 2, None, 2, 10),
             call(2, "read", None, 2, 3, 4), call(3, "read", None, 1, 5, 6)]
    assert check_register(calls).verdict is Verdict.NOT_LINEARIZABLE


def test_budget_exhaustion_reports_unknown_not_pass() -> None:
    # many concurrent unknown writes, each observed by a concurrent read, and a read of a value
    # nobody wrote: every interleaving has to be tried before giving up
    calls = [call(i, "write", i, None, 0, required=False) for i in range(14)]
    calls += [call(100 + i, "read", None, i, 1, 10) for i in range(14)]
    calls.append(call(99, "read", None, -1, 1, 10))
    result = check_register(calls, budget=50)
    assert result.verdict is Verdict.UNKNOWN


def test_unobserved_unknown_writes_are_pruned_without_changing_the_verdict() -> None:
    from jepsen.checkers.linearizable import prune_unobserved

    noise = [call(i, "write", 1000 + i, None, 0, required=False) for i in range(40)]
    good = [call(50, "write", 1, None, 0, 1), call(51, "read", None, 1, 2, 3)]
    bad = [call(50, "write", 1, None, 0, 1), call(51, "read", None, 2, 2, 3)]
    assert prune_unobserved(noise + good) == good
    assert check_register(noise + good, budget=1000).verdict is Verdict.LINEARIZABLE
    assert check_register(noise + bad, budget=1000).verdict is Verdict.NOT_LINEARIZABLE


def _run_register(ops: list[tuple[str, int]], seed: int) -> list[Call]:
    """Execute ops on a real register one at a time, giving each an overlapping-but-consistent
    interval around its instantaneous effect time."""
    rng = random.Random(seed)
    state = None
    calls = []
    for i, (f, v) in enumerate(ops):
        effect = float(i)
        t0, t1 = effect - rng.random() * 2.5, effect + rng.random() * 2.5
        if f == "write":
            calls.append(call(i, "write", v, None, t0, t1))
            state = v
        elif f == "read":
            calls.append(call(i, "read", None, state, t0, t1))
        elif state == v:
            calls.append(call(i, "cas", (v, v + 100), None, t0, t1))
            state = v + 100
    return calls


OPS = st.lists(st.tuples(st.sampled_from(["write", "read", "cas"]), st.integers(0, 3)), min_size=1, max_size=14)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(0, 2**32))
def test_real_register_executions_are_linearizable(ops, seed) -> None:
    assert check_register(_run_register(ops, seed)).verdict is Verdict.LINEARIZABLE


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(0, 2**32))
def test_corrupted_read_in_sequential_history_is_caught(ops, seed) -> None:
    calls = [c for c in _run_register(ops, seed)]
    # make it strictly sequential, then corrupt the last read to a value never written
    sequential = [Call(c.id, c.f, c.arg, c.ret, 2.0 * i, 2.0 * i + 1) for i, c in enumerate(calls)]
    sequential.append(call(1000, "read", None, "never-written", 1e6, 1e6 + 1))
    assert check_register(sequential).verdict is Verdict.NOT_LINEARIZABLE
