"""`jetraft bench js-pub | js-consume | kv`: JetStream benchmarks, optionally compared against
the reference `nats-server -js`.

    jetraft bench js-pub     --msgs 50000 --window 256            acked publishes, 16 B, at most
                                                                  256 unacked per client
    jetraft bench js-pub     --one-at-a-time --msgs 2000           publish, wait for the ack, repeat
                                                                  (latency percentiles)
    jetraft bench js-pub     --r3 --compare                       R3 stream on 3-node clusters:
                                                                  jetraft vs nats-server with
                                                                  sync_interval: always and default
    jetraft bench js-consume --msgs 50000 --mode pull|push          pull batch 500 + ack, or ordered push
    jetraft bench kv         --ops 2000                             sequential put/get latency (nats-py)

`--client raw` (the default for js-pub and js-consume) uses the raw-socket load generator
(cli/benchlib/jsload.py: pre-built pipelined PUB frames, every PubAck checked, distinct stored
sequences), so the figures measure the server; `--client nats-py` is the library path (nats-py
tops out near 31k acked msgs/s here, below what nats-server does). A run with any publish error
is reported as FAILED, not as a rate. When the bench starts the servers itself, each server
process's CPU seconds per 1,000 messages over the measured span (/proc/<pid>/stat utime+stime;
for --r3 the sum over the 3 nodes and the busiest node; the system-time part, where fsync
shows up, as its own row) is an extra row: it holds up on a loaded machine, where wall-clock
rates do not. With the raw client, `client_cpu_s_per_1k_msgs` is the
load generator's own CPU (all publishers), to tell whether the client was the limit.

Target: `--url` (a running server with JetStream), or `--server jetraft|nats-server` started
here with `-js -sd <temp dir>`, or `--compare` (both, one table, ratio jetraft/nats-server).
Publishers are separate processes (`--clients`), each with up to `--window` unacknowledged
publishes, so the server's group commit sees concurrent load; a run's rate is all messages over
the span from the first client start to the last ack. Every run uses a fresh stream. Every
table is followed by each side's fsync setting (when an ack is sent relative to the fsync).

This module is a click group of its own (`bench_js`); the bench owner can register its commands
on `jetraft bench` with `register(bench_group)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table

from cli.benchlib import jsrun
from cli.benchlib.jsload import CPU_TICKS_KEY, CpuMeter, LoadError
from cli.benchlib.jsproto import ProtocolError
from cli.benchlib.launcher import ServerKind, ServerProcess, free_port

BENCH_STREAM = "BENCHJS"


# -- servers ------------------------------------------------------------------------------------------
@attrs.frozen
class JsTarget:
    """Where the load connects, and the server processes whose CPU time is measured (none for a
    server given by --url)."""

    url: str
    pids: tuple[int, ...] = ()


def _pids(procs: list[ServerProcess]) -> tuple[int, ...]:
    return tuple(p.proc.pid for p in procs if p.proc is not None)


@contextlib.contextmanager
def js_targets(url: str | None, server_kind: str, compare: bool) -> Iterator[dict[str, JsTarget]]:
    if url and not compare:
        yield {url: JsTarget(url)}
        return
    kinds = [ServerKind.JETRAFT, ServerKind.NATS_SERVER] if compare else [ServerKind(server_kind)]
    started: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="jetraft-bench-") as tmp:
        try:
            for kind in kinds:
                proc = ServerProcess(kind=kind, port=free_port(), extra_args=["-js", "-sd", f"{tmp}/{kind.value}"])
                started.append(proc)
                proc.start()
            yield {proc.kind.value: JsTarget(proc.url, _pids([proc])) for proc in started}
        finally:
            for proc in started:
                proc.stop()


FSYNC_SETTINGS = {
    "jetraft": "ack after fsync (SQLite WAL, synchronous=FULL, group commit)",
    "nats-server": "default: sync_interval 2m, ack before fsync",
    "jetraft-r3": "ack after commit: Raft log fsynced on a quorum (group commit)",
    "nats-server-r3-always": "sync_interval: always (fsync per Raft append)",
    "nats-server-r3-default": "default: sync_interval 2m, ack before fsync",
}


def _node_args(name: str, route_ports: list[int], index: int, data_dir: str) -> list[str]:
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
    return ["-n", name, "-js", "-sd", data_dir, "--cluster_name", "benchjs",
            "--cluster", f"nats://127.0.0.1:{route_ports[index]}", "--routes", routes]


def _start_cluster(kind: ServerKind, tmp: str, label: str, sync_always: bool,
                   started: list[ServerProcess]) -> JsTarget:
    """Three nodes of `kind` on fresh ports; the load goes to node 1, CPU is read on all three."""
    import pathlib

    route_ports = [free_port() for _ in range(3)]
    for i in range(3):
        data_dir = f"{tmp}/{label}/n{i}"
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
        config = None
        if sync_always:
            config = pathlib.Path(data_dir) / "js.conf"
            config.write_text(f'jetstream {{ store_dir: "{data_dir}", sync_interval: always }}\n')
        args = _node_args(f"{label}-{i}", route_ports, i, data_dir)
        if config is not None:  # JetStream and its store_dir come from the config file
            args = [a for a in args if a not in ("-js", "-sd", data_dir)]
        proc = ServerProcess(kind=kind, port=free_port(), config=config, extra_args=args)
        started.append(proc)
        proc.start(ready_timeout_s=30.0)
    return JsTarget(started[-3].url, _pids(started[-3:]))


@contextlib.contextmanager
def r3_targets(server_kind: str, compare: bool) -> Iterator[dict[str, JsTarget]]:
    """3-node clusters: jetraft, and nats-server with `sync_interval: always` and default."""
    plan = [("jetraft-r3", ServerKind.JETRAFT, False), ("nats-server-r3-always", ServerKind.NATS_SERVER, True),
            ("nats-server-r3-default", ServerKind.NATS_SERVER, False)]
    if not compare:
        plan = [p for p in plan if p[1] is ServerKind(server_kind)]
    started: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="jetraft-bench-r3-") as tmp:
        try:
            yield {label: _start_cluster(kind, tmp, label, always, started) for label, kind, always in plan}
        finally:
            for proc in started:
                proc.stop()


# -- workloads (run in client processes) -----------------------------------------------------------
async def _reset_stream(url: str, storage: str, replicas: int = 1) -> None:
    """A fresh stream; a cluster may still be electing its meta leader, so creation is retried
    until a deadline."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    deadline = time.monotonic() + 60
    while True:  # bounded by the deadline
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(BENCH_STREAM)
            await js.add_stream(name=BENCH_STREAM, subjects=["benchjs.>"], storage=storage,
                                num_replicas=replicas)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)  # retry interval while a cluster elects its leaders
    await nc.close()


async def _publisher_sync(url: str, msgs: int, size_bytes: int, meter: CpuMeter) -> dict[str, float]:
    """One at a time: publish, wait for the PubAck, repeat. Latency percentiles."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    payload = b"x" * size_bytes
    for _ in range(min(50, msgs)):  # warm-up (stream leader elected, connections up)
        await js.publish("benchjs.sync", payload)
    lat = []
    meter.start()
    start = time.perf_counter()
    for _ in range(msgs):
        t = time.perf_counter()
        await js.publish("benchjs.sync", payload)
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    meter.stop()
    await nc.close()
    lat.sort()
    return {"pub_msgs_per_s": msgs / elapsed, "pub_p50_us": _pct(lat, 0.5), "pub_p90_us": _pct(lat, 0.9),
            "pub_p99_us": _pct(lat, 0.99)}


async def _publisher(url: str, msgs: int, size_bytes: int, window: int, client: int) -> tuple[int, float, float]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=window)
    payload = b"x" * size_bytes
    start = time.perf_counter()
    for _ in range(msgs):
        await js.publish_async(f"benchjs.{client}", payload)
    await asyncio.wait_for(js.publish_async_completed(), 120)
    end = time.perf_counter()
    await nc.close()
    return msgs, start, end


def _publisher_proc(args: tuple[str, int, int, int, int], out: Any) -> None:
    out.put(asyncio.run(_publisher(*args)))


def run_js_pub(target: JsTarget, msgs: int, size_bytes: int, clients: int, window: int, storage: str,
               one_at_a_time: bool = False, replicas: int = 1, client: str = "raw") -> dict[str, float]:
    if client == "raw":
        return jsrun.run_pub(target.url, list(target.pids), msgs, size_bytes, clients, window, storage,
                             one_at_a_time, replicas)
    url = target.url
    meter = CpuMeter(list(target.pids))
    asyncio.run(_reset_stream(url, storage, replicas))
    if one_at_a_time:
        return {**asyncio.run(_publisher_sync(url, msgs, size_bytes, meter)), **meter.metrics(msgs)}
    meter.start()  # includes the publishers' start-up (nats-py path)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    share = [msgs // clients + (1 if i < msgs % clients else 0) for i in range(clients)]
    procs = [ctx.Process(target=_publisher_proc, args=((url, share[i], size_bytes, window, i), out))
             for i in range(clients)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=300) for _ in procs]
    meter.stop()
    for p in procs:
        p.join(timeout=30)
    span_s = max(r[2] for r in reports) - min(r[1] for r in reports)
    rate = sum(r[0] for r in reports) / max(span_s, 1e-9)
    return {"pub_msgs_per_s": rate, "pub_mb_per_s": rate * size_bytes / 1e6, **meter.metrics(msgs)}


async def _consume(url: str, msgs: int, size_bytes: int, mode: str, meter: CpuMeter,
                   batch_size: int = 500) -> dict[str, float]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    payload = b"x" * size_bytes
    for _ in range(msgs):
        await js.publish_async("benchjs.c", payload)
    await js.publish_async_completed()
    meter.start()
    start = time.perf_counter()
    got = 0
    if mode == "pull":
        psub = await js.pull_subscribe("benchjs.>", durable="bench")
        while got < msgs:
            batch = await psub.fetch(min(batch_size, msgs - got), timeout=10)
            for m in batch:
                await m.ack()
            got += len(batch)
    else:
        sub = await js.subscribe("benchjs.>", ordered_consumer=True)
        for _ in range(msgs):
            await sub.next_msg(timeout=10)
            got += 1
    elapsed = time.perf_counter() - start
    meter.stop()
    await nc.close()
    return {"consume_msgs_per_s": got / elapsed, "consume_mb_per_s": got * size_bytes / elapsed / 1e6}


def run_js_consume(target: JsTarget, msgs: int, size_bytes: int, mode: str, storage: str,
                   client: str = "raw", batch: int = 500) -> dict[str, float]:
    if client == "raw":
        if mode != "pull":
            raise click.UsageError("--client raw consumes with a pull consumer only (use --client nats-py for push)")
        return jsrun.run_consume(target.url, list(target.pids), msgs, size_bytes, storage, batch)
    meter = CpuMeter(list(target.pids))
    asyncio.run(_reset_stream(target.url, storage))
    return {**asyncio.run(_consume(target.url, msgs, size_bytes, mode, meter, batch)), **meter.metrics(msgs)}


async def _kv(url: str, ops: int, size_bytes: int) -> dict[str, float]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_key_value("BENCHKV")
    kv = await js.create_key_value(bucket="BENCHKV", history=1)
    value = b"v" * size_bytes
    puts, gets = [], []
    for i in range(ops):
        t = time.perf_counter()
        await kv.put(f"k{i % 100}", value)
        puts.append(time.perf_counter() - t)
        t = time.perf_counter()
        await kv.get(f"k{i % 100}")
        gets.append(time.perf_counter() - t)
    await nc.close()
    puts.sort()
    gets.sort()
    return {
        "kv_put_per_s": ops / sum(puts), "kv_put_p50_us": _pct(puts, 0.5), "kv_put_p99_us": _pct(puts, 0.99),
        "kv_get_per_s": ops / sum(gets), "kv_get_p50_us": _pct(gets, 0.5), "kv_get_p99_us": _pct(gets, 0.99),
    }


def _pct(sorted_s: list[float], fraction: float) -> float:
    return sorted_s[min(int(fraction * len(sorted_s)), len(sorted_s) - 1)] * 1e6


# -- reporting ------------------------------------------------------------------------------------
LOWER_IS_BETTER = ("_us",)


def table(title: str, results: dict[str, dict[str, float]], runs: int) -> Table:
    names = list(results)
    out = Table(title=f"{title} (median of {runs})" if runs > 1 else title)
    out.add_column("metric")
    for name in names:
        out.add_column(name, justify="right")
    ours = next((n for n in names if n.startswith("jetraft")), None)
    others = [n for n in names if ours is not None and n != ours]
    for other in others:
        out.add_column(f"{ours} / {other}", justify="right")
    metrics = sorted({k for r in results.values() for k in r if not k.startswith("_")})
    for metric in metrics:
        row = [metric] + [format_value(results[n].get(metric)) for n in names]
        for other in others:
            a, b = results[ours].get(metric), results[other].get(metric)  # type: ignore[index]
            row.append(f"{a / b:.2f}x" if a and b else "-")
        out.add_row(*row)
    return out


def format_value(value: float | None) -> str:
    """'-' for a missing value (a failed server); small values (CPU s per 1k msgs) keep 3 digits."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"


def fsync_notes(names: list[str]) -> str:
    return "\n".join(f"  {n}: {FSYNC_SETTINGS[n]}" for n in names if n in FSYNC_SETTINGS)


CPU_TICKS_ENOUGH = 20
RUN_FAILURES = (jsrun.RunFailed, LoadError, ProtocolError, OSError)  # OSError: a server went away


def run_all(title: str, fn: Any, url: str | None, server_kind: str, compare: bool, runs: int,
            r3: bool = False, **params: Any) -> dict[str, dict[str, float]]:
    """Run `fn` `runs` times per server; medians per server. A server with a failed run (publish
    errors, missing acks) shows no figures and a FAILED line; the command then exits 1."""
    per_server: dict[str, list[dict[str, float]]] = {}
    failures: dict[str, str] = {}
    load_before = os.getloadavg()[0]
    targets = r3_targets(server_kind, compare) if r3 and not url else js_targets(url, server_kind, compare)
    with targets as by_name:
        for _ in range(runs):
            for name, target in by_name.items():  # alternate servers so noise hits both alike
                per_server.setdefault(name, [])
                if name in failures:
                    continue
                try:
                    per_server[name].append(fn(target, **params))
                except RUN_FAILURES as exc:
                    failures[name] = f"{type(exc).__name__}: {exc}"
    results = {n: ({} if n in failures else {k: statistics.median(r[k] for r in rs) for k in rs[0]})
               for n, rs in per_server.items()}
    console = Console(width=max(Console().width, 150))
    console.print(table(title, results, runs))
    for name, reason in failures.items():
        console.print(f"FAILED {name}: {reason}", highlight=False, markup=False)
    console.print("fsync settings:\n" + fsync_notes(list(results)), highlight=False)
    coarse = [n for n, r in results.items() if r.get(CPU_TICKS_KEY, CPU_TICKS_ENOUGH) < CPU_TICKS_ENOUGH]
    if coarse:
        console.print(f"CPU per 1k msgs is coarse (fewer than {CPU_TICKS_ENOUGH} clock ticks measured) for "
                      f"{', '.join(coarse)}: use more --msgs", highlight=False)
    console.print(f"1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
                  f"({os.cpu_count()} CPUs); server_cpu_s_per_1k_msgs is the load-robust figure", highlight=False)
    if failures:
        raise SystemExit(1)
    return results


# -- commands -------------------------------------------------------------------------------------
def target_options(func: Any) -> Any:
    for option in reversed([
        click.option("--url", default=None, help="benchmark an already running server (JetStream on)"),
        click.option("--server", "server_kind", type=click.Choice([k.value for k in ServerKind]),
                     default="jetraft", show_default=True),
        click.option("--compare", is_flag=True, help="start jetraft AND nats-server -js; report both"),
        click.option("--runs", default=1, show_default=True, help="repeat and report medians"),
    ]):
        func = option(func)
    return func


CLIENT_OPTION = click.option(
    "--client", type=click.Choice(["raw", "nats-py"]), default="raw", show_default=True,
    help="raw: the raw-socket load generator (measures the server); nats-py: the library")


@click.command("js-pub")
@target_options
@CLIENT_OPTION
@click.option("--msgs", default=50_000, show_default=True)
@click.option("--size", "size_bytes", default=16, show_default=True)
@click.option("--clients", default=1, show_default=True, help="publisher processes")
@click.option("--window", default=256, show_default=True, help="unacked publishes per client")
@click.option("--storage", type=click.Choice(["file", "memory"]), default="file", show_default=True)
@click.option("--one-at-a-time", is_flag=True, help="one client: publish, await the ack, repeat (latency)")
@click.option("--r3", is_flag=True, help="R3 stream on 3-node clusters (with --compare: jetraft, "
              "nats-server sync_interval: always, nats-server default)")
def js_pub(url: str | None, server_kind: str, compare: bool, runs: int, r3: bool, **params: Any) -> None:
    """Acknowledged JetStream publishes per second (every ack after a durable commit)."""
    if params["one_at_a_time"]:
        title = f"js-pub one at a time: {params['msgs']:,} msgs x {params['size_bytes']} B"
    else:
        title = (f"js-pub: {params['msgs']:,} msgs x {params['size_bytes']} B, {params['clients']} clients, "
                 f"{params['window']} in flight each")
    title += ", R3 (3-node clusters)" if r3 else ""
    title += f", client {params['client']}"
    run_all(title, run_js_pub, url, server_kind, compare, runs, r3=r3, replicas=3 if r3 else 1, **params)


@click.command("js-consume")
@target_options
@CLIENT_OPTION
@click.option("--msgs", default=20_000, show_default=True)
@click.option("--size", "size_bytes", default=16, show_default=True)
@click.option("--mode", type=click.Choice(["pull", "push"]), default="pull", show_default=True)
@click.option("--batch", default=500, show_default=True, help="pull: messages per MSG.NEXT request")
@click.option("--storage", type=click.Choice(["file", "memory"]), default="file", show_default=True)
def js_consume(url: str | None, server_kind: str, compare: bool, runs: int, **params: Any) -> None:
    """Consume a pre-filled stream: pull batch 500 + ack each, or (nats-py) an ordered push consumer."""
    if params["client"] == "raw" and params["mode"] != "pull":
        raise click.UsageError("--client raw consumes with a pull consumer only (use --client nats-py for push)")
    title = (f"js-consume ({params['mode']}): {params['msgs']:,} msgs x {params['size_bytes']} B, "
             f"client {params['client']}" + (f", batch {params['batch']}" if params["mode"] == "pull" else ""))
    run_all(title, run_js_consume, url, server_kind, compare, runs, **params)


@click.command("kv")
@target_options
@click.option("--ops", default=2000, show_default=True)
@click.option("--size", "size_bytes", default=64, show_default=True)
def kv(url: str | None, server_kind: str, compare: bool, runs: int, **params: Any) -> None:
    """Sequential KV put then get (latency percentiles, one client)."""
    title = f"kv: {params['ops']:,} put+get, {params['size_bytes']} B values"
    run_all(title, lambda t, **p: asyncio.run(_kv(t.url, **p)), url, server_kind, compare, runs, **params)


COMMANDS = [js_pub, js_consume, kv]


def register(group: click.Group) -> None:
    """Add js-pub, js-consume and kv to another click group (e.g. `jetraft bench`)."""
    for command in COMMANDS:
        group.add_command(command)


@click.group("bench-js")
def bench_js() -> None:
    """JetStream benchmarks (raw-socket load generator or nats-py)."""


register(bench_js)
