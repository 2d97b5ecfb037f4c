# pure-core
"""A seeded, tick-driven simulated network for Raft messages.

How it works: `send(msg, now)` decides, with the injected `random.Random`, whether the message is
dropped, how many ticks it is delayed (uniform in `delay_ticks`) and whether a duplicate copy is
also scheduled (with its own delay). Each scheduled copy gets a random tie-break key, so `due(now)`
returns the messages whose delivery tick has come in an order that reorders them within the delay
window, yet is fully determined by the seed.

Reachability is checked both when a message is sent and when it is delivered, so a partition that
starts while a message is in flight loses it, as a real cut link would. `partition(groups)`
splits nodes into groups (a node listed in no group reaches nobody), `block(src, dst)` cuts one
direction only, and `heal()` removes both kinds of cut (not pauses).

A paused node (think SIGSTOP) neither sends nor receives: its outgoing messages are dropped at
`send`, and messages addressed to it are HELD (like bytes waiting in a socket buffer) and handed
out again by the first `due()` after `resume(node)`, still subject to reachability at that moment.
The held queue per node is bounded (`held_max`); beyond it the oldest held message is dropped.

Why: the Raft core and the simulator must replay a failure exactly from its seed (R7), so nothing
here reads a clock or an unseeded random source.
"""

from __future__ import annotations

import heapq
import random
from collections import deque

import attrs

from raft.types import Message, NodeId


@attrs.define
class NetStats:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0
    held: int = 0


@attrs.define
class SimNet:
    """See the module docstring. All decisions come from `rng`."""

    rng: random.Random
    drop_rate: float = attrs.field(default=0.0, kw_only=True)
    duplicate_rate: float = attrs.field(default=0.0, kw_only=True)
    delay_ticks: tuple[int, int] = attrs.field(default=(1, 3), kw_only=True)
    held_max: int = attrs.field(default=10_000, kw_only=True)
    stats: NetStats = attrs.field(factory=NetStats, init=False)
    _queue: list[tuple[int, float, int, Message]] = attrs.field(factory=list, init=False)
    _seq: int = attrs.field(default=0, init=False)
    _groups: list[frozenset[NodeId]] | None = attrs.field(default=None, init=False)
    _blocked: set[tuple[NodeId, NodeId]] = attrs.field(factory=set, init=False)
    _paused: set[NodeId] = attrs.field(factory=set, init=False)
    _held: dict[NodeId, deque[Message]] = attrs.field(factory=dict, init=False)
    _released: list[Message] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        lo, hi = self.delay_ticks
        assert 0 <= lo <= hi, "delay_ticks must be (lo, hi) with 0 <= lo <= hi"
        assert 0.0 <= self.drop_rate <= 1.0 and 0.0 <= self.duplicate_rate <= 1.0

    # -- faults ---------------------------------------------------------------------------

    def partition(self, groups: list[set[NodeId]]) -> None:
        """Only nodes in the same group can talk; a node in no group talks to nobody."""
        self._groups = [frozenset(g) for g in groups]

    def block(self, src: NodeId, dst: NodeId) -> None:
        """Cut the src -> dst direction only."""
        self._blocked.add((src, dst))

    def unblock(self, src: NodeId, dst: NodeId) -> None:
        self._blocked.discard((src, dst))

    def heal(self) -> None:
        """Remove partitions and one-way blocks. Paused nodes stay paused."""
        self._groups = None
        self._blocked.clear()

    def pause(self, node: NodeId) -> None:
        self._paused.add(node)

    def resume(self, node: NodeId) -> None:
        self._paused.discard(node)
        held = self._held.pop(node, None)
        if held:
            self._released.extend(held)

    def is_paused(self, node: NodeId) -> bool:
        return node in self._paused

    def can_reach(self, src: NodeId, dst: NodeId) -> bool:
        if (src, dst) in self._blocked:
            return False
        if self._groups is None:
            return True
        return any(src in g and dst in g for g in self._groups)

    def drop_to(self, node: NodeId) -> int:
        """Forget every message in flight to or held for `node` (its process died)."""
        before = len(self._queue) + len(self._released)
        self._queue = [item for item in self._queue if item[3].dst != node]
        heapq.heapify(self._queue)
        self._released = [m for m in self._released if m.dst != node]
        dropped = before - len(self._queue) - len(self._released) + len(self._held.pop(node, ()))
        self.stats.dropped += dropped
        return dropped

    # -- traffic --------------------------------------------------------------------------

    def send(self, msg: Message, now: int) -> None:
        self.stats.sent += 1
        if msg.src in self._paused or not self.can_reach(msg.src, msg.dst):
            self.stats.dropped += 1
            return
        if self.drop_rate and self.rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return
        self._schedule(msg, now)
        if self.duplicate_rate and self.rng.random() < self.duplicate_rate:
            self.stats.duplicated += 1
            self._schedule(msg, now)

    def _schedule(self, msg: Message, now: int) -> None:
        lo, hi = self.delay_ticks
        at = now + self.rng.randint(lo, hi)
        self._seq += 1
        heapq.heappush(self._queue, (at, self.rng.random(), self._seq, msg))

    def due(self, now: int) -> list[Message]:
        """Messages deliverable at tick `now` (held messages released by `resume` first)."""
        ready = self._released
        self._released = []
        while self._queue and self._queue[0][0] <= now:
            ready.append(heapq.heappop(self._queue)[3])
        out: list[Message] = []
        for msg in ready:
            if msg.dst in self._paused:
                self._hold(msg)
            elif not self.can_reach(msg.src, msg.dst):
                self.stats.dropped += 1
            else:
                self.stats.delivered += 1
                out.append(msg)
        return out

    def _hold(self, msg: Message) -> None:
        held = self._held.setdefault(msg.dst, deque())
        if len(held) >= self.held_max:
            held.popleft()
            self.stats.dropped += 1
        held.append(msg)
        self.stats.held += 1

    def in_flight(self) -> int:
        return len(self._queue) + len(self._released) + sum(len(h) for h in self._held.values())
