"""The move/scale planner: step order, safety rules, and whole walks to the desired peers."""

from __future__ import annotations

import itertools

import pytest

from meta.moves import (
    AddLearner,
    Done,
    GroupView,
    Promote,
    Remove,
    TransferLeader,
    Verify,
    Wait,
    keep_and_add,
    next_step,
    progress,
)


def view(leader: str, voters: str, learners: str = "", match: dict[str, int] | None = None,
         commit: int = 100) -> GroupView:
    m = match if match is not None else {p: commit for p in voters + learners}
    return GroupView(leader, frozenset(voters), frozenset(learners), m, commit)


def test_new_peers_join_as_learners_one_at_a_time() -> None:
    assert next_step(view("a", "a"), "abc") == AddLearner("b")
    assert next_step(view("a", "a", "b"), "abc") == AddLearner("c")


def test_learner_is_promoted_only_when_caught_up() -> None:
    v = view("a", "a", "b", match={"a": 100, "b": 10})
    assert next_step(v, "ab") == Wait("catching up")
    assert next_step(view("a", "a", "b", match={"a": 100, "b": 95}), "ab") == Promote("b")


def test_removal_waits_for_content_verification() -> None:
    v = view("a", "abc")
    assert next_step(v, "a") == Verify(("a",))
    assert next_step(v, "a", verified=True) == Remove("b")


def test_leader_is_never_removed_it_transfers_first() -> None:
    v = view("a", "abc", match={"a": 100, "b": 90, "c": 99})
    assert next_step(v, "bc", verified=True) == TransferLeader("c")
    assert next_step(view("c", "abc"), "bc", verified=True) == Remove("a")


def test_cancelled_joiner_is_removed_before_anything_else_leaves() -> None:
    assert next_step(view("a", "ab", "c"), "ab") == Remove("c")


def test_done_when_membership_matches() -> None:
    assert next_step(view("a", "abc"), "cba") == Done()


def _walk(voters: str, desired: str, leader: str) -> list[object]:
    """Apply the planner's steps (every replica catches up at once) until Done; check the rules
    after every step."""
    v, ln, le = set(voters), set(), leader
    steps: list[object] = []
    for _ in range(50):  # bounded
        step = next_step(GroupView(le, frozenset(v), frozenset(ln), {p: 100 for p in v | ln}, 100),
                         desired, verified=True)
        steps.append(step)
        if isinstance(step, Done):
            return steps
        if isinstance(step, AddLearner):
            ln.add(step.peer)
        elif isinstance(step, Promote):
            ln.discard(step.peer)
            v.add(step.peer)
        elif isinstance(step, Remove):
            assert step.peer != le, "the leader removed itself"
            v.discard(step.peer)
            ln.discard(step.peer)
        elif isinstance(step, TransferLeader):
            assert step.peer in desired and step.peer in v
            le = step.peer
        assert v, "no voters left"
        # every desired voter that exists is a voter before any old voter leaves
        if isinstance(step, Remove) and step.peer not in desired:
            assert set(desired) <= v
    raise AssertionError(f"no Done after 50 steps: {steps}")


@pytest.mark.parametrize("voters,desired,leader", [
    ("a", "abc", "a"), ("abc", "a", "b"), ("abc", "def", "a"), ("ab", "cd", "b"),
    ("abc", "abcde", "c"), ("abcde", "e", "a"), ("abc", "cde", "c"),
])
def test_walks_reach_the_desired_set(voters: str, desired: str, leader: str) -> None:
    steps = _walk(voters, desired, leader)
    adds = [s for s in steps if isinstance(s, AddLearner)]
    assert len(adds) == len(set(desired) - set(voters))


def test_every_start_and_goal_of_four_servers_terminates() -> None:
    servers = "abcd"
    sets = [c for n in (1, 2, 3) for c in itertools.combinations(servers, n)]
    for start, goal in itertools.product(sets, sets):
        _walk("".join(start), "".join(goal), start[0])


def test_progress_counts_caught_up_desired_voters() -> None:
    p = progress(view("a", "abd", "c", match={"a": 100, "b": 100, "c": 100, "d": 100}), "abc")
    assert (p.done, p.total, p.leaving, p.settled) == (2, 3, ("d",), False)
    assert progress(view("a", "abc"), "abc").settled


def test_keep_and_add_keeps_qualified_current_peers() -> None:
    assert keep_and_add(["a", "b", "c"], "bcdef", 3, ["d", "e"]) == ("b", "c", "d")
    assert keep_and_add(["a", "b", "c"], "abc", 1, []) == ("a",)
    assert keep_and_add(["a"], "a", 3, ["x"]) is None


# -- the meta state's side of a move ---------------------------------------------------------
from meta.assignments import (  # noqa: E402
    CreateStream,
    MetaOk,
    MetaRejected,
    MetaState,
    SettlePeers,
    UpdateStream,
    decode_command,
    encode_command,
)
from meta.reconciler import Start, Stop, plan  # noqa: E402


def _state_with_stream() -> MetaState:
    st = MetaState()
    st.apply(CreateStream("S", {"name": "S", "num_replicas": 1}, ("a",), 5), 1)
    return st


def test_scale_keeps_leaving_servers_running_until_settled() -> None:
    st = _state_with_stream()
    assert st.apply(UpdateStream("S", {"name": "S", "num_replicas": 3}, ("a", "b", "c")), 2) == MetaOk()
    sa = st.streams["S"]
    assert sa.moving and sa.initial == () and sa.hosts() == ("a", "b", "c")
    assert st.apply(SettlePeers("S", sa.group, ("a", "b", "c")), 3) == MetaOk()
    st.apply(UpdateStream("S", {"name": "S", "num_replicas": 1}, ("c",)), 4)
    assert plan(st.streams, "d", {}) == []
    assert plan(st.streams, "b", {}) == [Start(st.streams["S"])]
    assert not any(isinstance(a, Stop) for a in plan(st.streams, "a", {sa.group: st.streams["S"].config_text()}))
    assert st.apply(SettlePeers("S", sa.group, ("b",)), 5) == MetaRejected("stale")
    assert st.apply(SettlePeers("S", sa.group, ("c",)), 6) == MetaOk()
    assert plan(st.streams, "a", {sa.group: st.streams["S"].config_text()}) == [Stop(sa.group)]


def test_cancel_restores_config_and_peers_and_a_second_move_waits() -> None:
    st = _state_with_stream()
    st.apply(UpdateStream("S", {"name": "S", "num_replicas": 1, "placement": {"tags": ["x"]}}, ("b",)), 2)
    assert st.apply(UpdateStream("S", {"name": "S"}, ("c",)), 3) == MetaRejected("moving")
    assert st.apply(UpdateStream("S", {}, None, cancel=True), 4) == MetaOk()
    sa = st.streams["S"]
    assert sa.peers == ("a",) and sa.config == {"name": "S", "num_replicas": 1} and sa.hosts() == ("a", "b")
    assert st.apply(UpdateStream("S", {}, None, cancel=True), 5) == MetaRejected("not_moving")


def test_move_state_survives_snapshot_and_codec() -> None:
    st = _state_with_stream()
    cmd = UpdateStream("S", {"name": "S", "num_replicas": 2}, ("a", "b"))
    assert decode_command(encode_command(cmd)) == cmd
    settle = SettlePeers("S", "g", ("a",))
    assert decode_command(encode_command(settle)) == settle
    st.apply(cmd, 2)
    back = MetaState.restore(st.snapshot())
    assert back.streams["S"] == st.streams["S"] and back.digest() == st.digest()
    assert back.streams["S"].prior_config == {"name": "S", "num_replicas": 1}
