# pure-core
"""A simulated disk with a *written* and a *durable* layer per file, and seeded faults.

How it works: each (node, file name) holds its written bytes (what a running process reads back,
the page cache) and what is durable (on the platter). `append` and `replace` change only the
written layer; `fsync` makes the written layer durable. A process crash keeps the written layer
(the OS survived); `power_loss(node)` keeps only the durable layer, except that an unsynced
*append* may survive in part: a seeded prefix of the unsynced tail is kept (a torn write), possibly
empty or whole. A file created and never fsynced vanishes on power loss.

Corruption is physical and hits both layers: `corrupt(node, kind)` flips one bit, truncates a
file, or rolls a chunk back to the bytes the file had at its previous fsync (zeros where it was
shorter), the three file faults of Jepsen's NATS analysis; `wipe(node)` deletes every file.

For append-only files the durable layer is not copied: it is the first `durable_len` bytes of the
written layer, so a log of many small appends costs O(1) per append and per fsync.

Why: R1-R3 are claims about what survives power loss and corruption; this model is what the
simulator checks them against. It is pure (no real I/O) so every fault replays from its seed.
"""

from __future__ import annotations

import enum
import random

import attrs

from raft.types import NodeId


class CorruptKind(enum.Enum):
    BITFLIP = "bitflip"
    TRUNCATE = "truncate"
    ROLLBACK = "rollback"


@attrs.define
class SimFile:
    written: bytearray = attrs.field(factory=bytearray)
    durable_len: int = 0
    durable_copy: bytes | None = None  # set when durable is not a prefix of written
    durable_exists: bool = False
    previous: bytes = b""  # durable content as of the fsync before the last one (rollback)
    previous_len: int = 0  # for append-only files, previous is written[:previous_len]

    def durable(self) -> bytes:
        if self.durable_copy is not None:
            return self.durable_copy
        return bytes(self.written[: self.durable_len])

    def previous_bytes(self) -> bytes:
        if self.previous:
            return self.previous
        return bytes(self.written[: self.previous_len])


@attrs.frozen
class Corruption:
    """What `corrupt` did, for the trace."""

    node: NodeId
    name: str
    kind: CorruptKind
    offset: int
    length: int


@attrs.define
class SimDisk:
    rng: random.Random
    _files: dict[tuple[NodeId, str], SimFile] = attrs.field(factory=dict, init=False)
    fsyncs: int = attrs.field(default=0, init=False)

    # -- file operations ------------------------------------------------------------------

    def exists(self, node: NodeId, name: str) -> bool:
        return (node, name) in self._files

    def read(self, node: NodeId, name: str) -> bytes | None:
        f = self._files.get((node, name))
        return None if f is None else bytes(f.written)

    def size(self, node: NodeId, name: str) -> int:
        f = self._files.get((node, name))
        return 0 if f is None else len(f.written)

    def names(self, node: NodeId) -> list[str]:
        return sorted(name for (n, name) in self._files if n == node)

    def append(self, node: NodeId, name: str, data: bytes) -> None:
        self._files.setdefault((node, name), SimFile()).written.extend(data)

    def replace(self, node: NodeId, name: str, data: bytes) -> None:
        """Atomic replace (write temp + rename): power loss leaves old or new, never a mix."""
        f = self._files.setdefault((node, name), SimFile())
        if f.durable_copy is None:
            f.durable_copy = bytes(f.written[: f.durable_len])
        f.written = bytearray(data)

    def fsync(self, node: NodeId, name: str) -> None:
        f = self._files.get((node, name))
        if f is None:
            return
        self.fsyncs += 1
        if f.durable_copy is not None:
            f.previous, f.previous_len = f.durable_copy, 0
        else:
            f.previous, f.previous_len = b"", f.durable_len
        f.durable_copy = None
        f.durable_len = len(f.written)
        f.durable_exists = True

    def truncate_written(self, node: NodeId, name: str, size: int) -> None:
        """ftruncate of an append-only file, effective in both layers (drops a torn tail)."""
        f = self._files.get((node, name))
        if f is None or len(f.written) <= size:
            return
        del f.written[size:]
        f.durable_len = min(f.durable_len, size)
        if f.durable_copy is not None:
            f.durable_copy = f.durable_copy[:size]

    def is_durable(self, node: NodeId, name: str) -> bool:
        f = self._files.get((node, name))
        return f is not None and f.durable_exists and f.durable_copy is None and (
            f.durable_len == len(f.written)
        )

    # -- faults ---------------------------------------------------------------------------

    def power_loss(self, node: NodeId) -> list[tuple[str, int]]:
        """Keep only durable data (plus a seeded torn prefix of unsynced appends).
        Returns (file, bytes lost) for each file that lost something."""
        lost: list[tuple[str, int]] = []
        for name in self.names(node):
            f = self._files[(node, name)]
            before = len(f.written)
            if not f.durable_exists:
                del self._files[(node, name)]
                lost.append((name, before))
                continue
            if f.durable_copy is not None:
                f.written = bytearray(f.durable_copy)
                f.durable_copy = None
            else:
                tail = len(f.written) - f.durable_len
                keep = self._torn_keep(tail)
                del f.written[f.durable_len + keep :]
            f.durable_len = len(f.written)
            if before != len(f.written):
                lost.append((name, before - len(f.written)))
        return lost

    def _torn_keep(self, tail: int) -> int:
        if tail <= 0:
            return 0
        roll = self.rng.random()
        if roll < 0.5:
            return 0
        if roll < 0.75:
            return tail
        return self.rng.randint(0, tail)

    def delete(self, node: NodeId, name: str) -> None:
        """unlink + directory fsync: the file is gone from both layers."""
        self._files.pop((node, name), None)

    def wipe(self, node: NodeId) -> None:
        for name in self.names(node):
            del self._files[(node, name)]

    def corrupt(self, node: NodeId, kind: CorruptKind, name: str | None = None) -> Corruption | None:
        """Corrupt one (seeded) non-empty file of `node`, in both layers. None if it has none."""
        candidates = [n for n in self.names(node) if self._files[(node, n)].written]
        if name is not None:
            candidates = [n for n in candidates if n == name]
        if not candidates:
            return None
        name = self.rng.choice(candidates)
        f = self._files[(node, name)]
        self._settle(f)
        size = len(f.written)
        if size == 0:
            return None  # nothing of it was durable
        if kind is CorruptKind.BITFLIP:
            offset = self.rng.randrange(size)
            f.written[offset] ^= 1 << self.rng.randrange(8)
            return Corruption(node, name, kind, offset, 1)
        if kind is CorruptKind.TRUNCATE:
            offset = self.rng.randrange(size)
            del f.written[offset:]
            f.durable_len = offset
            return Corruption(node, name, kind, offset, size - offset)
        return self._rollback(node, name, f)

    def _settle(self, f: SimFile) -> None:
        """Corruption happens to what is on the platter: make written == durable first."""
        if f.durable_copy is not None:
            f.written = bytearray(f.durable_copy)
            f.durable_copy = None
        else:
            del f.written[f.durable_len :]
        f.durable_len = len(f.written)
        f.durable_exists = True

    def _rollback(self, node: NodeId, name: str, f: SimFile) -> Corruption:
        old = f.previous_bytes()
        size = len(f.written)
        start = self.rng.randrange(size)
        length = self.rng.randint(1, min(4096, size - start))
        chunk = old[start : start + length].ljust(length, b"\0")
        f.written[start : start + length] = chunk
        return Corruption(node, name, CorruptKind.ROLLBACK, start, length)
