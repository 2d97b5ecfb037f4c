"""Jepsen against a 3-node JetRaft cluster: the Raft links go through the harness's proxies too
(`--raft_peers` pointing at them, node ids = server names), so partitions cut Raft traffic as
well as routes; and a CI-sized queue run under kill and partition passes with its report.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

from jepsen.db import Cluster, Target, make_specs
from jepsen.proxy import ClusterNet
from jepsen.runner import RunConfig, run, start_net_and_cluster

REPORT_FILES = ["verdict.json", "history.jsonl", "schedule.json", "summary.txt", "latency.png", "outcomes.png",
                "index.html", "run.json", "n1/server.log", "n2/server.log", "n3/server.log"]  # fmt: skip
PAIRS = [(0, 1), (0, 2), (1, 2)]


async def _wait_for(condition, deadline_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        if condition():
            return True
        await asyncio.sleep(0.2)  # polling, bounded by the deadline
    return condition()


def _linked(net: ClusterNet, plane: str, a: int, b: int) -> bool:
    conns = net.open_connections()
    return conns[f"{plane}{a}->{b}"] + conns[f"{plane}{b}->{a}"] > 0


def test_raft_and_route_links_both_go_through_the_proxies(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        specs = make_specs(tmp_path, 3)
        net, cluster = await start_net_and_cluster(Target.JETRAFT, tmp_path, specs)
        assert isinstance(cluster, Cluster) and len(net.raft_links) == 6
        try:
            cluster.start_all()
            await cluster.wait_ready(40)
            for plane in ("", "raft:"):
                assert await _wait_for(lambda: all(_linked(net, plane, a, b) for a, b in PAIRS), 15), plane
            log = specs[0].log_path.read_text()
            assert "voters=['n1', 'n2', 'n3']" in log  # Raft ids are the server names
            net.partition([[0], [1, 2]])
            cut_off = lambda: not any(_linked(net, p, 0, b) for p in ("", "raft:") for b in (1, 2))  # noqa: E731
            assert await _wait_for(cut_off, 5)
            await asyncio.sleep(1.0)  # let the servers try to reconnect: they must stay cut off
            assert cut_off() and _linked(net, "raft:", 1, 2)
            assert net.raft_links[(0, 1)].accepted_count > 1  # a reconnect was tried, and refused
            net.heal()
            assert await _wait_for(lambda: _linked(net, "raft:", 0, 1) and _linked(net, "raft:", 0, 2), 15)
        finally:
            cluster.stop_all()
            await net.close()
        assert not any(n.alive() for n in cluster.nodes)

    asyncio.run(asyncio.wait_for(scenario(), 80))


def test_queue_under_kill_and_partition_passes(tmp_path: pathlib.Path) -> None:
    cfg = RunConfig(Target.JETRAFT, 3, "queue", ("kill", "partition"), time_s=15.0, seed=1,
                    run_dir=tmp_path / "run", concurrency=5, rate_hz=80.0)  # fmt: skip
    verdict = asyncio.run(asyncio.wait_for(run(cfg), 100))
    run_dir = cfg.run_dir
    print((run_dir / "summary.txt").read_text())

    assert "error" not in verdict["notes"], verdict["notes"]
    for name in REPORT_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    kinds = [f["kind"] for f in verdict["faults"]]
    assert kinds[0] == "kill" and kinds[1].startswith("partition")
    assert verdict["faults"][0]["applied"]["killed"]
    checked = verdict["checker"]
    assert checked["acknowledged_count"] > 50
    assert checked["lost_count"] == 0 and checked["unexpected_count"] == 0
    # every replica was read as leader (preferred stepdowns) and holds every acknowledged value
    assert checked["divergence"]["nodes_read"] == ["n1", "n2", "n3"]
    assert set(checked["divergence"]["missing_count"].values()) == {0}
    assert verdict["valid"] is True, json.dumps(checked)[:2000]
