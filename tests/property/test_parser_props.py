"""Properties of the parser: splitting a stream anywhere changes nothing, and arbitrary bytes
only ever produce operations or one final ProtocolError, never an exception."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from natsd import protocol as p

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=6)
subject = st.lists(token, min_size=1, max_size=4).map(".".join)
payload = st.binary(max_size=64)
header_block = st.lists(st.tuples(token, token), max_size=3).map(
    lambda kv: b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in kv) + b"\r\n"
)

client_op = st.one_of(
    st.tuples(subject, st.none() | subject, st.none(), payload),
    st.tuples(subject, st.none() | subject, header_block, payload),
    st.builds(p.Sub, subject, st.none() | token, token),
    st.builds(p.Unsub, token, st.none() | st.integers(0, 10**6)),
    st.just(p.PING),
    st.just(p.PONG),
    st.builds(p.Connect, st.fixed_dictionaries({"verbose": st.booleans(), "name": token})),
)

# identical publishes in a row exercise the run fast path (windows of 16, 64, ... frames)
repeated = st.tuples(client_op, st.sampled_from([1, 1, 2, 3, 15, 16, 17, 81])).map(
    lambda t: [t[0]] * t[1]
)
streams = st.lists(repeated, max_size=12).map(lambda runs: [op for run in runs for op in run])

ALLOWED = (p.Connect, p.Sub, p.Unsub, p.Ping, p.Pong, p.Ok, p.Err, p.Info, p.Msg)


def _feed_in_pieces(parser: p.Parser, data: bytes, cuts: list[int]) -> list:
    ops: list = []
    last = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        ops.extend(parser.feed(data[last:cut]))
        last = cut
    return ops


@settings(max_examples=150, deadline=None)
@given(streams, st.lists(st.integers(0, 10**6), max_size=20))
def test_random_splits_parse_like_unsplit(ops: list, cuts: list[int]) -> None:
    data = b"".join(p.encode(op) for op in ops)
    whole = p.flatten(p.Parser().feed(data))
    pieces = p.flatten(_feed_in_pieces(p.Parser(), data, cuts))
    assert whole == ops
    assert pieces == ops


def _well_formed(ops: list) -> bool:
    for i, op in enumerate(ops):
        if isinstance(op, p.ProtocolError):
            if i != len(ops) - 1:
                return False
        elif type(op) is tuple:
            subj, reply, headers, payloads, tail = op
            ok = isinstance(subj, str) and isinstance(payloads, list) and tail.endswith(b"\r\n")
            if not ok:
                return False
        elif not isinstance(op, ALLOWED):
            return False
    return True


noise = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from([b"PUB ", b"HPUB ", b"SUB ", b"UNSUB ", b"PING", b"CONNECT ", b"MSG ",
                         b" ", b"\t", b"\r\n", b"\n", b"3", b"12", b"-1", b"foo", b"{}", b"\x00"]),
        max_size=30,
    ).map(b"".join),
)


@settings(max_examples=300, deadline=None)
@given(noise, st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_random_bytes_yield_only_ops_or_one_final_error(data: bytes, cuts: list[int],
                                                        server_side: bool) -> None:
    parser = p.Parser(server_side=server_side, max_control_line=64, max_payload=32)
    ops = _feed_in_pieces(parser, data, cuts)
    assert _well_formed(ops)
    if ops and isinstance(ops[-1], p.ProtocolError):
        assert parser.closed and attrs.asdict(ops[-1])["close"]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400), st.integers(0, 400), st.sampled_from([b"\r\r", b"\n\n", b"x\n", b"\r"]))
def test_run_with_a_corrupt_frame_stops_exactly_there(run: int, bad_at: int, junk: bytes) -> None:
    frame = p.encode_pub("a.b", "r", b"0123456789")
    bad_at = bad_at % run
    data = frame * bad_at + frame[:-2] + junk + frame * (run - bad_at)
    ops = p.flatten(p.Parser().feed(data))
    good = [("a.b", "r", None, b"0123456789")] * bad_at
    if junk == b"\r":  # the corrupt frame swallowed one byte of the next: still an error
        assert ops[:bad_at] == good and isinstance(ops[-1], p.ProtocolError)
    else:
        assert ops == good + [p.ProtocolError(p.ERR_UNKNOWN_OP)]
