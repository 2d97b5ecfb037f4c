"""KV and set checkers on hand-made histories."""

from __future__ import annotations

from jepsen.checkers.kv import check_kv
from jepsen.checkers.set import check_set

from .helpers import HistoryBuilder


def test_kv_clean_history_is_valid() -> None:
    h = HistoryBuilder()
    h.add(0, "put", "ok", 0, 1, {"key": "k", "value": "a"}, {"revision": 1})
    h.add(1, "get", "ok", 2, 3, {"key": "k"}, {"value": "a", "revision": 1})
    h.add(1, "cas", "ok", 4, 5, {"key": "k", "value": "b", "expected_revision": 1}, {"revision": 2})
    h.add(0, "cas", "fail", 4, 6, {"key": "k", "value": "c", "expected_revision": 1})
    h.add(2, "get", "ok", 7, 8, {"key": "k"}, {"value": "b", "revision": 2})
    h.add(2, "get", "ok", 0, 0.5, {"key": "other"}, {"value": None, "revision": None})
    verdict = check_kv(h.ops)
    assert verdict["valid"] is True
    assert set(verdict["keys"]) == {"k", "other"}


def test_kv_stale_read_is_flagged() -> None:
    h = HistoryBuilder()
    h.add(0, "put", "ok", 0, 1, {"key": "k", "value": "a"}, {"revision": 1})
    h.add(0, "put", "ok", 2, 3, {"key": "k", "value": "b"}, {"revision": 2})
    h.add(1, "get", "ok", 4, 5, {"key": "k"}, {"value": "a", "revision": 1})
    verdict = check_kv(h.ops)
    assert verdict["valid"] is False
    assert verdict["keys"]["k"]["verdict"] == "not-linearizable"
    assert 2 in verdict["keys"]["k"]["stuck_at_ops"]


def test_kv_two_successful_cas_on_same_revision_is_flagged() -> None:
    h = HistoryBuilder()
    h.add(0, "put", "ok", 0, 1, {"key": "k", "value": "a"}, {"revision": 1})
    h.add(1, "cas", "ok", 2, 4, {"key": "k", "value": "b", "expected_revision": 1}, {"revision": 2})
    h.add(2, "cas", "ok", 2, 4, {"key": "k", "value": "c", "expected_revision": 1}, {"revision": 3})
    assert check_kv(h.ops)["valid"] is False


def test_kv_create_on_existing_key_is_flagged() -> None:
    h = HistoryBuilder()
    h.add(0, "put", "ok", 0, 1, {"key": "k", "value": "a"}, {"revision": 1})
    h.add(1, "cas", "ok", 2, 3, {"key": "k", "value": "b", "expected_revision": 0}, {"revision": 2})
    assert check_kv(h.ops)["valid"] is False


def test_kv_unknown_put_that_appears_later_is_fine() -> None:
    h = HistoryBuilder()
    h.add(0, "put", "info", 0, 2, {"key": "k", "value": "a"})
    h.add(1, "get", "ok", 5, 6, {"key": "k"}, {"value": "a", "revision": 1})
    assert check_kv(h.ops)["valid"] is True


def test_kv_gives_unknown_when_budget_runs_out() -> None:
    h = HistoryBuilder()
    for i in range(14):
        h.add(i, "put", "info", 0, 1, {"key": "k", "value": f"v{i}"})
        h.add(20 + i, "get", "ok", 2, 10, {"key": "k"}, {"value": f"v{i}", "revision": i + 1})
    h.add(40, "get", "ok", 2, 10, {"key": "k"}, {"value": "ghost", "revision": 99})
    assert check_kv(h.ops, budget_per_key=50)["valid"] == "unknown"


def test_set_clean_lost_unexpected() -> None:
    h = HistoryBuilder()
    h.add(0, "add", "ok", 0, 1, "a")
    h.add(0, "add", "info", 1, 2, "b")
    h.add(0, "add", "ok", 2, 3, "c")
    h.add(0, "add", "fail", 3, 4, "d")
    clean = HistoryBuilder()
    clean.ops = h.ops + [h.ops[0].__class__(9, 9, "set-read", h.ops[0].type, 10, 11, None, ["a", "b", "c"])]
    verdict = check_set(clean.ops)
    assert verdict["valid"] is True and verdict["recovered_count"] == 1
    h.add(9, "set-read", "ok", 10, 11, None, ["a", "z"])
    verdict = check_set(h.ops)
    assert verdict["valid"] is False
    assert verdict["lost_sample"] == ["c"]
    assert verdict["unexpected_sample"] == ["z"]


def test_set_without_final_read_is_unknown() -> None:
    h = HistoryBuilder()
    h.add(0, "add", "ok", 0, 1, "a")
    h.add(9, "set-read", "fail", 10, 11)
    assert check_set(h.ops)["valid"] == "unknown"


def test_set_node_missing_an_acknowledged_element_is_divergence() -> None:
    h = HistoryBuilder()
    h.add(0, "add", "ok", 0, 1, "a")
    h.add(0, "add", "ok", 1, 2, "b")
    h.add(9, "set-read", "ok", 10, 11, None, ["a", "b"], node="n1")
    h.add(9, "set-read", "ok", 12, 13, None, ["a"], node="n2")
    verdict = check_set(h.ops)
    assert verdict["lost_count"] == 0
    assert verdict["node_missing_count"] == {"n1": 0, "n2": 1}
    assert verdict["valid"] is False
