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
