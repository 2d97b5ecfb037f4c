# pure-core
"""The in-memory Raft log of one node: a snapshot offset followed by entries.

Indexes start at 1. Everything at or below `snap_index` lives only in the snapshot (its term is
remembered, its entries are not). Entries above `stable_index` have not been handed to storage
yet: they go out in the next `Ready`. A conflict truncates a suffix and pulls `stable_index` back,
so the next `Ready.entries` starts at the first overwritten index (storage overwrites from there).

`committed` and `applied` are kept here because they bound what may be truncated and what the
state machine sees. The positions of CONFIG entries are indexed so that the latest membership can
be found without scanning the whole log.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import attrs

from raft.types import Entry, EntryKind, Snapshot

ENTRY_OVERHEAD_BYTES = 24  # rough per-entry framing cost counted against message byte limits


def entry_size_bytes(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD_BYTES


@attrs.define
class RaftLog:
    snapshot: Snapshot = Snapshot()
    entries: list[Entry] = attrs.field(factory=list)  # indexes snap_index+1 .. last_index
    stable_index: int = 0  # highest index handed to storage
    committed: int = 0
    applied: int = 0
    config_indexes: list[int] = attrs.field(factory=list)  # CONFIG entries among `entries`

    @classmethod
    def restore(cls, snapshot: Snapshot | None, entries: Sequence[Entry], commit: int) -> RaftLog:
        """A log as found in storage at start-up (everything in it is stable)."""
        log = cls(snapshot=snapshot or Snapshot())
        log.stable_index = log.snap_index
        log.committed = log.applied = log.snap_index
        if entries:
            assert entries[0].index == log.snap_index + 1, "entries must follow the snapshot"
            log._append_raw(entries)
        log.stable_index = log.last_index()
        log.committed = max(log.snap_index, min(commit, log.last_index()))
        return log

    # ---- positions and terms -------------------------------------------------------------
    @property
    def snap_index(self) -> int:
        return self.snapshot.meta.index

    @property
    def snap_term(self) -> int:
        return self.snapshot.meta.term

    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at index, or None when it is compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index():
            return None
        return self.entries[index - self.snap_index - 1].term

    def entry(self, index: int) -> Entry:
        assert self.snap_index < index <= self.last_index(), index
        return self.entries[index - self.snap_index - 1]

    def match_term(self, index: int, term: int) -> bool:
        t = self.term(index)
        return t is not None and t == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log (last index/term) is at least as up to date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    # ---- conflicts -----------------------------------------------------------------------
    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours; 0 if all are present."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= `index` whose term is <= `term` (fast backtracking), with its term.
        Falls back to the snapshot index when nothing in memory qualifies."""
        index = min(index, self.last_index())
        while index > self.snap_index:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.snap_index, self.snap_term

    # ---- mutation --------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries; if the first does not follow our last, truncate a suffix first.
        Committed entries are never truncated."""
        if not entries:
            return
        first = entries[0].index
        assert self.snap_index < first <= self.last_index() + 1, (first, self.last_index())
        if first <= self.last_index():
            assert first > self.committed, f"truncating committed entry {first}"
            self._truncate_from(first)
        self._append_raw(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of APPEND: None if (prev_index, prev_term) does not match; else append
        what is new, advance the commit, and return the last index the leader's message covers."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def _truncate_from(self, index: int) -> None:
        del self.entries[index - self.snap_index - 1 :]
        del self.config_indexes[bisect.bisect_left(self.config_indexes, index) :]
        self.stable_index = min(self.stable_index, index - 1)

    def _append_raw(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            assert e.index == self.last_index() + 1, (e.index, self.last_index())
            assert e.term >= self.last_term(), "terms in a log never decrease"
            self.entries.append(e)
            if e.kind is EntryKind.CONFIG:
                self.config_indexes.append(e.index)

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        assert index <= self.last_index(), (index, self.last_index())
        self.committed = index
        return True

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed or index <= self.snap_index, index
        self.applied = max(self.applied, index)

    def stable_to(self, index: int, term: int) -> None:
        """Storage has persisted up to (index, term); ignored if that entry was since replaced."""
        if self.match_term(index, term) and index > self.stable_index:
            self.stable_index = index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to snapshot.meta.index (which we hold, with the same term)."""
        index = snapshot.meta.index
        assert self.snap_index < index <= self.applied, (index, self.applied)
        assert self.term(index) == snapshot.meta.term
        del self.entries[: index - self.snap_index]
        del self.config_indexes[: bisect.bisect_right(self.config_indexes, index)]
        self.snapshot = snapshot

    def install(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from a leader."""
        index = snapshot.meta.index
        assert index > self.committed, (index, self.committed)
        self.entries.clear()
        self.config_indexes.clear()
        self.snapshot = snapshot
        self.stable_index = index  # the snapshot itself travels in Ready.snapshot
        self.committed = index

    # ---- reading -----------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); with max_bytes, as many as fit (at least one)."""
        assert self.snap_index < lo <= hi <= self.last_index() + 1, (lo, hi, self.last_index())
        out = self.entries[lo - self.snap_index - 1 : hi - self.snap_index - 1]
        if max_bytes is None:
            return out
        total = 0
        for n, e in enumerate(out):
            total += entry_size_bytes(e)
            if total > max_bytes and n > 0:
                return out[:n]
        return out

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable_index - self.snap_index :]

    def committed_unapplied(self, max_entries: int) -> list[Entry]:
        lo = max(self.applied, self.snap_index) + 1
        hi = min(self.committed, lo + max_entries - 1)
        return self.slice(lo, hi + 1) if hi >= lo else []

    def latest_config_at(self, index: int) -> Entry | None:
        """The last CONFIG entry at or below `index` still in memory (None: see the snapshot)."""
        pos = bisect.bisect_right(self.config_indexes, index)
        return self.entry(self.config_indexes[pos - 1]) if pos else None
