"""`jetraft jepsen`: run the fault-injection harness, or rebuild a run's report.

`run` starts a cluster of the chosen target, runs a workload under the chosen nemesis families
for --time seconds with a seeded schedule, and writes history, verdict, plots and an HTML index
into --dir (default ./jepsen-runs/<target>-<workload>-<seed>). The exit status is 0 when the
verdict is valid, 1 when anomalies were found, 2 when the result is unknown.
"""

from __future__ import annotations

import asyncio
import pathlib
import random

import click


@click.group()
def jepsen() -> None:
    """Black-box fault-injection tests against a cluster of processes."""


@jepsen.command()
@click.option("--target", type=click.Choice(["jetraft", "nats-server"]), default="jetraft", show_default=True)
@click.option("--nodes", type=int, default=3, show_default=True)
@click.option("--workload", type=click.Choice(["queue", "kv", "set"]), default="queue", show_default=True)
@click.option("--nemesis", default="kill,partition", show_default=True,
              help="comma-separated: kill, pause, partition, latency, stepdown, wipe, scale, move (or 'none')")  # fmt: skip
@click.option("--time", "time_s", type=float, default=60.0, show_default=True, help="workload seconds")
@click.option("--seed", type=int, default=None, help="schedule seed (random if omitted, and printed)")
@click.option("--concurrency", type=int, default=6, show_default=True)
@click.option("--rate", "rate_hz", type=float, default=100.0, show_default=True, help="total ops per second")
@click.option("--replicas", type=int, default=3, show_default=True, help="stream / bucket replicas")
@click.option("--dir", "run_dir", type=click.Path(path_type=pathlib.Path), default=None)
def run(target, nodes, workload, nemesis, time_s, seed, concurrency, rate_hz, replicas, run_dir) -> None:
    """Run a workload against a cluster under faults and check the history."""
    from rich.console import Console

    from jepsen.db import Target
    from jepsen.runner import RunConfig
    from jepsen.runner import run as run_async

    from jepsen.schedule import FAMILIES

    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    families = tuple(f.strip() for f in nemesis.split(",") if f.strip() and f.strip() != "none")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {', '.join(FAMILIES)} or none", param_hint="--nemesis")
    if nodes < 3 or time_s <= 0:
        raise click.BadParameter("need --nodes >= 3 and --time > 0")
    run_dir = run_dir or pathlib.Path("jepsen-runs") / f"{target}-{workload}-{seed}"
    console = Console()
    console.print(f"jepsen: target={target} workload={workload} nemesis={','.join(families) or 'none'} "
                  f"time={time_s}s seed={seed} dir={run_dir}")  # fmt: skip
    cfg = RunConfig(Target(target), nodes, workload, families, time_s, seed, run_dir.resolve(), concurrency, rate_hz,
                    replicas)  # fmt: skip
    verdict = asyncio.run(run_async(cfg, console))
    raise SystemExit({True: 0, False: 1}.get(verdict["valid"], 2))


@jepsen.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
def report(run_dir: pathlib.Path) -> None:
    """Re-check a saved run and rewrite its report files."""
    from rich.console import Console

    from jepsen.report import rebuild

    verdict = rebuild(run_dir, Console())
    raise SystemExit({True: 0, False: 1}.get(verdict["valid"], 2))
