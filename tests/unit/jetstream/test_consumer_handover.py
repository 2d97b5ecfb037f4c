"""The consumer side of a stream leadership handover (jetstream/cluster.py `hand_over`,
`_become_follower`): acks applied but not yet committed are remembered until a save that
includes them commits, whatever order overlapping saves finish in; a held consumer sends
nothing."""

from __future__ import annotations

import types
from typing import Any

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


class _GoneHost:
    """A Raft host whose group is removed right after the transfer starts (a move completed)."""

    def __init__(self) -> None:
        from raft.config import Role

        self.calls = 0
        self.node_view = types.SimpleNamespace(role=Role.LEADER, lead_transferee=None, _progress={},
                                               membership=types.SimpleNamespace(voters=frozenset({"a", "b"})))

    def node(self, group: str) -> Any:
        from raft.driver import UnknownGroup

        self.calls += 1
        if self.calls > 2:
            raise UnknownGroup(group)
        return self.node_view

    def transfer_leadership(self, group: str, to: str) -> None:
        self.to = to


async def test_a_transfer_whose_group_goes_away_counts_as_done() -> None:
    """Regression: the group was removed while the transfer loop waited (UnknownGroup escaped a
    background task and took a server down in a loaded move test)."""
    from jetstream.cluster import transfer_leadership

    host = _GoneHost()
    assert await transfer_leadership(host, "S-X-1", "a", to="b") is True  # type: ignore[arg-type]
    assert host.to == "b"


async def test_a_waiting_pull_request_gets_a_new_message_at_once(tmp_path: Any, autojump_clock: Any) -> None:
    """Regression: consumers slept until a timer (up to 1 s, or the request's expiry, which
    then answered 408 with nothing) instead of waking on the commit of a new message; a short
    fetch loop could go a whole move test without a message."""
    import trio

    from tests.unit.jetstream.js_harness import running_js

    async with running_js(tmp_path) as h:
        resp = await h.api("STREAM.CREATE.W", {"name": "W", "subjects": ["w"], "storage": "memory"})
        assert "error" not in resp, resp
        cfg = {"durable_name": "c", "ack_policy": "explicit"}
        assert "error" not in await h.api("CONSUMER.CREATE.W.c", {"stream_name": "W", "config": cfg})
        inbox = h.inbox()
        h.publish("$JS.API.CONSUMER.MSG.NEXT.W.c", b'{"batch": 1, "expires": 5000000000}', inbox.subject)
        await trio.sleep(0.3)  # the request waits: the stream is empty
        published = trio.current_time()
        await h.request("w", b"new")
        msg = await inbox.next()
        assert msg.payload == b"new" and msg.status is None
        assert trio.current_time() - published < 0.1
