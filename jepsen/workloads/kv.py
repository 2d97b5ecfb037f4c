"""KV register workload: put / get / update-with-revision on a few keys of an R3 bucket.

Each process, bound to one node, picks a key and an operation from its own seeded generator.
Values are unique ("p-k"), so every revision names one written value. An update uses the last
revision this process saw for the key (from its own get or write) and becomes a create (expected
revision 0) when it has seen none. A get of an absent key is an ok read of None. The checker
(checkers/kv.py) checks each key for linearizability.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import nats.js.errors

from jepsen import client
from jepsen.checkers.kv import check_kv
from jepsen.history import OpType
from jepsen.workloads.base import RunContext, retry_until

BUCKET = "jepsen"
KEYS = ("k0", "k1", "k2")
OP_TIMEOUT_S = 2.0


@attrs.define
class KvWorkload:
    name: str = "kv"

    async def setup(self, ctx: RunContext) -> None:
        async def create() -> None:
            nc, _node = await ctx.any_connection("jepsen-setup")
            try:
                js = nc.jetstream(timeout=5.0)
                await js.create_key_value(bucket=BUCKET, replicas=ctx.replicas, history=1)
            finally:
                await nc.close()

        await retry_until(create, 30.0, "create KV bucket")

    def clients(self, ctx: RunContext) -> list[Callable[[], Awaitable[None]]]:
        return [lambda p=p: self._process(ctx, p) for p in range(ctx.concurrency)]

    async def _process(self, ctx: RunContext, process: int) -> None:
        url, node = ctx.node_url(process)
        rng = ctx.rng(process)
        nc = await client.connect(url, f"jepsen-kv-{process}")
        try:
            kv = await retry_until(lambda: nc.jetstream(timeout=OP_TIMEOUT_S).key_value(BUCKET), 10.0, "bind KV")
            seen: dict[str, int] = {}
            for k in range(10_000_000):
                if not await ctx.pace():
                    return
                key = rng.choice(KEYS)
                f = rng.choice(("get", "get", "put", "cas", "cas"))
                await self._one(ctx, kv, process, node, f, key, f"{process}-{k}", seen)
        finally:
            await nc.close()

    async def _one(self, ctx, kv, process: int, node: str, f: str, key: str, value: str, seen: dict) -> None:
        invoke_s = ctx.history.now_s()
        op_value: dict[str, Any] = {"key": key}
        try:
            if f == "get":
                result = await self._get(kv, key)
            elif f == "put":
                op_value["value"] = value
                result = {"revision": await kv.put(key, value.encode())}
            else:
                expected = seen.get(key, 0)
                op_value.update(value=value, expected_revision=expected)
                if expected == 0:
                    revision = await kv.create(key, value.encode())
                else:
                    revision = await kv.update(key, value.encode(), last=expected)
                result = {"revision": revision}
        except Exception as exc:
            if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
                seen.pop(key, None)  # stale: re-read before the next update
            ctx.record(process, f, client.outcome(exc), invoke_s, value=op_value, node=node,
                       error=client.describe(exc))  # fmt: skip
            return
        if result.get("revision"):
            seen[key] = result["revision"]
        ctx.record(process, f, OpType.OK, invoke_s, value=op_value, node=node, result=result)

    async def _get(self, kv: Any, key: str) -> dict[str, Any]:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return {"value": None, "revision": None}
        return {"value": entry.value.decode() if entry.value is not None else None, "revision": entry.revision}

    async def final(self, ctx: RunContext) -> None:
        """Nothing to drain: every read happened during the run."""

    def check(self, ops: list) -> dict[str, Any]:
        return check_kv(ops)
