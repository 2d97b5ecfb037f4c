# pure-core
"""Simulated durable Raft storage of one node on a SimDisk, with checksums and repair detection.

Layout (three files per node):
- `wal`: an append-only journal of records `len:u32 crc:u32 body`. The crc is chained: it covers
  the body and the previous record's crc, so a bit flip, a rolled-back chunk or a missing record
  anywhere breaks every later check. Bodies: `E` entry (term, index, kind, data), `H` hard state,
  `S` snapshot marker (index, term, crc of the snapshot file).
- `snap`: the latest snapshot (meta, membership, data, crc), replaced atomically.
- `meta`: the *sync watermark* (wal bytes durable at the last sync and the chain crc there, with
  its own crc), replaced atomically after every sync.

A sync is: fsync wal, then replace+fsync meta. On load, the wal must verify up to the watermark:
anything shorter or different there is corruption (a truncation is not mistaken for a torn write).
Records after the watermark were never synced; they are replayed while they verify and the first
bad one ends the log (a torn tail after power loss, which Raft never acknowledged).

`load()` returns the state it could verify and whether the node must start with
`repair_needed=True`: a verification failure, or an empty disk on a node that was once a member
(the simulator, like a real server's identity file, knows that). It never hands back a shorter
history as if it were whole.

Why: R1-R3, R5. Applying a snapshot follows raft/storage/base.py: the log is cut at the snapshot
index and entries after it survive only if the log holds (index, term) of the snapshot.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence

import attrs

from raft.testing.simdisk import SimDisk
from raft.types import Entry, EntryKind, HardState, Membership, NodeId, Snapshot, SnapshotMeta

WAL = "wal"
SNAP = "snap"
META = "meta"
_HDR = struct.Struct(">II")
_ENTRY = struct.Struct(">QQB")
_HARD = struct.Struct(">QQ")
_SNAPREC = struct.Struct(">QQI")
_META = struct.Struct(">QII")


@attrs.frozen
class Loaded:
    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    problems: tuple[str, ...] = ()
    empty: bool = True

    @property
    def corrupt(self) -> bool:
        return bool(self.problems)


def _encode_entry(e: Entry) -> bytes:
    return b"E" + _ENTRY.pack(e.term, e.index, int(e.kind)) + e.data


def _encode_hard(hs: HardState) -> bytes:
    vote = b"" if hs.vote is None else b"\x01" + hs.vote.encode()
    return b"H" + _HARD.pack(hs.term, hs.commit) + vote


def _encode_membership(m: Membership) -> dict[str, list[str]]:
    return {
        "voters": sorted(m.voters),
        "learners": sorted(m.learners),
        "voters_outgoing": sorted(m.voters_outgoing),
    }


def encode_snapshot(snap: Snapshot) -> bytes:
    head = json.dumps(
        {"index": snap.meta.index, "term": snap.meta.term, "m": _encode_membership(snap.meta.membership)},
        sort_keys=True,
    ).encode()
    body = struct.pack(">I", len(head)) + head + snap.data
    return body + struct.pack(">I", zlib.crc32(body))


def decode_snapshot(raw: bytes) -> Snapshot | None:
    """The snapshot, or None if the file does not verify."""
    if len(raw) < 8 or zlib.crc32(raw[:-4]) != struct.unpack(">I", raw[-4:])[0]:
        return None
    (n,) = struct.unpack(">I", raw[:4])
    try:
        head = json.loads(raw[4 : 4 + n])
        m = head["m"]
        membership = Membership(
            frozenset(m["voters"]), frozenset(m["learners"]), frozenset(m["voters_outgoing"])
        )
        meta = SnapshotMeta(index=head["index"], term=head["term"], membership=membership)
    except (ValueError, KeyError, TypeError):
        return None
    return Snapshot(meta=meta, data=raw[4 + n : -4])


@attrs.define
class _Replay:
    """Mutable state while replaying the wal. A snapshot marker cuts the log by (index, term)
    alone; the snapshot file is matched against the *last* marker once replay ends (earlier
    markers' files have since been replaced, which is fine)."""

    hard: HardState = HardState()
    base_index: int = 0
    base_term: int = 0
    marker_crc: int | None = None
    entries: list[Entry] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    def first_index(self) -> int:
        return self.base_index + 1

    def add_entry(self, e: Entry) -> bool:
        first = self.first_index()
        if e.index < first:
            return True  # already covered by the snapshot
        pos = e.index - first
        if pos > len(self.entries):
            self.problems.append(f"wal: gap before entry {e.index}")
            return False
        del self.entries[pos:]
        self.entries.append(e)
        return True

    def term_at(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_term
        pos = index - self.first_index()
        return self.entries[pos].term if 0 <= pos < len(self.entries) else None

    def cut(self, index: int, term: int, crc: int) -> None:
        keep = self.term_at(index) == term
        pos = index - self.first_index()
        self.entries = self.entries[pos + 1 :] if keep else []
        self.base_index, self.base_term, self.marker_crc = index, term, crc


@attrs.define
class SimRaftStorage:
    """Durable Raft state of `node` on `disk` (see the module docstring)."""

    disk: SimDisk
    node: NodeId
    _crc: int = attrs.field(default=0, init=False)  # chain crc at the end of the wal

    # -- writing ---------------------------------------------------------------------------

    def _record(self, body: bytes) -> None:
        self._crc = zlib.crc32(body, self._crc)
        self.disk.append(self.node, WAL, _HDR.pack(len(body), self._crc) + body)

    def save_snapshot(self, snap: Snapshot) -> None:
        """Write and fsync the snapshot file, then journal the marker (synced by `sync`)."""
        raw = encode_snapshot(snap)
        self.disk.replace(self.node, SNAP, raw)
        self.disk.fsync(self.node, SNAP)
        self._record(b"S" + _SNAPREC.pack(snap.meta.index, snap.meta.term, zlib.crc32(raw)))

    def append(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            self._record(_encode_entry(e))

    def set_hard_state(self, hs: HardState) -> None:
        self._record(_encode_hard(hs))

    def sync(self) -> None:
        self.disk.fsync(self.node, WAL)
        size = self.disk.size(self.node, WAL)
        body = struct.pack(">QI", size, self._crc)
        self.disk.replace(self.node, META, body + struct.pack(">I", zlib.crc32(body)))
        self.disk.fsync(self.node, META)

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> Loaded:
        names = set(self.disk.names(self.node))
        if not names:
            self._crc = 0
            return Loaded()
        rep = _Replay()
        watermark, want_crc = self._read_meta(names, rep)
        raw = self.disk.read(self.node, WAL) or b""
        if len(raw) < watermark:
            rep.problems.append(f"wal: {len(raw)} bytes, {watermark} were synced")
        crc, end = _scan(raw, 0, 0, watermark, lambda body: self._apply(body, rep))
        if not rep.problems and (end != watermark or crc != want_crc):
            rep.problems.append("wal: synced part does not match the sync watermark")
        if not rep.problems:
            crc, end = _scan(raw, crc, watermark, len(raw), lambda body: self._apply(body, rep))
            self.disk.truncate_written(self.node, WAL, end)  # drop a torn tail before appending
        self._crc = crc
        snapshot = self._final_snapshot(rep)
        return Loaded(rep.hard, snapshot, tuple(rep.entries), tuple(rep.problems), empty=False)

    def _final_snapshot(self, rep: _Replay) -> Snapshot | None:
        if rep.marker_crc is None:
            return None
        raw = self.disk.read(self.node, SNAP)
        snap = decode_snapshot(raw) if raw is not None else None
        if snap is None or raw is None or zlib.crc32(raw) != rep.marker_crc:
            rep.problems.append("snap: missing, corrupt or rolled back")
        elif (snap.meta.index, snap.meta.term) != (rep.base_index, rep.base_term):
            rep.problems.append("snap: does not match its wal marker")
        else:
            return snap
        rep.entries.clear()  # without the snapshot the entries after it are not a usable log
        rep.base_index = rep.base_term = 0
        return None

    def _read_meta(self, names: set[str], rep: _Replay) -> tuple[int, int]:
        raw = self.disk.read(self.node, META) if META in names else None
        if raw is None:
            return 0, 0  # never synced: everything in the wal is an unsynced tail
        if len(raw) != 16 or zlib.crc32(raw[:12]) != struct.unpack(">I", raw[12:])[0]:
            rep.problems.append("meta: checksum mismatch")
            return 0, 0
        size, crc = struct.unpack(">QI", raw[:12])
        return size, crc

    def _apply(self, body: bytes, rep: _Replay) -> bool:
        kind = body[:1]
        if kind == b"E" and len(body) >= 1 + _ENTRY.size:
            term, index, k = _ENTRY.unpack_from(body, 1)
            return rep.add_entry(Entry(term, index, EntryKind(k), body[1 + _ENTRY.size :]))
        if kind == b"H" and len(body) >= 1 + _HARD.size:
            term, commit = _HARD.unpack_from(body, 1)
            rest = body[1 + _HARD.size :]
            vote = rest[1:].decode() if rest[:1] == b"\x01" else None
            rep.hard = HardState(term=term, vote=vote, commit=commit)
            return True
        if kind == b"S" and len(body) == 1 + _SNAPREC.size:
            return self._apply_snapshot_marker(body, rep)
        rep.problems.append(f"wal: unknown record {kind!r}")
        return False

    def _apply_snapshot_marker(self, body: bytes, rep: _Replay) -> bool:
        index, term, crc = _SNAPREC.unpack_from(body, 1)
        rep.cut(index, term, crc)
        return True


def _scan(raw: bytes, crc: int, start: int, stop: int, apply) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Verify and apply records in raw[start:stop]; returns (chain crc, end offset reached)."""
    pos = start
    stop = min(stop, len(raw))
    while pos + _HDR.size <= stop:
        length, rec_crc = _HDR.unpack_from(raw, pos)
        end = pos + _HDR.size + length
        if end > stop:
            break
        body = raw[pos + _HDR.size : end]
        nxt = zlib.crc32(body, crc)
        if nxt != rec_crc or not apply(body):
            break
        crc, pos = nxt, end
    return crc, pos
