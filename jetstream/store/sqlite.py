"""SQLite message store: one database file per stream replica.

Schema (STRICT tables, version in `PRAGMA user_version`, 2):
- `messages(seq PK, subject, hdrs, payload, ts_ns, applied)` with an index on (subject, seq) for
  last-by-subject / next-by-subject. Timestamps never decrease along sequences (the stream
  machine stores max(ts, last ts)), so deliver-by-start-time binary-searches by sequence: no
  ts_ns index (one B-tree page less per commit; version 1 had one, dropped by the migration);
- `subjects(subject PK, msgs)`: per-subject counts;
- `meta(key PK, value)`: last_seq, last_ts_ns, msgs, bytes, num_subjects, applied_index and
  `counted_seq`: the counters and `subjects` include exactly the messages up to counted_seq;
- `consumers(name PK, state)`: opaque consumer state blobs;
- `msg_ids(msg_id PK, seq, ts_ns)`: the Nats-Msg-Id dedup index (pruned by the stream machine).

Lazy counters (the one-at-a-time publish path): a transaction that only appends messages (and
sets the applied index) writes the new rows and nothing else: the applied index rides on its
last row (`applied`), and `meta`/`subjects` are left as they were. That is two B-tree pages per
commit (the rows and their subject index) instead of five, measured -75 us CPU per commit. The
messages after counted_seq (the tail) are all such appends, so the counters are always
recoverable: `_load_counters` adds up the tail (at most LAZY_ROWS_MAX rows) to the meta row,
and the applied index is the newest tail row's `applied` if any. Every other mutation (remove,
purge, skip, restore, a commit without appends that moves the applied index) and any commit
that would grow the tail past LAZY_ROWS_MAX writes the counters and the pending subject counts
and moves counted_seq to last_seq (eager). The same recovery runs on open (after a crash) and
when a second connection sees another one's commit (`refresh`), so both read exact counters.

The connection runs in WAL mode with `synchronous=FULL` and explicit transactions
(`isolation_level=None`). Each mutating call runs in a transaction; inside `batch()` all calls
share one `BEGIN IMMEDIATE ... COMMIT`, so a shell can apply many Raft entries, set the applied
index, and pay one fsync. If a batch raises, it is rolled back and the caller must rebuild any
in-memory state from the store (the store is the truth).

All calls block on disk I/O: the trio shell runs them via `trio.to_thread.run_sync`, one thread
at a time per store (the connection is created with check_same_thread=False for that reason).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from jetstream.store.base import (
    MessageStore,
    StoredMsg,
    StoreState,
    empty_first_seq,
    filter_matches,
    MSG_OVERHEAD_BYTES,
    msg_size,
)
from natsd.subjects import has_wildcard

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages(
    seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, hdrs BLOB, payload BLOB NOT NULL,
    ts_ns INTEGER NOT NULL, applied INTEGER) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_subject ON messages(subject, seq);
CREATE TABLE IF NOT EXISTS subjects(subject TEXT PRIMARY KEY, msgs INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS consumers(name TEXT PRIMARY KEY, state BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS msg_ids(msg_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL) STRICT;
CREATE INDEX IF NOT EXISTS msg_ids_by_ts ON msg_ids(ts_ns);
"""
_MIGRATE_1_TO_2 = (
    "ALTER TABLE messages ADD COLUMN applied INTEGER",
    "DROP INDEX IF EXISTS messages_by_ts",
)
_META_KEYS = ("last_seq", "last_ts_ns", "msgs", "bytes", "num_subjects", "applied_index", "counted_seq")
_WAL_HEADER_BYTES, _WAL_FRAME_HEADER_BYTES = 32, 24  # SQLite's WAL format
WAL_SLACK_FRAMES = 64  # past the autocheckpoint size: the commit that crosses it
# Most rows a lazy commit leaves after counted_seq (bounds the recovery work of a reader's refresh).
LAZY_ROWS_MAX = 64
_NEXT_TS_SQL = "SELECT seq, ts_ns FROM messages WHERE seq>=? ORDER BY seq LIMIT 1"
_TAIL_SQL = (  # the tail's rows per subject: count, sizes without the per-message overhead
    "SELECT subject, count(*), sum(length(CAST(subject AS BLOB)) + coalesce(length(hdrs), 0)"
    " + length(payload)) FROM messages WHERE seq>? GROUP BY subject"
)
_COLS = "seq, subject, hdrs, payload, ts_ns"
_INSERT_CHUNKS = (64, 8, 1)  # rows per INSERT statement, largest first (each statement cached)
_INSERT_SQL = {k: f"INSERT INTO messages({_COLS}) VALUES " + ",".join(["(?, ?, ?, ?, ?)"] * k) for k in _INSERT_CHUNKS}
_INSERT_APPLIED_SQL = f"INSERT INTO messages({_COLS}, applied) VALUES (?, ?, ?, ?, ?, ?)"

# Every counter in one statement (executemany steps once per key), values in _META_KEYS order.
_META_WRITE_SQL = "UPDATE meta SET value=CASE key {} END WHERE key IN ({})".format(
    " ".join(f"WHEN '{k}' THEN ?{i}" for i, k in enumerate(_META_KEYS, 1)), ",".join(f"'{k}'" for k in _META_KEYS))


class _ReadView:
    """A read transaction (unless one is open) with the counters brought up to date inside it,
    so the counters and the rows read agree even while another connection commits."""

    __slots__ = ("_store", "_own")

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._own = False

    def __enter__(self) -> None:
        store = self._store
        if store._depth or store._conn.in_transaction:
            return
        store._conn.execute("BEGIN")
        self._own = True
        store._refresh_in_txn()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._own:
            self._store._conn.execute("COMMIT")


class _Transaction:
    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._begin()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._store._end(failed=exc_type is not None)


def _row_msg(row: tuple[Any, ...] | None) -> StoredMsg | None:
    if row is None:
        return None
    return StoredMsg(row[0], row[1], row[2], row[3], row[4])


def _matches_sql(pattern: str, subject: str) -> int:
    return 1 if filter_matches(pattern, subject) else 0


class SqliteStore(MessageStore):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.create_function("subject_matches", 2, _matches_sql, deterministic=True)
        self._depth = 0
        self._first: tuple[int, int] | None = None  # (seq, ts_ns) of the oldest message, if known
        # The open transaction: must it write the counters (a non-append change), did it move
        # the applied index, and the last sequence it appended (None: no append).
        self._eager = False
        self._applied_moved = False
        self._appended: int | None = None
        self._row_applied: tuple[int, int] | None = None  # (seq, applied index) an INSERT wrote
        self._meta: dict[str, int] = {}
        self._counted = 0  # counted_seq as stored
        self._pending: dict[str, int] = {}  # subject -> tail messages not in `subjects` yet
        self._migrate()
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version} is newer than {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:  # up to date: only read (no write, no fsync per open)
            self._conn.execute("BEGIN")
            try:
                self._load_counters()
            finally:
                self._conn.execute("COMMIT")
            return
        if version == 0:
            self._conn.executescript(_SCHEMA)  # DDL is idempotent; executescript commits itself
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:  # its counters are exact: counted_seq starts at last_seq
                for sql in _MIGRATE_1_TO_2:
                    self._conn.execute(sql)
                self._conn.execute("INSERT OR IGNORE INTO meta(key, value) "
                                   "SELECT 'counted_seq', value FROM meta WHERE key='last_seq'")
            self._conn.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, 0)", [(k,) for k in _META_KEYS]
            )
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._load_counters()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def refresh(self) -> None:
        """For a second connection on the same file (the runtime's reader): the counters and
        the oldest message are cached in memory, so re-read them when another connection has
        committed since (SQLite's `PRAGMA data_version` changes exactly then)."""
        if self._depth:
            return
        conn = self._conn
        if conn.in_transaction:
            self._refresh_in_txn()
            return
        if conn.execute("PRAGMA data_version").fetchone()[0] == self._data_version:
            return  # nobody committed since: no transaction needed
        conn.execute("BEGIN")  # the counters and the tail read from one snapshot
        try:
            self._refresh_in_txn()
        finally:
            conn.execute("COMMIT")

    def _refresh_in_txn(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._load_counters()
            self._first = None

    def _load_counters(self) -> None:
        """The counters as of the open (read or write) transaction: the meta row plus the
        lazily appended tail after counted_seq (see the module docstring)."""
        conn = self._conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        counted = meta["counted_seq"]
        pending: dict[str, int] = {}
        rows = conn.execute(_TAIL_SQL, (counted,)).fetchall()
        if rows:
            for subject, count, size in rows:
                pending[subject] = count
                meta["msgs"] += count
                meta["bytes"] += size + count * MSG_OVERHEAD_BYTES
                if conn.execute("SELECT 1 FROM subjects WHERE subject=?", (subject,)).fetchone() is None:
                    meta["num_subjects"] += 1
            meta["last_seq"], meta["last_ts_ns"] = conn.execute(
                "SELECT seq, ts_ns FROM messages WHERE seq>? ORDER BY seq DESC LIMIT 1", (counted,)).fetchone()
            applied = conn.execute("SELECT applied FROM messages WHERE seq>? AND applied IS NOT NULL "
                                   "ORDER BY seq DESC LIMIT 1", (counted,)).fetchone()
            if applied is not None:
                meta["applied_index"] = applied[0]
        self._meta = meta
        self._counted = counted
        self._pending = pending

    def _put_meta(self, **values: int) -> None:
        """Counters change in memory; the commit writes them (eager) or leaves them to be
        recovered from the tail (lazy)."""
        self._meta.update(values)

    def _mark_eager(self) -> None:
        """This transaction changes more than appends: write the pending subject counts now
        (so `subjects` is exact for what follows) and the counters at commit."""
        self._eager = True
        if self._pending:
            self._conn.executemany(
                "INSERT INTO subjects(subject, msgs) VALUES (?, ?) "
                "ON CONFLICT(subject) DO UPDATE SET msgs=msgs+excluded.msgs", list(self._pending.items()))
            self._pending = {}

    def _flush_meta(self) -> None:
        """At commit: lazy (only appends: the applied index on the last appended row) or
        eager (the pending subject counts and every counter, counted_seq = last_seq)."""
        meta = self._meta
        if not self._eager:
            appended = self._appended
            if not self._applied_moved:
                return
            if appended is not None and appended - self._counted <= LAZY_ROWS_MAX:
                if self._row_applied != (appended, meta["applied_index"]):  # not in the row yet
                    self._conn.execute("UPDATE messages SET applied=? WHERE seq=?", (meta["applied_index"], appended))
                return
        self._mark_eager()
        meta["counted_seq"] = meta["last_seq"]
        self._conn.execute(_META_WRITE_SQL, [meta[k] for k in _META_KEYS])
        self._counted = meta["last_seq"]

    # -- transactions -------------------------------------------------------------------------
    def batch(self) -> _Transaction:
        """One transaction; nested calls join the open one (a plain object, not a generator
        context manager: a publish enters it several times)."""
        return _Transaction(self)

    def _begin(self) -> None:
        if self._depth == 0:
            self._conn.execute("BEGIN IMMEDIATE")
            self._eager = self._applied_moved = False
            self._appended = None
            self._row_applied = None
        self._depth += 1

    def _end(self, failed: bool) -> None:
        self._depth -= 1
        if self._depth:
            return
        if failed:
            self._rollback()
            return
        try:
            if self._appended is not None and self._appended - self._counted > LAZY_ROWS_MAX:
                self._eager = True
            self._flush_meta()
        except BaseException:
            self._rollback()
            raise
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        self._first = None
        self._conn.execute("ROLLBACK")
        self._conn.execute("BEGIN")
        try:
            self._load_counters()
        finally:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def preallocate_wal(self) -> None:
        """Extend the WAL file with written zeros to the size it cycles within (autocheckpoint
        frames and some slack): a commit then overwrites allocated blocks and its fdatasync has
        no file-size change to journal (measured fdatasync p50 150 -> 115 us on this ext4).
        Safe: WAL recovery stops at the first frame whose salts do not match its header (zeros
        never do), which is also what a restarted WAL leaves behind; SQLite never truncates
        it (journal_size_limit -1) and deletes it when the last connection closes. Done under
        the write lock, so no other connection appends meanwhile; synced once."""
        wal = self.path + "-wal"
        page = self._conn.execute("PRAGMA page_size").fetchone()[0]
        frames = self._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        target = _WAL_HEADER_BYTES + (frames + WAL_SLACK_FRAMES) * (page + _WAL_FRAME_HEADER_BYTES)
        with self.batch():
            try:
                size = os.path.getsize(wal)
            except FileNotFoundError:
                return
            if size >= target:
                return
            fd = os.open(wal, os.O_WRONLY)
            try:
                zeros = bytes(min(target - size, 1 << 20))
                while size < target:
                    size += os.pwrite(fd, zeros[: target - size], size)
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- messages ---------------------------------------------------------------------------
    def store(self, seq: int, subject: str, hdrs: bytes | None, payload: bytes, ts_ns: int) -> None:
        if seq <= self._meta["last_seq"]:
            raise ValueError(f"sequence {seq} not after last sequence {self._meta['last_seq']}")
        with self.batch():
            self._conn.execute(_INSERT_SQL[1], (seq, subject, hdrs, bytes(payload), ts_ns))
            new_subject = self._add_subject(subject, 1)
            if self._meta["msgs"] == 0:
                self._first = (seq, ts_ns)
            self._appended = seq
            self._put_meta(
                last_seq=seq,
                last_ts_ns=ts_ns,
                msgs=self._meta["msgs"] + 1,
                bytes=self._meta["bytes"] + msg_size(subject, hdrs, payload),
                num_subjects=self._meta["num_subjects"] + (1 if new_subject else 0),
            )

    def store_many(self, rows: Sequence[tuple[int, str, bytes | None, bytes, int]],
                   applied_index: int | None = None) -> None:
        """Bulk append: multi-row INSERT statements (the applied index, if given, in the last
        row: a lazy commit then writes nothing else), the subject counts and the counters in
        memory (written by an eager commit; see the module docstring)."""
        if not rows:
            if applied_index is not None:
                self.set_applied_index(applied_index)
            return
        if len(rows) == 1 and applied_index is not None:
            self._store_one(rows[0], applied_index)
            return
        last = self._meta["last_seq"]
        size = 0
        per_subject: dict[str, int] = {}
        for seq, subject, hdrs, payload, _ in rows:
            if seq <= last:
                raise ValueError(f"sequence {seq} not after last sequence {last}")
            last = seq
            per_subject[subject] = per_subject.get(subject, 0) + 1
            size += msg_size(subject, hdrs, payload)
        with self.batch():
            if applied_index is None:
                self._insert_rows(rows)
            else:
                self._insert_rows(rows[:-1])
                self._conn.execute(_INSERT_APPLIED_SQL, (*rows[-1], applied_index))
                self._put_meta(applied_index=applied_index)
                self._applied_moved = True
                self._row_applied = (last, applied_index)
            new_subjects = sum(1 for subject, count in per_subject.items() if self._add_subject(subject, count))
            if self._meta["msgs"] == 0:
                self._first = (rows[0][0], rows[0][4])
            self._appended = last
            self._put_meta(
                last_seq=last,
                last_ts_ns=rows[-1][4],
                msgs=self._meta["msgs"] + len(rows),
                bytes=self._meta["bytes"] + size,
                num_subjects=self._meta["num_subjects"] + new_subjects,
            )

    def _store_one(self, row: tuple[int, str, bytes | None, bytes, int], applied_index: int) -> None:
        """`store_many([row], applied_index)` (a lone publish's commit) without the loops and
        keyword dicts of the general case: the same statement, the same counters. Outside a
        transaction, when the commit would be lazy (only the row, the applied index in it), the
        INSERT runs alone in autocommit mode: SQLite wraps it in its own transaction (the same
        locks, frames and fsync as BEGIN IMMEDIATE, INSERT, COMMIT, two statements fewer); the
        counters change only once it returned (committed)."""
        seq, subject, hdrs, payload, ts_ns = row
        meta = self._meta
        if seq <= meta["last_seq"]:
            raise ValueError(f"sequence {seq} not after last sequence {meta['last_seq']}")
        size = msg_size(subject, hdrs, payload)
        conn = self._conn
        if self._depth == 0 and seq - self._counted <= LAZY_ROWS_MAX and not conn.in_transaction:
            pending = self._pending
            have = pending.get(subject)
            new_subject = have is None and conn.execute(
                "SELECT 1 FROM subjects WHERE subject=?", (subject,)).fetchone() is None
            conn.execute(_INSERT_APPLIED_SQL, (seq, subject, hdrs, payload, ts_ns, applied_index))
            pending[subject] = 1 if have is None else have + 1
            meta["applied_index"] = applied_index
        else:
            with self.batch():
                conn.execute(_INSERT_APPLIED_SQL, (seq, subject, hdrs, payload, ts_ns, applied_index))
                meta = self._meta
                meta["applied_index"] = applied_index
                self._applied_moved = True
                self._row_applied = (seq, applied_index)
                new_subject = self._add_subject(subject, 1)
                self._appended = seq
                self._count_appended(meta, seq, ts_ns, size, new_subject)
            return
        self._count_appended(meta, seq, ts_ns, size, new_subject)

    def _count_appended(self, meta: dict[str, int], seq: int, ts_ns: int, size: int, new_subject: bool) -> None:
        if meta["msgs"] == 0:
            self._first = (seq, ts_ns)
        meta["last_seq"] = seq
        meta["last_ts_ns"] = ts_ns
        meta["msgs"] += 1
        meta["bytes"] += size
        if new_subject:
            meta["num_subjects"] += 1

    def _insert_rows(self, rows: Sequence[tuple[int, str, bytes | None, bytes, int]]) -> None:
        """INSERT the rows with multi-row statements of _INSERT_CHUNKS rows: one statement step
        for many rows (executemany steps, and releases the GIL, once per row; measured 2.5 ->
        1.6 us/row)."""
        at, n = 0, len(rows)
        for size in _INSERT_CHUNKS:
            sql = _INSERT_SQL[size]
            while n - at >= size:
                self._conn.execute(sql, list(chain.from_iterable(rows[at : at + size])))
                at += size

    def _add_subject(self, subject: str, count: int) -> bool:
        """`count` more messages on `subject`, pending until an eager commit; True if the
        subject is new (one lookup per subject the tail did not have yet)."""
        pending = self._pending
        have = pending.get(subject)
        if have is not None:
            pending[subject] = have + count
            return False
        pending[subject] = count
        return self._conn.execute("SELECT 1 FROM subjects WHERE subject=?", (subject,)).fetchone() is None

    def _bump_subject(self, subject: str, delta: int) -> bool:
        """Change a subject's count (after `_mark_eager`); True if the subject appeared or
        disappeared."""
        row = self._conn.execute("SELECT msgs FROM subjects WHERE subject=?", (subject,)).fetchone()
        count = (row[0] if row else 0) + delta
        if count <= 0:
            self._conn.execute("DELETE FROM subjects WHERE subject=?", (subject,))
            return True
        self._conn.execute("INSERT OR REPLACE INTO subjects(subject, msgs) VALUES (?, ?)", (subject, count))
        return row is None

    def load(self, seq: int) -> StoredMsg | None:
        return _row_msg(self._conn.execute(f"SELECT {_COLS} FROM messages WHERE seq=?", (seq,)).fetchone())

    def load_next(self, seq: int, filters: Sequence[str] | str | None = None) -> StoredMsg | None:
        where, args = self._filter_sql(filters)
        row = self._conn.execute(
            f"SELECT {_COLS} FROM messages WHERE seq>=? AND {where} ORDER BY seq LIMIT 1", (seq, *args)
        ).fetchone()
        return _row_msg(row)

    def load_range(self, seq: int, limit: int, filters: Sequence[str] | str | None = None,
                   bytes_max: int = 0) -> list[StoredMsg]:
        if limit <= 0:
            return []
        where, args = self._filter_sql(filters)
        cur = self._conn.execute(
            f"SELECT {_COLS} FROM messages WHERE seq>=? AND {where} ORDER BY seq LIMIT ?", (seq, *args, limit)
        )
        if bytes_max <= 0:
            return [StoredMsg(*row) for row in cur.fetchall()]
        out: list[StoredMsg] = []
        total = 0
        try:
            for row in cur:  # stepped row by row: the rows past bytes_max are never read
                out.append(StoredMsg(*row))
                total += len(row[3]) + len(row[2] or b"")
                if total >= bytes_max:
                    break
        finally:
            cur.close()
        return out

    def _filter_sql(self, filters: Sequence[str] | str | None) -> tuple[str, tuple[Any, ...]]:
        if not filters or filters == ">":
            return "1", ()
        if isinstance(filters, str):
            filters = (filters,)
        if all(not has_wildcard(f) for f in filters):
            return f"subject IN ({','.join('?' * len(filters))})", tuple(filters)
        return "(" + " OR ".join("subject_matches(?, subject)" for _ in filters) + ")", tuple(filters)

    def load_last_by_subject(self, filters: Sequence[str] | str | None) -> StoredMsg | None:
        if isinstance(filters, str) and not has_wildcard(filters):
            row = self._conn.execute(
                f"SELECT {_COLS} FROM messages WHERE subject=? ORDER BY seq DESC LIMIT 1", (filters,)
            ).fetchone()
            return _row_msg(row)
        where, args = self._filter_sql(filters)
        row = self._conn.execute(
            f"SELECT {_COLS} FROM messages WHERE {where} ORDER BY seq DESC LIMIT 1", args
        ).fetchone()
        return _row_msg(row)

    def remove(self, seq: int) -> bool:
        with self.batch():
            self._mark_eager()
            row = self._conn.execute(
                "DELETE FROM messages WHERE seq=? RETURNING subject, hdrs, payload", (seq,)
            ).fetchone()
            if row is None:
                return False
            if self._first is not None and self._first[0] == seq:
                self._first = None
            gone = self._bump_subject(row[0], -1)
            self._put_meta(
                msgs=self._meta["msgs"] - 1,
                bytes=self._meta["bytes"] - msg_size(row[0], row[1], row[2]),
                num_subjects=self._meta["num_subjects"] - (1 if gone else 0),
            )
            return True

    def purge(self, filters: str | None = None, before_seq: int | None = None, keep: int | None = None) -> int:
        whole = not filters or filters == ">"
        with self.batch():
            self._mark_eager()
            if whole and before_seq is not None and before_seq > self._meta["last_seq"] + 1:
                count = self._meta["msgs"]
                self.skip_to(before_seq)
                return count
            if whole and not keep and before_seq is None:
                return self._purge_all()
            where, args = self._filter_sql(filters)
            seqs = [r[0] for r in self._conn.execute(f"SELECT seq FROM messages WHERE {where} ORDER BY seq", args)]
            if keep:
                seqs = seqs[: max(len(seqs) - keep, 0)]
            if before_seq is not None:
                seqs = [s for s in seqs if s < before_seq]
            for seq in seqs:
                self.remove(seq)
            return len(seqs)

    def _purge_all(self) -> int:
        self._mark_eager()
        count = self._meta["msgs"]
        self._conn.execute("DELETE FROM messages")
        self._conn.execute("DELETE FROM subjects")
        self._first = None
        self._put_meta(msgs=0, bytes=0, num_subjects=0)
        return count

    def skip_to(self, seq: int) -> None:
        with self.batch():
            self._mark_eager()
            self._purge_all()
            if seq - 1 > self._meta["last_seq"]:
                self._put_meta(last_seq=seq - 1)

    # -- queries ----------------------------------------------------------------------------
    def last_seq_ts(self) -> tuple[int, int]:
        m = self._meta
        return m["last_seq"], m["last_ts_ns"]

    def state(self) -> StoreState:
        m = self._meta
        if m["msgs"] == 0:
            return StoreState(first_seq=empty_first_seq(m["last_seq"]), last_seq=m["last_seq"], last_ts_ns=m["last_ts_ns"])
        if self._first is None:
            self._first = self._conn.execute("SELECT seq, ts_ns FROM messages ORDER BY seq LIMIT 1").fetchone()
        first_seq, first_ts = self._first  # type: ignore[misc]
        return StoreState(
            messages=m["msgs"],
            bytes=m["bytes"],
            first_seq=first_seq,
            first_ts_ns=first_ts,
            last_seq=m["last_seq"],
            last_ts_ns=m["last_ts_ns"],
            num_subjects=m["num_subjects"],
            num_deleted=m["last_seq"] - first_seq + 1 - m["msgs"],
        )

    def subject_counts(self, filters: Sequence[str] | str | None = None) -> dict[str, int]:
        """The `subjects` table plus the tail's pending counts, read in one transaction."""
        where, args = self._filter_sql(filters)
        with self._read_view():
            counts = dict(self._conn.execute(f"SELECT subject, msgs FROM subjects WHERE {where}", args).fetchall())
            for subject, count in self._pending.items():
                if filter_matches(filters, subject):
                    counts[subject] = counts.get(subject, 0) + count
        return counts

    def _read_view(self) -> _ReadView:
        return _ReadView(self)

    def num_pending(self, after_seq: int, filters: Sequence[str] | str | None = None) -> int:
        where, args = self._filter_sql(filters)
        row = self._conn.execute(f"SELECT count(*) FROM messages WHERE seq>? AND {where}", (after_seq, *args))
        return int(row.fetchone()[0])

    def num_after(self, after_seq: int) -> int:
        """From the committed counters when there is no gap between the first and last
        message (the usual limits stream): no rows counted. Otherwise count the smaller side
        of `after_seq`. One read transaction, so the counters and rows agree."""
        if self._depth:  # inside our own write batch the counters in the table lag behind
            return self.num_pending(after_seq)
        count = self._num_after(after_seq, count_rows=True)
        assert count is not None
        return count

    def num_after_from_counters(self, after_seq: int) -> int | None:
        if self._depth:
            return None
        return self._num_after(after_seq, count_rows=False)

    def _num_after(self, after_seq: int, count_rows: bool) -> int | None:
        conn = self._conn
        with self._read_view():
            msgs, last = self._meta["msgs"], self._meta["last_seq"]
            first = conn.execute("SELECT min(seq) FROM messages").fetchone()[0]
            if not msgs or first is None or after_seq >= last:
                return 0
            if after_seq < first:
                return msgs
            if last - first + 1 == msgs:
                return last - after_seq
            if not count_rows:
                return None
            if after_seq - first < last - after_seq:
                below = conn.execute("SELECT count(*) FROM messages WHERE seq<=?", (after_seq,)).fetchone()[0]
                return int(msgs - below)
            return int(conn.execute("SELECT count(*) FROM messages WHERE seq>?", (after_seq,)).fetchone()[0])

    def seq_for_time(self, ts_ns: int) -> int | None:
        """Binary search by sequence (timestamps never decrease along sequences): O(log n)
        lookups of the first message at or after a sequence."""
        conn = self._conn
        with self._read_view():
            row = conn.execute("SELECT seq, ts_ns FROM messages ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None or row[1] < ts_ns:
                return None
            found = row[0]  # the earliest message known to be at or after ts_ns
            low = conn.execute("SELECT min(seq) FROM messages").fetchone()[0]
            high = found - 1  # any earlier answer is a message in [low, high]
            while low <= high:
                mid = (low + high) // 2
                seq, ts = conn.execute(_NEXT_TS_SQL, (mid,)).fetchone()  # exists: found > mid
                if seq > high:  # no message in [mid, high]
                    high = mid - 1
                elif ts >= ts_ns:
                    found, high = seq, mid - 1
                else:
                    low = seq + 1
            return found

    def last_seqs_per_subject(self, filters: Sequence[str] | str | None = None) -> list[int]:
        where, args = self._filter_sql(filters)
        rows = self._conn.execute(f"SELECT max(seq) FROM messages WHERE {where} GROUP BY subject", args)
        return sorted(r[0] for r in rows)

    def deleted_seqs(self, limit: int = 100_000) -> list[int]:
        out: list[int] = []
        prev = None
        for (seq,) in self._conn.execute("SELECT seq FROM messages ORDER BY seq"):
            if prev is not None and seq > prev + 1:
                out.extend(range(prev + 1, min(seq, prev + 1 + limit - len(out))))
                if len(out) >= limit:
                    return out
            prev = seq
        if prev is not None:
            out.extend(range(prev + 1, min(self._meta["last_seq"] + 1, prev + 1 + limit - len(out))))
        return out

    def iter_messages(self) -> Iterator[StoredMsg]:
        last = 0
        while True:  # paged so a long scan holds no cursor across caller writes
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM messages WHERE seq>? ORDER BY seq LIMIT 1000", (last,)
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield StoredMsg(row[0], row[1], row[2], row[3], row[4])
            last = rows[-1][0]

    # -- applied index and consumers ----------------------------------------------------------
    def applied_index(self) -> int:
        return self._meta["applied_index"]

    def set_applied_index(self, index: int) -> None:
        with self.batch():
            self._put_meta(applied_index=index)
            self._applied_moved = True

    def save_consumer(self, name: str, state: bytes) -> None:
        with self.batch():
            self._conn.execute("INSERT OR REPLACE INTO consumers(name, state) VALUES (?, ?)", (name, bytes(state)))

    def load_consumer(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT state FROM consumers WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete_consumer(self, name: str) -> bool:
        with self.batch():
            return self._conn.execute("DELETE FROM consumers WHERE name=?", (name,)).rowcount > 0

    def consumer_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM consumers ORDER BY name")]

    def save_msg_id(self, msg_id: str, seq: int, ts_ns: int) -> None:
        with self.batch():
            self._conn.execute(
                "INSERT OR REPLACE INTO msg_ids(msg_id, seq, ts_ns) VALUES (?, ?, ?)", (msg_id, seq, ts_ns)
            )

    def msg_ids(self) -> list[tuple[str, int, int]]:
        rows = self._conn.execute("SELECT msg_id, seq, ts_ns FROM msg_ids ORDER BY ts_ns, seq")
        return [(r[0], r[1], r[2]) for r in rows]

    def prune_msg_ids(self, before_ts_ns: int, keep_seq: int) -> None:
        with self.batch():
            self._conn.execute("DELETE FROM msg_ids WHERE ts_ns<? AND seq<>?", (before_ts_ns, keep_seq))

    def _clear(self) -> None:
        with self.batch():
            self._mark_eager()
            self._pending = {}
            self._conn.execute("DELETE FROM messages")
            self._conn.execute("DELETE FROM subjects")
            self._conn.execute("DELETE FROM consumers")
            self._conn.execute("DELETE FROM msg_ids")
            self._first = None
            self._put_meta(last_seq=0, last_ts_ns=0, msgs=0, bytes=0, num_subjects=0)

    def _set_last(self, seq: int, ts_ns: int) -> None:
        with self.batch():
            self._mark_eager()
            self._put_meta(last_seq=seq, last_ts_ns=ts_ns)

    def backup_to(self, path: str | Path) -> None:
        """Copy the whole database (consistent, online) to `path` with SQLite's backup API.
        The copy is itself a valid store file (unlike the portable `snapshot_to_file` format)."""
        dest = sqlite3.connect(str(path))
        try:
            self._conn.backup(dest)
        finally:
            dest.close()
