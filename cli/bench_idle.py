"""`jetraft bench idle`: what many idle R3 streams cost, per node, in % of a core.

    jetraft bench idle --streams 1000 [--span 20] [--compare]

Starts a 3-node cluster (the same launcher as `jetraft bench js-pub --r3`), creates `--streams`
R3 file streams through one node (`--concurrency` creations in flight, with a progress bar),
waits until every stream reports a leader in STREAM.INFO, lets the cluster settle, then reads
each server process's CPU time (utime+stime from /proc/<pid>/stat) at the start and end of
`--span` seconds of doing nothing. The table shows % of one core per node (100% = one core
busy); `--compare` does the same with a 3-node nats-server cluster. Creation time is reported
too. Loopback only; every process started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.benchlib.launcher import ServerKind, ServerProcess, free_port

STREAM_PREFIX = "IDLE"
CREATE_RETRY_S = 60.0  # a cluster may still be electing its meta leader


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "(comm)": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:>6,.0f}/{task.total:,.0f}"), TimeElapsedColumn())


async def _create_one(js: Any, name: str, deadline: float) -> None:
    import nats

    while True:  # bounded by the deadline
        try:
            await js.add_stream(name=name, subjects=[f"idle.{name}.>"], storage="file", num_replicas=3)
            return
        except nats.js.errors.BadRequestError as exc:
            if getattr(exc, "err_code", 0) == 10058:  # already in use: a retried create that got through
                return
            if time.monotonic() > deadline:
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)  # retry interval while the cluster elects or catches up


async def create_streams(url: str, names: list[str], concurrency: int, progress: Progress, label: str) -> float:
    """Create the streams; seconds it took."""
    import nats

    nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=10)
    js = nc.jetstream(timeout=30)
    task = progress.add_task(f"{label}: create R3 streams", total=len(names))
    start = time.monotonic()
    deadline = start + CREATE_RETRY_S + len(names) * 2.0
    todo = list(names)

    async def worker() -> None:
        while todo:
            await _create_one(js, todo.pop(), deadline)
            progress.advance(task)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await nc.close()
    return time.monotonic() - start


async def wait_leaders(url: str, names: list[str], timeout_s: float, progress: Progress, label: str) -> float:
    """Poll STREAM.INFO until every stream names a leader; seconds it took."""
    import nats

    nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=10)
    js = nc.jetstream(timeout=10)
    task = progress.add_task(f"{label}: streams with a leader", total=len(names))
    start = time.monotonic()
    missing = list(names)
    while missing:  # bounded by the deadline
        if time.monotonic() - start > timeout_s:
            await nc.close()
            raise click.ClickException(f"{label}: {len(missing)} streams without a leader after {timeout_s}s")
        still = []
        for name in missing:
            try:
                info = await js.stream_info(name)
                leader = info.cluster.leader if info.cluster else None
            except Exception:
                leader = None
            if not leader:
                still.append(name)
        progress.update(task, completed=len(names) - len(still))
        missing = still
        if missing:
            await asyncio.sleep(0.5)  # polling interval of a condition wait
    await nc.close()
    return time.monotonic() - start


def start_cluster(kind: ServerKind, tmp: str, label: str, started: list[ServerProcess]) -> str:
    """Three routed nodes of `kind` with JetStream, fresh ports and data dirs; node 1's URL."""
    import pathlib

    route_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
    for i in range(3):
        data_dir = pathlib.Path(tmp, label, f"n{i}")
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["-n", f"{label}-{i}", "-js", "-sd", str(data_dir), "--cluster_name", label,
                "--cluster", f"nats://127.0.0.1:{route_ports[i]}", "--routes", routes]
        proc = ServerProcess(kind=kind, port=free_port(), extra_args=args,
                             log_path=pathlib.Path(tmp, f"{label}-{i}.log"))
        started.append(proc)
        proc.start(ready_timeout_s=30.0)
    return started[0].url


def sample_cpu(procs: list[ServerProcess], span_s: float) -> list[float]:
    """% of one core used by each process over `span_s` seconds of wall time."""
    pids = [p.proc.pid for p in procs if p.proc is not None]
    before = [cpu_seconds(pid) for pid in pids]
    wall0 = time.monotonic()
    time.sleep(span_s)  # the measurement window itself, not a synchronisation
    after = [cpu_seconds(pid) for pid in pids]
    wall = time.monotonic() - wall0
    return [100.0 * (b - a) / wall for a, b in zip(before, after, strict=True)]


def measure(kind: ServerKind, tmp: str, streams: int, concurrency: int, settle_s: float,
            span_s: float, leader_timeout_s: float, progress: Progress) -> dict[str, Any]:
    label = f"{kind.value}-idle"
    started: list[ServerProcess] = []
    try:
        url = start_cluster(kind, tmp, label, started)
        names = [f"{STREAM_PREFIX}{i:05d}" for i in range(streams)]
        create_s = asyncio.run(create_streams(url, names, concurrency, progress, kind.value))
        leaders_s = asyncio.run(wait_leaders(url, names, leader_timeout_s, progress, kind.value))
        progress.console.log(f"{kind.value}: settling {settle_s:.0f}s, then sampling CPU for {span_s:.0f}s")
        time.sleep(settle_s)  # let elections, catch-up and first flushes finish
        cpu = sample_cpu(started, span_s)
        return {"create_s": create_s, "leaders_s": leaders_s, "cpu_pct": cpu}
    finally:
        for proc in started:
            proc.stop()


def render(results: dict[str, dict[str, Any]], streams: int, span_s: float) -> Table:
    table = Table(title=f"bench idle: {streams:,} idle R3 file streams on 3 nodes, CPU over {span_s:.0f}s")
    table.add_column("server")
    for i in range(3):
        table.add_column(f"n{i + 1} %core", justify="right")
    table.add_column("max", justify="right")
    table.add_column("create s", justify="right")
    table.add_column("str/s", justify="right")
    table.add_column("leaders s", justify="right")
    for name, r in results.items():
        cpu = r["cpu_pct"]
        table.add_row(name, *(f"{c:.1f}" for c in cpu), f"{max(cpu):.1f}", f"{r['create_s']:.1f}",
                      f"{streams / r['create_s']:.0f}" if r["create_s"] else "-", f"{r['leaders_s']:.1f}")
    return table


@click.command("idle")
@click.option("--streams", default=1000, show_default=True, help="R3 file streams to create")
@click.option("--span", "span_s", default=20.0, show_default=True, help="seconds of CPU sampling")
@click.option("--settle", "settle_s", default=10.0, show_default=True,
              help="seconds to wait after all streams have leaders, before sampling")
@click.option("--concurrency", default=32, show_default=True, help="stream creations in flight")
@click.option("--leader-timeout", "leader_timeout_s", default=300.0, show_default=True)
@click.option("--server", "server_kind", type=click.Choice([k.value for k in ServerKind]), default="jetraft",
              show_default=True)
@click.option("--compare", is_flag=True, help="measure jetraft AND nats-server (3-node clusters each)")
@click.option("--json", "json_out", is_flag=True, help="also print the results as JSON")
def idle(streams: int, span_s: float, settle_s: float, concurrency: int, leader_timeout_s: float,
         server_kind: str, compare: bool, json_out: bool) -> None:
    """CPU (% of a core per node) of a 3-node cluster holding N idle R3 streams."""
    import json

    kinds = [ServerKind.JETRAFT, ServerKind.NATS_SERVER] if compare else [ServerKind(server_kind)]
    console = Console()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="jetraft-bench-idle-") as tmp, _progress() as progress:
        for kind in kinds:
            results[kind.value] = measure(kind, tmp, streams, concurrency, settle_s, span_s,
                                          leader_timeout_s, progress)
    console.print(render(results, streams, span_s))
    if json_out:
        console.print_json(json.dumps({"streams": streams, "span_s": span_s, "results": results}))
