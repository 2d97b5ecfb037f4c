"""In-memory message store: the reference implementation of `MessageStore`.

Messages live in a dict by sequence plus a sorted list of sequences (bisect for "next at or
after"), and a per-subject sorted list of sequences for the subject index. `batch()` is a plain
context (there is no durability to group); everything else mirrors the SQLite store, and the one
conformance suite in tests/unit/jetstream runs against both.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator, Sequence

from jetstream.store.base import (
    MessageStore,
    StoredMsg,
    StoreState,
    empty_first_seq,
    filter_matches,
)


class MemoryStore(MessageStore):
    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._msgs: dict[int, StoredMsg] = {}
        self._seqs: list[int] = []
        self._by_subject: dict[str, list[int]] = {}
        self._bytes = 0
        self._last_seq = 0
        self._last_ts_ns = 0
        self._applied_index = getattr(self, "_applied_index", 0)
        self._consumers: dict[str, bytes] = {}
        self._msg_ids: dict[str, tuple[int, int]] = {}

    def _set_last(self, seq: int, ts_ns: int) -> None:
        self._last_seq, self._last_ts_ns = seq, ts_ns

    # -- messages ---------------------------------------------------------------------------
    def store(self, seq: int, subject: str, hdrs: bytes | None, payload: bytes, ts_ns: int) -> None:
        if seq <= self._last_seq:
            raise ValueError(f"sequence {seq} not after last sequence {self._last_seq}")
        msg = StoredMsg(seq, subject, hdrs, bytes(payload), ts_ns)
        self._msgs[seq] = msg
        self._seqs.append(seq)
        self._by_subject.setdefault(subject, []).append(seq)
        self._bytes += msg.size_bytes
        self._last_seq, self._last_ts_ns = seq, ts_ns

    def load(self, seq: int) -> StoredMsg | None:
        return self._msgs.get(seq)

    def load_next(self, seq: int, filters: Sequence[str] | str | None = None) -> StoredMsg | None:
        if isinstance(filters, str) and filters in self._by_subject:
            seqs = self._by_subject[filters]
            i = bisect.bisect_left(seqs, seq)
            return self._msgs[seqs[i]] if i < len(seqs) else None
        for i in range(bisect.bisect_left(self._seqs, seq), len(self._seqs)):
            msg = self._msgs[self._seqs[i]]
            if filter_matches(filters, msg.subject):
                return msg
        return None

    def load_range(self, seq: int, limit: int, filters: Sequence[str] | str | None = None,
                   bytes_max: int = 0) -> list[StoredMsg]:
        if limit <= 0:
            return []
        if isinstance(filters, str) and filters in self._by_subject:
            seqs = self._by_subject[filters]
            i = bisect.bisect_left(seqs, seq)
            out = [self._msgs[s] for s in seqs[i:i + limit]]
        else:
            out = []
            for i in range(bisect.bisect_left(self._seqs, seq), len(self._seqs)):
                msg = self._msgs[self._seqs[i]]
                if filter_matches(filters, msg.subject):
                    out.append(msg)
                    if len(out) >= limit:
                        break
        if bytes_max > 0:
            total = 0
            for n, msg in enumerate(out):
                total += len(msg.payload) + len(msg.hdrs or b"")
                if total >= bytes_max:
                    return out[:n + 1]
        return out

    def load_last_by_subject(self, filters: Sequence[str] | str | None) -> StoredMsg | None:
        best = 0
        for subject, seqs in self._by_subject.items():
            if seqs[-1] > best and filter_matches(filters, subject):
                best = seqs[-1]
        return self._msgs.get(best)

    def remove(self, seq: int) -> bool:
        msg = self._msgs.pop(seq, None)
        if msg is None:
            return False
        del self._seqs[bisect.bisect_left(self._seqs, seq)]
        seqs = self._by_subject[msg.subject]
        del seqs[bisect.bisect_left(seqs, seq)]
        if not seqs:
            del self._by_subject[msg.subject]
        self._bytes -= msg.size_bytes
        return True

    def purge(self, filters: str | None = None, before_seq: int | None = None, keep: int | None = None) -> int:
        whole = not filters or filters == ">"
        if whole and before_seq is not None and before_seq > self._last_seq + 1:
            count = len(self._msgs)
            self.skip_to(before_seq)
            return count
        if whole:
            candidates = list(self._seqs)
        else:
            candidates = sorted(s for subj, seqs in self._by_subject.items() if filter_matches(filters, subj) for s in seqs)
        if keep:
            candidates = candidates[: max(len(candidates) - keep, 0)]
        if before_seq is not None:
            candidates = [s for s in candidates if s < before_seq]
        for seq in candidates:
            self.remove(seq)
        return len(candidates)

    def skip_to(self, seq: int) -> None:
        for s in list(self._seqs):
            self.remove(s)
        if seq - 1 > self._last_seq:
            self._last_seq = seq - 1

    # -- queries ----------------------------------------------------------------------------
    def state(self) -> StoreState:
        if not self._seqs:
            return StoreState(
                first_seq=empty_first_seq(self._last_seq), last_seq=self._last_seq, last_ts_ns=self._last_ts_ns
            )
        first = self._msgs[self._seqs[0]]
        span = self._last_seq - first.seq + 1
        return StoreState(
            messages=len(self._seqs),
            bytes=self._bytes,
            first_seq=first.seq,
            first_ts_ns=first.ts_ns,
            last_seq=self._last_seq,
            last_ts_ns=self._last_ts_ns,
            num_subjects=len(self._by_subject),
            num_deleted=span - len(self._seqs),
        )

    def subject_counts(self, filters: Sequence[str] | str | None = None) -> dict[str, int]:
        return {s: len(seqs) for s, seqs in self._by_subject.items() if filter_matches(filters, s)}

    def num_pending(self, after_seq: int, filters: Sequence[str] | str | None = None) -> int:
        total = 0
        for subject, seqs in self._by_subject.items():
            if filter_matches(filters, subject):
                total += len(seqs) - bisect.bisect_right(seqs, after_seq)
        return total

    def num_after(self, after_seq: int) -> int:
        return len(self._seqs) - bisect.bisect_right(self._seqs, after_seq)

    def num_after_from_counters(self, after_seq: int) -> int | None:
        return self.num_after(after_seq)

    def seq_for_time(self, ts_ns: int) -> int | None:
        for seq in self._seqs:
            if self._msgs[seq].ts_ns >= ts_ns:
                return seq
        return None

    def last_seqs_per_subject(self, filters: Sequence[str] | str | None = None) -> list[int]:
        return sorted(seqs[-1] for s, seqs in self._by_subject.items() if filter_matches(filters, s))

    def deleted_seqs(self, limit: int = 100_000) -> list[int]:
        out: list[int] = []
        for prev, nxt in zip(self._seqs, self._seqs[1:]):
            out.extend(range(prev + 1, min(nxt, prev + 1 + limit - len(out))))
            if len(out) >= limit:
                break
        if self._seqs and len(out) < limit:
            out.extend(range(self._seqs[-1] + 1, min(self._last_seq + 1, self._seqs[-1] + 1 + limit - len(out))))
        return out

    def iter_messages(self) -> Iterator[StoredMsg]:
        for seq in list(self._seqs):
            yield self._msgs[seq]

    # -- applied index and consumers ----------------------------------------------------------
    def applied_index(self) -> int:
        return self._applied_index

    def set_applied_index(self, index: int) -> None:
        self._applied_index = index

    def save_consumer(self, name: str, state: bytes) -> None:
        self._consumers[name] = bytes(state)

    def load_consumer(self, name: str) -> bytes | None:
        return self._consumers.get(name)

    def delete_consumer(self, name: str) -> bool:
        return self._consumers.pop(name, None) is not None

    def consumer_names(self) -> list[str]:
        return sorted(self._consumers)

    def save_msg_id(self, msg_id: str, seq: int, ts_ns: int) -> None:
        self._msg_ids.pop(msg_id, None)
        self._msg_ids[msg_id] = (seq, ts_ns)

    def msg_ids(self) -> list[tuple[str, int, int]]:
        return sorted(((k, s, t) for k, (s, t) in self._msg_ids.items()), key=lambda e: (e[2], e[1]))

    def prune_msg_ids(self, before_ts_ns: int, keep_seq: int) -> None:
        for k, (seq, ts) in list(self._msg_ids.items()):
            if ts < before_ts_ns and seq != keep_seq:
                del self._msg_ids[k]

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()
