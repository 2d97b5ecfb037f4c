"""Round trips of the transport codec over every Message shape, frame splitting fed whole and
byte by byte, and malformed input that must raise CodecError and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft.transport.codec import (
    Batch,
    CodecError,
    FrameBuffer,
    Hello,
    decode_frame,
    decode_message,
    encode_batch,
    encode_hello,
    encode_message,
)
from raft.types import Entry, EntryKind, Membership, Message, MessageType, Snapshot, SnapshotMeta

names = st.text(min_size=0, max_size=8)
ints = st.one_of(st.integers(0, 300), st.integers(-(2**70), 2**70))
names_set = st.frozensets(names, max_size=3)
entries = st.builds(Entry, ints, ints, st.sampled_from(EntryKind), st.binary(max_size=40))
snapshots = st.builds(
    Snapshot,
    st.builds(SnapshotMeta, ints, ints, st.builds(Membership, names_set, names_set, names_set)),
    st.binary(max_size=40),
)


def messages(src: st.SearchStrategy[str] = names, dst: st.SearchStrategy[str] = names):
    return st.builds(
        Message,
        type=st.sampled_from(MessageType),
        group=names,
        src=src,
        dst=dst,
        term=ints,
        log_term=ints,
        index=ints,
        entries=st.lists(entries, max_size=4).map(tuple),
        commit=ints,
        reject=st.booleans(),
        reject_hint=ints,
        snapshot=st.none() | snapshots,
        chunk_offset=ints,
        chunk_last=st.booleans(),
        chunk_checksum=ints,
        context=st.binary(max_size=10),
    )


@settings(max_examples=150, deadline=None)
@given(messages())
def test_message_round_trips(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(st.just("n1"), st.just("n2")), max_size=6), st.integers(1, 7))
def test_batch_frames_round_trip_split_anywhere(msgs: list[Message], step: int) -> None:
    wire = encode_hello(Hello("n1")) + encode_batch("n1", "n2", msgs)
    buf = FrameBuffer()
    frames = []
    for i in range(0, len(wire), step):
        buf.feed(wire[i : i + step])
        frames.extend(decode_frame(f) for f in buf.frames())
    assert frames == [Hello("n1"), Batch("n1", "n2", tuple(msgs))]
    assert buf.buffered_bytes == 0


def test_coalesced_heartbeats_are_small() -> None:
    beats = [
        Message(MessageType.HEARTBEAT, f"S-{i:04d}", "n1", "n2", term=3, commit=1000 + i)
        for i in range(1000)
    ]
    frame = encode_batch("n1", "n2", beats)
    assert len(frame) < 1000 * 14  # name (7 bytes) + ~6 bytes of fields each
    assert decode_frame(frame[4:]) == Batch("n1", "n2", tuple(beats))


def test_batch_rejects_foreign_messages() -> None:
    msg = Message(MessageType.VOTE, "g", "n3", "n2", term=1)
    with pytest.raises(ValueError):
        encode_batch("n1", "n2", [msg])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_raises_codec_error_only(data: bytes) -> None:
    try:
        decode_frame(data)
    except CodecError:
        pass


@settings(max_examples=100, deadline=None)
@given(messages(st.just("a"), st.just("b")), st.data())
def test_truncated_frames_raise_codec_error(msg: Message, data: st.DataObject) -> None:
    payload = encode_batch("a", "b", [msg])[4:]
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(CodecError):
        decode_frame(payload[:cut])


def test_oversized_frame_length_is_rejected() -> None:
    buf = FrameBuffer(frame_bytes_max=1024)
    buf.feed((5000).to_bytes(4, "big") + b"x")
    with pytest.raises(CodecError, match="bad frame length"):
        list(buf.frames())
