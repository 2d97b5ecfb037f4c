# pure-core
"""KV register checker: each key of the KV workload must be a linearizable CAS register.

KV ops in the history: `put` (value {"key", "value"}, ok result {"revision"}), `get` (value
{"key"}, ok result {"value", "revision"}; value None when the key is absent) and `cas` (value
{"key", "value", "expected_revision"}; expected_revision 0 means "create": the key must be absent).
Every written value is unique, so a revision names exactly one written value; revisions are mapped
back to values from every ok observation, and the check runs on values. Failed ops certainly did
not take effect and are dropped; gets with unknown outcome say nothing and are dropped; puts and
cas with unknown outcome become optional calls that may take effect at any time after invocation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from jepsen.checkers.linearizable import Call, Verdict, check_register
from jepsen.history import Op, OpType

KV_FS = ("put", "get", "cas")


def _revision_values(ops: list[Op]) -> dict[int, Any]:
    rev_value: dict[int, Any] = {0: None}
    for op in ops:
        if op.type is not OpType.OK or not isinstance(op.result, dict):
            continue
        rev = op.result.get("revision")
        if rev is None:
            continue
        rev_value[rev] = op.result["value"] if op.f == "get" else op.value["value"]
    return rev_value


def _to_call(op: Op, rev_value: dict[int, Any]) -> Call | None:
    if op.type is OpType.FAIL:
        return None
    required = op.type is OpType.OK
    complete = op.complete_s if required else math.inf
    if op.f == "get":
        if not required:
            return None
        return Call(op.index, "read", None, op.result["value"], op.invoke_s, complete)
    if op.f == "put":
        return Call(op.index, "write", op.value["value"], None, op.invoke_s, complete, required)
    expected_rev = op.value["expected_revision"]
    if expected_rev not in rev_value:
        # an expected revision we never saw written: it can only match if it did not exist
        expected = ("never-written-revision", expected_rev)
    else:
        expected = rev_value[expected_rev]
    return Call(op.index, "cas", (expected, op.value["value"]), None, op.invoke_s, complete, required)


def check_kv(ops: list[Op], budget_per_key: int = 200_000) -> dict[str, Any]:
    kv_ops = [op for op in ops if op.f in KV_FS]
    rev_value = _revision_values(kv_ops)
    per_key: dict[str, list[Call]] = defaultdict(list)
    for op in kv_ops:
        call = _to_call(op, rev_value)
        if call is not None:
            per_key[op.value["key"]].append(call)
    keys: dict[str, Any] = {}
    for key, calls in sorted(per_key.items()):
        result = check_register(calls, None, budget_per_key)
        keys[key] = {
            "verdict": result.verdict.value,
            "calls": len(calls),
            "explored": result.explored,
            "stuck_at_ops": list(result.stuck_at) if result.verdict is not Verdict.LINEARIZABLE else [],
        }
    verdicts = {k["verdict"] for k in keys.values()}
    if Verdict.NOT_LINEARIZABLE.value in verdicts:
        valid: bool | str = False
    elif Verdict.UNKNOWN.value in verdicts:
        valid = "unknown"
    else:
        valid = True
    return {
        "valid": valid,
        "ok_count": sum(1 for op in kv_ops if op.type is OpType.OK),
        "fail_count": sum(1 for op in kv_ops if op.type is OpType.FAIL),
        "unknown_count": sum(1 for op in kv_ops if op.type is OpType.INFO),
        "keys": keys,
    }
