"""SQLite LogStore: one database file per server holding the Raft state of all its groups.

The file is in WAL mode with `synchronous=FULL`, so a committed transaction is fsynced before
`save()` returns (a batch saved with `sync=False`, which only moves commit indexes, runs at
`synchronous=NORMAL`: consistent, made durable by the next synced commit); a whole batch of
GroupWrites (many groups) is one transaction, one fsync.
Tables are STRICT with a schema version in `store_meta`. Every entry row, hard-state row and
snapshot row carries a crc32 over its contents (group name included, so a row copied to the
wrong group also fails).

A file that SQLite cannot open or that fails `PRAGMA quick_check` is renamed aside (never
deleted) and a fresh file records that fact, so every group without new state loads as
repair-needed, across restarts too.

`load()` reads a group's rows in index order and stops at the first row that fails its checksum,
breaks contiguity or decreases the term; it returns the verified prefix together with the errors.
A committed index beyond the verified log, or a database that SQLite itself reports as
malformed, is also an error. It never hides a shorter history: the driver sees `repair_needed`.

A sqlite3 connection is not safe for concurrent use: callers serialize access (the async
`StoreWorker` runs everything on one thread at a time).
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import struct
import zlib
from collections.abc import Iterable, Sequence

from raft.storage.base import (
    CompactionError,
    GroupWrite,
    LoadedState,
    LogStore,
    StorageError,
    check_write,
)
from raft.types import Entry, EntryKind, GroupId, HardState, Membership, Snapshot, SnapshotMeta

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS hard_state (
    grp TEXT PRIMARY KEY, term INTEGER NOT NULL, vote TEXT, commit_index INTEGER NOT NULL,
    checksum INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS log_entry (
    grp TEXT NOT NULL, idx INTEGER NOT NULL, term INTEGER NOT NULL, kind INTEGER NOT NULL,
    data BLOB NOT NULL, checksum INTEGER NOT NULL, PRIMARY KEY (grp, idx)) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot (
    grp TEXT PRIMARY KEY, idx INTEGER NOT NULL, term INTEGER NOT NULL, membership TEXT NOT NULL,
    data BLOB, checksum INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS member_marker (
    grp TEXT PRIMARY KEY) STRICT;
CREATE TABLE IF NOT EXISTS repair_pending (
    grp TEXT PRIMARY KEY, reason TEXT NOT NULL) STRICT;
"""


def entry_checksum(group: GroupId, entry: Entry) -> int:
    head = struct.pack(">qqB", entry.term, entry.index, int(entry.kind))
    return zlib.crc32(entry.data, zlib.crc32(group.encode(), zlib.crc32(head)))


def hard_state_checksum(group: GroupId, hs: HardState) -> int:
    return zlib.crc32(f"{group}|{hs.term}|{hs.vote}|{hs.commit}".encode())


def encode_membership(m: Membership) -> str:
    return json.dumps([sorted(m.voters), sorted(m.learners), sorted(m.voters_outgoing)])


def decode_membership(text: str) -> Membership:
    voters, learners, outgoing = json.loads(text)
    return Membership(frozenset(voters), frozenset(learners), frozenset(outgoing))


def snapshot_checksum(group: GroupId, meta: SnapshotMeta, data: bytes | None) -> int:
    head = f"{group}|{meta.index}|{meta.term}|{encode_membership(meta.membership)}".encode()
    return zlib.crc32(data or b"", zlib.crc32(head))


class SqliteLogStore(LogStore):
    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.open_errors: tuple[str, ...] = ()
        try:
            self._open()
            problems = self._quick_check()
        except sqlite3.DatabaseError as exc:
            problems = (f"cannot open: {exc}",)
        if problems:
            self._quarantine(problems)

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._sync = True
        self._db.executescript(_SCHEMA)
        self._check_schema_version()
        row = self._db.execute("SELECT value FROM store_meta WHERE key='quarantine'").fetchone()
        self._quarantine_note = row[0] if row else None

    def _quarantine(self, problems: tuple[str, ...]) -> None:
        """Move a damaged file aside (never delete it) and start a fresh one that remembers it.

        Groups with no hard state in the fresh file load as repair-needed, since what this
        server once promised them is gone."""
        self._db.close()
        for n in range(1, 1000):
            target = self.path.with_name(f"{self.path.name}.quarantined-{n}")
            if not target.exists():
                break
        for suffix in ("", "-wal", "-shm"):
            src = pathlib.Path(str(self.path) + suffix)
            if src.exists():
                src.rename(pathlib.Path(str(target) + suffix))
        note = f"{'; '.join(problems)} (moved to {target.name})"
        self._open()
        self._db.execute(
            "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('quarantine', ?)", (note,)
        )
        self._quarantine_note = note
        self.open_errors = problems

    def _check_schema_version(self) -> None:
        row = self._db.execute("SELECT value FROM store_meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO store_meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise StorageError(f"schema version {row[0]}, expected {SCHEMA_VERSION}")

    def _quick_check(self) -> tuple[str, ...]:
        try:
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return (f"quick_check failed: {exc}",)
        problems = [r[0] for r in rows if r[0] != "ok"]
        return tuple(f"sqlite quick_check: {p}" for p in problems)

    # ---- writes -------------------------------------------------------------------------------

    def save(self, batch: Sequence[GroupWrite], sync: bool = True) -> None:
        for write in batch:
            check_write(write)
        if sync != self._sync:  # WAL: NORMAL skips the fsync; the next FULL commit covers it
            self._db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
            self._sync = sync
        self._transaction(lambda: [self._apply(w) for w in batch])

    def _transaction(self, body) -> None:  # type: ignore[no-untyped-def]
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise StorageError(str(exc)) from exc
        try:
            body()
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise StorageError(str(exc)) from exc
            raise

    def _apply(self, write: GroupWrite) -> None:
        if write.snapshot_meta is not None:
            self._install_snapshot(write.group, write.snapshot_meta, write.snapshot_data)
        if write.entries:
            self._append(write.group, write.entries)
        if write.hard_state is not None:
            self._put_hard_state(write.group, write.hard_state)

    def _install_snapshot(self, group: GroupId, meta: SnapshotMeta, data: bytes | None) -> None:
        row = self._db.execute(
            "SELECT term FROM log_entry WHERE grp=? AND idx=?", (group, meta.index)
        ).fetchone()
        if row is not None and row[0] == meta.term:
            self._db.execute("DELETE FROM log_entry WHERE grp=? AND idx<=?", (group, meta.index))
        else:
            self._db.execute("DELETE FROM log_entry WHERE grp=?", (group,))
        self._put_snapshot(group, meta, data)

    def _put_snapshot(self, group: GroupId, meta: SnapshotMeta, data: bytes | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot(grp, idx, term, membership, data, checksum)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                group,
                meta.index,
                meta.term,
                encode_membership(meta.membership),
                data,
                snapshot_checksum(group, meta, data),
            ),
        )

    def _append(self, group: GroupId, entries: Sequence[Entry]) -> None:
        self._db.execute("DELETE FROM log_entry WHERE grp=? AND idx>=?", (group, entries[0].index))
        self._db.executemany(
            "INSERT INTO log_entry(grp, idx, term, kind, data, checksum) VALUES (?,?,?,?,?,?)",
            [
                (group, e.index, e.term, int(e.kind), e.data, entry_checksum(group, e))
                for e in entries
            ],
        )

    def _put_hard_state(self, group: GroupId, hs: HardState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hard_state(grp, term, vote, commit_index, checksum)"
            " VALUES (?, ?, ?, ?, ?)",
            (group, hs.term, hs.vote, hs.commit, hard_state_checksum(group, hs)),
        )

    def compact(self, group: GroupId, upto_index: int) -> None:
        row = self._db.execute("SELECT idx FROM snapshot WHERE grp=?", (group,)).fetchone()
        covered = row[0] if row else 0
        if upto_index > covered:
            raise CompactionError(f"compact to {upto_index} beyond snapshot at {covered}")
        self._transaction(
            lambda: self._db.execute(
                "DELETE FROM log_entry WHERE grp=? AND idx<=?", (group, upto_index)
            )
        )

    def save_snapshot(self, group: GroupId, snapshot: Snapshot) -> None:
        self._transaction(lambda: self._put_snapshot(group, snapshot.meta, snapshot.data))

    def mark_member(self, group: GroupId) -> None:
        self._transaction(
            lambda: self._db.execute(
                "INSERT OR IGNORE INTO member_marker(grp) VALUES (?)", (group,)
            )
        )

    def set_repair_pending(self, group: GroupId, reason: str | None) -> None:
        if reason is None:
            sql, args = "DELETE FROM repair_pending WHERE grp=?", (group,)
        else:
            sql = "INSERT OR REPLACE INTO repair_pending(grp, reason) VALUES (?, ?)"
            args = (group, reason)  # type: ignore[assignment]
        self._transaction(lambda: self._db.execute(sql, args))

    def forget_group(self, group: GroupId) -> None:
        def body() -> None:
            tables = ("log_entry", "hard_state", "snapshot", "member_marker", "repair_pending")
            for table in tables:
                self._db.execute(f"DELETE FROM {table} WHERE grp=?", (group,))  # noqa: S608

        self._transaction(body)

    # ---- reads --------------------------------------------------------------------------------

    def groups(self) -> list[GroupId]:
        found: set[GroupId] = set()
        for table in ("hard_state", "snapshot", "member_marker"):
            found.update(r[0] for r in self._db.execute(f"SELECT grp FROM {table}"))  # noqa: S608
        found.update(r[0] for r in self._db.execute("SELECT DISTINCT grp FROM log_entry"))
        return sorted(found)

    def load_snapshot(self, group: GroupId) -> Snapshot | None:
        snapshot, errors = self._read_snapshot(group)
        if errors:
            raise StorageError("; ".join(errors))
        return snapshot

    def _read_snapshot(self, group: GroupId) -> tuple[Snapshot | None, list[str]]:
        row = self._db.execute(
            "SELECT idx, term, membership, data, checksum FROM snapshot WHERE grp=?", (group,)
        ).fetchone()
        if row is None:
            return None, []
        idx, term, membership, data, checksum = row
        try:
            meta = SnapshotMeta(idx, term, decode_membership(membership))
        except (ValueError, TypeError) as exc:
            return None, [f"snapshot meta undecodable: {exc}"]
        if snapshot_checksum(group, meta, data) != checksum:
            return None, [f"snapshot at {idx} fails its checksum"]
        return Snapshot(meta, data or b""), []

    def _read_hard_state(self, group: GroupId) -> tuple[HardState, list[str]]:
        row = self._db.execute(
            "SELECT term, vote, commit_index, checksum FROM hard_state WHERE grp=?", (group,)
        ).fetchone()
        if row is None:
            return HardState(), []
        hs = HardState(row[0], row[1], row[2])
        if hard_state_checksum(group, hs) != row[3]:
            return HardState(), ["hard state fails its checksum"]
        return hs, []

    def _read_entries(self, group: GroupId, after: int) -> tuple[list[Entry], list[str]]:
        rows = self._db.execute(
            "SELECT idx, term, kind, data, checksum FROM log_entry WHERE grp=? AND idx>?"
            " ORDER BY idx",
            (group, after),
        )
        return verify_entries(group, after, rows)

    def load(self, group: GroupId) -> LoadedState:
        errors: list[str] = []
        hs, snapshot, entries, was_member, repair = HardState(), None, [], False, None
        try:
            was_member = self._is_marked(group)
            row = self._db.execute(
                "SELECT reason FROM repair_pending WHERE grp=?", (group,)
            ).fetchone()
            repair = row[0] if row else None
            hs, hs_errors = self._read_hard_state(group)
            snapshot, snap_errors = self._read_snapshot(group)
            after = snapshot.meta.index if snapshot else 0
            entries, entry_errors = self._read_entries(group, after)
            errors += hs_errors + snap_errors + entry_errors
            if self._quarantine_note and not self._has_hard_state(group):
                errors.append(f"store was quarantined: {self._quarantine_note}")
        except sqlite3.DatabaseError as exc:
            errors.append(f"database error while loading: {exc}")
        last = entries[-1].index if entries else (snapshot.meta.index if snapshot else 0)
        if hs.commit > last:
            errors.append(f"commit index {hs.commit} beyond verified log end {last}")
        if entries and entries[-1].term > hs.term:
            errors.append(f"entry term {entries[-1].term} above hard-state term {hs.term}")
        return LoadedState(hs, snapshot, tuple(entries), tuple(errors), was_member, repair)

    def _has_hard_state(self, group: GroupId) -> bool:
        row = self._db.execute("SELECT 1 FROM hard_state WHERE grp=?", (group,)).fetchone()
        return row is not None

    def _is_marked(self, group: GroupId) -> bool:
        row = self._db.execute("SELECT 1 FROM member_marker WHERE grp=?", (group,)).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()


def verify_entries(
    group: GroupId, after: int, rows: Iterable[tuple[int, int, int, bytes, int]]
) -> tuple[list[Entry], list[str]]:
    """The longest verified prefix of `rows` (index order) and the first error found, if any."""
    entries: list[Entry] = []
    expected, last_term = after + 1, 0
    try:
        for idx, term, kind, data, checksum in rows:
            if idx != expected:
                return entries, [f"log gap: expected index {expected}, found {idx}"]
            try:
                entry = Entry(term, idx, EntryKind(kind), data)
            except ValueError:
                return entries, [f"entry {idx} has unknown kind {kind}"]
            if entry_checksum(group, entry) != checksum:
                return entries, [f"entry {idx} fails its checksum"]
            if term < last_term:
                return entries, [f"entry {idx} term {term} below previous term {last_term}"]
            entries.append(entry)
            expected, last_term = idx + 1, term
    except sqlite3.DatabaseError as exc:
        return entries, [f"database error reading entry {expected}: {exc}"]
    return entries, []
