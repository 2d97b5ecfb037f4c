"""The queue checker flags each anomaly on hand-made histories and passes clean ones."""

from __future__ import annotations

from jepsen.checkers.queue import check_queue

from .helpers import HistoryBuilder


def _published(h: HistoryBuilder, process: int, values: list[str], first_seq: int, t0: float = 0.0) -> None:
    for i, value in enumerate(values):
        t = t0 + i
        h.add(process, "publish", "ok", t, t + 0.5, value, {"seq": first_seq + i})


def _entries(values: list[str], first_seq: int) -> list[dict]:
    return [{"value": v, "seq": first_seq + i} for i, v in enumerate(values)]


def _node_reads(h: HistoryBuilder, values: list[str], nodes=("n1", "n2", "n3"), t: float = 100.0) -> None:
    for node in nodes:
        h.add(99, "node-read", "ok", t, t + 1, None, _entries(values, 1), node)


def test_clean_history_is_valid() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b", "c"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a", "b", "c"], 1))
    _node_reads(h, ["a", "b", "c"])
    verdict = check_queue(h.ops)
    assert verdict["valid"] is True
    assert verdict["acknowledged_count"] == 3
    assert verdict["lost_count"] == 0 and verdict["unexpected_count"] == 0


def test_lost_values_split_before_hole_after() -> None:
    h = HistoryBuilder()
    values = ["v0", "v1", "v2", "v3", "v4", "v5"]
    _published(h, 0, values, 1)
    # only v1 and v3 were ever read: v0 before, v2 a hole, v4 v5 after
    h.add(1, "read", "ok", 10, 11, None, [{"value": "v1", "seq": 2}, {"value": "v3", "seq": 4}])
    verdict = check_queue(h.ops)
    assert verdict["valid"] is False
    assert verdict["lost_count"] == 4
    assert verdict["lost_before_first_read_count"] == 1
    assert verdict["lost_hole_count"] == 1
    assert verdict["lost_hole_sample"] == ["v2"]
    assert verdict["lost_after_last_read_count"] == 2


def test_unknown_publish_read_later_is_recovered_not_lost() -> None:
    h = HistoryBuilder()
    h.add(0, "publish", "info", 0, 2, "x")
    h.add(0, "publish", "fail", 3, 4, "y")
    h.add(1, "read", "ok", 10, 11, None, [{"value": "x", "seq": 1}])
    verdict = check_queue(h.ops)
    assert verdict["valid"] is True
    assert verdict["recovered_count"] == 1
    assert verdict["failed_count"] == 1


def test_unexpected_value_is_flagged() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a", "ghost"], 1))
    verdict = check_queue(h.ops)
    assert verdict["valid"] is False
    assert verdict["unexpected_sample"] == ["ghost"]


def test_duplicate_delivery_is_counted_but_allowed() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a", "b"], 1))
    h.add(2, "read", "ok", 12, 13, None, _entries(["a"], 1))
    verdict = check_queue(h.ops)
    assert verdict["valid"] is True
    assert verdict["duplicated_delivery_count"] == 1


def test_value_stored_at_two_sequences_is_flagged() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b"], 1)
    h.add(1, "read", "ok", 10, 11, None, [{"value": "a", "seq": 1}, {"value": "b", "seq": 2}, {"value": "a", "seq": 3}])
    verdict = check_queue(h.ops)
    assert verdict["valid"] is False
    assert verdict["multi_seq_sample"] == ["a"]


def test_sequence_with_two_values_is_flagged() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a", "b"], 1), node="n1")
    h.add(1, "node-read", "ok", 10, 11, None, [{"value": "b", "seq": 1}, {"value": "a", "seq": 2}], node="n2")
    verdict = check_queue(h.ops)
    assert verdict["valid"] is False
    assert verdict["seq_conflict_count"] == 2


def test_node_missing_acknowledged_value_is_divergence() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b", "c"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a", "b", "c"], 1))
    _node_reads(h, ["a", "b", "c"], nodes=("n1", "n2"))
    _node_reads(h, ["a", "b"], nodes=("n3",))
    verdict = check_queue(h.ops)
    assert verdict["valid"] is False
    assert verdict["lost_count"] == 0
    assert verdict["divergence"]["missing_count"] == {"n1": 0, "n2": 0, "n3": 1}
    assert verdict["divergence"]["missing_sample"] == {"n3": ["c"]}


def test_failed_reads_contribute_nothing() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a"], 1)
    h.add(1, "read", "fail", 10, 11, None, _entries(["a"], 1))
    verdict = check_queue(h.ops)
    assert verdict["lost_count"] == 1
    assert verdict["valid"] is False


def test_failed_node_read_is_not_divergence() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a"], 1)
    _node_reads(h, ["a"], nodes=("n1",))
    h.add(99, "node-read", "fail", 100, 101, None, None, "n4")
    verdict = check_queue(h.ops)
    assert verdict["valid"] is True
    assert verdict["divergence"]["nodes_read"] == ["n1"]


def test_no_node_read_succeeding_leaves_divergence_unchecked() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a"], 1))
    for node in ("n1", "n2", "n3"):
        h.add(99, "node-read", "fail", 100, 101, None, None, node)
    verdict = check_queue(h.ops)
    assert verdict["valid"] == "unknown"
    assert verdict["lost_count"] == 0


def test_a_real_anomaly_stays_invalid_without_node_reads() -> None:
    h = HistoryBuilder()
    _published(h, 0, ["a", "b"], 1)
    h.add(1, "read", "ok", 10, 11, None, _entries(["a"], 1))
    h.add(99, "node-read", "fail", 100, 101, None, None, "n1")
    assert check_queue(h.ops)["valid"] is False
