# pure-core
"""The deterministic cluster simulator: N RaftNodes on a SimNet and a SimDisk, one tick clock.

How it works: `Cluster(seed)` builds nodes n1..nN of one group. Every input to a node (`tick`,
a delivered message, a proposal, a transfer request) is followed by draining its Readies the way
a real driver does: persist (snapshot, entries, hard state; sync when `must_sync`), send (sorted
by destination, so set iteration order inside the core cannot leak into the schedule), apply
committed entries to a HashChainStateMachine, `advance`, and compact the log every
`snapshot_every` applied entries. Each of those effects is reported to the InvariantChecker, which
raises `Violation` at the first breach, so invariants are checked after every step.

Faults are methods: partition/heal/block (SimNet), pause/resume, clock skew (a node ticks
slower or faster than the others), crash/restart (the written disk layer survives a crash),
power loss (only the durable layer survives), corrupt (bit flip, truncation, rollback or wipe,
refused unless the compromised nodes stay a minority of the smallest voter set seen), add/remove
member and leadership transfer. On restart a node loads what verifies; if the disk failed
verification, or is empty although the node once synced state, it restarts with
`repair_needed=True`, its store is rewritten from the verified committed prefix plus a `repair`
marker (kept until the core reports "raft.repair_done", so a crash during repair does not forget
it), and it is told the group's latest committed config and its log index, as the meta layer
would tell a server (`SimConfig.lagging_config`: the committed config before that one).

A proposal is *acknowledged* when the node it was proposed on applies it at the index and term
the core returned; acks are checked against the committed history (`acked_lost`).

Everything that happens is appended to `trace` as tuples of plain values; `trace_hash()` is the
sha256 of their canonical text, so one seed always gives one hash (R7).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import attrs

from raft import membership as mship
from raft.config import NodeConfig, Role
from raft.core import RaftNode
from raft.testing.invariants import InvariantChecker
from raft.testing.simdisk import CorruptKind, SimDisk
from raft.testing.simnet import SimNet
from raft.testing.simstore import Loaded, SimRaftStorage
from raft.testing.statemachine import HashChainStateMachine
from raft.types import ConfigChange, ConfigChangeType, Entry, EntryKind, HardState, Membership, Message, MessageType, Ready, Snapshot

GROUP = "g"
REPAIR_MARKER = "repair"
MAX_READIES_PER_INPUT = 64


@attrs.frozen
class SimConfig:
    n_nodes: int = 3
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    drop_rate: float = 0.02
    duplicate_rate: float = 0.02
    delay_ticks: tuple[int, int] = (1, 3)
    snapshot_every: int = 16
    max_entries_per_msg: int = 16
    snapshot_chunk_bytes: int = 24
    stale_repair: bool = False  # see Cluster._clamp
    # A restarted node that once synced is told the committed config *before* the latest one
    # (with its index): a caller whose view lags one change behind (raft/repair.py).
    lagging_config: bool = False
    check_quorum: bool = True
    pre_vote: bool = True


@attrs.define
class SimNode:
    node_id: str
    storage: SimRaftStorage
    raft: RaftNode | None = None
    sm: HashChainStateMachine = attrs.field(factory=HashChainStateMachine)
    hard_state: HardState = HardState()
    incarnation: int = 0
    ever_synced: bool = False
    compromised: bool = False  # disk corrupted/wiped and not yet repaired
    retired: bool = False  # removed from the group and shut down for good
    pending: dict[int, tuple[int, bytes]] = attrs.field(factory=dict)  # index -> (term, data)
    tick_rate: float = 1.0  # clock skew: local ticks per global tick
    tick_credit: float = 0.0
    last_seen: tuple[object, ...] = ()  # (role, term, repair_needed, membership) last reported

    @property
    def up(self) -> bool:
        return self.raft is not None


@attrs.define
class Cluster:
    seed: int
    config: SimConfig = SimConfig()
    now: int = attrs.field(default=0, init=False)
    trace: list[tuple[object, ...]] = attrs.field(factory=list, init=False)
    checker: InvariantChecker = attrs.field(factory=InvariantChecker, init=False)
    nodes: dict[str, SimNode] = attrs.field(factory=dict, init=False)
    acked: int = attrs.field(default=0, init=False)
    proposed: int = attrs.field(default=0, init=False)
    reads: int = attrs.field(default=0, init=False)
    _removing: dict[str, tuple[int, int]] = attrs.field(factory=dict, init=False)
    _next_id: int = attrs.field(default=0, init=False)
    min_voters: int = attrs.field(default=0, init=False)  # smallest voter set any node held
    committed_config: tuple[int, Membership] = attrs.field(default=(0, Membership()), init=False)
    previous_config: tuple[int, Membership] = attrs.field(default=(0, Membership()), init=False)
    _restart_config: tuple[int, Membership] | None = attrs.field(default=None, init=False)
    message_tap: Callable[[Message, int], None] | None = attrs.field(default=None, init=False)
    net: SimNet = attrs.field(init=False)
    disk: SimDisk = attrs.field(init=False)
    initial: Membership = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.net = SimNet(
            random.Random(f"net-{self.seed}"),
            drop_rate=self.config.drop_rate,
            duplicate_rate=self.config.duplicate_rate,
            delay_ticks=self.config.delay_ticks,
        )
        self.disk = SimDisk(random.Random(f"disk-{self.seed}"))
        ids = [f"n{i}" for i in range(1, self.config.n_nodes + 1)]
        self._next_id = len(ids) + 1
        self.initial = Membership(voters=frozenset(ids))
        self.committed_config = self.previous_config = (0, self.initial)
        self.min_voters = len(ids)
        for node_id in ids:
            self.nodes[node_id] = SimNode(node_id, SimRaftStorage(self.disk, node_id))
            self._start(self.nodes[node_id], self.initial)

    # -- trace -----------------------------------------------------------------------------

    def record(self, *item: object) -> None:
        self.trace.append((self.now, *item))

    def trace_hash(self) -> str:
        h = hashlib.sha256()
        for item in self.trace:
            h.update(repr(item).encode())
            h.update(b"\n")
        return h.hexdigest()

    # -- views -----------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.up]

    def active(self) -> list[SimNode]:
        """Up and not paused: these tick and receive."""
        return [n for n in self.live() if not self.net.is_paused(n.node_id)]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.active() if n.raft is not None and n.raft.role is Role.LEADER]

    def leader(self) -> SimNode | None:
        best = max(self.leaders(), key=lambda n: n.raft.term if n.raft else 0, default=None)
        return best

    def membership(self) -> Membership | None:
        """The membership in the view of the leader, else of the most advanced live node (its
        log may hold an uncommitted change a new leader will drop). None if all are down."""
        top = self.leader()
        if top is None:
            # A node that has not yet seen any config (a new member) knows nothing: skip it.
            known = [n for n in self.live() if n.raft is not None and n.raft.membership.voters]
            top = max(known, key=lambda n: (n.raft.commit_index, n.raft.term) if n.raft else (0, 0), default=None)
        return None if top is None or top.raft is None else top.raft.membership

    def members(self) -> list[str]:
        """Nodes that are members in the view of the most advanced live node."""
        m = self.membership()
        if m is None:
            return sorted(n for n, s in self.nodes.items() if not s.retired)
        return sorted(mship.members(m))

    # -- node lifecycle --------------------------------------------------------------------

    def _new_raft(self, node: SimNode, loaded: Loaded, membership: Membership, repair: bool) -> RaftNode:
        cfg = NodeConfig(
            node_id=node.node_id,
            group=GROUP,
            election_ticks=self.config.election_ticks,
            heartbeat_ticks=self.config.heartbeat_ticks,
            max_entries_per_msg=self.config.max_entries_per_msg,
            snapshot_chunk_bytes=self.config.snapshot_chunk_bytes,
            check_quorum=self.config.check_quorum,
            pre_vote=self.config.pre_vote,
        )
        rng = random.Random(f"node-{self.seed}-{node.node_id}-{node.incarnation}")
        snap_index = loaded.snapshot.meta.index if loaded.snapshot else 0
        return RaftNode(
            cfg,
            rng,
            hard_state=loaded.hard_state,
            snapshot=loaded.snapshot,
            entries=loaded.entries,
            membership=membership,
            applied=snap_index,
            repair_needed=repair,
            membership_index=self._given_index(membership),
        )

    def _given_index(self, membership: Membership) -> int | None:
        """The log index the config handed to a starting node holds from, as its caller knows it:
        0 for the group's first config, the index of the committed config handed out on restart
        (`restart`), None for anything else (a new member's empty config)."""
        if self._restart_config is not None and self._restart_config[1] == membership:
            return self._restart_config[0]
        return 0 if membership == self.initial else None

    def _start(self, node: SimNode, membership: Membership) -> None:
        loaded = node.storage.load()
        marker = self.disk.exists(node.node_id, REPAIR_MARKER)
        repair = loaded.corrupt or marker or (loaded.empty and node.ever_synced)
        if loaded.corrupt:
            loaded = self._clamp(loaded, keep_stale_suffix=self.config.stale_repair)
        if repair:
            self._rewrite(node, loaded)
        node.incarnation += 1
        node.hard_state = loaded.hard_state
        node.pending.clear()
        snap = loaded.snapshot
        node.sm = HashChainStateMachine.from_snapshot(snap.data if snap else b"")
        self.checker.observe_restart(
            node.node_id,
            (snap.meta.index, snap.meta.term) if snap else None,
            loaded.entries,
            loaded.hard_state.commit,
            repaired=repair,
        )
        if snap is not None:
            self.checker.observe_apply(node.node_id, snap.meta.index, node.sm.chain)
        node.raft = self._new_raft(node, loaded, membership, repair)
        self.checker.observe_commit(node.node_id, node.raft.commit_index, node.raft.term)
        self.record("start", node.node_id, node.incarnation, repair, list(loaded.problems))
        self._observe_node(node)
        self._drain(node)

    @staticmethod
    def _clamp(loaded: Loaded, keep_stale_suffix: bool = False) -> Loaded:
        """What a damaged store may hand the core: its verified wal prefix is the log as it was
        at some *past* moment, so entries after that moment's commit index may since have been
        overwritten. Keep only the committed part (committed entries never change), as a store
        holding the current log would return a true prefix of it; `keep_stale_suffix` hands the
        core the whole past log instead (a harsher test of repair-needed handling)."""
        hs = loaded.hard_state
        base = loaded.snapshot.meta.index if loaded.snapshot else 0
        entries = loaded.entries if keep_stale_suffix else tuple(e for e in loaded.entries if e.index <= hs.commit)
        last = entries[-1].index if entries else base
        return attrs.evolve(loaded, entries=entries, hard_state=HardState(hs.term, hs.vote, max(base, min(hs.commit, last))))

    def _rewrite(self, node: SimNode, loaded: Loaded) -> None:
        """Quarantine a damaged store: keep only what verified, plus the repair marker."""
        self.disk.wipe(node.node_id)
        self.disk.replace(node.node_id, REPAIR_MARKER, b"repair")
        self.disk.fsync(node.node_id, REPAIR_MARKER)
        store = node.storage
        store.load()  # resets the chain crc for the empty wal
        if loaded.snapshot is not None:
            store.save_snapshot(loaded.snapshot)
        store.append(loaded.entries)
        store.set_hard_state(loaded.hard_state)
        store.sync()

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            return
        node.raft = None
        node.pending.clear()
        self.net.resume(node_id)  # a killed process is no longer stopped
        self.net.drop_to(node_id)
        self.record("crash", node_id)

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up or node.retired:
            return
        # The config of a brand-new group, used only when the disk holds none (wiped or never
        # written): like a real server, it is told the group's latest committed config (what
        # the meta layer would know).
        if node.ever_synced:
            self._restart_config = self.previous_config if self.config.lagging_config else self.committed_config
            try:
                self._start(node, self._restart_config[1])
            finally:
                self._restart_config = None
        else:
            self._start(node, self.initial if node_id in self.initial.voters else Membership())

    def power_loss(self, node_ids: list[str]) -> None:
        for node_id in sorted(node_ids):
            self.crash(node_id)
            lost = self.disk.power_loss(node_id)
            self.record("power_loss", node_id, lost)

    def compromised_allowance(self) -> int:
        """How many more nodes may be corrupted while the compromised ones stay a minority of
        every voter set any node has held (conservative: the smallest one)."""
        minority = (self.min_voters - 1) // 2
        return minority - sum(1 for n in self.nodes.values() if n.compromised and not n.retired)

    def corrupt(self, node_id: str, kind: CorruptKind | None, *, force: bool = False) -> bool:
        """Crash `node_id` and corrupt its disk (kind None: wipe). Refused (False) when it would
        compromise a majority, unless `force` (R5 tests: the cluster must then refuse service)."""
        node = self.nodes[node_id]
        if node.retired or (not force and not node.compromised and self.compromised_allowance() < 1):
            return False
        self.crash(node_id)
        if kind is None:
            self.disk.wipe(node_id)
            self.record("wipe", node_id)
        else:
            c = self.disk.corrupt(node_id, kind)
            self.record("corrupt", node_id, kind.value, None if c is None else (c.name, c.offset, c.length))
        node.compromised = True
        return True

    # -- network faults --------------------------------------------------------------------

    def partition(self, groups: list[set[str]]) -> None:
        self.net.partition(groups)
        self.record("partition", [sorted(g) for g in groups])

    def block(self, src: str, dst: str) -> None:
        self.net.block(src, dst)
        self.record("block", src, dst)

    def heal(self) -> None:
        self.net.heal()
        self.record("heal")

    def calm(self) -> None:
        """End network weather: no loss, no duplicates, short delays (Raft's liveness assumes
        message delays well below the election timeout)."""
        self.net.drop_rate = self.net.duplicate_rate = 0.0
        self.net.delay_ticks = (1, 2)
        self.record("calm")

    def pause(self, node_id: str) -> None:
        if self.nodes[node_id].up:
            self.net.pause(node_id)
            self.record("pause", node_id)

    def resume(self, node_id: str) -> None:
        self.net.resume(node_id)
        self.record("resume", node_id)

    # -- client requests -------------------------------------------------------------------

    def propose(self, data: bytes | None = None, on: str | None = None) -> bool:
        """Propose on the leader of the highest term (or on `on`, if it leads in some term)."""
        node = self.leader() if on is None else self.nodes[on]
        if node is None or node.raft is None or node.raft.role is not Role.LEADER:
            return False
        self.proposed += 1
        data = data if data is not None else f"p{self.proposed}".encode()
        self.checker.observe_proposal(data)
        res = node.raft.propose(data)
        self.record("propose", node.node_id, data, res.ok, res.index, res.term)
        if res.ok:
            node.pending[res.index] = (res.term, data)
        self._drain(node)
        return res.ok

    def read(self, node_id: str) -> None:
        """A client asks `node_id` for a linearizable read point (answered in a later Ready)."""
        node = self.nodes[node_id]
        if node.raft is None:
            return
        self.reads += 1
        ctx = f"read-{self.reads}".encode()
        self.checker.observe_read_request(ctx)
        node.raft.read_index(ctx)
        self.record("read", node_id, ctx)
        self._drain(node)

    def transfer(self, to: str) -> None:
        node = self.leader()
        if node is None or node.raft is None:
            return
        node.raft.transfer_leadership(to)
        self.record("transfer", node.node_id, to)
        self._drain(node)

    def add_member(self, learner: bool) -> str | None:
        node = self.leader()
        if node is None or node.raft is None:
            return None
        new_id = f"n{self._next_id}"
        kind = ConfigChangeType.ADD_LEARNER if learner else ConfigChangeType.ADD_VOTER
        res = node.raft.propose_config_change(ConfigChange(kind, new_id))
        self.record("add", node.node_id, new_id, kind.value, res.ok)
        if not res.ok:
            return None
        self._next_id += 1
        self.nodes[new_id] = SimNode(new_id, SimRaftStorage(self.disk, new_id))
        self._drain(node)
        self._start(self.nodes[new_id], Membership())
        return new_id

    def promote(self, node_id: str) -> bool:
        return self._change(ConfigChangeType.PROMOTE_LEARNER, node_id)

    def remove_member(self, node_id: str) -> bool:
        """Refused (False) when the smaller voter set would let compromised nodes be a majority."""
        compromised = sum(1 for n in self.nodes.values() if n.compromised and not n.retired)
        if compromised > (self.min_voters - 2) // 2:
            return False
        return self._change(ConfigChangeType.REMOVE, node_id)

    def _change(self, kind: ConfigChangeType, node_id: str) -> bool:
        node = self.leader()
        if node is None or node.raft is None:
            return False
        res = node.raft.propose_config_change(ConfigChange(kind, node_id))
        self.record("change", node.node_id, kind.value, node_id, res.ok)
        if res.ok and kind is ConfigChangeType.REMOVE:
            self._removing[node_id] = (res.index, res.term)
        self._drain(node)
        return res.ok

    def _retire_removed(self) -> None:
        for node_id, (index, term) in sorted(self._removing.items()):
            got = self.checker.committed.get(index)
            if got is None:
                continue
            del self._removing[node_id]
            if got[0] == term and got[1][0] is EntryKind.CONFIG:
                self.crash(node_id)
                self.nodes[node_id].retired = True
                self.nodes[node_id].compromised = False
                self.record("retired", node_id)

    # -- the clock -------------------------------------------------------------------------

    def tick(self) -> None:
        """One tick: deliver due messages, tick every active node."""
        self.now += 1
        for msg in self.net.due(self.now):
            node = self.nodes.get(msg.dst)
            if node is None or node.raft is None:
                continue
            node.raft.step(msg)
            self._drain(node)
        for node in self.active():
            node.tick_credit += node.tick_rate
            while node.tick_credit >= 1.0 and node.raft is not None:
                node.tick_credit -= 1.0
                node.raft.tick()
                self._drain(node)
        self._retire_removed()

    def skew(self, node_id: str, rate: float) -> None:
        """Clock skew: `node_id` now sees `rate` ticks per global tick (0.5 slow, 2 fast)."""
        assert 0.0 < rate <= 4.0
        self.nodes[node_id].tick_rate = rate
        self.record("skew", node_id, rate)

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    # -- the driver ------------------------------------------------------------------------

    def _observe_node(self, node: SimNode) -> None:
        """Report role and term after every input. Unchanged followers are skipped (the hot
        path); a leader is re-checked every time, since commits may have moved meanwhile."""
        r = node.raft
        assert r is not None
        role = r.role
        seen = (role, r.term, r.repair_needed, r.membership)
        if seen == node.last_seen and role is not Role.LEADER:
            return
        node.last_seen = seen
        self.checker.observe_role(node.node_id, role.value, r.term, r.repair_needed)
        voters = len(r.membership.voters)
        if 0 < voters < self.min_voters:
            self.min_voters = voters

    def _drain(self, node: SimNode) -> None:
        for _ in range(MAX_READIES_PER_INPUT):
            r = node.raft
            if r is None or not r.has_ready():
                if r is not None:
                    self._observe_node(node)
                return
            ready = r.ready()
            self._persist(node, ready)
            self._send(node, ready)
            self._apply(node, ready)
            self._answer_reads(node, ready)
            r.advance(ready)
            self._maybe_compact(node)
        raise AssertionError(f"{node.node_id}: Ready did not settle after {MAX_READIES_PER_INPUT} rounds")

    def _persist(self, node: SimNode, ready: Ready) -> None:
        store, nid = node.storage, node.node_id
        if ready.snapshot is not None:
            store.save_snapshot(ready.snapshot)
            self.checker.observe_snapshot(nid, ready.snapshot.meta.index, ready.snapshot.meta.term)
        if ready.entries:
            store.append(ready.entries)
            self.checker.observe_append(nid, ready.entries)
            self._forget_overwritten(node, ready.entries)
        if ready.hard_state is not None:
            store.set_hard_state(ready.hard_state)
            node.hard_state = ready.hard_state
        if ready.must_sync:
            store.sync()
            node.ever_synced = True
            self.checker.observe_sync(nid, node.hard_state.commit)
        if ready.hard_state is not None:
            assert node.raft is not None
            self.checker.observe_commit(nid, ready.hard_state.commit, ready.hard_state.term)

    @staticmethod
    def _forget_overwritten(node: SimNode, entries: tuple[Entry, ...]) -> None:
        """A proposal whose log slot was overwritten will never be acknowledged."""
        first = entries[0].index
        for index in [i for i in node.pending if i >= first]:
            pos = index - first
            e = entries[pos] if pos < len(entries) else None
            if e is None or (e.term, e.data) != node.pending[index]:
                del node.pending[index]

    def _send(self, node: SimNode, ready: Ready) -> None:
        assert node.raft is not None
        repair = node.raft.repair_needed
        for msg in sorted(ready.messages, key=lambda m: m.dst):
            if msg.type is MessageType.VOTE_RESP and not msg.reject:
                self.checker.observe_vote(node.node_id, msg.term, msg.dst, repair)
            if self.message_tap is not None:
                self.message_tap(msg, self.now)
            self.net.send(msg, self.now)
        for ev in ready.events:
            if ev.name in ("raft.became_leader", "raft.repair_done", "raft.snapshot_installed"):
                self.record(ev.name, node.node_id, ev.fields)
            if ev.name == "raft.became_leader":
                self.checker.observe_role(node.node_id, "leader", dict(ev.fields)["term"])  # type: ignore[arg-type]
            if ev.name == "raft.repair_done":
                node.compromised = False
                if self.disk.exists(node.node_id, REPAIR_MARKER):
                    self.disk.delete(node.node_id, REPAIR_MARKER)

    def _apply(self, node: SimNode, ready: Ready) -> None:
        nid = node.node_id
        if ready.snapshot is not None:
            node.sm = HashChainStateMachine.from_snapshot(ready.snapshot.data)
            self.checker.observe_apply(nid, ready.snapshot.meta.index, node.sm.chain)
            node.pending.clear()  # the log was replaced: outcomes unknown
        for e in ready.committed_entries:
            chain = node.sm.apply(e)
            self.checker.observe_apply(nid, e.index, chain, e)
            self._maybe_ack(node, e)
            if e.kind is EntryKind.CONFIG and e.index > self.committed_config[0]:
                self.previous_config = self.committed_config
                self.committed_config = (e.index, mship.decode_config(e.data)[1])

    def _answer_reads(self, node: SimNode, ready: Ready) -> None:
        for rs in ready.read_states:
            self.checker.observe_read_state(node.node_id, rs.context, rs.index)
            self.record("read_state", node.node_id, rs.context, rs.index)

    def _maybe_ack(self, node: SimNode, e: Entry) -> None:
        want = node.pending.pop(e.index, None)
        if want is None:
            return
        if want == (e.term, e.data):
            self.checker.observe_ack(e.index, e)
            self.acked += 1
            self.record("ack", node.node_id, e.index, e.term)

    def _maybe_compact(self, node: SimNode) -> None:
        r = node.raft
        assert r is not None
        applied = node.sm.applied_index
        if applied - r.snapshot_meta.index < self.config.snapshot_every:
            return
        r.compact(applied, node.sm.snapshot())
        meta = r.snapshot_meta
        assert meta.index == applied
        node.storage.save_snapshot(Snapshot(meta, node.sm.snapshot()))
        node.storage.sync()
        self.checker.observe_snapshot(node.node_id, meta.index, meta.term)
        self.record("compact", node.node_id, meta.index)

