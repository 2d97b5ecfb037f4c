"""One conformance suite for every MessageStore (memory and SQLite), plus SQLite specifics."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetstream.store import MemoryStore, MessageStore, SnapshotError, SqliteStore, StoreState, msg_size


def fill(store: MessageStore, subjects: list[str], start_seq: int = 1) -> None:
    with store.batch():
        for i, subject in enumerate(subjects):
            seq = start_seq + i
            store.store(seq, subject, None if seq % 2 else b"NATS/1.0\r\nA: b\r\n\r\n", f"m{seq}".encode(), seq * 100)


def test_empty_store_state(store: MessageStore) -> None:
    assert store.state() == StoreState()
    assert store.load(1) is None
    assert store.load_next(1) is None
    assert store.load_last_by_subject("a") is None


def test_store_and_load_round_trip(store: MessageStore) -> None:
    hdrs = b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"
    store.store(1, "orders.new", hdrs, b"payload", 1234)
    msg = store.load(1)
    assert msg is not None
    assert (msg.seq, msg.subject, msg.hdrs, msg.payload, msg.ts_ns) == (1, "orders.new", hdrs, b"payload", 1234)
    state = store.state()
    assert state.messages == 1 and state.bytes == msg_size("orders.new", hdrs, b"payload")
    assert (state.first_seq, state.last_seq, state.first_ts_ns, state.last_ts_ns) == (1, 1, 1234, 1234)
    assert state.num_subjects == 1


def test_sequence_must_grow(store: MessageStore) -> None:
    store.store(1, "a", None, b"", 1)
    with pytest.raises(ValueError):
        store.store(1, "a", None, b"", 2)


def test_load_next_with_literal_and_wildcard_filters(store: MessageStore) -> None:
    fill(store, ["a.1", "b.1", "a.2", "b.2", "a.1"])
    assert store.load_next(1, "b.*").seq == 2  # type: ignore[union-attr]
    assert store.load_next(3, "b.*").seq == 4  # type: ignore[union-attr]
    assert store.load_next(2, "a.1").seq == 5  # type: ignore[union-attr]
    assert store.load_next(6, "a.1") is None
    assert store.load_next(2, ["x", "a.2"]).seq == 3  # type: ignore[union-attr]
    assert store.load_next(4, None).seq == 4  # type: ignore[union-attr]


def test_load_range_is_load_next_walked_forward(store: MessageStore) -> None:
    fill(store, ["a.1", "b.1", "a.2", "b.2", "a.1", "c"])
    store.remove(3)
    assert [m.seq for m in store.load_range(1, 10)] == [1, 2, 4, 5, 6]
    assert [m.seq for m in store.load_range(2, 2)] == [2, 4]
    assert [m.seq for m in store.load_range(1, 10, "a.*")] == [1, 5]
    assert [m.seq for m in store.load_range(2, 1, "a.1")] == [5]
    assert [m.seq for m in store.load_range(1, 10, ["c", "b.2"])] == [4, 6]
    assert store.load_range(7, 10) == [] and store.load_range(1, 0) == []
    assert store.load_range(1, 10) == [store.load(s) for s in (1, 2, 4, 5, 6)]  # headers and all
    # bytes_max ends the run with the message reaching it: m1 is 2 bytes, m2 and m4 18 + 2
    assert [m.seq for m in store.load_range(1, 10, bytes_max=1)] == [1]
    assert [m.seq for m in store.load_range(1, 10, bytes_max=22)] == [1, 2]
    assert [m.seq for m in store.load_range(1, 10, bytes_max=23)] == [1, 2, 4]
    assert [m.seq for m in store.load_range(1, 10, "a.*", bytes_max=3)] == [1, 5]
    assert [m.seq for m in store.load_range(1, 2, bytes_max=10_000)] == [1, 2]


def test_num_after_counts_like_num_pending(store: MessageStore) -> None:
    assert store.num_after(0) == 0
    fill(store, ["a", "b", "a", "c", "a", "b", "c", "a"])
    for removed in ([], [1], [8], [4, 5], [2, 3, 6]):
        for seq in removed:
            store.remove(seq)
        assert [store.num_after(a) for a in range(10)] == [store.num_pending(a) for a in range(10)]
        quick = [store.num_after_from_counters(a) for a in range(10)]
        assert all(q is None or q == store.num_pending(a) for a, q in enumerate(quick))
        if isinstance(store, MemoryStore) or not store.state().num_deleted:
            assert None not in quick  # no gaps (or memory): always from the counters
    with store.batch():  # inside a write batch too
        store.store(9, "a", None, b"", 900)
        assert store.num_after(0) == store.num_pending(0) == 2  # 7 and 9
    store.purge()
    assert store.num_after(0) == 0


def test_last_by_subject(store: MessageStore) -> None:
    fill(store, ["a.1", "b.1", "a.2", "a.1", "b.1"])
    assert store.load_last_by_subject("a.1").seq == 4  # type: ignore[union-attr]
    assert store.load_last_by_subject("a.>").seq == 4  # type: ignore[union-attr]
    assert store.load_last_by_subject(">").seq == 5  # type: ignore[union-attr]
    assert store.last_seqs_per_subject("a.*") == [3, 4]
    assert store.last_seqs_per_subject() == [3, 4, 5]


def test_remove_tracks_counts_and_interior_deletes(store: MessageStore) -> None:
    fill(store, ["a", "b", "a", "c"])
    assert store.remove(2) is True
    assert store.remove(2) is False
    state = store.state()
    assert (state.messages, state.first_seq, state.last_seq, state.num_deleted, state.num_subjects) == (3, 1, 4, 1, 2)
    assert store.deleted_seqs() == [2]
    assert store.subject_counts() == {"a": 2, "c": 1}


def test_removing_first_and_last_keeps_last_seq(store: MessageStore) -> None:
    fill(store, ["a", "b", "c"])
    store.remove(1)
    store.remove(3)
    state = store.state()
    assert (state.first_seq, state.last_seq, state.messages, state.num_deleted) == (2, 3, 1, 1)
    assert store.deleted_seqs() == [3]
    store.remove(2)
    state = store.state()
    assert (state.first_seq, state.last_seq, state.messages, state.bytes) == (4, 3, 0, 0)


def test_purge_all_then_continue(store: MessageStore) -> None:
    fill(store, ["a", "b", "c"])
    assert store.purge() == 3
    state = store.state()
    assert (state.messages, state.first_seq, state.last_seq, state.last_ts_ns) == (0, 4, 3, 300)
    store.store(4, "d", None, b"x", 400)
    assert store.state().first_seq == 4


def test_purge_with_filter_keep_and_seq(store: MessageStore) -> None:
    fill(store, ["a", "b", "a", "a", "b", "a"])
    assert store.purge("a", keep=2) == 2  # removes 1 and 3, keeps 4 and 6
    assert [m.seq for m in store.iter_messages()] == [2, 4, 5, 6]
    assert store.purge("b", before_seq=5) == 1
    assert [m.seq for m in store.iter_messages()] == [4, 5, 6]
    assert store.purge(None, before_seq=6) == 2
    assert [m.seq for m in store.iter_messages()] == [6]
    assert store.purge(None, keep=5) == 0


def test_purge_beyond_end_moves_first_seq(store: MessageStore) -> None:
    fill(store, ["a", "b"])
    assert store.purge(None, before_seq=10) == 2
    state = store.state()
    assert (state.first_seq, state.last_seq) == (10, 9)


def test_skip_to_sets_next_sequence(store: MessageStore) -> None:
    store.skip_to(100)
    assert store.state().last_seq == 99
    store.store(100, "a", None, b"", 5)
    assert store.state().first_seq == 100


def test_num_pending_and_time_lookup(store: MessageStore) -> None:
    fill(store, ["a.1", "b.1", "a.2", "b.2"])
    assert store.num_pending(0) == 4
    assert store.num_pending(1, "a.*") == 1
    assert store.num_pending(0, ["a.1", "b.>"]) == 3
    assert store.seq_for_time(250) == 3
    assert store.seq_for_time(10_000) is None


def test_applied_index_and_consumers(store: MessageStore) -> None:
    assert store.applied_index() == 0
    store.set_applied_index(42)
    assert store.applied_index() == 42
    store.save_consumer("c1", b"state-1")
    store.save_consumer("c0", b"state-0")
    store.save_consumer("c1", b"state-1b")
    assert store.consumer_names() == ["c0", "c1"]
    assert store.load_consumer("c1") == b"state-1b"
    assert store.delete_consumer("c0") is True
    assert store.delete_consumer("c0") is False
    assert store.load_consumer("c0") is None


@pytest.mark.parametrize("target_kind", ["memory", "sqlite"])
def test_snapshot_restores_into_either_store(store: MessageStore, target_kind: str, tmp_path: Path) -> None:
    fill(store, ["a", "b", "a", "c"])
    store.remove(4)
    store.remove(2)
    store.save_consumer("dur", b"\x00\x01")
    store.set_applied_index(7)
    target: MessageStore = MemoryStore() if target_kind == "memory" else SqliteStore(tmp_path / "target.db")
    target.store(1, "junk", None, b"junk", 1)
    target.restore(store.snapshot())
    assert target.state() == store.state()
    assert list(target.iter_messages()) == list(store.iter_messages())
    assert target.load_consumer("dur") == b"\x00\x01"
    assert target.applied_index() == 7
    target.close()


def test_corrupt_snapshot_is_rejected_and_nothing_changes(store: MessageStore) -> None:
    fill(store, ["a", "b"])
    snap = bytearray(store.snapshot())
    snap[len(snap) // 2] ^= 0xFF
    other = MemoryStore()
    other.store(1, "keep", None, b"", 1)
    with pytest.raises(SnapshotError):
        other.restore(bytes(snap))
    with pytest.raises(SnapshotError):
        other.restore(bytes(snap[:10]))
    assert other.state().messages == 1


def test_sqlite_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    fill(s, ["a", "b", "c"])
    s.remove(3)
    s.set_applied_index(9)
    before = s.state()
    s.close()
    s2 = SqliteStore(path)
    assert s2.state() == before
    assert s2.applied_index() == 9
    assert s2.load(2).payload == b"m2"  # type: ignore[union-attr]
    s2.close()


def test_sqlite_failed_batch_rolls_back(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    fill(s, ["a"])
    with pytest.raises(RuntimeError):
        with s.batch():
            s.store(2, "b", None, b"x", 2)
            s.set_applied_index(2)
            raise RuntimeError("boom")
    assert s.state().last_seq == 1 and s.applied_index() == 0
    assert s.load(2) is None
    s.close()


def test_sqlite_pragmas_and_strict_schema(tmp_path: Path) -> None:
    import sqlite3

    s = SqliteStore(tmp_path / "s.db")
    s.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='messages'").fetchone()[0]
    assert "STRICT" in sql
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO messages(seq, subject, payload, ts_ns) VALUES (1, 'a', 'text', 'x')")
    conn.close()


def test_sqlite_backup_to_file(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    fill(s, ["a", "b"])
    s.backup_to(tmp_path / "copy.db")
    copy = SqliteStore(tmp_path / "copy.db")
    assert copy.state() == s.state()
    copy.close()
    s.close()


def test_msg_id_index_save_prune_and_snapshot(store: MessageStore) -> None:
    store.save_msg_id("a", 1, 100)
    store.save_msg_id("b", 2, 200)
    store.save_msg_id("c", 3, 300)
    store.save_msg_id("a", 4, 400)  # re-used id moves to its new place
    assert store.msg_ids() == [("b", 2, 200), ("c", 3, 300), ("a", 4, 400)]
    store.prune_msg_ids(before_ts_ns=350, keep_seq=3)
    assert store.msg_ids() == [("c", 3, 300), ("a", 4, 400)]
    other = MemoryStore()
    other.restore(store.snapshot())
    assert other.msg_ids() == store.msg_ids()


def test_snapshot_file_round_trip_and_truncation(store: MessageStore, tmp_path: Path) -> None:
    fill(store, ["a", "b", "c"])
    store.save_consumer("c", b"s")
    path = tmp_path / "snap.bin"
    store.snapshot_to_file(path)
    other = MemoryStore()
    other.restore_from_file(path)
    assert other.state() == store.state() and other.load_consumer("c") == b"s"
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 12):
        path.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            MemoryStore().restore_from_file(path)
    path.write_bytes(data + b"x")
    with pytest.raises(SnapshotError):
        MemoryStore().restore_from_file(path)


def test_content_digest_tracks_content_not_store_kind(store: MessageStore) -> None:
    fill(store, ["a", "b"])
    twin = MemoryStore()
    fill(twin, ["a", "b"])
    assert store.content_digest() == twin.content_digest()
    twin.remove(2)
    assert store.content_digest() != twin.content_digest()
