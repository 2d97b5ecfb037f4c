"""One run of `jetraft bench js-pub | js-consume` with the raw load generator (jsload.py).

Publishers are separate processes (spawn), each with its own connection and its own pre-built
frames. Each one connects, builds, and then reports ready and waits on a shared start event, so
the parent can read the servers' CPU counters and release all publishers at once: the measured
span (first start to last ack) and the CPU span cover the same work. The parent then checks the
union of the stored sequences for duplicates. A run with any error raises `RunFailed` instead of
returning a rate.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Any

from cli.benchlib.jsload import (
    CpuMeter,
    RawConn,
    consume_pull,
    create_pull_consumer,
    publish_one_at_a_time,
    publish_windowed,
    reset_stream,
    wait_publishable,
)

CTX = multiprocessing.get_context("spawn")
STREAM = "BENCHJS"
STREAM_SUBJECTS = ["benchjs.>"]
RUN_TIMEOUT_S = 300.0


class RunFailed(RuntimeError):
    """The run had publish errors, missing or duplicate acks, or a worker failed."""


def _fresh_stream(url: str, storage: str, replicas: int, size_bytes: int) -> None:
    with RawConn(url, name="bench-setup") as conn:
        reset_stream(conn, STREAM, STREAM_SUBJECTS, storage, replicas)
        wait_publishable(conn, b"benchjs.warmup", b"x" * size_bytes)


def _publisher(url: str, client: int, msgs: int, size_bytes: int, window: int, ready: Any, go: Any,
               out: Any) -> None:
    def barrier() -> None:
        ready.set()
        if not go.wait(RUN_TIMEOUT_S):
            raise RunFailed("never released")

    try:
        with RawConn(url, name=f"bench-pub-{client}") as conn:
            result = publish_windowed(conn, f"benchjs.{client}", msgs, size_bytes, window, RUN_TIMEOUT_S, barrier)
        out.put(result)
    except Exception as exc:  # reported to the parent, which fails the run
        ready.set()
        out.put({"ok": False, "first_error": f"{type(exc).__name__}: {exc}", "errors": 1})


def run_pub(url: str, pids: list[int], msgs: int, size_bytes: int, clients: int, window: int, storage: str,
            one_at_a_time: bool = False, replicas: int = 1) -> dict[str, float]:
    _fresh_stream(url, storage, replicas, size_bytes)
    meter = CpuMeter(pids)
    if one_at_a_time:
        with RawConn(url, name="bench-pub-sync") as conn:
            result = publish_one_at_a_time(conn, "benchjs.sync", msgs, size_bytes, on_start=meter.start)
        meter.stop()
        _check(result)
        metrics = {"pub_msgs_per_s": result["msgs_per_s"], "pub_p50_us": result["p50_us"],
                   "pub_p90_us": result["p90_us"], "pub_p99_us": result["p99_us"],
                   "client_cpu_s_per_1k_msgs": result["client_cpu_s_per_1k_msgs"]}
        return {**metrics, **meter.metrics(msgs)}
    results = _run_publishers(url, meter, msgs, size_bytes, clients, window)
    for result in results:
        _check(result)
    seqs = [s for r in results for s in r["seqs"]]
    if len(set(seqs)) != len(seqs):
        raise RunFailed(f"{len(seqs) - len(set(seqs))} duplicate stream sequences across publishers")
    span_s = max(r["end"] for r in results) - min(r["start"] for r in results)
    rate = sum(r["msgs"] for r in results) / max(span_s, 1e-9)
    client_cpu = sum(r["client_cpu_s_per_1k_msgs"] * r["msgs"] for r in results) / msgs  # all publishers
    return {"pub_msgs_per_s": rate, "pub_mb_per_s": rate * size_bytes / 1e6, "client_cpu_s_per_1k_msgs": client_cpu,
            **meter.metrics(msgs)}


def _run_publishers(url: str, meter: CpuMeter, msgs: int, size_bytes: int, clients: int,
                    window: int) -> list[dict[str, Any]]:
    out: Any = CTX.Queue()
    go = CTX.Event()
    readies = [CTX.Event() for _ in range(clients)]
    shares = [msgs // clients + (1 if i < msgs % clients else 0) for i in range(clients)]
    procs = [CTX.Process(target=_publisher, args=(url, i, shares[i], size_bytes, window, readies[i], go, out),
                         daemon=True) for i in range(clients) if shares[i] > 0]
    try:
        for proc in procs:
            proc.start()
        for ready in readies[:len(procs)]:
            if not ready.wait(RUN_TIMEOUT_S):
                raise RunFailed("a publisher never became ready")
        meter.start()
        go.set()
        try:
            results = [out.get(timeout=RUN_TIMEOUT_S) for _ in procs]
        except queue.Empty as exc:
            raise RunFailed("a publisher did not report in time") from exc
        meter.stop()
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return results


def _check(result: dict[str, Any]) -> None:
    if result.get("ok"):
        return
    problems = [f"{result.get('errors', 0)} errors"]
    if "acked" in result:
        problems.append(f"{result['acked']} of {result['msgs']} acked")
    if result.get("seqs_distinct") is False:
        problems.append("duplicate stream sequences")
    if result.get("unexpected_replies"):
        problems.append(f"{result['unexpected_replies']} unexpected replies")
    if result.get("statuses"):
        problems.append(f"statuses {result['statuses']}")
    raise RunFailed(", ".join(problems) + (f"; first error: {result['first_error']}" if result.get("first_error")
                                           else ""))


def run_consume(url: str, pids: list[int], msgs: int, size_bytes: int, storage: str,
                batch: int = 500) -> dict[str, float]:
    """Prefill `msgs` messages (window 256), then pull-consume them with acks; only the consume is
    measured."""
    _fresh_stream(url, storage, 1, size_bytes)
    meter = CpuMeter(pids)
    with RawConn(url, name="bench-consume") as conn:
        if msgs > 1:
            _check(publish_windowed(conn, "benchjs.c", msgs - 1, size_bytes, 256, RUN_TIMEOUT_S))
        create_pull_consumer(conn, STREAM, "bench", max(1000, 2 * batch))
        result = consume_pull(conn, STREAM, "bench", msgs, batch, RUN_TIMEOUT_S, on_start=meter.start)
    meter.stop()
    _check(result)
    rate = result["msgs_per_s"]
    return {"consume_msgs_per_s": rate, "consume_mb_per_s": rate * size_bytes / 1e6,
            "client_cpu_s_per_1k_msgs": result["client_cpu_s_per_1k_msgs"], **meter.metrics(msgs)}
