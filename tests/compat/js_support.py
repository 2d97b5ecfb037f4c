"""Helpers for the JetStream compatibility tests: servers started with `-js -sd DIR`, and a
bounded asyncio runner for nats-py scenarios.

Servers come from the shared launcher (cli/benchlib/launcher.py): free loopback port, ready
when it answers PING, stopped by PID. `js_server(kind, dir)` yields a running server whose
JetStream store lives in `dir`, so a test can stop it and start another on the same directory
(restart persistence) or SIGKILL it by PID (crash test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
from nats.aio.client import Client

from cli.benchlib.launcher import ServerKind, ServerProcess, free_port
from tests.compat.servers import REPO_ROOT, skip_if_unavailable

SCENARIO_TIMEOUT_S = 45.0


def start_js_server(kind: str, store_dir: pathlib.Path, log_dir: pathlib.Path, port: int | None = None) -> ServerProcess:
    skip_if_unavailable(kind)
    store_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        kind=ServerKind(kind),
        port=port or free_port(),
        extra_args=["-js", "-sd", str(store_dir)],
        log_path=log_dir / f"{kind}-{store_dir.name}.log",
        cwd=REPO_ROOT,
    )
    server.start()
    return server


@contextlib.contextmanager
def js_server(kind: str, tmp_dir: pathlib.Path, store_name: str = "store") -> Iterator[ServerProcess]:
    server = start_js_server(kind, tmp_dir / store_name, tmp_dir)
    try:
        yield server
    except BaseException:
        print(f"--- {kind} log ---\n{server.log_tail()}")
        raise
    finally:
        server.stop()


_OPEN: list[Client] = []


def run(scenario: Callable[..., Awaitable[Any]], *args: Any, timeout_s: float = SCENARIO_TIMEOUT_S) -> Any:
    """Run an asyncio scenario with a deadline; close every connection it opened, even on failure
    (a leaked subscriber on a module-scoped server would disturb the next test)."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(scenario(*args), timeout_s)
        finally:
            while _OPEN:
                nc = _OPEN.pop()
                if not nc.is_closed:
                    await nc.close()

    return asyncio.run(bounded())


def close_after_scenario(nc: Client) -> None:
    """Have `run` close this connection when the scenario ends."""
    _OPEN.append(nc)


async def connect(url: str, **options: Any) -> Client:
    async def on_error(exc: Exception) -> None:
        pass

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, **options)
    close_after_scenario(nc)
    return nc


async def api(nc: Client, subject: str, body: Any = b"", timeout_s: float = 5.0) -> dict[str, Any]:
    """One raw $JS.API request; the decoded JSON response."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    msg = await nc.request(subject, body, timeout=timeout_s)
    return json.loads(msg.data)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll an async condition until true or the deadline (a condition wait, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.01
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
