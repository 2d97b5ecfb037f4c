"""A small seeded fuzz of the Raft core on the scenario cluster: random ticks, message drops,
duplicates and reordering, partitions, crashes/restarts, wipes, proposals, membership changes,
compactions and transfers; safety is checked after every step, liveness once faults stop, with
and without pre-vote and check-quorum. (The full simulator with disk faults lives in
raft/testing/sim*; this catches core bugs early and cheaply.)"""

from __future__ import annotations

import random

import pytest

from raft.config import Role
from raft.testing.scenario import Cluster
from raft.types import ConfigChange, ConfigChangeType, Membership, Snapshot

NODES = ["a", "b", "c", "d", "e"]


class Checker:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, str] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)

    def check(self, c: Cluster) -> None:
        for name, node in c.nodes.items():
            if name in c.down:
                continue
            if node.role is Role.LEADER:
                prev = self.leader_of_term.setdefault(node.term, name)
                assert prev == name, f"two leaders in term {node.term}: {prev} {name}"
            lo = max(node.first_index, node.commit_index - 20)
            for e in node.entries(lo, node.commit_index + 1):
                want = self.committed.setdefault(e.index, (e.term, e.data))
                assert want == (e.term, e.data), f"{name} committed {e} but {want} was committed"
        applied = [c.stores[n].applied_data for n in c.nodes]
        longest = max(applied, key=len)
        for a in applied:
            assert a == longest[: len(a)], "state machines diverged"


def step_network(c: Cluster, rng: random.Random, checker: Checker) -> None:
    for _ in range(rng.randrange(1, 40)):
        c.process_readies()
        if not c.queue:
            return
        m = c.queue.pop(rng.randrange(len(c.queue)))  # reorder
        r = rng.random()
        if r < 0.1:
            continue  # drop
        if r < 0.15:
            c.queue.append(m)  # duplicate
        if m.dst in c.nodes and c.link_up(m.src, m.dst):
            c.nodes[m.dst].step(m)
        checker.check(c)


def act(c: Cluster, rng: random.Random, membership: Membership, proposed: list[int]) -> None:
    up = sorted(n for n in c.nodes if n not in c.down)
    leaders = c.leaders()
    r = rng.random()
    if r < 0.5:
        c.nodes[rng.choice(up)].tick()
    elif r < 0.7 and leaders:
        proposed[0] += 1
        c.nodes[leaders[0]].propose(b"v%d" % proposed[0])
    elif r < 0.75:
        c.cut = {frozenset(p) for p in zip(rng.sample(NODES, 3), rng.sample(NODES, 3)) if p[0] != p[1]}
    elif r < 0.8:
        c.cut.clear()
    elif r < 0.83 and len(c.down) < 2:
        c.crash(rng.choice(up))
    elif r < 0.86 and c.down:
        c.restart(rng.choice(sorted(c.down)), membership)
    elif r < 0.88 and leaders and not any(s.repair_needed for s in c.stores.values()):
        kind = rng.choice(list(ConfigChangeType))
        c.nodes[leaders[0]].propose_config_change(ConfigChange(type=kind, node_id=rng.choice(NODES)))
    elif r < 0.9:
        node = c.nodes[rng.choice(up)]
        if node.applied_index > node.snapshot_meta.index:
            store = c.stores[node.node_id]
            node.compact(node.applied_index, store.snapshot_data())
            store.snapshot = Snapshot(meta=node.snapshot_meta, data=store.snapshot_data())
            store.entries = [e for e in store.entries if e.index > node.snapshot_meta.index]
    elif r < 0.92 and leaders:
        c.nodes[leaders[0]].transfer_leadership(rng.choice(NODES))
    elif r < 0.93 and may_wipe(c):
        victim = rng.choice(up)  # one wiped node at a time: a wiped majority is out of scope
        c.wipe(victim, membership)


def may_wipe(c: Cluster) -> bool:
    """Only with 3+ voters everywhere, nobody down and nobody already repairing: wiping one of
    two voters loses a majority's memory, which R5 answers with unavailability, not service."""
    if c.down or any(s.repair_needed for s in c.stores.values()):
        return False
    return all(len(n.membership.voters) >= 3 for n in c.nodes.values() if n.membership.voters)


VARIANTS = {
    "default": {"max_entries_per_msg": 3, "snapshot_chunk_bytes": 16},
    "no-prevote-no-checkquorum": {"pre_vote": False, "check_quorum": False, "max_entries_per_msg": 2},
    "prevote-only-inflight-1": {"pre_vote": True, "check_quorum": False, "max_inflight_msgs": 1},
    "checkquorum-only-tiny-chunks": {"pre_vote": False, "check_quorum": True, "snapshot_chunk_bytes": 7},
}
CASES = [(seed, "default", 3) for seed in range(10)] + [
    (seed, variant, voters)
    for variant in list(VARIANTS)[1:]
    for seed, voters in ((100, 3), (101, 5))
]


@pytest.mark.parametrize(("seed", "variant", "n_voters"), CASES)
def test_random_faults_keep_raft_safe(seed: int, variant: str, n_voters: int) -> None:
    rng = random.Random(seed)
    c = Cluster(seed=seed, config={"election_ticks": 5, **VARIANTS[variant]})
    membership = Membership(voters=frozenset(NODES[:n_voters]), learners=frozenset())
    for n in NODES[:n_voters]:
        c.start(n, membership)
    for n in NODES[n_voters:]:
        c.start(n, Membership())
    checker = Checker()
    proposed = [0]
    for _ in range(1500):
        act(c, rng, membership, proposed)
        step_network(c, rng, checker)
        checker.check(c)
    # liveness once faults stop: heal, restart everyone, and a leader commits a new entry
    c.cut.clear()
    for n in sorted(c.down):
        c.restart(n, membership)
    proposed_in: set[tuple[str, int]] = set()
    for _ in range(400):
        c.tick_all()
        checker.check(c)
        for leader in c.leaders():
            node = c.nodes[leader]
            if b"final" in c.stores[leader].applied_data:
                return
            if (leader, node.term) not in proposed_in and node.propose(b"final").ok:
                proposed_in.add((leader, node.term))
    raise AssertionError(f"no progress after faults stopped: {summary(c)}")


def summary(c: Cluster) -> dict[str, str]:
    return {
        n: f"{node.role.value} t={node.term} commit={node.commit_index} last={node.last_index} "
        f"voters={sorted(node.membership.voters)} repair={node.repair_needed}"
        for n, node in c.nodes.items()
    }
