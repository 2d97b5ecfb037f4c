"""The Raft benchmark and its CLI command run end to end on a tiny configuration and report
numbers that make sense (it must not rot between the times someone runs it for real)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.bench_raft import raft


def test_bench_command_reports_commits_latency_and_idle_cpu() -> None:
    args = ["--duration", "0.5", "--inflight", "8", "--idle-groups", "4", "--idle-seconds", "0.3"]
    timing = ["--tick-ms", "20", "--heartbeat-ticks", "2", "--election-ticks", "10"]
    result = CliRunner().invoke(raft, [*args, *timing, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    t, idle = report["throughput"], report["idle"]
    assert t["commits"] > 0 and t["commits_per_s"] > 0
    assert 0 < t["p50_ms"] <= t["p99_ms"]
    assert t["persist_batches"] > 0
    assert idle["groups"] == 4 and idle["cpu_s_per_wall_s"] >= 0
    assert idle["messages_sent"] > 0  # leaders kept heartbeating while idle
