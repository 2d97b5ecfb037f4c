# pure-core
"""The move/scale planner: desired peers vs the stream group's membership -> the next step.

How it works: the meta group commits a stream's *desired* peer set (a scale or a move changes
it); the stream group's leader owns the actual Raft membership and walks it towards the desired
set one single-server change at a time (raft/membership.py), asking `next_step` what to do each
round. The order gives safety first:

1. every desired peer that is not a member joins as a *learner* (it votes on nothing while it
   copies the store snapshot and the log);
2. a learner is promoted only once it has caught up (its match index within `lag_max` entries
   of the leader's commit index);
3. a learner that is no longer desired (a cancelled move) is removed;
4. voters that are no longer desired leave only after every desired voter was found to hold the
   same content as the leader (`verified`: the shell compares `$JSC.DIGEST` content hashes at
   equal applied indexes); the leader never removes itself: it first hands leadership to the
   most caught-up desired voter, which then carries on;
5. otherwise the membership equals the desired set: `Done` (the shell then asks the meta leader
   to record the move as settled, and only that committed record lets old replicas delete data).

`progress` summarises a move for stream info and the CLI's progress bar.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import attrs

LAG_MAX_ENTRIES = 16


@attrs.frozen
class AddLearner:
    peer: str


@attrs.frozen
class Promote:
    peer: str


@attrs.frozen
class Remove:
    peer: str


@attrs.frozen
class TransferLeader:
    peer: str


@attrs.frozen
class Verify:
    """Compare content hashes of these voters with the leader's before removing anyone."""
    peers: tuple[str, ...]


@attrs.frozen
class Wait:
    reason: str


@attrs.frozen
class Done:
    pass


Step = AddLearner | Promote | Remove | TransferLeader | Verify | Wait | Done


@attrs.frozen
class GroupView:
    """What the stream group's leader knows about its group."""
    leader: str
    voters: frozenset[str]
    learners: frozenset[str]
    match: Mapping[str, int] = attrs.field(eq=False)  # peer -> match index (leader's progress)
    commit: int = 0


def caught_up(view: GroupView, peer: str, lag_max: int = LAG_MAX_ENTRIES) -> bool:
    if peer == view.leader:
        return True
    return view.match.get(peer, 0) + lag_max >= view.commit


def next_step(view: GroupView, desired: Collection[str], *, verified: bool = False,
              lag_max: int = LAG_MAX_ENTRIES) -> Step:
    """The next single membership change towards `desired` (see the module docstring)."""
    want = frozenset(desired)
    assert want, "a stream always keeps at least one peer"
    members = view.voters | view.learners
    joining = sorted(want - members)
    if joining:
        return AddLearner(joining[0])
    learners = sorted(view.learners)
    for peer in learners:
        if peer in want and caught_up(view, peer, lag_max):
            return Promote(peer)
    stale_learners = [p for p in learners if p not in want]
    if stale_learners:
        return Remove(stale_learners[0])
    if any(p in want for p in learners):
        return Wait("catching up")
    leaving = sorted(view.voters - want)
    if not leaving:
        return Done()
    if not verified:
        return Verify(tuple(sorted(want & view.voters)))
    if view.leader in leaving:
        return TransferLeader(_best_successor(view, want))
    return Remove(leaving[0])


def _best_successor(view: GroupView, want: frozenset[str]) -> str:
    candidates = sorted(want & view.voters)
    return max(candidates, key=lambda p: view.match.get(p, -1))


@attrs.frozen
class Progress:
    """How far a move is: desired peers that are caught-up voters, out of all desired peers."""
    done: int
    total: int
    leaving: tuple[str, ...]

    @property
    def settled(self) -> bool:
        return self.done == self.total and not self.leaving


def progress(view: GroupView, desired: Collection[str], lag_max: int = LAG_MAX_ENTRIES) -> Progress:
    want = sorted(set(desired))
    done = sum(1 for p in want if p in view.voters and caught_up(view, p, lag_max))
    leaving = tuple(sorted((view.voters | view.learners) - set(want)))
    return Progress(done, len(want), leaving)


def keep_and_add(current: Collection[str], qualified: Collection[str], replicas: int,
                 ranked_new: Collection[str]) -> tuple[str, ...] | None:
    """The new desired peer set for a scale or move: current peers that still qualify are kept
    (in `current`'s order, which the caller ranks), topped up from `ranked_new`; None when there
    are not enough."""
    keep = [p for p in current if p in set(qualified)][:replicas]
    extra = [p for p in ranked_new if p not in keep][:replicas - len(keep)]
    peers = keep + extra
    return tuple(sorted(peers)) if len(peers) == replicas else None
