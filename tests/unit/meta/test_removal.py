"""meta/removal.py: who counts as removed (committed membership, registered before) and the
marker a removed server keeps across restarts."""

from __future__ import annotations

from pathlib import Path

from meta.removal import is_removed, removed_marker, write_marker


def test_removed_means_registered_once_and_absent_from_the_committed_membership() -> None:
    committed = {"a", "b", "c"}
    assert is_removed("d", committed, {"a", "b", "c", "d"})
    assert not is_removed("a", committed, {"a", "b", "c", "d"})  # still a member
    assert not is_removed("e", committed, {"a", "b", "c"})  # a fresh joiner is not removed


def test_the_marker_survives_and_an_unreadable_one_still_counts(tmp_path: Path) -> None:
    assert removed_marker(tmp_path) is None
    write_marker(tmp_path, {"node_id": "d"})
    assert removed_marker(tmp_path) == {"node_id": "d"}
    (tmp_path / "raft" / "meta-removed.json").write_text("{torn")
    assert removed_marker(tmp_path) == {"unreadable": True}
