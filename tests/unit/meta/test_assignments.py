"""The meta state machine: commands, codec, snapshots, and agreement between replicas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meta.assignments import (
    CreateStream,
    DeleteStream,
    MetaOk,
    MetaRejected,
    MetaState,
    RegisterServer,
    UpdateStream,
    decode_command,
    encode_command,
)


def cfg(name: str, *subjects: str, **extra: object) -> dict:
    return {"name": name, "subjects": list(subjects), **extra}


def test_create_assigns_a_group_named_by_stream_and_index() -> None:
    s = MetaState()
    assert s.apply(CreateStream("A", cfg("A", "a.>"), ("n1", "n2", "n3"), 7), 4) == MetaOk(created=True)
    sa = s.streams["A"]
    assert sa.group == "S-A-4" and sa.peers == ("n1", "n2", "n3") and sa.created_ns == 7


def test_create_again_same_config_is_ok_different_config_is_rejected() -> None:
    s = MetaState()
    s.apply(CreateStream("A", cfg("A", "a.>"), ("n1",), 1), 1)
    assert s.apply(CreateStream("A", cfg("A", "a.>"), ("n2",), 2), 2) == MetaOk(created=False)
    assert s.streams["A"].peers == ("n1",)
    assert s.apply(CreateStream("A", cfg("A", "b.>"), ("n1",), 3), 3) == MetaRejected("exists")


def test_overlapping_subjects_are_rejected_on_create_and_update() -> None:
    s = MetaState()
    s.apply(CreateStream("A", cfg("A", "orders.*"), ("n1",), 1), 1)
    assert s.apply(CreateStream("B", cfg("B", "orders.new"), ("n1",), 1), 2) == MetaRejected("subject_overlap")
    s.apply(CreateStream("B", cfg("B", "other"), ("n1",), 1), 3)
    assert s.apply(UpdateStream("B", cfg("B", ">")), 4) == MetaRejected("subject_overlap")
    assert s.apply(UpdateStream("A", cfg("A", "orders.>")), 5) == MetaOk()
    assert s.streams["A"].subjects() == ["orders.>"]


def test_delete_then_recreate_gets_a_fresh_group() -> None:
    s = MetaState()
    s.apply(CreateStream("A", cfg("A", "a"), ("n1",), 1), 1)
    assert s.apply(DeleteStream("A"), 2) == MetaOk()
    assert s.apply(DeleteStream("A"), 3) == MetaRejected("not_found")
    assert s.apply(UpdateStream("A", cfg("A", "a")), 4) == MetaRejected("not_found")
    s.apply(CreateStream("A", cfg("A", "a"), ("n1",), 1), 5)
    assert s.streams["A"].group == "S-A-5"


def test_an_index_is_applied_once() -> None:
    s = MetaState()
    s.apply(RegisterServer("n1", "one"), 1)
    with pytest.raises(AssertionError):
        s.apply(RegisterServer("n1", "one"), 1)


def test_register_server_names_and_load() -> None:
    s = MetaState()
    s.apply(RegisterServer("127.0.0.1:1", "one", "c", ("ssd",)), 1)
    s.apply(CreateStream("A", cfg("A", "a"), ("127.0.0.1:1", "x"), 1), 2)
    assert s.server_name("127.0.0.1:1") == "one" and s.server_name("x") == "x"
    assert s.load() == {"127.0.0.1:1": 1, "x": 1}


def test_decode_rejects_garbage() -> None:
    for data in (b"", b"{}", b'{"op":"nope"}', b'{"op":"create"}', b"\xff"):
        with pytest.raises(ValueError):
            decode_command(data)


names = st.sampled_from(["A", "B", "C"])
subjects = st.lists(st.sampled_from(["a", "b", "a.*", "b.>", "c"]), min_size=1, max_size=2, unique=True)
peers = st.lists(st.sampled_from(["n1", "n2", "n3"]), min_size=1, max_size=3, unique=True).map(tuple)
commands = st.one_of(
    st.builds(lambda n, s, p, t: CreateStream(n, cfg(n, *s), p, t), names, subjects, peers, st.integers(0, 10**18)),
    st.builds(lambda n, s: UpdateStream(n, cfg(n, *s)), names, subjects),
    st.builds(DeleteStream, names),
    st.builds(RegisterServer, st.sampled_from(["n1", "n2"]), st.text(max_size=5),
              st.text(max_size=3), st.lists(st.text(max_size=3), max_size=2).map(tuple)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=25), st.integers(0, 25))
def test_replicas_agree_through_the_codec_and_a_snapshot(cmds: list, cut: int) -> None:
    """Two replicas: one applies everything; the other applies a prefix, is snapshotted and
    restored, then applies the rest from decoded bytes. Same content hash, same results."""
    a, b = MetaState(), MetaState()
    results_a, results_b = [], []
    for i, cmd in enumerate(cmds, start=1):
        results_a.append(a.apply(cmd, i))
        if i == cut:
            b = MetaState.restore(b.snapshot())
        results_b.append(b.apply(decode_command(encode_command(cmd)), i))
    assert results_a == results_b
    assert a.digest() == b.digest()
    assert MetaState.restore(a.snapshot()).digest() == a.digest()
    for sa in a.streams.values():  # no two streams ever share a subject space
        assert not a.overlaps(sa.name, sa.subjects())
