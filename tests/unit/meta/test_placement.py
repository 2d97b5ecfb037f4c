"""Placement: distinct peers, least loaded first, cluster and tags honoured, deterministic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meta.assignments import ServerRecord
from meta.placement import PlacementError, place

NODES = ["n1", "n2", "n3", "n4", "n5"]
RECORDS = {
    "n1": ServerRecord("n1", "one", "east", ("ssd",)),
    "n2": ServerRecord("n2", "two", "east", ("ssd", "big")),
    "n3": ServerRecord("n3", "three", "west", ()),
    "n4": ServerRecord("n4", "four", "east", ()),
}  # n5 has not registered


def test_least_loaded_win() -> None:
    load = {"n1": 5, "n2": 0, "n3": 1, "n4": 9, "n5": 2}
    assert set(place("S", 3, NODES, RECORDS, load)) == {"n2", "n3", "n5"}


def test_cluster_and_tags_filter_unregistered_servers_out() -> None:
    assert set(place("S", 2, NODES, RECORDS, {}, tags=["ssd"])) == {"n1", "n2"}
    assert place("S", 1, NODES, RECORDS, {}, tags=["ssd", "big"]) == ("n2",)
    assert set(place("S", 3, NODES, RECORDS, {}, cluster="east")) == {"n1", "n2", "n4"}
    assert isinstance(place("S", 2, NODES, RECORDS, {}, cluster="west"), PlacementError)
    assert isinstance(place("S", 0, NODES, RECORDS, {}), PlacementError)


def test_offline_servers_go_last() -> None:
    got = place("S", 3, ["a", "b", "c", "d"], {}, {}, offline=["a", "b"])
    assert set(got) >= {"c", "d"} and len(set(got)) == 3


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.lists(st.sampled_from(["A", "B", "C", "D", "E", "F"]), min_size=1, max_size=30))
def test_placing_many_streams_spreads_them(replicas: int, streams: list[str]) -> None:
    load: dict[str, int] = {}
    for i, name in enumerate(streams):
        chosen = place(f"{name}{i}", replicas, NODES, {}, load)
        assert not isinstance(chosen, PlacementError)
        assert len(set(chosen)) == replicas
        assert chosen == place(f"{name}{i}", replicas, NODES, {}, load)  # deterministic
        for node in chosen:
            load[node] = load.get(node, 0) + 1
        counts = [load.get(n, 0) for n in NODES]
        assert max(counts) - min(counts) <= 1
