"""Differential: what a connected client is told (async INFO `connect_urls`) while servers join
and leave a cluster, for three `jetraft server`s and for three reference nats-servers.

A raw protocol-1 client stays on n1 (seedless) the whole time. n2 and n3 start with n1 as
their only seed (n2 <-> n3 only through gossip), then n3 and n2 stop again. After each step the
client's latest `connect_urls` (by server name) must settle to the same set for both
implementations, and both must announce every change with an async INFO (no reconnect). Every
wait polls a condition against a deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

from cli.benchlib.launcher import LOOPBACK, ServerKind, ServerProcess, ServerStartError, free_port, nats_server_binary
from tests.cluster_support import REPO_ROOT

CLUSTER = "info-diff"
DEADLINE_S = 15.0
SCENARIO_TIMEOUT_S = 90.0


class Node:
    def __init__(self, name: str, tmp: pathlib.Path, kind: ServerKind, seeds: list[str]) -> None:
        self.name = name
        self.client_port, self.cluster_port = free_port(), free_port()
        log = tmp / f"{kind.value}-{name}.log"
        if kind is ServerKind.NATS_SERVER:
            config = tmp / f"{name}.conf"
            listed = ", ".join(f'"{url}"' for url in seeds)
            config.write_text(f'server_name: "{name}"\ncluster {{\n  name: "{CLUSTER}"\n'
                              f'  listen: "{LOOPBACK}:{self.cluster_port}"\n  routes: [{listed}]\n}}\n')
            self.proc = ServerProcess(kind=kind, port=self.client_port, config=config, log_path=log, cwd=REPO_ROOT)
            return
        args = ["-n", name, "--cluster", f"nats://{LOOPBACK}:{self.cluster_port}", "--cluster_name", CLUSTER]
        if seeds:
            args += ["--routes", ",".join(seeds)]
        self.proc = ServerProcess(kind=kind, port=self.client_port, extra_args=args, log_path=log, cwd=REPO_ROOT)

    @property
    def route_url(self) -> str:
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    @property
    def host_port(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


class InfoWatcher:
    """A protocol-1 client: records every INFO's connect_urls, answers the server's PINGs."""

    def __init__(self) -> None:
        self.infos: list[list[str]] = []
        self.closed = False

    async def run(self, port: int, connected: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            first = await reader.readline()
            assert first.startswith(b"INFO "), first
            self.infos.append(json.loads(first[5:]).get("connect_urls") or [])
            writer.write(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
            await writer.drain()
            while line := await reader.readline():
                if line.startswith(b"INFO "):
                    self.infos.append(json.loads(line[5:]).get("connect_urls") or [])
                elif line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                    await writer.drain()
                elif line.startswith(b"PONG"):
                    connected.set()
        finally:
            self.closed = True
            writer.close()


async def settle(watcher: InfoWatcher, want: set[str], names: dict[str, str]) -> tuple[set[str], int]:
    """Wait until the latest INFO lists `want` (host:port); (names seen last, INFOs so far)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline and set(watcher.infos[-1]) != want and not watcher.closed:
        await asyncio.sleep(0.05)  # polling interval of a condition wait
    return {names.get(u, u) for u in watcher.infos[-1]}, len(watcher.infos)


async def observe(kind: ServerKind, tmp: pathlib.Path) -> list[Any]:
    n1 = Node("n1", tmp, kind, [])
    n2 = Node("n2", tmp, kind, [n1.route_url])
    n3 = Node("n3", tmp, kind, [n1.route_url])
    nodes = [n1, n2, n3]
    names = {n.host_port: n.name for n in nodes}
    watcher = InfoWatcher()
    connected = asyncio.Event()
    steps: list[Any] = []
    try:
        n1.proc.start()
        task = asyncio.create_task(watcher.run(n1.client_port, connected))
        await asyncio.wait_for(connected.wait(), DEADLINE_S)
        steps.append(("alone", {names.get(u, u) for u in watcher.infos[-1]}))
        for node, want in ((n2, [n1, n2]), (n3, [n1, n2, n3])):
            await asyncio.to_thread(node.proc.start)
            seen, count = await settle(watcher, {n.host_port for n in want}, names)
            steps.append((f"{node.name} joined", seen, count > 1))
        for node, want in ((n3, [n1, n2]), (n2, [n1])):
            before = len(watcher.infos)
            await asyncio.to_thread(node.proc.stop)
            seen, count = await settle(watcher, {n.host_port for n in want}, names)
            steps.append((f"{node.name} left", seen, count > before))
        steps.append(("still connected", not watcher.closed))
        task.cancel()
        return steps
    except BaseException:
        for node in nodes:
            print(f"--- {kind.value} {node.name} ---\n{node.proc.log_tail()}")
        raise
    finally:
        for node in nodes:
            node.proc.stop()


def test_connect_urls_on_join_and_leave_match_nats_server(tmp_path: pathlib.Path) -> None:
    try:
        nats_server_binary()
    except ServerStartError as exc:
        pytest.skip(str(exc))
    (tmp_path / "ref").mkdir()
    (tmp_path / "jr").mkdir()
    ref = asyncio.run(asyncio.wait_for(observe(ServerKind.NATS_SERVER, tmp_path / "ref"), SCENARIO_TIMEOUT_S))
    ours = asyncio.run(asyncio.wait_for(observe(ServerKind.JETRAFT, tmp_path / "jr"), SCENARIO_TIMEOUT_S))
    print("nats-server:", ref)
    print("jetraft:    ", ours)
    assert ours == ref
