"""RaftHost: the trio shell that runs many RaftNode groups of one server.

Three tasks share the nodes (all on the event loop, so a node is never touched concurrently):
- the tick loop ticks every active group each `tick_interval_s` of trio time (a MockClock in
  tests). A quiesced group (NodeConfig.quiesce, raft/core.py) leaves the active set and is not
  touched until something wakes it: any message for it or request on it puts it back. For
  quiesced groups the host watches its peers instead: it sends every peer of such a group a
  small host heartbeat (group HOST_GROUP) every `ping_ticks`, counts any message from a peer as
  a sign of life, and when a peer has been silent for `liveness_ticks` it wakes the quiet groups
  that depend on it: followers whose leader it is (they give up the lease and campaign) and
  leaders it is a member of (check-quorum runs again). Every node is told which peers are
  silent (`set_peers_down`), so a leader goes quiet without them, and is woken when one is
  heard again, to catch it up. The two periods are the smallest
  heartbeat and election timeouts of the quiescing groups: the silence is noticed after one
  election timeout and the followers, lease given up, campaign within one more; in tests a dead
  leader's groups elect a new one as fast as without quiescence (tests/unit/raft/
  test_driver_quiesce.py);
- the receive loop steps each incoming Message into its group's node (the TCP transport hands
  them over from its reader tasks instead, and then awaits `_settle_now`: when the ready loop
  is parked, that reader runs the ready round below itself, which saves a task switch and a
  scheduler pass per hop: a follower's save and answer, a leader's commit and apply);
- the ready loop takes the Ready of every group that has one, and then, in order:
  1. persists all their hard states, entries and snapshots as ONE batch through StoreWorker
     (one transaction, one fsync, off the event loop) - group commit across groups. A hard
     state that only moves the commit index is not written then (nor waited for, when it is
     all the Ready has): the newest one per group rides along with the first batch after
     `commit_flush_interval_s`, since the commit index is not needed for safety and `applied`
     re-establishes it on restart (the hard_state row is two more pages per fsync);
  2. sends every message of every group in one `transport.send_nowait` (so the TCP transport
     coalesces heartbeats per peer);
  3. applies committed entries (NORMAL entries go to the group's apply callback, whose return
     value completes the matching `propose()`), installs received snapshots via the restore
     callback, answers read-index waiters. Within a group everything is applied in order;
     different groups apply concurrently, so an async callback waiting on one group's store
     does not hold up the others. A follower of a group registered with `set_batch_apply`
     keeps its committed entries back and applies them together a little later (before
     anything else of that group, a read point, or leading it);
  4. calls `advance()` on each node.
While step 1 waits on the disk, the other loops keep stepping nodes, so everything proposed
meanwhile rides in the next batch. Ready.events are logged through structlog.
Two exceptions to that order, both safe: a leader's messages (whose term and vote are already on
disk) go out BEFORE step 1, so followers write in parallel with the leader (the core counts the
leader toward the commit quorum only up to what it has persisted, re-checked in `advance()`);
and Readies with nothing to write are finished while the persist batch runs.
A leader's APPENDs without entries (commit-index notices, sent after every commit) are held
back for up to `hold_notices_s`: the next message to that follower takes them along, and one
that is itself an APPEND of the same group and term (its commit index is as new) replaces them;
the rest go out when the time is up. Followers learn commits a little later, which Raft allows
(only the leader's apply answers clients), and a busy stream sends one APPEND per entry per
follower instead of two, each with its answer.

`propose(group, data)` returns the entry's index once it is committed and applied, raises
NotLeader(hint, reason) when the node refuses it (not the leader, or a membership change still
pending, or a new leader not ready yet: see `reason`), and ProposalLost when another leader's
entry took its index. An apply or restore callback that raises stops the host: a
state machine that cannot apply a committed entry must not carry on.
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
from collections.abc import Callable, Sequence

import attrs
import structlog
import trio

from raft.config import NodeConfig, ProposeResult, RefuseReason, Role
from raft.core import RaftNode
from raft.storage.base import GroupWrite, LoadedState, LogStore
from raft.storage.worker import StoreWorker
from raft.transport.base import Transport
from raft.types import (
    ConfigChange,
    Entry,
    EntryKind,
    Event,
    GroupId,
    HardState,
    Membership,
    Message,
    MessageType,
    NodeId,
    Ready,
    Snapshot,
)

log = structlog.get_logger("raft.driver")

ApplyCallback = Callable[[Entry], object]  # may return an awaitable
BatchApplyCallback = Callable[[list[Entry]], object]  # may return an awaitable
BATCH_APPLY_ENTRIES_MAX = 256  # a follower's late applies: at most this many entries wait,
BATCH_APPLY_BYTES_MAX = 1 << 20  # and at most this much entry data (one store transaction)
RestoreCallback = Callable[[Snapshot], object]  # may return an awaitable
RECEIVE_BATCH_MAX = 4096
HOLD_NOTICES_S = 0.02  # how long a leader's commit notice may wait for a message to ride with
HELD_PER_PEER_MAX = 1024
POLL_PASSES_MAX = 4  # ready passes per round when each follows an inline save that let answers arrive
HOST_GROUP: GroupId = ""  # host heartbeats (liveness of quiesced groups' peers); no Raft group
# A healthy follower's tick produces output only by starting an election (its role or term
# changes); a repairing one also sends term probes. So the tick loop skips the has_ready() check
# for quiet, healthy followers: most nodes of idle groups. (An assumption about raft/core.py's
# tick(); if a follower's tick ever sends something else, drop this shortcut.)


def _replaces(new: Message, held: Message) -> bool:
    """Does `new` make the held commit notice redundant? An APPEND of the same group and term
    to the same peer carries a commit index at least as new (dropping the notice is a lost
    message, which Raft tolerates; it saves the follower a step and an answer)."""
    return (new.type is MessageType.APPEND and new.group == held.group and new.dst == held.dst
            and new.term == held.term)


class NotLeader(Exception):
    """The node refused the proposal and appended nothing. `reason` says why: not the leader
    (ask `leader_hint`), a leadership transfer, a membership change still pending, or a new
    leader that has not committed an entry of its term yet (retry shortly)."""

    def __init__(self, leader_hint: NodeId | None, reason: RefuseReason = RefuseReason.NOT_LEADER):
        super().__init__(f"proposal refused ({reason.value}); leader hint: {leader_hint}")
        self.leader_hint = leader_hint
        self.reason = reason


ProposalRefused = NotLeader  # the same exception, for callers where "refused" reads better


class ProposalLost(NotLeader):
    """Another leader's entry was committed at the proposal's index: it will never commit."""


class OutcomeUnknown(Exception):
    """A snapshot replaced the log past the proposal before it was applied here."""


class UnknownGroup(KeyError):
    pass


@attrs.define
class _Waiter:
    term: int
    done: trio.Event = attrs.Factory(trio.Event)
    result: object = None
    error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@attrs.define
class _Group:
    node: RaftNode
    apply: ApplyCallback
    restore: RestoreCallback | None
    hard_state: HardState  # last handed to storage (perhaps deferred)
    waiters: dict[int, _Waiter] = attrs.Factory(dict)
    reads: dict[bytes, _Waiter] = attrs.Factory(dict)  # context -> waiter (term unused)
    read_points: dict[bytes, int] = attrs.Factory(dict)  # context -> index to apply first
    batch_apply: BatchApplyCallback | None = None  # set_batch_apply: a follower applies late
    batch_delay_s: float = 0.0
    pending: list[Entry] = attrs.Factory(list)  # committed, not yet applied (batch_apply)
    pending_since_s: float = 0.0
    pending_bytes: int = 0


@attrs.frozen
class Proposed:
    """An entry `propose_nowait` appended; `RaftHost.proposal_result` waits for its outcome."""

    g: _Group
    index: int
    waiter: _Waiter


async def _maybe_await(value: object) -> object:
    if value is None or isinstance(value, (bytes, int, str, list, tuple, dict)):
        return value  # the common results of a synchronous callback, without an ABC check
    return await value if inspect.isawaitable(value) else value  # type: ignore[misc]


class RaftHost:
    def __init__(
        self,
        node_id: NodeId,
        store: LogStore,
        transport: Transport,
        *,
        tick_interval_s: float = 0.05,
        rng: random.Random | None = None,
        store_offload: bool = True,
        commit_flush_interval_s: float = 1.0,
        on_event: Callable[[GroupId, Event], None] | None = None,
        hold_notices_s: float = HOLD_NOTICES_S,
    ) -> None:
        """`on_event(group, event)` is called for every core event (e.g. "raft.became_leader",
        "raft.stepped_down", "raft.repair_done") after it is logged; it must not block."""
        self.node_id = node_id
        self.store = store
        self.worker = StoreWorker(store, offload=store_offload)
        self.transport = transport
        self.tick_interval_s = tick_interval_s
        self._rng = rng or random.Random(node_id)
        self._groups: dict[GroupId, _Group] = {}
        self.commit_flush_interval_s = commit_flush_interval_s
        self._on_event = on_event
        self._deferred: dict[GroupId, HardState] = {}  # commit-only hard states not yet written
        self._deferred_flushed_s = 0.0
        self._dirty: set[GroupId] = set()
        self._active: set[GroupId] = set()  # groups the tick loop ticks (not quiesced)
        self._tick_no = 0
        self._last_heard: dict[NodeId, int] = {}  # peer -> tick number of its latest message
        self._suspected: set[NodeId] = set()  # peers silent for longer than liveness_ticks
        self._watched: frozenset[NodeId] | None = None  # peers of our groups (None: stale)
        self.ping_ticks = 0  # 0: no group quiesces, no host heartbeats
        self.liveness_ticks = 0
        # Bumped whenever a group here becomes or stops being leader, or is added or removed: a
        # watcher of leadership polls this instead of every group's role.
        self.leadership_changes = 0
        self._wake = trio.Event()
        self._read_ids = itertools.count(1)
        self._log = log.bind(node=node_id)
        self.stats = HostStats()
        self.hold_notices_s = hold_notices_s  # 0: send commit notices at once
        self._held: dict[NodeId, list[Message]] = {}  # peer -> held commit notices, oldest first
        self._held_since_s = 0.0
        self._handling = False  # a task is in a ready round (the ready loop or a reader)
        self._parked: trio.CancelScope | None = None  # the ready loop's wait, while it waits
        self._failure: BaseException | None = None  # raised by a round a reader ran
        self._batch_apply: dict[GroupId, tuple[BatchApplyCallback, float]] = {}
        self._pending_groups: set[GroupId] = set()  # groups with committed entries not applied

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Start with `await nursery.start(host.run)`."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._ready_loop)
            task_status.started()

    async def add_group(
        self,
        group: GroupId,
        config: NodeConfig,
        membership: Membership,
        apply_callback: ApplyCallback,
        restore_callback: RestoreCallback | None = None,
        *,
        applied: int = 0,
        membership_index: int | None = None,
    ) -> RaftNode:
        """Load the group's state from the store and start running it. `applied` is how far the
        state machine already is; older committed entries are not applied again.
        `membership_index`: the group's log index `membership` holds from, as the caller knows it
        (0 for the group's first config; never more than the truth: a lower index only lets a
        newer committed config replace it). A node repairing a wiped disk needs it so that a
        newer committed config named by a term-probe answer replaces a config that still names
        removed members (raft/repair.py); None: counted as given, never replaced."""
        if group in self._groups:
            raise ValueError(f"group {group} already running")
        loaded: LoadedState = await self.worker.run(self.store.load, group)
        if loaded.repair_needed:
            reason = "; ".join(loaded.verify_errors) or loaded.repair_pending or "disk wiped"
            self._log.warning("raft.repair_needed", group=group, reason=reason)
            if loaded.repair_pending is None:  # survives restarts until "raft.repair_done"
                await self.worker.run(self.store.set_repair_pending, group, reason)
        if loaded.snapshot and applied < loaded.snapshot.meta.index and restore_callback:
            await _maybe_await(restore_callback(loaded.snapshot))
        hard_state = loaded.hard_state
        # The state machine only applies committed entries, so `applied` proves a commit index
        # (commit-index writes are deferred and may be lost in a crash); a damaged tail caps it.
        commit = min(max(hard_state.commit, applied), loaded.last_index)
        if commit != hard_state.commit:
            hard_state = attrs.evolve(hard_state, commit=commit)
        node = RaftNode(
            config,
            random.Random(self._rng.random()),
            hard_state=hard_state,
            snapshot=loaded.snapshot,
            entries=loaded.entries,
            membership=membership,
            applied=applied,
            repair_needed=loaded.repair_needed,
            membership_index=membership_index,
        )
        if not loaded.was_member:
            await self.worker.run(self.store.mark_member, group)
        g = self._groups[group] = _Group(node, apply_callback, restore_callback, hard_state)
        if group in self._batch_apply:
            g.batch_apply, g.batch_delay_s = self._batch_apply[group]
        self.leadership_changes += 1
        node.set_peers_down(frozenset(self._suspected))
        if config.quiesce:
            self.ping_ticks = min(self.ping_ticks or config.heartbeat_ticks, config.heartbeat_ticks)
            self.liveness_ticks = min(self.liveness_ticks or config.election_ticks, config.election_ticks)
            self._watched = None
        self._mark(group)
        return node

    def remove_group(self, group: GroupId) -> None:
        """Stop running a group (its stored state stays). Waiters fail with NotLeader."""
        g = self._groups.pop(group, None)
        self._deferred.pop(group, None)  # never resurrect state a caller may forget next
        self._active.discard(group)
        self._watched = None
        self.leadership_changes += 1
        if g is None:
            return
        for waiter in [*g.waiters.values(), *g.reads.values()]:
            waiter.finish(error=NotLeader(None))

    def set_batch_apply(self, group: GroupId, apply_entries: BatchApplyCallback, delay_s: float) -> None:
        """While this host follows `group`, apply its committed entries late and together:
        `apply_entries(entries)` (in log order, NORMAL entries only) once the oldest waited
        `delay_s` or BATCH_APPLY_ENTRIES_MAX (or _BYTES_MAX of data) are waiting, and always
        before anything else is applied, a snapshot installed, a read answered, an event
        handled or the host leads the group. (A follower's state machine answers nothing a client waits for; one store
        transaction per batch instead of per entry, and it stays off the CPU while the leader
        commits.) Kept for a group added later with this name, until replaced."""
        self._batch_apply[group] = (apply_entries, delay_s)
        g = self._groups.get(group)
        if g is not None:
            g.batch_apply, g.batch_delay_s = apply_entries, delay_s

    def node(self, group: GroupId) -> RaftNode:
        return self._get(group).node

    def groups(self) -> list[GroupId]:
        return sorted(self._groups)

    def _get(self, group: GroupId) -> _Group:
        g = self._groups.get(group)
        if g is None:
            raise UnknownGroup(group)
        return g

    def _mark(self, group: GroupId, wake: bool = True) -> None:
        self._dirty.add(group)
        self._active.add(group)  # a request may have woken a quiesced node
        if wake:
            self._wake.set()

    # ---- requests ---------------------------------------------------------------------------

    async def propose(self, group: GroupId, data: bytes) -> int:
        """Wait until `data` is committed and applied here; return its log index."""
        index, _ = await self.propose_result(group, data)
        return index

    async def propose_result(self, group: GroupId, data: bytes) -> tuple[int, object]:
        """Like propose(), also returning what the apply callback returned for the entry."""
        return await self.proposal_result(self.propose_nowait(group, data))

    def propose_nowait(self, group: GroupId, data: bytes, *, settle: bool = False) -> Proposed:
        """Append `data` to the leader's log now, without a checkpoint (so a caller proposing
        several entries in a row keeps their order); `proposal_result` waits for the outcome.
        Raises NotLeader (or UnknownGroup) like propose(). `settle`: the caller awaits
        `settle()` next, so the ready loop is not woken here."""
        g = self._get(group)
        return self._register(group, g, g.node.propose(data), wake=not settle)

    async def propose_config_change(self, group: GroupId, change: ConfigChange) -> int:
        g = self._get(group)
        index, _ = await self.proposal_result(self._register(group, g, g.node.propose_config_change(change)))
        return index

    def _register(self, group: GroupId, g: _Group, result: ProposeResult, wake: bool = True) -> Proposed:
        if not result.ok:
            raise NotLeader(result.leader_hint, result.reason)
        waiter = g.waiters[result.index] = _Waiter(result.term)
        self._mark(group, wake)
        return Proposed(g, result.index, waiter)

    async def settle(self) -> None:
        """Handle what is pending now, in the calling task, when the ready loop is parked and no
        round runs (e.g. a stream's writer after proposing: its entries go out and to disk one
        task switch sooner); otherwise wake the ready loop. Shielded: a round is never cut
        halfway. Never raises (a failure stops the host through its ready loop)."""
        with trio.CancelScope(shield=True):
            await self._settle_now()

    async def proposal_result(self, proposed: Proposed) -> tuple[int, object]:
        """Wait until a `propose_nowait` entry is committed and applied here: (its index, what
        the apply callback returned). Raises like propose()."""
        g, index, waiter = proposed.g, proposed.index, proposed.waiter
        try:
            await waiter.done.wait()
        finally:
            if g.waiters.get(index) is waiter:
                del g.waiters[index]
        if waiter.error is not None:
            raise waiter.error
        return index, waiter.result

    async def read_index(self, group: GroupId) -> int:
        """A linearizable read point: returns once this node has applied it. The caller should
        time out (e.g. trio.move_on_after): without a leader the request is dropped."""
        g = self._get(group)
        context = b"r%d" % next(self._read_ids)
        waiter = g.reads[context] = _Waiter(0)
        g.node.read_index(context)
        self._mark(group)
        try:
            await waiter.done.wait()
        finally:
            g.reads.pop(context, None)
            g.read_points.pop(context, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def transfer_leadership(self, group: GroupId, to: NodeId) -> None:
        self._get(group).node.transfer_leadership(to)
        self._mark(group)

    async def compact(self, group: GroupId, index: int, data: bytes) -> None:
        """The application made its state durable at `index`: store the snapshot, trim the log.

        `index` is capped at what the driver has finished applying: an application that counts
        an entry as applied inside its callback may be one Ready ahead of the core. The snapshot
        data may then be ahead of its index, so applying must skip indexes it already has."""
        node = self._get(group).node
        index = min(index, node.applied_index)
        if index <= node.snapshot_meta.index:
            return
        node.compact(index, data)
        meta = node.snapshot_meta
        await self.worker.run(self.store.save_snapshot, group, Snapshot(meta, data))
        await self.worker.run(self.store.compact, group, meta.index)

    # ---- loops ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        deadline = trio.current_time() + self.tick_interval_s
        while True:  # until cancelled
            await trio.sleep_until(deadline)
            now = trio.current_time()
            deadline = max(deadline + self.tick_interval_s, now)  # skip ticks we fell behind on
            self._tick_no += 1
            if self.ping_ticks:
                self._watch_peers()
            self._tick_groups()
            self.stats.ticks += 1
            self._wake.set()

    def _tick_groups(self) -> None:
        dirty, active, groups = self._dirty, self._active, self._groups
        for group in list(active):
            g = groups.get(group)
            if g is None:
                active.discard(group)
                continue
            node = g.node
            role = node.role
            if (role is Role.FOLLOWER or role is Role.LEARNER) and not node.repair_needed:
                term = node.term
                node.tick()
                if node.quiesced:
                    active.discard(group)
                if node.role is role and node.term == term:
                    continue  # a quiet follower: nothing to do
                if node.role is Role.LEADER:  # (a group of one elects itself in a tick)
                    self.leadership_changes += 1
            else:
                node.tick()
                if node.quiesced:
                    active.discard(group)  # (a leader that just went quiet has heartbeats to send)
                if (role is Role.LEADER) is not (node.role is Role.LEADER):
                    self.leadership_changes += 1
            dirty.add(group)

    # ---- peer liveness (for quiesced groups) -------------------------------------------------

    def _watch_peers(self) -> None:
        """Host heartbeats out; wake the quiet groups of peers that fell silent."""
        now = self._tick_no
        if self._watched is None or now % self.liveness_ticks == 0:  # memberships change too
            self._watched = self._peers_of_groups()
        if now % self.ping_ticks == 0 and self._watched:
            pings = [Message(MessageType.HEARTBEAT, HOST_GROUP, self.node_id, peer, 0)
                     for peer in sorted(self._watched)]
            self.transport.send_nowait(pings)
            self.stats.host_pings += len(pings)
        for peer in self._watched:
            heard = self._last_heard.setdefault(peer, now)  # a new peer gets a full period
            if now - heard <= self.liveness_ticks:
                if peer in self._suspected:
                    self._suspected.discard(peer)
                    self._wake_groups_of(peer, back=True)
            elif peer not in self._suspected:
                self._suspected.add(peer)
                self._wake_groups_of(peer)

    def _peers_of_groups(self) -> frozenset[NodeId]:
        peers: set[NodeId] = set()
        for g in self._groups.values():
            m = g.node.membership
            peers |= m.voters | m.learners | m.voters_outgoing
        peers.discard(self.node_id)
        return frozenset(peers)

    def _wake_groups_of(self, peer: NodeId, back: bool = False) -> None:
        """`peer` went silent: wake our quiet followers it leads and our quiet leaders it is a
        member of. `back`: it is heard again: wake our quiet leaders it is a member of (it may
        have missed entries). Every node learns the new set of silent peers."""
        if back:
            self._log.info("raft.peer_back", peer=peer)
        else:
            self.stats.peers_suspected += 1
            self._log.info("raft.peer_silent", peer=peer, ticks=self.liveness_ticks)
        down = frozenset(self._suspected)
        for group, g in self._groups.items():
            node = g.node
            node.set_peers_down(down)
            if not node.quiesced:
                continue
            if node.role is Role.LEADER:
                m = node.membership
                if peer not in (m.voters | m.learners | m.voters_outgoing):
                    continue
                node.wake()
            elif node.leader_id == peer and not back:
                node.wake(leader_lost=True)
            else:
                continue
            self.stats.woken += 1
            self._active.add(group)
            self._dirty.add(group)

    async def _receive_loop(self) -> None:
        incoming = self.transport.incoming
        direct = self.transport.set_receiver(self._receive_now, self._settle_now)  # TCP: no channel hop
        try:
            async for msg in incoming:
                self._step(msg)
                for _ in range(RECEIVE_BATCH_MAX):
                    try:
                        self._step(incoming.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                self._wake.set()
        finally:
            if direct:
                self.transport.set_receiver(None)

    def _receive_now(self, msgs: Sequence[Message]) -> None:
        """The transport's receiver: step at once; `_settle_now` follows the read."""
        for msg in msgs:
            self._step(msg)

    async def _settle_now(self) -> None:
        """Awaited by the transport's reader once a read's messages are stepped: while the ready
        loop is parked and no round runs, the reader runs the round itself (a follower's save
        and answer, a leader's commit and apply start one task switch sooner, with one scheduler
        pass less); otherwise it wakes the ready loop. Never raises: a failure is handed to the
        ready loop, which raises it (an apply callback that raises stops the host)."""
        if not self._dirty:
            return
        if self._handling or self._parked is None or self._failure is not None:
            self._wake.set()
            return
        self.stats.direct_rounds += 1
        try:
            await self._ready_round()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the ready loop
            self._failure = exc
        parked = self._parked
        if self._dirty or self._failure is not None or parked is None:
            self._wake.set()
        else:  # the ready loop's wait ends when held notices or late applies are due
            parked.deadline = min(parked.deadline, self._wait_deadline())

    def _step(self, msg: Message) -> None:
        self._last_heard[msg.src] = self._tick_no
        g = self._groups.get(msg.group)
        if g is None or msg.dst != self.node_id:
            if msg.group != HOST_GROUP:
                self.stats.unroutable += 1
            return
        node = g.node
        leading = node.role is Role.LEADER
        node.step(msg)
        if (node.role is Role.LEADER) is not leading:
            self.leadership_changes += 1
        self._dirty.add(msg.group)
        if not node.quiesced:
            self._active.add(msg.group)

    async def _ready_loop(self) -> None:
        while True:  # until cancelled
            if not self._dirty or self._handling:
                self._wake = trio.Event()
                due = math.inf if self._handling else self._wait_deadline()
                with trio.move_on_at(due) as scope:  # (a reader's round wakes us when it ends)
                    self._parked = scope
                    try:
                        await self._wake.wait()
                    finally:
                        self._parked = None
            if self._failure is not None:
                raise self._failure
            if self._handling:
                continue  # a reader runs a round; it wakes us when it is done
            await self._ready_round()
            if self._dirty:  # never starve the other loops (else waiting on _wake yields)
                await trio.lowlevel.checkpoint()

    async def _ready_round(self) -> None:
        """Send the held notices that are due, take the Ready of every dirty group, handle
        them. One task at a time (`_handling`): the ready loop, or a reader (`_settle_now`)."""
        self._handling = True
        try:
            if self._held and trio.current_time() >= self._held_since_s + self.hold_notices_s:
                self._send([])  # the held commit notices are due
            for _ in range(POLL_PASSES_MAX):  # bounded: a pass repeats only after an inline save
                inline_saves = self.worker.inline_saves
                dirty, self._dirty = self._dirty, set()
                readies: list[tuple[_Group, Ready]] = []
                for group in sorted(dirty):
                    g = self._groups.get(group)
                    if g is not None and g.node.has_ready():
                        readies.append((g, g.node.ready()))
                if readies:
                    await self._handle_readies(readies)
                # the loop was blocked in an fsync: answers that came meanwhile (a follower's
                # ack of what we saved) are stepped and handled now, not after a scheduler pass
                if self.worker.inline_saves == inline_saves or not self.transport.poll_nowait():
                    break
                self.stats.poll_passes += 1
            if self._pending_groups:
                await self._apply_due()
        finally:
            self._handling = False

    def _wait_deadline(self) -> float:
        """When the parked ready loop must run again: held notices or late applies due."""
        due = self._held_since_s + self.hold_notices_s if self._held else math.inf
        for group in self._pending_groups:
            g = self._groups.get(group)
            if g is not None and g.pending:
                due = min(due, g.pending_since_s + g.batch_delay_s)
        return due

    async def _apply_due(self) -> None:
        now = trio.current_time()
        for group in sorted(self._pending_groups):
            g = self._groups.get(group)
            if g is None or not g.pending:
                self._pending_groups.discard(group)
            elif now >= g.pending_since_s + g.batch_delay_s or g.node.role is Role.LEADER:
                await self._apply_pending(g, group)

    def _applies_late(self, g: _Group, r: Ready) -> bool:
        return (g.batch_apply is not None and bool(r.committed_entries)
                and (g.node.role is Role.FOLLOWER or g.node.role is Role.LEARNER)
                and not (r.events or r.snapshot or r.read_states or g.read_points or g.reads or g.waiters))

    async def _apply_pending(self, g: _Group, group: GroupId) -> None:
        """Apply the entries a follower kept back, in order, with one batch_apply call."""
        entries, g.pending, g.pending_bytes = g.pending, [], 0
        self._pending_groups.discard(group)
        normal = [e for e in entries if e.kind is EntryKind.NORMAL]
        if normal and g.batch_apply is not None:
            await _maybe_await(g.batch_apply(normal))
        for entry in entries:
            self._finish_waiter(g, entry, None)
        self.stats.applied += len(entries)
        self.stats.late_applies += 1

    async def _handle_readies(self, readies: list[tuple[_Group, Ready]]) -> None:
        """Readies with nothing durable to write are finished (send, apply, advance) while the
        rest are persisted as one batch and then finished, so they never wait behind another
        group's fsync. A leader's messages leave before its own entries are durable (see
        `_sends_early`): followers write in parallel with the leader."""
        quick: list[tuple[_Group, Ready]] = []
        slow: list[tuple[_Group, Ready]] = []
        early: list[Message] = []
        sent_early: set[GroupId] = set()  # groups whose Ready messages already left
        for g, r in readies:
            if r.entries or r.snapshot is not None:
                if self._sends_early(g, r):
                    early.extend(r.messages)
                    sent_early.add(r.group)
                slow.append((g, r))
            elif r.hard_state is None:
                quick.append((g, r))
            elif (r.hard_state.term, r.hard_state.vote) == (g.hard_state.term, g.hard_state.vote):
                self._deferred[r.group] = r.hard_state  # only the commit index moved
                g.hard_state = r.hard_state
                quick.append((g, r))
            else:
                slow.append((g, r))
        if early:
            self._send(early)
            self.stats.early_sends += len(early)
        if not (slow or self._deferred_due()):
            await self._finish(quick)
            return
        if not quick:  # (a nursery costs a few task switches per Ready round)
            await self._persist(slow, yield_first=not (early and self.transport.writers_idle()))
            if slow:
                await self._finish(slow, sent_early)
            return
        async with trio.open_nursery() as nursery:  # different groups: nothing shared
            nursery.start_soon(self._finish, quick)
            await self._persist(slow, yield_first=not (early and self.transport.writers_idle()))
            if slow:
                await self._finish(slow, sent_early)

    def _sends_early(self, g: _Group, r: Ready) -> bool:
        """May this Ready's messages leave before its writes are durable? Only a leader's whose
        term and vote are already on disk: its messages (APPENDs, heartbeats, snapshot chunks,
        read-index answers, rejections) promise nothing about its own log, and the core counts
        the leader toward the commit quorum only up to entries it has persisted (`advance`)."""
        if not r.messages or g.node.role is not Role.LEADER:
            return False
        hs = r.hard_state
        return hs is None or (hs.term, hs.vote) == (g.hard_state.term, g.hard_state.vote)

    def _hold_notices(self, messages: list[Message], leading: set[GroupId]) -> list[Message]:
        """Hold back the commit notices of groups we lead (see the module docstring); returns
        the messages to send now."""
        now: list[Message] = []
        for m in messages:
            if m.type is not MessageType.APPEND or m.entries or m.snapshot is not None or m.group not in leading:
                now.append(m)
                continue
            if not self._held:
                self._held_since_s = trio.current_time()
            held = self._held.setdefault(m.dst, [])
            held[:] = [h for h in held if not _replaces(m, h)]
            held.append(m)
            if len(held) > HELD_PER_PEER_MAX:
                now.extend(self._held.pop(m.dst))
        return now

    def _send(self, messages: list[Message]) -> None:
        """Send `messages` (possibly none), each after the notices held for its peer, and every
        held notice once it is due."""
        if self._held:
            out: list[Message] = []
            for m in messages:
                held = self._held.pop(m.dst, None)
                if held:
                    out.extend(h for h in held if not _replaces(m, h))
                out.append(m)
            if trio.current_time() >= self._held_since_s + self.hold_notices_s:
                for held in self._held.values():
                    out.extend(held)
                self._held.clear()
            messages = out
        if messages:
            self.transport.send_nowait(messages)
            self.stats.messages_sent += len(messages)

    def _deferred_due(self) -> bool:
        if not self._deferred:
            return False
        return trio.current_time() - self._deferred_flushed_s >= self.commit_flush_interval_s

    async def _persist(self, readies: list[tuple[_Group, Ready]], yield_first: bool = True) -> None:
        """One batch: every Ready's writes plus the deferred commit-index updates. Not
        `yield_first`: a leader's early messages all left already (nothing for the transport's
        writer tasks), so an inline save need not let them run first."""
        writes = []
        due = self._deferred_due()
        for g, r in readies:
            if self._groups.get(r.group) is not g:
                continue  # removed while we waited on an apply: write nothing for it
            hard_state = r.hard_state
            snap = r.snapshot
            if (hard_state is not None and snap is None and not due
                    and (hard_state.term, hard_state.vote) == (g.hard_state.term, g.hard_state.vote)):
                self._deferred[r.group] = hard_state  # only the commit index moved (see above)
                hard_state = None  # (its row is 2 more pages in this fsync)
            elif hard_state is not None:
                self._deferred.pop(r.group, None)  # superseded
            if r.hard_state is not None:
                g.hard_state = r.hard_state
            writes.append(
                GroupWrite(
                    r.group,
                    hard_state,
                    r.entries,
                    snap.meta if snap else None,
                    snap.data if snap else None,
                )
            )
        if due:
            writes += [GroupWrite(group, hs) for group, hs in self._deferred.items()]
            self._deferred.clear()
            self._deferred_flushed_s = trio.current_time()
        sync = any(r.must_sync for _, r in readies)
        if yield_first:
            await self.worker.save(writes, sync=sync)
        else:
            await self.worker.save(writes, sync=sync, yield_first=False)
        self.stats.persist_batches += 1

    async def _finish(self, readies: list[tuple[_Group, Ready]],
                      sent_early: set[GroupId] | frozenset[GroupId] = frozenset()) -> None:
        readies = [(g, r) for g, r in readies if self._groups.get(r.group) is g]  # still running
        messages = [m for _, r in readies if r.group not in sent_early for m in r.messages]
        if messages and self.hold_notices_s > 0:
            messages = self._hold_notices(messages, {r.group for g, r in readies if g.node.role is Role.LEADER})
        if messages:
            self._send(messages)
        busy = [(g, r) for g, r in readies if r.committed_entries or r.snapshot]
        if len(busy) > 1:  # groups apply concurrently (each in order): one slow store
            async with trio.open_nursery() as nursery:  # does not hold up the others
                for g, r in busy:
                    nursery.start_soon(self._apply, g, r)
        for g, r in readies:
            if len(busy) <= 1 or not (r.committed_entries or r.snapshot):
                await self._apply(g, r)
            g.node.advance(r)
            if g.node.commit_index > g.node.applied_index:  # more than one Ready's worth
                self._dirty.add(r.group)

    async def _apply(self, g: _Group, r: Ready) -> None:
        if not (r.events or r.snapshot or r.committed_entries or r.read_states or g.read_points):
            return  # most Readies of idle groups: heartbeats only
        if self._applies_late(g, r):
            if not g.pending:
                g.pending_since_s = trio.current_time()
                self._pending_groups.add(r.group)
            g.pending.extend(r.committed_entries)
            g.pending_bytes += sum(len(e.data) for e in r.committed_entries)
            if len(g.pending) >= BATCH_APPLY_ENTRIES_MAX or g.pending_bytes >= BATCH_APPLY_BYTES_MAX:
                await self._apply_pending(g, r.group)
            return
        if g.pending:  # everything kept back goes first
            await self._apply_pending(g, r.group)
        for event in r.events:
            self._log.info(event.name, group=r.group, **dict(event.fields))
            if event.name == "raft.repair_done":
                await self.worker.run(self.store.set_repair_pending, r.group, None)
            if self._on_event is not None:
                self._on_event(r.group, event)
        if r.snapshot is not None:
            self._apply_snapshot(g, r.snapshot)
            if g.restore is not None:
                await _maybe_await(g.restore(r.snapshot))
        for entry in r.committed_entries:
            result = None
            if entry.kind is EntryKind.NORMAL:
                result = await _maybe_await(g.apply(entry))
            self._finish_waiter(g, entry, result)
        self.stats.applied += len(r.committed_entries)
        for rs in r.read_states:
            if rs.context in g.reads:
                g.read_points[rs.context] = rs.index
        applied = r.committed_entries[-1].index if r.committed_entries else g.node.applied_index
        for context, index in list(g.read_points.items()):
            if index <= applied:
                g.reads[context].finish(result=index)
                del g.read_points[context]

    def _apply_snapshot(self, g: _Group, snapshot: Snapshot) -> None:
        for index in [i for i in g.waiters if i <= snapshot.meta.index]:
            g.waiters.pop(index).finish(error=OutcomeUnknown(f"snapshot passed index {index}"))

    def _finish_waiter(self, g: _Group, entry: Entry, result: object) -> None:
        waiter = g.waiters.pop(entry.index, None)
        if waiter is None:
            return
        if waiter.term == entry.term:
            waiter.finish(result=result)
        else:
            waiter.finish(error=ProposalLost(g.node.leader_id))


@attrs.define
class HostStats:
    ticks: int = 0
    persist_batches: int = 0
    messages_sent: int = 0
    early_sends: int = 0  # leader messages sent before the leader's own fsync finished
    direct_rounds: int = 0  # ready rounds a transport reader or a proposer ran (`_settle_now`)
    poll_passes: int = 0  # ready passes for messages read right after an inline save (poll_nowait)
    late_applies: int = 0  # batches of a follower's committed entries applied late (set_batch_apply)
    applied: int = 0
    unroutable: int = 0
    host_pings: int = 0  # host heartbeats sent (peer liveness for quiesced groups)
    peers_suspected: int = 0  # times a peer fell silent for liveness_ticks
    woken: int = 0  # quiet groups woken because a peer fell silent
