"""`jetraft bench js-pub`: the report table (ratio of jetraft to every other server), the fsync
setting printed for each side, R3 node arguments, and one real one-at-a-time run."""

from __future__ import annotations

from click.testing import CliRunner
from rich.console import Console

from cli.bench_js import FSYNC_SETTINGS, _node_args, fsync_notes, js_pub, table


def _render(results: dict[str, dict[str, float]]) -> str:
    console = Console(width=250, record=True)
    console.print(table("t", results, 3))
    return console.export_text()


def test_table_has_a_ratio_column_per_other_server() -> None:
    text = _render({"jetraft-r3": {"pub_msgs_per_s": 300.0},
                    "nats-server-r3-always": {"pub_msgs_per_s": 600.0},
                    "nats-server-r3-default": {"pub_msgs_per_s": 1200.0}})
    assert "jetraft-r3 / nats-server-r3-always" in text and "0.50x" in text
    assert "jetraft-r3 / nats-server-r3-default" in text and "0.25x" in text


def test_fsync_notes_name_each_side() -> None:
    notes = fsync_notes(["jetraft", "nats-server", "unknown"])
    assert FSYNC_SETTINGS["jetraft"] in notes and FSYNC_SETTINGS["nats-server"] in notes
    assert "unknown" not in notes


def test_r3_node_arguments_form_a_full_mesh() -> None:
    args = _node_args("n-1", [7001, 7002, 7003], 1, "/d")
    assert args[args.index("--cluster") + 1] == "nats://127.0.0.1:7002"
    assert args[args.index("--routes") + 1].split(",") == [f"nats://127.0.0.1:{p}" for p in (7001, 7002, 7003)]
    assert args[args.index("-sd") + 1] == "/d" and "-js" in args


def test_one_at_a_time_run_against_jetraft_reports_latency_and_fsync() -> None:
    result = CliRunner().invoke(js_pub, ["--server", "jetraft", "--one-at-a-time", "--msgs", "60", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert "pub_p50_us" in result.output and "pub_p99_us" in result.output
    assert "ack after fsync" in result.output
