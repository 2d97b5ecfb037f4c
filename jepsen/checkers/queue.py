# pure-core
"""Queue checker: did every acknowledged publish survive, and did nothing else appear?

Inputs are the ops of the queue workload:
- `publish` ops: value = the unique payload; an ok publish has result {"seq": stream sequence}.
- `read` ops (consumer fetches and the final drain): result = [{"value", "seq"}, ...].
- `node-read` ops: a full read of the stream served by one node (op.node), result as for read.

Findings:
- lost: acknowledged but never read anywhere. Split per writer process by the position of the
  value among that writer's publishes: before the writer's first value that was read, between its
  first and last read values (a hole in the log: always a violation), after its last.
- unexpected: read but never published.
- duplicates: values delivered more than once by the consumer (at-least-once: informational), and
  values stored at more than one stream sequence (a violation: we never retry a publish).
- seq conflicts: one stream sequence seen with two different values (in acks or reads).
- divergence: per node, acknowledged values missing from that node's full read. When per-node
  reads were attempted but none succeeded, divergence is unchecked and the verdict is "unknown".
- recovered: publishes whose outcome was unknown but whose value was read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from jepsen.history import Op, OpType

SAMPLE_MAX = 20


def _sample(values: Iterable[Any]) -> list[Any]:
    return sorted(values, key=str)[:SAMPLE_MAX]


def _read_entries(op: Op) -> list[dict[str, Any]]:
    if op.type is not OpType.OK or not op.result:
        return []
    return list(op.result)


def _lost_split(publishes: list[Op], lost: set[Any], read: set[Any]) -> dict[str, set[Any]]:
    """Split lost values by where they fall in their writer's sequence of publishes."""
    split: dict[str, set[Any]] = {"before": set(), "hole": set(), "after": set()}
    by_process: dict[int, list[Op]] = defaultdict(list)
    for op in publishes:
        by_process[op.process].append(op)
    for ops in by_process.values():
        ops.sort(key=lambda o: o.invoke_s)
        positions = [i for i, op in enumerate(ops) if op.value in read]
        first = positions[0] if positions else len(ops)
        last = positions[-1] if positions else len(ops)
        for i, op in enumerate(ops):
            if op.value not in lost:
                continue
            key = "before" if i < first else ("hole" if i < last else "after")
            split[key].add(op.value)
    return split


def _seq_maps(publishes: list[Op], reads: list[Op]) -> tuple[dict[int, set[Any]], dict[Any, set[int]]]:
    seq_values: dict[int, set[Any]] = defaultdict(set)
    value_seqs: dict[Any, set[int]] = defaultdict(set)
    for op in publishes:
        if op.type is OpType.OK and isinstance(op.result, dict) and "seq" in op.result:
            seq_values[op.result["seq"]].add(op.value)
            value_seqs[op.value].add(op.result["seq"])
    for op in reads:
        for entry in _read_entries(op):
            seq_values[entry["seq"]].add(entry["value"])
            value_seqs[entry["value"]].add(entry["seq"])
    return seq_values, value_seqs


def _divergence(node_reads: list[Op], acked: set[Any]) -> dict[str, Any]:
    per_node: dict[str, set[Any]] = defaultdict(set)
    for op in node_reads:
        if op.type is OpType.OK:  # a node we failed to read says nothing about its contents
            per_node[op.node].update(e["value"] for e in _read_entries(op))
    missing = {node: acked - values for node, values in per_node.items()}
    return {
        "nodes_read": sorted(per_node),
        "missing_count": {node: len(m) for node, m in sorted(missing.items())},
        "missing_sample": {node: _sample(m) for node, m in sorted(missing.items()) if m},
    }


def check_queue(ops: list[Op]) -> dict[str, Any]:
    publishes = [op for op in ops if op.f == "publish"]
    consumer_reads = [op for op in ops if op.f == "read"]
    node_reads = [op for op in ops if op.f == "node-read"]
    attempted = {op.value for op in publishes}
    acked = {op.value for op in publishes if op.type is OpType.OK}
    unknown = {op.value for op in publishes if op.type is OpType.INFO}
    delivered = Counter(e["value"] for op in consumer_reads for e in _read_entries(op))
    read = set(delivered) | {e["value"] for op in node_reads for e in _read_entries(op)}
    lost = acked - read
    split = _lost_split(publishes, lost, read)
    unexpected = read - attempted
    seq_values, value_seqs = _seq_maps(publishes, consumer_reads + node_reads)
    seq_conflicts = {seq: sorted(v, key=str) for seq, v in seq_values.items() if len(v) > 1}
    multi_seq = {value for value, seqs in value_seqs.items() if len(seqs) > 1}
    divergence = _divergence(node_reads, acked)
    diverged = any(divergence["missing_count"].values())
    valid: bool | str = not (lost or unexpected or seq_conflicts or multi_seq or diverged)
    if valid and node_reads and not divergence["nodes_read"]:
        valid = "unknown"  # per-node reads were attempted and none succeeded: divergence unchecked
    return {
        "valid": valid,
        "attempted_count": len(attempted),
        "acknowledged_count": len(acked),
        "unknown_count": len(unknown),
        "failed_count": len(attempted) - len(acked) - len(unknown),
        "read_count": len(read),
        "recovered_count": len(unknown & read),
        "lost_count": len(lost),
        "lost_before_first_read_count": len(split["before"]),
        "lost_hole_count": len(split["hole"]),
        "lost_after_last_read_count": len(split["after"]),
        "lost_sample": _sample(lost),
        "lost_hole_sample": _sample(split["hole"]),
        "unexpected_count": len(unexpected),
        "unexpected_sample": _sample(unexpected),
        "duplicated_delivery_count": sum(1 for c in delivered.values() if c > 1),
        "undelivered_by_consumer_count": len(acked - set(delivered)),
        "multi_seq_count": len(multi_seq),
        "multi_seq_sample": _sample(multi_seq),
        "seq_conflict_count": len(seq_conflicts),
        "seq_conflict_sample": dict(sorted(seq_conflicts.items())[:SAMPLE_MAX]),
        "divergence": divergence,
    }
