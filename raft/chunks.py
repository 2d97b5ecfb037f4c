# pure-core
"""Follower-side assembly of a snapshot that arrives in chunks.

Chunks must arrive in order, starting at offset 0; each one names the snapshot it belongs to
(its meta). A chunk at offset 0 (re)starts assembly; a chunk for another snapshot or at the wrong
offset is ignored and answered with the offset we expect, so the leader rewinds. The last chunk
carries a crc32 of the whole data: on a mismatch the partial snapshot is thrown away and the leader
is told to restart (reject). Only a verified snapshot is returned for installation.
"""

from __future__ import annotations

import zlib

import attrs

from raft.types import Message, Snapshot, SnapshotMeta


def checksum(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@attrs.frozen
class ChunkOutcome:
    next_offset: int  # what we expect next (ack)
    reject: bool = False  # checksum failed: restart from 0
    snapshot: Snapshot | None = None  # complete and verified


@attrs.define
class ChunkAssembler:
    meta: SnapshotMeta | None = None
    buffer: bytearray = attrs.field(factory=bytearray)

    def reset(self) -> None:
        self.meta = None
        self.buffer = bytearray()

    def add(self, msg: Message) -> ChunkOutcome:
        assert msg.snapshot is not None
        meta, chunk = msg.snapshot.meta, msg.snapshot.data
        if msg.chunk_offset == 0:
            self.meta, self.buffer = meta, bytearray()
        elif meta != self.meta:
            return ChunkOutcome(next_offset=0)
        elif msg.chunk_offset != len(self.buffer):
            return ChunkOutcome(next_offset=len(self.buffer))
        self.buffer += chunk
        if not msg.chunk_last:
            return ChunkOutcome(next_offset=len(self.buffer))
        data = bytes(self.buffer)
        self.reset()
        if checksum(data) != msg.chunk_checksum:
            return ChunkOutcome(next_offset=0, reject=True)
        return ChunkOutcome(next_offset=len(data), snapshot=Snapshot(meta=meta, data=data))
