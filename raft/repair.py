# pure-core
"""Bringing back a node that lost its disk (or part of it) without breaking Raft's promises.

A wiped node forgot its term, its vote, and entries it acknowledged. Two hazards follow:
- it may vote twice in a term (it voted before the wipe, then again), electing two leaders;
- it may help a stale leader, or a candidate lacking an entry it had helped commit, to a quorum
  (its acknowledgement or vote stood in for the copy it lost).

So a node constructed with `repair_needed=True` goes through two phases before it votes again:

1. Term discovery. It sends a term probe (a PRE_VOTE carrying TERM_PROBE_CONTEXT; it changes
   nobody's state, and the answer carries the responder's term) to every voter, and adopts the
   highest term it hears. It ignores appends, heartbeats and snapshots until enough *other*
   voters have answered that every quorum it could have been part of has a member among them
   (n - majority(n) + 1 of them): then its term is at least the term of any leader it helped
   (that leader's election quorum formed before the wipe). It never votes in that term (its
   vote is recorded as spent), only in later ones. A node that is itself still discovering does
   not answer probes (its term proves nothing). Only answers count, not other messages: a
   delayed message may carry a term older than the wipe.
   Known open gap (tests/sim/test_repair_gaps.py::test_gap2_even_config_uncommitted_change,
   strict xfail): that count covers the quorums of the config counted, not those of a config one
   change away that it may have acted under. With an even n (say {a b c d} and e being added)
   a quorum {e a c} of the next config can hold a term that neither of the 2 answers (b, d)
   knows, and the node then helps the stale leader b commit over a committed entry. Asking for
   majority(n) answers closes it but, counted against a constructor config that still names a
   removed member, never completes (sweep seed 905: repair-needed forever).
   Votes are different: a vote it granted before the wipe may belong to an election whose
   quorum had not formed yet (the candidate's other requests still in flight), so no discovery
   quorum need know that term (tests/sim/test_repair_gaps.py, five voters: two leaders in one
   term). The candidate itself does: it persisted its term before asking, and terms never go
   down. So the flag is cleared (and voting resumes) only once *every* other voter it probes
   (of its latest config and of the one counted) has answered a probe sent after the wipe;
   probes go on, and answers are still adopted, until then. Its term is then at least any term
   it voted in, and its vote in the current term is spent. The price: a voter that stays down
   keeps a wiped node from voting (not from catching up) until it answers.
   Which voters count: an answer also names the responder's newest committed config and the
   index it holds from. When that index is beyond the newest config in our own log (or
   snapshot), our config is out of date (members may have been removed since, and would never
   answer), so answers are counted against the newest such committed config instead. That is
   sound: a config committed after our config was superseded was committed in a term at least
   that of any leader using an older one, by a quorum of its own voters, so a quorum of it holds
   a term at least any in which we acted under an older config. A node whose config came from
   its constructor (a wiped disk: the caller passes the latest committed config it knows, with no
   index) keeps counting against that one.
2. Catch-up. It replicates normally, and records as its target the last index named by the
   heartbeat of the leader it follows (any leader of a term at least the discovered one holds
   every entry committed with our help: its election or its own commits needed a quorum that
   did not count our lost copy). Once its log matches *that* leader's up to there, it holds
   everything it may have helped commit; it clears the flag, votes and campaigns again, and emits
   "raft.repair_done". The target belongs to one (term, leader): when we follow another leader
   (a new term, or a leader first heard in this term) it is taken again from that leader's next
   heartbeat, and only a match with the leader it came from counts. Otherwise a target from a
   leader deposed with an uncommitted tail could stay out of reach forever on an idle cluster.
   Within one leadership it is never raised, so a steady stream of writes cannot outrun it.
   Catching up needs only the discovery quorum; clearing the flag also needs every voter's
   answer (above).

While repairing it never grants a vote and never campaigns.
"""

from __future__ import annotations

import attrs

from raft.membership import majority

TERM_PROBE_CONTEXT = b"raft.term_probe"


def answers_needed(voters: frozenset[str], me: str) -> int:
    """Other voters that must answer a term probe so that every quorum containing `me` has
    a member among them (counting `me` as a voter, as it may have been one before the wipe)."""
    n = len(voters | {me})
    return min(n - majority(n) + 1, n - 1)


@attrs.define
class Repair:
    active: bool
    heard: set[str] = attrs.field(factory=set)
    term_known: bool = False
    target: int | None = None  # last index named by the leader below, after term discovery
    target_of: tuple[int, str] | None = None  # (term, leader) whose log the target refers to
    probe_elapsed: int = 0
    reported: tuple[int, frozenset[str]] | None = None  # newest committed config answers named

    def hear(self, node: str, voters: frozenset[str], me: str) -> bool:
        """`node` answered a term probe; True when the answers of `voters` (those that count,
        see `counting_voters`) complete term discovery."""
        if not self.active:
            return False
        if node != me:
            self.heard.add(node)
        if self.term_known:
            return False
        if len(self.heard & (voters - {me})) >= answers_needed(voters, me):
            self.term_known = True
            return True
        return False

    def learn_config(self, index: int, voters: frozenset[str]) -> None:
        """An answer named the responder's newest committed config, held from `index`."""
        if self.active and not self.term_known and (self.reported is None or index > self.reported[0]):
            self.reported = (index, voters)

    def counting_voters(self, own: frozenset[str], own_index: int | None) -> frozenset[str]:
        """Whose answers count: our own config's voters (`own`, held from `own_index`; None when
        it came from the constructor), unless an answer named a committed config held from a
        later index."""
        if self.reported is not None and own_index is not None and self.reported[0] > own_index:
            return self.reported[1]
        return own

    def heard_all(self, voters: frozenset[str], me: str) -> bool:
        """Every other voter of `voters` answered a probe sent after the wipe (needed to vote)."""
        return voters - {me} <= self.heard

    def wants_probe(self, node: str) -> bool:
        """A message arrived from `node`: probe it at once if we still need its answer (a
        message's own term may be stale, so only a probe answer counts)."""
        return self.active and node not in self.heard

    def leader_last_index(self, index: int, term: int, leader: str) -> None:
        """A heartbeat of `leader` (of `term`) named its last index: the target, unless one was
        already taken from this same leadership."""
        if self.active and self.term_known and self.target_of != (term, leader):
            self.target = index
            self.target_of = (term, leader)

    def done(
        self, leader_match: int, term: int, leader: str | None, voters: frozenset[str], me: str
    ) -> bool:
        """Whether our log, which matches `leader`'s (of `term`) up to `leader_match`, now holds
        everything up to the target taken from that same leader, and every other voter of
        `voters` has answered (so our term is at least any term we voted in)."""
        return (
            self.active
            and self.heard_all(voters, me)
            and self.target is not None
            and self.target_of == (term, leader)
            and leader_match >= self.target
        )

    def probe_due(self, interval_ticks: int) -> bool:
        """Tick: whether to send term probes again (until the flag clears: see `heard_all`)."""
        if not self.active:
            return False
        self.probe_elapsed += 1
        if self.probe_elapsed >= interval_ticks:
            self.probe_elapsed = 0
            return True
        return False
