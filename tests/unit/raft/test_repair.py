"""The repair protocol of a node that lost its disk (raft/repair.py, RaftNode with
repair_needed=True): term discovery, the spent vote, catch-up, and what it refuses meanwhile."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raft import membership as ms
from raft.config import NodeConfig, Role
from raft.core import TRANSFER_CONTEXT, RaftNode
from raft.repair import TERM_PROBE_CONTEXT, answers_needed
from raft.types import Entry, HardState, Membership, Message, MessageType

M = MessageType
ABC = Membership(voters=frozenset("abc"))


def wiped(name: str = "c", membership: Membership = ABC) -> RaftNode:
    return RaftNode(NodeConfig(node_id=name, group="g"), random.Random(1), hard_state=HardState(),
                    snapshot=None, entries=(), membership=membership, repair_needed=True)


def out(n: RaftNode) -> list[Message]:
    rd = n.ready()
    n.advance(rd)
    return list(rd.messages)


@settings(deadline=None)
@given(st.frozensets(st.sampled_from("abcdefg"), min_size=1))
def test_probe_answers_meet_every_quorum_containing_me(voters) -> None:
    """Any set of `answers_needed` other voters intersects every quorum that contains me, minus
    me: so one of them knows every term in which my vote or ack counted."""
    me = sorted(voters)[0]
    others = sorted(voters - {me})
    need = answers_needed(voters, me)
    q = ms.majority(len(voters))
    assert need <= len(others)
    if others:
        assert need + (q - 1) > len(others)


def test_probes_go_out_at_once_and_change_nobody() -> None:
    c = wiped()
    probes = out(c)
    assert sorted(m.dst for m in probes) == ["a", "b"]
    assert all(m.type is M.PRE_VOTE and m.context == TERM_PROBE_CONTEXT for m in probes)
    a = RaftNode(NodeConfig(node_id="a", group="g"), random.Random(2), hard_state=HardState(term=7, vote="b"),
                 snapshot=None, entries=(), membership=ABC)
    a.step(probes[0])
    rd = a.ready()
    assert rd.hard_state is None  # no term or vote change
    [answer] = rd.messages
    assert answer.type is M.PRE_VOTE_RESP and answer.reject and answer.term == 7


def test_term_discovery_spends_the_vote_of_the_learned_term() -> None:
    c = wiped()
    out(c)
    c.step(Message(M.PRE_VOTE_RESP, "g", "a", "c", term=5, reject=True, context=TERM_PROBE_CONTEXT))
    assert c.term == 5 and c.vote is None  # one answer is not enough with three voters
    c.step(Message(M.PRE_VOTE_RESP, "g", "b", "c", term=4, reject=True, context=TERM_PROBE_CONTEXT))
    assert c.term == 5 and c.vote == "c"
    rd = c.ready()
    assert rd.hard_state == HardState(term=5, vote="c", commit=0) and rd.must_sync
    c.advance(rd)
    # a candidate in term 5 is refused: c may have voted in term 5 before the wipe
    c.step(Message(M.VOTE, "g", "b", "c", term=5, index=9, log_term=5))
    assert out(c)[0].reject


def test_appends_are_ignored_until_the_term_is_known() -> None:
    c = wiped()
    out(c)
    c.step(Message(M.APPEND, "g", "a", "c", term=1, index=0, log_term=0,
                   entries=(Entry(term=1, index=1),), commit=1))
    msgs = out(c)
    assert c.last_index == 0
    assert [m.type for m in msgs] == [M.PRE_VOTE]  # only a probe back to the sender
    assert msgs[0].context == TERM_PROBE_CONTEXT


def test_catch_up_to_the_leaders_last_index_then_vote_again() -> None:
    c = wiped()
    out(c)
    for src in "ab":
        c.step(Message(M.PRE_VOTE_RESP, "g", src, "c", term=3, reject=True, context=TERM_PROBE_CONTEXT))
    out(c)
    # the leader's heartbeat names its last index (4) even though only 2 are committed
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=2, index=4))
    [resp] = out(c)
    assert resp.reject and resp.index == 0 and c.commit_index == 0  # nothing known to match yet
    entries = tuple(Entry(term=3, index=i) for i in (1, 2, 3))
    c.step(Message(M.APPEND, "g", "a", "c", term=3, index=0, log_term=0, entries=entries, commit=2))
    assert c.repair_needed and c.commit_index == 2
    c.step(Message(M.APPEND, "g", "a", "c", term=3, index=3, log_term=3,
                   entries=(Entry(term=3, index=4),), commit=2))
    assert not c.repair_needed
    assert "raft.repair_done" in [e.name for e in c.ready().events]
    out(c)
    # it votes again, in a later term, for an up-to-date candidate, and campaigns on timeout
    c.step(Message(M.VOTE, "g", "b", "c", term=4, index=4, log_term=3, context=TRANSFER_CONTEXT))
    assert not out(c)[0].reject and c.vote == "b"
    for _ in range(40):
        c.tick()
    assert c.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)


def test_a_repairing_node_never_campaigns() -> None:
    c = wiped()
    for _ in range(200):
        c.tick()
    assert c.role is Role.FOLLOWER and c.term == 0
    assert all(m.type is M.PRE_VOTE and m.context == TERM_PROBE_CONTEXT for m in out(c))


def test_a_node_still_discovering_its_term_does_not_answer_probes() -> None:
    """Its term is no evidence of anything: two wiped nodes must not vouch for each other."""
    b, c = wiped("b"), wiped("c")
    probe = next(m for m in out(c) if m.dst == "b")
    b.step(probe)
    assert [m for m in out(b) if m.type is M.PRE_VOTE_RESP] == []
    for src in "ac":
        b.step(Message(M.PRE_VOTE_RESP, "g", src, "b", term=2, reject=True, context=TERM_PROBE_CONTEXT))
    out(b)
    b.step(probe)
    [answer] = out(b)
    assert answer.type is M.PRE_VOTE_RESP and answer.term == 2


def _discovered(term: int = 3) -> RaftNode:
    c = wiped("c", Membership(voters=frozenset("abcde")))
    out(c)
    for src in "abd":
        c.step(Message(M.PRE_VOTE_RESP, "g", src, "c", term=term, reject=True, context=TERM_PROBE_CONTEXT))
    out(c)
    return c


def test_a_new_leader_resets_the_catch_up_target() -> None:
    """Regression (sweep.STALE_REPAIR_TARGET, storm seeds 5159 and 110635): the first leader
    heard named last index 9 (an uncommitted tail), then was deposed; the new leader's log ends
    at 3. Catching up with the new leader to its own last index completes repair."""
    c = _discovered()
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=2, index=9))
    out(c)
    c.step(Message(M.HEARTBEAT, "g", "b", "c", term=4, commit=2, index=3))
    out(c)
    entries = tuple(Entry(term=t, index=i) for t, i in ((3, 1), (3, 2), (4, 3)))
    c.step(Message(M.APPEND, "g", "b", "c", term=4, index=0, log_term=0, entries=entries, commit=2))
    assert not c.repair_needed
    assert "raft.repair_done" in [e.name for e in c.ready().events]


def test_the_target_is_not_raised_within_one_leadership() -> None:
    """A busy leader's last index moves on with every heartbeat; only its first one counts."""
    c = _discovered()
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=0, index=2))
    out(c)
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=0, index=50))
    out(c)
    entries = tuple(Entry(term=3, index=i) for i in (1, 2))
    c.step(Message(M.APPEND, "g", "a", "c", term=3, index=0, log_term=0, entries=entries, commit=0))
    assert not c.repair_needed


def test_a_match_with_another_leader_does_not_count() -> None:
    """The target names a position in one leader's log: a match with a different leader (after
    a term change, before its first heartbeat) says nothing about it."""
    c = _discovered()
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=0, index=2))
    out(c)
    entries = tuple(Entry(term=t, index=i) for t, i in ((3, 1), (4, 2)))
    c.step(Message(M.APPEND, "g", "b", "c", term=4, index=0, log_term=0, entries=entries, commit=0))
    assert c.repair_needed  # matches b's log up to 2, but the target 2 was a's
    c.step(Message(M.HEARTBEAT, "g", "b", "c", term=4, commit=0, index=2))
    assert not c.repair_needed
