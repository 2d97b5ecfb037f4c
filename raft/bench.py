"""Raft benchmark: `python -m raft.bench` (or `jetraft bench raft`).

Two measurements, each on three RaftHosts in ONE process talking TCP over loopback, each host
with its own SQLite LogStore (WAL, synchronous=FULL: every acknowledged entry is fsynced on a
quorum) in a temporary directory:

1. throughput: one group; `inflight` tasks each propose `payload_bytes` entries back to back on
   the leader for `duration_s`. Reports commits/s and p50/p99 commit latency (propose call to
   committed-and-applied on the leader).
2. idle: `idle_groups` groups on the same three hosts (quiescing unless `--no-quiesce`), all
   elected and then left idle for `idle_s`. Reports CPU use as process CPU seconds per wall second (time.process_time), for
   the three hosts together, so ~1.0 means one core busy.

Numbers are for the whole process; on a shared machine they vary with load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator

import attrs
import structlog
import trio

from raft.config import NodeConfig, Role
from raft.driver import NotLeader, RaftHost
from raft.storage import SqliteLogStore
from raft.transport import TcpTransport
from raft.types import Entry, Membership

NODES = ("b1", "b2", "b3")


@attrs.frozen
class BenchConfig:
    duration_s: float = 10.0
    inflight: int = 256
    payload_bytes: int = 100
    idle_groups: int = 1000
    idle_s: float = 10.0
    # The timing of `jetraft server` stream groups (jetstream/cluster_stream.py): heartbeat every
    # 400 ms, election timeout random in [1.2 s, 2.4 s).
    tick_interval_s: float = 0.1
    election_ticks: int = 12
    heartbeat_ticks: int = 4
    quiesce: bool = True  # idle groups go quiet (raft/core.py); the hosts watch peer liveness


@attrs.frozen
class ThroughputResult:
    commits: int
    duration_s: float
    commits_per_s: float
    p50_ms: float
    p99_ms: float
    persist_batches: int


@attrs.frozen
class IdleResult:
    groups: int
    elect_s: float
    measure_s: float
    cpu_s_per_wall_s: float
    messages_sent: int
    ticks_kept_ratio: float  # ticks run / ticks due: below ~0.95 the hosts could not keep up
    quiesced_groups: int  # group replicas (of 3 x groups) quiet at the end of the run


def _apply(entry: Entry) -> None:
    return None


@contextlib.asynccontextmanager
async def three_hosts(
    directory: pathlib.Path, cfg: BenchConfig, groups: list[str]
) -> AsyncIterator[list[RaftHost]]:
    """Three hosts with `groups` added before any of them starts ticking."""
    async with contextlib.AsyncExitStack() as stack:
        transports = [await stack.enter_async_context(TcpTransport(n)) for n in NODES]
        for t in transports:
            for other in transports:
                if other is not t:
                    t.set_peer(other.node_id, other.address)
        hosts = []
        for t in transports:
            store = SqliteLogStore(directory / f"{t.node_id}.db")
            stack.callback(store.close)
            host = RaftHost(
                t.node_id,
                store,
                t,
                tick_interval_s=cfg.tick_interval_s,
                rng=random.Random(t.node_id),
            )
            await add_groups(host, groups, cfg)
            hosts.append(host)
        nursery = await stack.enter_async_context(trio.open_nursery())
        for host in hosts:
            await nursery.start(host.run)
        try:
            yield hosts
        finally:
            nursery.cancel_scope.cancel()


async def add_groups(host: RaftHost, groups: list[str], cfg: BenchConfig) -> None:
    members = Membership(frozenset(NODES))
    for group in groups:
        config = NodeConfig(
            host.node_id,
            group,
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
            max_inflight_msgs=cfg.inflight,
            quiesce=cfg.quiesce,
        )
        await host.add_group(group, config, members, _apply)


def leader_of(hosts: list[RaftHost], group: str) -> RaftHost | None:
    leaders = [h for h in hosts if h.node(group).role is Role.LEADER]
    return leaders[0] if len(leaders) == 1 else None


async def wait_leaders(hosts: list[RaftHost], groups: list[str], timeout_s: float) -> float:
    start = time.perf_counter()
    with trio.fail_after(timeout_s):
        while not all(leader_of(hosts, g) for g in groups):
            await trio.sleep(0.05)
    return time.perf_counter() - start


async def _proposer(
    hosts: list[RaftHost], group: str, payload: bytes, end_s: float, latencies_ms: list[float]
) -> None:
    while time.perf_counter() < end_s:
        leader = leader_of(hosts, group)
        if leader is None:
            await trio.sleep(0.01)
            continue
        start = time.perf_counter()
        try:
            await leader.propose(group, payload)
        except NotLeader:
            continue
        latencies_ms.append((time.perf_counter() - start) * 1000)


async def run_throughput(cfg: BenchConfig, directory: pathlib.Path) -> ThroughputResult:
    async with three_hosts(directory, cfg, ["bench"]) as hosts:
        await wait_leaders(hosts, ["bench"], timeout_s=30)
        leader = leader_of(hosts, "bench")
        assert leader is not None
        batches_before = leader.stats.persist_batches
        latencies_ms: list[float] = []
        payload = b"x" * cfg.payload_bytes
        start = time.perf_counter()
        end = start + cfg.duration_s
        async with trio.open_nursery() as nursery:
            for _ in range(cfg.inflight):
                nursery.start_soon(_proposer, hosts, "bench", payload, end, latencies_ms)
        elapsed = time.perf_counter() - start
        batches = leader.stats.persist_batches - batches_before
    cuts = statistics.quantiles(latencies_ms, n=100) if len(latencies_ms) > 1 else [0.0] * 99
    return ThroughputResult(
        commits=len(latencies_ms),
        duration_s=elapsed,
        commits_per_s=len(latencies_ms) / elapsed,
        p50_ms=cuts[49],
        p99_ms=cuts[98],
        persist_batches=batches,
    )


async def run_idle(cfg: BenchConfig, directory: pathlib.Path) -> IdleResult:
    groups = [f"idle-{i:04d}" for i in range(cfg.idle_groups)]
    async with three_hosts(directory, cfg, groups) as hosts:
        elect_s = await wait_leaders(hosts, groups, timeout_s=120)
        await trio.sleep(cfg.tick_interval_s * cfg.election_ticks * 2)  # let elections settle
        sent_before = sum(h.stats.messages_sent + h.stats.host_pings for h in hosts)
        ticks_before = sum(h.stats.ticks for h in hosts)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await trio.sleep(cfg.idle_s)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        sent = sum(h.stats.messages_sent + h.stats.host_pings for h in hosts) - sent_before
        ticks = sum(h.stats.ticks for h in hosts) - ticks_before
        quiet = sum(h.node(g).quiesced for h in hosts for g in groups)
    ticks_due = len(NODES) * (wall1 - wall0) / cfg.tick_interval_s
    return IdleResult(
        groups=cfg.idle_groups,
        elect_s=elect_s,
        measure_s=wall1 - wall0,
        cpu_s_per_wall_s=(cpu1 - cpu0) / (wall1 - wall0),
        messages_sent=sent,
        ticks_kept_ratio=ticks / ticks_due,
        quiesced_groups=quiet,
    )


async def run_all(cfg: BenchConfig, which: tuple[str, ...]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        if "throughput" in which:
            path = pathlib.Path(tmp, "throughput")
            path.mkdir()
            out["throughput"] = attrs.asdict(await run_throughput(cfg, path))
        if "idle" in which:
            path = pathlib.Path(tmp, "idle")
            path.mkdir()
            out["idle"] = attrs.asdict(await run_idle(cfg, path))
    return out


def format_results(cfg: BenchConfig, results: dict[str, dict[str, object]]) -> str:
    lines = []
    t = results.get("throughput")
    if t:
        lines.append(
            f"throughput: {t['commits_per_s']:.0f} commits/s over {t['duration_s']:.1f}s "
            f"({cfg.inflight} in flight, {cfg.payload_bytes}-byte entries, fsync on), "
            f"p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms, "
            f"{t['persist_batches']} leader persist batches"
        )
    i = results.get("idle")
    if i:
        lines.append(
            f"idle: {i['groups']} groups x 3 nodes: {i['cpu_s_per_wall_s']:.2f} CPU s per wall s "
            f"(all three hosts), {i['messages_sent']} messages in {i['measure_s']:.1f}s, "
            f"elected in {i['elect_s']:.1f}s, ticks kept {i['ticks_kept_ratio']:.0%}; "
            f"heartbeat every "
            f"{cfg.heartbeat_ticks * cfg.tick_interval_s * 1000:.0f} ms; "
            f"quiesce {'on' if cfg.quiesce else 'off'}: "
            f"{i['quiesced_groups']}/{3 * i['groups']} replicas quiet"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raft.bench", description=__doc__)
    d = BenchConfig()
    parser.add_argument("--duration", type=float, default=d.duration_s)
    parser.add_argument("--inflight", type=int, default=d.inflight)
    parser.add_argument("--payload-bytes", type=int, default=d.payload_bytes)
    parser.add_argument("--idle-groups", type=int, default=d.idle_groups)
    parser.add_argument("--idle-seconds", type=float, default=d.idle_s)
    parser.add_argument("--tick-ms", type=float, default=d.tick_interval_s * 1000)
    parser.add_argument("--heartbeat-ticks", type=int, default=d.heartbeat_ticks)
    parser.add_argument("--election-ticks", type=int, default=d.election_ticks)
    parser.add_argument("--no-quiesce", action="store_true", help="idle groups keep heartbeating")
    parser.add_argument("--only", choices=["throughput", "idle"], default=None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    cfg = BenchConfig(
        duration_s=args.duration,
        inflight=args.inflight,
        payload_bytes=args.payload_bytes,
        idle_groups=args.idle_groups,
        idle_s=args.idle_seconds,
        tick_interval_s=args.tick_ms / 1000,
        heartbeat_ticks=args.heartbeat_ticks,
        election_ticks=args.election_ticks,
        quiesce=not args.no_quiesce,
    )
    print(run_and_format(cfg, (args.only,) if args.only else ("throughput", "idle"), args.json))


def run_and_format(cfg: BenchConfig, which: tuple[str, ...], as_json: bool) -> str:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings up
    results = trio.run(run_all, cfg, which)
    if as_json:
        return json.dumps({"config": attrs.asdict(cfg), **results}, indent=2)
    return format_results(cfg, results)


if __name__ == "__main__":
    main()
