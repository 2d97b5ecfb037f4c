"""Limits as protection, against jetraft and the reference nats-server.

A server with `max_connections = 2` and a short auth timeout: surplus connections are refused with
`-ERR 'maximum connections exceeded'`; idle connections that never authenticate are closed at
the auth timeout, which frees their slots (a flood of silent connections cannot hold the server).
Oversized payloads and control lines before CONNECT are refused and closed.
"""

from __future__ import annotations

import pathlib
import socket
import time

import pytest

from tests.compat.servers import KINDS
from tests.compat.test_security_support import connect_line, exchange, lines, secure_server

CONF = {"max_connections": 2, "max_payload": 64, "max_control_line": 256,
        "authorization": {"timeout": 0.5, "users": [{"user": "u", "password": "p"}]}}


def _closed_within(sock: socket.socket, timeout_s: float) -> bytes:
    """Read until the server closes `sock`; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"not closed within {timeout_s}s: {data!r}")


FLOOD = 6


@pytest.mark.parametrize("kind", KINDS)
def test_connection_flood_is_bounded(kind: str, tmp_path: pathlib.Path) -> None:
    """Six silent connections to a server allowing two: the surplus is refused with
    `maximum connections exceeded`, every silent one is closed by the auth timeout, and then a
    real client logs in again."""
    with secure_server(kind, tmp_path, CONF) as srv:
        flood = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(FLOOD)]
        try:
            said = [_closed_within(sock, 5) for sock in flood]
        finally:
            for sock in flood:
                sock.close()
        refused = [s for s in said if b"-ERR 'maximum connections exceeded'" in s]
        timed_out = [s for s in said if b"-ERR 'Authentication Timeout'" in s]
        assert refused and len(timed_out) <= 2 and len(refused) + len(timed_out) == FLOOD
        deadline = time.monotonic() + 5
        while True:  # the slots come back once the server has reaped the closed connections
            text, closed = exchange(srv.port, connect_line(user="u", **{"pass": "p"}) + b"PING\r\n")
            if not closed or time.monotonic() > deadline:
                break
        assert not closed and lines(text) == ["PONG"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("payload", "error"), [
    (b"PUB a 65\r\n" + b"x" * 65 + b"\r\n", "-ERR 'Maximum Payload Violation'"),
    (b"SUB " + b"a" * 300 + b" 1\r\n", "-ERR 'maximum control line exceeded'"),
])
def test_oversized_input_after_login(kind: str, tmp_path: pathlib.Path, payload: bytes, error: str) -> None:
    with secure_server(kind, tmp_path, CONF) as srv:
        said, closed = exchange(srv.port, connect_line(user="u", **{"pass": "p"}) + payload + b"PING\r\n")
        assert lines(said) == [error] and closed
