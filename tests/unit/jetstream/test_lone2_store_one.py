"""A lone publish's commit: `store_many([row], applied_index)` (SqliteStore._store_one) and the
state machine's single-publish branch of `apply_batch` end in the same state as the general
paths: counters, subjects, applied index, first message, after reopen (lazy recovery) and after
a failed transaction; `last_seq_ts` agrees with `state()`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.config import StreamConfig
from jetstream.store.memory import MemoryStore
from jetstream.store.sqlite import SqliteStore
from jetstream.stream import AlreadyApplied, Publish, StreamStateMachine

# one step: (rows in this call, subject index, payload size)
_STEPS = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3), st.integers(0, 40)), min_size=1, max_size=25)


def _view(store: SqliteStore | MemoryStore) -> tuple:
    return (store.state(), store.applied_index(), store.subject_counts(), store.last_seq_ts(),
            [(m.seq, m.subject, m.payload, m.ts_ns) for m in store.load_range(1, 1000)])


@settings(max_examples=40, deadline=None)
@given(steps=_STEPS)
def test_single_row_appends_match_the_memory_store_and_survive_reopen(tmp_path_factory: pytest.TempPathFactory,
                                                                      steps: list[tuple[int, int, int]]) -> None:
    path = tmp_path_factory.mktemp("one") / "m.db"
    sql, mem = SqliteStore(path), MemoryStore()
    seq = index = 0
    for count, subject, size in steps:
        rows = []
        for _ in range(count):
            seq += 1
            rows.append((seq, f"s.{subject}", None, b"p" * size, seq * 7))
        index += 1
        for store in (sql, mem):
            store.store_many(rows, index)
        assert _view(sql) == _view(mem)
    sql.close()
    again = SqliteStore(path)
    assert _view(again) == _view(mem)
    again.close()


def test_a_single_row_out_of_order_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.store_many([(1, "s.a", None, b"x", 10)], 1)
    before = _view(store)
    with pytest.raises(ValueError):
        store.store_many([(1, "s.a", None, b"y", 20)], 2)
    assert _view(store) == before


def test_a_failed_single_row_transaction_rolls_back_the_counters(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.store_many([(1, "s.a", None, b"x", 10)], 1)
    before = _view(store)
    with pytest.raises(RuntimeError):
        with store.batch():
            store.store_many([(2, "s.b", None, b"yy", 20)], 2)
            raise RuntimeError("boom")
    assert _view(store) == before
    store.close()
    assert _view(SqliteStore(tmp_path / "m.db")) == before


@pytest.mark.parametrize("store_kind", ["sqlite", "memory"])
def test_the_single_publish_branch_matches_a_batch_of_one_applied_by_the_loop(tmp_path: Path, store_kind: str) -> None:
    def make(name: str) -> SqliteStore | MemoryStore:
        return SqliteStore(tmp_path / f"{name}.db") if store_kind == "sqlite" else MemoryStore()

    config = StreamConfig(name="S", subjects=("s.>",), max_msgs=3, max_msg_size=8)
    lone = StreamStateMachine(config, make("lone"))
    loop = StreamStateMachine(config, make("loop"))
    cmds = [Publish(f"s.{i % 2}", b"x" * (i % 10), 100 + i) for i in range(12)]
    for i, cmd in enumerate(cmds, start=1):
        got = lone.apply_batch([cmd], i)
        # the general loop, forced: a plain publish followed by nothing (same index) is the
        # same batch; apply() one by one is the reference the property tests use
        want = [loop.apply(cmd, i)]
        assert got == want
    assert lone.apply_batch([cmds[0]], 3) == [AlreadyApplied(3)]  # an old index: not applied
    assert _view(lone.store) == _view(loop.store)  # type: ignore[arg-type]


def test_outside_a_transaction_a_lazy_lone_commit_is_one_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No BEGIN/COMMIT of ours: SQLite commits the INSERT alone (same fsync); every
    LAZY_ROWS_MAX rows the commit is eager again (the counters written in a transaction)."""
    from jetstream.store import sqlite as sqlite_mod

    monkeypatch.setattr(sqlite_mod, "LAZY_ROWS_MAX", 3)
    store = SqliteStore(tmp_path / "m.db")
    mem = MemoryStore()
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    kinds = []
    for seq in range(1, 9):
        seen.clear()
        row = (seq, "s.a" if seq % 3 else "s.b", None, b"x" * seq, seq * 10)
        store.store_many([row], seq)
        mem.store_many([row], seq)
        kinds.append([q.split()[0] for q in seen])
        assert not store._conn.in_transaction
        assert _view(store) == _view(mem)
    assert kinds[0] == ["SELECT", "INSERT"]  # a new subject: one lookup, then the row
    assert kinds[1] == ["INSERT"]
    assert kinds[3][0] == "BEGIN" and kinds[3][-1] == "COMMIT"  # 4 - 0 > 3: eager
    assert kinds[6] == ["INSERT"]  # s.a again, pending since seq 5
    assert kinds[7][0] == "BEGIN"  # 8 - 4 > 3
    store.close()
    assert _view(SqliteStore(tmp_path / "m.db")) == _view(mem)


def test_a_failed_autocommit_insert_changes_no_counter(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.store_many([(1, "s.a", None, b"x", 10)], 1)
    before = _view(store)
    other = sqlite3.connect(str(tmp_path / "m.db"), isolation_level=None)
    other.execute("INSERT INTO messages(seq, subject, hdrs, payload, ts_ns) VALUES (2, 's.z', NULL, x'00', 20)")
    with pytest.raises(sqlite3.IntegrityError):  # seq 2 taken behind the store's back
        store.store_many([(2, "s.new", None, b"y", 20)], 2)
    other.execute("DELETE FROM messages WHERE seq=2")
    other.close()
    assert _view(store) == before
    assert not store._conn.in_transaction
