"""Raft transports: the Transport interface (base), an in-memory trio transport for tests, TCP
between servers (one multiplexed connection per peer pair, codec.py), and an adapter running
the simulator's SimNet under a trio clock (simulated.py, imported on demand)."""

from raft.transport.base import Transport
from raft.transport.memory import MemoryNetwork, MemoryTransport
from raft.transport.tcp import TcpTransport

__all__ = ["MemoryNetwork", "MemoryTransport", "TcpTransport", "Transport"]
