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

`encode_snapshot`/`decode_snapshot` define a store-independent snapshot: a magic line, a JSON
header (last seq/ts, applied index, consumers, dedup ids), then length-prefixed messages and a CRC32 of all
of it, so a corrupt or truncated transfer is detected before anything is replaced.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import json
import struct
import zlib
from collections.abc import Iterator, Sequence

import attrs

from natsd.subjects import subject_matches

MSG_OVERHEAD_BYTES = 16
SNAPSHOT_MAGIC = b"JRSNAP1\n"
_MSG_HEADER = struct.Struct(">QqIiI")  # seq, ts_ns, subject len, headers len (-1 = None), payload len


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

    @abc.abstractmethod
    def load(self, seq: int) -> StoredMsg | None: ...

    @abc.abstractmethod
    def load_next(self, seq: int, filters: Sequence[str] | str | None = None) -> StoredMsg | None:
        """The first message with sequence >= `seq` whose subject matches `filters`."""

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

    def snapshot(self) -> bytes:
        return encode_snapshot(self)

    def restore(self, data: bytes) -> None:
        """Replace this store's whole content with a snapshot (atomically; verified first)."""
        header, messages = decode_snapshot(data)
        with self.batch():
            self._clear()
            for msg in messages:
                self.store(msg.seq, msg.subject, msg.hdrs, msg.payload, msg.ts_ns)
            self._set_last(header["last_seq"], header["last_ts_ns"])
            for name, blob in header["consumers"].items():
                self.save_consumer(name, base64.b64decode(blob))
            for msg_id, seq, ts_ns in header["msg_ids"]:
                self.save_msg_id(msg_id, seq, ts_ns)
            self.set_applied_index(header["applied_index"])


def encode_snapshot(store: MessageStore) -> bytes:
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
    parts = [SNAPSHOT_MAGIC, json.dumps(header, sort_keys=True).encode() + b"\n"]
    for msg in store.iter_messages():
        subject = msg.subject.encode()
        hdr_len = -1 if msg.hdrs is None else len(msg.hdrs)
        parts.append(_MSG_HEADER.pack(msg.seq, msg.ts_ns, len(subject), hdr_len, len(msg.payload)))
        parts.extend((subject, msg.hdrs or b"", msg.payload))
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


def decode_snapshot(data: bytes) -> tuple[dict, list[StoredMsg]]:  # type: ignore[type-arg]
    if len(data) < len(SNAPSHOT_MAGIC) + 4 or not data.startswith(SNAPSHOT_MAGIC):
        raise SnapshotError("not a JetRaft stream snapshot")
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
    if zlib.crc32(body) != crc:
        raise SnapshotError("snapshot checksum mismatch")
    line_end = body.index(b"\n", len(SNAPSHOT_MAGIC))
    header = json.loads(body[len(SNAPSHOT_MAGIC) : line_end])
    pos, messages = line_end + 1, []
    while pos < len(body):
        seq, ts_ns, subj_len, hdr_len, payload_len = _MSG_HEADER.unpack_from(body, pos)
        pos += _MSG_HEADER.size
        subject = body[pos : pos + subj_len].decode()
        pos += subj_len
        hdrs = None if hdr_len < 0 else body[pos : pos + hdr_len]
        pos += max(hdr_len, 0)
        payload = body[pos : pos + payload_len]
        pos += payload_len
        messages.append(StoredMsg(seq, subject, hdrs, payload, ts_ns))
    if pos != len(body) or len(messages) != header["messages"]:
        raise SnapshotError("snapshot is truncated")
    return header, messages
