"""The Transport interface: how a RaftHost exchanges Messages with other servers.

A transport belongs to one node (`node_id`) and addresses peers by node id. Delivery is best
effort: a message may be lost (peer down, queue full, partition) and Raft retries on its own.
What every implementation promises, checked by one conformance suite:
- a delivered message is equal to the one sent (every field), and arrives at `msg.dst` only;
- messages of all groups share the transport;
- sending to an unknown or unreachable node never raises and never blocks forever;
- queues are bounded: overload drops messages instead of growing memory.

Incoming messages are read with `async for msg in transport.incoming:` (a trio receive channel).
A transport is an async context manager: it starts its background tasks on enter and stops them
on exit.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import trio

from raft.types import Message, NodeId

INCOMING_QUEUE_MAX = 100_000
Receiver = Callable[[Sequence[Message]], None]
Settle = Callable[[], Awaitable[None]]


class Transport(abc.ABC):
    node_id: NodeId
    incoming: trio.MemoryReceiveChannel[Message]

    @abc.abstractmethod
    def send_nowait(self, msgs: Sequence[Message]) -> None:
        """Queue messages for delivery; drops (never blocks) when a queue is full."""

    def set_receiver(self, receiver: Receiver | None, settle: Settle | None = None) -> bool:
        """Ask for received messages to be handed to `receiver` as they are decoded (called
        synchronously from the transport's own tasks; it must not block) instead of being put
        into `incoming`; None goes back to `incoming`. `settle`, if given, is awaited by the
        task that read them after each read's messages were handed over and before it reads
        again (shielded from cancellation: the receiver may finish work there; it must not
        raise). Returns False when the transport does not support it (the default): keep
        reading `incoming`. Messages a node sends to itself still arrive through `incoming`."""
        return False

    def writers_idle(self) -> bool:
        """True if every message sent so far was handed to the OS (nothing waits for a writer
        task). Default: unknown (False)."""
        return False

    def poll_nowait(self) -> bool:
        """Read what already arrived on the connections, without waiting, and hand it to the
        receiver now (see `set_receiver`). For a caller that kept the event loop busy (an inline
        fsync) and would otherwise leave the answers that came meanwhile for a later scheduler
        pass. True if any message was handed over. Default: nothing (False)."""
        return False

    async def send(self, msgs: Sequence[Message]) -> None:
        """Queue messages, then yield to the scheduler so writers can run."""
        self.send_nowait(msgs)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop background tasks and close channels."""


def deliver_nowait(channel: trio.MemorySendChannel[Message], msg: Message) -> bool:
    """Put one message into a bounded channel; False if it was full or closed (dropped)."""
    try:
        channel.send_nowait(msg)
    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        return False
    return True
