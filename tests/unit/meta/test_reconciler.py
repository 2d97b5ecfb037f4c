"""The reconciler's plan: start what is assigned here, update changed configs, stop the rest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meta.assignments import StreamAssignment
from meta.reconciler import Start, Stop, Update, plan


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
