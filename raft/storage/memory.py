"""In-memory LogStore for tests and the simulator-free unit tests.

It keeps per-group state in dicts and follows exactly the write rules of `raft.storage.base`.
Nothing is ever lost, so `load()` never reports verify errors; a test can model a wiped disk by
creating a fresh store and copying the membership markers (`wiped_copy()`).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from raft.storage.base import (
    CompactionError,
    GroupWrite,
    LoadedState,
    LogStore,
    check_write,
)
from raft.types import Entry, GroupId, HardState, Snapshot, SnapshotMeta


@attrs.define
class _GroupState:
    hard_state: HardState | None = None
    snapshot_meta: SnapshotMeta | None = None
    snapshot_data: bytes | None = None
    entries: list[Entry] = attrs.Factory(list)


def cut_for_snapshot(entries: list[Entry], meta: SnapshotMeta) -> list[Entry]:
    """Entries kept when installing `meta`: the suffix after it if the log matches it, else none."""
    matching = any(e.index == meta.index and e.term == meta.term for e in entries)
    if not matching:
        return []
    return [e for e in entries if e.index > meta.index]


def append_overwriting(entries: list[Entry], new: Sequence[Entry]) -> list[Entry]:
    if not new:
        return entries
    first = new[0].index
    return [e for e in entries if e.index < first] + list(new)


class MemoryLogStore(LogStore):
    def __init__(self) -> None:
        self._groups: dict[GroupId, _GroupState] = {}
        self._markers: set[GroupId] = set()
        self._repairs: dict[GroupId, str] = {}
        self.save_calls = 0  # number of save() batches, for group-commit tests

    def _state(self, group: GroupId) -> _GroupState:
        return self._groups.setdefault(group, _GroupState())

    def save(self, batch: Sequence[GroupWrite], sync: bool = True) -> None:
        for write in batch:
            check_write(write)
        for write in batch:
            self._apply(write)
        self.save_calls += 1

    def _apply(self, write: GroupWrite) -> None:
        state = self._state(write.group)
        if write.snapshot_meta is not None:
            state.entries = cut_for_snapshot(state.entries, write.snapshot_meta)
            state.snapshot_meta = write.snapshot_meta
            state.snapshot_data = write.snapshot_data
        state.entries = append_overwriting(state.entries, write.entries)
        if write.hard_state is not None:
            state.hard_state = write.hard_state

    def load(self, group: GroupId) -> LoadedState:
        state = self._groups.get(group, _GroupState())
        snapshot = None
        if state.snapshot_meta is not None:
            snapshot = Snapshot(state.snapshot_meta, state.snapshot_data or b"")
        after = snapshot.meta.index if snapshot else 0
        return LoadedState(
            hard_state=state.hard_state or HardState(),
            snapshot=snapshot,
            entries=tuple(e for e in state.entries if e.index > after),
            was_member=group in self._markers,
            repair_pending=self._repairs.get(group),
        )

    def compact(self, group: GroupId, upto_index: int) -> None:
        state = self._state(group)
        covered = state.snapshot_meta.index if state.snapshot_meta else 0
        if upto_index > covered:
            raise CompactionError(f"compact to {upto_index} beyond snapshot at {covered}")
        state.entries = [e for e in state.entries if e.index > upto_index]

    def groups(self) -> list[GroupId]:
        return sorted(set(self._groups) | self._markers)

    def save_snapshot(self, group: GroupId, snapshot: Snapshot) -> None:
        state = self._state(group)
        state.snapshot_meta = snapshot.meta
        state.snapshot_data = snapshot.data

    def load_snapshot(self, group: GroupId) -> Snapshot | None:
        state = self._groups.get(group)
        if state is None or state.snapshot_meta is None:
            return None
        return Snapshot(state.snapshot_meta, state.snapshot_data or b"")

    def mark_member(self, group: GroupId) -> None:
        self._markers.add(group)

    def set_repair_pending(self, group: GroupId, reason: str | None) -> None:
        if reason is None:
            self._repairs.pop(group, None)
        else:
            self._repairs[group] = reason

    def forget_group(self, group: GroupId) -> None:
        self._groups.pop(group, None)
        self._markers.discard(group)
        self._repairs.pop(group, None)

    def wiped_copy(self) -> MemoryLogStore:
        """A store as after a disk wipe that kept only the server-level membership markers."""
        fresh = MemoryLogStore()
        fresh._markers = set(self._markers)
        fresh._repairs = dict(self._repairs)
        return fresh
