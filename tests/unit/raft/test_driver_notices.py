"""RaftHost holds a leader's commit notices (APPENDs without entries) back for up to
`hold_notices_s`: proposals one at a time then cost one APPEND per follower each, not two, and
every follower still applies everything soon after the last commit."""

from __future__ import annotations

import trio

from raft.types import Message, MessageType
from tests.unit.raft.test_driver import cluster_of, elected, memory_stores, wait_until


async def _appends_for(count: int, hold_s: float) -> tuple[int, float]:
    """APPENDs the leader sends for `count` proposals made one after another, and how long
    (virtual seconds) after the last commit every follower had applied everything."""
    async with cluster_of(memory_stores(), ["g"]) as cluster:
        leader = await elected(cluster, "g")
        host = cluster.members[leader].host
        host.hold_notices_s = hold_s
        await host.propose("g", b"warm-up")
        for m in cluster.members.values():
            await wait_until(lambda m=m: len(m.applied.data("g")) == 1)
        sent: list[Message] = []
        real_send = host.transport.send_nowait

        def counting_send(msgs: list[Message]) -> None:
            sent.extend(msgs)
            real_send(msgs)

        host.transport.send_nowait = counting_send  # type: ignore[method-assign]
        for i in range(count):
            await host.propose("g", b"p%d" % i)
        committed_s = trio.current_time()
        for m in cluster.members.values():
            await wait_until(lambda m=m: len(m.applied.data("g")) == count + 1)
            assert m.applied.data("g") == [b"warm-up"] + [b"p%d" % i for i in range(count)]
        caught_up_s = trio.current_time() - committed_s
        return sum(1 for m in sent if m.type is MessageType.APPEND), caught_up_s


async def test_commit_notices_ride_with_the_next_append(autojump_clock: trio.testing.MockClock) -> None:
    held, held_catch_up_s = await _appends_for(20, hold_s=0.02)
    at_once, _ = await _appends_for(20, hold_s=0.0)
    assert at_once >= 4 * 20  # an entry and a commit notice per follower per proposal
    assert held <= 2 * 20 + 4  # the notices rode along (or were replaced), the last ones flushed
    assert held_catch_up_s < 1.0  # the last notice left once its hold time was up
