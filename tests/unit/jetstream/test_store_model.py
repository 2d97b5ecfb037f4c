"""A hypothesis state machine drives each store against a plain dict model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jetstream.store import MemoryStore, MessageStore, SqliteStore, msg_size
from jetstream.store.base import filter_matches

SUBJECTS = ["a.1", "a.2", "b.1", "c"]
FILTERS = [None, "a.1", "a.*", "*.1", ">", "c"]


class StoreModel(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="jsstore-")
        self.store: MessageStore = MemoryStore() if self.kind == "memory" else SqliteStore(Path(self.tmp) / "s.db")
        self.msgs: dict[int, tuple[str, bytes | None, bytes, int]] = {}
        self.last_seq = 0
        self.last_ts = 0
        self.clock = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(subject=st.sampled_from(SUBJECTS), gap=st.integers(0, 2), payload=st.binary(max_size=8),
          with_hdrs=st.booleans())
    def store_msg(self, subject: str, gap: int, payload: bytes, with_hdrs: bool) -> None:
        seq = self.last_seq + 1 + gap
        self.clock += 10
        hdrs = b"NATS/1.0\r\nK: v\r\n\r\n" if with_hdrs else None
        self.store.store(seq, subject, hdrs, payload, self.clock)
        self.msgs[seq] = (subject, hdrs, payload, self.clock)
        self.last_seq, self.last_ts = seq, self.clock

    @precondition(lambda self: self.msgs)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.msgs)))
        assert self.store.remove(seq)
        del self.msgs[seq]

    @rule(seq=st.integers(0, 30))
    def remove_missing_or_present(self, seq: int) -> None:
        assert self.store.remove(seq) == (seq in self.msgs)
        self.msgs.pop(seq, None)

    @rule(filt=st.sampled_from(FILTERS), keep=st.one_of(st.none(), st.integers(1, 3)),
          before=st.one_of(st.none(), st.integers(1, 40)))
    def purge(self, filt: str | None, keep: int | None, before: int | None) -> None:
        if filt in (None, ">") and before is not None and before > self.last_seq + 1:
            expected = len(self.msgs)
            self.msgs.clear()
            self.last_seq = before - 1
        else:
            matching = sorted(s for s, m in self.msgs.items() if filter_matches(filt, m[0]))
            if keep:
                matching = matching[: max(len(matching) - keep, 0)]
            if before is not None:
                matching = [s for s in matching if s < before]
            for s in matching:
                del self.msgs[s]
            expected = len(matching)
        assert self.store.purge(filt, before_seq=before, keep=keep) == expected

    @rule(filt=st.sampled_from(FILTERS), start=st.integers(0, 40))
    def load_next(self, filt: str | None, start: int) -> None:
        candidates = [s for s in sorted(self.msgs) if s >= start and filter_matches(filt, self.msgs[s][0])]
        got = self.store.load_next(start, filt)
        assert (got.seq if got else None) == (candidates[0] if candidates else None)

    @rule(filt=st.sampled_from(FILTERS), start=st.integers(0, 40), limit=st.integers(0, 5),
          bytes_max=st.integers(0, 40))
    def load_range(self, filt: str | None, start: int, limit: int, bytes_max: int) -> None:
        candidates = [s for s in sorted(self.msgs) if s >= start and filter_matches(filt, self.msgs[s][0])]
        candidates = candidates[:limit]
        if bytes_max:
            total = 0
            for n, s in enumerate(candidates):
                total += len(self.msgs[s][2]) + len(self.msgs[s][1] or b"")
                if total >= bytes_max:
                    candidates = candidates[:n + 1]
                    break
        got = self.store.load_range(start, limit, filt, bytes_max)
        assert [m.seq for m in got] == candidates
        assert [(m.subject, m.hdrs, m.payload, m.ts_ns) for m in got] == [self.msgs[s] for s in candidates]

    @rule(filt=st.sampled_from(FILTERS), after=st.integers(0, 40))
    def pending(self, filt: str | None, after: int) -> None:
        expected = sum(1 for s, m in self.msgs.items() if s > after and filter_matches(filt, m[0]))
        assert self.store.num_pending(after, filt) == expected
        assert self.store.num_after(after) == sum(1 for s in self.msgs if s > after)
        quick = self.store.num_after_from_counters(after)
        assert quick in (None, self.store.num_after(after))
        if not self.store.state().num_deleted:
            assert quick is not None

    @rule()
    def snapshot_round_trip(self) -> None:
        other = MemoryStore()
        other.restore(self.store.snapshot())
        assert other.state() == self.store.state()

    @invariant()
    def state_matches_model(self) -> None:
        state = self.store.state()
        seqs = sorted(self.msgs)
        assert state.messages == len(seqs)
        assert state.last_seq == self.last_seq
        assert state.bytes == sum(msg_size(m[0], m[1], m[2]) for m in self.msgs.values())
        if seqs:
            assert state.first_seq == seqs[0]
            assert state.num_deleted == self.last_seq - seqs[0] + 1 - len(seqs)
        else:
            assert state.first_seq == (self.last_seq + 1 if self.last_seq else 0)
        counts: dict[str, int] = {}
        for m in self.msgs.values():
            counts[m[0]] = counts.get(m[0], 0) + 1
        assert self.store.subject_counts() == counts
        assert state.num_subjects == len(counts)


class SqliteStoreModel(StoreModel):
    kind = "sqlite"


_settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestMemoryStoreModel = StoreModel.TestCase
TestMemoryStoreModel.settings = _settings
TestSqliteStoreModel = SqliteStoreModel.TestCase
TestSqliteStoreModel.settings = settings(_settings, max_examples=25)  # fsync-bound: fewer runs
