"""Encoder output: exact wire bytes, and round trips through the parser."""

from __future__ import annotations

import json

import pytest

from natsd import protocol as p

HDR = b"NATS/1.0\r\nA: 1\r\n\r\n"


def test_exact_server_frames() -> None:
    assert p.encode_msg("foo", "1", None, b"abc") == b"MSG foo 1 3\r\nabc\r\n"
    assert p.encode_msg("foo", "1", "r", b"") == b"MSG foo 1 r 0\r\n\r\n"
    assert p.encode_hmsg("foo", "2", None, HDR, b"hi") == b"HMSG foo 2 18 20\r\n" + HDR + b"hi\r\n"
    assert p.encode_err("Stale Connection") == b"-ERR 'Stale Connection'\r\n"
    assert p.PONG_BYTES == b"PONG\r\n" and p.OK_BYTES == b"+OK\r\n"


def test_info_is_one_line_of_json() -> None:
    data = p.encode_info({"server_id": "N1", "headers": True, "version": "2.11.0"})
    assert data.startswith(b"INFO {") and data.endswith(b"\r\n") and data.count(b"\n") == 1
    assert json.loads(data[5:]) == {"server_id": "N1", "headers": True, "version": "2.11.0"}


def test_no_responders_header_block_matches_reference_size() -> None:
    # nats-server answers a request to "bar" with HMSG <reply> <sid> 35 35
    block = p.no_responders_headers("bar")
    assert block == b"NATS/1.0 503\r\nNats-Subject: bar\r\n\r\n"
    assert len(block) == 35


CLIENT_OPS = [
    ("foo", None, None, b"abc"),
    ("foo.bar", "_INBOX.x.1", None, b""),
    ("foo", "r", HDR, b"body"),
    p.Sub("foo.*", None, "1"),
    p.Sub("foo.>", "workers", "22"),
    p.Unsub("1", None),
    p.Unsub("1", 10),
    p.Connect({"verbose": False, "headers": True, "name": "t"}),
    p.PING,
    p.PONG,
]

SERVER_OPS = [
    p.Msg("foo", "1", None, None, b"abc"),
    p.Msg("foo", "1", "reply", None, b"x\r\ny"),
    p.Msg("foo", "7", "reply", HDR, b"x"),
    p.Info({"server_id": "N", "port": 4222}),
    p.Err("Invalid Subject"),
    p.OK,
    p.PING,
    p.PONG,
]


@pytest.mark.parametrize("op", CLIENT_OPS, ids=repr)
def test_client_ops_round_trip(op) -> None:
    assert p.flatten(p.Parser().feed(p.encode(op))) == [op]


@pytest.mark.parametrize("op", SERVER_OPS, ids=repr)
def test_server_ops_round_trip(op) -> None:
    assert p.Parser(server_side=False).feed(p.encode(op)) == [op]


def test_non_ascii_subject_round_trips() -> None:
    op = ("caf\u00e9.\u2603", None, None, b"x")
    assert p.flatten(p.Parser().feed(p.encode(op))) == [op]
