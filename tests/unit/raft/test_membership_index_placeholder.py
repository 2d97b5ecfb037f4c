"""A repairing node handed a config that names no voter (a stream replica restarted after a peer
change gets a learner-only placeholder: meta/reconciler.py replica_start) at an index.

Counted as it is, such a config would need no answer at all (`answers_needed` counts the node
itself as the only voter): its term would be "known" at the first probe round, before anyone
answered, and it would then follow any leader, a stale one too, over quorums it helped form
before the wipe (raft/repair.py). Given with an index, it waits until an answer names a committed
config (which replaces the placeholder) and counts that config's answers.
"""

from __future__ import annotations

import random

from raft.config import NodeConfig
from raft.core import RaftNode
from raft.repair import TERM_PROBE_CONTEXT
from raft.types import HardState, Membership, Message, Snapshot, SnapshotMeta
from raft.types import MessageType as M

ELECTION_TICKS = 10
PLACEHOLDER = Membership(learners=frozenset({"a"}))
ABD = Membership(voters=frozenset("abd"))


def placeholder_node(index: int | None) -> RaftNode:
    return RaftNode(NodeConfig("a", "g", election_ticks=ELECTION_TICKS, heartbeat_ticks=2), random.Random(1),
                    hard_state=HardState(), snapshot=None, entries=(), membership=PLACEHOLDER,
                    repair_needed=True, membership_index=index)


def answer(src: str, term: int, config: tuple[int, Membership] | None) -> Message:
    snap = None if config is None else Snapshot(meta=SnapshotMeta(index=config[0], membership=config[1]))
    return Message(M.PRE_VOTE_RESP, "g", src, "a", term=term, reject=True, context=TERM_PROBE_CONTEXT, snapshot=snap)


def events(n: RaftNode) -> list[str]:
    return [e.name for e in n.ready().events]


def test_placeholder_with_an_index_waits_for_a_committed_config_then_counts_it() -> None:
    n = placeholder_node(0)
    for _ in range(3 * ELECTION_TICKS):  # probe rounds with nobody answering
        n.tick()
    assert "raft.repair_term_known" not in events(n)
    n.step(answer("b", 4, None))  # a responder whose group never committed a config names none
    assert "raft.repair_term_known" not in events(n)
    n.step(answer("b", 4, (7, ABD)))  # replaces the placeholder: 2 answers of {b, d} needed
    assert "raft.repair_term_known" not in events(n) and n.term == 4
    n.step(answer("d", 5, (7, ABD)))
    assert "raft.repair_term_known" in events(n)
    assert n.term == 5 and n.vote == "a" and n.repair_needed  # its vote in 5 is spent


def test_placeholder_without_an_index_is_counted_as_it_is() -> None:
    """Unchanged for callers that name no index (nothing could ever replace the config)."""
    n = placeholder_node(None)
    for _ in range(ELECTION_TICKS):
        n.tick()
    assert "raft.repair_term_known" in events(n)
