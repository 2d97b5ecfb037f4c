"""A replica of a clustered stream: changes go through the stream's Raft group.

How it works: `ReplicatedStream` is a `StreamRuntime` whose single funnel for changes,
`apply_batch`, does not touch the store: it encodes the commands as ONE entry
(jetstream/cluster_codec.py), proposes it to the stream's Raft group and returns what the state
machine answered once the entry is committed (fsynced on a quorum) and applied here. Every
replica applies committed entries in `apply_entry` (the RaftHost apply callback): the whole batch
in one store transaction, each command numbered `sub_index(entry, k)`, so a restarted replica
skips exactly what it already has; runs of stream commands go to the state machine's bulk
`apply_batch`. The leader applies its own publish batches from the commands it proposed
(`proposed`, matched by the identity of the entry's bytes) instead of decoding them again,
and sends their PubAcks from the apply callback itself, as soon as the entry is applied. The publish path is the single server's (queue, writer,
PubAck after commit) with up to ENTRIES_IN_FLIGHT entries proposed at once.

The store is the snapshot (design.md): after `compact_every` applied entries the replica makes
its store durable (a WAL checkpoint; the store otherwise commits without fsync because the Raft
log is the durable copy), hands its portable snapshot to the Raft host and the log is trimmed up
to the store's applied index. A follower too far behind receives that snapshot from the leader
in checksummed chunks (the Raft core's job) and `restore_snapshot` replaces its store with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from jetstream.cluster_codec import (
    CodecError,
    DeleteConsumer,
    SaveConsumer,
    decode_batch,
    encode_batch,
    entry_of,
    sub_index,
)
from jetstream.cluster_routing import RoutedSub
from jetstream.config import StreamConfig
from jetstream.errors import ApiError, store_failed
from jetstream.runtime import StreamClosed, StreamRuntime, open_store
from jetstream.store.sqlite import SqliteStore
from jetstream.stream import Publish
from raft.config import NodeConfig, RefuseReason
from raft.driver import NotLeader, OutcomeUnknown, ProposalLost, Proposed, RaftHost, UnknownGroup
from raft.types import Entry, Snapshot

UNAVAILABLE = ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable")
PROPOSE_RETRY_S = 2.0
ENTRY_MSGS_MAX = 4096
ENTRY_BYTES_MAX = 1 << 20
ENTRIES_IN_FLIGHT = 8
# Entries of up to this many commands are applied on the event loop. Applying is Python work
# (bulk insert, no fsync), so a thread does not free the loop, it only adds a hop and GIL
# hand-offs: 256 publishes took 6-12 ms in a thread vs 1.7-2.8 ms inline (p50, loaded host).
INLINE_APPLY_MAX = 1024
# With the host's 100 ms tick: heartbeats every 400 ms, elections after 1.2-2.4 s of silence.
# Idle groups cost heartbeats, so thousands of streams want them sparse (`python -m raft.bench
# --only idle`, 1000 groups x 3 hosts: 0.50 CPU s/s at 200 ms, 0.24 at 1 s); but a new stream has
# no leader until its first election timeout, so elections cannot be much slower than this.
ELECTION_TICKS = 12
HEARTBEAT_TICKS = 4
# An idle stream's group goes quiet (no heartbeats, no ticks) once every replica holds its whole
# log; the RaftHost watches peer liveness instead (raft/core.py, raft/driver.py).
QUIESCE = True
COMPACT_EVERY_ENTRIES = 8192
# A follower applies committed entries late and together (RaftHost.set_batch_apply): one store
# transaction per batch, off the CPU while the leader commits and acks. 3 nodes on 2 cores, one
# publish at a time: skipping the followers' applies altogether cut p50 from 2.9-3.7 to 2.1-3.0 ms.
FOLLOWER_APPLY_DELAY_S = 0.02


def stream_group_config(node_id: str, group: str) -> NodeConfig:
    return NodeConfig(node_id=node_id, group=group, election_ticks=ELECTION_TICKS,
                      heartbeat_ticks=HEARTBEAT_TICKS, quiesce=QUIESCE)


class ReplicatedStream(StreamRuntime):
    """A stream replica: changes are proposed to its Raft group and applied when committed."""

    def __init__(self, config: StreamConfig, created_ns: int, store: Any, directory: Any,
                 clock_ns: Callable[[], int], publish: Any, *, host: RaftHost, group: str,
                 peers: tuple[str, ...], assigned_text: str,
                 spawn: Callable[..., None] | None = None,
                 compact_every: int = COMPACT_EVERY_ENTRIES) -> None:
        super().__init__(config, created_ns, store, directory, clock_ns, publish)
        self.host = host
        self.group = group
        self.spawn = spawn  # starts a background task (compaction)
        self.compact_every = compact_every
        self.entries_since_compact = 0
        self.compacting = False
        self.peers = peers
        self.assigned_text = assigned_text
        self.desired_config = config
        self.leading = False
        self.acquiring = False  # a takeover task is running (jetstream/cluster.py)
        self.leader_subs: list[RoutedSub] = []
        self.replica_subs: list[RoutedSub] = []
        self.move_progress: dict[str, Any] | None = None  # set by the leader during a move (meta/move_driver.py)
        self.proposed: dict[int, _Proposal] = {}  # id(entry data) -> publishes proposed here

    def _has_interest(self, subject: str) -> bool:
        return True  # the same answer on every replica (see the module docstring)

    async def apply_batch(self, cmds: list[Any]) -> list[Any]:
        """Propose `cmds` as one entry; the results once committed and applied here."""
        results, _ = await self._replicate(list(cmds), None)
        return results

    async def _replicate(self, cmds: list[Any], batch: list[Any] | None,
                         started: tuple[bytes, _Proposal | None, Proposed | None] | None = None,
                         ) -> tuple[list[Any], bool]:
        """`apply_batch`; with the writer's `batch` of (Publish, reply), its PubAcks are sent by
        `apply_entry` right after the entry is applied. Returns the results and whether they were.
        `started`: what `_start` returned when the writer already proposed `cmds`. (The
        monitor times commits by wrapping this method, positional arguments only.)"""
        if started is None:
            started = self._start(cmds, batch)
        return await self._replicate_started(*started, len(cmds))

    def _start(self, cmds: list[Any], batch: list[Any] | None,
               settle: bool = False) -> tuple[bytes, _Proposal | None, Proposed | None]:
        """Encode `cmds` as one entry and propose it now (no checkpoint): the entry, its
        `_Proposal` (publishes only) and the pending proposal (None if refused: the waiting
        side retries or answers). `settle`: the caller awaits `host.settle()` next."""
        data = encode_batch(cmds)
        proposal = None
        if all(type(cmd) is Publish for cmd in cmds):  # apply_entry takes them as they are
            proposal = self.proposed[id(data)] = _Proposal(data, cmds, batch)
        pending = None
        if not self.closed:
            try:
                pending = self.host.propose_nowait(self.group, data, settle=settle)
            except (NotLeader, UnknownGroup):
                pass  # _propose retries (a new leader not ready yet) or answers
        return data, proposal, pending

    async def _replicate_started(self, data: bytes, proposal: _Proposal | None,
                                 pending: Proposed | None, count: int) -> tuple[list[Any], bool]:
        try:
            results = await self._propose(data, count, pending)
        finally:
            if proposal is not None:
                self.proposed.pop(id(data), None)
        return results, proposal is not None and proposal.acked

    async def _propose(self, data: bytes, count: int, pending: Proposed | None = None) -> list[Any]:
        deadline = trio.current_time() + PROPOSE_RETRY_S
        while True:  # bounded by the deadline
            if self.closed:
                raise StreamClosed(self.name)
            try:
                if pending is None:
                    pending = self.host.propose_nowait(self.group, data)
                _, results = await self.host.proposal_result(pending)
                return list(results)  # type: ignore[call-overload]
            except UnknownGroup:
                raise StreamClosed(self.name) from None
            except (OutcomeUnknown, ProposalLost):
                return [UNAVAILABLE] * count
            except NotLeader as exc:
                if exc.reason is not RefuseReason.NOT_READY or trio.current_time() > deadline:
                    return [UNAVAILABLE] * count
            pending = None
            await trio.sleep(0.01)  # a new leader commits its first entry within a round trip

    async def apply_entries(self, entries: list[Entry]) -> None:
        """RaftHost batch apply callback (a follower's late applies): the committed entries, in
        order, in one store transaction. Nothing waits for their results."""
        decoded: list[tuple[int, list[Any]]] = []
        for entry in entries:
            try:
                decoded.append((entry.index, decode_batch(entry.data)))
            except CodecError as exc:
                self.log.error("stream.bad_entry", index=entry.index, error=str(exc))

        def work() -> list[Any]:
            with self.store.batch():
                for index, cmds in decoded:
                    self._apply_cmds(cmds, index)
            return []

        try:
            await self._apply_work(work, sum(len(cmds) for _, cmds in decoded))
        except StreamClosed:
            return
        except Exception as exc:  # noqa: BLE001 - the store rolled back; never crash the host
            await self._apply_failed(entries[-1].index, exc)
            return
        self.config = self.sm.config
        self.notify()
        self._maybe_compact(len(entries))

    async def _apply_failed(self, index: int, exc: Exception) -> None:
        self.log.error("stream.apply_failed", index=index, error=repr(exc))
        try:
            await self.call(self._reload)
        except Exception as reload_exc:  # noqa: BLE001 - closed or broken: report only
            self.log.error("stream.reload_failed", error=repr(reload_exc))

    async def apply_entry(self, entry: Entry) -> list[Any]:
        """RaftHost apply callback: apply one committed batch to the local store."""
        own = self.proposed.get(id(entry.data))
        if own is not None and own.data is entry.data:
            cmds = own.cmds  # proposed here: exactly what decoding the entry would give
        else:
            own = None
            try:
                cmds = decode_batch(entry.data)
            except CodecError as exc:
                self.log.error("stream.bad_entry", index=entry.index, error=str(exc))
                return []

        def work() -> list[Any]:
            with self.store.batch():
                return self._apply_cmds(cmds, entry.index)

        try:
            results = await self._apply_work(work, len(cmds))
        except StreamClosed:
            return [UNAVAILABLE] * len(cmds)
        except Exception as exc:  # noqa: BLE001 - the store rolled back; never crash the host
            await self._apply_failed(entry.index, exc)
            return [store_failed(f"store failed: {exc}")] * len(cmds)
        self.config = self.sm.config
        if own is not None and own.batch is not None and not own.acked:
            own.acked = True  # committed and applied: ack now, not one task switch later
            self._ack(own.batch, results)
        self.notify()
        self._maybe_compact()
        return results

    def _ack(self, batch: list[Any], results: list[Any]) -> None:
        try:
            self._send_acks(batch, results)
        except Exception as exc:  # noqa: BLE001 - an apply callback must not raise
            self.log.error("stream.ack_failed", error=repr(exc))

    # -- snapshots: the store is the snapshot ---------------------------------------------------
    def _maybe_compact(self, entries: int = 1) -> None:
        self.entries_since_compact += entries
        if self.entries_since_compact >= self.compact_every and not self.compacting and self.spawn:
            self.compacting = True
            self.spawn(self.compact_log)

    async def compact_log(self) -> None:
        """Make the store durable, give its snapshot to the Raft host, trim the log."""
        def durable_snapshot() -> tuple[int, bytes]:
            checkpoint(self.store)
            return entry_of(self.store.applied_index()), self.store.snapshot()

        try:
            node = self.host.node(self.group)
            entry_index, data = await self.call(durable_snapshot)
            index = min(entry_index, node.applied_index)
            if index > node.snapshot_meta.index:
                await self.host.compact(self.group, index, data)
                self.log.info("stream.compacted", group=self.group, index=index, snapshot_bytes=len(data))
            self.entries_since_compact = 0
        except (StreamClosed, UnknownGroup):
            pass
        except Exception as exc:  # noqa: BLE001 - a failed compaction keeps the log; retry later
            self.log.error("stream.compact_failed", group=self.group, error=repr(exc))
        finally:
            self.compacting = False

    async def restore_snapshot(self, snapshot: Snapshot) -> None:
        """RaftHost restore callback: replace the store with the leader's snapshot."""
        if not snapshot.data:
            return

        def work() -> None:
            self.sm.restore(snapshot.data)
            checkpoint(self.store)

        try:
            await self.call(work)
        except StreamClosed:
            return
        except Exception as exc:  # noqa: BLE001 - a bad snapshot changes nothing; never crash the host
            self.log.error("stream.restore_failed", group=self.group, index=snapshot.meta.index, error=repr(exc))
            return
        self.config = self.sm.config
        self.notify()
        self.log.info("stream.restored", group=self.group, index=snapshot.meta.index)

    async def _apply_work(self, work: Callable[[], list[Any]], size: int) -> list[Any]:
        """Batches up to INLINE_APPLY_MAX run on the event loop (the store commits without
        fsync, so this is a few ms at most); bigger ones in a thread, so the loop still gets
        turns."""
        if size > INLINE_APPLY_MAX:
            return await self.call(work)  # type: ignore[no-any-return]
        return await self._commit_inline(work)  # no lock round trip when it is free

    def _apply_cmds(self, cmds: list[Any], entry_index: int) -> list[Any]:
        """Command k gets index `sub_index(entry_index, k)`; runs of stream commands go to the
        state machine's `apply_batch` (bulk publish), consumer commands one by one."""
        batch_apply = getattr(self.sm, "apply_batch", None)
        results: list[Any] = []
        k, count = 0, len(cmds)
        while k < count:
            end = k
            while end < count and not isinstance(cmds[end], (SaveConsumer, DeleteConsumer)):
                end += 1
            if end - k >= 2 and batch_apply is not None:
                results.extend(batch_apply(cmds[k:end], sub_index(entry_index, k)))
                k = end
                continue
            results.append(self._apply_one(cmds[k], sub_index(entry_index, k)))
            k += 1
        return results

    def _apply_one(self, cmd: Any, index: int) -> Any:
        if isinstance(cmd, (SaveConsumer, DeleteConsumer)):
            if index <= self.store.applied_index():
                return None
            if isinstance(cmd, SaveConsumer):
                self.store.save_consumer(cmd.name, cmd.blob)
            else:
                self.store.delete_consumer(cmd.name)
            self.store.set_applied_index(index)
            return None
        return self.sm.apply(cmd, index)

    async def run_writer(self) -> None:
        """Drain the publish queue: one entry per batch (bounded), up to ENTRIES_IN_FLIGHT
        entries proposed and not yet committed; each batch's PubAcks go out after its commit.
        The writer proposes each batch itself (`_start`, no checkpoint), so entries enter the
        log in queue order, and has the host handle it at once when the host is idle (the
        leader's APPENDs and own save start without waiting for the ready loop's turn); a task
        per batch waits for its commit."""
        inflight = trio.Semaphore(ENTRIES_IN_FLIGHT)
        self.host.set_batch_apply(self.group, self.apply_entries, FOLLOWER_APPLY_DELAY_S)
        async with trio.open_nursery() as nursery:
            while not self.closed:
                await self.queue_ready.wait()
                self.queue_ready = trio.Event()
                while self.queue and not self.closed:
                    try:
                        inflight.acquire_nowait()  # (acquire() would also yield when free)
                    except trio.WouldBlock:
                        await inflight.acquire()
                    batch = self._take_batch()
                    if not batch:
                        inflight.release()
                        break
                    cmds = [cmd for cmd, _ in batch]
                    started = self._start(cmds, batch, settle=True)
                    await self.host.settle()  # send and save it now if the host is idle
                    nursery.start_soon(self._commit_batch, batch, cmds, inflight, started)

    async def _commit_batch(self, batch: list[Any], cmds: list[Any], inflight: trio.Semaphore,
                            started: tuple[bytes, _Proposal | None, Proposed | None]) -> None:
        """Wait for one proposed batch and ack it once committed (normally `apply_entry` has)."""
        try:
            results, acked = await self._replicate(cmds, batch, started)
            if not acked:  # not applied here (lost, refused, failed): answer what we know
                self._send_acks(batch, results)
        except StreamClosed:
            if started[1] is not None:
                self.proposed.pop(id(started[0]), None)
        finally:
            inflight.release()

    def _take_batch(self) -> list[Any]:
        size = count = 0
        for cmd, _ in self.queue:
            if count >= ENTRY_MSGS_MAX or (count and size + len(cmd.payload) > ENTRY_BYTES_MAX):
                break
            size += len(cmd.payload) + len(cmd.headers or b"")
            count += 1
        batch, self.queue = self.queue[:count], self.queue[count:]
        return batch



@attrs.define
class _Proposal:
    """Publishes proposed here as the entry `data`, until it is applied (see `apply_entry`)."""

    data: bytes
    cmds: list[Any]
    batch: list[Any] | None  # the writer's (Publish, reply) pairs, acked once applied
    acked: bool = False


def open_replica_store(config: StreamConfig, directory: Any) -> Any:
    """The stream's store, committing without fsync (WAL, synchronous=NORMAL): the Raft log is
    what is durable - it is never compacted past the store's applied index, and a replica
    whose store lost its newest transactions in a power cut replays them from the log."""
    store = open_store(config, directory)
    conn = getattr(store, "_conn", None)  # SqliteStore has no public durability knob yet
    if isinstance(store, SqliteStore) and conn is not None:
        conn.execute("PRAGMA synchronous=NORMAL")
    return store




def checkpoint(store: Any) -> None:
    """Make everything the store committed durable (a full WAL checkpoint fsyncs it)."""
    conn = getattr(store, "_conn", None)
    if isinstance(store, SqliteStore) and conn is not None:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
