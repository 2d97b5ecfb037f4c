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


# -- one-off control lines (JetStream acks, request inboxes) ----------------------------------

one_off_subject = st.one_of(
    st.tuples(token, token, st.integers(0, 10**12)).map(lambda t: f"$JS.ACK.{t[0]}.{t[1]}.1.{t[2]}"),
    st.tuples(token, st.integers(0, 10**6)).map(lambda t: f"_INBOX.{t[0]}.{t[1]}"),
)
pub_subject = subject | one_off_subject
pub_op = st.tuples(pub_subject, st.none() | pub_subject, st.none(), payload)
# runs of one line (batch path) between single frames (CRLF-split path after two singles)
pub_stream = st.lists(
    st.tuples(pub_op, st.sampled_from([1, 1, 1, 2, 17])).map(lambda t: [t[0]] * t[1]), max_size=40
).map(lambda runs: [op for run in runs for op in run])
# spellings nats-server accepts besides single spaces: the parser's slow path
separators = st.sampled_from([b" ", b"  ", b"\t", b" \t "])


def _expected_tail(reply: str | None, payload_bytes: bytes) -> bytes:
    rep = b" " + reply.encode() if reply is not None else b""
    return rep + b" %d\r\n" % len(payload_bytes)


@settings(max_examples=150, deadline=None)
@given(pub_stream, st.lists(st.integers(0, 10**6), max_size=10))
def test_one_off_lines_parse_like_others_and_stay_out_of_the_caches(
    ops: list, cuts: list[int]
) -> None:
    """Publishes to ack subjects and with inbox replies parse to the same values and MSG tails
    as any other publish, whole or split, and never enter the parser's line caches."""
    data = b"".join(p.encode(op) for op in ops)
    for parser, parsed in ((w := p.Parser(), w.feed(data)),
                           (s := p.Parser(), _feed_in_pieces(s, data, cuts))):
        assert p.flatten(parsed) == ops
        tails = [op[4] for op in parsed for _ in op[3]]
        assert tails == [_expected_tail(op[1], op[3]) for op in ops]
        keys = list(parser._cache) + list(parser._plain)
        assert not [k for k in keys if b"$JS.ACK." in k or b"_INBOX." in k]


@settings(max_examples=150, deadline=None)
@given(pub_op, separators, separators)
def test_pub_tail_is_the_same_for_any_argument_spacing(op: tuple, sep1: bytes, sep2: bytes) -> None:
    subj, reply, _, body = op
    args = [subj.encode()] + ([reply.encode()] if reply is not None else []) + [b"%d" % len(body)]
    line = b"PUB " + sep1.join(args[:-1]) + sep2 + args[-1] + b"\r\n"
    parsed = p.Parser().feed(line + body + b"\r\n")
    assert parsed == [(subj, reply, None, [body], _expected_tail(reply, body))]
    # after two single publishes the parser splits ahead on CRLF (_pub_stretch/_learn_pub)
    lead = b"PUB x.1 1\r\na\r\nPUB x.2 1\r\nb\r\n"
    parsed = p.Parser().feed(lead + line + body + b"\r\n")
    assert parsed[2:] == [(subj, reply, None, [body], _expected_tail(reply, body))]


@settings(max_examples=100, deadline=None)
@given(pub_op, st.integers(1, 3))
def test_one_off_line_over_max_payload_is_refused_after_a_stretch(op: tuple, extra: int) -> None:
    subj, reply, _, _ = op
    parser = p.Parser(max_payload=8)
    big = b"y" * (8 + extra)
    line = p.encode((subj, reply, None, big))
    ops = parser.feed(b"PUB x.1 1\r\na\r\nPUB x.2 1\r\nb\r\n" + line)
    assert len(ops) == 3 and ops[2] == p.ProtocolError(p.ERR_MAX_PAYLOAD, True, None)
