"""The admin CLI's catch-up bookkeeping (cli/admin.py `CatchUp`, `settled`), fed stream infos as
the stream leader reports them during a move: each replica's bar total is the largest lag seen,
its progress how much of that it made up; settled means the exact group, no move, all current."""

from __future__ import annotations

from typing import Any

from cli.admin import ERROR_HINTS, CatchUp, settled


def info(replicas: list[tuple[str, int, bool]], move: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"leader": "m1", "replicas": [
        {"name": n, "lag": lag, "offline": offline, "current": lag == 0 and not offline} for n, lag, offline in replicas]}
    if move:
        cluster["move"] = move
    return {"cluster": cluster}


def test_bars_fill_as_lag_shrinks_from_the_largest_seen() -> None:
    c = CatchUp()
    assert c.feed(info([("m2", 0, False)])) == []  # current from the start: no bar
    assert c.feed(info([("m2", 0, False), ("m3", 400, False)])) == [("m3", 0, 400, "m3: lag 400")]
    assert c.feed(info([("m2", 0, False), ("m3", 100, False)])) == [("m3", 300, 400, "m3: lag 100")]
    assert c.feed(info([("m2", 0, False), ("m3", 0, True)])) == [("m3", 0, 400, "m3: offline")]
    assert c.feed(info([("m2", 0, False), ("m3", 0, False)])) == [("m3", 400, 400, "m3: current")]


def test_settled_needs_the_exact_group_no_move_and_current_replicas() -> None:
    move = {"done": 1, "total": 2, "target": ["m3", "m4"], "leaving": ["m1"]}
    assert not settled(info([("m3", 0, False)], move), 2)
    assert not settled(info([("m3", 5, False)]), 2)
    assert not settled(info([("m3", 0, False), ("m4", 0, False)]), 2)
    assert settled(info([("m3", 0, False)]), 2)


def test_the_common_errors_carry_a_hint() -> None:
    assert {10059, 10005, 10023} <= set(ERROR_HINTS)
