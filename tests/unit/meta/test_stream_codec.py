"""The stream-group entry codec (jetstream/cluster_codec.py): exact round trips, bad bytes refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.cluster_codec import (
    CodecError,
    DeleteConsumer,
    SaveConsumer,
    decode_batch,
    encode_batch,
    entry_of,
    sub_index,
)
from jetstream.config import StreamConfig
from jetstream.stream import DeleteMsg, Expire, Publish, PurgeCmd, RemoveAcked, UpdateConfig

opt_bytes = st.none() | st.binary(max_size=40)
opt_text = st.none() | st.text(max_size=10)
publishes = st.builds(Publish, st.text(min_size=1, max_size=20), st.binary(max_size=100),
                      st.integers(-(2**63), 2**63 - 1), opt_bytes, opt_text, opt_text)
others = st.one_of(
    st.builds(PurgeCmd, opt_text, st.none() | st.integers(0, 10**9), st.none() | st.integers(0, 10**9)),
    st.builds(DeleteMsg, st.integers(1, 10**9), st.booleans()),
    st.builds(Expire, st.integers(0, 2**62)),
    st.builds(RemoveAcked, st.lists(st.integers(1, 10**6), max_size=5).map(tuple)),
    st.builds(SaveConsumer, st.text(min_size=1, max_size=8), st.binary(max_size=60)),
    st.builds(DeleteConsumer, st.text(min_size=1, max_size=8)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(publishes | others, min_size=1, max_size=20))
def test_round_trip(cmds: list) -> None:
    assert decode_batch(encode_batch(cmds)) == cmds


def test_update_config_round_trips() -> None:
    config = StreamConfig.from_json({"name": "S", "subjects": ["a.>"], "max_msgs": 10, "num_replicas": 3})
    (back,) = decode_batch(encode_batch([UpdateConfig(config)]))
    assert back.config.to_json() == config.to_json()


@settings(max_examples=200, deadline=None)
@given(st.lists(publishes, min_size=1, max_size=5), st.data())
def test_truncated_or_extended_bytes_are_refused(cmds: list, data: st.DataObject) -> None:
    raw = encode_batch(cmds)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CodecError):
        decode_batch(raw[:cut])
    with pytest.raises(CodecError):
        decode_batch(raw + b"\x00")


def test_sub_index_orders_commands_within_and_across_entries() -> None:
    assert sub_index(5, 0) < sub_index(5, 1) < sub_index(6, 0)
    assert entry_of(sub_index(5, 1000)) == 5
