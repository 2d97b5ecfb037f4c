"""Quiescence in the Raft core (NodeConfig.quiesce): an idle group goes quiet and costs nothing
per tick, any real input wakes it, and a quiet group still elects when the driver reports its
leader lost. Driven by the scenario harness (raft/testing/scenario.py), which checks one leader
per term and agreeing applied entries as it runs."""

from __future__ import annotations

import pytest

from raft.config import Role
from raft.testing.scenario import Cluster
from raft.types import Membership, MessageType

ABC = Membership(voters=frozenset("abc"))
ELECTION = 10
HEARTBEAT = 2


def quiet_cluster(seed: int = 1, *, quiesce: bool = True) -> Cluster:
    """a leads a 3-node group that has been idle long enough to go quiet."""
    c = Cluster(seed=seed, config={"election_ticks": ELECTION, "heartbeat_ticks": HEARTBEAT,
                                   "quiesce": quiesce})
    for name in "abc":
        c.start(name, ABC)
    for _ in range(4 * ELECTION):
        c.tick("a")
        if c.leaders() == ["a"]:
            break
    assert c.leaders() == ["a"]
    c.tick_all(4 * HEARTBEAT)
    return c


def quiet(c: Cluster) -> list[str]:
    return sorted(n for n, node in c.nodes.items() if node.quiesced and n not in c.down)


def test_idle_group_goes_quiet_and_ticks_send_nothing() -> None:
    c = quiet_cluster()
    assert quiet(c) == ["a", "b", "c"]
    assert all(node.commit_index == c.nodes["a"].last_index for node in c.nodes.values())
    before = c.delivered
    c.tick_all(20 * ELECTION)  # far past any election timeout
    assert c.delivered == before  # no heartbeats, no campaigns
    assert c.leaders() == ["a"] and quiet(c) == ["a", "b", "c"]


def test_without_the_option_nothing_goes_quiet() -> None:
    c = quiet_cluster(quiesce=False)
    assert quiet(c) == []
    before = c.delivered
    c.tick_all(2 * HEARTBEAT)
    assert c.delivered > before  # heartbeats as ever


def test_proposal_wakes_the_leader_commits_everywhere_and_the_group_goes_quiet_again() -> None:
    c = quiet_cluster()
    res = c.propose("a", b"x")
    assert res.ok
    assert not c.nodes["a"].quiesced
    assert all(node.commit_index >= res.index for node in c.nodes.values())
    c.tick_all(4 * HEARTBEAT)
    assert quiet(c) == ["a", "b", "c"]
    assert all(node.applied_index >= res.index for node in c.nodes.values())


def test_follower_proposal_and_read_do_not_wake_it_but_the_read_is_answered() -> None:
    c = quiet_cluster()
    assert not c.nodes["b"].propose(b"x").ok
    assert c.nodes["b"].quiesced
    c.nodes["b"].read_index(b"r1")
    c.settle()
    assert [rs.context for rs in c.stores["b"].read_states] == [b"r1"]
    c.tick_all(4 * HEARTBEAT)
    assert quiet(c) == ["a", "b", "c"]


def test_dead_leader_is_replaced_once_the_driver_reports_it_lost() -> None:
    c = quiet_cluster()
    c.crash("a")
    c.tick_all(10 * ELECTION)
    # quiet followers cannot notice by themselves: the driver must tell them
    assert all(c.nodes[n].leader_id == "a" and c.nodes[n].quiesced for n in "bc")
    for name in "bc":
        c.nodes[name].wake(leader_lost=True)
    for ticks in range(1, 3 * ELECTION):
        c.tick_all()
        if c.leaders():
            break
    assert len(c.leaders()) == 1 and ticks <= ELECTION + 2  # lease given up: one election timeout


def test_a_partitioned_quiet_leader_steps_down_and_the_majority_elects() -> None:
    c = quiet_cluster()
    c.cut |= {frozenset("ab"), frozenset("ac")}
    c.nodes["a"].wake()  # its host saw b and c fall silent
    for name in "bc":
        c.nodes[name].wake(leader_lost=True)
    c.tick_all(3 * ELECTION)
    assert c.nodes["a"].role is not Role.LEADER  # check-quorum ran again
    assert len([n for n in "bc" if c.nodes[n].role is Role.LEADER]) == 1
    c.cut.clear()
    c.tick_all(3 * ELECTION)
    assert len(c.leaders()) == 1


def test_one_woken_follower_does_not_disrupt_a_live_quiet_leader() -> None:
    """A follower woken by mistake (its host suspected a leader that is fine) asks for pre-votes:
    the leader and the other quiet follower refuse (lease), the leader wakes and heartbeats, and
    nobody's term moves."""
    c = quiet_cluster()
    term = c.nodes["a"].term
    c.nodes["b"].wake(leader_lost=True)
    c.tick_all(6 * ELECTION)
    assert c.leaders() == ["a"]
    assert {node.term for node in c.nodes.values()} == {term}
    assert quiet(c) == ["a", "b", "c"]  # and it went quiet again


def test_partitioned_quiet_follower_campaigns_and_rejoins_without_disruption() -> None:
    c = quiet_cluster()
    c.cut |= {frozenset("ac"), frozenset("bc")}
    c.nodes["c"].wake(leader_lost=True)  # its host lost a
    c.tick_all(6 * ELECTION)
    assert c.leaders() == ["a"]  # c alone cannot win; pre-vote keeps its term
    assert c.nodes["c"].role in (Role.PRE_CANDIDATE, Role.FOLLOWER)
    c.cut.clear()
    res = c.propose("a", b"after")
    assert res.ok
    c.tick_all(4 * ELECTION)
    assert c.leaders() == ["a"]
    assert c.nodes["c"].commit_index >= res.index


@pytest.mark.parametrize("kind", [MessageType.PRE_VOTE, MessageType.APPEND, MessageType.HEARTBEAT])
def test_any_other_message_wakes_a_quiet_follower(kind: MessageType) -> None:
    from raft.types import Message

    c = quiet_cluster()
    b = c.nodes["b"]
    b.step(Message(kind, "g", "c" if kind is MessageType.PRE_VOTE else "a", "b", term=b.term,
                   index=b.last_index, log_term=b.last_term, commit=b.commit_index))
    assert not b.quiesced


def test_leader_does_not_quiesce_while_a_follower_lags() -> None:
    c = quiet_cluster()
    c.crash("c")
    res = c.propose("a", b"x")
    assert res.ok
    c.tick_all(4 * ELECTION)
    assert not c.nodes["a"].quiesced  # c does not hold the whole log: keep heartbeating
    c.restart("c", ABC)
    c.tick_all(4 * ELECTION)
    assert c.leaders() == ["a"] and quiet(c) == ["a", "b", "c"]
    assert c.nodes["c"].commit_index >= res.index


def test_leader_goes_quiet_without_a_follower_the_driver_reports_down_and_catches_it_up() -> None:
    c = quiet_cluster()
    c.crash("c")
    res = c.propose("a", b"while c is down")
    assert res.ok
    c.tick_all(4 * ELECTION)
    assert not c.nodes["a"].quiesced  # c may be alive for all a knows
    c.nodes["a"].set_peers_down(frozenset("c"))
    c.tick_all(4 * HEARTBEAT)
    assert quiet(c) == ["a", "b"]  # b and a make a quorum holding the whole log
    c.restart("c", ABC)
    c.nodes["a"].set_peers_down(frozenset())
    c.nodes["a"].wake()  # the driver heard c again
    c.tick_all(4 * ELECTION)
    assert c.leaders() == ["a"] and c.nodes["c"].commit_index >= res.index
    assert quiet(c) == ["a", "b", "c"]


def test_peers_down_never_lets_a_leader_go_quiet_without_a_quorum() -> None:
    c = quiet_cluster()
    c.crash("b")
    c.crash("c")
    c.nodes["a"].wake()
    c.nodes["a"].set_peers_down(frozenset("bc"))
    c.tick_all(ELECTION - 1)
    assert not c.nodes["a"].quiesced
    c.tick_all(ELECTION)
    assert c.nodes["a"].role is not Role.LEADER  # check-quorum
