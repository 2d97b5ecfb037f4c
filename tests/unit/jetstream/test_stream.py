"""The stream state machine: every publish header rule, every limit, purge/delete, determinism."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jetstream.config import StreamConfig
from jetstream.errors import ApiError
from jetstream.headers import encode_headers
from jetstream.store import MemoryStore, MessageStore
from jetstream.stream import (
    AlreadyApplied,
    DeleteMsg,
    Expire,
    PubAck,
    Publish,
    PurgeCmd,
    PurgeResult,
    RemoveAcked,
    Removed,
    StreamStateMachine,
    UpdateConfig,
    parse_ttl_ns,
    puback_error_json,
)

SEC = 1_000_000_000


class Harness:
    """A machine plus a Raft-like index counter and a fake leader clock."""

    def __init__(self, store: MessageStore, **cfg: Any) -> None:
        cfg.setdefault("name", "S")
        cfg.setdefault("subjects", ["s.>"])
        self.config = StreamConfig.from_json(cfg)
        self.machine = StreamStateMachine(self.config, store)
        self.index = itertools.count(1)
        self.now_ns = 1_000 * SEC

    def pub(self, subject: str = "s.a", payload: bytes = b"x", dt_ns: int = SEC, **hdrs: str) -> Any:
        self.now_ns += dt_ns
        block = encode_headers([(k.replace("_", "-"), v) for k, v in hdrs.items()]) if hdrs else None
        return self.machine.apply(Publish(subject, payload, self.now_ns, headers=block), next(self.index))

    def apply(self, cmd: Any) -> Any:
        return self.machine.apply(cmd, next(self.index))

    def seqs(self) -> list[int]:
        return [m.seq for m in self.machine.store.iter_messages()]


@pytest.fixture
def make(store: MessageStore):  # type: ignore[no-untyped-def]
    return lambda **cfg: Harness(store, **cfg)


def err_code(result: Any) -> int:
    assert isinstance(result, ApiError), result
    return result.err_code


def test_publish_assigns_sequences_and_pubacks(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    assert h.pub() == PubAck("S", 1)
    assert h.pub().to_json() == {"stream": "S", "seq": 2}
    assert h.machine.store.state().messages == 2


def test_replayed_index_is_skipped(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    assert h.machine.apply(Publish("s.a", b"1", 1), 5) == PubAck("S", 1)
    assert h.machine.apply(Publish("s.a", b"1", 1), 5) == AlreadyApplied(5)
    assert h.machine.store.applied_index() == 5
    assert h.machine.store.state().messages == 1


def test_msg_id_dedup_within_window_only(make) -> None:  # type: ignore[no-untyped-def]
    h = make(duplicate_window=10 * SEC)
    assert h.pub(Nats_Msg_Id="a") == PubAck("S", 1)
    dup = h.pub(Nats_Msg_Id="a", dt_ns=5 * SEC)
    assert dup == PubAck("S", 1, duplicate=True)
    assert dup.to_json() == {"stream": "S", "seq": 1, "duplicate": True}
    assert h.pub(Nats_Msg_Id="a", dt_ns=6 * SEC) == PubAck("S", 2)  # 11 s after the first
    assert h.machine.store.state().messages == 2


def test_dedup_survives_restart_and_message_removal(make, store: MessageStore) -> None:  # type: ignore[no-untyped-def]
    h = make(duplicate_window=60 * SEC)
    h.pub(Nats_Msg_Id="job-1")
    h.apply(DeleteMsg(1))
    rebuilt = StreamStateMachine(h.config, store)  # a restarted replica reads the persisted index
    assert rebuilt.apply(Publish("s.a", b"x", h.now_ns + SEC, headers=encode_headers([("Nats-Msg-Id", "job-1")])), 100) == PubAck(
        "S", 1, duplicate=True
    )


def test_expected_stream(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    assert err_code(h.pub(Nats_Expected_Stream="OTHER")) == 10060
    assert h.pub(Nats_Expected_Stream="S") == PubAck("S", 1)


def test_expected_last_sequence_reports_actual(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    h.pub()
    result = h.pub(Nats_Expected_Last_Sequence="5")
    assert err_code(result) == 10071
    assert result.description == "wrong last sequence: 1"
    assert h.pub(Nats_Expected_Last_Sequence="1") == PubAck("S", 2)


def test_expected_last_subject_sequence(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    assert h.pub("s.k", Nats_Expected_Last_Subject_Sequence="0") == PubAck("S", 1)  # KV create
    again = h.pub("s.k", Nats_Expected_Last_Subject_Sequence="0")
    assert err_code(again) == 10071 and again.description == "wrong last sequence: 1"
    h.pub("s.other")
    assert h.pub("s.k", Nats_Expected_Last_Subject_Sequence="1") == PubAck("S", 3)


def test_expected_last_subject_sequence_on_other_subject(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    h.pub("s.x.1")
    h.pub("s.y")
    hdrs = {"Nats_Expected_Last_Subject_Sequence": "1", "Nats_Expected_Last_Subject_Sequence_Subject": "s.x.*"}
    assert h.pub("s.z", **hdrs) == PubAck("S", 3)
    assert err_code(h.pub("s.z", Nats_Expected_Last_Subject_Sequence_Subject="s.x.*")) == 10193


def test_expected_last_msg_id(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    h.pub(Nats_Msg_Id="one")
    wrong = h.pub(Nats_Expected_Last_Msg_Id="zero")
    assert err_code(wrong) == 10070 and wrong.description == "wrong last msg ID: one"
    assert h.pub(Nats_Expected_Last_Msg_Id="one", Nats_Msg_Id="two") == PubAck("S", 2)
    h.pub()  # no id: the last msg id is now empty
    assert err_code(h.pub(Nats_Expected_Last_Msg_Id="two")) == 10070


def test_rollup_subject_and_all(make) -> None:  # type: ignore[no-untyped-def]
    h = make(allow_rollup_hdrs=True)
    for subject in ["s.a", "s.b", "s.a", "s.b"]:
        h.pub(subject)
    assert h.pub("s.a", Nats_Rollup="sub") == PubAck("S", 5)
    assert h.seqs() == [2, 4, 5]
    assert h.pub("s.c", Nats_Rollup="all") == PubAck("S", 6)
    assert h.seqs() == [6]


def test_rollup_refused_without_permission_or_bad_value(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    denied = h.pub(Nats_Rollup="sub")
    assert err_code(denied) == 10111 and denied.description == "rollup not permitted"
    h2 = Harness(MemoryStore(), allow_rollup_hdrs=True)
    assert err_code(h2.pub(Nats_Rollup="everything")) == 10111


def test_ttl_header_rules() -> None:
    assert parse_ttl_ns("never") == -1
    assert parse_ttl_ns("30") == 30 * SEC
    assert parse_ttl_ns("1h30m") == 5400 * SEC
    assert parse_ttl_ns("500ms") is None  # below one second
    assert parse_ttl_ns("abc") is None


def test_ttl_disabled_and_invalid(make) -> None:  # type: ignore[no-untyped-def]
    assert err_code(make().pub(Nats_TTL="10s")) == 10166
    h = Harness(MemoryStore(), allow_msg_ttl=True)
    assert err_code(h.pub(Nats_TTL="soon")) == 10165
    assert h.pub(Nats_TTL="10s") == PubAck("S", 1)


def test_max_msg_size_and_header_size(make) -> None:  # type: ignore[no-untyped-def]
    h = make(max_msg_size=10)
    assert err_code(h.pub(payload=b"x" * 11)) == 10054
    assert h.pub(payload=b"x" * 10) == PubAck("S", 1)
    big = Publish("s.a", b"", 1, headers=b"NATS/1.0\r\nBig: " + b"v" * 70_000 + b"\r\n\r\n")
    assert err_code(h.apply(big)) == 10097


def test_max_msgs_discard_old_and_new(make, store: MessageStore) -> None:  # type: ignore[no-untyped-def]
    h = make(max_msgs=2)
    for _ in range(4):
        h.pub()
    assert h.seqs() == [3, 4]
    h2 = Harness(MemoryStore(), max_msgs=2, discard="new")
    h2.pub()
    h2.pub()
    rejected = h2.pub()
    assert err_code(rejected) == 10077 and rejected.description == "maximum messages exceeded"
    assert puback_error_json("S", rejected)["seq"] == 0


def test_max_bytes_discard_old_and_new(make) -> None:  # type: ignore[no-untyped-def]
    h = make(max_bytes=100)  # each message: 3 + 0 + 30 + 16 = 49 bytes
    for _ in range(3):
        h.pub(payload=b"x" * 30)
    assert h.machine.store.state().messages == 2
    h2 = Harness(MemoryStore(), max_bytes=100, discard="new")
    h2.pub(payload=b"x" * 30)
    h2.pub(payload=b"x" * 30)
    rejected = h2.pub(payload=b"x" * 30)
    assert err_code(rejected) == 10077 and rejected.description == "maximum bytes exceeded"


def test_max_msgs_per_subject(make) -> None:  # type: ignore[no-untyped-def]
    h = make(max_msgs_per_subject=2)
    for subject in ["s.a", "s.b", "s.a", "s.a", "s.b"]:
        h.pub(subject)
    assert h.seqs() == [2, 3, 4, 5]
    h2 = Harness(MemoryStore(), max_msgs_per_subject=1, discard="new", discard_new_per_subject=True)
    h2.pub("s.a")
    rejected = h2.pub("s.a")
    assert err_code(rejected) == 10077 and rejected.description == "maximum messages per subject exceeded"
    assert h2.pub("s.b") == PubAck("S", 2)


def test_max_age_expiry_uses_command_time(make) -> None:  # type: ignore[no-untyped-def]
    h = make(max_age=10 * SEC)
    h.pub(dt_ns=0)
    h.pub(dt_ns=5 * SEC)
    start = h.now_ns - 5 * SEC
    assert h.apply(Expire(start + 9 * SEC)) == Removed(0)
    assert h.apply(Expire(start + 10 * SEC)) == Removed(1)
    assert h.seqs() == [2]


def test_sealed_stream_refuses_writes(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    h.pub()
    h.apply(UpdateConfig(attrs.evolve(h.config, sealed=True)))
    assert err_code(h.pub()) == 10109
    assert err_code(h.apply(PurgeCmd())) == 10109
    assert err_code(h.apply(DeleteMsg(1))) == 10109


def test_deny_delete_and_deny_purge(make) -> None:  # type: ignore[no-untyped-def]
    h = make(deny_delete=True, deny_purge=True)
    h.pub()
    denied = h.apply(DeleteMsg(1))
    assert err_code(denied) == 10057 and denied.description == "message delete not permitted"
    assert err_code(h.apply(PurgeCmd())) == 10110


def test_delete_and_purge(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    for subject in ["s.a", "s.b", "s.a", "s.b"]:
        h.pub(subject)
    assert h.apply(DeleteMsg(2)) == Removed(1)
    missing = h.apply(DeleteMsg(2))
    assert err_code(missing) == 10043 and missing.description == "sequence 2 not found"
    assert h.apply(PurgeCmd(filter="s.a", keep=1)) == PurgeResult(1)
    assert err_code(h.apply(PurgeCmd(seq=3, keep=1))) == 10003
    assert h.apply(PurgeCmd()).to_json() == {"success": True, "purged": 2}
    state = h.machine.store.state()
    assert (state.first_seq, state.last_seq) == (5, 4)
    assert h.pub() == PubAck("S", 5)


def test_lowering_limits_trims_on_update(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    for subject in ["s.a", "s.a", "s.a", "s.b"]:
        h.pub(subject)
    assert h.apply(UpdateConfig(attrs.evolve(h.config, max_msgs_per_subject=1))) == Removed(2)
    assert h.seqs() == [3, 4]
    assert h.apply(UpdateConfig(attrs.evolve(h.config, max_msgs=1))) == Removed(1)


def test_interest_retention_without_interest_drops(store: MessageStore) -> None:
    config = StreamConfig.from_json({"name": "S", "subjects": ["s.>"], "retention": "interest"})
    wanted = {"s.kept"}
    m = StreamStateMachine(config, store, has_interest=lambda subject: subject in wanted)
    assert m.apply(Publish("s.kept", b"", 1), 1) == PubAck("S", 1)
    assert m.apply(Publish("s.dropped", b"", 2), 2) == PubAck("S", 2)
    assert [x.seq for x in store.iter_messages()] == [1]
    assert m.apply(RemoveAcked((1, 99)), 3) == Removed(1)


def test_first_seq_config(store: MessageStore) -> None:
    config = StreamConfig.from_json({"name": "S", "first_seq": 100})
    m = StreamStateMachine(config, store)
    assert m.apply(Publish("S", b"", 1), 1) == PubAck("S", 100)


def test_timestamps_are_made_monotonic(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    h.pub()
    h.apply(Publish("s.a", b"", h.now_ns - 5 * SEC))  # a new leader with a slower clock
    assert h.machine.store.load(2).ts_ns == h.now_ns  # type: ignore[union-attr]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.sampled_from(["s.a", "s.b"]), st.sampled_from(["", "i1", "i2"]),
                  st.sampled_from(["", "0", "1", "3"]), st.sampled_from(["", "sub", "all"])),
        st.tuples(st.just("del"), st.integers(1, 8)),
        st.tuples(st.just("purge"), st.sampled_from([None, "s.a"]), st.integers(0, 2)),
        st.tuples(st.just("expire"), st.integers(0, 30)),
    ),
    max_size=25,
)


def _command(op: tuple, t: int) -> Any:  # type: ignore[type-arg]
    if op[0] == "pub":
        items = [(k, v) for k, v in (("Nats-Msg-Id", op[2]), ("Nats-Expected-Last-Subject-Sequence", op[3]),
                                     ("Nats-Rollup", op[4])) if v]
        return Publish(op[1], b"p", t, headers=encode_headers(items) if items else None)
    if op[0] == "del":
        return DeleteMsg(op[1])
    if op[0] == "purge":
        return PurgeCmd(filter=op[1], keep=op[2] or None)
    return Expire(t + op[1] * SEC)


@settings(max_examples=30, deadline=None)
@given(ops=OPS)
def test_replicas_on_memory_and_sqlite_agree(ops: list, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[type-arg]
    """Two replicas (different stores, one restarted midway) apply the same log identically."""
    from jetstream.store import SqliteStore

    config = StreamConfig.from_json({"name": "S", "subjects": ["s.>"], "allow_rollup_hdrs": True,
                                     "max_msgs_per_subject": 3, "max_age": 20 * SEC, "duplicate_window": 5 * SEC})
    sqlite_store = SqliteStore(tmp_path_factory.mktemp("rep") / "s.db")
    a, b = StreamStateMachine(config, MemoryStore()), StreamStateMachine(config, sqlite_store)
    for i, op in enumerate(ops, start=1):
        cmd = _command(op, i * SEC)
        assert a.apply(cmd, i) == b.apply(cmd, i)
        if i == len(ops) // 2:
            b = StreamStateMachine(config, sqlite_store)  # restart: rebuild from the store
    assert list(a.store.iter_messages()) == list(b.store.iter_messages())
    assert a.store.state() == b.store.state()
    assert a.store.content_digest() == b.store.content_digest()
    sqlite_store.close()


def test_per_message_ttl_expires_and_survives_restart(make, store: MessageStore) -> None:  # type: ignore[no-untyped-def]
    h = make(allow_msg_ttl=True)
    h.pub(Nats_TTL="5s", dt_ns=0)
    start = h.now_ns
    h.pub(Nats_TTL="never", dt_ns=0)
    h.pub(Nats_TTL="60", dt_ns=0)
    assert h.apply(Expire(start + 5 * SEC - 1)) == Removed(0)
    assert h.apply(Expire(start + 5 * SEC)) == Removed(1)
    restarted = StreamStateMachine(h.config, store)
    assert restarted.apply(Expire(start + 60 * SEC), 1000) == Removed(1)
    assert [m.seq for m in store.iter_messages()] == [2]


LIMIT_OPS = st.lists(st.tuples(st.sampled_from(["s.a", "s.b", "s.c"]), st.integers(0, 40)), max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops=LIMIT_OPS, discard=st.sampled_from(["old", "new"]))
def test_limits_always_hold(ops: list[tuple[str, int]], discard: str) -> None:
    """Whatever is published, the limits hold and accepted publishes get consecutive sequences."""
    h = Harness(MemoryStore(), max_msgs=5, max_bytes=300, max_msgs_per_subject=3, discard=discard)
    accepted = 0
    for subject, size in ops:
        result = h.pub(subject, payload=b"x" * size)
        if isinstance(result, PubAck):
            accepted += 1
            assert result.seq == accepted
        else:
            assert discard == "new" and result.err_code == 10077
        state = h.machine.store.state()
        assert state.messages <= 5 and state.bytes <= 300
        assert all(n <= 3 for n in h.machine.store.subject_counts().values())
        assert state.last_seq == accepted


def test_snapshot_restore_brings_a_lagging_replica_level(make) -> None:  # type: ignore[no-untyped-def]
    h = make(duplicate_window=60 * SEC)
    h.pub(Nats_Msg_Id="a")
    h.pub(Nats_Msg_Id="b")
    follower = StreamStateMachine(h.config, MemoryStore())
    follower.restore(h.machine.snapshot())
    assert follower.store.applied_index() == 2
    assert follower.store.content_digest() == h.machine.store.content_digest()
    dup = Publish("s.a", b"x", h.now_ns + SEC, headers=encode_headers([("Nats-Msg-Id", "b")]))
    assert follower.apply(dup, 3) == h.apply(dup) == PubAck("S", 2, duplicate=True)
    assert follower.last_msg_id() == "b"
