# pure-core
"""A tiny deterministic state machine for tests: applied entries fold into a running hash chain.

`apply(entry)` sets chain = blake2b(chain | index | term | kind | data) and returns the new chain,
so two replicas that applied the same entries in the same order have the same chain at every
index, and any difference (a lost, invented, reordered or altered entry) changes every later
chain. `snapshot()` / `restore()` carry (index, term, chain), which is all the state there is.

Why: design.md says replicas are compared by content, not by counts; this is the smallest state
machine that makes that comparison exact.
"""

from __future__ import annotations

import hashlib
import struct

import attrs

from raft.types import Entry

_SNAP = struct.Struct(">QQ16s")
GENESIS = b"\0" * 16


def fold(chain: bytes, entry: Entry) -> bytes:
    head = struct.pack(">QQB", entry.index, entry.term, int(entry.kind))
    return hashlib.blake2b(chain + head + entry.data, digest_size=16).digest()


@attrs.define
class HashChainStateMachine:
    applied_index: int = 0
    applied_term: int = 0
    chain: bytes = GENESIS

    def apply(self, entry: Entry) -> bytes:
        assert entry.index == self.applied_index + 1, (
            f"applied {entry.index} after {self.applied_index}: entries must be applied in order"
        )
        self.chain = fold(self.chain, entry)
        self.applied_index = entry.index
        self.applied_term = entry.term
        return self.chain

    def snapshot(self) -> bytes:
        return _SNAP.pack(self.applied_index, self.applied_term, self.chain)

    def restore(self, data: bytes) -> None:
        self.applied_index, self.applied_term, self.chain = _SNAP.unpack(data)

    @classmethod
    def from_snapshot(cls, data: bytes) -> HashChainStateMachine:
        sm = cls()
        if data:
            sm.restore(data)
        return sm
