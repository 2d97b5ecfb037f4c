"""Hand-made histories for the checker tests."""

from __future__ import annotations

from typing import Any

from jepsen.history import Op, OpType


class HistoryBuilder:
    """Builds ops with explicit times; index is assigned in order of addition."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(
        self,
        process: int,
        f: str,
        op_type: str,
        invoke_s: float,
        complete_s: float,
        value: Any = None,
        result: Any = None,
        node: str = "n1",
    ) -> Op:
        op = Op(len(self.ops), process, f, OpType(op_type), invoke_s, complete_s, value, result, node)
        self.ops.append(op)
        return op
