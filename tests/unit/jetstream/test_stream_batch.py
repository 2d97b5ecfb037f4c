"""`StreamStateMachine.apply_batch` (runs of plain publishes stored with one `store_many`) gives
the same results and the same replica content as applying the commands one by one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.config import StreamConfig
from jetstream.headers import encode_headers
from jetstream.store import MemoryStore, SqliteStore
from jetstream.stream import AlreadyApplied, DeleteMsg, PubAck, Publish, PurgeCmd, StreamStateMachine

SEC = 1_000_000_000

CONFIGS = st.fixed_dictionaries({
    "max_msgs": st.sampled_from([-1, 3, 7]),
    "max_bytes": st.sampled_from([-1, 120, 400]),
    "max_msg_size": st.sampled_from([-1, 20]),
    "discard": st.sampled_from(["old", "new"]),
    "retention": st.sampled_from(["limits", "workqueue", "interest"]),
    "max_msgs_per_subject": st.sampled_from([-1, -1, 2]),
    "duplicate_window": st.just(3 * SEC),
})
OP = st.one_of(
    st.tuples(st.just("pub"), st.sampled_from(["s.a", "s.b", "s.c"]), st.integers(0, 30), st.integers(0, 2 * SEC)),
    st.tuples(st.just("id"), st.sampled_from(["s.a", "s.b"]), st.sampled_from(["i1", "i2", "i3"]), st.integers(0, 2 * SEC)),
    st.tuples(st.just("del"), st.integers(1, 12)),
    st.tuples(st.just("purge"), st.sampled_from([None, "s.a"])),
)
BATCHES = st.lists(st.lists(OP, min_size=1, max_size=12), min_size=1, max_size=6)


def _commands(batch: list[tuple[Any, ...]], clock: list[int]) -> list[Any]:
    cmds: list[Any] = []
    for op in batch:
        if op[0] in ("pub", "id"):
            clock[0] += op[3]
            hdrs = encode_headers([("Nats-Msg-Id", op[2])]) if op[0] == "id" else None
            size = op[2] if op[0] == "pub" else 4
            cmds.append(Publish(op[1], b"x" * size, clock[0], headers=hdrs))
        elif op[0] == "del":
            cmds.append(DeleteMsg(op[1]))
        else:
            cmds.append(PurgeCmd(filter=op[1]))
    return cmds


@settings(max_examples=60, deadline=None)
@given(cfg=CONFIGS, batches=BATCHES, sqlite=st.booleans())
def test_batch_apply_equals_one_by_one(cfg: dict[str, Any], batches: list[list[tuple[Any, ...]]], sqlite: bool,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    config = StreamConfig.from_json({"name": "S", "subjects": ["s.>"], **cfg})
    store = SqliteStore(tmp_path_factory.mktemp("batch") / "s.db") if sqlite else MemoryStore()
    one, many = StreamStateMachine(config, MemoryStore()), StreamStateMachine(config, store)
    clock, index = [1_000 * SEC], 1
    for batch in batches:
        cmds = _commands(batch, clock)
        expected = [one.apply(cmd, index + k) for k, cmd in enumerate(cmds)]
        assert many.apply_batch(cmds, index) == expected
        index += len(cmds)
        assert many.store.state() == one.store.state()
    assert list(many.store.iter_messages()) == list(one.store.iter_messages())
    assert many.store.content_digest() == one.store.content_digest()
    assert many.store.subject_counts() == one.store.subject_counts()
    store.close()


def test_batch_of_plain_publishes_is_one_bulk_append(tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "s.db")
    sm = StreamStateMachine(StreamConfig.from_json({"name": "S", "subjects": ["s.>"]}), store)
    calls: list[int] = []
    real = store.store_many
    store.store_many = lambda rows, applied=None: (calls.append(len(rows)), real(rows, applied))[1]  # type: ignore[method-assign]
    results = sm.apply_batch([Publish("s.a" if i % 3 else "s.b", b"p%d" % i, 10 + i) for i in range(50)], 1)
    assert results == [PubAck("S", i) for i in range(1, 51)]
    assert calls == [50]
    assert store.applied_index() == 50
    assert store.subject_counts() == {"s.a": 33, "s.b": 17}
    assert store.state().messages == 50 and store.state().num_subjects == 2
    # replayed indexes are skipped, as with apply
    assert sm.apply_batch([Publish("s.a", b"again", 99)], 50) == [AlreadyApplied(50)]
    store.close()
    reopened = SqliteStore(tmp_path / "s.db")
    assert reopened.state().messages == 50 and reopened.subject_counts() == {"s.a": 33, "s.b": 17}
    assert reopened.load(50).payload == b"p49"  # type: ignore[union-attr]
    reopened.close()


@pytest.mark.parametrize("count", [1, 7, 8, 63, 64, 65, 137, 200])
def test_bulk_append_of_any_size_equals_the_memory_store(tmp_path: Any, count: int) -> None:
    """`store_many` inserts in multi-row statements of 64, 8 and 1 rows: every row lands once,
    in order, with the same counters as the reference store."""
    rows = [(5 + i, f"s.{i % 3}", None if i % 4 else b"NATS/1.0\r\nk: v\r\n\r\n", b"p%d" % i, 100 + i)
            for i in range(count)]
    sqlite, memory = SqliteStore(tmp_path / "s.db"), MemoryStore()
    for store in (sqlite, memory):
        store.store(2, "s.0", None, b"first", 50)
        store.store_many(rows)
    assert list(sqlite.iter_messages()) == list(memory.iter_messages())
    assert sqlite.state() == memory.state() and sqlite.subject_counts() == memory.subject_counts()
    with pytest.raises(ValueError):
        sqlite.store_many([(4 + count, "s.0", None, b"old", 1)])  # not after the last sequence
    assert sqlite.state() == memory.state()
    sqlite.close()
