"""The meta group's join scheme (meta/service.py, meta/topology.py) on the Raft simulator.

Bootstrap memberships as the servers derive them from their flags: n1 has no route (a learner
of its own group: it never elects itself), n2 and n3 name only n1 (voters {n1, n2} and
{n1, n3}). A controller plays the meta leader's membership loop: it admits every server that is
not a member (a learner) and promotes a learner once its log matches the leader's commit index,
one change at a time. Under partitions, pauses, crashes and restarts (a restarted server gets its
own bootstrap membership back, as the store keeps it), the simulator's invariant checker must see
no violation (one leader per term, log matching, committed entries never change, leader
completeness), and after healing every server must be a voter in one shared membership.
Two seedless servers alone must never elect anyone.
"""

from __future__ import annotations

import random

import pytest

from raft.config import Role
from raft.testing.sim import Cluster, SimConfig
from raft.types import ConfigChange, ConfigChangeType, EntryKind, Membership

BOOTSTRAP = {
    "n1": Membership(learners=frozenset({"n1"})),
    "n2": Membership(voters=frozenset({"n1", "n2"})),
    "n3": Membership(voters=frozenset({"n1", "n3"})),
}
ALL = frozenset(BOOTSTRAP)
MARK = "~meta-bootstrap~"  # the learner with no address that meta/service.py adds and removes
SEEDS = 40
CHAOS_TICKS = 600
HEAL_TICKS = 600


def cluster_with(seed: int, bootstrap: dict[str, Membership]) -> Cluster:
    c = Cluster(seed, SimConfig(n_nodes=len(bootstrap)))
    for node_id in sorted(bootstrap):  # nothing ran yet: restart each fresh with its own view
        c.crash(node_id)
        c._start(c.nodes[node_id], bootstrap[node_id])  # noqa: SLF001 - per-node bootstrap configs
    return c


def admit_and_promote(c: Cluster, everyone: frozenset[str] = ALL) -> None:
    """One round of the meta leader's membership loop (meta/service.py `_membership_step`)."""
    for lead in c.leaders():
        node = lead.raft
        assert node is not None
        m = node.membership
        change = None
        logged = any(e.kind is EntryKind.CONFIG for e in node.entries(node.first_index, node.last_index + 1))
        if MARK in m.learners:
            change = ConfigChange(ConfigChangeType.REMOVE, MARK)
        elif not logged and node.snapshot_meta.index == 0:
            change = ConfigChange(ConfigChangeType.ADD_LEARNER, MARK)  # writes the membership down
        for learner in sorted(m.learners - {MARK}) if change is None else ():
            pr = node._progress.get(learner)  # noqa: SLF001 - as meta/service.py reads it
            if pr is not None and pr.match >= node.commit_index > 0:
                change = ConfigChange(ConfigChangeType.PROMOTE_LEARNER, learner)
                break
        if change is None:
            missing = sorted(everyone - m.voters - m.learners)
            if missing:
                change = ConfigChange(ConfigChangeType.ADD_LEARNER, missing[0])
        if change is not None:
            node.propose_config_change(change)  # refused while one is pending: next round
            c._drain(lead)  # noqa: SLF001


def restart_own(c: Cluster, node_id: str, bootstrap: dict[str, Membership] = BOOTSTRAP) -> None:
    c._start(c.nodes[node_id], bootstrap[node_id])  # noqa: SLF001 - the store keeps the bootstrap


def chaos(c: Cluster, rng: random.Random, bootstrap: dict[str, Membership] = BOOTSTRAP) -> None:
    roll = rng.random()
    ids = sorted(bootstrap)
    if roll < 0.04:
        rng.shuffle(ids)
        c.partition([set(ids[:1]), set(ids[1:])])
    elif roll < 0.06:
        c.heal()
    elif roll < 0.08:
        live = [n.node_id for n in c.live()]
        if live:
            c.crash(rng.choice(live))
    elif roll < 0.11:
        for node_id in ids:
            if not c.nodes[node_id].up:
                restart_own(c, node_id, bootstrap)
    elif roll < 0.25:
        c.propose()


def settled(c: Cluster, everyone: frozenset[str] = ALL) -> bool:
    views = {n.raft.membership for n in c.live() if n.raft is not None}
    return len(c.live()) == len(everyone) and views == {Membership(voters=everyone)} and len(c.leaders()) == 1


@pytest.mark.parametrize("seed", range(SEEDS))
def test_one_seed_servers_converge_to_three_voters(seed: int) -> None:
    rng = random.Random(f"join-{seed}")
    c = cluster_with(seed, BOOTSTRAP)
    for _ in range(CHAOS_TICKS):
        chaos(c, rng)
        c.tick()
        admit_and_promote(c)
    c.heal()
    for node_id in sorted(ALL):
        if not c.nodes[node_id].up:
            restart_own(c, node_id)
    for _ in range(HEAL_TICKS):
        c.tick()
        admit_and_promote(c)
        if settled(c):
            break
    assert settled(c), [(n.node_id, n.raft.role, n.raft.membership) for n in c.live() if n.raft]
    # a proposal commits on the joined group
    assert c.propose(b"after-join")


@pytest.mark.parametrize("seed", range(5))
def test_seedless_servers_never_elect_themselves(seed: int) -> None:
    lone = {"n1": Membership(learners=frozenset({"n1"})), "n2": Membership(learners=frozenset({"n2"}))}
    c = cluster_with(seed, lone)
    c.run(400)
    assert all(n.raft is not None and n.raft.role is Role.LEARNER for n in c.live())


TWO = {"n1": Membership(learners=frozenset({"n1"})), "n2": Membership(voters=frozenset({"n1", "n2"}))}


@pytest.mark.parametrize("seed", range(10))
def test_seedless_server_of_two_learns_it_is_a_voter(seed: int) -> None:
    """n1 (no route) and n2 (naming n1): no server is missing, so only the written-down
    membership tells n1 it is a voter; after that either may lead."""
    rng = random.Random(f"two-{seed}")
    everyone = frozenset(TWO)
    c = cluster_with(seed, TWO)
    for _ in range(CHAOS_TICKS):
        chaos(c, rng, TWO)
        c.tick()
        admit_and_promote(c, everyone)
    c.heal()
    for node_id in sorted(TWO):
        if not c.nodes[node_id].up:
            restart_own(c, node_id, TWO)
    for _ in range(HEAL_TICKS):
        c.tick()
        admit_and_promote(c, everyone)
        if settled(c, everyone):
            break
    assert settled(c, everyone), [(n.node_id, n.raft.role, n.raft.membership) for n in c.live() if n.raft]
