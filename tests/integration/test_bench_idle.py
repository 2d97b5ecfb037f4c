"""`jetraft bench idle` end to end on a tiny configuration: a real 3-node jetraft cluster, a few
R3 streams, a CPU sample per node (it must not rot between the times someone runs it for real)."""

from __future__ import annotations

import json
import os
import time

from click.testing import CliRunner

from cli.bench_idle import cpu_seconds, idle


def test_cpu_seconds_of_this_process_grows_with_work() -> None:
    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.1


def test_bench_idle_reports_cpu_per_node_for_a_few_streams() -> None:
    args = ["--streams", "3", "--span", "1", "--settle", "0", "--concurrency", "3", "--json"]
    result = CliRunner().invoke(idle, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    r = report["results"]["jetraft"]
    assert len(r["cpu_pct"]) == 3 and all(0 <= c < 200 for c in r["cpu_pct"])
    assert r["create_s"] > 0 and r["leaders_s"] >= 0
