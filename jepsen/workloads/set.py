"""Set workload: clients add unique elements (publishes to an R3 stream); after healing, the
whole stream is read back from each node in turn (`set-read` ops) and checked by checkers/set.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from jepsen import client
from jepsen.checkers.set import check_set
from jepsen.history import OpType
from jepsen.workloads.base import RunContext, create_stream, read_each_node

STREAM = "jepsen_set"
SUBJECT = "jepsen.set"
ADD_TIMEOUT_S = 2.0


@attrs.define
class SetWorkload:
    name: str = "set"

    async def setup(self, ctx: RunContext) -> None:
        await create_stream(ctx, {"name": STREAM, "subjects": [SUBJECT], "num_replicas": ctx.replicas,
                                  "storage": "file"})  # fmt: skip

    def clients(self, ctx: RunContext) -> list[Callable[[], Awaitable[None]]]:
        return [lambda p=p: self._adder(ctx, p) for p in range(ctx.concurrency)]

    async def _adder(self, ctx: RunContext, process: int) -> None:
        url, node = ctx.node_url(process)
        nc = await client.connect(url, f"jepsen-set-{process}")
        js = nc.jetstream(timeout=ADD_TIMEOUT_S)
        try:
            for k in range(10_000_000):
                if not await ctx.pace():
                    return
                element = f"{process}-{k}"
                invoke_s = ctx.history.now_s()
                try:
                    await js.publish(SUBJECT, element.encode(), timeout=ADD_TIMEOUT_S)
                except Exception as exc:
                    ctx.record(process, "add", client.outcome(exc), invoke_s, value=element, node=node,
                               error=client.describe(exc))  # fmt: skip
                    continue
                ctx.record(process, "add", OpType.OK, invoke_s, value=element, node=node)
        finally:
            await nc.close()

    async def final(self, ctx: RunContext) -> None:
        await read_each_node(ctx, STREAM, "set-read", lambda m: m["data"])

    def check(self, ops: list) -> dict[str, Any]:
        return check_set(ops)
