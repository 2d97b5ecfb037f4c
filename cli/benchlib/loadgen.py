"""Load generators for `jetraft bench`, each meant to run in its own process.

The publisher and subscribers speak the raw protocol so that the client is never the bottleneck:
the publisher pre-builds one large buffer of `PUB <subj> <n>\\r\\n<payload>\\r\\n` frames and
pushes it with `sendall`, then sends `PING` and waits for `PONG` so it knows the server has
consumed everything. With one subject the frames are byte-identical (as in `nats bench`; a server
may batch such runs); `--subjects N` cycles N subjects so consecutive frames always differ.

A subscriber just counts `MSG ` markers in what it reads (payloads are our own filler bytes, so
they can never contain the marker; the last 3 bytes of each chunk are carried over so a marker
split across reads is still counted once). Request/reply latency uses nats-py, because that is
what applications see.

Workers report through a multiprocessing queue as plain tuples and publish progress through shared
counters; times are `time.perf_counter()` (CLOCK_MONOTONIC on Linux, so comparable across processes).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

FILLER = b"x"
BATCH_TARGET_BYTES = 256 * 1024
MSG_MARKER = b"MSG "


def parse_url(url: str) -> tuple[str, int]:
    """`nats://host:port` or `host:port` -> (host, port)."""
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return (host or "127.0.0.1"), int(port or 4222)


def raw_connect(host: str, port: int, timeout_s: float) -> socket.socket:
    """Open a raw client connection and complete the handshake (INFO, CONNECT, PING -> PONG)."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
    wait_for_pong(sock, timeout_s)
    return sock


def wait_for_pong(sock: socket.socket, timeout_s: float) -> None:
    """Read until a PONG line arrives; answers server PINGs; fails on -ERR or close."""
    deadline = time.monotonic() + timeout_s
    pending = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"server closed the connection: {pending[-200:]!r}")
        pending += chunk
        if b"-ERR" in pending:
            raise ConnectionError(pending[pending.index(b"-ERR") :].split(b"\r\n")[0].decode())
        if b"\r\nPING\r\n" in pending or pending.startswith(b"PING\r\n"):
            sock.sendall(b"PONG\r\n")
            pending = pending.replace(b"PING\r\n", b"")
        if b"PONG\r\n" in pending:
            return
        pending = pending[-4096:]
    raise TimeoutError(f"no PONG within {timeout_s}s")


def publish_subjects(subject: str, subjects: int) -> list[str]:
    """One subject, or `subject.0` .. `subject.<n-1>` used round-robin (so that consecutive frames
    never share a control line, defeating any same-frame fast path; subscribe to `subject.>`)."""
    return [subject] if subjects <= 1 else [f"{subject}.{i}" for i in range(subjects)]


def subscribe_subject(subject: str, subjects: int) -> str:
    return subject if subjects <= 1 else f"{subject}.>"


def build_batch(subject: str, size_bytes: int, frames: int, subjects: int = 1) -> bytes:
    """`frames` PUB frames, cycling over the publish subjects."""
    payload = FILLER * size_bytes
    cycle = [b"PUB %s %d\r\n%s\r\n" % (s.encode(), size_bytes, payload) for s in publish_subjects(subject, subjects)]
    whole, rest = divmod(frames, len(cycle))
    return b"".join(cycle) * whole + b"".join(cycle[:rest])


def frames_per_batch(subject: str, size_bytes: int, subjects: int = 1) -> int:
    """Frames per sendall: about BATCH_TARGET_BYTES, a whole number of subject cycles."""
    cycle = max(1, subjects)
    cycle_len = len(build_batch(subject, size_bytes, cycle, subjects))
    return cycle * max(1, BATCH_TARGET_BYTES // cycle_len)


def publisher(
    url: str, subject: str, subjects: int, msgs: int, size_bytes: int, start: Any, progress: Any, results: Any,
    timeout_s: float,
) -> None:
    """Publish `msgs` messages as fast as the server takes them; report ("pub", n, t0, t1)."""
    host, port = parse_url(url)
    try:
        sock = raw_connect(host, port, timeout_s)
        per_batch = frames_per_batch(subject, size_bytes, subjects)
        batch = build_batch(subject, size_bytes, per_batch, subjects)
        full, rest = divmod(msgs, per_batch)
        tail = build_batch(subject, size_bytes, rest, subjects)
        start.wait(timeout_s)
        sock.settimeout(timeout_s)
        t0 = time.perf_counter()
        for _ in range(full):
            sock.sendall(batch)
            progress.value += per_batch
        if tail:
            sock.sendall(tail)
            progress.value += rest
        sock.sendall(b"PING\r\n")
        wait_for_pong(sock, timeout_s)
        t1 = time.perf_counter()
        sock.close()
        results.put(("pub", msgs, t0, t1, ""))
    except Exception as exc:  # reported to the parent, which shows it
        results.put(("pub", 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def count_markers(carry: bytes, chunk: bytes) -> tuple[int, bytes]:
    """Number of MSG markers in carry+chunk that end inside chunk, and the new carry."""
    window = carry + chunk
    return window.count(MSG_MARKER), window[-(len(MSG_MARKER) - 1) :]


def subscriber(
    url: str, subject: str, expected: int, ready: Any, progress: Any, results: Any, timeout_s: float,
    probe_url: str | None = None,
) -> None:
    """Subscribe, signal `ready`, count deliveries until `expected`; report ("sub", n, t_first, t_last).

    With `probe_url` (publishers on another server of a cluster), `ready` waits until our interest
    has reached that server (see `wait_for_route_interest`)."""
    host, port = parse_url(url)
    try:
        sock = raw_connect(host, port, timeout_s)
        sock.sendall(b"SUB %s 1\r\nPING\r\n" % subject.encode())
        wait_for_pong(sock, timeout_s)
        if probe_url is not None:
            wait_for_route_interest(sock, probe_url, timeout_s)
        ready.set()
        count, first, last = receive_count(sock, expected, progress, timeout_s)
        extra = count_until_pong(sock, timeout_s) if count >= expected else 0
        sock.close()
        error = "" if count >= expected else f"received {count} of {expected}"
        error = error or (f"received {count + extra} for {expected} published (duplicates)" if extra else "")
        results.put(("sub", count, first, last, error))
    except Exception as exc:
        ready.set()
        results.put(("sub", 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def count_until_pong(sock: socket.socket, timeout_s: float) -> int:
    """After the expected count: MSG markers still arriving before a PING's PONG (duplicates, or
    more than was published). Markers split across reads are carried as in receive_count."""
    sock.sendall(b"PING\r\n")
    deadline = time.monotonic() + timeout_s
    extra, carry, tail = 0, b"", b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        found, carry = count_markers(carry, chunk)
        extra += found
        tail = (tail + chunk)[-8:]
        if b"PONG\r\n" in tail or b"PONG\r\n" in chunk:
            return extra
    raise TimeoutError(f"no PONG within {timeout_s}s")


PROBE_POLL_S = 0.05


def wait_for_route_interest(sock: socket.socket, probe_url: str, timeout_s: float) -> None:
    """Subscribe to a probe subject *after* the real subscription, then publish probes on
    `probe_url` until one arrives. Interest travels in order on a route, so when the probe's
    interest is known over there, the real subscription's is too. The probe sub is removed and a
    PING/PONG drains any probe still in flight, so counting starts clean."""
    probe = b"_bench_probe.%d" % time.monotonic_ns()
    sock.sendall(b"SUB %s 2\r\nPING\r\n" % probe)
    wait_for_pong(sock, timeout_s)
    host, port = parse_url(probe_url)
    deadline = time.monotonic() + timeout_s
    with raw_connect(host, port, timeout_s) as pub:
        seen = b""
        while b"MSG " + probe not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"interest did not reach {probe_url} within {timeout_s}s")
            pub.sendall(b"PUB %s 0\r\n\r\n" % probe)
            sock.settimeout(PROBE_POLL_S)  # re-publish at this pace: early probes find no interest
            try:
                seen = (seen + sock.recv(65536))[-4096:]
            except socket.timeout:
                pass
    sock.sendall(b"UNSUB 2\r\nPING\r\n")
    wait_for_pong(sock, timeout_s)


def receive_count(sock: socket.socket, expected: int, progress: Any, timeout_s: float) -> tuple[int, float, float]:
    deadline = time.monotonic() + timeout_s
    count, carry = 0, b""
    first = last = 0.0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while count < expected and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            n = sock.recv_into(view)
        except socket.timeout:
            break
        if n == 0:
            break
        now = time.perf_counter()
        chunk = bytes(view[:n])
        found, carry = count_markers(carry, chunk)
        if found:
            first = first or now  # not on a late async INFO
            count += found
            last = now
            progress.value = count
        if b"PING\r\n" in chunk:
            sock.sendall(b"PONG\r\n")
    return count, first, last


# --- request/reply (nats-py) -------------------------------------------------------------------------


def responder(url: str, subject: str, ready: Any, stop: Any, timeout_s: float) -> None:
    """Answer requests on `subject` until `stop` is set (or the timeout passes)."""
    asyncio.run(_responder(url, subject, ready, stop, timeout_s))


async def _responder(url: str, subject: str, ready: Any, stop: Any, timeout_s: float) -> None:
    import nats

    nc = await nats.connect(url, allow_reconnect=False)

    async def answer(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=answer)
    await nc.request(subject, b"self-check", timeout=timeout_s)  # our SUB is live
    ready.set()
    await asyncio.to_thread(stop.wait, timeout_s)
    await nc.close()


def requester(url: str, subject: str, msgs: int, size_bytes: int, progress: Any, results: Any, timeout_s: float) -> None:
    """Send `msgs` sequential requests; report ("req", n, t0, t1, error, latencies_s)."""
    try:
        latencies, t0, t1 = asyncio.run(_requester(url, subject, msgs, size_bytes, progress, timeout_s))
        results.put(("req", len(latencies), t0, t1, "", latencies))
    except Exception as exc:
        results.put(("req", 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}", []))


async def until_answered(nc: Any, subject: str, timeout_s: float) -> None:
    """Retry one request until the responder answers (in a cluster its interest may still be on
    its way to our server); bounded by `timeout_s`."""
    import nats.errors

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await nc.request(subject, b"warm-up", timeout=1.0)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise


async def _requester(
    url: str, subject: str, msgs: int, size_bytes: int, progress: Any, timeout_s: float
) -> tuple[list[float], float, float]:
    import nats

    nc = await nats.connect(url, allow_reconnect=False)
    payload = FILLER * size_bytes
    await until_answered(nc, subject, timeout_s)
    latencies: list[float] = []
    t0 = time.perf_counter()
    for i in range(msgs):
        sent = time.perf_counter()
        await nc.request(subject, payload, timeout=timeout_s)
        latencies.append(time.perf_counter() - sent)
        if i % 64 == 0:
            progress.value = i + 1
    t1 = time.perf_counter()
    progress.value = msgs
    await nc.close()
    return latencies, t0, t1
