# pure-core
"""Quorum math and the membership-change scheme.

Scheme: single-server changes (Raft thesis, section 4.1). Each CONFIG entry adds, removes or
promotes exactly one member, so any majority of the old voter set overlaps any majority of the new
one. A node uses the latest CONFIG entry in its log as soon as it is *appended* (even uncommitted);
if that entry is truncated, it falls back to the previous one. The leader refuses a new change
until the previous one is committed, and until it has committed an entry of its own term (the fix
for the bug Ongaro described on raft-dev in 2015): together these keep at most one uncommitted
change in flight, which is what rules out two disjoint majorities.

Quorum functions also understand `voters_outgoing` (joint consensus: a decision needs a majority of
both sets) so that the math is ready if the scheme ever changes; single-server changes leave it
empty. Learners never count.

CONFIG entry data is the change plus the resulting membership, JSON-encoded, so a node can take
its membership from the latest CONFIG entry alone.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping

from raft.types import ConfigChange, ConfigChangeType, Membership, NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n_voters: int) -> int:
    """Smallest number of voters that is a majority of n_voters (1 for an empty set: vacuous)."""
    return n_voters // 2 + 1


def _committed_in(voters: frozenset[NodeId], match: Mapping[NodeId, int]) -> int:
    if not voters:
        return 2**63  # an empty set agrees to anything (joint math with no outgoing set)
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(voters)) - 1]


def committed_index(m: Membership, match: Mapping[NodeId, int]) -> int:
    """Highest index replicated on a quorum, given each voter's match index (absent = 0)."""
    if not m.voters and not m.voters_outgoing:
        return 0
    return min(_committed_in(m.voters, match), _committed_in(m.voters_outgoing, match))


def _result_in(voters: frozenset[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def vote_result(m: Membership, votes: Mapping[NodeId, bool]) -> VoteResult:
    """Outcome of an election given the votes received so far (True granted, False rejected)."""
    if not m.voters and not m.voters_outgoing:
        return VoteResult.LOST
    a = _result_in(m.voters, votes)
    b = _result_in(m.voters_outgoing, votes)
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    if a is VoteResult.WON and b is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def has_quorum(m: Membership, nodes: Iterable[NodeId]) -> bool:
    """Whether `nodes` contain a quorum of the voters (used by check-quorum and read-index)."""
    present = set(nodes)
    return vote_result(m, {n: True for n in present}) is VoteResult.WON


def is_voter(m: Membership, node: NodeId) -> bool:
    return node in m.voters or node in m.voters_outgoing


def members(m: Membership) -> frozenset[NodeId]:
    return m.voters | m.voters_outgoing | m.learners


def apply_change(m: Membership, change: ConfigChange) -> Membership | None:
    """The membership after a single-server change, or None when the change is invalid here."""
    n = change.node_id
    t = change.type
    if t is ConfigChangeType.ADD_VOTER:
        if n in m.voters:
            return None
        return Membership(voters=m.voters | {n}, learners=m.learners - {n})
    if t is ConfigChangeType.ADD_LEARNER:
        if n in m.voters or n in m.learners:
            return None
        return Membership(voters=m.voters, learners=m.learners | {n})
    if t is ConfigChangeType.PROMOTE_LEARNER:
        if n not in m.learners:
            return None
        return Membership(voters=m.voters | {n}, learners=m.learners - {n})
    assert t is ConfigChangeType.REMOVE
    if n not in m.voters and n not in m.learners:
        return None
    if m.voters == {n}:
        return None  # never remove the last voter: the group could not make progress again
    return Membership(voters=m.voters - {n}, learners=m.learners - {n})


def encode_config(change: ConfigChange, result: Membership) -> bytes:
    """CONFIG entry data: the change and the membership it results in."""
    doc = {
        "change": change.type.value,
        "node": change.node_id,
        "voters": sorted(result.voters),
        "learners": sorted(result.learners),
        "voters_outgoing": sorted(result.voters_outgoing),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_config(data: bytes) -> tuple[ConfigChange, Membership]:
    doc = json.loads(data)
    change = ConfigChange(type=ConfigChangeType(doc["change"]), node_id=doc["node"])
    result = Membership(
        voters=frozenset(doc["voters"]),
        learners=frozenset(doc["learners"]),
        voters_outgoing=frozenset(doc.get("voters_outgoing", ())),
    )
    return change, result
