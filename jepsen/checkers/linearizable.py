# pure-core
"""Linearizability of a single register, by a Wing-Gong search with Lowe's memoisation.

A history is a list of Calls, each with an invocation time and a completion time (infinity when
the outcome is unknown). The search keeps (set of calls linearized so far, model state) and tries,
as the next linearization point, every call that is not yet linearized and was invoked before the
earliest completion among the *required* calls still pending (a call that completed before another
was invoked must come first). Required calls are the ones that certainly happened (ok); calls with
an unknown outcome may be linearized at any point after their invocation, or never. Configurations
already explored are remembered, which turns the exponential search into one bounded by the number
of distinct (set, state) pairs. When the search budget runs out the answer is UNKNOWN, never a
pass.

The model is a compare-and-set register over hashable values: read (ret = current value), write
(arg = new value), cas (arg = (expected, new)); the initial value is given (None: key absent).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Sequence
from typing import Any

import attrs


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not-linearizable"
    UNKNOWN = "unknown"


@attrs.frozen
class Call:
    id: int
    f: str  # "read" | "write" | "cas"
    arg: Any
    ret: Any
    invoke_s: float
    complete_s: float = math.inf  # math.inf: outcome unknown
    required: bool = True  # False: may or may not have taken effect


@attrs.frozen
class Result:
    verdict: Verdict
    explored: int
    # deepest point reached: how many required calls were linearized, and the calls that could
    # not be placed next from there (a hint for the report, not a minimal witness)
    max_required_linearized: int = 0
    stuck_at: tuple[int, ...] = ()


def step_register(state: Hashable, call: Call) -> tuple[bool, Hashable]:
    if call.f == "read":
        return state == call.ret, state
    if call.f == "write":
        return True, call.arg
    if call.f == "cas":
        expected, new = call.arg
        if state == expected:
            return True, new
        return False, state
    raise ValueError(f"unknown register op {call.f!r}")


def _candidates(calls: Sequence[Call], mask: int) -> list[int]:
    """Indices (in invoke order) that may be linearized next given the calls done in mask."""
    horizon = math.inf
    for i, call in enumerate(calls):
        if not mask >> i & 1 and call.required:
            horizon = min(horizon, call.complete_s)
    found = []
    for i, call in enumerate(calls):
        if call.invoke_s > horizon:
            break
        if not mask >> i & 1:
            found.append(i)
    return found


def prune_unobserved(calls: Sequence[Call]) -> list[Call]:
    """Drop optional writes and cas whose new value nobody ever observed.

    Such a call never has to take effect: leaving it out of a linearization only removes a
    state nobody read or compared against, so the verdict is unchanged while the search shrinks
    (each optional call otherwise doubles the configurations it is concurrent with).
    """
    observed = {c.ret for c in calls if c.f == "read"} | {c.arg[0] for c in calls if c.f == "cas"}

    def written(c: Call) -> Hashable:
        return c.arg if c.f == "write" else c.arg[1]

    return [c for c in calls if c.required or c.f == "read" or written(c) in observed]


def check_register(calls: Sequence[Call], initial: Hashable = None, budget: int = 200_000) -> Result:
    ordered = sorted(prune_unobserved(calls), key=lambda c: c.invoke_s)
    required = 0
    for i, call in enumerate(ordered):
        if call.required:
            required |= 1 << i
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = [(0, initial)]
    best = (0, ())
    explored = 0
    while stack:
        mask, state = stack.pop()
        if mask & required == required:
            return Result(Verdict.LINEARIZABLE, explored, bin(required).count("1"))
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        explored += 1
        if explored > budget:
            return Result(Verdict.UNKNOWN, explored, best[0], best[1])
        nexts = _candidates(ordered, mask)
        pushed = False
        for i in reversed(nexts):
            ok, new_state = step_register(state, ordered[i])
            if ok:
                stack.append((mask | 1 << i, new_state))
                pushed = True
        done = bin(mask & required).count("1")
        if not pushed and done >= best[0]:
            best = (done, tuple(ordered[i].id for i in nexts))
    return Result(Verdict.NOT_LINEARIZABLE, explored, best[0], best[1])
