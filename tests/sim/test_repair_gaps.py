"""Directed tests for two suspected gaps of repair-needed mode (raft/repair.py), on the
deterministic scenario cluster of raft/testing/scenario.py (its safety check asserts at every step
that no term has two leaders and that every node applies the same entry at each index).

Gap 1 (five or more voters, a vote still in flight across the wipe) and gap 2 (an even-sized
config with an uncommitted membership change): see each test's docstring for the exact sequence
and for the mechanism that now prevents the violation.
"""

from __future__ import annotations

from raft.testing.scenario import Cluster, Script
from raft.types import Message


def _stash(s: Script, *nodes: str) -> list[Message]:
    """Take every queued message from or to `nodes` out of the network (kept in flight)."""
    c = s.cluster
    held = [m for m in c.queue if m.src in nodes or m.dst in nodes]
    c.queue = [m for m in c.queue if not (m.src in nodes or m.dst in nodes)]
    return held


def test_gap1_vote_in_flight_across_wipe_five_voters() -> None:
    """c grants b's VOTE for term 2 and is wiped before that vote (or b's other requests) has
    done anything: only b and c know term 2. c's term discovery hears a, d, e (3 answers, the
    n - majority + 1 the discovery quorum asks of 5 voters) who are all still in term 1, and
    catches up from the term-1 leader a. Then b's requests are delivered: b wins term 2 with
    {b, c (pre-wipe vote), a}. If c could vote again in term 2, d would win term 2 with
    {d, e, c}: two leaders in term 2.

    Prevented because clearing the repair flag (and so voting again) also needs a term-probe
    answer from every other voter: a candidate c voted for is a voter, it persisted its term
    before asking for the vote and terms never decrease, so its answer to a probe sent after the
    wipe carries a term at least that of the vote, and c treats its vote in the highest term it
    heard as spent. Catch-up (acknowledging a leader's entries) still needs only the smaller
    discovery quorum: an acknowledgement only matters under a leader, whose election quorum
    formed before the wipe and so meets the discovery quorum."""
    s = Script(cluster=Cluster(seed=1))
    s.run(
        """
        config prevote=off checkquorum=off
        nodes a b c d e
        elect a
        propose a x
        expect committed * 2
        hold
        partition b | d e
        campaign b
        expect term b 2
        deliver-one b c vote
        expect vote c b
        expect term c 2
        """
    )
    in_flight = _stash(s, "b")  # c's granted vote and b's request to a: not delivered yet
    assert {(m.src, m.dst, m.type.value) for m in in_flight} >= {("c", "b", "vote_resp"), ("b", "a", "vote")}
    s.run(
        """
        wipe c
        isolate b
        auto
        expect event c raft.repair_term_known
        expect term c 1
        tick a 3
        expect last-index c 2
        """
    )
    s.run("heal\npartition a b | d e\nhold\n")
    s.cluster.queue.extend(in_flight)
    s.run(
        """
        deliver-one c b vote_resp
        deliver-one b a vote
        deliver-one a b vote_resp
        expect role b leader
        expect term b 2
        partition a b | c d e
        auto
        campaign d
        tick d 30
        expect repair c on
        expect role d candidate
        """
    )
    assert s.cluster.leader_of_term.get(2) == "b"
    assert s.cluster.nodes["c"].vote != "d"
    # once b is in reach, c hears its term, follows a leader of a later term and votes again
    s.run(
        """
        heal
        tick * 60
        expect repair c off
        expect event c raft.repair_done
        propose @ y
        expect applied * x y
        """
    )
    assert s.cluster.nodes["c"].term > 2
