"""Run one benchmark against one server URL: start the worker processes, show progress, collect.

Every load generator runs in its own process (multiprocessing, spawn), so publisher, subscribers
and requesters never share a GIL with each other or with this parent, which only starts them,
releases them together through a shared Event, and polls shared counters to draw a rich progress
bar until every worker has reported on the results queue or the deadline passes. Stragglers are
terminated by their process handle. The result is a flat dict of metrics with units in the names.
"""

from __future__ import annotations

import enum
import multiprocessing
import queue
import time
from typing import Any

import attrs
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.benchlib import loadgen
from cli.benchlib.loadgen import subscribe_subject
from cli.benchlib.report import latency_metrics, throughput_metrics

CTX = multiprocessing.get_context("spawn")
POLL_INTERVAL_S = 0.1


class Mode(enum.Enum):
    PUB = "pub"
    SUB = "sub"
    PUBSUB = "pubsub"
    REQ = "req"


@attrs.frozen
class Load:
    mode: Mode
    msgs: int = 100_000
    size_bytes: int = 16
    subs: int = 1
    pubs: int = 1  # publisher processes; msgs are split between them
    subject: str = "bench.subject"
    subjects: int = 1  # >1: publish round-robin to subject.0..N-1, subscribers take subject.>
    timeout_s: float = 120.0


class BenchError(RuntimeError):
    """A worker failed (its message says why)."""


@attrs.frozen
class Target:
    """Where publishers/requesters connect, and where subscribers/responders connect (another
    node of the same cluster, or the same server)."""

    pub_url: str
    sub_url: str


def run_once(target: Target, load: Load, label: str, progress: Progress) -> dict[str, float]:
    if load.mode is Mode.REQ:
        return _run_req(target, load, label, progress)
    return _run_pubsub(target, load, label, progress)


def _run_pubsub(target: Target, load: Load, label: str, progress: Progress) -> dict[str, float]:
    subs = 0 if load.mode is Mode.PUB else load.subs
    results: Any = CTX.Queue()
    start = CTX.Event()
    sub_counts = [CTX.Value("q", 0, lock=False) for _ in range(subs)]
    readies = [CTX.Event() for _ in range(subs)]
    procs = [
        CTX.Process(
            target=loadgen.subscriber,
            args=(
                target.sub_url, subscribe_subject(load.subject, load.subjects), load.msgs, ready, count, results,
                load.timeout_s, None if target.sub_url == target.pub_url else target.pub_url,
            ),
            daemon=True,
        )
        for ready, count in zip(readies, sub_counts)
    ]
    pub_counts = [CTX.Value("q", 0, lock=False) for _ in range(load.pubs)]
    procs += [
        CTX.Process(
            target=loadgen.publisher,
            args=(
                target.pub_url, load.subject, load.subjects, share, load.size_bytes, start, count, results,
                load.timeout_s,
            ),
            daemon=True,
        )
        for share, count in zip(split_evenly(load.msgs, load.pubs), pub_counts)
    ]
    total = load.msgs * (1 + subs)
    task = progress.add_task(label, total=total)
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + load.timeout_s
        for ready in readies:
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                raise BenchError("a subscriber did not become ready")
        start.set()
        counters = [*pub_counts, *sub_counts]
        reports = _collect(results, len(procs), deadline, lambda: sum(c.value for c in counters), task, progress)
    finally:
        _reap(procs)
        progress.remove_task(task)
    return throughput_metrics(reports, load.size_bytes)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal non-negative shares (the first ones get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _run_req(target: Target, load: Load, label: str, progress: Progress) -> dict[str, float]:
    results: Any = CTX.Queue()
    ready, stop = CTX.Event(), CTX.Event()
    done = CTX.Value("q", 0, lock=False)
    resp = CTX.Process(
        target=loadgen.responder, args=(target.sub_url, load.subject, ready, stop, load.timeout_s), daemon=True
    )
    req = CTX.Process(
        target=loadgen.requester,
        args=(target.pub_url, load.subject, load.msgs, load.size_bytes, done, results, load.timeout_s),
        daemon=True,
    )
    task = progress.add_task(label, total=load.msgs)
    try:
        resp.start()
        deadline = time.monotonic() + load.timeout_s
        if not ready.wait(load.timeout_s):
            raise BenchError("the responder did not become ready")
        req.start()
        reports = _collect(results, 1, deadline, lambda: done.value, task, progress)
    finally:
        stop.set()
        _reap([req, resp])
        progress.remove_task(task)
    return latency_metrics(reports[0])


def _collect(results: Any, expected: int, deadline: float, done: Any, task: Any, progress: Progress) -> list[tuple]:
    reports: list[tuple] = []
    while len(reports) < expected:
        if time.monotonic() > deadline:
            raise BenchError(f"timed out with {len(reports)} of {expected} workers done")
        try:
            reports.append(results.get(timeout=POLL_INTERVAL_S))
        except queue.Empty:
            pass
        progress.update(task, completed=done())
    errors = [r[4] for r in reports if r[4]]
    if errors:
        raise BenchError("; ".join(errors))
    return reports


def _reap(procs: list[Any]) -> None:
    for proc in procs:
        if proc.pid is None:
            continue
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>12,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        transient=True,
    )
