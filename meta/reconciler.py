# pure-core
"""The reconciler's decision: which local stream groups to start, update or stop.

How it works: after every committed meta command each server compares the committed
assignments with the stream groups it runs (`running`: group -> the config text it runs
with) and gets a list of actions back, which its shell (meta/service.py) carries out:
- `Start` a group assigned to this server that is not running (at startup this re-opens the
  existing store: the group name fixes its directory);
- `Update` a running group whose assigned config changed (its leader proposes the new config
  into the stream's own log);
- `Stop` a running group that is no longer assigned: the stream was deleted (or moved away and
  the move settled: a server leaving a group keeps its replica until `SettlePeers`) by
  a committed meta command - the only thing that may delete a stream's data (`delete=True`).
Groups on disk that no assignment names are never touched here: nothing is deleted by
heuristic. Actions come in a stable order (stops first, then by stream name).

A started replica's Raft group gets a membership and the log index it holds from
(`replica_start`). The index is a position in the *stream group's own* log, which is what a
repairing node compares it with (its log's config entries, and the committed config a term-probe
answer names: raft/repair.py), so it is never the meta-log index of the assignment: the two logs
are numbered independently, and an index above the truth could keep an old peer list counted
against a newer committed config. The membership is either the creation peers (the group's first
config, index 0) or, after a peer change, a learner-only placeholder; index 0 for it claims
nothing newer than any config the group ever committed, so the newest committed config an answer
names replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from meta.assignments import StreamAssignment
from raft.types import Membership

# The stream-group log index every membership `replica_start` hands out holds from (see above).
FIRST_CONFIG_INDEX = 0


@attrs.frozen
class Start:
    assignment: StreamAssignment


@attrs.frozen
class Update:
    assignment: StreamAssignment


@attrs.frozen
class Stop:
    group: str
    delete: bool = True


Action = Start | Update | Stop


def plan(
    assignments: Mapping[str, StreamAssignment], self_id: str, running: Mapping[str, str]
) -> list[Action]:
    mine = {sa.group: sa for sa in assignments.values() if self_id in sa.hosts()}
    actions: list[Action] = [Stop(group) for group in sorted(running) if group not in mine]
    for sa in sorted(mine.values(), key=lambda a: a.name):
        if sa.group not in running:
            actions.append(Start(sa))
        elif running[sa.group] != sa.config_text():
            actions.append(Update(sa))
    return actions


def replica_start(sa: StreamAssignment, self_id: str) -> tuple[Membership, int]:
    """The membership `self_id`'s replica of `sa` starts its group with, and the group's log index
    it holds from. A group that never changed starts with its creation peers as voters (its first
    config); a server joining after a peer change starts as a learner of itself and takes the
    membership from the log (or, repairing a wiped disk, from the committed config a term-probe
    answer names)."""
    voters = sa.initial_voters()
    if self_id in voters:
        return Membership(voters=frozenset(voters)), FIRST_CONFIG_INDEX
    return Membership(learners=frozenset({self_id})), FIRST_CONFIG_INDEX
