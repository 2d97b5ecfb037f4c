"""The report: verdict, summary, plots and HTML from a hand-made history, and a re-check from disk."""

from __future__ import annotations

import json
import pathlib

from jepsen.history import NEMESIS_PROCESS, Op, OpType, load_jsonl, save_jsonl
from jepsen.report import rebuild, write

CONFIG = {"target": "nats-server", "workload": "queue", "seed": 1, "nemesis": ["kill"], "time_s": 10.0}


def _ops(lose_one: bool) -> list[Op]:
    ops = [Op(i, 0, "publish", OpType.OK, i * 0.1, i * 0.1 + 0.01, f"0-{i}", {"seq": i + 1}, "n1") for i in range(20)]
    ops.append(Op(20, 0, "publish", OpType.INFO, 2.0, 4.0, "0-20", None, "n1", "TimeoutError"))
    read = [{"value": f"0-{i}", "seq": i + 1} for i in range(20) if not (lose_one and i == 10)]
    ops.append(Op(21, 1, "read", OpType.OK, 5.0, 5.1, None, read, "n2"))
    kill = {"start_s": 1.0, "end_s": 3.0, "kind": "kill", "nodes": [1], "detail": {}}
    ops.append(Op(22, NEMESIS_PROCESS, "nemesis", OpType.INFO, 1.0, 3.0, kill, {"killed": ["n2"]}))
    return ops


def test_report_files_and_verdict(tmp_path: pathlib.Path) -> None:
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / "server.log").write_text("log line\n")
    verdict = write(tmp_path, CONFIG, _ops(lose_one=True), {})
    assert verdict["valid"] is False
    assert verdict["checker"]["lost_hole_count"] == 1
    assert verdict["faults"][0]["applied"] == {"killed": ["n2"]}
    for name in ("verdict.json", "summary.txt", "latency.png", "outcomes.png", "index.html"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "index.html").read_text()
    assert "latency.png" in page and "n1/server.log" in page and "valid = False" in page
    assert "lost in a hole" in (tmp_path / "summary.txt").read_text()


def test_error_note_makes_a_clean_history_unknown(tmp_path: pathlib.Path) -> None:
    verdict = write(tmp_path, CONFIG, _ops(lose_one=False), {"error": "NotReadyError: n1"})
    assert verdict["checker"]["valid"] is True
    assert verdict["valid"] == "unknown"
    assert "NotReadyError" in (tmp_path / "summary.txt").read_text()


def test_rebuild_from_saved_history(tmp_path: pathlib.Path) -> None:
    ops = _ops(lose_one=False)
    save_jsonl(ops, tmp_path / "history.jsonl")
    assert load_jsonl(tmp_path / "history.jsonl") == ops
    (tmp_path / "run.json").write_text(json.dumps(CONFIG))
    verdict = rebuild(tmp_path)
    assert verdict["valid"] is True
    assert verdict["checker"]["recovered_count"] == 0
    assert json.loads((tmp_path / "verdict.json").read_text())["op_count"] == 22


def test_empty_history_still_renders(tmp_path: pathlib.Path) -> None:
    verdict = write(tmp_path, CONFIG, [], {"error": "setup failed"})
    assert verdict["valid"] == "unknown"
    assert (tmp_path / "latency.png").exists()
