# pure-core
"""Bringing back a node that lost its disk (or part of it) without breaking Raft's promises.

A wiped node forgot its term, its vote, and entries it acknowledged. Two hazards follow:
- it may vote twice in a term (it voted before the wipe, then again), electing two leaders;
- it may help a stale leader, or a candidate lacking an entry it had helped commit, to a quorum
  (its acknowledgement or vote stood in for the copy it lost).

So a node constructed with `repair_needed=True` goes through two phases before it votes again:

1. Term discovery. It sends a term probe (a PRE_VOTE carrying TERM_PROBE_CONTEXT; it changes
   nobody's state, and the answer carries the responder's term) to every voter, and adopts the
   highest term it hears. It ignores appends, heartbeats and snapshots until majority(n)
   *other* voters of the config it counts have answered (n counting itself, capped at n - 1).
   That set meets every quorum of that config and of any config one single-server change away
   from it, so an uncommitted change it may have acted under is covered too (at most
   n - 1 - majority(n) of our n - 1 others stay unheard; a quorum containing us of the config
   with one voter more holds at least majority(n + 1) - 2 of them, one of the config with one
   voter fewer majority(n - 1) - 1, and both exceed that for n >= 3; with n <= 2 a wiped
   member is half the config, and a quorum {us, added voter} meets no answer). For an odd n that
   is n - majority(n) + 1, which covers the config itself; an even n needs one more answer
   (tests/sim/test_repair_gaps.py, gap 2: {a b c d} with e being added, a quorum {e a c} of
   the next config held a term that neither of 2 answers b, d knew, and the node helped the
   stale leader b commit over a committed entry). Every leader it acknowledged before the wipe
   was elected by such a quorum, so its term is then at least the term of any leader it
   helped. It never votes in that term (its vote is recorded as spent), only in later ones. A
   node that is itself still discovering does not answer probes (its term proves nothing).
   Only answers count, not other messages: a delayed message may carry a term older than the
   wipe.
   Votes are different: a vote it granted before the wipe may belong to an election whose
   quorum had not formed yet (the candidate's other requests still in flight), so no discovery
   quorum need know that term (tests/sim/test_repair_gaps.py, five voters: two leaders in one
   term). The candidate itself does: it persisted its term before asking, and terms never go
   down. So the flag is cleared (and voting resumes) only once *every* other voter it probes
   (of its latest config and of the one counted) has answered a probe sent after the wipe;
   probes go on, and answers are still adopted, until then. Its term is then at least any term
   it voted in, and its vote in the current term is spent. The price: a voter that stays down
   keeps a wiped node from voting (not from catching up) until it answers.
   Which voters count: the config counted must be at least as new as any config committed
   before the wipe (then every config the node acted under is it, an older one, or one change
   away from it: an older config C was superseded by a committed one, committed in a term at
   least that of any leader still using C, by a quorum of its own voters). Candidates, each
   with the log index it holds from: the newest config in our own log (or snapshot), the
   caller's config (the constructor's `membership` at `membership_index`: the latest committed
   config the caller knows; index 0 for a group's first config), and the newest committed
   config any answer names (an answer carries the responder's newest committed config and its
   index). The one with the highest index counts: a committed config named by an answer and
   newer than ours replaces it, which also keeps discovery live when members were removed since
   (they would never answer). A caller that cannot name the index (None) gets its config counted
   as it is, never replaced.
   What that assumes of the caller: its config lags the group's committed configs by at most
   one change (a change it does not yet know as committed is the "one change away"); a caller
   two committed changes behind, with a third change pending, is not covered.
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
    """Other voters that must answer a term probe so that every quorum of `voters`, and of any
    config one single-server change away, has a member among them (counting `me` as a voter,
    as it may have been one before the wipe)."""
    n = len(voters | {me})
    return min(majority(n), n - 1)


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
        its position is unknown), unless an answer named a committed config held from a later
        index."""
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
