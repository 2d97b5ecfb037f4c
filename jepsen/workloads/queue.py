"""Queue workload: writers publish unique values to an R3 stream, readers fetch and ack them
through one durable pull consumer, then a final drain and a full read from every node.

Writers (processes 0..concurrency-1, minus the readers) publish "p-k" values and wait for the
PubAck (ok with its stream sequence; unknown on timeout). Readers fetch small batches and ack
each message; every fetch is a `read` op listing (value, sequence). After the run is healed, a
fresh reader drains the consumer until it stays empty for longer than the ack wait (so messages
delivered but never acked come back), then `read_each_node` reads the whole stream from each
node in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import nats.errors
import nats.js.api

from jepsen import client
from jepsen.checkers.queue import check_queue
from jepsen.history import OpType
from jepsen.workloads.base import FINAL_PROCESS_BASE, RunContext, create_stream, read_each_node, retry_until

STREAM = "jepsen_queue"
SUBJECT = "jepsen.queue"
CONSUMER = "readers"
ACK_WAIT_S = 3.0
PUBLISH_TIMEOUT_S = 2.0
FETCH_BATCH = 20
FETCH_TIMEOUT_S = 1.0
DRAIN_DEADLINE_S = 60.0


def _entry(msg: Any) -> dict[str, Any]:
    return {"value": msg.data.decode(), "seq": msg.metadata.sequence.stream}


@attrs.define
class QueueWorkload:
    name: str = "queue"
    readers: int = 2

    async def setup(self, ctx: RunContext) -> None:
        await create_stream(ctx, {
            "name": STREAM, "subjects": [SUBJECT], "num_replicas": ctx.replicas, "storage": "file",
            "retention": "limits", "discard": "old",
        })  # fmt: skip
        config = {
            "durable_name": CONSUMER, "ack_policy": "explicit", "deliver_policy": "all",
            "ack_wait": int(ACK_WAIT_S * 1e9), "max_deliver": -1, "max_ack_pending": 10_000,
            "num_replicas": ctx.replicas,
        }  # fmt: skip

        async def create_consumer() -> None:
            nc, _node = await ctx.any_connection("jepsen-setup")
            try:
                body = {"stream_name": STREAM, "config": config}
                await client.api(nc, f"CONSUMER.CREATE.{STREAM}.{CONSUMER}", body, timeout_s=5.0)
            finally:
                await nc.close()

        await retry_until(create_consumer, 30.0, "create consumer")

    def clients(self, ctx: RunContext) -> list[Callable[[], Awaitable[None]]]:
        readers = min(self.readers, max(ctx.concurrency - 1, 0))
        procs: list[Callable[[], Awaitable[None]]] = []
        for p in range(ctx.concurrency):
            if p < ctx.concurrency - readers:
                procs.append(lambda p=p: self._writer(ctx, p))
            else:
                procs.append(lambda p=p: self._reader(ctx, p, ctx.stop))
        return procs

    async def _writer(self, ctx: RunContext, process: int) -> None:
        url, node = ctx.node_url(process)
        nc = await client.connect(url, f"jepsen-writer-{process}")
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            for k in range(10_000_000):
                if not await ctx.pace():
                    return
                value = f"{process}-{k}"
                invoke_s = ctx.history.now_s()
                try:
                    ack = await js.publish(SUBJECT, value.encode(), timeout=PUBLISH_TIMEOUT_S)
                except Exception as exc:
                    ctx.record(process, "publish", client.outcome(exc), invoke_s, value=value, node=node,
                               error=client.describe(exc))  # fmt: skip
                    continue
                ctx.record(process, "publish", OpType.OK, invoke_s, value=value, node=node, result={"seq": ack.seq})
        finally:
            await nc.close()

    async def _reader(self, ctx: RunContext, process: int, stop: asyncio.Event) -> None:
        """Fetch and ack until stop is set."""
        url, node = ctx.node_url(process)
        nc = await client.connect(url, f"jepsen-reader-{process}")
        try:
            sub = await retry_until(
                lambda: nc.jetstream(timeout=2.0).pull_subscribe_bind(CONSUMER, STREAM), 10.0, "bind consumer"
            )
            while not stop.is_set():
                await self._fetch_once(ctx, process, node, sub)
                if not await ctx.pace():
                    break
        finally:
            await nc.close()

    async def _fetch_once(self, ctx: RunContext, process: int, node: str, sub: Any) -> int:
        invoke_s = ctx.history.now_s()
        try:
            msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
        except nats.errors.TimeoutError:
            msgs = []
        except Exception as exc:
            ctx.record(process, "read", OpType.FAIL, invoke_s, node=node, error=client.describe(exc))
            return 0
        ctx.record(process, "read", OpType.OK, invoke_s, node=node, result=[_entry(m) for m in msgs])
        for msg in msgs:
            try:
                await msg.ack()
            except Exception:
                pass  # unacked messages are redelivered; the drain picks them up
        return len(msgs)

    async def final(self, ctx: RunContext) -> None:
        await self._drain(ctx)
        await read_each_node(ctx, STREAM, "node-read", lambda m: {"value": m["data"], "seq": m["seq"]})

    async def _drain(self, ctx: RunContext) -> None:
        """Fetch until empty for longer than the ack wait, or until the drain deadline."""
        process = FINAL_PROCESS_BASE
        nc, node = await ctx.any_connection("jepsen-drain")
        try:
            sub = await retry_until(
                lambda: nc.jetstream(timeout=2.0).pull_subscribe_bind(CONSUMER, STREAM), 20.0, "bind consumer"
            )
            loop = asyncio.get_running_loop()
            end = loop.time() + DRAIN_DEADLINE_S
            quiet_since = loop.time()
            while loop.time() < end and loop.time() - quiet_since < ACK_WAIT_S + 2 * FETCH_TIMEOUT_S:
                if await self._fetch_once(ctx, process, node, sub):
                    quiet_since = loop.time()
        finally:
            await nc.close()

    def check(self, ops: list) -> dict[str, Any]:
        return check_queue(ops)
