"""A raw-socket JetStream load generator: no client library in the hot path, so a benchmark
measures the server and not nats-py (which tops out near 31k acked msgs/s here).

One blocking TCP socket per run. The handshake reads INFO, sends CONNECT (verbose and pedantic
off, headers and no_responders on), subscribes to `<inbox>.*` and waits for PONG.

- `publish_windowed`: every frame `PUB <subject> <inbox>.<n> <len>` is built before the clock
  starts, as one buffer with frame offsets; the loop writes all frames the window allows as one
  slice, then reads whatever acks have arrived, so at most `window` are unacknowledged. Each
  PubAck is checked for an "error" (or a 503 status), each `<n>` must be acked once, and the
  stored sequences must all be distinct; a run with errors reports `ok: false`.
- `publish_one_at_a_time`: publish, wait for its ack, repeat; latency percentiles.
- `consume_pull`: a durable pull consumer (explicit ack); `$JS.API.CONSUMER.MSG.NEXT` with a
  batch (500), every message acked with `+ACK` to its reply subject (acks of one read go out in
  one write, together with the next pull request once a batch is complete); 404/408 statuses end
  a request and a new one is sent.

Standalone (one JSON line out):
    python -m cli.benchlib.jsload pub --url nats://127.0.0.1:4222 --stream S --subject s \\
        --msgs 100000 --size 16 --window 256 [--one-at-a-time] [--replicas 3] [--pid PID ...]
    python -m cli.benchlib.jsload consume --url ... --stream S --subject s --msgs 100000
`--pid` adds the server processes' CPU seconds per 1,000 messages over the measured span.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from cli.benchlib.jsproto import (
    PUBACK_SEQ,
    ProtocolError,
    ReplyParser,
    ack_stream_seq,
    pub_frame,
    pub_frames,
    puback_outcome,
    status_code,
)

RECV_BYTES = 1 << 20
MSGS_MAX_PER_CONNECTION = 5_000_000  # pre-built frames: about 100 bytes of memory each
DEFAULT_TIMEOUT_S = 60.0
BATCH_DEFAULT = 500
PULL_EXPIRES_NS = 5_000_000_000
RETRY_INTERVAL_S = 0.25
API_TIMEOUT_S = 2.0
CPU_TICKS_KEY = "_server_cpu_ticks"  # how coarse the CPU figure is (/proc counts in clock ticks)
LATENCY_POINTS = (("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99))
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class LoadError(RuntimeError):
    """The server answered something the load cannot go on from (or nothing before a deadline)."""


# -- server CPU -----------------------------------------------------------------------------------
def process_cpu_times_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds."""
    return sum(process_cpu_times_s(pid))


class CpuMeter:
    """CPU seconds each of `pids` used between `start()` and `stop()` (and the kernel's part of it:
    system time, where fsync and socket work show up)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)
        self._before: dict[int, tuple[float, float]] = {}
        self.used_s: dict[int, float] = {}
        self.system_s: dict[int, float] = {}

    def start(self) -> None:
        self._before = {pid: process_cpu_times_s(pid) for pid in self.pids}

    def stop(self) -> dict[int, float]:
        after = {pid: process_cpu_times_s(pid) for pid in self._before}
        self.used_s = {pid: sum(after[pid]) - sum(before) for pid, before in self._before.items()}
        self.system_s = {pid: after[pid][1] - before[1] for pid, before in self._before.items()}
        return self.used_s

    def metrics(self, msgs: int) -> dict[str, float]:
        """`server_cpu_s_per_1k_msgs` (all pids summed), its kernel part, and with several pids the
        busiest one."""
        if not self.used_s or msgs <= 0:
            return {}
        out = {"server_cpu_s_per_1k_msgs": sum(self.used_s.values()) * 1000 / msgs,
               "server_sys_cpu_s_per_1k_msgs": sum(self.system_s.values()) * 1000 / msgs,
               CPU_TICKS_KEY: sum(self.used_s.values()) * CLK_TCK}
        if len(self.used_s) > 1:
            out["busiest_node_cpu_s_per_1k_msgs"] = max(self.used_s.values()) * 1000 / msgs
        return out


# -- connection -----------------------------------------------------------------------------------
def parse_url(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return (host or "127.0.0.1"), int(port or 4222)


class RawConn:
    """One client connection: a blocking socket, a reply parser and an inbox `<inbox>.*`."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "jsload") -> None:
        host, port = parse_url(url)
        self.timeout_s = timeout_s
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ReplyParser()
        self.inbox = b"_INBOX." + secrets.token_hex(8).encode()
        self._requests = 0
        self.info = self._handshake(name)

    def _handshake(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        info = self.wait_for(lambda f: f[0] == "INFO", deadline)
        options = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "protocol": 1, "name": name, "lang": "python-raw", "version": "0"}
        self.sock.sendall(b"CONNECT " + json.dumps(options).encode() + b"\r\n"
                          b"SUB " + self.inbox + b".* 1\r\nPING\r\n")
        self.wait_for(lambda f: f[0] == "PONG", deadline)
        return json.loads(info[5])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, deadline: float) -> list[tuple]:
        """Frames from one recv (answers PINGs, raises on -ERR or close or the deadline)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LoadError("deadline passed waiting for the server")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(RECV_BYTES)
        except TimeoutError as exc:
            raise LoadError("timed out waiting for the server") from exc
        if not data:
            raise LoadError("server closed the connection")
        frames = self.parser.feed(data)
        for frame in frames:
            if frame[0] == "PING":
                self.sock.sendall(b"PONG\r\n")
            elif frame[0] == "ERR":
                raise LoadError(f"server error: {frame[5].decode(errors='replace')}")
        return frames

    def wait_for(self, match: Callable[[tuple], bool], deadline: float) -> tuple:
        while True:  # bounded by the deadline in read()
            for frame in self.read(deadline):
                if match(frame):
                    return frame

    def request(self, subject: str, body: bytes | dict[str, Any], timeout_s: float = 10.0) -> tuple[bytes, bytes]:
        """Request/reply on this connection; (header, payload) of the reply."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self._requests += 1
        reply = self.inbox + b".r%d" % self._requests
        self.sock.sendall(pub_frame(subject.encode(), reply, body))
        frame = self.wait_for(lambda f: f[1] == reply, time.monotonic() + timeout_s)
        return frame[4], frame[5]

    def api(self, subject: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
        """A `$JS.API` call; its JSON reply (a 503 status becomes an error reply)."""
        header, payload = self.request(subject, body if body is not None else b"", timeout_s)
        code = status_code(header) if header else None
        if code is not None and code >= 300:
            return {"error": {"code": code, "description": "status reply (no responders?)"}}
        return json.loads(payload) if payload else {}


def reset_stream(conn: RawConn, stream: str, subjects: list[str], storage: str = "file", replicas: int = 1,
                 timeout_s: float = 60.0) -> None:
    """Delete `stream` if present and create it anew; retried until `timeout_s` while a cluster
    elects its meta leader."""
    config = {"name": stream, "subjects": subjects, "storage": storage, "num_replicas": replicas,
              "retention": "limits", "discard": "old"}
    deadline = time.monotonic() + timeout_s
    while True:  # bounded by the deadline
        try:
            deleted = conn.api(f"$JS.API.STREAM.DELETE.{stream}", timeout_s=API_TIMEOUT_S)
            error = deleted.get("error")
            if error is None or error.get("err_code") == 10059:  # 10059: stream not found
                created = conn.api(f"$JS.API.STREAM.CREATE.{stream}", config, timeout_s=API_TIMEOUT_S)
                error = created.get("error")
                if error is None:
                    return
        except LoadError as exc:  # no answer: a cluster's JetStream may not be ready yet
            error = {"description": str(exc)}
        if time.monotonic() > deadline:
            raise LoadError(f"could not create stream {stream}: {error}")
        time.sleep(RETRY_INTERVAL_S)  # retry interval while a cluster elects leaders


def wait_publishable(conn: RawConn, subject: bytes, payload: bytes, timeout_s: float = 60.0) -> None:
    """Publish until one PubAck succeeds (an R3 stream may still be electing its leader)."""
    deadline = time.monotonic() + timeout_s
    while True:  # bounded by the deadline
        try:
            header, body = conn.request(subject.decode(), payload, timeout_s=API_TIMEOUT_S)
            _seq, error = puback_outcome(header, body)
        except LoadError as exc:  # no answer yet
            error = str(exc)
        if error is None:
            return
        if time.monotonic() > deadline:
            raise LoadError(f"stream not accepting publishes: {error}")
        time.sleep(RETRY_INTERVAL_S)  # retry interval while the stream leader is elected


# -- publish ------------------------------------------------------------------------------------------
def _pub_result(msgs: int, start: float, end: float, tally: dict[str, Any], cpu_start_s: float) -> dict[str, Any]:
    seqs = tally["seqs"]
    distinct = len(set(seqs)) == len(seqs)
    ok = tally["errors"] == 0 and len(seqs) == msgs and distinct and tally["unexpected"] == 0
    elapsed = max(end - start, 1e-9)
    return {"ok": ok, "msgs": msgs, "acked": len(seqs), "errors": tally["errors"],
            "first_error": tally["first_error"], "seqs_distinct": distinct, "unexpected_replies": tally["unexpected"],
            "start": start, "end": end, "elapsed_s": elapsed, "msgs_per_s": msgs / elapsed,
            "client_cpu_s_per_1k_msgs": (time.process_time() - cpu_start_s) * 1000 / msgs, "seqs": seqs}


def _new_tally() -> dict[str, Any]:
    return {"seqs": [], "errors": 0, "first_error": None, "unexpected": 0}


def _tally_ack(tally: dict[str, Any], header: bytes, body: bytes) -> None:
    seq, error = puback_outcome(header, body)
    if error is None:
        tally["seqs"].append(seq)
    else:
        tally["errors"] += 1
        tally["first_error"] = tally["first_error"] or error


def publish_windowed(conn: RawConn, subject: str, msgs: int, size_bytes: int, window: int,
                     timeout_s: float = 120.0, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """`msgs` acknowledged publishes, at most `window` unacknowledged. `on_start` runs just before
    the clock starts (frames are built before it)."""
    assert window >= 1 and msgs >= 1
    if msgs > MSGS_MAX_PER_CONNECTION:
        raise LoadError(f"at most {MSGS_MAX_PER_CONNECTION:,} messages per publisher (frames are built in memory)")
    blob, offsets = pub_frames(subject.encode(), conn.inbox, b"x" * size_bytes, 0, msgs)
    view = memoryview(blob)
    replied = bytearray(msgs)  # 1 once message n got its reply
    tally = _new_tally()
    prefix_len = len(conn.inbox) + 1
    sent = answered = 0
    sock = conn.sock
    seq_search, seqs_append = PUBACK_SEQ.search, tally["seqs"].append
    if on_start is not None:
        on_start()
    cpu_start_s = time.process_time()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while answered < msgs:  # bounded by the deadline in read()
        limit = min(msgs, answered + window)
        if sent < limit:
            sock.sendall(view[offsets[sent]:offsets[limit]])
            sent = limit
        for op, subj, _sid, _reply, header, body in conn.read(deadline):
            if op != "MSG" and op != "HMSG":
                continue
            token = subj[prefix_len:]
            n = int(token) if token.isdigit() else -1
            if not 0 <= n < sent or replied[n]:
                tally["unexpected"] += 1  # not one of ours, or a second reply to one message
                continue
            replied[n] = 1
            answered += 1
            if not header and b'"error"' not in body:  # the common PubAck, read inline
                found = seq_search(body)
                if found is not None:
                    seqs_append(int(found.group(1)))
                    continue
            _tally_ack(tally, header, body)
    return _pub_result(msgs, start, time.perf_counter(), tally, cpu_start_s)


def publish_one_at_a_time(conn: RawConn, subject: str, msgs: int, size_bytes: int, warmup: int = 50,
                          timeout_s: float = 120.0, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Publish, wait for its ack, repeat; `warmup` unmeasured rounds first. Latency percentiles."""
    payload = b"x" * size_bytes
    total = warmup + msgs
    frames = [pub_frame(subject.encode(), conn.inbox + b".%d" % n, payload) for n in range(total)]
    tally = _new_tally()
    latencies_s: list[float] = []
    deadline = time.monotonic() + timeout_s
    sock = conn.sock
    start, cpu_start_s = time.perf_counter(), time.process_time()
    for n in range(total):
        if n == warmup:
            tally = _new_tally()
            if on_start is not None:
                on_start()
            start, cpu_start_s = time.perf_counter(), time.process_time()
        want = conn.inbox + b".%d" % n
        sent_at = time.perf_counter()
        sock.sendall(frames[n])
        frame = conn.wait_for(lambda f: f[1] == want, deadline)
        latencies_s.append(time.perf_counter() - sent_at)
        _tally_ack(tally, frame[4], frame[5])
    result = _pub_result(msgs, start, time.perf_counter(), tally, cpu_start_s)
    measured = sorted(latencies_s[warmup:])
    result.update({name: percentile(measured, q) * 1e6 for name, q in LATENCY_POINTS})
    return result


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    assert sorted_values, "no values"
    rank = max(1, min(len(sorted_values), math.ceil(round(fraction * len(sorted_values), 6))))
    return sorted_values[rank - 1]


# -- consume ------------------------------------------------------------------------------------------
def create_pull_consumer(conn: RawConn, stream: str, durable: str, max_ack_pending: int) -> None:
    config = {"durable_name": durable, "ack_policy": "explicit", "deliver_policy": "all",
              "max_ack_pending": max_ack_pending}
    reply = conn.api(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}", {"stream_name": stream, "config": config})
    if "error" in reply:
        raise LoadError(f"could not create consumer {stream}.{durable}: {reply['error']}")


def consume_pull(conn: RawConn, stream: str, durable: str, msgs: int, batch: int = BATCH_DEFAULT,
                 timeout_s: float = 120.0, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Fetch `msgs` messages through the durable pull consumer, `batch` per request, acking each."""
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}".encode()
    pull_reply = conn.inbox + b".pull"
    got = in_batch = requested = unreadable_acks = 0
    statuses: dict[int, int] = {}
    stream_seqs: list[int] = []
    sock = conn.sock

    def pull() -> bytes:
        nonlocal requested, in_batch
        requested, in_batch = min(batch, msgs - got), 0
        return pub_frame(next_subject, pull_reply, b'{"batch":%d,"expires":%d}' % (requested, PULL_EXPIRES_NS))

    if on_start is not None:
        on_start()
    cpu_start_s = time.process_time()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    sock.sendall(pull())
    while got < msgs:  # bounded by the deadline in read()
        out: list[bytes] = []
        for op, _subj, _sid, reply, header, _body in conn.read(deadline):
            if reply is not None and reply.startswith(b"$JS.ACK."):
                got += 1
                in_batch += 1
                seq = ack_stream_seq(reply)
                if seq is None:
                    unreadable_acks += 1
                else:
                    stream_seqs.append(seq)
                out.append(b"PUB %s 4\r\n+ACK\r\n" % reply)
            elif op == "HMSG":
                code = status_code(header) or 0
                statuses[code] = statuses.get(code, 0) + 1
                if code in (404, 408, 409):  # this request is over: ask again
                    in_batch = requested
        if in_batch >= requested and got < msgs:
            out.append(pull())
        if out:
            sock.sendall(b"".join(out))
    end, cpu_s = time.perf_counter(), time.process_time() - cpu_start_s
    conn.sock.sendall(b"PING\r\n")  # the server has read every ack once it answers
    conn.wait_for(lambda f: f[0] == "PONG", time.monotonic() + timeout_s)
    distinct = len(set(stream_seqs)) == len(stream_seqs)
    elapsed = max(end - start, 1e-9)
    return {"ok": distinct and 409 not in statuses and not unreadable_acks, "msgs": got, "statuses": statuses,
            "seqs_distinct": distinct, "unreadable_ack_subjects": unreadable_acks,
            "start": start, "end": end, "elapsed_s": elapsed, "msgs_per_s": got / elapsed,
            "client_cpu_s_per_1k_msgs": cpu_s * 1000 / max(got, 1)}


# -- standalone ---------------------------------------------------------------------------------------
def run_pub(args: argparse.Namespace, meter: CpuMeter) -> dict[str, Any]:
    with RawConn(args.url, name="jsload-pub") as conn:
        if not args.keep_stream:
            reset_stream(conn, args.stream, [args.subject], args.storage, args.replicas)
        payload = b"x" * args.size
        wait_publishable(conn, args.subject.encode(), payload)
        if args.one_at_a_time:
            result = publish_one_at_a_time(conn, args.subject, args.msgs, args.size, on_start=meter.start)
        else:
            result = publish_windowed(conn, args.subject, args.msgs, args.size, args.window, on_start=meter.start)
    meter.stop()
    return result


def run_consume(args: argparse.Namespace, meter: CpuMeter) -> dict[str, Any]:
    with RawConn(args.url, name="jsload-consume") as conn:
        prefill: dict[str, Any] = {}
        if not args.keep_stream:
            reset_stream(conn, args.stream, [args.subject], args.storage, args.replicas)
            wait_publishable(conn, args.subject.encode(), b"x" * args.size)
            prefill = publish_windowed(conn, args.subject, args.msgs - 1, args.size, 256) if args.msgs > 1 else {}
            if prefill and not prefill["ok"]:
                raise LoadError(f"prefill failed: {prefill['first_error']}")
        create_pull_consumer(conn, args.stream, args.durable, max(1000, 2 * args.batch))
        result = consume_pull(conn, args.stream, args.durable, args.msgs, args.batch, on_start=meter.start)
    meter.stop()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli.benchlib.jsload", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("pub", "consume"):
        p = sub.add_parser(name)
        p.add_argument("--url", default="nats://127.0.0.1:4222")
        p.add_argument("--stream", default="JSLOAD")
        p.add_argument("--subject", default="jsload")
        p.add_argument("--msgs", type=int, default=100_000)
        p.add_argument("--size", type=int, default=16, help="payload bytes")
        p.add_argument("--storage", choices=["file", "memory"], default="file")
        p.add_argument("--replicas", type=int, default=1)
        p.add_argument("--keep-stream", action="store_true",
                       help="use the stream as it is (default: delete and create it anew; consume: and prefill it)")
        p.add_argument("--pid", type=int, action="append", default=[],
                       help="a server process to report CPU seconds per 1k msgs for (repeatable)")
    pub = sub.choices["pub"]
    pub.add_argument("--window", type=int, default=256, help="unacknowledged publishes at most")
    pub.add_argument("--one-at-a-time", action="store_true", help="publish, wait for the ack, repeat")
    consume = sub.choices["consume"]
    consume.add_argument("--durable", default="JSLOAD")
    consume.add_argument("--batch", type=int, default=BATCH_DEFAULT)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    meter = CpuMeter(args.pid)
    try:
        result = (run_pub if args.command == "pub" else run_consume)(args, meter)
    except (LoadError, ProtocolError, OSError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    result.pop("seqs", None)
    result.update(meter.metrics(result["msgs"]))
    if meter.used_s:
        result["server_cpu_s"] = {str(pid): round(used, 3) for pid, used in meter.used_s.items()}
    print(json.dumps({"command": args.command, "url": args.url, **result}))
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
