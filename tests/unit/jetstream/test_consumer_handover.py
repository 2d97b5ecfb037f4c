"""The consumer side of a stream leadership handover (jetstream/cluster.py `hand_over`,
`_become_follower`): acks applied but not yet committed are remembered until a save that
includes them commits, whatever order overlapping saves finish in; a held consumer sends
nothing."""

from __future__ import annotations

import types

from jetstream.consumer_config import ConsumerConfig
from jetstream.delivery import UNSAVED_ACKS_MAX, ConsumerRuntime


def consumer() -> ConsumerRuntime:
    stream = types.SimpleNamespace(name="S", closed=False, consumers={})
    config = ConsumerConfig.from_json({"durable_name": "d", "ack_policy": "explicit"})
    return ConsumerRuntime(stream, "d", config, 0, object(), lambda: 0, lambda c: None, lambda: "x")  # type: ignore[arg-type]


def test_a_committed_save_forgets_only_the_acks_it_included() -> None:
    c = consumer()
    for i in range(3):
        c.record_unsaved_ack(f"$JS.ACK.S.d.1.{i}.{i}.0.0", None, b"+ACK")
    first = c.acks_seen  # a save takes its state here ...
    c.record_unsaved_ack("$JS.ACK.S.d.1.9.9.0.0", "_INBOX.r", b"+ACK")
    second = c.acks_seen  # ... and a later one here
    c.saved_acks_upto(second)  # the later save commits first
    c.saved_acks_upto(first)  # the earlier one must not drop anything newer
    assert not c.unsaved_acks
    c.record_unsaved_ack("$JS.ACK.S.d.1.10.10.0.0", "_INBOX.s", b"+ACK")
    c.saved_acks_upto(second)
    assert [ack for _, ack in c.unsaved_acks] == [("$JS.ACK.S.d.1.10.10.0.0", "_INBOX.s", b"+ACK")]


def test_unsaved_acks_are_bounded() -> None:
    c = consumer()
    for i in range(UNSAVED_ACKS_MAX + 5):
        c.record_unsaved_ack(f"$JS.ACK.S.d.1.{i}.{i}.0.0", None, b"+ACK")
    assert len(c.unsaved_acks) == UNSAVED_ACKS_MAX
    assert c.unsaved_acks[0][0] == 6  # the oldest went first


def test_a_held_consumer_delivers_nothing() -> None:
    c = consumer()
    c.waiting.append(types.SimpleNamespace(batch=1, delivered=0))  # type: ignore[arg-type]
    assert c._can_deliver()
    c.held = True
    assert not c._can_deliver()
