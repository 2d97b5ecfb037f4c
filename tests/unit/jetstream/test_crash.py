"""Crash safety of the SQLite stream store: SIGKILL a writer mid-stream, reopen, check.

Every sequence the child printed (after its batch committed) must be present after reopening,
and the only gaps in the sequence space are the deletes the workload made (every 7th seq).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jetstream.store import SqliteStore

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[3]


def run_and_kill(db: Path, min_acks: int, deadline_s: float = 20.0, batch: int = 25) -> list[int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(batch), "100000"], stdout=subprocess.PIPE, env=env
    )
    acked: list[int] = []
    try:
        give_up = time.monotonic() + deadline_s
        while len(acked) < min_acks and time.monotonic() < give_up:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            acked.append(int(line.split()[1]))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    acked.extend(int(line.split()[1]) for line in rest.decode().splitlines() if line.startswith("ack "))
    assert proc.returncode == -signal.SIGKILL
    return acked


def check_store(db: Path, acked: list[int]) -> int:
    store = SqliteStore(db)
    try:
        seqs = [m.seq for m in store.iter_messages()]
        state = store.state()
        present = set(seqs)
        missing = [s for s in acked if s % 7 and s not in present]
        assert missing == [], f"acknowledged sequences lost: {missing[:10]}"
        gaps = set(range(1, state.last_seq + 1)) - present
        assert all(g % 7 == 0 for g in gaps), sorted(g for g in gaps if g % 7)[:10]
        assert state.last_seq >= max(acked)
        assert state.messages == len(seqs)
        assert store.applied_index() >= state.last_seq
        return state.last_seq
    finally:
        store.close()


def test_sigkill_loses_no_acknowledged_publish(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    acked = run_and_kill(db, min_acks=300)
    assert len(acked) >= 300
    last = check_store(db, acked)
    # A second life continues from the applied index without reusing sequences.
    acked2 = run_and_kill(db, min_acks=100)
    assert min(acked2) == last + 1
    check_store(db, acked + acked2)


def test_sigkill_during_lone_commits_loses_nothing(tmp_path: Path) -> None:
    """One publish per commit: most commits are lazy (counters recovered from the tail on
    open), every 7th is eager (its delete). Killed at a random point of that mix."""
    db = tmp_path / "lone.db"
    acked = run_and_kill(db, min_acks=200, batch=1)
    last = check_store(db, acked)
    acked2 = run_and_kill(db, min_acks=50, batch=1)
    assert min(acked2) == last + 1
    check_store(db, acked + acked2)
