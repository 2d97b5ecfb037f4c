# pure-core
"""Seeded fault schedules over the Cluster simulator, and the end-of-run liveness check.

`run_seed(seed, steps)` builds a 3- or 5-node cluster (by seed parity; network loss, duplication
and delay also vary by seed), then for `steps` ticks picks, with a schedule rng derived only from
the seed, at most one action before each tick: proposals, reads, partitions of random shape,
one-way blocks, heal, pause/resume, clock skew, crash/restart, power loss on one node / a
majority / all nodes, corruption (bit flip, truncation, rollback, wipe) of a minority, adding a
voter or learner, promoting a learner, removing a voter, and leadership transfer. Invariants are
checked by the Cluster's InvariantChecker after every step.

Then `settle`: heal and calm the network (no loss, short delays), resume, unskew and restart
every node, and require (R8) that within
`LIVENESS_TICKS` a leader exists and a new proposal is acknowledged, and within `CATCHUP_TICKS`
more every live member has applied every acknowledged index (no acknowledged write lost, R2).
Failures come back as a `RunResult` with the violated invariant, never as a crash of the caller.

`run_seed(..., membership=True)` runs the membership schedule instead (`membership_round`): four
voters, a change left on a minority that may elect a leader under it, a wiped node restarted with
a lagging config next to the old leader (the class of tests/sim/test_repair_gaps.py gap 2).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from raft.config import Role
from raft.testing.invariants import Violation
from raft.testing.sim import Cluster, SimConfig
from raft.testing.simdisk import CorruptKind

LIVENESS_TICKS = 400
CATCHUP_TICKS = 400
TRACE_TAIL = 40


@attrs.frozen
class RunResult:
    seed: int
    trace_hash: str
    ticks: int
    proposed: int
    acked: int
    leaders: int
    violation: str | None = None
    invariant: str | None = None
    trace_tail: tuple[str, ...] = ()  # the last trace events, on failure only

    @property
    def ok(self) -> bool:
        return self.violation is None


def config_for(seed: int, *, stale_repair: bool = False) -> SimConfig:
    """3 or 5 nodes by parity; network quality varies by seed (lossy, duplicating, slow)."""
    rng = random.Random(f"config-{seed}")
    return SimConfig(
        stale_repair=stale_repair,
        n_nodes=3 if seed % 2 == 0 else 5,
        drop_rate=rng.choice([0.0, 0.02, 0.05, 0.15]),
        duplicate_rate=rng.choice([0.0, 0.02, 0.1]),
        delay_ticks=(1, rng.choice([2, 3, 3, 8])),
    )


# -- actions -------------------------------------------------------------------------------


def _some(rng: random.Random, items: list[str], k: int) -> list[str]:
    return sorted(rng.sample(items, min(k, len(items))))


def act_partition(c: Cluster, rng: random.Random) -> None:
    ids = sorted(n for n, s in c.nodes.items() if not s.retired)
    rng.shuffle(ids)
    cut = rng.randint(1, len(ids) - 1)
    groups = [set(ids[:cut]), set(ids[cut:])]
    if len(ids) > 3 and rng.random() < 0.3:  # three-way split
        cut2 = rng.randint(cut, len(ids) - 1)
        groups = [set(ids[:cut]), set(ids[cut:cut2]), set(ids[cut2:])]
    c.partition([g for g in groups if g])


def act_block(c: Cluster, rng: random.Random) -> None:
    ids = sorted(n for n, s in c.nodes.items() if not s.retired)
    src, dst = rng.sample(ids, 2)
    c.block(src, dst)


def act_pause(c: Cluster, rng: random.Random) -> None:
    live = [n.node_id for n in c.live()]
    if live:
        c.pause(rng.choice(live))


def act_resume(c: Cluster, rng: random.Random) -> None:
    for node_id in sorted(c.nodes):
        c.resume(node_id)


def act_crash(c: Cluster, rng: random.Random) -> None:
    live = [n.node_id for n in c.live()]
    if live:
        c.crash(rng.choice(live))


def act_restart(c: Cluster, rng: random.Random) -> None:
    down = [n for n, s in sorted(c.nodes.items()) if not s.up and not s.retired]
    for node_id in _some(rng, down, rng.randint(1, 2)):
        c.restart(node_id)


def act_power_loss(c: Cluster, rng: random.Random) -> None:
    ids = [n for n, s in sorted(c.nodes.items()) if not s.retired]
    roll = rng.random()
    if roll < 0.6:
        victims = _some(rng, ids, 1)
    elif roll < 0.85:
        victims = _some(rng, ids, len(ids) // 2 + 1)
    else:
        victims = ids
    c.power_loss(victims)


def act_corrupt(c: Cluster, rng: random.Random) -> None:
    ids = [n for n, s in sorted(c.nodes.items()) if not s.retired]
    kind = rng.choice([CorruptKind.BITFLIP, CorruptKind.TRUNCATE, CorruptKind.ROLLBACK, None])
    c.corrupt(rng.choice(ids), kind)


def act_add(c: Cluster, rng: random.Random) -> None:
    if len([s for s in c.nodes.values() if not s.retired]) < 7:
        c.add_member(learner=rng.random() < 0.5)


def act_promote(c: Cluster, rng: random.Random) -> None:
    lead = c.leader()
    if lead is not None and lead.raft is not None and lead.raft.membership.learners:
        c.promote(rng.choice(sorted(lead.raft.membership.learners)))


def act_remove(c: Cluster, rng: random.Random) -> None:
    lead = c.leader()
    if lead is None or lead.raft is None:
        return
    voters = sorted(lead.raft.membership.voters)
    if len(voters) > 3:
        c.remove_member(rng.choice(voters))


def act_transfer(c: Cluster, rng: random.Random) -> None:
    lead = c.leader()
    if lead is None or lead.raft is None:
        return
    others = sorted(lead.raft.membership.voters - {lead.node_id})
    if others:
        c.transfer(rng.choice(others))


def act_skew(c: Cluster, rng: random.Random) -> None:
    ids = sorted(n for n, s in c.nodes.items() if not s.retired)
    c.skew(rng.choice(ids), rng.choice([0.25, 0.5, 1.0, 2.0, 3.0]))


def act_read(c: Cluster, rng: random.Random) -> None:
    live = [n.node_id for n in c.live()]
    if live:
        c.read(rng.choice(live))


def act_propose(c: Cluster, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 3)):
        c.propose()


ACTIONS = [
    (act_propose, 30.0),
    (act_partition, 1.5),
    (act_block, 1.0),
    (lambda c, r: c.heal(), 3.0),
    (act_pause, 1.0),
    (act_resume, 1.5),
    (act_crash, 1.0),
    (act_restart, 3.0),
    (act_power_loss, 0.8),
    (act_corrupt, 0.8),
    (act_add, 0.4),
    (act_promote, 0.4),
    (act_remove, 0.4),
    (act_transfer, 0.6),
    (act_read, 4.0),
    (act_skew, 0.6),
]
_FUNCS = [a for a, _ in ACTIONS]
_WEIGHTS = [w for _, w in ACTIONS]
QUIET_WEIGHT = 60.0  # weight of "no action this tick"
STORM_QUIET_WEIGHT = 8.0  # --storm: about one action every tick and a half


def chaos_step(c: Cluster, rng: random.Random, quiet_weight: float = QUIET_WEIGHT) -> None:
    """Maybe one action, then one tick."""
    if rng.random() * (sum(_WEIGHTS) + quiet_weight) >= quiet_weight:
        rng.choices(_FUNCS, _WEIGHTS)[0](c, rng)
    c.tick()


# -- the membership schedule (`--membership`) -------------------------------------------------


def _ticks(c: Cluster, n: int, until: Callable[[], bool] | None = None) -> None:
    for _ in range(n):
        if until is not None and until():
            return
        c.tick()


def membership_round(c: Cluster, rng: random.Random) -> None:
    """One round of the class of tests/sim/test_repair_gaps.py gap 2, with seeded shapes and
    timings: a leader L makes a membership change (usually an add) and is at once cut off with a
    random few, so the change stays on a minority; the other side (holding the change, or not)
    may elect a leader under the new config and commit with it; one node of that side is wiped
    and restarted (told the committed config before the latest when `lagging_config`) where it
    can reach only L's side, where L may still lead and takes proposals; then the network heals
    or splits again at random."""
    _ticks(c, 150, until=lambda: c.leader() is not None)
    lead = c.leader()
    if lead is None or lead.raft is None:
        return
    for _ in range(rng.randint(0, 3)):
        c.propose()
    _ticks(c, rng.randint(0, 6))
    lead = c.leader()
    if lead is None or lead.raft is None:
        return
    lid = lead.node_id
    voters = sorted(lead.raft.membership.voters - {lid})
    if rng.random() < 0.7 or len(voters) < 3:
        new = c.add_member(learner=False)
        if new is None:
            return
        holders = {lid, new}
    else:
        if not c.remove_member(rng.choice(voters)):
            return
        holders = {lid}
    live = sorted(n for n, s in c.nodes.items() if not s.retired and n not in holders)
    if live and rng.random() < 0.4:
        holders.add(rng.choice(live))
    rest = [n for n in live if n not in holders]
    c.partition([holders, set(rest)])
    _ticks(c, rng.randint(1, 5))
    # the other side: what reached the change (minus L) and some of the rest
    side = (holders - {lid}) | set(_some(rng, rest, rng.randint(1, max(1, len(rest)))))
    stale = {n for n in holders | set(rest) if n not in side}
    c.partition([side, stale])
    base = lead.raft.term if lead.raft is not None else 0

    def side_leads() -> bool:
        return any(n.node_id in side and n.raft is not None and n.raft.term > base for n in c.leaders())

    _ticks(c, 80, until=side_leads)
    _ticks(c, rng.randint(0, 10))
    helpers = sorted(n for n in side if c.nodes[n].raft is not None and c.nodes[n].raft.role is not Role.LEADER)
    victim = rng.choice(helpers) if helpers and rng.random() < 0.85 else rng.choice(sorted(side | stale))
    if not c.corrupt(victim, None):
        return
    c.partition([side - {victim}, stale | {victim}])
    _ticks(c, rng.randint(0, 3))
    c.restart(victim)
    for _ in range(rng.randint(5, 40)):
        if rng.random() < 0.3:
            c.propose(on=lid)
        c.tick()
    if rng.random() < 0.7:
        c.heal()
    else:
        act_partition(c, rng)
    _ticks(c, rng.randint(0, 40))


# -- end of run ----------------------------------------------------------------------------


def heal_all(c: Cluster) -> None:
    c.heal()
    c.calm()
    for node_id, node in sorted(c.nodes.items()):
        c.resume(node_id)
        if node.tick_rate != 1.0:
            c.skew(node_id, 1.0)
        if not node.up and not node.retired:
            c.restart(node_id)


def settle(c: Cluster, *, repairing_may_lag: bool = False) -> None:
    """R8 and R2 after faults stop: a new write is acknowledged within a bound, then every live
    member catches up to every acknowledged index (`repairing_may_lag` excuses nodes still
    repair-needed, for callers working around a known core bug)."""
    heal_all(c)
    start, acked_before = c.now, c.acked
    while c.acked == acked_before:
        if c.now - start > LIVENESS_TICKS:
            raise Violation("liveness", f"no leader committed a new proposal within {LIVENESS_TICKS} ticks")
        lead = c.leader()
        if lead is not None and lead.raft is not None:
            term = lead.raft.term
            if not any(t == term for t, _ in lead.pending.values()):
                c.propose(b"probe")
        c.tick()
    deadline = c.now + CATCHUP_TICKS
    while not _caught_up(c, max(c.checker.acked, default=0), repairing_may_lag):
        if c.now > deadline:
            target = max(c.checker.acked, default=0)
            raise Violation("liveness", f"members did not catch up to acked index {target}: {_lag(c)}")
        c.tick()
    done = [n for n in _members(c) if n.raft is not None and not n.raft.repair_needed]
    c.checker.check_acked_applied({n.node_id: n.sm.applied_index for n in done})


def _members(c: Cluster) -> list:  # type: ignore[type-arg]
    members = set(c.members())
    return [n for n in c.live() if n.node_id in members]


def _caught_up(c: Cluster, target: int, repairing_may_lag: bool = False) -> bool:
    for n in _members(c):
        repairing = n.raft is None or n.raft.repair_needed
        if repairing and repairing_may_lag:
            continue
        if repairing or n.sm.applied_index < target:
            return False
    return True


def _lag(c: Cluster) -> list[tuple[str, int, bool]]:
    return [(n.node_id, n.sm.applied_index, bool(n.raft and n.raft.repair_needed)) for n in _members(c)]


def run_seed(
    seed: int,
    steps: int = 200,
    *,
    cluster_cls: type[Cluster] = Cluster,
    stale_repair: bool = False,
    storm: bool = False,
    tail: int = TRACE_TAIL,
    membership: bool = False,
) -> RunResult:
    """One seeded run; `cluster_cls` lets a test swap in a deliberately broken driver.
    `membership`: the membership schedule instead (`membership_config`, then `membership_round`
    until `steps` ticks have passed)."""
    if membership:
        return _run_membership(seed, steps, cluster_cls, stale_repair, tail)
    c = cluster_cls(seed, config_for(seed, stale_repair=stale_repair))
    rng = random.Random(f"schedule-{seed}")
    violation = invariant = None
    try:
        for _ in range(steps):
            chaos_step(c, rng, STORM_QUIET_WEIGHT if storm else QUIET_WEIGHT)
        settle(c)
    except Violation as v:
        violation, invariant = str(v), v.invariant
        c.record("violation", str(v))
    leaders = len(c.checker.leaders)
    last = tuple(repr(item) for item in c.trace[-tail:]) if violation and tail > 0 else ()
    return RunResult(seed, c.trace_hash(), c.now, c.proposed, c.acked, leaders, violation, invariant, last)


def membership_config(seed: int, *, stale_repair: bool = False) -> SimConfig:
    """Four voters (an even config), restarts told the committed config before the latest;
    check-quorum off for half the seeds (a stale leader then keeps leading while cut off from
    the majority), pre-vote off for a third; network quality as `config_for`."""
    rng = random.Random(f"membership-config-{seed}")
    return attrs.evolve(
        config_for(seed, stale_repair=stale_repair),
        n_nodes=4,
        lagging_config=True,
        check_quorum=rng.random() < 0.5,
        pre_vote=rng.random() < 0.67,
    )


def _run_membership(
    seed: int, steps: int, cluster_cls: type[Cluster], stale_repair: bool, tail: int
) -> RunResult:
    c = cluster_cls(seed, membership_config(seed, stale_repair=stale_repair))
    rng = random.Random(f"membership-{seed}")
    violation = invariant = None
    try:
        while c.now < steps:
            membership_round(c, rng)
        settle(c)
    except Violation as v:
        violation, invariant = str(v), v.invariant
        c.record("violation", str(v))
    leaders = len(c.checker.leaders)
    last = tuple(repr(item) for item in c.trace[-tail:]) if violation and tail > 0 else ()
    return RunResult(seed, c.trace_hash(), c.now, c.proposed, c.acked, leaders, violation, invariant, last)
