"""Durable consumer assignments in the meta state: create/update/delete, a stream's deletion
drops them, the codec and the snapshot carry them, replicas agree by digest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meta.assignments import (
    AssignConsumer,
    CreateStream,
    DeleteStream,
    MetaOk,
    MetaRejected,
    MetaState,
    UnassignConsumer,
    decode_command,
    encode_command,
)
from meta.consumers import decode_request, encode_request

CFG = {"durable_name": "D", "ack_policy": "explicit"}


def state_with_stream(name: str = "S") -> MetaState:
    state = MetaState()
    state.apply(CreateStream(name, {"name": name, "subjects": [name.lower()]}, ("a",), 1), 1)
    return state


def test_assign_update_unassign() -> None:
    state = state_with_stream()
    assert state.apply(AssignConsumer("S", "D", CFG, 100), 2) == MetaOk(created=True)
    assert state.consumers_of("S")["D"].config == CFG
    changed = dict(CFG, description="x")
    assert state.apply(AssignConsumer("S", "D", changed, 999), 3) == MetaOk(created=False)
    ca = state.consumers_of("S")["D"]
    assert ca.config == changed and ca.created_ns == 100  # an update keeps the creation time
    assert state.apply(UnassignConsumer("S", "D"), 4) == MetaOk()
    assert state.consumers_of("S") == {} and state.consumers == {}
    assert state.apply(UnassignConsumer("S", "D"), 5) == MetaRejected("not_found")


def test_unknown_stream_is_rejected_and_delete_stream_drops_its_consumers() -> None:
    state = state_with_stream()
    assert state.apply(AssignConsumer("NOPE", "D", CFG, 1), 2) == MetaRejected("not_found")
    state.apply(AssignConsumer("S", "D", CFG, 1), 3)
    state.apply(AssignConsumer("S", "E", CFG, 1), 4)
    state.apply(DeleteStream("S"), 5)
    assert state.consumers_of("S") == {}
    state.apply(CreateStream("S", {"name": "S", "subjects": ["s"]}, ("a",), 6), 6)
    assert state.consumers_of("S") == {}  # a stream created again starts with no consumers


def test_codec_round_trip_and_bad_input() -> None:
    for cmd in (AssignConsumer("S", "D", CFG, 7), UnassignConsumer("S", "D")):
        assert decode_command(encode_command(cmd)) == cmd
        assert decode_request(encode_request(cmd)) == cmd
    assert decode_command(encode_command(AssignConsumer("S", "D", CFG, 7))).config == CFG
    for bad in (b'{"op":"consumer","stream":"S"}', b'{"op":"consumer","stream":"S","name":"D","config":[],"created_ns":1}'):
        try:
            decode_command(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
    assert decode_request(b"nope") is None and decode_request(b'{"op":"x"}') is None


def test_snapshot_carries_consumers_and_is_unchanged_without_them() -> None:
    state = state_with_stream()
    without = state.snapshot()
    assert b"consumers" not in without  # snapshots of states without consumers read as before
    state.apply(AssignConsumer("S", "D", CFG, 5), 2)
    restored = MetaState.restore(state.snapshot())
    assert restored.consumers_of("S")["D"].config == CFG and restored.consumers_of("S")["D"].created_ns == 5
    assert restored.digest() == state.digest()


ops = st.lists(st.tuples(st.sampled_from(["create", "delete", "assign", "unassign"]),
                         st.sampled_from(["S", "T"]), st.sampled_from(["C1", "C2"]), st.integers(0, 3)),
               max_size=30)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_replicas_agree_and_consumers_only_of_existing_streams(seq: list) -> None:
    a, b = MetaState(), MetaState()
    for i, (op, stream, name, n) in enumerate(seq, start=1):
        if op == "create":
            cmd = CreateStream(stream, {"name": stream, "subjects": [stream.lower()]}, ("a",), i)
        elif op == "delete":
            cmd = DeleteStream(stream)
        elif op == "assign":
            cmd = AssignConsumer(stream, name, {"durable_name": name, "n": n}, i)
        else:
            cmd = UnassignConsumer(stream, name)
        data = encode_command(cmd)
        a.apply(decode_command(data), i)
        b.apply(decode_command(data), i)
        assert set(a.consumers) <= set(a.streams)
        assert all(mine for mine in a.consumers.values())
    assert a.digest() == b.digest() == MetaState.restore(a.snapshot()).digest()
