"""SimDisk layers and faults, and the simulated Raft storage's checksums and repair detection."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft.testing.simdisk import CorruptKind, SimDisk
from raft.testing.simstore import SimRaftStorage
from raft.types import Entry, HardState, Membership, Snapshot, SnapshotMeta


def test_fsync_moves_written_to_durable_and_power_loss_keeps_durable() -> None:
    disk = SimDisk(random.Random(0))
    disk.append("a", "f", b"hello")
    disk.fsync("a", "f")
    disk.append("a", "f", b" world")
    assert disk.read("a", "f") == b"hello world"  # a crashed process would read this back
    # seeds where the torn tail is dropped entirely / kept whole / cut
    outcomes = set()
    for seed in range(40):
        d = SimDisk(random.Random(seed))
        d.append("a", "f", b"hello")
        d.fsync("a", "f")
        d.append("a", "f", b" world")
        d.power_loss("a")
        data = d.read("a", "f")
        assert data is not None and data.startswith(b"hello") and b"hello world".startswith(data)
        outcomes.add(data)
    assert {b"hello", b"hello world"} <= outcomes and len(outcomes) > 2


def test_unsynced_new_file_vanishes_and_replace_is_atomic() -> None:
    disk = SimDisk(random.Random(0))
    disk.append("a", "new", b"x")
    disk.replace("a", "m", b"v1")
    disk.fsync("a", "m")
    disk.replace("a", "m", b"v2-longer")
    disk.power_loss("a")
    assert not disk.exists("a", "new")
    assert disk.read("a", "m") == b"v1"
    disk.replace("a", "m", b"v3")
    disk.fsync("a", "m")
    disk.power_loss("a")
    assert disk.read("a", "m") == b"v3"


def test_corruptions_change_bytes() -> None:
    disk = SimDisk(random.Random(5))
    disk.append("a", "f", bytes(range(200)))
    disk.fsync("a", "f")
    before = disk.read("a", "f")
    c = disk.corrupt("a", CorruptKind.BITFLIP)
    assert c is not None and c.kind is CorruptKind.BITFLIP
    after = disk.read("a", "f")
    assert after is not None and before is not None and len(after) == len(before)
    assert sum(x != y for x, y in zip(before, after)) == 1
    disk.corrupt("a", CorruptKind.TRUNCATE)
    assert disk.size("a", "f") < 200
    assert disk.corrupt("b", CorruptKind.BITFLIP) is None  # no files


def test_rollback_restores_previous_fsync_bytes() -> None:
    disk = SimDisk(random.Random(2))
    disk.replace("a", "m", b"A" * 64)
    disk.fsync("a", "m")
    disk.replace("a", "m", b"B" * 64)
    disk.fsync("a", "m")
    c = disk.corrupt("a", CorruptKind.ROLLBACK)
    assert c is not None
    data = disk.read("a", "m")
    assert data is not None
    assert data[c.offset : c.offset + c.length] == b"A" * c.length
    assert data[: c.offset] == b"B" * c.offset


def test_wipe_removes_everything() -> None:
    disk = SimDisk(random.Random(0))
    disk.append("a", "f", b"x")
    disk.fsync("a", "f")
    disk.wipe("a")
    assert disk.names("a") == []


# -- storage ---------------------------------------------------------------------------------


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"v{i}".encode()) for i in range(lo, hi + 1)]


def fresh(seed: int = 0) -> tuple[SimDisk, SimRaftStorage]:
    disk = SimDisk(random.Random(seed))
    return disk, SimRaftStorage(disk, "n1")


def test_round_trip_with_overwrite_and_snapshot() -> None:
    disk, st_ = fresh()
    st_.append(entries(1, 5))
    st_.set_hard_state(HardState(term=1, vote="n1", commit=3))
    st_.sync()
    st_.append(entries(4, 6, term=2))  # a new leader overwrote 4..5
    snap = Snapshot(SnapshotMeta(3, 1, Membership(frozenset({"n1", "n2"}))), b"state")
    st_.save_snapshot(snap)
    st_.set_hard_state(HardState(term=2, vote=None, commit=5))
    st_.sync()
    loaded = SimRaftStorage(disk, "n1").load()
    assert not loaded.corrupt
    assert loaded.snapshot == snap
    assert [(e.index, e.term) for e in loaded.entries] == [(4, 2), (5, 2), (6, 2)]
    assert loaded.hard_state == HardState(term=2, vote=None, commit=5)


def test_unsynced_tail_lost_on_power_loss_is_not_corruption() -> None:
    for seed in range(30):
        disk, st_ = fresh(seed)
        st_.append(entries(1, 3))
        st_.set_hard_state(HardState(1, "n1", 2))
        st_.sync()
        st_.append(entries(4, 9))
        disk.power_loss("n1")
        loaded = SimRaftStorage(disk, "n1").load()
        assert not loaded.corrupt, loaded.problems
        got = [e.index for e in loaded.entries]
        assert got[:3] == [1, 2, 3] and got == list(range(1, len(got) + 1))
        # recovery dropped any torn bytes: appending and reloading works
        st2 = SimRaftStorage(disk, "n1")
        st2.load()
        st2.append([Entry(2, len(got) + 1)])
        st2.sync()
        assert SimRaftStorage(disk, "n1").load().entries[-1] == Entry(2, len(got) + 1)


def test_process_crash_keeps_written_records() -> None:
    disk, st_ = fresh()
    st_.append(entries(1, 3))
    st_.sync()
    st_.append(entries(4, 5))
    loaded = SimRaftStorage(disk, "n1").load()
    assert [e.index for e in loaded.entries] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", list(CorruptKind))
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_any_corruption_of_synced_state_is_detected_or_harmless(kind: CorruptKind, seed: int) -> None:
    """After corrupting a file, load either flags it or returns exactly the synced state."""
    disk, st_ = fresh(seed)
    st_.append(entries(1, 20))
    st_.set_hard_state(HardState(3, "n2", 10))
    st_.sync()
    st_.save_snapshot(Snapshot(SnapshotMeta(5, 1), b"s"))
    st_.append(entries(21, 30, term=3))
    st_.set_hard_state(HardState(3, "n2", 25))
    st_.sync()
    good = SimRaftStorage(disk, "n1").load()
    disk.corrupt("n1", kind)
    loaded = SimRaftStorage(disk, "n1").load()
    if not loaded.corrupt:
        assert loaded.entries == good.entries
        assert loaded.hard_state == good.hard_state
        assert loaded.snapshot == good.snapshot


def test_truncation_below_the_sync_watermark_is_detected() -> None:
    disk, st_ = fresh()
    st_.append(entries(1, 10))
    st_.sync()
    raw = disk.read("n1", "wal")
    assert raw is not None
    disk.truncate_written("n1", "wal", len(raw) // 2)  # looks like a torn tail, but was synced
    assert SimRaftStorage(disk, "n1").load().corrupt


def test_empty_disk_loads_empty() -> None:
    disk, st_ = fresh()
    loaded = st_.load()
    assert loaded.empty and not loaded.corrupt and loaded.entries == ()


def test_replaying_two_snapshot_markers_keeps_entries_after_them() -> None:
    """Regression (seed 7): an older marker whose snapshot file was since replaced installs the
    newer snapshot early; the newer marker must then keep the entries after it."""
    disk, st_ = fresh()
    st_.append(entries(1, 10))
    st_.save_snapshot(Snapshot(SnapshotMeta(4, 1), b"old"))
    st_.append(entries(11, 14))
    st_.save_snapshot(Snapshot(SnapshotMeta(12, 1), b"new"))
    st_.sync()
    loaded = SimRaftStorage(disk, "n1").load()
    assert not loaded.corrupt
    assert loaded.snapshot is not None and loaded.snapshot.meta.index == 12
    assert [e.index for e in loaded.entries] == [13, 14]


def test_installed_snapshot_drops_a_conflicting_log_despite_an_older_marker() -> None:
    """Regression (seed 126): with an older compaction marker in the wal, a snapshot installed
    from a leader at a different term must not keep the old term's entries after it."""
    disk, st_ = fresh()
    st_.append(entries(1, 12, term=2))
    st_.save_snapshot(Snapshot(SnapshotMeta(5, 2), b"old"))
    st_.save_snapshot(Snapshot(SnapshotMeta(10, 3), b"from-leader"))
    st_.append([Entry(3, 11)])
    st_.sync()
    loaded = SimRaftStorage(disk, "n1").load()
    assert not loaded.corrupt
    assert loaded.snapshot is not None and loaded.snapshot.meta.term == 3
    assert loaded.entries == (Entry(3, 11),)


def test_snapshot_file_not_matching_the_last_marker_is_corruption() -> None:
    disk, st_ = fresh()
    st_.append(entries(1, 12))
    st_.save_snapshot(Snapshot(SnapshotMeta(5, 1), b"a"))
    st_.sync()
    disk.replace("n1", "snap", b"garbage")
    disk.fsync("n1", "snap")
    assert SimRaftStorage(disk, "n1").load().corrupt
