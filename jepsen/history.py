"""Operation history: what every client asked for, when, and what came back.

Each operation is one record holding both its invocation and its completion time (seconds since
the start of the run), its outcome (ok: it happened; fail: it certainly did not happen; info: we
do not know, e.g. a timeout), the client process that issued it and the node it talked to.
Nemesis actions are recorded the same way with process NEMESIS_PROCESS, so a report can shade
fault windows. Histories are saved as JSON lines, one operation per line, and loaded back as the
same frozen values; the checkers only ever see these values.
"""

from __future__ import annotations

import enum
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import attrs

NEMESIS_PROCESS = -1


class OpType(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@attrs.frozen
class Op:
    index: int
    process: int
    f: str
    type: OpType
    invoke_s: float
    complete_s: float
    value: Any = None
    result: Any = None
    node: str = ""
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.complete_s - self.invoke_s

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["type"] = self.type.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        fields = dict(data)
        fields["type"] = OpType(fields["type"])
        return cls(**fields)


@attrs.define
class History:
    """Append-only, in-memory recorder. `clock_s` is injected (seconds since run start)."""

    clock_s: Callable[[], float]
    ops: list[Op] = attrs.field(factory=list)

    def now_s(self) -> float:
        return self.clock_s()

    def record(
        self,
        process: int,
        f: str,
        op_type: OpType,
        invoke_s: float,
        value: Any = None,
        result: Any = None,
        node: str = "",
        error: str | None = None,
    ) -> Op:
        op = Op(
            index=len(self.ops),
            process=process,
            f=f,
            type=op_type,
            invoke_s=invoke_s,
            complete_s=self.clock_s(),
            value=value,
            result=result,
            node=node,
            error=error,
        )
        self.ops.append(op)
        return op


def save_jsonl(ops: Iterable[Op], path: pathlib.Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for op in ops:
            out.write(json.dumps(op.to_json(), sort_keys=True) + "\n")


def load_jsonl(path: pathlib.Path) -> list[Op]:
    with path.open(encoding="utf-8") as src:
        return [Op.from_json(json.loads(line)) for line in src if line.strip()]
