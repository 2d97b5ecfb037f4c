"""Helpers for the security compatibility tests (no tests here).

Both servers read the same config file: everything is written as one-line inline tables
(`authorization = { users = [ { user = "a", ... } ] }`), which is valid TOML and valid nats-server
config. Certificates come from `trustme` at test time (no private keys in the repository).
A TLS- or auth-requiring server cannot answer the launcher's plain `CONNECT {}`/`PING` probe, so
`SecureServer` counts as ready once it sends its INFO line. Raw exchanges return what the server
said after its INFO, and whether it closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import attrs
import trustme

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, ServerStartError, free_port
from tests.compat.servers import REPO_ROOT, skip_if_unavailable


def render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {render(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r}")


def write_conf(directory: pathlib.Path, settings: dict[str, Any], name: str = "secure.conf") -> pathlib.Path:
    path = directory / name
    path.write_text("".join(f"{k} = {render(v)}\n" for k, v in settings.items()), encoding="utf-8")
    return path


@attrs.define
class SecureServer(ServerProcess):
    """Ready once the INFO greeting arrives (the CONNECT probe would need credentials)."""

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        delay_s = 0.005
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.kind.value} exited:\n{self.log_tail()}")
            if read_info(self.port) is not None:
                return
            time.sleep(delay_s)  # polling interval of a condition wait
            delay_s = min(delay_s * 2, 0.1)
        self.stop()
        raise ServerStartError(f"{self.kind.value} not ready:\n{self.log_tail()}")


def read_info(port: int, timeout_s: float = 1.0) -> dict | None:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            line = sock.makefile("rb").readline(65536)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    return json.loads(line[5:])


@contextlib.contextmanager
def secure_server(kind: str, tmp_dir: pathlib.Path, settings: dict[str, Any],
                  extra_args: list[str] | None = None, port: int | None = None) -> Iterator[SecureServer]:
    skip_if_unavailable(kind)
    server = SecureServer(kind=ServerKind(kind), port=port or free_port(),
                          config=write_conf(tmp_dir, settings, f"{kind}.conf") if settings else None,
                          extra_args=list(extra_args or []), log_path=tmp_dir / f"{kind}.log",
                          cwd=REPO_ROOT)
    server.start()
    try:
        yield server
    except BaseException:
        print(f"--- {kind} log ---\n{server.log_tail()}")
        raise
    finally:
        server.stop()


@attrs.frozen
class Certs:
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    other_ca: pathlib.Path  # an unrelated CA: trusting only it must fail


def make_certs(directory: pathlib.Path) -> Certs:
    ca, other = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client@example.test")
    paths = {name: directory / f"{name}.pem" for name in
             ("ca", "cert", "key", "client_cert", "client_key", "other_ca")}
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    client_cert.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client_cert.private_key_pem.write_to_path(paths["client_key"])
    return Certs(**paths)


def exchange(port: int, payload: bytes, *, pongs: int = 1, timeout_s: float = 4.0) -> tuple[str, bool]:
    """Send `payload` after the INFO; read until `pongs` PONGs or the server closes.
    Returns (what the server said after INFO, closed_by_server)."""
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if payload:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
        closed = False
        while not (pongs and received.count(b"PONG\r\n") >= pongs):
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"no close and no PONG in {timeout_s}s: {bytes(received)!r}")
            sock.settimeout(remaining_s)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                continue
            if not chunk:
                closed = True
                break
            received += chunk
    text = bytes(received).decode("utf-8", "replace")
    _, _, after_info = text.partition("\r\n") if text.startswith("INFO ") else ("", "", text)
    return after_info, closed


def arun(coro: Any, timeout_s: float = 15.0) -> Any:
    """nats-py is asyncio-based: run one scenario to completion with a deadline."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


def lines(text: str) -> list[str]:
    return [line for line in text.split("\r\n") if line]


def connect_line(**options: Any) -> bytes:
    options.setdefault("verbose", False)
    options.setdefault("pedantic", False)
    return b"CONNECT " + json.dumps(options).encode() + b"\r\n"
