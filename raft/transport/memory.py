"""In-memory trio transport: every node of a test shares one MemoryNetwork in one process.

`send_nowait` puts each message straight into the destination's bounded incoming channel, so
per-pair FIFO order holds and nothing is copied. A test can cut a node off (`disconnect`) or a
single direction (`block`) to exercise elections; cut messages are dropped, as on a real cut
link. No background tasks are needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from raft.transport.base import INCOMING_QUEUE_MAX, Transport, deliver_nowait
from raft.types import Message, NodeId


@attrs.define
class MemoryNetwork:
    queue_max: int = INCOMING_QUEUE_MAX
    _endpoints: dict[NodeId, MemoryTransport] = attrs.field(factory=dict, init=False)
    _blocked: set[tuple[NodeId, NodeId]] = attrs.field(factory=set, init=False)
    _down: set[NodeId] = attrs.field(factory=set, init=False)
    dropped: int = attrs.field(default=0, init=False)

    def endpoint(self, node_id: NodeId) -> MemoryTransport:
        old = self._endpoints.get(node_id)
        if old is not None and not old.closed:
            raise ValueError(f"{node_id} is already attached")
        transport = MemoryTransport(self, node_id)
        self._endpoints[node_id] = transport
        return transport

    def block(self, src: NodeId, dst: NodeId) -> None:
        self._blocked.add((src, dst))

    def disconnect(self, node: NodeId) -> None:
        self._down.add(node)

    def heal(self) -> None:
        self._blocked.clear()
        self._down.clear()

    def _route(self, msg: Message) -> None:
        target = self._endpoints.get(msg.dst)
        cut = (msg.src, msg.dst) in self._blocked or {msg.src, msg.dst} & self._down
        if target is None or target.closed or cut or not deliver_nowait(target._inbox, msg):
            self.dropped += 1


class MemoryTransport(Transport):
    def __init__(self, network: MemoryNetwork, node_id: NodeId) -> None:
        self.network = network
        self.node_id = node_id
        self._inbox, self.incoming = trio.open_memory_channel[Message](network.queue_max)
        self.closed = False

    def send_nowait(self, msgs: Sequence[Message]) -> None:
        if self.closed:
            return
        for msg in msgs:
            self.network._route(msg)

    async def aclose(self) -> None:
        self.closed = True
        self._inbox.close()
