"""Adapter that runs the deterministic SimNet (raft.testing.simnet) under a trio clock, so a
RaftHost can be tested against drops, delays, duplicates, reordering, partitions and pauses.

Time: one SimNet tick is `tick_s` seconds of trio time (a MockClock in tests). A pump task
wakes every tick, asks SimNet for the messages due now and puts each into its destination's
bounded incoming channel. `send_nowait` hands messages to SimNet stamped with the current tick.
Faults are set on the SimNet itself (`network.simnet.partition(...)`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import trio

from raft.testing.simnet import SimNet
from raft.transport.base import INCOMING_QUEUE_MAX, Transport, deliver_nowait
from raft.types import Message, NodeId


class SimulatedNetwork:
    def __init__(self, simnet: SimNet, *, tick_s: float = 0.01) -> None:
        self.simnet = simnet
        self.tick_s = tick_s
        self._endpoints: dict[NodeId, SimulatedTransport] = {}
        self._start_s = 0.0
        self._stack = contextlib.AsyncExitStack()
        self.undeliverable = 0

    @property
    def now(self) -> int:
        """The current SimNet tick."""
        return math.floor((trio.current_time() - self._start_s) / self.tick_s)

    def endpoint(self, node_id: NodeId) -> SimulatedTransport:
        transport = SimulatedTransport(self, node_id)
        self._endpoints[node_id] = transport
        return transport

    async def __aenter__(self) -> SimulatedNetwork:
        self._start_s = trio.current_time()
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(self._pump)
        self._cancel = nursery.cancel_scope
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cancel.cancel()
        await self._stack.__aexit__(None, None, None)

    async def _pump(self) -> None:
        tick = self.now
        while True:  # until the network closes (cancelled)
            tick += 1
            await trio.sleep_until(self._start_s + tick * self.tick_s)
            for msg in self.simnet.due(tick):
                target = self._endpoints.get(msg.dst)
                if target is None or target.closed or not deliver_nowait(target._inbox, msg):
                    self.undeliverable += 1


class SimulatedTransport(Transport):
    def __init__(self, network: SimulatedNetwork, node_id: NodeId) -> None:
        self.network = network
        self.node_id = node_id
        self._inbox, self.incoming = trio.open_memory_channel[Message](INCOMING_QUEUE_MAX)
        self.closed = False

    def send_nowait(self, msgs: Sequence[Message]) -> None:
        if self.closed:
            return
        now = self.network.now
        for msg in msgs:
            self.network.simnet.send(msg, now)

    async def aclose(self) -> None:
        self.closed = True
        self._inbox.close()
