"""The chaos sweep (raft/testing/chaos.py) with quiescing nodes: every invariant, and liveness
after the faults stop, hold when idle groups go quiet and are woken the way RaftHost wakes them.

`QuiescingCluster` is the simulator with NodeConfig.quiesce on and a peer-liveness oracle in
place of RaftHost's host heartbeats (raft/driver.py): a node that has not been reachable from
another for an election timeout of ticks (down, paused, partitioned or blocked: what silences
host heartbeats) is "suspected" by it, once, on that transition; then, exactly as the driver
does, a quiet follower whose leader it is wakes with `leader_lost=True` and a quiet leader it is
a member of wakes; every node is told its suspected set (`set_peers_down`), and a quiet leader
is woken when a suspected member is reachable again. Run more seeds by hand with `run_quiescing_sweep`:

    python -c "from tests.sim.test_quiesce_sim import main; main(300)"          # (--storm: 1)
"""

from __future__ import annotations

import sys

import attrs
import pytest

from raft import membership as mship
from raft.config import Role
from raft.core import RaftNode
from raft.testing.chaos import ACTIONS, RunResult, act_propose, config_for, heal_all, run_seed, settle
from raft.testing.invariants import Violation
from raft.testing.sim import Cluster, SimNode
from raft.testing.simstore import Loaded
from raft.types import Membership


IDLE_WINDOW_TICKS = 40


class QuiescingCluster(Cluster):
    """The simulator with quiescing nodes and a peer-liveness oracle (see module docstring).
    The chaos schedule's own proposals pause every other IDLE_WINDOW_TICKS (faults go on), so
    that groups go quiet and faults hit quiet groups; settle()'s probes always go through."""

    def propose(self, data: bytes | None = None) -> bool:
        if data is None and (self.now // IDLE_WINDOW_TICKS) % 2 == 1:
            return False  # an idle client
        return super().propose(data)

    def _new_raft(self, node: SimNode, loaded: Loaded, membership: Membership, repair: bool) -> RaftNode:
        raft = super()._new_raft(node, loaded, membership, repair)
        raft._cfg = attrs.evolve(raft._cfg, quiesce=True)
        return raft

    def tick(self) -> None:
        super().tick()
        self._watch_liveness()

    def _reachable(self, src: str, dst: str) -> bool:
        node = self.nodes[src]
        return node.up and not self.net.is_paused(src) and self.net.can_reach(src, dst)

    def _watch_liveness(self) -> None:
        silent: dict[tuple[str, str], int] = self.__dict__.setdefault("_silent_ticks", {})
        suspected: dict[str, set[str]] = self.__dict__.setdefault("_suspected", {})
        limit = self.config.election_ticks
        for observer in self.active():
            mine = suspected.setdefault(observer.node_id, set())
            for peer in sorted(self.nodes):
                if peer == observer.node_id:
                    continue
                key = (observer.node_id, peer)
                if self._reachable(peer, observer.node_id):
                    silent[key] = 0
                    if peer in mine:
                        mine.discard(peer)
                        self._wake_for(observer, peer, frozenset(mine), back=True)
                    continue
                silent[key] = silent.get(key, 0) + 1
                if silent[key] == limit + 1:
                    mine.add(peer)
                    self._wake_for(observer, peer, frozenset(mine))
            if observer.raft is not None:  # (a restarted node starts with none)
                observer.raft.set_peers_down(frozenset(mine))

    def _wake_for(self, observer: SimNode, peer: str, down: frozenset[str], back: bool = False) -> None:
        raft = observer.raft
        if raft is None:
            return
        raft.set_peers_down(down)
        if not raft.quiesced:
            return
        if raft.role is Role.LEADER:
            if peer not in mship.members(raft.membership):
                return
            raft.wake()
        elif raft.leader_id == peer and not back:
            raft.wake(leader_lost=True)
        else:
            return
        self.record("wake", observer.node_id, peer, back)
        self._drain(observer)


FAULTS = [(act, weight) for act, weight in ACTIONS if act is not act_propose]


def quiet_then_fault(seed: int, cycles: int = 6) -> tuple[QuiescingCluster, int]:
    """Faults aimed at quiet groups: each cycle heals everything, idles until every live node
    is quiet (bounded), then injects one or two faults of the chaos mix (a proposal now and
    then) for 40 ticks. Ends with chaos.settle (liveness, catch-up, acked entries applied).
    Returns the cluster and how many cycles started from an all-quiet group."""
    import random

    c = QuiescingCluster(seed, config_for(seed))
    rng = random.Random(f"quiet-{seed}")
    all_quiet = 0
    for _ in range(cycles):
        heal_all(c)
        for _ in range(120):
            c.tick()
            if all(n.raft is not None and n.raft.quiesced for n in c.live()):
                all_quiet += 1
                break
        for act, _ in rng.sample(FAULTS, rng.randint(1, 2)):
            act(c, rng)
        for _ in range(40):
            if rng.random() < 0.02:
                c.propose()
            c.tick()
    settle(c)
    return c, all_quiet


@pytest.mark.parametrize("seed", range(60))
def test_faults_hitting_quiet_groups(seed: int) -> None:
    try:
        c, all_quiet = quiet_then_fault(seed)
    except Violation as v:
        raise AssertionError(f"seed={seed}: {v}") from v
    assert c.acked > 0


def test_faults_hit_quiet_groups_at_all() -> None:
    assert sum(quiet_then_fault(seed)[1] for seed in range(6)) >= 12


# A quiescing cluster must actually go quiet in these runs, or the test proves nothing.
def _quiet_seen(seed: int, storm: bool = False) -> tuple[RunResult, int]:
    seen = 0

    class Counting(QuiescingCluster):
        def tick(self) -> None:
            nonlocal seen
            super().tick()
            seen += sum(1 for n in self.active() if n.raft is not None and n.raft.quiesced)

    return run_seed(seed, cluster_cls=Counting, storm=storm), seen


@pytest.mark.parametrize("seed", range(40))
def test_chaos_with_quiescing_nodes(seed: int) -> None:
    result, quiet_ticks = _quiet_seen(seed)
    assert result.ok, f"seed={seed}: {result.violation}\n" + "\n".join(result.trace_tail)


@pytest.mark.parametrize("seed", range(20))
def test_storm_with_quiescing_nodes(seed: int) -> None:
    result, _ = _quiet_seen(seed, storm=True)
    assert result.ok, f"seed={seed} --storm: {result.violation}\n" + "\n".join(result.trace_tail)


def test_quiescing_sweep_goes_quiet_at_all() -> None:
    quiet = sum(_quiet_seen(seed)[1] for seed in range(10))
    assert quiet > 0  # (rarely: the chaos mix keeps some node faulty most of the time)


def main(seeds: int, storm: bool = False, stale_repair: bool = False) -> int:
    failed = quiet_cycles = 0
    for seed in range(seeds):
        try:
            quiet_cycles += quiet_then_fault(seed)[1]
        except Violation as v:
            failed += 1
            print(f"seed={seed} quiet-then-fault: {v}", flush=True)
    print(f"{seeds} seeds quiet-then-fault: {failed} failed, {quiet_cycles} all-quiet cycles")
    for seed in range(seeds):
        r = run_seed(seed, cluster_cls=QuiescingCluster, storm=storm, stale_repair=stale_repair)
        if not r.ok:
            failed += 1
            print(f"seed={seed} storm={storm} stale_repair={stale_repair}: {r.violation}", flush=True)
    print(f"{seeds} seeds, quiescing, storm={storm}, stale_repair={stale_repair}: {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, "--storm" in sys.argv,
                       "--stale-repair" in sys.argv) else 0)
