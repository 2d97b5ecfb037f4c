"""Local clusters of `jetraft server -js --cluster` processes for the integration and compat tests.

`ClusterNode` is one server (client port, cluster port P and Raft port P+1, a store directory and
a log file); `running_cluster` starts every node with all route URLs, waits for the test's own
readiness condition, prints each node's log tail if anything failed and stops every process by
PID. `reserve_ports` picks cluster ports whose Raft port is free too; `until` polls a condition
against a deadline; `api` sends one JetStream API request.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, stable_ports

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ClusterNode:
    """One clustered JetStream server; `extra_args` are the test's own options (tags, -m, ...)."""

    def __init__(self, name: str, tmp: pathlib.Path, cluster_name: str, client_port: int, cluster_port: int,
                 extra_args: list[str] | None = None, config: pathlib.Path | None = None) -> None:
        self.name = name
        self.cluster_name = cluster_name
        self.client_port = client_port
        self.cluster_port = cluster_port
        self.store_dir = tmp / name
        self.log_path = tmp / f"{name}.log"
        self.extra_args = extra_args or []
        self.config = config
        self.proc: ServerProcess | None = None

    @property
    def route_url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    def start(self, routes: list[str]) -> None:
        args = ["-n", self.name, "-js", "-sd", str(self.store_dir), *self.extra_args,
                "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}", "--cluster_name", self.cluster_name,
                "--routes", ",".join(routes)]
        self.proc = ServerProcess(kind=ServerKind.JETRAFT, port=self.client_port, config=self.config,
                                  extra_args=args, log_path=self.log_path, cwd=REPO_ROOT)
        self.proc.start()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@contextmanager
def running_cluster(nodes: Iterable[ClusterNode], ready: Callable[[], object],
                    log_chars: int = 5000) -> Iterator[None]:
    """Start every node with every node's route URL, call `ready()`, and stop them all on exit."""
    nodes = list(nodes)
    routes = [n.route_url for n in nodes]
    try:
        for node in nodes:
            node.start(routes)
        ready()
        yield
    except BaseException:
        for node in nodes:
            print(f"--- {node.name} log ---\n{node.log_path.read_text(errors='replace')[-log_chars:]}")
        raise
    finally:
        for node in nodes:
            node.stop()


def reserve_ports(pairs: int, singles: int) -> tuple[list[int], list[int]]:
    """`pairs` ports P with P+1 also free (cluster port, Raft port) and `singles` more ports, all
    distinct and below the ephemeral range (see `cli.benchlib.launcher.stable_ports`), so no
    outgoing connection can take one before its server binds it."""
    return [stable_ports(2) for _ in range(pairs)], [stable_ports(1) for _ in range(singles)]


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float,
                interval_s: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        await asyncio.sleep(interval_s)  # polling interval of a condition wait
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def api(nc: Any, subject: str, body: bytes = b"", timeout_s: float = 2.0) -> dict[str, Any]:
    msg = await nc.request(subject, body, timeout=timeout_s)
    return json.loads(msg.data)
