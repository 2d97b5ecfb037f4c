"""Report of a run: verdict JSON, a summary table, plots, and an HTML page tying them together.

`write` runs the workload's checker over the history and writes, into the run directory:
- verdict.json: valid (True / False / "unknown"), the checker's findings, op counts, notes;
- summary.txt: the rich summary table, also printed when a console is given;
- latency.png: latency of every client operation (but consumer fetches, whose latency is their
  own wait) against its invocation time, coloured by outcome, fault windows shaded and labelled;
- outcomes.png: the outcome of each write (publish / add / put / cas) over time, one row per
  client process, with the same shading;
- index.html: all of the above plus links to the history and the node logs.
Plots use matplotlib's Agg backend (no display needed). `rebuild` re-checks a saved run.
"""

from __future__ import annotations

import html
import json
import pathlib
from collections import Counter
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from jepsen.history import Op, OpType, load_jsonl  # noqa: E402

COLORS = {"ok": "#2e7d32", "info": "#f9a825", "fail": "#c62828"}
WRITE_FS = ("publish", "add", "put", "cas")
SUMMARY_KEYS = [
    ("acknowledged_count", "acknowledged"),
    ("unknown_count", "unknown (info)"),
    ("failed_count", "failed"),
    ("read_count", "distinct values read"),
    ("recovered_count", "recovered (info, then read)"),
    ("lost_count", "lost"),
    ("lost_before_first_read_count", "  lost before writer's first read"),
    ("lost_hole_count", "  lost in a hole"),
    ("lost_after_last_read_count", "  lost after writer's last read"),
    ("unexpected_count", "unexpected"),
    ("duplicated_delivery_count", "duplicate deliveries"),
    ("multi_seq_count", "values at >1 sequence"),
    ("seq_conflict_count", "sequences with >1 value"),
    ("undelivered_by_consumer_count", "never delivered by consumer"),
    ("ok_count", "ok"),
    ("fail_count", "fail"),
]


def _checker(workload: str):
    from jepsen.workloads import WORKLOADS  # late: keeps report importable on its own

    return WORKLOADS[workload]().check


def verdict_of(config: dict[str, Any], ops: list[Op], notes: dict[str, Any]) -> dict[str, Any]:
    client_ops = [op for op in ops if op.f != "nemesis"]
    checked = _checker(config["workload"])(ops)
    valid = checked["valid"]
    if notes.get("error") and valid is True:
        valid = "unknown"
    return {
        "valid": valid,
        "target": config["target"],
        "workload": config["workload"],
        "seed": config["seed"],
        "nemesis": config["nemesis"],
        "time_s": config["time_s"],
        "op_count": len(client_ops),
        "op_counts": {f"{f}:{t}": n for (f, t), n in sorted(Counter((o.f, o.type.value) for o in client_ops).items())},
        "faults": [dict(op.value, applied=op.result) for op in ops if op.f == "nemesis"],
        "checker": checked,
        "notes": {k: v for k, v in notes.items() if k != "traceback"},
    }


def summary_table(verdict: dict[str, Any]) -> Table:
    checked = verdict["checker"]
    table = Table(title=f"{verdict['target']} / {verdict['workload']} / seed {verdict['seed']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("operations", str(verdict["op_count"]))
    for key, label in SUMMARY_KEYS:
        if key in checked:
            table.add_row(label, str(checked[key]))
    if "divergence" in checked:
        table.add_row("missing per node", json.dumps(checked["divergence"]["missing_count"]))
    if "node_missing_count" in checked:
        table.add_row("missing per node", json.dumps(checked["node_missing_count"]))
    if "keys" in checked:
        for key, info in checked["keys"].items():
            table.add_row(f"key {key}", f"{info['verdict']} ({info['calls']} calls)")
    table.add_row("faults", str(len(verdict["faults"])))
    if verdict["notes"].get("error"):
        table.add_row("error", verdict["notes"]["error"].splitlines()[0][:80])
    style = {True: "green", False: "red"}.get(verdict["valid"], "yellow")
    table.add_row("VALID", f"[{style}]{verdict['valid']}[/{style}]")
    return table


def _shade_faults(ax, ops: list[Op]) -> None:
    for op in ops:
        if op.f != "nemesis":
            continue
        end_s = max(op.complete_s, op.invoke_s + 0.2)
        ax.axvspan(op.invoke_s, end_s, color="#90a4ae", alpha=0.25, lw=0)
        ax.text(op.invoke_s, 1.0, op.value.get("kind", "?"), transform=ax.get_xaxis_transform(),
                fontsize=7, va="bottom", rotation=20)  # fmt: skip


def plot_latency(ops: list[Op], path: pathlib.Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.5))
    # consumer fetches are left out: their latency is mostly the fetch's own wait
    client_ops = [op for op in ops if op.f not in ("nemesis", "read") and op.process < 1000]
    for op_type in OpType:
        pts = [op for op in client_ops if op.type is op_type]
        ax.scatter([o.invoke_s for o in pts], [max(o.latency_s * 1000, 0.05) for o in pts], s=4,
                   color=COLORS[op_type.value], label=f"{op_type.value} ({len(pts)})", alpha=0.7)  # fmt: skip
    if client_ops:
        ax.set_yscale("log")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    _shade_faults(ax, ops)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_outcomes(ops: list[Op], path: pathlib.Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 3.5))
    writes = [op for op in ops if op.f in WRITE_FS]
    for op_type in OpType:
        pts = [op for op in writes if op.type is op_type]
        ax.scatter([o.invoke_s for o in pts], [o.process for o in pts], s=6, marker="|",
                   color=COLORS[op_type.value], label=f"{op_type.value} ({len(pts)})")  # fmt: skip
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("client process")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _shade_faults(ax, ops)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(run_dir: pathlib.Path, verdict: dict[str, Any], summary: str) -> str:
    logs = sorted(run_dir.glob("n*/server.log"))
    links = "".join(f'<li><a href="{p.relative_to(run_dir)}">{p.relative_to(run_dir)}</a></li>' for p in logs)
    faults = "".join(
        f"<tr><td>{f['start_s']:.1f}</td><td>{f['end_s']:.1f}</td><td>{html.escape(f['kind'])}</td>"
        f"<td>{html.escape(json.dumps(f['applied']))}</td></tr>"
        for f in verdict["faults"]
    )
    color = {True: "green", False: "red"}.get(verdict["valid"], "orange")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>jepsen run</title></head>
<body style="font-family: sans-serif">
<h1>{html.escape(verdict['target'])} / {html.escape(verdict['workload'])}:
<span style="color:{color}">valid = {html.escape(str(verdict['valid']))}</span></h1>
<pre>{html.escape(summary)}</pre>
<h2>Latency</h2><img src="latency.png" alt="latency over time">
<h2>Write outcomes</h2><img src="outcomes.png" alt="outcome of each write over time">
<h2>Faults (planned window, what was done)</h2>
<table border="1" cellpadding="3"><tr><th>start s</th><th>end s</th><th>kind</th><th>applied</th></tr>{faults}</table>
<h2>Files</h2><ul><li><a href="verdict.json">verdict.json</a></li><li><a href="history.jsonl">history.jsonl</a></li>
<li><a href="schedule.json">schedule.json</a></li>{links}</ul>
</body></html>
"""


def write(run_dir: pathlib.Path, config: dict[str, Any], ops: list[Op], notes: dict[str, Any],
          console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    verdict = verdict_of(config, ops, notes)
    (run_dir / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
    if notes.get("traceback"):
        (run_dir / "error.txt").write_text(notes["traceback"])
    table = summary_table(verdict)
    recorder = Console(record=True, width=100, file=open("/dev/null", "w"))  # noqa: SIM115
    recorder.print(table)
    summary = recorder.export_text()
    (run_dir / "summary.txt").write_text(summary)
    plot_latency(ops, run_dir / "latency.png")
    plot_outcomes(ops, run_dir / "outcomes.png")
    (run_dir / "index.html").write_text(_html(run_dir, verdict, summary))
    if console is not None:
        console.print(table)
        console.print(f"report: {run_dir / 'index.html'}")
    return verdict


def rebuild(run_dir: pathlib.Path, console: Console | None = None) -> dict[str, Any]:
    """Re-check a saved run (history.jsonl + run.json) and rewrite its report."""
    config = json.loads((run_dir / "run.json").read_text())
    ops = load_jsonl(run_dir / "history.jsonl")
    old = run_dir / "verdict.json"
    notes = json.loads(old.read_text()).get("notes", {}) if old.exists() else {}
    return write(run_dir, config, ops, notes, console)
