"""The SQLite store's batched counters: meta rows written once per transaction, the oldest
message cached in memory, both exact after reopen and after a rollback; the stream machine's
header lookup keeps `Headers.get` semantics."""

from __future__ import annotations

import pytest

from jetstream import headers as H
from jetstream.config import StreamConfig
from jetstream.store.sqlite import SqliteStore
from jetstream.stream import Publish, StreamStateMachine, _HeaderLookup


def _fill(store: SqliteStore, count: int) -> None:
    with store.batch():
        for seq in range(1, count + 1):
            store.store(seq, f"s.{seq % 3}", None, b"x" * 16, seq * 10)
        store.set_applied_index(count)


def test_counters_written_once_per_batch_survive_reopen(tmp_path):
    store = SqliteStore(tmp_path / "m.db")
    _fill(store, 50)
    with store.batch():
        store.remove(1)
        store.remove(2)
    before = store.state()
    store.close()
    again = SqliteStore(tmp_path / "m.db")
    assert again.state() == before
    assert (before.messages, before.first_seq, before.first_ts_ns, before.last_seq) == (48, 3, 30, 50)
    assert again.applied_index() == 50
    assert again.subject_counts() == {"s.0": 16, "s.1": 16, "s.2": 16}


def test_rollback_restores_counters_and_first(tmp_path):
    store = SqliteStore(tmp_path / "m.db")
    _fill(store, 5)
    with pytest.raises(RuntimeError):
        with store.batch():
            store.remove(1)
            store.store(6, "s.x", None, b"y", 60)
            store.set_applied_index(99)
            raise RuntimeError("boom")
    state = store.state()
    assert (state.messages, state.first_seq, state.last_seq) == (5, 1, 5)
    assert store.applied_index() == 5
    store.close()
    assert SqliteStore(tmp_path / "m.db").state() == state


def test_first_cache_follows_purge_and_refill(tmp_path):
    store = SqliteStore(tmp_path / "m.db")
    _fill(store, 10)
    assert store.purge(None, before_seq=4) == 3
    assert store.state().first_seq == 4
    store.purge()
    assert store.state().messages == 0
    store.store(11, "s.a", None, b"z", 500)
    state = store.state()
    assert (state.first_seq, state.first_ts_ns, state.num_subjects) == (11, 500, 1)


def test_header_lookup_matches_headers_get():
    parsed = H.parse_headers(b"NATS/1.0\r\nnats-msg-id: a\r\nNats-Msg-Id: b\r\nX: \r\n\r\n")
    fast = _HeaderLookup(parsed)
    for key in ("Nats-Msg-Id", "NATS-MSG-ID", "nats-msg-id", "X", "Missing"):
        assert fast.get(key) == parsed.get(key)


def test_batched_publishes_with_msg_ids_dedup_after_reopen(tmp_path):
    config = StreamConfig(name="S", subjects=("s.>",))
    store = SqliteStore(tmp_path / "m.db")
    sm = StreamStateMachine(config, store)
    with store.batch():
        for i in range(1, 21):
            hdrs = b"NATS/1.0\r\nNats-Msg-Id: id%d\r\n\r\n" % i
            sm.apply(Publish(subject="s.a", payload=b"p", ts_ns=i, headers=hdrs), i)
    store.close()
    store = SqliteStore(tmp_path / "m.db")
    sm = StreamStateMachine(config, store)
    ack = sm.apply(Publish(subject="s.a", payload=b"p", ts_ns=30, headers=b"NATS/1.0\r\nNats-Msg-Id: id7\r\n\r\n"), 21)
    assert (ack.seq, ack.duplicate) == (7, True)
    assert store.state().last_seq == 20 and store.applied_index() == 21


def test_second_connection_sees_the_writers_commits_after_refresh(tmp_path):
    """The runtime reads through a second connection (its reader); the counters and oldest
    message it caches must follow the writer's commits, purges included."""
    writer = SqliteStore(tmp_path / "m.db")
    _fill(writer, 4)
    reader = SqliteStore(tmp_path / "m.db")
    assert reader.state().messages == 4
    with writer.batch():
        writer.store(5, "s.5", None, b"y", 50)
        writer.set_applied_index(5)
    reader.refresh()
    assert (reader.state().messages, reader.state().last_seq, reader.applied_index()) == (5, 5, 5)
    with writer.batch():
        writer.remove(1)
    reader.refresh()
    assert (reader.state().messages, reader.state().first_seq) == (4, 2)
    reader.refresh()  # nothing new: still exact
    assert reader.state() == writer.state()


async def test_runtime_reader_reports_state_after_later_commits(tmp_path):
    """`StreamRuntime.read` (monitoring, stream info on followers) opens its reader once; a
    later commit must show in the next read, not the state from when the reader opened."""
    from jetstream.config import StreamConfig
    from jetstream.runtime import StreamRuntime

    rt = StreamRuntime(StreamConfig(name="S", subjects=("s",)), 0, SqliteStore(tmp_path / "m.db"),
                       tmp_path, lambda: 1_000, lambda *a: None)
    for count in range(1, 4):
        await rt.apply_batch([Publish("s", b"x", 5, None, "r")])
        state = await rt.read(lambda store: store.state())
        assert (state.messages, state.last_seq) == (count, count)
    await rt.close()
