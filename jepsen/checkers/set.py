# pure-core
"""Set checker: every acknowledged add must be in the final read; nothing else may be.

`add` ops carry a unique element as value; `set-read` ops (the final reads, after healing) carry
the elements they saw as result. lost = acknowledged adds missing from the final read (from every
final read when there are several, i.e. from the union); unexpected = read but never added;
recovered = adds with unknown outcome that turned out to be present; per node, acknowledged adds
missing from that node's read are divergence (a violation too).
"""

from __future__ import annotations

from typing import Any

from jepsen.history import Op, OpType

SAMPLE_MAX = 20


def check_set(ops: list[Op]) -> dict[str, Any]:
    adds = [op for op in ops if op.f == "add"]
    reads = [op for op in ops if op.f == "set-read" and op.type is OpType.OK]
    attempted = {op.value for op in adds}
    acked = {op.value for op in adds if op.type is OpType.OK}
    unknown = {op.value for op in adds if op.type is OpType.INFO}
    if not reads:
        return {"valid": "unknown", "error": "no successful final read", "acknowledged_count": len(acked)}
    read: set[Any] = set()
    for op in reads:
        read.update(op.result)
    lost = acked - read
    unexpected = read - attempted
    node_missing = {op.node: sorted(acked - set(op.result), key=str) for op in reads}
    return {
        "valid": not (lost or unexpected or any(node_missing.values())),
        "node_missing_count": {node: len(m) for node, m in sorted(node_missing.items())},
        "attempted_count": len(attempted),
        "acknowledged_count": len(acked),
        "unknown_count": len(unknown),
        "failed_count": len(attempted) - len(acked) - len(unknown),
        "read_count": len(read),
        "recovered_count": len(unknown & read),
        "lost_count": len(lost),
        "lost_sample": sorted(lost, key=str)[:SAMPLE_MAX],
        "unexpected_count": len(unexpected),
        "unexpected_sample": sorted(unexpected, key=str)[:SAMPLE_MAX],
    }
