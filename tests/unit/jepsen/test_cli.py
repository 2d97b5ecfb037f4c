"""The `jetraft jepsen` command surface (no cluster is started here)."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner

from cli.jepsen_cmd import jepsen
from jepsen.history import Op, OpType, save_jsonl


def test_run_help_lists_the_flags() -> None:
    result = CliRunner().invoke(jepsen, ["run", "--help"])
    assert result.exit_code == 0
    for flag in ("--target", "--nodes", "--workload", "--nemesis", "--time", "--seed", "--dir"):
        assert flag in result.output


def test_unknown_nemesis_is_rejected_before_anything_starts(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(jepsen, ["run", "--nemesis", "kill,clock", "--dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "clock" in result.output
    assert not (tmp_path / "r").exists()


def test_report_exit_code_follows_the_verdict(tmp_path: pathlib.Path) -> None:
    config = {"target": "nats-server", "workload": "set", "seed": 1, "nemesis": [], "time_s": 1.0}
    (tmp_path / "run.json").write_text(json.dumps(config))
    ops = [Op(0, 0, "add", OpType.OK, 0.0, 0.1, "a"), Op(1, 9, "set-read", OpType.OK, 1.0, 1.1, None, ["b"], "n1")]
    save_jsonl(ops, tmp_path / "history.jsonl")
    result = CliRunner().invoke(jepsen, ["report", str(tmp_path)])
    assert result.exit_code == 1  # lost "a", unexpected "b"
    assert json.loads((tmp_path / "verdict.json").read_text())["checker"]["lost_sample"] == ["a"]
