"""SQLite LogStore under a real crash and under on-disk corruption.

A child process appends entries in batches and prints each batch's last index once `save()`
returned (durable). The test SIGKILLs the child by PID mid-stream, reopens the file and checks
that every entry reported durable is intact. A flipped byte in the last entry and a truncated
file are detected and reported, never served silently as a shorter history.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import trio

from raft.storage import GroupWrite, SqliteLogStore
from raft.types import Entry, HardState

WRITER = r"""
import sys
from raft.storage import GroupWrite, SqliteLogStore
from raft.types import Entry, HardState
store = SqliteLogStore(sys.argv[1])
index = 0
for batch in range(100000):
    entries = tuple(Entry(1, index + k, data=b"payload-%08d" % (index + k)) for k in range(1, 6))
    index += 5
    store.save([GroupWrite("g", HardState(1, "w", index), entries)])
    print(index, flush=True)
"""


def payload(i: int) -> bytes:
    return b"payload-%08d" % i


async def _read_durable_until(proc: trio.Process, count: int, deadline_s: float) -> int:
    assert proc.stdout is not None
    buffer, last = b"", 0
    with trio.fail_after(deadline_s):
        while last < count:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "writer exited early"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                last = max(last, int(line))
    return last


async def test_sigkill_mid_stream_keeps_every_durable_entry(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "crash.db"
    root = pathlib.Path(__file__).resolve().parents[3]
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        durable = await _read_durable_until(proc, 500, deadline_s=30)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = SqliteLogStore(path)
    loaded = store.load("g")
    store.close()
    assert loaded.verify_errors == ()
    assert loaded.last_index >= durable
    assert loaded.hard_state.commit >= durable
    for entry in loaded.entries[:durable]:
        assert entry.data == payload(entry.index)
    assert [e.index for e in loaded.entries] == list(range(1, loaded.last_index + 1))


def _write_closed_db(path: pathlib.Path, count: int) -> None:
    store = SqliteLogStore(path)
    entries = tuple(Entry(1, i, data=payload(i) + b"x" * 200) for i in range(1, count + 1))
    store.save([GroupWrite("g", HardState(1, "w", count), entries)])
    store.close()  # last connection: the WAL is checkpointed into the main file
    assert not pathlib.Path(str(path) + "-wal").exists()


def test_flipped_byte_in_last_entry_is_reported(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "flip.db"
    _write_closed_db(path, 50)
    raw = bytearray(path.read_bytes())
    at = raw.find(payload(50))
    assert at >= 0
    raw[at + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    store = SqliteLogStore(path)
    loaded = store.load("g")
    store.close()
    assert [e.index for e in loaded.entries] == list(range(1, 50))
    assert any("entry 50 fails its checksum" in err for err in loaded.verify_errors)
    assert any("commit index 50 beyond" in err for err in loaded.verify_errors)
    assert loaded.repair_needed


def test_truncated_file_is_reported_not_served_short(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "trunc.db"
    _write_closed_db(path, 400)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    store = SqliteLogStore(path)
    loaded = store.load("g")
    store.close()
    assert store.open_errors
    assert any("quarantined" in err for err in loaded.verify_errors)
    assert loaded.repair_needed
    assert (tmp_path / "trunc.db.quarantined-1").stat().st_size == size // 2
    again = SqliteLogStore(path)  # the fact survives a restart
    assert again.load("g").repair_needed
    again.save([GroupWrite("g", HardState(5, None, 0))])
    assert not again.load("g").repair_needed
    again.close()
