"""`jetraft cluster up | status | down`: a local JetStream cluster, one process per node.

How it works: `up` plans N nodes (client port, cluster port P with the Raft port P+1 - see
meta/topology.py - and a data directory each under DIR), starts one detached `jetraft server -js
--cluster ... --routes <all nodes>` per node with its log in DIR/<node>/server.log, records every
PID in DIR/cluster.json right away, then shows progress until every node answers PING and the
meta group has a leader (asked through `$JS.API.INFO`). `status` reads DIR/cluster.json and
reports each node (process alive, port answering) and the meta leader. `up` on a directory
that already holds a stopped cluster restarts it with the recorded ports and names (a node's
Raft identity is its address), keeping all data. `down` stops exactly the
recorded PIDs (SIGTERM, SIGKILL after a grace period), after checking each PID still runs a
jetraft server (a recycled PID is left alone).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
import attrs
import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.benchlib.launcher import ping_once
from cli.benchlib.launcher import stable_ports as launcher_stable_ports

STATE_FILE = "cluster.json"
POLL_S = 0.1
console = Console()


@attrs.frozen
class NodeSpec:
    name: str
    host: str
    client_port: int
    cluster_port: int
    store_dir: str
    log_path: str
    pid: int = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


def stable_ports(count: int, rng: random.Random | None = None) -> int:
    """See `cli.benchlib.launcher.stable_ports` (ports below the ephemeral range)."""
    try:
        return launcher_stable_ports(count, rng)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


def plan_nodes(count: int, directory: Path, host: str, base_port: int | None) -> list[NodeSpec]:
    """Ports: from `base_port` (clients base+i, clusters base+100+2i) or free stable ones."""
    specs = []
    for i in range(count):
        name = f"n{i + 1}"
        client = base_port + i if base_port else stable_ports(1)
        cluster = base_port + 100 + 2 * i if base_port else stable_ports(2)  # + the Raft port
        node_dir = directory / name
        specs.append(NodeSpec(name, host, client, cluster, str(node_dir / "data"), str(node_dir / "server.log")))
    return specs


def node_argv(spec: NodeSpec, specs: list[NodeSpec], cluster_name: str) -> list[str]:
    routes = ",".join(s.route_url for s in specs)
    return [sys.executable, "-m", "cli.main", "server", "-p", str(spec.client_port), "-a", spec.host,
            "-n", spec.name, "-js", "-sd", spec.store_dir,
            "--cluster", f"nats://{spec.host}:{spec.cluster_port}", "--cluster_name", cluster_name,
            "--routes", routes]


def save_state(directory: Path, cluster_name: str, specs: list[NodeSpec]) -> None:
    body = {"cluster": cluster_name, "nodes": [attrs.asdict(s) for s in specs]}
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, directory / STATE_FILE)


def load_state(directory: Path) -> tuple[str, list[NodeSpec]]:
    path = directory / STATE_FILE
    if not path.exists():
        raise click.ClickException(f"no cluster recorded in {directory} ({STATE_FILE} missing)")
    body = json.loads(path.read_text())
    return body["cluster"], [NodeSpec(**n) for n in body["nodes"]]


def is_our_server(pid: int) -> bool:
    """Is `pid` alive and running `cli.main server` (not a recycled PID)?"""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"cli.main" in cmdline and b"server" in cmdline


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # only succeeds for our own children (zombies otherwise)
    except ChildProcessError:
        pass


async def meta_leader(urls: list[str], timeout_s: float = 1.0) -> str | None:
    import nats

    try:
        nc = await nats.connect(urls, connect_timeout=timeout_s, max_reconnect_attempts=0,
                                allow_reconnect=False)
    except Exception:  # noqa: BLE001 - nobody reachable
        return None
    try:
        msg = await nc.request("$JS.API.INFO", b"", timeout=timeout_s)
        return json.loads(msg.data).get("meta_cluster", {}).get("leader") or None
    except Exception:  # noqa: BLE001 - no meta leader answering yet
        return None
    finally:
        await nc.close()


@click.group("cluster")
def cluster() -> None:
    """Run a local JetRaft cluster (one process per node)."""


@cluster.command("up")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--dir", "directory", default="jetraft-cluster", show_default=True, type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", "base_port", type=int, default=None,
              help="First client port (clients PORT+i, cluster PORT+100+2i); default: free ports.")
@click.option("--name", "cluster_name", default="jetraft", show_default=True)
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait for a meta leader.")
def up(nodes: int, directory: str, host: str, base_port: int | None, cluster_name: str, timeout_s: float) -> None:
    """Start the cluster and wait until it has a meta leader."""
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    specs = plan_nodes(nodes, root, host, base_port)
    if (root / STATE_FILE).exists():
        cluster_name, specs = load_state(root)  # a restart: same ports = same Raft node ids
        if any(is_our_server(s.pid) for s in specs):
            raise click.ClickException(f"a cluster is already running from {root}; "
                                       f"`jetraft cluster down --dir {directory}`")
        console.print(f"restarting the {len(specs)} nodes recorded in {root / STATE_FILE}")
    started = []
    for spec in specs:
        Path(spec.store_dir).mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            proc = subprocess.Popen(
                node_argv(spec, specs, cluster_name), stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd())
        started.append(attrs.evolve(spec, pid=proc.pid))
        save_state(root, cluster_name, started + specs[len(started):])
    leader = _wait_ready(started, timeout_s)
    if leader is None:
        raise click.ClickException(f"no meta leader within {timeout_s}s; logs in {root}/*/server.log")
    for spec in started:
        console.print(f"  {spec.name}  {spec.url}  pid={spec.pid}  log={spec.log_path}")
    console.print(f"[green]cluster {cluster_name!r} up[/green]: meta leader {leader}; "
                  f"connect with {','.join(s.url for s in started)}")


def _wait_ready(specs: list[NodeSpec], timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks = {s.name: progress.add_task(f"{s.name} starting", total=1) for s in specs}
        pending = list(specs)
        while pending and time.monotonic() < deadline:  # bounded by the deadline
            for spec in list(pending):
                if ping_once(spec.client_port, timeout_s=0.5):
                    progress.update(tasks[spec.name], completed=1, description=f"{spec.name} ready {spec.url}")
                    pending.remove(spec)
            time.sleep(POLL_S)  # polling interval of a condition wait
        meta = progress.add_task("electing a meta leader", total=1)
        while time.monotonic() < deadline:
            leader = asyncio.run(meta_leader([s.url for s in specs]))
            if leader:
                progress.update(meta, completed=1)
                return leader
            time.sleep(POLL_S)  # polling interval of a condition wait
    return None


@cluster.command("status")
@click.option("--dir", "directory", default="jetraft-cluster", show_default=True, type=click.Path(file_okay=False))
def status(directory: str) -> None:
    """Show each node and the meta leader."""
    name, specs = load_state(Path(directory).resolve())
    table = Table(title=f"cluster {name}")
    for column in ("node", "url", "pid", "process", "port"):
        table.add_column(column)
    up_urls = []
    for spec in specs:
        alive = is_our_server(spec.pid)
        answering = alive and ping_once(spec.client_port, timeout_s=0.5)
        if answering:
            up_urls.append(spec.url)
        table.add_row(spec.name, spec.url, str(spec.pid), "running" if alive else "stopped",
                      "answering" if answering else "-")
    console.print(table)
    leader = asyncio.run(meta_leader(up_urls)) if up_urls else None
    console.print(f"meta leader: {leader or 'none'}")


@cluster.command("down")
@click.option("--dir", "directory", default="jetraft-cluster", show_default=True, type=click.Path(file_okay=False))
@click.option("--grace", "grace_s", default=10.0, show_default=True, help="Seconds before SIGKILL.")
def down(directory: str, grace_s: float) -> None:
    """Stop the recorded processes (by PID)."""
    _, specs = load_state(Path(directory).resolve())
    running = [s for s in specs if is_our_server(s.pid)]
    for spec in running:
        os.kill(spec.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_our_server(s.pid) for s in running):
        time.sleep(POLL_S)  # polling interval of a condition wait
    for spec in running:
        if is_our_server(spec.pid):
            os.kill(spec.pid, signal.SIGKILL)
            console.print(f"{spec.name}: killed (pid {spec.pid})")
        else:
            console.print(f"{spec.name}: stopped (pid {spec.pid})")
    if not running:
        console.print("nothing running")

