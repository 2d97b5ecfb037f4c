"""Turn worker reports into metrics, medians over runs, and a rich comparison table.

Pure functions over plain data (no I/O besides building a rich Table value), so they are easy to
test. Metric names carry their unit last. Throughput follows `nats bench`: the publisher rate is
messages over the send-until-PONG span (all publishers: first start to last PONG); the aggregate
subscriber rate is all deliveries over
the span from the earliest first delivery to the latest last one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from rich.table import Table

# (metric key, human label, higher is better)
METRICS: list[tuple[str, str, bool]] = [
    ("pub_msgs_per_s", "publish msgs/s (all publishers)", True),
    ("pub_mb_per_s", "publish MB/s (all publishers)", True),
    ("sub_msgs_per_s", "subscribers, aggregate msgs/s", True),
    ("sub_min_msgs_per_s", "slowest subscriber msgs/s", True),
    ("sub_mb_per_s", "subscribers, aggregate MB/s", True),
    ("req_per_s", "requests/s (sequential)", True),
    ("req_p50_us", "request latency p50 µs", False),
    ("req_p90_us", "request latency p90 µs", False),
    ("req_p99_us", "request latency p99 µs", False),
]


def throughput_metrics(reports: Sequence[tuple], size_bytes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    pubs = [r for r in reports if r[0] == "pub"]
    subs = [r for r in reports if r[0] == "sub"]
    if pubs:
        span_s = max(r[3] for r in pubs) - min(r[2] for r in pubs)
        out["pub_msgs_per_s"] = sum(r[1] for r in pubs) / max(span_s, 1e-9)
        out["pub_mb_per_s"] = out["pub_msgs_per_s"] * size_bytes / 1e6
    if subs:
        total = sum(r[1] for r in subs)
        span_s = max(r[3] for r in subs) - min(r[2] for r in subs)
        out["sub_msgs_per_s"] = total / max(span_s, 1e-9)
        out["sub_mb_per_s"] = out["sub_msgs_per_s"] * size_bytes / 1e6
        out["sub_min_msgs_per_s"] = min(r[1] / max(r[3] - r[2], 1e-9) for r in subs)
    return out


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    assert sorted_values, "no values"
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_metrics(report: tuple) -> dict[str, float]:
    _kind, n, t0, t1, _err, latencies = report
    ordered = sorted(latencies)
    return {
        "req_per_s": n / max(t1 - t0, 1e-9),
        "req_p50_us": percentile(ordered, 0.50) * 1e6,
        "req_p90_us": percentile(ordered, 0.90) * 1e6,
        "req_p99_us": percentile(ordered, 0.99) * 1e6,
    }


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for run in runs for k in run})
    return {k: statistics.median(run[k] for run in runs if k in run) for k in keys}


def render_table(title: str, results: dict[str, dict[str, float]], runs: int) -> Table:
    """One column per server; with exactly jetraft and nats-server, add the ratio jetraft/nats-server."""
    servers = list(results)
    compare = set(servers) == {"jetraft", "nats-server"}
    table = Table(title=f"{title} (median of {runs} run{'s' if runs != 1 else ''})")
    table.add_column("metric")
    for name in servers:
        table.add_column(name, justify="right")
    if compare:
        table.add_column("jetraft / nats-server", justify="right")
    for key, label, _higher in METRICS:
        if not any(key in results[s] for s in servers):
            continue
        row = [label] + [format_value(results[s].get(key)) for s in servers]
        if compare:
            row.append(format_ratio(results["jetraft"].get(key), results["nats-server"].get(key)))
        table.add_row(*row)
    return table


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def format_ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.3f}"
