"""The reconciler's plan: start what is assigned here, update changed configs, stop the rest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meta.assignments import CreateStream, MetaState, StreamAssignment, UpdateStream
from meta.reconciler import Start, Stop, Update, plan, replica_start
from raft.types import Membership


def sa(name: str, peers: tuple[str, ...], subject: str = "x", index: int = 1) -> StreamAssignment:
    return StreamAssignment(name, {"name": name, "subjects": [subject]}, f"S-{name}-{index}", peers, 0)


def test_start_update_stop() -> None:
    a, b, c = sa("A", ("me", "x")), sa("B", ("x", "y")), sa("C", ("me",), "new")
    running = {"S-C-1": sa("C", ("me",), "old").config_text(), "S-GONE-3": "{}"}
    actions = plan({"A": a, "B": b, "C": c}, "me", running)
    assert actions == [Stop("S-GONE-3"), Start(a), Update(c)]


def test_nothing_to_do_when_in_sync() -> None:
    a = sa("A", ("me",))
    assert plan({"A": a}, "me", {a.group: a.config_text()}) == []


assignments = st.dictionaries(
    st.sampled_from(["A", "B", "C", "D"]),
    st.tuples(st.lists(st.sampled_from(["me", "p", "q"]), min_size=1, max_size=3, unique=True),
              st.sampled_from(["s1", "s2"]), st.integers(1, 3)),
)


@settings(max_examples=100, deadline=None)
@given(assignments, st.dictionaries(st.sampled_from(["S-A-1", "S-B-2", "S-Z-9"]), st.sampled_from(["{}", "x"])))
def test_carrying_out_a_plan_converges(raw: dict, running: dict) -> None:
    committed = {n: sa(n, tuple(p), s, i) for n, (p, s, i) in raw.items()}
    state = dict(running)
    for action in plan(committed, "me", state):
        if isinstance(action, Stop):
            assert action.group not in {x.group for x in committed.values() if "me" in x.peers}
            del state[action.group]
        else:
            assert "me" in action.assignment.peers
            state[action.assignment.group] = action.assignment.config_text()
    assert plan(committed, "me", state) == []
    assert set(state) == {x.group for x in committed.values() if "me" in x.peers}


# -- replica_start: the membership a replica starts its group with, and its stream-log index ----
def test_replica_start_first_config_at_index_0_then_a_learner_placeholder() -> None:
    state = MetaState()
    for _ in range(40):  # the create lands at a meta index far beyond the stream log's
        state.apply(UpdateStream("none", {}), state.applied + 1)
    state.apply(CreateStream("S", {"name": "S"}, ("a", "b", "c")), state.applied + 1)
    created = state.streams["S"]
    assert created.group == "S-S-41"
    # the creation peers are the stream group's first config: index 0 of *its* log, whatever
    # the meta index of the assignment (another log's numbering)
    assert replica_start(created, "a") == (Membership(voters=frozenset("abc")), 0)
    state.apply(UpdateStream("S", {"name": "S"}, ("a", "b", "d")), state.applied + 1)
    moved = state.streams["S"]
    # after a peer change every starting replica (new, or wiped and restarted) is a learner of
    # itself at index 0: any committed config a term-probe answer names replaces it
    for node in "abcd":
        assert replica_start(moved, node) == (Membership(learners=frozenset({node})), 0)
