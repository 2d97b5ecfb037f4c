"""`jetraft bench raft`: the Raft library benchmark (raft.bench) as a click command.

cli/bench.py registers it with `bench.add_command(raft)`; it can also run on its own.
"""

from __future__ import annotations

import click

from raft.bench import BenchConfig, run_and_format

_D = BenchConfig()


@click.command("raft")
@click.option("--duration", type=float, default=_D.duration_s, show_default=True,
              help="Seconds of proposing in the throughput run.")
@click.option("--inflight", type=int, default=_D.inflight, show_default=True,
              help="Proposals in flight at once.")
@click.option("--payload-bytes", type=int, default=_D.payload_bytes, show_default=True)
@click.option("--idle-groups", type=int, default=_D.idle_groups, show_default=True,
              help="Groups in the idle-CPU run.")
@click.option("--idle-seconds", type=float, default=_D.idle_s, show_default=True)
@click.option("--tick-ms", type=float, default=_D.tick_interval_s * 1000, show_default=True)
@click.option("--heartbeat-ticks", type=int, default=_D.heartbeat_ticks, show_default=True)
@click.option("--election-ticks", type=int, default=_D.election_ticks, show_default=True,
              help="Election timeout is random in [n, 2n) ticks.")
@click.option("--no-quiesce", is_flag=True, help="Idle groups keep heartbeating (no quiescence).")
@click.option("--only", type=click.Choice(["throughput", "idle"]), default=None,
              help="Run one measurement only.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def raft(
    duration: float,
    inflight: int,
    payload_bytes: int,
    idle_groups: int,
    idle_seconds: float,
    tick_ms: float,
    heartbeat_ticks: int,
    election_ticks: int,
    no_quiesce: bool,
    only: str | None,
    as_json: bool,
) -> None:
    """Three Raft hosts in one process over TCP loopback with SQLite (fsync on): commits/s,
    p50/p99 commit latency, and CPU use of many idle groups."""
    cfg = BenchConfig(
        duration_s=duration,
        inflight=inflight,
        payload_bytes=payload_bytes,
        idle_groups=idle_groups,
        idle_s=idle_seconds,
        tick_interval_s=tick_ms / 1000,
        heartbeat_ticks=heartbeat_ticks,
        election_ticks=election_ticks,
        quiesce=not no_quiesce,
    )
    which = (only,) if only else ("throughput", "idle")
    click.echo(run_and_format(cfg, which, as_json))
