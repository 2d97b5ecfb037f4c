"""The message store interface shared by the memory and SQLite stores, and the snapshot format.

A store holds one stream replica's applied state: messages by sequence, a per-subject index,
the first/last sequence (which survive the messages they describe: after a full purge
`first_seq == last_seq + 1`), per-consumer state blobs, and the Raft `applied_index`. Every
mutating call is atomic; inside `with store.batch():` many calls share ONE transaction (one
fsync for the SQLite store), so the applied index lands in the same commit as what it describes.

Stores are synchronous and may block (SQLite does disk I/O and fsync): a trio shell calls them
with `trio.to_thread.run_sync`, one thread at a time per store. Stores are not thread-safe.

Message size (the `bytes` of StreamState) is `len(subject) + len(headers) + len(payload) + 16`,
the same in every store so replicas on different stores report equal state.

`write_snapshot`/`verify_snapshot` define a store-independent, streamable snapshot: a magic line,
a JSON header (last seq/ts, applied index, consumers, dedup ids, message count), then
length-prefixed messages and a CRC32 of all of it. Restores verify the whole stream first, so a
corrupt or truncated transfer is detected before anything is replaced.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import contextlib
import io
import json
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import attrs

from natsd.subjects import subject_matches

MSG_OVERHEAD_BYTES = 16
SNAPSHOT_MAGIC = b"JRSNAP1\n"
_MSG_HEADER = struct.Struct(">QqIiI")  # seq, ts_ns, subject len, headers len (-1 = None), payload len
_MAX_HEADER_LINE = 256 * 1024 * 1024
_HEADER_KEYS = frozenset({"last_seq", "last_ts_ns", "applied_index", "consumers", "msg_ids", "messages"})


class SnapshotError(ValueError):
    """The snapshot bytes are corrupt, truncated, or not a snapshot."""


@attrs.frozen
class StoredMsg:
    seq: int
    subject: str
    hdrs: bytes | None
    payload: bytes
    ts_ns: int

    @property
    def size_bytes(self) -> int:
        return msg_size(self.subject, self.hdrs, self.payload)


@attrs.frozen
class StoreState:
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    first_ts_ns: int = 0
    last_seq: int = 0
    last_ts_ns: int = 0
    num_subjects: int = 0
    num_deleted: int = 0


def msg_size(subject: str, hdrs: bytes | None, payload: bytes) -> int:
    return len(subject.encode()) + len(hdrs or b"") + len(payload) + MSG_OVERHEAD_BYTES


def filter_matches(filters: Sequence[str] | str | None, subject: str) -> bool:
    """None, "", ">" or () match everything; otherwise any of the patterns must match."""
    if not filters or filters == ">":
        return True
    if isinstance(filters, str):
        return subject_matches(filters, subject)
    return any(f == ">" or subject_matches(f, subject) for f in filters)


def empty_first_seq(last_seq: int) -> int:
    """first_seq of a store without messages: 0 for a brand-new one, else last_seq + 1."""
    return last_seq + 1 if last_seq else 0


class MessageStore(abc.ABC):
    """One stream replica's messages and applied state. See the module docstring."""

    # -- messages ---------------------------------------------------------------------------
    @abc.abstractmethod
    def store(self, seq: int, subject: str, hdrs: bytes | None, payload: bytes, ts_ns: int) -> None:
        """Append a message; `seq` must be greater than `state().last_seq`."""

    def store_many(self, rows: Sequence[tuple[int, str, bytes | None, bytes, int]],
                   applied_index: int | None = None) -> None:
        """Append many messages `(seq, subject, hdrs, payload, ts_ns)`, sequences ascending:
        the same as `store` for each row, then `set_applied_index(applied_index)` if given, in
        one atomic step (stores may do it in bulk)."""
        with self.batch():
            for seq, subject, hdrs, payload, ts_ns in rows:
                self.store(seq, subject, hdrs, payload, ts_ns)
            if applied_index is not None:
                self.set_applied_index(applied_index)

    @abc.abstractmethod
    def load(self, seq: int) -> StoredMsg | None: ...

    @abc.abstractmethod
    def load_next(self, seq: int, filters: Sequence[str] | str | None = None) -> StoredMsg | None:
        """The first message with sequence >= `seq` whose subject matches `filters`."""

    def load_range(self, seq: int, limit: int, filters: Sequence[str] | str | None = None,
                   bytes_max: int = 0) -> list[StoredMsg]:
        """Up to `limit` messages with sequence >= `seq` matching `filters`, in sequence order:
        what `limit` calls of `load_next` walking forward give (stores do it in one read).
        `bytes_max` > 0 ends the run with the message that brings its headers and payloads
        to `bytes_max` or more (so at least one message)."""
        out: list[StoredMsg] = []
        total = 0
        while len(out) < limit:
            msg = self.load_next(seq, filters)
            if msg is None:
                break
            out.append(msg)
            seq = msg.seq + 1
            total += len(msg.payload) + len(msg.hdrs or b"")
            if 0 < bytes_max <= total:
                break
        return out

    def num_after(self, after_seq: int) -> int:
        """Messages with sequence > `after_seq`: `num_pending(after_seq)` without a filter
        (stores answer it without counting rows when they can)."""
        return self.num_pending(after_seq)

    def num_after_from_counters(self, after_seq: int) -> int | None:
        """`num_after` when the store can answer without counting rows (bounded work, fit to
        run on the event loop); None when only a count could tell."""
        return None

    @abc.abstractmethod
    def load_last_by_subject(self, filters: Sequence[str] | str | None) -> StoredMsg | None:
        """The newest message matching the (literal or wildcard) subject filter."""

    @abc.abstractmethod
    def remove(self, seq: int) -> bool:
        """Delete one message; False if it was not there."""

    @abc.abstractmethod
    def purge(self, filters: str | None = None, before_seq: int | None = None, keep: int | None = None) -> int:
        """Delete matching messages with seq < before_seq (if given), keeping the newest `keep`
        matches (if given). No filter, no before_seq, no keep = everything. Returns the count.
        An unfiltered purge with before_seq beyond the end moves the stream to before_seq."""

    @abc.abstractmethod
    def skip_to(self, seq: int) -> None:
        """Remove everything and make `seq` the next sequence (last_seq = seq - 1)."""

    # -- queries ----------------------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> StoreState: ...

    def last_seq_ts(self) -> tuple[int, int]:
        """`(state().last_seq, state().last_ts_ns)`; stores override it without building the
        whole state (the append path asks for it once per commit)."""
        state = self.state()
        return state.last_seq, state.last_ts_ns

    @abc.abstractmethod
    def subject_counts(self, filters: Sequence[str] | str | None = None) -> dict[str, int]:
        """{subject: messages} for subjects matching the filter."""

    @abc.abstractmethod
    def num_pending(self, after_seq: int, filters: Sequence[str] | str | None = None) -> int:
        """How many matching messages have a sequence > after_seq."""

    @abc.abstractmethod
    def seq_for_time(self, ts_ns: int) -> int | None:
        """Sequence of the first message stored at or after `ts_ns`, None if none."""

    @abc.abstractmethod
    def last_seqs_per_subject(self, filters: Sequence[str] | str | None = None) -> list[int]:
        """Sorted sequences of the newest message of each matching subject."""

    @abc.abstractmethod
    def deleted_seqs(self, limit: int = 100_000) -> list[int]:
        """Interior deletes: sequences between first and last that hold no message."""

    def subject_count(self, subject: str) -> int:
        return self.subject_counts(subject).get(subject, 0)

    # -- applied index and consumers ----------------------------------------------------------
    @abc.abstractmethod
    def applied_index(self) -> int: ...

    @abc.abstractmethod
    def set_applied_index(self, index: int) -> None: ...

    @abc.abstractmethod
    def save_consumer(self, name: str, state: bytes) -> None: ...

    @abc.abstractmethod
    def load_consumer(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    def delete_consumer(self, name: str) -> bool: ...

    @abc.abstractmethod
    def consumer_names(self) -> list[str]: ...

    # -- message-id dedup index (Nats-Msg-Id), persisted so every replica decides alike -------
    @abc.abstractmethod
    def save_msg_id(self, msg_id: str, seq: int, ts_ns: int) -> None:
        """Record (or replace) the sequence and time a Nats-Msg-Id was stored at."""

    @abc.abstractmethod
    def msg_ids(self) -> list[tuple[str, int, int]]:
        """All recorded (msg_id, seq, ts_ns), oldest first."""

    @abc.abstractmethod
    def prune_msg_ids(self, before_ts_ns: int, keep_seq: int) -> None:
        """Forget ids recorded before `before_ts_ns`, except the one at `keep_seq`."""

    # -- transactions, snapshots, lifecycle ---------------------------------------------------
    @abc.abstractmethod
    def batch(self) -> contextlib.AbstractContextManager[None]:
        """All calls inside share one atomic commit (nested batches join the outer one)."""

    @abc.abstractmethod
    def iter_messages(self) -> Iterator[StoredMsg]:
        """All messages in sequence order."""

    @abc.abstractmethod
    def _clear(self) -> None:
        """Remove every message, consumer, msg id and counter (used by restore)."""

    @abc.abstractmethod
    def _set_last(self, seq: int, ts_ns: int) -> None:
        """Set last_seq/last_ts (used by restore when the newest message was deleted)."""

    def close(self) -> None:
        """Release resources (no-op by default)."""

    def content_digest(self) -> str:
        """SHA-256 over everything a replica must agree on (messages, last seq/ts, consumers,
        dedup ids, applied index): equal digests = equal replicas, whatever the store kind."""
        sink = _HashSink()
        write_snapshot(self, sink)  # type: ignore[arg-type]
        return sink.digest.hexdigest()

    def snapshot(self) -> bytes:
        buf = io.BytesIO()
        write_snapshot(self, buf)
        return buf.getvalue()

    def restore(self, data: bytes) -> None:
        """Replace this store's whole content with a snapshot (verified first, then atomic)."""
        verify_snapshot(io.BytesIO(data))
        self._restore_stream(io.BytesIO(data))

    def snapshot_to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the portable snapshot to `path` (streamed, fsynced)."""
        with open(path, "wb") as f:
            write_snapshot(self, f)
            f.flush()
            os.fsync(f.fileno())

    def restore_from_file(self, path: str | os.PathLike[str]) -> None:
        """Restore from a snapshot file: one pass to verify the checksum, one to load."""
        with open(path, "rb") as f:
            verify_snapshot(f)
        with open(path, "rb") as f:
            self._restore_stream(f)

    def _restore_stream(self, f: BinaryIO) -> None:
        reader = _SnapshotReader(f)
        header = reader.header()
        with self.batch():
            self._clear()
            for msg in reader.messages(header["messages"]):
                self.store(msg.seq, msg.subject, msg.hdrs, msg.payload, msg.ts_ns)
            self._set_last(header["last_seq"], header["last_ts_ns"])
            for name, blob in header["consumers"].items():
                self.save_consumer(name, base64.b64decode(blob))
            for msg_id, seq, ts_ns in header["msg_ids"]:
                self.save_msg_id(msg_id, seq, ts_ns)
            self.set_applied_index(header["applied_index"])


class _HashSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)


class _CrcWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f, self.crc = f, 0

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.f.write(data)


def write_snapshot(store: MessageStore, f: BinaryIO) -> None:
    """Stream the portable snapshot of `store` into the binary file `f`."""
    state = store.state()
    consumers = {}
    for name in store.consumer_names():
        blob = store.load_consumer(name)
        if blob is not None:
            consumers[name] = base64.b64encode(blob).decode()
    header = {
        "last_seq": state.last_seq,
        "last_ts_ns": state.last_ts_ns,
        "applied_index": store.applied_index(),
        "consumers": consumers,
        "msg_ids": [list(entry) for entry in store.msg_ids()],
        "messages": state.messages,
    }
    out = _CrcWriter(f)
    out.write(SNAPSHOT_MAGIC)
    out.write(json.dumps(header, sort_keys=True).encode() + b"\n")
    for msg in store.iter_messages():
        subject = msg.subject.encode()
        hdr_len = -1 if msg.hdrs is None else len(msg.hdrs)
        out.write(_MSG_HEADER.pack(msg.seq, msg.ts_ns, len(subject), hdr_len, len(msg.payload)))
        out.write(subject + (msg.hdrs or b"") + msg.payload)
    f.write(struct.pack(">I", out.crc))


class _SnapshotReader:
    """Reads a snapshot stream, keeping a running CRC; raises SnapshotError on short reads."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.crc = f, 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise SnapshotError("snapshot is truncated")
        self.crc = zlib.crc32(data, self.crc)
        return data

    def header(self) -> dict[str, Any]:
        if self.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            raise SnapshotError("not a JetRaft stream snapshot")
        line = self.f.readline(_MAX_HEADER_LINE)
        if not line.endswith(b"\n"):
            raise SnapshotError("snapshot header is truncated")
        self.crc = zlib.crc32(line, self.crc)
        try:
            header = json.loads(line)
        except ValueError:
            raise SnapshotError("snapshot header is not JSON") from None
        if not isinstance(header, dict) or not _HEADER_KEYS <= header.keys():
            raise SnapshotError("snapshot header is incomplete")
        return header

    def messages(self, count: int) -> Iterator[StoredMsg]:
        for _ in range(count):
            seq, ts_ns, subj_len, hdr_len, payload_len = _MSG_HEADER.unpack(self.read(_MSG_HEADER.size))
            subject = self.read(subj_len).decode("utf-8", errors="replace")
            hdrs = None if hdr_len < 0 else self.read(hdr_len)
            yield StoredMsg(seq, subject, hdrs, self.read(payload_len), ts_ns)

    def finish(self) -> None:
        expected = self.crc
        trailer = self.f.read(4)
        if len(trailer) != 4 or struct.unpack(">I", trailer)[0] != expected:
            raise SnapshotError("snapshot checksum mismatch")
        if self.f.read(1):
            raise SnapshotError("trailing bytes after snapshot")


def verify_snapshot(f: BinaryIO) -> dict[str, Any]:
    """Read a whole snapshot stream and check its checksum; returns the header."""
    reader = _SnapshotReader(f)
    header = reader.header()
    for _ in reader.messages(header["messages"]):
        pass
    reader.finish()
    return header
