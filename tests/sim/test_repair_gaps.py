"""Directed tests for two suspected gaps of repair-needed mode (raft/repair.py), on the
deterministic scenario cluster of raft/testing/scenario.py (its safety check asserts at every step
that no term has two leaders and that every node applies the same entry at each index).

Gap 1 (five or more voters, a vote still in flight across the wipe): two leaders in one term on
the earlier core; fixed (the flag clears only once every voter answered), regression test below.
Gap 2 (an even-sized config with a membership change the wiped node's caller does not know as
committed): a committed entry overwritten on an earlier core; fixed (discovery asks majority(n)
answers of the newest config it knows with its index, which answers naming a newer committed
config replace), regression test below, plus a test that the scenario breaks the former count.
"""

from __future__ import annotations

import random

import pytest

from raft import repair
from raft.config import NodeConfig
from raft.core import RaftNode
from raft.membership import majority
from raft.repair import TERM_PROBE_CONTEXT
from raft.testing import sweep
from raft.testing.chaos import run_seed
from raft.testing.scenario import Cluster, Script, run_script
from raft.types import Entry, HardState, Membership, Message
from raft.types import MessageType as M


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


GAP2_SCRIPT = """
    config prevote=off checkquorum=off
    nodes a b c d
    elect b
    propose b x
    expect committed * 2
    add-node e
    # the config entry (index 3) reaches only e
    block b a append from-index 3
    block b c append from-index 3
    block b d append from-index 3
    change b add-voter e
    tick b 3
    expect last-index e 3
    expect last-index a 2
    # e wins term 2 under {a b c d e} with a and c; b and d stay in term 1
    partition b d | a c e
    elect e
    expect term e 2
    expect vote c e
    tick e 2
    expect committed e 4
    expect committed c 4
    # c loses its disk and is restarted with the group's first config {a b c d} (index 0); it
    # reaches only b and d (both still in term 1): two answers, one short of majority(4)
    heal
    partition a e | b c d
    wipe c
    expect repair c on
    propose b stale
    tick b 5
    tick c 30
    expect no-event c raft.repair_term_known
    expect term c 1
    expect last-index c 0
    # b commits index 3 (e acknowledged it before the partition), never its stale entry 4
    expect committed b 3
    expect committed d 3
    # a and e come back into reach: their answers name the committed config {a b c d e} (index
    # 3), which replaces {a b c d}; c learns term 2, follows e, and b's stale entry is overwritten
    heal
    tick e 3
    expect event c raft.repair_term_known
    expect term c 2
    # it votes again only once every voter answered (a's answer comes with its next probes)
    tick * 12
    expect repair c off
    expect role b follower
    expect entry b 4 term 2
    propose e y
    expect applied * x y
"""


def test_gap2_even_config_uncommitted_change() -> None:
    """An even-sized config {a b c d} with the add of e, which the wiped node's caller does not
    know as committed (the scenario harness restarts a wiped node with the group's first config,
    at index 0). Before the wipe, c helped elect e in term 2 under e's config {a b c d e} (quorum
    {e a c}) and helped e commit its noop at index 4; b and d never heard of term 2. c is wiped
    and can reach only b and d, both in term 1. Counting n - majority(n) + 1 = 2 answers of
    {a b c d}, it used to follow the stale term-1 leader b (whose appended config is
    {a b c d e}), and b "committed" `stale` at index 4 with {b c d} over e's committed noop.
    Now discovery needs majority(n) answers (3 of a, b, d), which meet every quorum of a config
    one change away: c waits, acknowledges nothing, and b cannot commit `stale`. Once a and e
    answer, naming the committed config {a b c d e} at index 3 (newer than the caller's, index
    0), c counts against that one and completes repair under e."""
    run_script(GAP2_SCRIPT, name="gap2")


def test_gap2_scenario_breaks_the_former_discovery_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario above really exercises the gap: with the former count of answers
    (n - majority(n) + 1, which covers only the config counted), b commits its stale entry over
    e's committed noop and the harness's safety check stops the run."""

    monkeypatch.setattr(repair, "answers_needed", _former)
    with pytest.raises(AssertionError, match=r"b applies .*stale.* others applied \(\d+, <EntryKind.NOOP"):
        run_script(GAP2_SCRIPT, name="gap2")


def test_gap1_caught_up_node_waits_for_every_voter_then_spends_its_vote() -> None:
    """Core level: term known from a, b, d (3 of 5) and caught up with the term-3 leader a, the
    node still refuses votes while e has not answered; e's answer (term 5: e may be the
    candidate it voted for before the wipe) is adopted with the vote spent, and only a leader of
    a later term completes repair."""
    c = RaftNode(NodeConfig(node_id="c", group="g", check_quorum=False), random.Random(1),
                 hard_state=HardState(), snapshot=None, entries=(),
                 membership=Membership(voters=frozenset("abcde")), repair_needed=True)

    def out() -> list[Message]:
        rd = c.ready()
        c.advance(rd)
        return list(rd.messages)

    out()
    for src in "abd":
        c.step(Message(M.PRE_VOTE_RESP, "g", src, "c", term=3, reject=True, context=TERM_PROBE_CONTEXT))
    out()
    entries = (Entry(term=3, index=1), Entry(term=3, index=2))
    c.step(Message(M.HEARTBEAT, "g", "a", "c", term=3, commit=0, index=2))
    c.step(Message(M.APPEND, "g", "a", "c", term=3, index=0, log_term=0, entries=entries, commit=2))
    out()
    assert c.repair_needed and c.last_index == 2  # caught up, but e never answered
    c.step(Message(M.VOTE, "g", "d", "c", term=4, index=2, log_term=3))
    assert [m.reject for m in out() if m.type is M.VOTE_RESP] == [True]
    c.step(Message(M.PRE_VOTE_RESP, "g", "e", "c", term=5, reject=True, context=TERM_PROBE_CONTEXT))
    out()
    assert c.term == 5 and c.vote == "c" and c.repair_needed
    c.step(Message(M.VOTE, "g", "b", "c", term=5, index=2, log_term=3))
    assert [m.reject for m in out() if m.type is M.VOTE_RESP] == [True]
    c.step(Message(M.HEARTBEAT, "g", "b", "c", term=6, commit=2, index=2))
    c.step(Message(M.APPEND, "g", "b", "c", term=6, index=2, log_term=3, entries=(), commit=2))
    out()
    assert not c.repair_needed and c.term == 6 and c.vote == "c"  # spent in 6 too (it follows b)


# ---- the class of gap 2 over many seeds (raft/testing/chaos.py: membership_round) -------------

MEMBERSHIP_SEEDS = range(300)
# Seeds on which the membership schedule breaks safety with the former count (found by running
# it with `former` below over seeds 0..199): the schedule does reach the class.
FORMER_COUNT_BREAKS = (32, 49, 64, 172)


def _former(voters: frozenset[str], me: str) -> int:
    n = len(voters | {me})
    return min(n - majority(n) + 1, n - 1)


def test_membership_sweep_wiped_node_pending_change_even_config() -> None:
    """Seeded rounds of gap 2's shape on the cluster simulator (4 voters; a change left on a
    minority that may elect a leader under it; a node of that side wiped and restarted, told the
    committed config before the latest, where only the old leader's side is in reach; check-quorum
    and pre-vote vary by seed). Every invariant holds after every step, and after healing every
    member (the repaired one too) catches up. Replay: `python -m raft.testing.sweep --membership
    --seeds 1 --start SEED`."""
    seeds = [s for s in MEMBERSHIP_SEEDS if (s, False) not in sweep.KNOWN_MEMBERSHIP_FAILING]
    failures = [r for r in (run_seed(s, sweep.DEFAULT_STEPS, membership=True) for s in seeds) if not r.ok]
    assert not failures, "\n".join(sweep.describe(r, sweep.DEFAULT_STEPS, " --membership") for r in failures)


def test_membership_sweep_stale_repair() -> None:
    """The same schedule where damaged stores hand the core their whole past log."""
    seeds = [s for s in range(20000, 20150) if (s, True) not in sweep.KNOWN_MEMBERSHIP_FAILING]
    failures = [r for r in (run_seed(s, sweep.DEFAULT_STEPS, stale_repair=True, membership=True) for s in seeds)
                if not r.ok]
    assert not failures, "\n".join(sweep.describe(r, sweep.DEFAULT_STEPS, " --membership --stale-repair")
                                   for r in failures)


def test_membership_sweep_breaks_the_former_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule really reaches the class: with the former count, these seeds break a safety
    invariant (a committed entry changed, or a leader without one)."""
    monkeypatch.setattr(repair, "answers_needed", _former)
    for seed in FORMER_COUNT_BREAKS:
        r = run_seed(seed, sweep.DEFAULT_STEPS, membership=True, tail=0)
        assert r.invariant is not None and r.invariant != "liveness", (seed, r.violation)


@pytest.mark.parametrize(
    "seed,stale_repair",
    [pytest.param(*key, marks=pytest.mark.xfail(strict=True, reason=why))
     for key, why in sorted(sweep.KNOWN_MEMBERSHIP_FAILING.items())],
)
def test_known_membership_seed(seed: int, stale_repair: bool) -> None:
    """Open core bugs the membership schedule found (sweep.KNOWN_MEMBERSHIP_FAILING): strict
    xfails, so a fix must move them out of that list."""
    r = run_seed(seed, sweep.DEFAULT_STEPS, stale_repair=stale_repair, membership=True)
    flags = " --membership" + (" --stale-repair" if stale_repair else "")
    assert r.ok, sweep.describe(r, sweep.DEFAULT_STEPS, flags)
