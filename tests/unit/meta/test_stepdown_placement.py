"""Stepdown placement (meta/placement.py `stepdown_target`): nats-server's 2.11+ rules and
messages, as observed on nats-server 2.15.1 (a preferred server wins over cluster and tags; it
must be a member and not the leader; otherwise a connected non-leader member with the cluster
and every tag, in the caller's order)."""

from __future__ import annotations

from meta.assignments import ServerRecord
from meta.placement import PlacementError, stepdown_target

RECORDS = {n: ServerRecord(n, n.upper(), "c1", (f"az:{z}",)) for n, z in (("a", 1), ("b", 1), ("c", 2), ("d", 3))}
NAMES = {n: r.name for n, r in RECORDS.items()}
ALL = ["a", "b", "c", "d"]


def target(members: list[str] = ALL, connected: set[str] = set(ALL), **placement: object) -> str | PlacementError:
    return stepdown_target(members, "a", NAMES, RECORDS, connected, **placement)  # type: ignore[arg-type]


def test_preferred_by_server_name_wins_over_tags() -> None:
    assert target(preferred="C", tags=["az:9"]) == "c"
    assert target(preferred="d") == "d"  # a node id works too


def test_preferred_must_be_a_member_and_not_the_leader() -> None:
    assert target(members=["a", "b"], preferred="C") == PlacementError('preferred server "C" not known')
    assert target(preferred="A") == PlacementError('preferred server "A" is already leader')


def test_tags_and_cluster_pick_the_first_fitting_connected_non_leader() -> None:
    assert target(tags=["az:1"]) == "b"  # the leader (a) is tagged az:1 too, but it steps down
    assert target(members=["a", "d", "c"], cluster="c1") == "d"  # the caller's order
    assert target(connected={"a", "b", "d"}, tags=["az:2"]) == PlacementError("no replacement peer connected")
    assert target(tags=["az:2", "az:3"]) == PlacementError("no replacement peer connected")  # every tag
    assert target(cluster="c2") == PlacementError("no replacement peer connected")
