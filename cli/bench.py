"""`jetraft bench`: throughput and latency load, in the spirit of `nats bench`.

    jetraft bench pub     --msgs 200000 --size 16            publish only
    jetraft bench sub     --msgs 200000 --subs 4             subscribers' receive rate (fan-out)
    jetraft bench pubsub  --msgs 200000 --subs 1             both sides
    jetraft bench req     --msgs 5000                        request/reply latency percentiles

Target: `--url nats://host:port` (an already running server), or `--server jetraft|nats-server`
(started here as a subprocess on a free loopback port and stopped afterwards), or `--compare`:
both servers started, the same load run against each, one table with both figures and the ratio
jetraft/nats-server. `--cluster` starts a 2-node cluster of each kind instead and puts publishers
on node 1 and subscribers on node 2, so every message crosses a route (`--sub-url` does the same
for servers you run yourself). `--runs K` repeats every measurement and reports medians; runs alternate
between the servers so background noise hits both alike.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.console import Console

from cli.benchlib.launcher import ServerKind, ServerProcess, ServerStartError, free_port
from cli.benchlib.report import medians, render_table
from cli.benchlib.runner import BenchError, Load, Mode, Target, make_progress, run_once


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--msgs", default=100_000, show_default=True, help="messages (or requests) per run"),
        click.option("--size", "size_bytes", default=16, show_default=True, help="payload size in bytes"),
        click.option("--subs", default=1, show_default=True, help="number of subscribers (sub, pubsub)"),
        click.option("--pubs", default=1, show_default=True, help="number of publisher processes (pub, sub, pubsub)"),
        click.option("--subject", default="bench.subject", show_default=True),
        click.option(
            "--subjects", default=1, show_default=True,
            help="publish round-robin over N subjects (<subject>.0..N-1; subscribers use <subject>.>)",
        ),
        click.option("--url", default=None, help="benchmark an already running server"),
        click.option(
            "--server", "server_kind", type=click.Choice([k.value for k in ServerKind]), default="jetraft",
            show_default=True, help="server to start when no --url is given",
        ),
        click.option("--compare", is_flag=True, help="start jetraft AND nats-server; report both and the ratio"),
        click.option(
            "--cluster", is_flag=True,
            help="start 2-node clusters instead: publishers/requesters on node 1, subscribers/responders on node 2",
        ),
        click.option("--sub-url", default=None, help="with --url: subscribers/responders connect here instead"),
        click.option("--runs", default=1, show_default=True, help="repeat and report medians"),
        click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="per-run deadline (s)"),
        click.option("--json", "json_out", is_flag=True, help="also print the medians as JSON"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# Benchmarks owned by other areas, imported only when used: name -> "module:attribute".
EXTERNAL_COMMANDS: dict[str, str] = {
    "raft": "cli.bench_raft:raft",
    "js-pub": "cli.bench_js:js_pub",
    "js-consume": "cli.bench_js:js_consume",
    "kv": "cli.bench_js:kv",
    "idle": "cli.bench_idle:idle",
}


class BenchGroup(click.Group):
    """Own commands plus EXTERNAL_COMMANDS, loaded lazily (a missing module hides its command)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(name for name in EXTERNAL_COMMANDS if self.get_command(ctx, name) is not None)
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        own = super().get_command(ctx, name)
        if own is not None or name not in EXTERNAL_COMMANDS:
            return own
        module_name, attr = EXTERNAL_COMMANDS[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr, None)


@click.group(cls=BenchGroup)
def bench() -> None:
    """Throughput and latency benchmarks (raw-socket publishers/subscribers, nats-py requests)."""


@bench.command()
@common_options
def pub(**kwargs: Any) -> None:
    """Publish-only throughput."""
    run_bench(Mode.PUB, **kwargs)


@bench.command()
@common_options
def sub(**kwargs: Any) -> None:
    """Subscriber receive rate (fan-out to --subs subscribers, fed by --pubs publishers)."""
    run_bench(Mode.SUB, **kwargs)


@bench.command()
@common_options
def pubsub(**kwargs: Any) -> None:
    """Publishers and --subs subscribers at once; both sides' rates."""
    run_bench(Mode.PUBSUB, **kwargs)


@bench.command()
@common_options
def req(**kwargs: Any) -> None:
    """Sequential request/reply through the server; latency p50/p90/p99 (nats-py on both ends)."""
    run_bench(Mode.REQ, **kwargs)


@contextlib.contextmanager
def targets(
    url: str | None, sub_url: str | None, server_kind: str, compare: bool, cluster: bool
) -> Iterator[dict[str, Target]]:
    """Name -> Target of each server (or 2-node cluster) to benchmark; what is started here is
    stopped on exit."""
    if url and not compare:
        yield {url: Target(pub_url=url, sub_url=sub_url or url)}
        return
    kinds = [ServerKind.JETRAFT, ServerKind.NATS_SERVER] if compare else [ServerKind(server_kind)]
    started: list[ServerProcess] = []
    found: dict[str, Target] = {}
    log_dir = tempfile.TemporaryDirectory(prefix="jetraft-bench-")  # a failed start quotes its log tail
    try:
        for kind in kinds:
            nodes = cluster_nodes(kind) if cluster else [ServerProcess(kind=kind, port=free_port())]
            for node in nodes:
                node.log_path = pathlib.Path(log_dir.name) / f"{kind.value}-{node.port}.log"
                started.append(node)
                try:
                    node.start()
                except ServerStartError as exc:
                    raise click.ClickException(f"could not start {kind.value}: {exc}") from exc
            found[kind.value] = Target(pub_url=nodes[0].url, sub_url=nodes[-1].url)
        yield found
    finally:
        for proc in started:
            proc.stop()
        log_dir.cleanup()


def cluster_nodes(kind: ServerKind) -> list[ServerProcess]:
    """Two routed nodes (the second dials the first); publishers use node 1, subscribers node 2."""
    first_route, second_route = free_port(), free_port()
    common = ["--cluster_name", "bench"]
    first = ServerProcess(kind=kind, port=free_port(), extra_args=["--cluster", f"nats://127.0.0.1:{first_route}", *common])
    second = ServerProcess(
        kind=kind, port=free_port(),
        extra_args=["--cluster", f"nats://127.0.0.1:{second_route}", "--routes", f"nats://127.0.0.1:{first_route}", *common],
    )
    return [first, second]


def run_bench(
    mode: Mode, *, msgs: int, size_bytes: int, subs: int, pubs: int, subject: str, subjects: int, url: str | None,
    sub_url: str | None, server_kind: str, compare: bool, cluster: bool, runs: int, timeout_s: float, json_out: bool,
) -> dict[str, dict[str, float]]:
    console = Console()
    load = Load(
        mode=mode, msgs=msgs, size_bytes=size_bytes, subs=subs, pubs=max(1, pubs), subject=subject, subjects=subjects,
        timeout_s=timeout_s,
    )
    per_server: dict[str, list[dict[str, float]]] = {}
    with targets(url, sub_url, server_kind, compare, cluster) as urls:
        with make_progress() as progress:
            for run_no in range(1, runs + 1):
                for name, target in urls.items():
                    try:
                        metrics = run_once(target, load, f"{name} run {run_no}/{runs}", progress)
                    except BenchError as exc:
                        raise click.ClickException(f"{name}: {exc}") from exc
                    per_server.setdefault(name, []).append(metrics)
    results = {name: medians(values) for name, values in per_server.items()}
    if mode is Mode.SUB:  # the subscriber side only; pubsub shows both
        results = {name: {k: v for k, v in m.items() if not k.startswith("pub_")} for name, m in results.items()}
    title = f"bench {mode.value}: {msgs:,} msgs x {size_bytes} B"
    title += f", {subs} subs" if mode in (Mode.SUB, Mode.PUBSUB) else ""
    title += f", {subjects} subjects" if subjects > 1 else ""
    title += f", {pubs} pubs" if pubs > 1 and mode is not Mode.REQ else ""
    title += ", across a route (2-node cluster)" if cluster or (sub_url and sub_url != url) else ""
    console.print(render_table(title, results, runs))
    if subjects <= 1 and mode is not Mode.REQ:
        console.print(
            "[dim]note: one subject means byte-identical consecutive PUB frames, which JetRaft parses "
            "and fans out as runs; --subjects N gives varied traffic[/dim]"
        )
    if json_out:
        params = {"mode": mode.value, "msgs": msgs, "size_bytes": size_bytes, "subs": subs, "pubs": pubs, "subjects": subjects}
        console.print_json(json.dumps({**params, "runs": runs, "results": results}))
    return results
