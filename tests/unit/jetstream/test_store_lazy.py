"""The SQLite store's lazy counters (schema 2): append-only commits leave `meta`/`subjects`
alone and the counters are recovered from the tail. Checked against the dict model of
test_store_model.py, with reopening (the crash/restart path: an open sees exactly what a
SIGKILL would leave, committed transactions), a second connection reading while the first
keeps writing (the runtime's reader), applied indexes riding on rows, and a small
LAZY_ROWS_MAX so both lazy and eager commits happen. Plus the version 1 -> 2 migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

import jetstream.store.sqlite as sqlite_store
from jetstream.store import MessageStore, SqliteStore
from tests.unit.jetstream.test_store_model import SUBJECTS, StoreModel


def _same_view(a: MessageStore, b: MessageStore) -> None:
    assert a.state() == b.state()
    assert a.applied_index() == b.applied_index()
    assert a.subject_counts() == b.subject_counts()
    for after in (0, 3, 10):
        assert a.num_after(after) == b.num_after(after)


class LazySqliteModel(StoreModel):
    kind = "sqlite"

    def __init__(self) -> None:
        self._saved_max = sqlite_store.LAZY_ROWS_MAX
        sqlite_store.LAZY_ROWS_MAX = 3
        super().__init__()
        self.path = Path(self.tmp) / "s.db"
        self.applied = 0

    def teardown(self) -> None:
        sqlite_store.LAZY_ROWS_MAX = self._saved_max
        super().teardown()

    @rule(subjects=st.lists(st.sampled_from(SUBJECTS + ["new.one"]), min_size=1, max_size=5),
          gap=st.integers(0, 1), move_applied=st.booleans(), in_row=st.booleans())
    def append_batch(self, subjects: list[str], gap: int, move_applied: bool, in_row: bool) -> None:
        rows = []
        seq = self.last_seq
        for subject in subjects:
            seq += 1 + gap
            self.clock += 5
            rows.append((seq, subject, None, b"p%d" % seq, self.clock))
        with self.store.batch():
            if move_applied:
                self.applied += len(rows) + gap
            if move_applied and in_row:
                self.store.store_many(rows, self.applied)
            else:
                self.store.store_many(rows)
                if move_applied:
                    self.store.set_applied_index(self.applied)
        for seq, subject, hdrs, payload, ts in rows:
            self.msgs[seq] = (subject, hdrs, payload, ts)
        self.last_seq, self.last_ts = seq, self.clock

    @rule(step=st.integers(0, 3))
    def applied_only(self, step: int) -> None:
        self.applied += step
        self.store.set_applied_index(self.applied)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SqliteStore(self.path)

    @rule()
    def second_connection_agrees(self) -> None:
        other = SqliteStore(self.path)
        try:
            _same_view(self.store, other)
            assert other.seq_for_time(self.clock // 2) == self.store.seq_for_time(self.clock // 2)
            self.store.store(self.last_seq + 1, "a.1", None, b"late", self.clock + 1)
            self.clock += 1
            self.last_seq += 1
            self.msgs[self.last_seq] = ("a.1", None, b"late", self.clock)
            other.refresh()
            _same_view(self.store, other)
        finally:
            other.close()

    @rule(at=st.integers(0, 400))
    def seq_for_time(self, at: int) -> None:
        expected = next((s for s in sorted(self.msgs) if self.msgs[s][3] >= at), None)
        assert self.store.seq_for_time(at) == expected

    @invariant()
    def applied_matches(self) -> None:
        assert self.store.applied_index() == self.applied


TestLazySqliteModel = LazySqliteModel.TestCase
TestLazySqliteModel.settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])


def test_lone_append_writes_only_the_row_pages(tmp_path: Path) -> None:
    """A one-message commit with the applied index leaves meta and subjects untouched; the
    next eager commit (a remove) writes them, and a reopen in between recovers the same."""
    store = SqliteStore(tmp_path / "s.db")
    for seq in range(1, 4):
        with store.batch():
            store.store_many([(seq, "x", None, b"abc", seq)])
            store.set_applied_index(seq + 10)
    raw = sqlite3.connect(tmp_path / "s.db")
    meta = dict(raw.execute("SELECT key, value FROM meta"))
    assert meta["msgs"] == 0 and meta["counted_seq"] == 0 and meta["applied_index"] == 0
    assert raw.execute("SELECT count(*) FROM subjects").fetchone()[0] == 0
    assert raw.execute("SELECT applied FROM messages ORDER BY seq").fetchall() == [(11,), (12,), (13,)]
    again = SqliteStore(tmp_path / "s.db")
    assert again.state() == store.state() and again.applied_index() == 13
    assert again.subject_counts() == {"x": 3}
    again.close()
    assert store.remove(2)
    meta = dict(raw.execute("SELECT key, value FROM meta"))
    assert meta["msgs"] == 2 and meta["counted_seq"] == 3 and meta["applied_index"] == 13
    assert dict(raw.execute("SELECT subject, msgs FROM subjects")) == {"x": 2}
    raw.close()
    store.close()


def test_tail_past_the_bound_commits_eagerly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    n = sqlite_store.LAZY_ROWS_MAX + 1
    with store.batch():
        store.store_many([(seq, "x", None, b"", seq) for seq in range(1, n + 1)])
        store.set_applied_index(n)
    raw = sqlite3.connect(tmp_path / "s.db")
    meta = dict(raw.execute("SELECT key, value FROM meta"))
    assert meta["counted_seq"] == n and meta["msgs"] == n and meta["applied_index"] == n
    raw.close()
    store.close()


def test_migrates_a_version_1_store(tmp_path: Path) -> None:
    """A schema 1 file (ts_ns index, no `applied` column, exact counters) opens as schema 2
    with the same content, and its counters are taken as counted up to last_seq."""
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript("""
        CREATE TABLE messages(seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, hdrs BLOB,
            payload BLOB NOT NULL, ts_ns INTEGER NOT NULL) STRICT;
        CREATE INDEX messages_by_subject ON messages(subject, seq);
        CREATE INDEX messages_by_ts ON messages(ts_ns);
        CREATE TABLE subjects(subject TEXT PRIMARY KEY, msgs INTEGER NOT NULL) STRICT;
        CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
        CREATE TABLE consumers(name TEXT PRIMARY KEY, state BLOB NOT NULL) STRICT;
        CREATE TABLE msg_ids(msg_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL) STRICT;
        INSERT INTO messages VALUES (1, 'a', NULL, x'6869', 100), (3, 'b', NULL, x'', 300);
        INSERT INTO subjects VALUES ('a', 1), ('b', 1);
        INSERT INTO meta VALUES ('last_seq', 3), ('last_ts_ns', 300), ('msgs', 2),
            ('bytes', 36), ('num_subjects', 2), ('applied_index', 7);
        PRAGMA user_version=1;
    """)
    raw.close()
    store = SqliteStore(path)
    state = store.state()
    assert (state.messages, state.last_seq, state.first_seq, state.bytes, state.num_subjects) == (2, 3, 1, 36, 2)
    assert store.applied_index() == 7
    assert store.seq_for_time(150) == 3 and store.seq_for_time(301) is None
    store.store(4, "a", None, b"", 400)
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "messages_by_ts" not in names
    assert dict(raw.execute("SELECT key, value FROM meta"))["counted_seq"] == 3
    raw.close()
    again = SqliteStore(path)
    assert again.state().messages == 3 and again.subject_counts() == {"a": 2, "b": 1}
    again.close()


def test_lone_commit_is_begin_insert_commit(tmp_path: Path) -> None:
    """With the applied index in the INSERT, a lone publish of a known subject is three
    statements; a new subject adds one lookup (a read)."""
    store = SqliteStore(tmp_path / "s.db")
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    with store.batch():
        store.store_many([(1, "x", None, b"a", 1)], applied_index=5)
        store.set_applied_index(5)  # what the stream machine does after: nothing more to write
    assert [q.split()[0] for q in seen] == ["BEGIN", "INSERT", "SELECT", "COMMIT"]
    seen.clear()
    with store.batch():
        store.store_many([(2, "x", None, b"b", 2)], applied_index=6)
    assert [q.split()[0] for q in seen] == ["BEGIN", "INSERT", "COMMIT"]
    store._conn.set_trace_callback(None)
    store.close()
    again = SqliteStore(tmp_path / "s.db")
    assert again.applied_index() == 6 and again.state().messages == 2
    again.close()


def _copy_without_shm(src: Path, dest: Path) -> Path:
    """The db and WAL files as a crash would leave them (no shared-memory index: the next
    open recovers from the WAL file itself)."""
    dest.mkdir()
    for suffix in ("", "-wal"):
        (dest / ("s.db" + suffix)).write_bytes(Path(str(src) + suffix).read_bytes())
    return dest / "s.db"


def test_preallocated_wal_recovers_exactly_the_commits(tmp_path: Path) -> None:
    """Zeros past the last frame (a fresh preallocation) and stale frames of an earlier cycle
    followed by zeros (after a checkpoint restarted the WAL) both end recovery at the last
    committed frame."""
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.preallocate_wal()
    size = Path(str(path) + "-wal").stat().st_size
    assert size > 4_000_000
    for seq in range(1, 11):
        with store.batch():
            store.store_many([(seq, "x", None, b"p", seq)], applied_index=seq)
    copy = SqliteStore(_copy_without_shm(path, tmp_path / "a"))
    assert copy.state().last_seq == 10 and copy.applied_index() == 10 and copy.state().messages == 10
    copy.close()
    for seq in range(11, 1400):  # past the autocheckpoint: the WAL restarts over old frames
        with store.batch():
            store.store_many([(seq, "x", None, b"p", seq)], applied_index=seq)
    assert Path(str(path) + "-wal").stat().st_size == size  # overwritten, never grown
    copy = SqliteStore(_copy_without_shm(path, tmp_path / "b"))
    assert copy.state().last_seq == 1399 and copy.applied_index() == 1399 and copy.state().messages == 1399
    assert [m.seq for m in copy.iter_messages()] == list(range(1, 1400))
    copy.close()
    store.close()
