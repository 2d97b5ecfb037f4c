"""A CI-sized Jepsen run against a 3-node reference nats-server cluster: queue workload under
kill and partition faults, then the report files and a well-formed verdict. The reference server
proves the harness (processes, proxies on the cluster links, nemesis, checkers, report) works
before it is pointed at JetRaft with --target jetraft.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

from click.testing import CliRunner

from cli.jepsen_cmd import jepsen
from jepsen.db import Target
from jepsen.runner import RunConfig, run

REPORT_FILES = ["verdict.json", "history.jsonl", "schedule.json", "summary.txt", "latency.png", "outcomes.png",
                "index.html", "run.json", "n1/server.log", "n2/server.log", "n3/server.log"]  # fmt: skip


def test_queue_under_kill_and_partition_produces_a_report(tmp_path: pathlib.Path) -> None:
    cfg = RunConfig(Target.NATS_SERVER, 3, "queue", ("kill", "partition"), time_s=15.0, seed=3,
                    run_dir=tmp_path / "run", concurrency=5, rate_hz=80.0)  # fmt: skip
    verdict = asyncio.run(asyncio.wait_for(run(cfg), 100))
    run_dir = cfg.run_dir
    print((run_dir / "summary.txt").read_text())

    assert "error" not in verdict["notes"], verdict["notes"]
    for name in REPORT_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert json.loads((run_dir / "verdict.json").read_text())["valid"] == verdict["valid"]
    assert verdict["valid"] in (True, False)  # decided, not "unknown"

    kinds = [f["kind"] for f in verdict["faults"]]
    assert kinds[0] == "kill" and kinds[1].startswith("partition")
    assert verdict["faults"][0]["applied"]["killed"]  # the kill really happened

    checked = verdict["checker"]
    assert checked["acknowledged_count"] > 50
    assert checked["unexpected_count"] == 0
    assert checked["divergence"]["nodes_read"] == ["n1", "n2", "n3"]
    assert "kill" in (run_dir / "index.html").read_text()

    # the saved run can be re-checked from disk by the CLI, with the same verdict
    (run_dir / "verdict.json").unlink()
    result = CliRunner().invoke(jepsen, ["report", str(run_dir)])
    assert result.exit_code == {True: 0, False: 1}[verdict["valid"]], result.output
    rebuilt = json.loads((run_dir / "verdict.json").read_text())
    assert rebuilt["checker"]["acknowledged_count"] == checked["acknowledged_count"]


async def _every_pair_routed_through_proxies(net, deadline_s: float) -> bool:
    """Each pair of nodes has a route connection through one of its two proxies (no bypass)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        conns = net.open_connections()
        if all(conns[f"{a}->{b}"] + conns[f"{b}->{a}"] > 0 for a, b in [(0, 1), (0, 2), (1, 2)]):
            return True
        await asyncio.sleep(0.2)  # polling, bounded by the deadline
    return False


def test_db_controls_processes_by_pid(tmp_path: pathlib.Path) -> None:
    """pause makes a node unresponsive until resumed; kill, wipe and start bring it back empty."""
    import os

    from jepsen.db import Cluster, NodeState, js_info_ok, make_specs
    from jepsen.proxy import ClusterNet

    async def scenario() -> None:
        specs = make_specs(tmp_path, 3)
        net = await ClusterNet.start([s.cluster_port for s in specs])
        cluster = Cluster.create(Target.NATS_SERVER, tmp_path, specs, [net.route_urls(i) for i in range(3)])
        try:
            cluster.start_all()
            await cluster.wait_ready(30)
            assert await _every_pair_routed_through_proxies(net, deadline_s=15)
            n1 = cluster.nodes[0]
            cluster.pause(0)
            assert n1.state is NodeState.PAUSED and n1.alive()
            assert not await js_info_ok(n1.spec.client_url, timeout_s=0.5)
            cluster.resume(0)
            assert await js_info_ok(n1.spec.client_url, timeout_s=2.0)
            pid = cluster.nodes[1].pid
            cluster.kill(1)
            assert cluster.nodes[1].state is NodeState.KILLED and not cluster.nodes[1].alive()
            try:
                os.kill(pid, 0)
                raise AssertionError("killed process still exists")
            except ProcessLookupError:
                pass
            cluster.wipe(1)
            assert list(specs[1].store_dir.iterdir()) == []
            cluster.start(1)
            await cluster.wait_ready(30)
            assert cluster.nodes[1].pid != pid and cluster.nodes[1].starts == 2
            assert (specs[1].node_dir / "server.pid").read_text().strip() == str(cluster.nodes[1].pid)
        finally:
            cluster.stop_all()
            await net.close()
        assert not any(n.alive() for n in cluster.nodes)
        assert "start #2" in specs[1].log_path.read_text()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_wiping_the_only_replica_is_caught(tmp_path: pathlib.Path) -> None:
    """The harness sees real loss: an R1 stream whose node loses its disk mid-run."""
    cfg = RunConfig(Target.NATS_SERVER, 3, "queue", ("wipe",), time_s=8.0, seed=1, run_dir=tmp_path / "run",
                    concurrency=4, rate_hz=80.0, replicas=1)  # fmt: skip
    verdict = asyncio.run(asyncio.wait_for(run(cfg), 90))
    print((cfg.run_dir / "summary.txt").read_text())
    assert "error" not in verdict["notes"], verdict["notes"]
    assert verdict["faults"][0]["applied"]["wiped"]
    checked = verdict["checker"]
    missing = sum(checked["divergence"]["missing_count"].values())
    assert checked["acknowledged_count"] > 20
    assert verdict["valid"] is False
    assert checked["lost_count"] + checked["seq_conflict_count"] + missing > 0
