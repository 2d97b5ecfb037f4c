"""Jepsen's admin nemeses against a real 3-node cluster (nats-server and JetRaft): a short queue
run while the queue stream is scaled R3 -> R2 -> R3 by `$JS.API.STREAM.UPDATE` (the full config from STREAM.INFO with
num_replicas changed). Each scale is a fault window in the history (so the plots shade it) with
the API's answers, the stream is back at three current replicas when the window closes, and the
checker finds every acknowledged value on every node.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from jepsen.db import Target
from jepsen.history import NEMESIS_PROCESS, load_jsonl
from jepsen.runner import RunConfig, run


def _check_scaled_run(verdict: dict, run_dir: pathlib.Path) -> None:
    print((run_dir / "summary.txt").read_text())
    print(json.dumps(verdict["faults"], indent=1))
    assert "error" not in verdict["notes"], verdict["notes"]
    faults = verdict["faults"]
    assert faults and all(f["kind"] == "scale" for f in faults)
    for fault in faults:
        applied = fault["applied"]
        assert applied["ok"] is True and applied["response"] == "ok", applied
        assert applied["replicas"] == "3->2" and applied["restore"] == "ok", applied
        assert applied["settled"] is True and sorted(applied["peers_after"]) == ["n1", "n2", "n3"], applied

    windows = [op for op in load_jsonl(run_dir / "history.jsonl") if op.process == NEMESIS_PROCESS]
    assert len(windows) == len(faults)
    assert all(op.f == "nemesis" and op.complete_s > op.invoke_s for op in windows)
    assert "scale" in (run_dir / "index.html").read_text()

    checked = verdict["checker"]
    assert checked["acknowledged_count"] > 30
    assert checked["lost_count"] == 0 and checked["unexpected_count"] == 0
    assert checked["divergence"]["nodes_read"] == ["n1", "n2", "n3"]
    assert sum(checked["divergence"]["missing_count"].values()) == 0
    assert verdict["valid"] is True


@pytest.mark.parametrize("target", [Target.NATS_SERVER, Target.JETRAFT])
def test_queue_stays_valid_while_the_stream_is_scaled_down_and_back(tmp_path: pathlib.Path, target: Target) -> None:
    cfg = RunConfig(target, 3, "queue", ("scale",), time_s=7.0, seed=4, run_dir=tmp_path / "run",
                    concurrency=4, rate_hz=60.0)  # fmt: skip
    verdict = asyncio.run(asyncio.wait_for(run(cfg), 90))
    _check_scaled_run(verdict, cfg.run_dir)
