"""Parser cases, each fed whole, one byte at a time, and followed by trailing data.

Expected results follow nats-server 2.15 (checked with raw sockets against the reference
binary): exact -ERR texts, silent close (message None) on malformed arguments.
"""

from __future__ import annotations

import pytest

from natsd import protocol as p
from natsd.protocol import (
    ERR_MAX_CONTROL_LINE,
    ERR_MAX_PAYLOAD,
    ERR_UNKNOWN_OP,
    PING,
    PONG,
    Connect,
    Parser,
    ProtocolError,
    Sub,
    Unsub,
    flatten,
)

HDR = b"NATS/1.0\r\n\r\n"

SERVER_CASES: list[tuple[str, bytes, list]] = [
    ("ping", b"PING\r\n", [PING]),
    ("ping_lower", b"ping\r\n", [PING]),
    ("ping_bare_lf", b"PING\n", [PING]),
    ("ping_trailing_junk", b"PINGX foo\r\n", [PING]),
    ("pong", b"PONG\r\n", [PONG]),
    ("pub", b"PUB foo 3\r\nabc\r\n", [("foo", None, None, b"abc")]),
    ("pub_reply_tabs", b"pub foo  bar\t\t3\r\nabc\r\n", [("foo", "bar", None, b"abc")]),
    ("pub_trailing_space", b"PUB foo 1 \r\na\r\n", [("foo", None, None, b"a")]),
    ("pub_empty", b"PUB foo 0\r\n\r\n", [("foo", None, None, b"")]),
    ("pub_crlf_in_payload", b"PUB foo 4\r\na\r\nb\r\n", [("foo", None, None, b"a\r\nb")]),
    (
        "pub_run",
        b"PUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB bar 1\r\nc\r\n",
        [("foo", None, None, b"a"), ("foo", None, None, b"b"), ("bar", None, None, b"c")],
    ),
    ("hpub", b"HPUB foo 12 14\r\n" + HDR + b"hi\r\n", [("foo", None, HDR, b"hi")]),
    ("hpub_reply", b"HPUB foo r 12 12\r\n" + HDR + b"\r\n", [("foo", "r", HDR, b"")]),
    ("sub", b"SUB foo 1\r\n", [Sub("foo", None, "1")]),
    ("sub_queue", b"SUB foo q 1\r\n", [Sub("foo", "q", "1")]),
    ("sub_empty_queue", b"SUB foo  1\r\n", [Sub("foo", None, "1")]),
    ("unsub", b"UNSUB 1\r\n", [Unsub("1", None)]),
    ("unsub_trailing_space", b"UNSUB 1 \r\n", [Unsub("1", None)]),
    ("unsub_max", b"UNSUB 1 5\r\n", [Unsub("1", 5)]),
    ("connect", b'CONNECT {"verbose":false}\r\n', [Connect({"verbose": False})]),
    ("info_from_client_ignored", b"INFO {}\r\n", []),
    ("ok_from_client_ignored", b"+OK\r\n", []),
    ("payload_too_long", b"PUB foo 3\r\nabcd\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("payload_bare_lf", b"PUB foo 1\r\na\nPING\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("unknown_op", b"FOO bar\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("unknown_op_no_newline", b"aaaa", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("op_prefix_then_cr", b"PU\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("pub_without_args", b"PUB\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("unsub_without_args", b"UNSUB\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("msg_from_client", b"MSG foo 1 1\r\na\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    ("max_payload", b"PUB foo 99999999\r\n", [ProtocolError(ERR_MAX_PAYLOAD)]),
    ("hpub_max_total", b"HPUB foo 12 1048600\r\n", [ProtocolError(ERR_MAX_PAYLOAD)]),
    ("hpub_header_bigger_than_total", b"HPUB foo 12 10\r\n", [ProtocolError(None)]),
    ("pub_missing_size", b"PUB foo\r\n", [ProtocolError(None)]),
    ("pub_negative_size", b"PUB foo -1\r\n", [ProtocolError(None)]),
    ("pub_plus_size", b"PUB foo +1\r\n", [ProtocolError(None)]),
    ("pub_too_many_args", b"PUB a b c 1\r\n", [ProtocolError(None)]),
    ("sub_missing_sid", b"SUB foo\r\n", [ProtocolError(None)]),
    ("unsub_too_many_args", b"UNSUB 1 2 3\r\n", [ProtocolError(None)]),
    ("unsub_bad_max_ignored", b"UNSUB 1 x\r\n", [Unsub("1", None)]),
    ("unsub_negative_max_ignored", b"UNSUB 1 -1\r\n", [Unsub("1", None)]),
    ("unsub_huge_max_ignored", b"UNSUB 1 99999999999\r\n", [Unsub("1", None)]),
    ("pub_size_ten_digits", b"PUB a 1234567890\r\n", [ProtocolError(None)]),
    ("pub_size_nine_digits_too_big", b"PUB a 999999999\r\n", [ProtocolError(ERR_MAX_PAYLOAD)]),
    ("connect_without_separator", b"CONNECTX {}\r\n", [ProtocolError(None)]),
    ("connect_without_json", b"CONNECT\r\n", [ProtocolError(None)]),
    ("connect_glued_json", b'CONNECT{"echo":false}\r\n', [Connect({"echo": False})]),
    ("connect_wrong_field_type", b'CONNECT {"verbose":"yes"}\r\n', [ProtocolError(None)]),
    ("connect_null_field_ok", b'CONNECT {"verbose":null,"protocol":1}\r\n', [Connect({"verbose": None, "protocol": 1})]),
    ("info_glued_garbage", b"INFOx\r\n", [ProtocolError(None)]),
    ("hpub_zero_header_bytes_is_plain", b"HPUB h 0 2\r\nhi\r\n", [("h", None, None, b"hi")]),
    ("connect_bad_json", b"CONNECT {bad\r\n", [ProtocolError(None)]),
    ("connect_not_object", b"CONNECT []\r\n", [ProtocolError(None)]),
    ("err_from_client", b"-ERR 'x'\r\n", [ProtocolError(None)]),
    (
        "control_line_too_long",
        b"PUB " + b"a" * 5000 + b" 3\r\nabc\r\n",
        [ProtocolError(ERR_MAX_CONTROL_LINE)],
    ),
    ("control_line_too_long_no_newline", b"PUB " + b"a" * 5000, [ProtocolError(ERR_MAX_CONTROL_LINE)]),
    ("garbage_long_line", b"a" * 5000 + b"\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
    (
        "ops_after_error_ignored",
        b"PING\r\nFOO\r\nPING\r\n",
        [PING, ProtocolError(ERR_UNKNOWN_OP)],
    ),
]

CLIENT_CASES: list[tuple[str, bytes, list]] = [
    ("msg", b"MSG foo 1 3\r\nabc\r\n", [p.Msg("foo", "1", None, None, b"abc")]),
    ("msg_reply", b"MSG foo 1 r 0\r\n\r\n", [p.Msg("foo", "1", "r", None, b"")]),
    ("hmsg", b"HMSG foo 9 12 14\r\n" + HDR + b"hi\r\n", [p.Msg("foo", "9", None, HDR, b"hi")]),
    ("info", b'INFO {"port":1} \r\n', [p.Info({"port": 1})]),
    ("ok", b"+OK\r\n", [p.OK]),
    ("err", b"-ERR 'Stale Connection'\r\n", [p.Err("Stale Connection")]),
    ("ping_pong", b"PING\r\nPONG\r\n", [PING, PONG]),
    ("pub_from_server", b"PUB foo 1\r\na\r\n", [ProtocolError(ERR_UNKNOWN_OP)]),
]


def feed_whole(parser: Parser, data: bytes) -> list:
    return flatten(parser.feed(data))


def feed_bytewise(parser: Parser, data: bytes) -> list:
    ops: list = []
    for i in range(len(data)):
        ops.extend(parser.feed(data[i : i + 1]))
    return flatten(ops)


def _closes(expected: list) -> bool:
    return bool(expected) and isinstance(expected[-1], ProtocolError)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("name", "data", "expected"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_server_side_cases(feed, name: str, data: bytes, expected: list) -> None:
    assert feed(Parser(), data) == expected


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("name", "data", "expected"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client_side_cases(feed, name: str, data: bytes, expected: list) -> None:
    assert feed(Parser(server_side=False), data) == expected


COMPLETE_CASES = [c for c in SERVER_CASES if c[1].endswith(b"\n")]  # last frame complete


@pytest.mark.parametrize(("name", "data", "expected"), COMPLETE_CASES, ids=[c[0] for c in COMPLETE_CASES])
def test_trailing_data_is_parsed_unless_closed(name: str, data: bytes, expected: list) -> None:
    got = feed_whole(Parser(), data + b"PING\r\n")
    assert got == (expected if _closes(expected) else expected + [PING])


def test_closed_parser_returns_nothing_more() -> None:
    parser = Parser()
    assert parser.feed(b"FOO\r\n") == [ProtocolError(ERR_UNKNOWN_OP)]
    assert parser.closed
    assert parser.feed(b"PING\r\n") == []


def test_run_of_identical_frames_is_one_op_with_tail() -> None:
    ops = Parser().feed(b"PUB foo r 2\r\nab\r\n" * 3 + b"PUB foo 1\r\nc\r\n")
    assert ops == [
        ("foo", "r", None, [b"ab", b"ab", b"ab"], b" r 2\r\n"),
        ("foo", None, None, [b"c"], b" 1\r\n"),
    ]


def test_hpub_tail_carries_both_sizes() -> None:
    ops = Parser().feed(b"HPUB foo r 12 14\r\n" + HDR + b"hi\r\n")
    assert ops == [("foo", "r", HDR, [b"hi"], b" r 12 14\r\n")]


def test_limits_are_configurable() -> None:
    parser = Parser(max_payload=2, max_control_line=16)
    assert parser.feed(b"PUB foo 3\r\n") == [ProtocolError(ERR_MAX_PAYLOAD)]
    parser = Parser(max_payload=2, max_control_line=16)
    assert parser.feed(b"PUB foooooooooooooooooo 1\r\n") == [ProtocolError(ERR_MAX_CONTROL_LINE)]


def test_large_payload_split_across_many_feeds() -> None:
    parser = Parser()
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = b"PUB big %d\r\n" % len(payload) + payload + b"\r\n"
    ops: list = []
    for i in range(0, len(data), 65536):
        ops.extend(parser.feed(data[i : i + 65536]))
    assert flatten(ops) == [("big", None, None, payload)]


def test_line_cache_is_bounded() -> None:
    parser = Parser()
    for i in range(3 * p._LINE_CACHE_MAX):
        assert flatten(parser.feed(b"PUB s r%d 0\r\n\r\n" % i)) == [("s", f"r{i}", None, b"")]
    assert len(parser._cache) <= p._LINE_CACHE_MAX


def test_payload_run_is_a_lazy_sequence_and_fans_out() -> None:
    frames = b"".join(b"PUB s 2\r\n%02d\r\n" % i for i in range(3))  # differing payloads
    (op,) = Parser().feed(b"PUB s 2\r\nab\r\n" * 3)
    run = op[3]
    assert isinstance(run, p.PayloadRun) and len(run) == 3
    assert run[0] == b"ab" and run[-1] == b"ab" and run[1:] == [b"ab", b"ab"]
    assert run == [b"ab"] * 3 and list(run) == [b"ab"] * 3
    with pytest.raises(IndexError):
        run[3]
    assert run.fanout(b"MSG s 9 2\r\n") == b"MSG s 9 2\r\nab\r\n" * 3
    ops = Parser().feed(frames)
    assert flatten(ops) == [("s", None, None, b"%02d" % i) for i in range(3)]
    assert ops[0][3].fanout(b"M ") == b"M 00\r\nM 01\r\nM 02\r\n"


def test_interleaved_subjects_with_awkward_frames_parse_the_same_however_split() -> None:
    """Publishes to varying subjects take the CRLF-split path; a payload holding CRLF, a bare LF
    line ending, a PING and a new subject in the middle must hand back to the general loop."""
    frames = [p.encode_pub(f"s.{i % 3}", None, b"%04d" % i) for i in range(40)]
    frames[17] = p.encode_pub("s.1", None, b"a\r\nb")  # payload containing CRLF, size 4
    frames[23] = b"PUB s.2 4\n0023\r\n"  # bare LF after the control line
    frames[29] = b"PING\r\n"
    frames[33] = p.encode_pub("new.subject", "r", b"0033")
    frames += [p.encode_pub("s.0", None, b"9999")] * 5  # ends in a run
    data = b"".join(frames)
    expected = flatten(Parser().feed(data))
    assert len(expected) == 45 and expected[29] == PING
    assert expected[17] == ("s.1", None, None, b"a\r\nb") and expected[23] == ("s.2", None, None, b"0023")
    assert expected[33] == ("new.subject", "r", None, b"0033")
    assert [e[3] for i, e in enumerate(expected[:40]) if i not in (17, 23, 29, 33)] == [
        b"%04d" % i for i in range(40) if i not in (17, 23, 29, 33)
    ]
    for cut in range(0, len(data), 7):
        parser = Parser()
        assert flatten(parser.feed(data[:cut]) + parser.feed(data[cut:])) == expected


def test_unique_reply_publishes_then_known_lines_parse_the_same_however_split() -> None:
    """JetStream publishers: a new reply subject per PUB (every line unknown, so the CRLF-split
    path backs off), then plain publishes to known subjects (it must take over again)."""
    frames = [p.encode_pub("js.in", f"_INBOX.x.{i}", b"%04d" % i) for i in range(150)]
    frames += [p.encode_pub(f"s.{i % 2}", None, b"%04d" % i) for i in range(150)]
    frames.insert(75, b"PUB js.in  _INBOX.y\t4\r\nyyyy\r\n")  # odd separators still split
    data = b"".join(frames)
    expected = flatten(Parser().feed(data))
    assert expected[:75] == [("js.in", f"_INBOX.x.{i}", None, b"%04d" % i) for i in range(75)]
    assert expected[75] == ("js.in", "_INBOX.y", None, b"yyyy")
    assert [e[3] for e in expected[151:]] == [b"%04d" % i for i in range(150)]
    assert len(expected) == 301
    for cut in range(0, len(data), 97):
        parser = Parser()
        assert flatten(parser.feed(data[:cut]) + parser.feed(data[cut:])) == expected


@pytest.mark.parametrize("bad, error", [
    (b"PUB js.in _INBOX.z 9999\r\n", ProtocolError(ERR_MAX_PAYLOAD)),
    (b"PUB js.in _INBOX.z 1 2\r\nx\r\n", ProtocolError(None)),
    (b"PUB js.in _INBOX.z 4\r\nzzzzz\r\n", ProtocolError(ERR_UNKNOWN_OP)),
])
def test_bad_frame_among_unique_reply_publishes_is_the_same_error(bad: bytes, error: ProtocolError) -> None:
    """A new PUB line met on the CRLF-split path is parsed there; a bad one is left to the
    general loop, so the error and everything before it are as without that path."""
    good = [p.encode_pub("js.in", f"_INBOX.x.{i}", b"%04d" % i) for i in range(40)]
    data = b"".join(good) + bad + b"".join(good[:3])
    whole = Parser(max_payload=1024).feed(data)
    assert flatten(whole[:-1]) == [("js.in", f"_INBOX.x.{i}", None, b"%04d" % i) for i in range(40)]
    assert whole[-1] == error
    for cut in range(0, len(data), 53):
        parser = Parser(max_payload=1024)
        assert flatten(parser.feed(data[:cut]) + parser.feed(data[cut:])) == flatten(whole)


def test_interleaved_subjects_bad_terminator_is_an_error() -> None:
    data = b"".join(p.encode_pub(f"s.{i % 2}", None, b"xy") for i in range(6))
    data += b"PUB s.0 2\r\nxyz\r\n"
    ops = flatten(Parser().feed(data))
    assert len(ops) == 7 and ops[-1] == ProtocolError(ERR_UNKNOWN_OP)


@pytest.mark.parametrize(("line_len", "ok"), [(250, True), (260, True), (261, False), (2000, False)])
def test_max_control_line_counts_the_arguments_like_nats_server(line_len: int, ok: bool) -> None:
    line = b"SUB " + b"a" * (line_len - 6) + b" 1\r\n"  # the arguments are line_len - 4 bytes
    for feed in (feed_whole, feed_bytewise):
        ops = feed(Parser(max_control_line=256), line)
        assert ops == ([Sub("a" * (line_len - 6), None, "1")] if ok else [ProtocolError(ERR_MAX_CONTROL_LINE)])
