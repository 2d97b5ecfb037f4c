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
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from meta.assignments import StreamAssignment


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
