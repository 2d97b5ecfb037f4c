"""One Jepsen-style run, start to finish.

1. Allocate ports and directories under the run directory, start the link proxies, generate the
   node configs, start the servers and wait (polling, with a deadline) until each answers
   `$JS.API.INFO`.
2. Let the workload create its stream or bucket.
3. Start the run clock; run the workload's client processes and the nemesis (the seeded fault
   schedule) side by side for `time_s`.
4. Stop the clients, heal everything (network, paused and killed nodes), wait for readiness.
5. Let the workload drain and read back; stop the servers and proxies.
6. Save the history, run the checker, write the verdict and the report.
Every failure to set up or finish is written into the verdict (valid "unknown") rather than lost.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import traceback
from collections import Counter
from typing import Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from jepsen import report
from jepsen.db import Cluster, Target, make_specs
from jepsen.history import History, save_jsonl
from jepsen.nemesis import Nemesis
from jepsen.proxy import ClusterNet
from jepsen.schedule import ScheduleConfig, plan
from jepsen.workloads import WORKLOADS, RunContext

READY_DEADLINE_S = 60.0
CLIENT_STOP_DEADLINE_S = 30.0


@attrs.frozen
class RunConfig:
    target: Target
    nodes: int
    workload: str
    nemesis: tuple[str, ...]
    time_s: float
    seed: int
    run_dir: pathlib.Path
    concurrency: int = 6
    rate_hz: float = 100.0
    replicas: int = 3

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data.update(target=self.target.value, run_dir=str(self.run_dir), nemesis=list(self.nemesis))
        return data


@attrs.define
class Live:
    """Counters for the progress display."""

    counts: Counter = attrs.field(factory=Counter)
    fault: str = "none"

    def text(self) -> str:
        c = self.counts
        return f"ok {c['ok']}  fail {c['fail']}  info {c['info']}  fault: {self.fault[:60]}"


async def run(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "run.json").write_text(json.dumps(cfg.to_json(), indent=2))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    history = History(clock_s=lambda: loop.time() - t0)
    live = Live()
    notes: dict[str, Any] = {}
    windows = plan(cfg.seed, ScheduleConfig.for_run(cfg.time_s, cfg.nodes, cfg.nemesis))
    specs = make_specs(cfg.run_dir, cfg.nodes)
    net, cluster = await start_net_and_cluster(cfg.target, cfg.run_dir, specs)
    try:
        await _run_phases(cfg, cluster, net, history, windows, live, notes, console)
    except Exception as exc:
        notes["error"] = f"{type(exc).__name__}: {exc}"
        notes["traceback"] = traceback.format_exc()
    finally:
        cluster.stop_all()
        await net.close()
    ops = sorted(history.ops, key=lambda o: (o.invoke_s, o.index))
    save_jsonl(ops, cfg.run_dir / "history.jsonl")
    (cfg.run_dir / "schedule.json").write_text(json.dumps([w.to_json() for w in windows], indent=2))
    return report.write(cfg.run_dir, cfg.to_json(), ops, notes, console)


async def start_net_and_cluster(target: Target, run_dir: pathlib.Path, specs) -> tuple[ClusterNet, Cluster]:
    """The link proxies (route links; Raft links too for jetraft) and the nodes pointed at them."""
    raft = target is Target.JETRAFT
    net = await ClusterNet.start([s.cluster_port for s in specs], [s.raft_port for s in specs] if raft else None)
    n = len(specs)
    raft_ports = [net.raft_ports(i) for i in range(n)] if raft else None
    return net, Cluster.create(target, run_dir, specs, [net.route_urls(i) for i in range(n)], raft_ports)


async def _run_phases(cfg, cluster: Cluster, net: ClusterNet, history: History, windows, live: Live,
                      notes: dict, console: Console | None) -> None:  # fmt: skip
    workload = WORKLOADS[cfg.workload]()
    stop = asyncio.Event()
    ctx = RunContext(cluster, history, stop, cfg.seed, cfg.rate_hz, cfg.concurrency, cfg.replicas,
                     on_op=lambda t: live.counts.update([t]))  # fmt: skip
    cluster.start_all()
    await cluster.wait_ready(READY_DEADLINE_S)
    await workload.setup(ctx)
    nemesis = Nemesis(cluster, net, history, _stream_of(cfg.workload), on_change=lambda s: setattr(live, "fault", s))
    loop = asyncio.get_running_loop()
    start = loop.time()
    history.clock_s = lambda: loop.time() - start  # the run clock starts with the workload
    with _progress(console) as progress:
        task = progress.add_task(live.text(), total=cfg.time_s) if progress else None

        def tick() -> None:
            if progress:
                progress.update(task, completed=loop.time() - start, description=live.text())

        await _run_workload(cfg, workload.clients(ctx), nemesis.run(windows, stop), stop, notes, tick)
    nemesis.heal_all()
    await cluster.wait_ready(READY_DEADLINE_S)
    final_start = loop.time()
    await workload.final(ctx)
    notes["final_phase_s"] = round(loop.time() - final_start, 2)


async def _run_workload(cfg, client_fns, nemesis_coro, stop: asyncio.Event, notes: dict, tick) -> None:
    """Clients and nemesis for cfg.time_s; whatever happens, stop them all before returning."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    clients = [asyncio.create_task(fn()) for fn in client_fns]
    nemesis_task = asyncio.create_task(nemesis_coro)
    try:
        for _ in range(int(cfg.time_s * 4) + 1):  # ticks of the progress display, bounded
            left_s = cfg.time_s - (loop.time() - start)
            if left_s <= 0 or nemesis_task.done() and nemesis_task.exception():
                break
            await asyncio.sleep(min(0.25, left_s))
            tick()
    finally:
        stop.set()
        done, pending = await asyncio.wait([*clients, nemesis_task], timeout=CLIENT_STOP_DEADLINE_S)
        for t in pending:
            t.cancel()
    errors = [repr(t.exception()) for t in done if not t.cancelled() and t.exception()]
    if errors:
        notes["client_errors"] = errors[:10]
    if nemesis_task in done and not nemesis_task.cancelled() and nemesis_task.exception():
        raise nemesis_task.exception()


def _stream_of(workload: str) -> str:
    return {"queue": "jepsen_queue", "set": "jepsen_set", "kv": "KV_jepsen"}[workload]


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(console: Console | None):
    if console is None:
        return _NoProgress()
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console)
