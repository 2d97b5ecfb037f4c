"""SimNet: seeded delay/reorder/drop/duplicate, partitions, one-way blocks, pause/resume."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raft.testing.simnet import SimNet
from raft.types import Message, MessageType


def msg(src: str, dst: str, n: int = 0) -> Message:
    return Message(MessageType.APPEND, "g", src, dst, term=1, index=n)


def drain(net: SimNet, start: int, ticks: int) -> list[tuple[int, Message]]:
    out = []
    for now in range(start, start + ticks):
        out.extend((now, m) for m in net.due(now))
    return out


def test_delivers_within_delay_window() -> None:
    net = SimNet(random.Random(1), delay_ticks=(2, 4))
    for n in range(50):
        net.send(msg("a", "b", n), now=10)
    got = drain(net, 0, 20)
    assert sorted(m.index for _, m in got) == list(range(50))
    assert {t for t, _ in got} <= {12, 13, 14}
    assert net.in_flight() == 0


def test_reorders_within_window_and_same_seed_same_order() -> None:
    def order(seed: int) -> list[int]:
        net = SimNet(random.Random(seed), delay_ticks=(1, 3))
        for n in range(30):
            net.send(msg("a", "b", n), now=0)
        return [m.index for _, m in drain(net, 0, 5)]

    assert order(7) == order(7)
    assert order(7) != list(range(30))  # reordered
    assert order(7) != order(8)


def test_drop_and_duplicate_rates() -> None:
    net = SimNet(random.Random(3), drop_rate=0.5, duplicate_rate=0.0)
    for n in range(1000):
        net.send(msg("a", "b", n), now=0)
    got = len(drain(net, 0, 5))
    assert 400 < got < 600
    assert net.stats.dropped == 1000 - got

    net = SimNet(random.Random(3), duplicate_rate=1.0)
    net.send(msg("a", "b"), now=0)
    assert len(drain(net, 0, 5)) == 2


def test_partition_cuts_both_ways_and_in_flight() -> None:
    net = SimNet(random.Random(0), delay_ticks=(1, 1))
    net.send(msg("a", "c"), now=0)  # in flight when the partition starts
    net.partition([{"a", "b"}, {"c"}])
    net.send(msg("a", "b"), now=0)
    net.send(msg("c", "a"), now=0)
    net.send(msg("x", "a"), now=0)  # x is in no group: reaches nobody
    got = [(m.src, m.dst) for _, m in drain(net, 0, 3)]
    assert got == [("a", "b")]
    net.heal()
    net.send(msg("c", "a"), now=3)
    assert [(m.src, m.dst) for _, m in drain(net, 3, 3)] == [("c", "a")]


def test_block_is_asymmetric() -> None:
    net = SimNet(random.Random(0), delay_ticks=(1, 1))
    net.block("a", "b")
    net.send(msg("a", "b"), now=0)
    net.send(msg("b", "a"), now=0)
    assert [(m.src, m.dst) for _, m in drain(net, 0, 3)] == [("b", "a")]


def test_pause_holds_incoming_and_drops_outgoing_until_resume() -> None:
    net = SimNet(random.Random(0), delay_ticks=(1, 1))
    net.pause("b")
    net.send(msg("a", "b", 1), now=0)
    net.send(msg("b", "a", 2), now=0)  # a paused node sends nothing
    assert drain(net, 0, 5) == []
    assert net.in_flight() == 1
    net.resume("b")
    assert [m.index for m in net.due(5)] == [1]
    assert net.in_flight() == 0


def test_held_queue_is_bounded() -> None:
    net = SimNet(random.Random(0), delay_ticks=(0, 0), held_max=3)
    net.pause("b")
    for n in range(5):
        net.send(msg("a", "b", n), now=0)
    assert net.due(0) == []
    net.resume("b")
    assert len(net.due(1)) == 3
    assert net.stats.dropped == 2


def test_drop_to_forgets_traffic_for_a_dead_node() -> None:
    net = SimNet(random.Random(0), delay_ticks=(2, 2))
    net.send(msg("a", "b"), now=0)
    net.send(msg("a", "c"), now=0)
    assert net.drop_to("b") == 1
    assert [m.dst for m in net.due(2)] == ["c"]


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    lo=st.integers(0, 3),
    span=st.integers(0, 3),
    n=st.integers(0, 40),
)
def test_without_faults_every_message_arrives_exactly_once(seed: int, lo: int, span: int, n: int) -> None:
    net = SimNet(random.Random(seed), delay_ticks=(lo, lo + span))
    for i in range(n):
        net.send(msg("a", "b", i), now=i % 4)
    got = sorted(m.index for _, m in drain(net, 0, 20))
    assert got == list(range(n))
