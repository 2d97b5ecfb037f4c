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
from raft.transport.codec import decode_message, encode_message
from raft.types import (
    ConfigChange,
    ConfigChangeType,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

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
    # e's answer is not needed to know the term, only to vote again (raft/repair.py)
    c.step(Message(M.PRE_VOTE_RESP, "g", "e", "c", term=1, reject=True, context=TERM_PROBE_CONTEXT))
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


ABCDE = Membership(voters=frozenset("abcde"))


def _config_entry(index: int, removed: str, result: Membership) -> Entry:
    change = ConfigChange(type=ConfigChangeType.REMOVE, node_id=removed)
    return Entry(term=1, index=index, kind=EntryKind.CONFIG, data=ms.encode_config(change, result))


def _answer(src: str, term: int, dst: str = "c", config: tuple[int, Membership] | None = None) -> Message:
    snap = None if config is None else Snapshot(meta=SnapshotMeta(index=config[0], membership=config[1]))
    return Message(M.PRE_VOTE_RESP, "g", src, dst, term=term, reject=True, context=TERM_PROBE_CONTEXT,
                   snapshot=snap)


def _damaged_with_config_at_2() -> RaftNode:
    """c's log (a verified prefix) ends with a config of five voters at index 2."""
    log = [Entry(term=1, index=1), _config_entry(2, "f", ABCDE)]
    return RaftNode(NodeConfig(node_id="c", group="g"), random.Random(1), hard_state=HardState(1, None, 2),
                    snapshot=None, entries=log, membership=ABC, repair_needed=True)


def test_discovery_counts_against_a_newer_committed_config_an_answer_names() -> None:
    """Regression (sweep.STALE_DISCOVERY_CONFIG, storm seed 101107): c's own config has five
    voters, but d and e were removed since (committed at index 7) and never answer. Three
    answers of five voters would be needed; against {a, b, c} two are enough."""
    c = _damaged_with_config_at_2()
    assert sorted(m.dst for m in out(c)) == ["a", "b", "d", "e"]
    c.step(_answer("a", 4, config=(7, ABC)))
    assert c.vote is None  # one answer of {a, b, c} is not enough
    c.step(_answer("b", 4, config=(6, Membership(voters=frozenset("abcd")))))
    assert c.vote == "c" and c.term == 4  # a and b: every quorum of {a, b, c} has one of them
    assert [e.name for e in c.ready().events].count("raft.repair_term_known") == 1


def test_an_older_committed_config_named_by_an_answer_changes_nothing() -> None:
    c = _damaged_with_config_at_2()
    out(c)
    c.step(_answer("a", 4, config=(2, ABC)))  # not beyond our own config's index
    c.step(_answer("b", 4, config=(1, ABC)))
    assert c.vote is None  # still three answers of {a, b, c, d, e} needed
    c.step(_answer("d", 4))
    assert c.vote == "c"


def test_a_wiped_node_keeps_the_config_it_was_given() -> None:
    """A wiped node's config came from its caller (the latest committed one it knows) with no
    index to compare: a lagging answer naming an older config with more voters is ignored."""
    c = wiped("c", ABC)
    out(c)
    c.step(_answer("a", 2, config=(5, ABCDE)))
    c.step(_answer("b", 2, config=(5, ABCDE)))
    assert c.vote == "c"


def test_probe_answers_name_the_committed_config() -> None:
    log = [Entry(term=1, index=1), _config_entry(2, "f", ABCDE), _config_entry(3, "e", Membership(frozenset("abcd")))]
    a = RaftNode(NodeConfig(node_id="a", group="g"), random.Random(2), hard_state=HardState(1, None, 2),
                 snapshot=None, entries=log, membership=ABC)
    a.step(Message(M.PRE_VOTE, "g", "c", "a", term=0, context=TERM_PROBE_CONTEXT))
    [answer] = out(a)
    assert answer.snapshot is not None and answer.snapshot.data == b""
    assert answer.snapshot.meta.index == 2 and answer.snapshot.meta.membership == ABCDE  # index 3 is uncommitted
    assert decode_message(encode_message(answer)) == answer


@settings(deadline=None)
@given(st.frozensets(st.sampled_from("abcdefg"), min_size=3), st.data())
def test_probe_answers_meet_every_quorum_one_change_away(voters, data) -> None:
    """Any `answers_needed` other voters meet every quorum of the config counted and of every
    config one single-server change away (an add, or a removal): an uncommitted change the
    wiped node may have acted under (gap 2, tests/sim/test_repair_gaps.py). Three voters or
    more: with two, {me, x} is a quorum of the config adding x, and no answer of the other
    voter meets it (a wiped member of two is half the config; see raft/repair.py)."""
    me = data.draw(st.sampled_from(sorted(voters)))
    others = sorted(voters - {me})
    heard = frozenset(data.draw(st.permutations(others))[: answers_needed(voters, me)])
    nearby = [voters, voters | {"x"}] + [voters - {y} for y in sorted(voters) if voters - {y} != {me}]
    for config in nearby:
        # a quorum avoiding every answer exists iff the unheard members (us included) are one
        assert len(config - heard) < ms.majority(len(config)), (sorted(config), sorted(heard))


ABCD = Membership(voters=frozenset("abcd"))


def _given(membership: Membership, index: int | None, entries: tuple[Entry, ...] = ()) -> RaftNode:
    hs = HardState(1, None, entries[-1].index) if entries else HardState()
    return RaftNode(NodeConfig(node_id="c", group="g"), random.Random(1), hard_state=hs, snapshot=None,
                    entries=entries, membership=membership, repair_needed=True, membership_index=index)


def test_even_config_needs_one_answer_more() -> None:
    """Four voters: two answers meet every quorum of {a, b, c, d}, not every quorum of
    {a, b, c, d, e} (e being added): b and d may both miss the term of {e, a, c}."""
    for index in (None, 0):
        c = _given(ABCD, index)
        out(c)
        c.step(_answer("b", 1))
        c.step(_answer("d", 1))
        assert c.vote is None, index
        c.step(_answer("a", 2))
        assert c.vote == "c" and c.term == 2


def test_given_config_with_an_index_is_replaced_by_a_newer_committed_one() -> None:
    """Given {a, b, c, d} at index 3, answers naming {a, b, c} committed at index 7 (d removed
    since; it never answers): two answers do."""
    c = _given(ABCD, 3)
    assert sorted(m.dst for m in out(c)) == ["a", "b", "d"]
    c.step(_answer("a", 4, config=(7, ABC)))
    assert c.vote is None
    c.step(_answer("b", 4, config=(7, ABC)))
    assert c.vote == "c" and c.term == 4


def test_given_config_is_kept_against_an_older_committed_one() -> None:
    c = _given(ABC, 7)
    out(c)
    c.step(_answer("a", 4, config=(5, ABCDE)))  # a lags: {a, b, c, d, e} was replaced at 7
    c.step(_answer("b", 4, config=(5, ABCDE)))
    assert c.vote == "c"


def test_a_given_index_newer_than_our_logs_config_wins() -> None:
    """A damaged node whose verified prefix ends with {a b c d e} at index 2, told {a, b, c} at
    index 7 by its caller: it counts against {a, b, c}, and still probes every voter of both."""
    log = (Entry(term=1, index=1), _config_entry(2, "f", ABCDE))
    c = _given(ABC, 7, log)
    assert sorted(m.dst for m in out(c)) == ["a", "b", "d", "e"]
    c.step(_answer("a", 4))
    c.step(_answer("b", 4))
    assert c.vote == "c" and c.term == 4


def test_a_repairing_node_tells_a_stale_leader_its_term_without_prevote_or_checkquorum() -> None:
    """Regression (sweep --membership seeds 1024, 2661): with pre-vote and check-quorum off, a
    node ignores a stale leader's messages and its own campaign deposes it; a repairing node
    never campaigns, so it answers with its term, or the term-1 leader would lead on and the
    node (in term 2) would never find a leader of its term to catch up from."""
    cfg = NodeConfig(node_id="c", group="g", pre_vote=False, check_quorum=False)
    c = RaftNode(cfg, random.Random(1), hard_state=HardState(), snapshot=None, entries=(), membership=ABC,
                 repair_needed=True)
    out(c)
    c.step(_answer("a", 2))
    c.step(_answer("b", 1))
    out(c)
    assert c.term == 2 and c.repair_needed
    c.step(Message(M.HEARTBEAT, "g", "b", "c", term=1, commit=0, index=3))
    [answer] = out(c)
    assert answer.type is M.APPEND_RESP and answer.reject and answer.term == 2 and answer.dst == "b"
    healthy = RaftNode(cfg, random.Random(1), hard_state=HardState(term=2), snapshot=None, entries=(), membership=ABC)
    healthy.step(Message(M.HEARTBEAT, "g", "b", "c", term=1, commit=0, index=3))
    assert out(healthy) == []  # unchanged: its own campaign will depose b
