"""Hypothesis drives the cluster simulator with rules, so a failure shrinks to a minimal fault
schedule. Invariants are checked by the Cluster's InvariantChecker on every effect (a rule that
breaks one raises Violation), plus the invariants below after every rule; teardown heals
everything and requires liveness."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raft.testing.chaos import settle
from raft.testing.sim import Cluster, SimConfig
from raft.testing.simdisk import CorruptKind

NODE_INDEX = st.integers(0, 6)


class ClusterMachine(RuleBasedStateMachine):
    cluster: Cluster

    @initialize(seed=st.integers(0, 2**16), five=st.booleans())
    def start(self, seed: int, five: bool) -> None:
        self.cluster = Cluster(seed, SimConfig(n_nodes=5 if five else 3))

    def _ids(self) -> list[str]:
        return sorted(n for n, s in self.cluster.nodes.items() if not s.retired)

    def _advance(self) -> None:
        """Every fault rule is followed by a few ticks so time moves on between faults."""
        self.cluster.run(3)

    def _pick(self, i: int) -> str:
        ids = self._ids()
        return ids[i % len(ids)]

    @rule(ticks=st.integers(1, 30))
    def tick(self, ticks: int) -> None:
        self.cluster.run(ticks)

    @rule(n=st.integers(1, 5))
    def propose(self, n: int) -> None:
        for _ in range(n):
            self.cluster.propose()
        self._advance()

    @rule(cut=st.sets(NODE_INDEX, min_size=1, max_size=3))
    def partition(self, cut: set[int]) -> None:
        side = {self._pick(i) for i in cut}
        rest = set(self._ids()) - side
        self.cluster.partition([side, rest] if rest else [side])
        self._advance()

    @rule(a=NODE_INDEX, b=NODE_INDEX)
    def block(self, a: int, b: int) -> None:
        if self._pick(a) != self._pick(b):
            self.cluster.block(self._pick(a), self._pick(b))
        self._advance()

    @rule()
    def heal(self) -> None:
        self.cluster.heal()
        self._advance()

    @rule(i=NODE_INDEX)
    def pause(self, i: int) -> None:
        self.cluster.pause(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX)
    def resume(self, i: int) -> None:
        self.cluster.resume(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX)
    def crash(self, i: int) -> None:
        self.cluster.crash(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX)
    def restart(self, i: int) -> None:
        self.cluster.restart(self._pick(i))
        self._advance()

    @rule(which=st.sampled_from(["one", "majority", "all"]), i=NODE_INDEX)
    def power_loss(self, which: str, i: int) -> None:
        ids = self._ids()
        start = i % len(ids)
        rotated = ids[start:] + ids[:start]
        count = {"one": 1, "majority": len(ids) // 2 + 1, "all": len(ids)}[which]
        self.cluster.power_loss(rotated[:count])
        self._advance()

    @rule(i=NODE_INDEX, kind=st.sampled_from([None, *CorruptKind]))
    def corrupt_minority(self, i: int, kind: CorruptKind | None) -> None:
        self.cluster.corrupt(self._pick(i), kind)  # refused if it would reach a majority
        self._advance()

    @precondition(lambda self: len(self.cluster.nodes) < 7)
    @rule(learner=st.booleans())
    def add_member(self, learner: bool) -> None:
        self.cluster.add_member(learner)
        self._advance()

    @rule(i=NODE_INDEX)
    def remove_member(self, i: int) -> None:
        lead = self.cluster.leader()
        if lead is not None and lead.raft is not None and len(lead.raft.membership.voters) > 3:
            self.cluster.remove_member(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX)
    def promote(self, i: int) -> None:
        self.cluster.promote(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX, rate=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]))
    def skew(self, i: int, rate: float) -> None:
        self.cluster.skew(self._pick(i), rate)
        self._advance()

    @rule(i=NODE_INDEX)
    def read(self, i: int) -> None:
        self.cluster.read(self._pick(i))
        self._advance()

    @rule(i=NODE_INDEX)
    def transfer(self, i: int) -> None:
        self.cluster.transfer(self._pick(i))
        self._advance()

    @invariant()
    def at_most_one_leader_per_term(self) -> None:
        terms = [n.raft.term for n in self.cluster.leaders() if n.raft is not None]
        assert len(terms) == len(set(terms)), terms

    @invariant()
    def commit_within_log_and_applied_within_commit(self) -> None:
        for n in self.cluster.live():
            assert n.raft is not None
            assert n.sm.applied_index <= n.raft.commit_index <= n.raft.last_index

    def teardown(self) -> None:
        if hasattr(self, "cluster"):
            settle(self.cluster)


ClusterMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCluster = ClusterMachine.TestCase


class NoFsyncMachine(ClusterMachine):
    """The same rules over a driver that never fsyncs: hypothesis must find a violation."""

    @initialize(seed=st.integers(0, 2**16), five=st.booleans())
    def start(self, seed: int, five: bool) -> None:
        from tests.sim.test_sim import NoFsyncCluster

        self.cluster = NoFsyncCluster(seed, SimConfig(n_nodes=5 if five else 3))


def test_rule_machine_finds_a_driver_that_acks_before_fsync() -> None:
    from hypothesis import Phase
    from hypothesis.stateful import run_state_machine_as_test

    from raft.testing.invariants import Violation

    quick = settings(
        max_examples=300,
        stateful_step_count=40,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: we only need to know it fails
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    with pytest.raises(Violation):
        run_state_machine_as_test(NoFsyncMachine, settings=quick)
