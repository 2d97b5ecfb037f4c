"""The LogStore interface: durable Raft state for all groups of one server.

A server keeps one LogStore for every Raft group it hosts. The driver collects the Ready of many
groups and hands them to `save()` as one batch of `GroupWrite`s; an implementation applies the
whole batch atomically and makes it durable with one sync (group commit across groups), so the
cost of an fsync is shared by every proposal that arrived while the previous one ran.

Applying one GroupWrite, in order:
1. `snapshot_meta` (if any) installs a snapshot: the log is cut at the snapshot index. Entries
   after it are kept only when the log holds an entry at exactly (meta.index, meta.term);
   otherwise the whole log is dropped (Raft paper, section 7).
2. `entries` (if any) are appended, first deleting every stored entry at or after entries[0].index
   (a new leader may overwrite an uncommitted suffix).
3. `hard_state` (if any) replaces the stored one.

`load()` never silently serves a shorter history: it returns what it could verify plus the
`verify_errors` it found, and `repair_needed` tells the driver to construct the node so that it
does not vote or lead until it has caught up from a quorum.

The membership marker records that this server has been a member of a group. A store whose
group state is empty but whose marker is set has lost its disk and is also repair-needed. So is
a group whose durable repair note is set: repair began and has not finished (the driver sets
it when it loads a repair-needed group and clears it on the core's "raft.repair_done").
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import attrs

from raft.types import Entry, GroupId, HardState, Snapshot, SnapshotMeta


class StorageError(Exception):
    """A store operation failed; the store may not be used for writes afterwards."""


class CompactionError(StorageError):
    """`compact()` was asked to drop entries not covered by a stored snapshot."""


@attrs.frozen
class GroupWrite:
    group: GroupId
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot_meta: SnapshotMeta | None = None
    snapshot_data: bytes | None = None  # stored with the meta when given (small snapshots)

    def is_empty(self) -> bool:
        return self.hard_state is None and not self.entries and self.snapshot_meta is None


@attrs.frozen
class LoadedState:
    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    verify_errors: tuple[str, ...] = ()
    was_member: bool = False
    repair_pending: str | None = None  # durable: set when repair began, cleared when it ended

    @property
    def is_empty(self) -> bool:
        return self.hard_state == HardState() and self.snapshot is None and not self.entries

    @property
    def repair_needed(self) -> bool:
        """Corrupt or torn state, a wiped disk on a server that was once a member, or a repair
        that began before a restart and has not finished."""
        if self.verify_errors or self.repair_pending is not None:
            return True
        return self.was_member and self.is_empty

    @property
    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.meta.index if self.snapshot else 0


class LogStore(abc.ABC):
    """Synchronous interface; shells run it off the event loop (see raft.storage.worker)."""

    @abc.abstractmethod
    def save(self, batch: Sequence[GroupWrite], sync: bool = True) -> None:
        """Apply every write in one atomic step, durable before returning when `sync`.

        With `sync=False` (a batch that only moves commit indexes) the step may be lost on
        power failure, but a later synced batch makes it durable too, in order."""

    @abc.abstractmethod
    def load(self, group: GroupId) -> LoadedState: ...

    @abc.abstractmethod
    def compact(self, group: GroupId, upto_index: int) -> None:
        """Drop entries with index <= upto_index. The stored snapshot must cover upto_index."""

    @abc.abstractmethod
    def groups(self) -> list[GroupId]:
        """Groups with any stored state or membership marker, sorted."""

    @abc.abstractmethod
    def save_snapshot(self, group: GroupId, snapshot: Snapshot) -> None:
        """Store snapshot data and meta (compaction is a separate `compact()` call)."""

    @abc.abstractmethod
    def load_snapshot(self, group: GroupId) -> Snapshot | None: ...

    @abc.abstractmethod
    def mark_member(self, group: GroupId) -> None:
        """Durably record that this server is (or was) a member of `group`."""

    @abc.abstractmethod
    def set_repair_pending(self, group: GroupId, reason: str | None) -> None:
        """Durably note that `group` is being repaired (None: the repair finished), so that a
        restart in the middle of a repair still comes back repair-needed."""

    @abc.abstractmethod
    def forget_group(self, group: GroupId) -> None:
        """Delete all state of a group, marker included (a committed removal only)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def check_write(write: GroupWrite) -> None:
    """Reject malformed writes before they touch a store."""
    entries = write.entries
    for prev, cur in zip(entries, entries[1:]):
        if cur.index != prev.index + 1:
            raise ValueError(f"entries not contiguous: {prev.index} then {cur.index}")
        if cur.term < prev.term:
            raise ValueError(f"entry terms decrease at index {cur.index}")
    if entries and entries[0].index < 1:
        raise ValueError("entry indexes start at 1")
    meta = write.snapshot_meta
    if meta is not None and entries and entries[0].index <= meta.index:
        raise ValueError("entries written with a snapshot must follow it")
