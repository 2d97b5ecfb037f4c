"""Quorum math and the single-server change scheme (raft/membership.py), by property."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from raft import membership as ms
from raft.types import ConfigChange, ConfigChangeType, Membership

NAMES = "abcdefg"
node_sets = st.frozensets(st.sampled_from(NAMES), min_size=1, max_size=7)


def majorities(voters: frozenset[str]) -> list[frozenset[str]]:
    need = ms.majority(len(voters))
    return [frozenset(c) for n in range(need, len(voters) + 1) for c in itertools.combinations(sorted(voters), n)]


@settings(deadline=None)
@given(node_sets, st.dictionaries(st.sampled_from(NAMES), st.integers(0, 20)))
def test_committed_index_is_the_highest_index_a_majority_holds(voters, match) -> None:
    m = Membership(voters=voters)
    got = ms.committed_index(m, match)
    holders = [v for v in voters if match.get(v, 0) >= got]
    assert len(holders) >= ms.majority(len(voters))
    above = [v for v in voters if match.get(v, 0) >= got + 1]
    assert len(above) < ms.majority(len(voters))


@settings(deadline=None)
@given(node_sets, node_sets, st.dictionaries(st.sampled_from(NAMES), st.integers(0, 20)))
def test_joint_commit_needs_both_majorities(new, old, match) -> None:
    m = Membership(voters=new, voters_outgoing=old)
    got = ms.committed_index(m, match)
    assert got == min(ms.committed_index(Membership(voters=new), match),
                      ms.committed_index(Membership(voters=old), match))


@settings(deadline=None)
@given(node_sets, st.dictionaries(st.sampled_from(NAMES), st.booleans()))
def test_vote_result_counts_only_voters(voters, votes) -> None:
    m = Membership(voters=voters, learners=frozenset(NAMES) - voters)
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    need = ms.majority(len(voters))
    result = ms.vote_result(m, votes)
    if granted >= need:
        assert result is ms.VoteResult.WON
    elif len(voters) - rejected < need:
        assert result is ms.VoteResult.LOST
    else:
        assert result is ms.VoteResult.PENDING
    assert ms.has_quorum(m, [n for n, g in votes.items() if g]) == (granted >= need)


@settings(max_examples=100, deadline=None)
@given(node_sets, st.sampled_from(list(ConfigChangeType)), st.sampled_from(NAMES))
def test_single_server_change_keeps_majorities_overlapping(voters, kind, node) -> None:
    """The safety argument of the scheme: every majority of the old voters intersects every
    majority of the new voters, so the two configs can never elect two leaders in one term."""
    old = Membership(voters=voters)
    new = ms.apply_change(old, ConfigChange(type=kind, node_id=node))
    if new is None:
        return
    assert len(new.voters ^ old.voters) <= 1
    assert new.voters, "the last voter is never removed"
    for a in majorities(old.voters):
        for b in majorities(new.voters):
            assert a & b, (old, new, a, b)


def test_two_step_change_can_give_disjoint_majorities() -> None:
    """Why a second change must wait: two changes away, majorities may be disjoint."""
    old = frozenset("abc")
    new = frozenset("abcde")
    assert any(not (a & b) for a in majorities(old) for b in majorities(new))


@settings(deadline=None)
@given(node_sets, st.frozensets(st.sampled_from(NAMES)), st.sampled_from(list(ConfigChangeType)),
       st.sampled_from(NAMES))
def test_config_encoding_round_trips(voters, learners, kind, node) -> None:
    m = Membership(voters=voters, learners=learners - voters)
    change = ConfigChange(type=kind, node_id=node)
    assert ms.decode_config(ms.encode_config(change, m)) == (change, m)


def test_invalid_changes_are_refused() -> None:
    m = Membership(voters=frozenset("ab"), learners=frozenset("c"))
    T = ConfigChangeType
    assert ms.apply_change(m, ConfigChange(T.ADD_VOTER, "a")) is None
    assert ms.apply_change(m, ConfigChange(T.ADD_LEARNER, "c")) is None
    assert ms.apply_change(m, ConfigChange(T.PROMOTE_LEARNER, "a")) is None
    assert ms.apply_change(m, ConfigChange(T.REMOVE, "z")) is None
    assert ms.apply_change(Membership(voters=frozenset("a")), ConfigChange(T.REMOVE, "a")) is None
    promoted = ms.apply_change(m, ConfigChange(T.PROMOTE_LEARNER, "c"))
    assert promoted == Membership(voters=frozenset("abc"))
    assert ms.apply_change(m, ConfigChange(T.REMOVE, "c")) == Membership(voters=frozenset("ab"))
