"""The move/scale planner (meta/moves.py) driving a Raft group in the deterministic simulator,
interleaved with crashes, restarts, partitions, pauses and power loss.

Each seed runs a few phases. A phase picks a desired peer set (a scale to 1, 3 or 5 voters, or a
move that keeps some voters and adds fresh servers) and, now and then, cancels it halfway (the
desired set goes back to the voters the phase started with). While faults happen, the group's
current leader asks `next_step` for the next membership change and carries it out the way the
move driver does: joiners start as learners knowing nothing but themselves, promotions wait for
catch-up, a server removed before a cancel comes back with the log it had (its replica is
deleted only when a move settles), voters leave only when every desired voter is up and caught up (the simulator's
stand-in for the content-hash check: the invariant checker already compares replicas' applied
hash chains index by index), and a leader that must leave first transfers leadership.
Proposals keep flowing. After the faults stop, the walk must finish: the membership equals the
desired set, and `settle` checks liveness and that every acknowledged write is applied on every
member. The simulator's invariant checker runs after every step (election safety, log
matching, state machine safety, no acknowledged write lost).
"""

from __future__ import annotations

import random

import pytest

from meta.assignments import CreateStream, MetaState, UpdateStream
from meta.moves import AddLearner, Done, GroupView, Promote, Remove, Step, TransferLeader, Verify, Wait, next_step
from meta.reconciler import replica_start
from raft.testing import chaos
from raft.testing.sim import Cluster, SimConfig, SimNode
from raft.testing.simstore import SimRaftStorage
from raft.types import ConfigChange, ConfigChangeType, Membership

SEEDS = 24
PHASES = 3
CHAOS_TICKS = 240
FINISH_TICKS = 1500
PLAN_EVERY_TICKS = 3
FAULTS = (chaos.act_crash, chaos.act_restart, chaos.act_restart, chaos.act_partition, chaos.act_pause,
          chaos.act_resume, chaos.act_power_loss)


def view_of(c: Cluster) -> tuple[GroupView, SimNode] | None:
    lead = c.leader()
    if lead is None or lead.raft is None:
        return None
    r = lead.raft
    match = {peer: pr.match for peer, pr in getattr(r, "_progress", {}).items()}
    match[lead.node_id] = r.last_index
    return GroupView(lead.node_id, r.membership.voters, r.membership.learners, match, r.commit_index), lead


def caught_up_everywhere(c: Cluster, lead: SimNode, peers: frozenset[str]) -> bool:
    assert lead.raft is not None
    target = lead.raft.commit_index
    for peer in peers:
        node = c.nodes.get(peer)
        if node is None or node.raft is None or node.sm.applied_index < target:
            return False
    return True


def add_learner(c: Cluster, lead: SimNode, new_id: str) -> None:
    """Like the move driver plus the reconciler: propose the learner, start its replica with a
    learner-only membership (it learns the real one from the leader's log or snapshot)."""
    assert lead.raft is not None
    res = lead.raft.propose_config_change(ConfigChange(ConfigChangeType.ADD_LEARNER, new_id))
    c.record("add", lead.node_id, new_id, "add_learner", res.ok)
    c._drain(lead)
    if not res.ok:
        return
    node = c.nodes.get(new_id)
    if node is None:
        c.nodes[new_id] = SimNode(new_id, SimRaftStorage(c.disk, new_id))
        c._start(c.nodes[new_id], Membership(learners=frozenset({new_id})))
    elif node.retired:  # removed earlier in a move that was then cancelled: its replica (and
        node.retired = False  # data) stays until the move settles, so it comes back with its log
        c.restart(new_id)


def plan_once(c: Cluster, desired: frozenset[str]) -> Step | None:
    got = view_of(c)
    if got is None:
        return None
    view, lead = got
    verified = caught_up_everywhere(c, lead, desired & view.voters)
    step = next_step(view, desired, verified=verified)
    if isinstance(step, AddLearner):
        add_learner(c, lead, step.peer)
    elif isinstance(step, Promote):
        c.promote(step.peer)
    elif isinstance(step, Remove):
        assert step.peer != lead.node_id, "the planner removed the leader"
        c._change(ConfigChangeType.REMOVE, step.peer)
    elif isinstance(step, TransferLeader):
        assert step.peer in desired
        c.transfer(step.peer)
    else:
        assert isinstance(step, (Verify, Wait, Done))
    return step


def pick_desired(c: Cluster, rng: random.Random, voters: frozenset[str]) -> frozenset[str]:
    size = rng.choice([1, 3, 3, 5])
    keep = sorted(rng.sample(sorted(voters), rng.randint(0, min(size, len(voters)))))
    fresh = []
    while len(keep) + len(fresh) < size:
        fresh.append(f"n{c._next_id}")
        c._next_id += 1
    return frozenset(keep + fresh)


def run_phase(c: Cluster, rng: random.Random) -> frozenset[str]:
    got = view_of(c)
    voters = got[0].voters if got else frozenset(c.members())
    desired = pick_desired(c, rng, voters)
    cancel_at = rng.randrange(CHAOS_TICKS) if rng.random() < 0.3 else -1
    c.record("desired", sorted(desired))
    for t in range(CHAOS_TICKS):
        if t == cancel_at:
            desired = voters  # cancelled: back to where the phase started
            c.record("desired", sorted(desired))
        roll = rng.random()
        if roll < 0.04:
            fault = rng.choice(FAULTS)
            if fault is not chaos.act_partition or sum(not n.retired for n in c.nodes.values()) > 1:
                fault(c, rng)
        elif roll < 0.08:
            c.heal()
        elif roll < 0.5:
            c.propose()
        if t % PLAN_EVERY_TICKS == 0:
            plan_once(c, desired)
        c.tick()
    return desired


def finish(c: Cluster, desired: frozenset[str]) -> None:
    """Faults stop: the walk must reach `desired`."""
    chaos.heal_all(c)
    c.calm()
    for t in range(FINISH_TICKS):
        if t % 2 == 0:
            c.propose()
        if t % PLAN_EVERY_TICKS == 0 and isinstance(plan_once(c, desired), Done):
            return
        c.tick()
    got = view_of(c)
    raise AssertionError(f"membership {got[0] if got else None} never reached {sorted(desired)}")


def run_seed(seed: int) -> Cluster:
    c = Cluster(seed, SimConfig(n_nodes=3))
    rng = random.Random(f"moves-{seed}")
    for _ in range(PHASES):
        desired = run_phase(c, rng)
        finish(c, desired)
        got = view_of(c)
        assert got is not None and got[0].voters == desired and not got[0].learners
    chaos.settle(c)
    return c


@pytest.mark.parametrize("seed", range(SEEDS))
def test_moves_and_scaling_under_faults_keep_every_invariant(seed: int) -> None:
    c = run_seed(seed)
    assert c.acked > 0


def test_a_seed_replays_to_the_same_trace() -> None:
    assert run_seed(3).trace_hash() == run_seed(3).trace_hash()


# -- a wiped replica of a moved group, restarted with the peer list its meta view hands out ------
# (meta/reconciler.py replica_start: the membership and the stream-log index it holds from,
# passed through ClusteredJetStream.start_replica to RaftHost.add_group)

WIPE_SEEDS = range(4)
REPAIR_TICKS = 600
STUCK_TICKS = 400


def _restart_with(c: Cluster, node_id: str, membership: Membership, index: int | None) -> None:
    """Start `node_id` (down, its disk wiped) with `membership` at `index`, as the reconciler
    would start the replica (the simulator names the caller's index through _restart_config)."""
    c._restart_config = (index, membership)  # type: ignore[assignment]
    try:
        c._start(c.nodes[node_id], membership)
    finally:
        c._restart_config = None


def _moved_then_wiped(seed: int) -> tuple[Cluster, str, MetaState, MetaState]:
    """Stream S created on n1..n3, moved to {n1, n2, n4} by the planner (through the 4-voter
    config {n1..n4}); n3 retires (shut down for good). A non-leader of the new set is wiped and
    left down. Returns the cluster, the wiped node, and the meta state before and after the move."""
    c = Cluster(seed, SimConfig(n_nodes=3))
    created, moved = MetaState(), MetaState()
    config = {"name": "S", "subjects": ["s"]}
    for state in (created, moved):
        state.apply(CreateStream("S", config, ("n1", "n2", "n3")), 1)
    desired = frozenset({"n1", "n2", f"n{c._next_id}"})
    moved.apply(UpdateStream("S", config, tuple(sorted(desired))), 2)
    most = 0
    for t in range(FINISH_TICKS):
        if t % 2 == 0:
            c.propose()
        if t % PLAN_EVERY_TICKS == 0 and isinstance(plan_once(c, desired), Done) and c.nodes["n3"].retired:
            break
        got = view_of(c)
        most = max(most, len(got[0].voters) if got else 0)
        c.tick()
    got = view_of(c)
    assert got is not None and got[0].voters == desired and c.nodes["n3"].retired
    assert most == 4  # the walk went through {n1 n2 n3 n4}
    victim = sorted(desired - {got[1].node_id})[0]
    assert c.corrupt(victim, None)
    for _ in range(5):
        c.propose()
        c.tick()
    return c, victim, created, moved


@pytest.mark.parametrize("seed", WIPE_SEEDS)
@pytest.mark.parametrize("view", ["before_move", "after_move"])
def test_wiped_replica_restarted_with_its_meta_peer_list_leaves_repair(seed: int, view: str) -> None:
    """`before_move`: the meta view lags (the creation assignment): voters {n1 n2 n3}, naming the
    retired n3, at index 0. `after_move`: the current assignment: a learner of itself at index 0.
    Either way a committed config named by a term-probe answer ({n1 n2 n4}) replaces it, the node
    leaves repair, and every invariant holds; then the group commits and it catches up."""
    c, victim, created, moved = _moved_then_wiped(seed)
    sa = (created if view == "before_move" else moved).streams["S"]
    membership, index = replica_start(sa, victim)
    _restart_with(c, victim, membership, index)
    node = c.nodes[victim]
    assert node.raft is not None and node.raft.repair_needed
    for t in range(REPAIR_TICKS):
        if node.raft is not None and not node.raft.repair_needed:
            break
        if t % 3 == 0:
            c.propose()
        c.tick()
    assert node.raft is not None and not node.raft.repair_needed, f"{victim} still repairing"
    assert node.raft.membership.voters == frozenset(moved.streams["S"].peers)
    chaos.settle(c)


@pytest.mark.parametrize("seed", WIPE_SEEDS[:2])
def test_without_the_index_the_old_peer_list_keeps_it_repairing(seed: int) -> None:
    """The same restart with no index (what add_group passed before): counted as given, the
    old peer list needs n3's answer, which never comes."""
    c, victim, created, _ = _moved_then_wiped(seed)
    membership, _ = replica_start(created.streams["S"], victim)
    _restart_with(c, victim, membership, None)
    node = c.nodes[victim]
    for t in range(STUCK_TICKS):
        if t % 3 == 0:
            c.propose()
        c.tick()
        assert node.raft is not None and node.raft.repair_needed
    assert node.raft.last_index == 0
