"""A tiny deterministic, synchronous Raft cluster for scenario tests, and a script interpreter.

`Cluster` runs RaftNodes in one thread: each node has an in-memory store (hard state, entries,
snapshot) and a state machine (the list of applied payloads). After every input the harness
drains each node's Ready in the documented order: persist, send (enqueue), apply, advance.
Safety is checked all along: at most one leader per term, and every node applies the same entry
at each index. The network is a FIFO queue with cut links; by default it is drained until quiet
after every command ("auto"), or held so a script can deliver single messages. No disk faults,
no reordering: the seeded simulator in raft/testing/sim* does that.

Scripts are line-based (`#` starts a comment); see `Script` for the commands. A failed
`expect` raises AssertionError naming the script line.
"""

from __future__ import annotations

import json
import random
import shlex
from collections.abc import Callable

import attrs

from raft.config import NodeConfig, ProposeResult, Role
from raft.core import RaftNode
from raft.types import (
    ConfigChange,
    ConfigChangeType,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    Ready,
    ReadState,
    Snapshot,
)

MAX_DELIVERIES = 100_000  # per drain: a livelock is a bug, not a hang


@attrs.define
class Store:
    """What one node has persisted, plus its state machine."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.field(factory=list)
    applied_data: list[bytes] = attrs.field(factory=list)
    applied_index: int = 0
    events: list[str] = attrs.field(factory=list)
    read_states: list[ReadState] = attrs.field(factory=list)
    repair_needed: bool = False  # durable: survives restarts until "raft.repair_done"

    def persist(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = [e for e in self.entries if e.index > rd.snapshot.meta.index]
            self.applied_data = [bytes.fromhex(h) for h in json.loads(rd.snapshot.data or b"[]")]
            self.applied_index = rd.snapshot.meta.index
        if rd.entries:
            first = rd.entries[0].index
            while self.entries and self.entries[-1].index >= first:
                self.entries.pop()  # overwrite a suffix
            self.entries.extend(rd.entries)

    def apply(self, rd: Ready) -> None:
        for e in rd.committed_entries:
            assert e.index == self.applied_index + 1, (e.index, self.applied_index)
            self.applied_index = e.index
            if e.kind is EntryKind.NORMAL:
                self.applied_data.append(e.data)

    def snapshot_data(self) -> bytes:
        return json.dumps([d.hex() for d in self.applied_data]).encode()


@attrs.define
class Cluster:
    seed: int = 0
    config: dict[str, object] = attrs.field(factory=dict)  # NodeConfig overrides
    nodes: dict[str, RaftNode] = attrs.field(factory=dict)
    stores: dict[str, Store] = attrs.field(factory=dict)
    down: set[str] = attrs.field(factory=set)
    cut: set[frozenset[str]] = attrs.field(factory=set)
    blocks: list[tuple[str, str, MessageType, int]] = attrs.field(factory=list)
    queue: list[Message] = attrs.field(factory=list)
    auto: bool = True
    delivered: int = 0
    # safety, checked as the cluster runs: one leader per term, applied entries agree
    leader_of_term: dict[int, str] = attrs.field(factory=dict)
    applied_log: dict[int, tuple[int, EntryKind, bytes]] = attrs.field(factory=dict)

    # ---- membership of the harness ---------------------------------------------------------------
    def start(self, node: str, membership: Membership) -> None:
        store = self.stores.setdefault(node, Store())
        snap = store.snapshot
        self.nodes[node] = RaftNode(
            NodeConfig(node_id=node, group="g", **self.config),  # type: ignore[arg-type]
            random.Random(f"{self.seed}/{node}/{len(store.events)}"),
            hard_state=store.hard_state,
            snapshot=snap,
            entries=list(store.entries),
            membership=membership,
            applied=store.applied_index,
            repair_needed=store.repair_needed,
            membership_index=0,  # the harness always hands out the group's first config
        )
        self.down.discard(node)

    def crash(self, node: str) -> None:
        """Stop a node: it loses everything not persisted (nothing, here: we persist at once)."""
        self.down.add(node)
        self.queue = [m for m in self.queue if node not in (m.src, m.dst)]

    def restart(self, node: str, membership: Membership) -> None:
        store = self.stores[node]
        if store.snapshot is not None:
            store.applied_data = [bytes.fromhex(h) for h in json.loads(store.snapshot.data)]
            store.applied_index = store.snapshot.meta.index
        else:
            store.applied_data, store.applied_index = [], 0
        self.start(node, membership)

    def wipe(self, node: str, membership: Membership) -> None:
        events = self.stores[node].events
        self.stores[node] = Store(events=events, repair_needed=True)
        self.start(node, membership)

    # ---- driving -------------------------------------------------------------------------------
    def process_readies(self) -> bool:
        moved = False
        for name in sorted(self.nodes):
            node = self.nodes[name]
            if name in self.down or not node.has_ready():
                continue
            rd = node.ready()
            store = self.stores[name]
            store.persist(rd)
            for m in rd.messages:
                kept = self.filter(m) if self.link_up(m.src, m.dst) else None
                if kept is not None:
                    self.queue.append(kept)
            self.check_safety(name, rd)
            store.apply(rd)
            store.events.extend(e.name for e in rd.events)
            if any(e.name == "raft.repair_done" for e in rd.events):
                store.repair_needed = False
            store.read_states.extend(rd.read_states)
            node.advance(rd)
            moved = True
        return moved

    def check_safety(self, name: str, rd: Ready) -> None:
        node = self.nodes[name]
        if node.role is Role.LEADER:
            first = self.leader_of_term.setdefault(node.term, name)
            assert first == name, f"two leaders in term {node.term}: {first} and {name}"
        for e in rd.committed_entries:
            seen = self.applied_log.setdefault(e.index, (e.term, e.kind, e.data))
            assert seen == (e.term, e.kind, e.data), f"{name} applies {e}, others applied {seen}"

    def link_up(self, a: str, b: str) -> bool:
        return a not in self.down and b not in self.down and frozenset((a, b)) not in self.cut

    def filter(self, m: Message) -> Message | None:
        """Apply blocks: drop the message, or strip APPEND entries at or above from-index."""
        for src, dst, kind, from_index in self.blocks:
            if (m.src, m.dst, m.type) != (src, dst, kind):
                continue
            if not from_index:
                return None
            m = attrs.evolve(m, entries=tuple(e for e in m.entries if e.index < from_index))
        return m

    def deliver_one(self, pick: Callable[[Message], bool]) -> Message | None:
        self.process_readies()
        for i, m in enumerate(self.queue):
            if pick(m):
                del self.queue[i]
                if m.dst in self.nodes and self.link_up(m.src, m.dst):
                    self.nodes[m.dst].step(m)
                    self.delivered += 1
                self.process_readies()
                return m
        return None

    def drain(self) -> None:
        for _ in range(MAX_DELIVERIES):
            self.process_readies()
            if not self.queue:
                return
            self.deliver_one(lambda m: True)
        raise AssertionError("network did not go quiet (livelock?)")

    def settle(self) -> None:
        if self.auto:
            self.drain()
        else:
            self.process_readies()

    def tick(self, node: str, n: int = 1) -> None:
        for _ in range(n):
            if node not in self.down:
                self.nodes[node].tick()
            self.settle()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for name in sorted(self.nodes):
                if name not in self.down:
                    self.nodes[name].tick()
            self.settle()

    def leaders(self) -> list[str]:
        return sorted(
            n for n, node in self.nodes.items() if n not in self.down and node.role is Role.LEADER
        )

    def propose(self, node: str, data: bytes) -> ProposeResult:
        res = self.nodes[node].propose(data)
        self.settle()
        return res


CHANGE_WORDS = {
    "add-voter": ConfigChangeType.ADD_VOTER,
    "add-learner": ConfigChangeType.ADD_LEARNER,
    "promote": ConfigChangeType.PROMOTE_LEARNER,
    "remove": ConfigChangeType.REMOVE,
}
CONFIG_KEYS = {
    "election": ("election_ticks", int),
    "heartbeat": ("heartbeat_ticks", int),
    "prevote": ("pre_vote", lambda v: v == "on"),
    "checkquorum": ("check_quorum", lambda v: v == "on"),
    "chunk": ("snapshot_chunk_bytes", int),
    "batch": ("max_entries_per_msg", int),
    "inflight": ("max_inflight_msgs", int),
}
MSG_TYPES = {t.value: t for t in MessageType}


@attrs.define
class Script:
    """Runs a scenario script line by line. Commands (node names are words; `*` = all up nodes):

    config election=10 prevote=on checkquorum=on chunk=64 batch=1 inflight=8  (before `nodes`)
    nodes a b c [learners d]      start a group            add-node d   start an empty node
    tick a [N] | tick * [N]       tick, draining the network after each round (when auto)
    elect a                       tick only `a` until it leads (bounded)
    deliver | hold | auto         drain now | queue messages | drain after every command
    deliver-one SRC DST [TYPE]    deliver the first matching queued message (while held)
    drop-queued                   discard every queued message
    campaign a                    tick only `a` until it is a (pre-)candidate
    partition a | b c | isolate a | heal (also lifts blocks)
    block SRC DST TYPE [from-index N]   drop such messages (with N: strip APPEND entries >= N)
    crash a | restart a | wipe a  (wipe: empty disk, restarted with repair_needed)
    propose a DATA [-> refused REASON [hint NODE]]
    change a add-voter|add-learner|promote|remove NODE [-> refused REASON]
    transfer a b | read a CTX | compact a
    `@` anywhere stands for the current (single) leader
    expect leader a [term N] | expect leader-in a b [term N] | expect no-leader | expect role a ROLE | expect term a N
    expect committed a|* N | expect applied a|* DATA... | expect last-index a N
    expect entry a INDEX term N | expect entry a INDEX missing | expect vote a NODE|none
    expect read a CTX index N | expect no-read a CTX | expect repair a on|off
    expect voters a = X Y | expect learners a = X | expect [no-]event a NAME
    expect snapshot-index a N | expect queued SRC DST TYPE [N]
    """

    cluster: Cluster = attrs.field(factory=Cluster)
    membership: Membership = Membership()
    reads: dict[str, list[tuple[bytes, int]]] = attrs.field(factory=dict)

    def run(self, text: str, name: str = "<script>") -> None:
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = [self._resolve(w) for w in shlex.split(line)]
            handler = getattr(self, "do_" + words[0].replace("-", "_"), None)
            if handler is None:
                raise AssertionError(f"{name}:{lineno}: unknown command {words[0]!r}")
            try:
                handler(words[1:])
            except AssertionError as exc:
                raise AssertionError(f"{name}:{lineno}: {line}\n  {exc}") from None
            self.cluster.process_readies()

    def _resolve(self, word: str) -> str:
        if word != "@":
            return word
        leaders = self.cluster.leaders()
        assert len(leaders) == 1, f"@ needs exactly one leader, have {leaders}"
        return leaders[0]

    def _targets(self, word: str) -> list[str]:
        c = self.cluster
        return sorted(n for n in c.nodes if n not in c.down) if word == "*" else [word]

    # ---- setup and time -------------------------------------------------------------------------
    def do_config(self, args: list[str]) -> None:
        for kv in args:
            key, value = kv.split("=", 1)
            field, conv = CONFIG_KEYS[key]
            self.cluster.config[field] = conv(value)

    def do_nodes(self, args: list[str]) -> None:
        voters = args[: args.index("learners")] if "learners" in args else args
        learners = args[len(voters) + 1 :]
        self.membership = Membership(voters=frozenset(voters), learners=frozenset(learners))
        for n in voters + learners:
            self.cluster.start(n, self.membership)

    def do_add_node(self, args: list[str]) -> None:
        for n in args:
            self.cluster.start(n, Membership())

    def do_tick(self, args: list[str]) -> None:
        n = int(args[1]) if len(args) > 1 else 1
        if args[0] == "*":
            self.cluster.tick_all(n)
        else:
            self.cluster.tick(args[0], n)

    def do_elect(self, args: list[str]) -> None:
        node = args[0]
        limit = 6 * int(self.cluster.config.get("election_ticks", 10))  # type: ignore[call-overload]
        for _ in range(limit):
            if self.cluster.nodes[node].role is Role.LEADER:
                return
            self.cluster.tick(node)
        assert self.cluster.nodes[node].role is Role.LEADER, f"{node} did not become leader"

    def do_campaign(self, args: list[str]) -> None:
        node = self.cluster.nodes[args[0]]
        limit = 4 * int(self.cluster.config.get("election_ticks", 10))  # type: ignore[call-overload]
        for _ in range(limit):
            if node.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
                return
            self.cluster.tick(args[0])
        raise AssertionError(f"{args[0]} did not campaign")

    def do_deliver(self, args: list[str]) -> None:
        self.cluster.drain()

    def do_hold(self, args: list[str]) -> None:
        self.cluster.auto = False

    def do_auto(self, args: list[str]) -> None:
        self.cluster.auto = True
        self.cluster.drain()

    def do_deliver_one(self, args: list[str]) -> None:
        src, dst = args[0], args[1]
        kind = MSG_TYPES[args[2]] if len(args) > 2 else None
        got = self.cluster.deliver_one(
            lambda m: m.src == src and m.dst == dst and (kind is None or m.type is kind)
        )
        assert got is not None, f"no queued message {src}->{dst} {kind}: {self._queue_summary()}"

    def do_drop_queued(self, args: list[str]) -> None:
        self.cluster.queue.clear()

    def _queue_summary(self) -> list[str]:
        return [f"{m.src}->{m.dst}:{m.type.value}" for m in self.cluster.queue]

    # ---- faults -------------------------------------------------------------------------------------
    def do_partition(self, args: list[str]) -> None:
        groups = [g.split() for g in " ".join(args).split("|")]
        for i, ga in enumerate(groups):
            for gb in groups[i + 1 :]:
                self.cluster.cut.update(frozenset((a, b)) for a in ga for b in gb)

    def do_isolate(self, args: list[str]) -> None:
        for a in args:
            self.cluster.cut.update(frozenset((a, b)) for b in self.cluster.nodes if b != a)

    def do_heal(self, args: list[str]) -> None:
        self.cluster.cut.clear()
        self.cluster.blocks.clear()

    def do_block(self, args: list[str]) -> None:
        from_index = int(args[4]) if len(args) > 4 else 0
        assert len(args) in (3, 5) and (len(args) == 3 or args[3] == "from-index"), args
        self.cluster.blocks.append((args[0], args[1], MSG_TYPES[args[2]], from_index))

    def do_crash(self, args: list[str]) -> None:
        self.cluster.crash(args[0])

    def do_restart(self, args: list[str]) -> None:
        self.cluster.restart(args[0], self.membership)
        self.cluster.settle()

    def do_wipe(self, args: list[str]) -> None:
        self.cluster.wipe(args[0], self.membership)
        self.cluster.settle()

    # ---- requests -------------------------------------------------------------------------------------
    def do_propose(self, args: list[str]) -> None:
        self._check_result(self.cluster.propose(args[0], args[1].encode()), args[2:])

    def do_change(self, args: list[str]) -> None:
        node, word, target = args[0], args[1], args[2]
        change = ConfigChange(type=CHANGE_WORDS[word], node_id=target)
        res = self.cluster.nodes[node].propose_config_change(change)
        self.cluster.settle()
        self._check_result(res, args[3:])

    def _check_result(self, res: ProposeResult, rest: list[str]) -> None:
        if not rest:
            assert res.ok, f"refused: {res}"
            return
        assert rest[:2] == ["->", "refused"], rest
        assert not res.ok, f"accepted: {res}"
        if len(rest) > 2:
            assert res.reason.value == rest[2], res
        if len(rest) > 4:
            assert rest[3] == "hint" and res.leader_hint == rest[4], res

    def do_transfer(self, args: list[str]) -> None:
        self.cluster.nodes[args[0]].transfer_leadership(args[1])
        self.cluster.settle()

    def do_read(self, args: list[str]) -> None:
        self.cluster.nodes[args[0]].read_index(args[1].encode())
        self.cluster.settle()

    def do_compact(self, args: list[str]) -> None:
        node, store = self.cluster.nodes[args[0]], self.cluster.stores[args[0]]
        node.compact(node.applied_index, store.snapshot_data())
        store.snapshot = Snapshot(meta=node.snapshot_meta, data=store.snapshot_data())
        store.entries = [e for e in store.entries if e.index > node.snapshot_meta.index]

    # ---- expectations ------------------------------------------------------------------------------------
    def do_expect(self, args: list[str]) -> None:
        handler = getattr(self, "expect_" + args[0].replace("-", "_"), None)
        assert handler is not None, f"unknown expectation {args[0]!r}"
        handler(args[1:])

    def expect_leader(self, args: list[str]) -> None:
        leaders = self.cluster.leaders()
        assert leaders == [args[0]], f"leaders are {leaders}"
        if len(args) > 2:
            assert self.cluster.nodes[args[0]].term == int(args[2]), self._node_summary(args[0])

    def expect_leader_in(self, args: list[str]) -> None:
        names = args[: args.index("term")] if "term" in args else args
        leaders = self.cluster.leaders()
        assert len(leaders) == 1 and leaders[0] in names, f"leaders are {leaders}"
        if "term" in args:
            want = int(args[args.index("term") + 1])
            assert self.cluster.nodes[leaders[0]].term == want, self._node_summary(leaders[0])

    def expect_no_leader(self, args: list[str]) -> None:
        assert self.cluster.leaders() == [], f"leaders are {self.cluster.leaders()}"

    def expect_role(self, args: list[str]) -> None:
        role = self.cluster.nodes[args[0]].role
        assert role.value == args[1], self._node_summary(args[0])

    def expect_term(self, args: list[str]) -> None:
        assert self.cluster.nodes[args[0]].term == int(args[1]), self._node_summary(args[0])

    def expect_committed(self, args: list[str]) -> None:
        for n in self._targets(args[0]):
            got = self.cluster.nodes[n].commit_index
            assert got == int(args[1]), f"{n} committed {got}; {self._node_summary(n)}"

    def expect_applied(self, args: list[str]) -> None:
        want = [a.encode() for a in args[1:]]
        for n in self._targets(args[0]):
            got = self.cluster.stores[n].applied_data
            assert got == want, f"{n} applied {got}"

    def expect_last_index(self, args: list[str]) -> None:
        assert self.cluster.nodes[args[0]].last_index == int(args[1]), self._node_summary(args[0])

    def expect_entry(self, args: list[str]) -> None:
        node, index = self.cluster.nodes[args[0]], int(args[1])
        present = node.first_index <= index <= node.last_index
        if args[2] == "missing":
            assert not present, f"entry {index} present: {node.entries(index, index + 1)}"
            return
        assert present, f"entry {index} missing; {self._node_summary(args[0])}"
        entry = node.entries(index, index + 1)[0]
        assert entry.term == int(args[3]), f"entry {entry}"

    def expect_vote(self, args: list[str]) -> None:
        want = None if args[1] == "none" else args[1]
        assert self.cluster.nodes[args[0]].vote == want, self._node_summary(args[0])

    def expect_read(self, args: list[str]) -> None:
        states = self._read_states(args[0])
        assert (args[1].encode(), int(args[3])) in states, f"read states {states}"

    def expect_no_read(self, args: list[str]) -> None:
        states = self._read_states(args[0])
        assert all(ctx != args[1].encode() for ctx, _ in states), f"read states {states}"

    def _read_states(self, node: str) -> list[tuple[bytes, int]]:
        return [(r.context, r.index) for r in self.cluster.stores[node].read_states]

    def expect_repair(self, args: list[str]) -> None:
        got = self.cluster.nodes[args[0]].repair_needed
        assert got == (args[1] == "on"), self._node_summary(args[0])

    def expect_voters(self, args: list[str]) -> None:
        assert args[1] == "=", args
        got = sorted(self.cluster.nodes[args[0]].membership.voters)
        assert got == sorted(args[2:]), f"voters {got}"

    def expect_learners(self, args: list[str]) -> None:
        assert args[1] == "=", args
        got = sorted(self.cluster.nodes[args[0]].membership.learners)
        assert got == sorted(args[2:]), f"learners {got}"

    def expect_event(self, args: list[str]) -> None:
        assert args[1] in self.cluster.stores[args[0]].events, self.cluster.stores[args[0]].events

    def expect_no_event(self, args: list[str]) -> None:
        assert args[1] not in self.cluster.stores[args[0]].events, "event was emitted"

    def expect_snapshot_index(self, args: list[str]) -> None:
        store = self.cluster.stores[args[0]]
        got = store.snapshot.meta.index if store.snapshot else 0
        assert got == int(args[1]), f"snapshot index {got}"

    def expect_queued(self, args: list[str]) -> None:
        src, dst, kind = args[0], args[1], MSG_TYPES[args[2]]
        n = sum(1 for m in self.cluster.queue if (m.src, m.dst, m.type) == (src, dst, kind))
        want = int(args[3]) if len(args) > 3 else None
        assert n == want if want is not None else n > 0, f"queued: {self._queue_summary()}"

    def _node_summary(self, name: str) -> str:
        n = self.cluster.nodes[name]
        return (
            f"{name}: role={n.role.value} term={n.term} vote={n.vote} leader={n.leader_id} "
            f"commit={n.commit_index} last={n.last_index} repair={n.repair_needed}"
        )


def run_script(text: str, name: str = "<script>", seed: int = 0) -> Script:
    script = Script(cluster=Cluster(seed=seed))
    script.run(text, name)
    return script


def bench_core(entries: int = 20_000, batch: int = 50, payload_bytes: int = 100) -> float:
    """Entries per second committed and applied by three in-process nodes on this harness (the
    pure core's cost plus a trivial in-memory store; no I/O): `python -m raft.testing.scenario`."""
    import time  # noqa: PLC0415 (the harness itself never reads the clock)

    c = Cluster(seed=1)
    members = Membership(voters=frozenset("abc"))
    for n in "abc":
        c.start(n, members)
    c.tick("a", 40)
    leader = c.nodes["a"]
    assert leader.role is Role.LEADER
    payload = b"x" * payload_bytes
    t0 = time.perf_counter()
    for _ in range(entries // batch):
        for _ in range(batch):
            leader.propose(payload)
        c.drain()
    elapsed = time.perf_counter() - t0
    assert c.stores["c"].applied_index == leader.last_index
    return entries / elapsed


if __name__ == "__main__":
    print(f"{bench_core():.0f} entries/s committed and applied (3 nodes in-process, batches of 50)")
