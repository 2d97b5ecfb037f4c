"""The raw JetStream load generator's protocol side: the incremental reply parser (any split of a
stream of frames gives the same frames), PubAck / status / ack-subject readers, frame building,
and the CPU meter's arithmetic."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.benchlib.jsload import CpuMeter, parse_url, percentile, process_cpu_s
from cli.benchlib.jsproto import (
    ProtocolError,
    ReplyParser,
    ack_stream_seq,
    pub_frames,
    puback_outcome,
    status_code,
)

tokens = st.text(alphabet="abcXYZ019_$.-", min_size=1, max_size=12).map(str.encode)
payloads = st.binary(max_size=60) | st.sampled_from([b"MSG a 1 3\r\n", b"\r\n\r\n", b"HMSG ", b"PING\r\n"])


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, tuple]:
    """One server frame as bytes, and the tuple the parser must return for it."""
    kind = draw(st.sampled_from(["MSG", "HMSG", "PING", "PONG", "OK", "ERR"]))
    if kind in ("MSG", "HMSG"):
        subject, sid, body = draw(tokens), draw(st.integers(1, 999)), draw(payloads)
        reply = draw(st.none() | tokens)
        sid_b = str(sid).encode()
        mid = b" " + reply if reply is not None else b""
        if kind == "MSG":
            wire = b"MSG %s %s%s %d\r\n%s\r\n" % (subject, sid_b, mid, len(body), body)
            return wire, ("MSG", subject, sid_b, reply, b"", body)
        header = b"NATS/1.0" + draw(st.sampled_from([b"", b" 408 Request Timeout", b" 503"])) + b"\r\nK: v\r\n\r\n"
        wire = b"HMSG %s %s%s %d %d\r\n%s%s\r\n" % (subject, sid_b, mid, len(header), len(header) + len(body),
                                                   header, body)
        return wire, ("HMSG", subject, sid_b, reply, header, body)
    if kind == "ERR":
        return b"-ERR 'Slow Consumer'\r\n", ("ERR", b"", b"", None, b"", b"'Slow Consumer'")
    wire = {"PING": b"PING\r\n", "PONG": b"PONG\r\n", "OK": b"+OK\r\n"}[kind]
    return wire, (kind, b"", b"", None, b"", b"")


@settings(max_examples=300, deadline=None)
@given(stream=st.lists(frames(), max_size=25), cuts=st.lists(st.integers(0, 3000), max_size=20))
def test_any_split_of_a_frame_stream_yields_the_same_frames(stream: list[tuple[bytes, tuple]],
                                                             cuts: list[int]) -> None:
    wire = b"".join(w for w, _ in stream)
    parser = ReplyParser()
    got: list[tuple] = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(wire)) + [len(wire)]:
        got += parser.feed(wire[last:cut])
        last = cut
    assert got == [expected for _, expected in stream]
    assert parser.pending_bytes == 0


def test_info_frame_carries_its_json() -> None:
    assert ReplyParser().feed(b'INFO {"a":1}\r\n') == [("INFO", b"", b"", None, b"", b'{"a":1}')]


@pytest.mark.parametrize("wire", [
    b"MSG a 1 x\r\n",               # size not a number
    b"MSG a 1 2\r\nabc\r\n",        # payload longer than announced
    b"HMSG a 1 9 3\r\nabc\r\n",     # header longer than the message
    b"MSG a\r\n",                   # too few fields
    b"BOGUS\r\n",
])
def test_malformed_frames_are_rejected(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(wire)


def test_unterminated_control_line_is_bounded() -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"MSG " + b"a" * 5000)


def test_puback_outcomes() -> None:
    assert puback_outcome(b"", b'{"stream":"S","seq":42}') == (42, None)
    assert puback_outcome(b"", b'{"stream": "S", "seq": 7, "duplicate": false}') == (7, None)
    seq, error = puback_outcome(b"", b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},'
                                     b'"stream":"S","seq":0}')
    assert seq is None and "10077" in error and "maximum messages" in error
    seq, error = puback_outcome(b"NATS/1.0 503\r\n\r\n", b"")
    assert seq is None and "503" in error
    assert puback_outcome(b"", b'{"stream":"S"}')[0] is None


def test_status_codes_and_ack_subjects() -> None:
    assert status_code(b"NATS/1.0 408 Request Timeout\r\n\r\n") == 408
    assert status_code(b"NATS/1.0\r\nA: b\r\n\r\n") is None
    assert status_code(b"") is None
    assert ack_stream_seq(b"$JS.ACK.S.C.1.17.3.1700000000000000000.5") == 17
    assert ack_stream_seq(b"$JS.ACK.dom.ACCHASH.S.C.2.99.4.1700000000000000000.0.tok") == 99
    assert ack_stream_seq(b"_INBOX.x.1") is None


def test_pub_frames_offsets_cut_whole_frames() -> None:
    blob, offsets = pub_frames(b"s", b"_INBOX.i", b"xy", 5, 3)
    assert [blob[offsets[i]:offsets[i + 1]] for i in range(3)] == [
        b"PUB s _INBOX.i.%d 2\r\nxy\r\n" % n for n in (5, 6, 7)]
    assert offsets[-1] == len(blob)


def test_percentile_and_url() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (0.5, 0.9, 0.99, 1.0)] == [50.0, 90.0, 99.0, 100.0]
    assert parse_url("nats://127.0.0.1:4333") == ("127.0.0.1", 4333)


def test_cpu_meter_reports_per_1k_messages_and_busiest() -> None:
    assert process_cpu_s(os.getpid()) > 0
    meter = CpuMeter([])
    meter.used_s, meter.system_s = {1: 0.5, 2: 1.5}, {1: 0.1, 2: 0.3}
    metrics = meter.metrics(2000)
    assert metrics["server_cpu_s_per_1k_msgs"] == 1.0 and metrics["busiest_node_cpu_s_per_1k_msgs"] == 0.75
    assert metrics["server_sys_cpu_s_per_1k_msgs"] == pytest.approx(0.2)
    meter.used_s = {1: 0.2}
    assert meter.metrics(1000)["server_cpu_s_per_1k_msgs"] == pytest.approx(0.2)
    assert "busiest_node_cpu_s_per_1k_msgs" not in meter.metrics(1000)
