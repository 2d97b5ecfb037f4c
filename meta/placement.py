# pure-core
"""Placement: which servers host a new stream's replicas.

How it works: the candidates are the meta group's voters. A stream's `placement` may name a
cluster and tags; a candidate qualifies when its registered record (RegisterServer) has that
cluster name and carries every tag (a server that has not registered yet only qualifies when
nothing is asked for). Among the qualified, the least loaded (fewest stream replicas) win; ties
break by a hash of (stream name, server) so different streams spread over different servers
with no randomness, the same on every run. Offline servers (as the caller knows it) go last.
Too few qualified servers is an error the API reports as "insufficient resources".

`stepdown_target` picks the next leader for a stepdown request's `placement` (stream or meta
group), with nats-server's (2.11+) rules and messages: `preferred` names one member (it wins
over cluster and tags); otherwise the first connected member other than the leader whose record
has the cluster and every tag, in the caller's order (most caught up first).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence

import attrs

from meta.assignments import ServerRecord


@attrs.frozen
class PlacementError:
    reason: str


def place(
    stream: str,
    replicas: int,
    candidates: Collection[str],
    records: Mapping[str, ServerRecord],
    load: Mapping[str, int],
    *,
    cluster: str = "",
    tags: Collection[str] = (),
    offline: Collection[str] = (),
) -> tuple[str, ...] | PlacementError:
    """Pick `replicas` node ids for `stream` (see the module docstring)."""
    if replicas < 1:
        return PlacementError("replicas must be at least 1")
    fit = [n for n in candidates if _qualifies(records.get(n), cluster, tags)]
    if len(fit) < replicas:
        return PlacementError(f"need {replicas} peers, {len(fit)} qualify")

    def rank(node: str) -> tuple[int, int, int, str]:
        tiebreak = zlib.crc32(f"{stream}\x00{node}".encode())
        return (node in offline, load.get(node, 0), tiebreak, node)

    return tuple(sorted(fit, key=rank)[:replicas])


def qualified(candidates: Collection[str], records: Mapping[str, ServerRecord], *,
              cluster: str = "", tags: Collection[str] = ()) -> list[str]:
    """The candidates whose registered cluster and tags satisfy a placement (sorted)."""
    return sorted(n for n in candidates if _qualifies(records.get(n), cluster, tags))


def _qualifies(record: ServerRecord | None, cluster: str, tags: Collection[str]) -> bool:
    if record is None:
        return not cluster and not tags
    if cluster and record.cluster != cluster:
        return False
    return set(tags) <= set(record.tags)


def stepdown_target(
    members: Sequence[str],
    leader: str,
    names: Mapping[str, str],
    records: Mapping[str, ServerRecord],
    connected: Collection[str],
    *,
    preferred: str = "",
    cluster: str = "",
    tags: Collection[str] = (),
) -> str | PlacementError:
    """The member to hand leadership to (see the module docstring); `names` maps node ids to
    server names, `members` is in order of preference."""
    if preferred:
        found = next((m for m in members if names.get(m) == preferred or m == preferred), None)
        if found is None:
            return PlacementError(f'preferred server "{preferred}" not known')
        if found == leader:
            return PlacementError(f'preferred server "{preferred}" is already leader')
        return found
    for member in members:
        if member != leader and member in connected and _qualifies(records.get(member), cluster, tags):
            return member
    return PlacementError("no replacement peer connected")
