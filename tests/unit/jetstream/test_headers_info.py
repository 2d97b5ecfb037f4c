"""Header block parsing/encoding and the info JSON / RFC3339 formatting."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.errors import ErrCode, api_error
from jetstream.headers import Headers, append_headers, encode_headers, parse_headers
from jetstream.info import (
    ZERO_TIME,
    consumer_info_json,
    parse_rfc3339_ns,
    rfc3339_ns,
    stream_info_json,
    stream_state_json,
)
from jetstream.consumer import ConsumerCounts
from jetstream.store import StoreState


def test_parse_nats_py_header_block() -> None:
    block = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nKV-Operation: DEL\r\nX: 1\r\nX: 2\r\n\r\n"
    h = parse_headers(block)
    assert h.valid and h.status is None
    assert h.get("Nats-Msg-Id") == "abc"
    assert h.get("nats-msg-id") == "abc"  # case-insensitive fallback
    assert h.get_all("X") == ["1", "2"]
    assert "KV-Operation" in h and "Missing" not in h


def test_status_line() -> None:
    h = parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n")
    assert (h.status, h.description) == (404, "No Messages")
    assert parse_headers(b"NATS/1.0 503\r\n\r\n").status == 503


def test_malformed_blocks_do_not_raise() -> None:
    assert parse_headers(b"HTTP/1.1 200\r\n\r\n").valid is False
    h = parse_headers(b"NATS/1.0\r\nno colon here\r\nGood: yes\r\n\r\n")
    assert h.valid is False and h.get("Good") == "yes"
    assert parse_headers(None) == Headers()
    assert parse_headers(b"\xff\xfe").valid is False


def test_encode_and_append() -> None:
    assert encode_headers([]) == b"NATS/1.0\r\n\r\n"
    assert encode_headers([], 404, "No Messages") == b"NATS/1.0 404 No Messages\r\n\r\n"
    block = append_headers(b"NATS/1.0\r\nA: 1\r\n\r\n", [("Nats-Sequence", "5")])
    assert block == b"NATS/1.0\r\nA: 1\r\nNats-Sequence: 5\r\n\r\n"


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC-_0123456789", min_size=1, max_size=10)


@settings(max_examples=50, deadline=None)
@given(items=st.lists(st.tuples(TOKEN, TOKEN), max_size=5))
def test_encode_parse_round_trip(items: list[tuple[str, str]]) -> None:
    assert parse_headers(encode_headers(items)).items == tuple(items)


def test_rfc3339_formatting() -> None:
    assert rfc3339_ns(0) == ZERO_TIME
    assert rfc3339_ns(1_704_067_200_000_000_000) == "2024-01-01T00:00:00Z"
    assert rfc3339_ns(1_704_067_200_123_456_789) == "2024-01-01T00:00:00.123456789Z"
    assert rfc3339_ns(1_704_067_200_500_000_000) == "2024-01-01T00:00:00.5Z"


@settings(max_examples=100, deadline=None)
@given(ts=st.integers(1, 4_000_000_000 * 1_000_000_000))
def test_rfc3339_round_trip(ts: int) -> None:
    assert parse_rfc3339_ns(rfc3339_ns(ts)) == ts


def test_rfc3339_offsets_and_garbage() -> None:
    assert parse_rfc3339_ns("2024-01-01T01:00:00+01:00") == 1_704_067_200_000_000_000
    assert parse_rfc3339_ns("yesterday") is None
    assert parse_rfc3339_ns("2024-13-01T00:00:00Z") is None


def test_stream_state_json_for_empty_and_full_streams() -> None:
    empty = stream_state_json(StoreState(), consumer_count=0)
    assert empty == {"messages": 0, "bytes": 0, "first_seq": 0, "first_ts": ZERO_TIME, "last_seq": 0,
                     "last_ts": ZERO_TIME, "consumer_count": 0}
    state = StoreState(messages=2, bytes=40, first_seq=1, first_ts_ns=10**18, last_seq=3,
                       last_ts_ns=10**18 + 1, num_subjects=2, num_deleted=1)
    out = stream_state_json(state, consumer_count=1, subjects={"a": 1, "b": 1}, deleted=[2])
    assert out["num_subjects"] == 2 and out["num_deleted"] == 1 and out["deleted"] == [2]
    assert out["last_ts"] == "2001-09-09T01:46:40.000000001Z"
    info = stream_info_json({"name": "S"}, 10**18, out, now_ns=10**18)
    assert set(info) >= {"config", "created", "state", "ts"}


def test_consumer_info_has_every_key_clients_need() -> None:
    counts = ConsumerCounts(5, 9, 4, 8, 1, 0, 3)
    info = consumer_info_json("S", "C", 10**18, {"ack_policy": "explicit"}, counts, now_ns=10**18)
    for key in ("stream_name", "name", "created", "config", "delivered", "ack_floor", "num_ack_pending",
                "num_redelivered", "num_waiting", "num_pending"):
        assert key in info
    assert info["delivered"] == {"consumer_seq": 5, "stream_seq": 9}
    assert info["ack_floor"] == {"consumer_seq": 4, "stream_seq": 8}


def test_api_error_json_has_exactly_three_keys() -> None:
    error = api_error(ErrCode.STREAM_WRONG_LAST_SEQUENCE, seq=7)
    assert error.to_json() == {"code": 400, "err_code": 10071, "description": "wrong last sequence: 7"}
