"""Shared pieces of the workloads: the run context, stream setup with retries, pacing, and the
per-node full read used at the end of the queue and set workloads.

The per-node read asks the stream leader to step down in favour of each replica in turn
(`STREAM.LEADER.STEPDOWN` with a preferred placement), waits until that node leads, and reads every
sequence through `STREAM.MSG.GET`, which the leader answers from its own store. The read counts
for that node only if it led both before and after the read (else it is a failed node read), so
divergence between replicas shows up as different contents per node.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import nats

from jepsen import client
from jepsen.db import Cluster, NodeState
from jepsen.history import History, OpType

SETUP_DEADLINE_S = 30.0
LEADER_DEADLINE_S = 10.0
FINAL_PROCESS_BASE = 1000


@attrs.define
class RunContext:
    cluster: Cluster
    history: History
    stop: asyncio.Event
    seed: int
    rate_hz: float
    concurrency: int
    replicas: int = 3
    on_op: Callable[[str], None] = lambda _type: None

    def node_url(self, process: int) -> tuple[str, str]:
        node = self.cluster.nodes[process % len(self.cluster.nodes)]
        return node.spec.client_url, node.spec.name

    def rng(self, process: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + process)

    def interval_s(self) -> float:
        return self.concurrency / self.rate_hz if self.rate_hz > 0 else 0.0

    async def pace(self) -> bool:
        """Wait one op interval (rate limiting); False once the run is stopping."""
        try:
            await asyncio.wait_for(self.stop.wait(), self.interval_s())
            return False
        except asyncio.TimeoutError:
            return True

    def record(self, process: int, f: str, op_type: OpType, invoke_s: float, **fields: Any) -> None:
        self.history.record(process, f, op_type, invoke_s, **fields)
        self.on_op(op_type.value)

    async def any_connection(self, name: str) -> tuple[nats.NATS, str]:
        """A connection to the first running node that accepts one, and that node's name."""
        last: Exception | None = None
        for node in self.cluster.nodes:
            if node.state is NodeState.RUNNING:
                try:
                    return await client.connect(node.spec.client_url, name), node.spec.name
                except Exception as exc:  # try the next node
                    last = exc
        raise ConnectionError(f"no node accepted a connection: {last}")


class Workload(Protocol):
    name: str

    async def setup(self, ctx: RunContext) -> None: ...

    def clients(self, ctx: RunContext) -> list[Callable[[], Awaitable[None]]]: ...

    async def final(self, ctx: RunContext) -> None: ...

    def check(self, ops: list) -> dict[str, Any]: ...


async def retry_until(fn: Callable[[], Awaitable[Any]], deadline_s: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    last: Exception | None = None
    for _ in range(10_000):
        if loop.time() > end:
            break
        try:
            return await fn()
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.5)  # retry interval, bounded by the deadline
    raise TimeoutError(f"{what} did not succeed within {deadline_s}s: {last!r}")


async def create_stream(ctx: RunContext, config: dict[str, Any]) -> None:
    async def attempt() -> None:
        nc, _node = await ctx.any_connection("jepsen-setup")
        try:
            try:
                await client.api(nc, f"STREAM.CREATE.{config['name']}", config, timeout_s=5.0)
            except client.ApiError as exc:
                if exc.error.get("err_code") != 10058:  # exists with same name: fine on retry
                    raise
        finally:
            await nc.close()

    await retry_until(attempt, SETUP_DEADLINE_S, f"create stream {config['name']}")


async def _lead_from(nc: nats.NATS, stream: str, name: str) -> str | None:
    """Try to make `name` the stream leader; returns whoever leads afterwards."""
    loop = asyncio.get_running_loop()
    end = loop.time() + LEADER_DEADLINE_S
    leader = await client.stream_leader(nc, stream)
    for _ in range(20):
        if leader == name or loop.time() > end:
            break
        try:
            await client.stepdown(nc, stream, preferred=name)
        except Exception:
            pass
        for _ in range(20):
            await asyncio.sleep(0.25)  # polling the leader, bounded
            leader = await client.stream_leader(nc, stream)
            if leader is not None:
                break
    return leader


def _replicas(info: dict[str, Any]) -> set[str]:
    """Names of the servers holding a replica of the stream (leader and followers)."""
    cluster = info.get("cluster", {})
    names = {peer.get("name") for peer in cluster.get("replicas", [])}
    if cluster.get("leader"):
        names.add(cluster["leader"])
    return names


async def read_each_node(ctx: RunContext, stream: str, f: str, decode: Callable[[dict], Any]) -> None:
    """Record one full read of `stream` per replica (op f), each served by that node as leader."""
    nc, _node = await ctx.any_connection("jepsen-final-read")
    try:
        info = await retry_until(lambda: client.stream_info(nc, stream), SETUP_DEADLINE_S, "stream info")
        last_seq = info["state"]["last_seq"]
        for i, name in enumerate(ctx.cluster.names()):
            replicas = _replicas(info)
            if replicas and name not in replicas:
                continue
            process = FINAL_PROCESS_BASE + 100 + i
            invoke_s = ctx.history.now_s()
            leader = await _lead_from(nc, stream, name)
            try:
                messages = await client.read_stream(nc, stream, last_seq)
                after = await client.stream_leader(nc, stream)
            except Exception as exc:
                ctx.record(process, f, OpType.FAIL, invoke_s, node=name, error=client.describe(exc))
                continue
            if leader != name or after != leader:
                error = f"wanted leader {name}, had {leader} then {after}"
                ctx.record(process, f, OpType.FAIL, invoke_s, node=name, error=error)
                continue
            result = [decode(m) for m in messages]
            ctx.record(process, f, OpType.OK, invoke_s, node=name, result=result, value={"last_seq": last_seq})
    finally:
        await nc.close()
