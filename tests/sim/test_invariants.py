"""Each invariant checker accepts a good hand-made history and flags a violating one."""

from __future__ import annotations

import pytest

from raft.testing.invariants import InvariantChecker, Violation
from raft.testing.statemachine import GENESIS, HashChainStateMachine, fold
from raft.types import Entry, EntryKind


def E(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term, index, data=data or f"v{index}.{term}".encode())


def flags(invariant: str):  # type: ignore[no-untyped-def]
    return pytest.raises(Violation, match=f"^{invariant}:")


def test_election_safety() -> None:
    c = InvariantChecker()
    c.observe_role("a", "leader", 1)
    c.observe_role("a", "leader", 1)  # same leader seen again is fine
    c.observe_role("b", "leader", 2)
    with flags("election_safety"):
        c.observe_role("c", "leader", 2)


def test_double_vote_and_repair_vote() -> None:
    c = InvariantChecker()
    c.observe_vote("a", 3, "b")
    c.observe_vote("a", 3, "b")
    with flags("double_vote"):
        c.observe_vote("a", 3, "c")
    with flags("repair_votes"):
        c.observe_vote("d", 4, "b", repair_needed=True)


def test_repair_node_leads_or_campaigns() -> None:
    c = InvariantChecker()
    c.observe_role("a", "follower", 1, repair_needed=True)
    with flags("repair_leads"):
        c.observe_role("a", "candidate", 2, repair_needed=True)
    with flags("repair_leads"):
        c.observe_role("a", "leader", 2, repair_needed=True)


def test_log_matching_same_identity_different_content() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1, b"x")])
    c.observe_append("b", [E(1, 1), E(2, 1, b"x")])
    with flags("log_matching"):
        c.observe_append("c", [E(1, 1), E(2, 1, b"y")])


def test_log_matching_same_identity_different_prefix() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 2)])
    c.observe_append("b", [E(1, 3)])
    with flags("log_matching"):
        c.observe_append("b", [E(2, 2)])  # (2, 2) after (1, 3): prefixes differ


def test_log_append_with_gap_is_flagged() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1)])
    with flags("log_matching"):
        c.observe_append("a", [E(3, 1)])


def test_overwrite_of_uncommitted_suffix_is_fine_but_of_committed_is_not() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1), E(3, 1)])
    c.observe_commit("a", 2, term=1)
    c.observe_append("b", [E(1, 1), E(2, 1), E(3, 2)])  # overwrote only index 3
    c.observe_commit("b", 3, term=2)
    c.observe_append("c", [E(1, 1), E(2, 2)])  # index 2 term 2: a different entry
    with flags("committed_changed"):
        c.observe_commit("c", 2, term=2)


def test_commit_regressed_and_beyond_log() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, term=1)
    with flags("commit_regressed"):
        c.observe_commit("a", 1, term=1)
    with flags("commit_beyond_log"):
        c.observe_commit("a", 3, term=1)


def test_commit_regressed_across_restart() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, term=1)
    c.observe_sync("a", 2)
    c.observe_restart("a", None, [E(1, 1), E(2, 1)], commit=2, repaired=False)
    c.observe_restart("a", None, [], commit=0, repaired=True)  # a wiped disk promises nothing
    c.observe_sync("a", 1)
    with flags("commit_regressed"):
        c.observe_restart("a", None, [E(1, 1)], commit=0, repaired=False)
    c.observe_restart("a", None, [E(1, 1), E(2, 1)], commit=2, repaired=False)
    with flags("commit_regressed"):
        c.observe_commit("a", 1, term=1)  # the restarted node came up below its durable commit


def test_leader_completeness() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_append("b", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, term=1)
    c.observe_append("c", [E(1, 1)])
    c.observe_role("b", "leader", 2)  # has everything
    with flags("leader_completeness"):
        c.observe_role("c", "leader", 3)


def test_leader_completeness_respects_snapshots_and_terms() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, term=4)  # committed under term 4
    c.observe_role("z", "leader", 3)  # a stale leader of an older term: not bound
    c.observe_snapshot("d", 5, 4)
    c.observe_role("d", "leader", 6)  # holds it inside a snapshot


def test_state_machine_safety() -> None:
    c = InvariantChecker()
    entries = [E(1, 1), E(2, 1)]
    for e in entries:
        c.observe_proposal(e.data)
    c.observe_append("a", entries)
    c.observe_append("b", entries)
    c.observe_commit("a", 2, 1)
    c.observe_commit("b", 2, 1)
    sa, sb = HashChainStateMachine(), HashChainStateMachine()
    for e in entries:
        c.observe_apply("a", e.index, sa.apply(e), e)
        c.observe_apply("b", e.index, sb.apply(e), e)
    with flags("state_machine_safety"):
        c.observe_apply("c", 2, fold(GENESIS, entries[1]))  # skipped index 1: chain differs


def test_applying_an_uncommitted_entry_is_flagged() -> None:
    c = InvariantChecker()
    c.observe_proposal(E(1, 1).data)
    c.observe_append("a", [E(1, 1)])
    with flags("state_machine_safety"):
        c.observe_apply("a", 1, b"x", E(1, 1))


def test_acked_checks() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, 1)
    c.observe_ack(2, E(2, 1))
    with flags("acked_lost"):
        c.observe_ack(2, E(2, 1, b"different"))
    with flags("acked_lost"):
        c.observe_ack(3, E(3, 1))  # never committed
    c.check_acked_applied({"a": 2, "b": 5})
    with flags("acked_lost"):
        c.check_acked_applied({"a": 2, "c": 1})


def test_hash_chain_snapshot_round_trip() -> None:
    sm = HashChainStateMachine()
    for i in range(1, 6):
        sm.apply(E(i, 1))
    clone = HashChainStateMachine.from_snapshot(sm.snapshot())
    assert clone == sm
    a, b = clone.apply(E(6, 1)), sm.apply(E(6, 1))
    assert a == b
    other = HashChainStateMachine.from_snapshot(sm.snapshot())
    assert other.apply(E(7, 2)) != sm.apply(E(7, 1))
    with pytest.raises(AssertionError):
        sm.apply(E(9, 1))


def test_stale_read() -> None:
    c = InvariantChecker()
    c.observe_append("a", [E(1, 1), E(2, 1)])
    c.observe_commit("a", 2, 1)
    c.observe_read_request(b"r1")  # nothing acked yet: any index will do
    c.observe_ack(2, E(2, 1))
    c.observe_read_request(b"r2")
    c.observe_read_state("a", b"r1", 1)
    c.observe_read_state("a", b"r2", 2)
    with flags("stale_read"):
        c.observe_read_state("b", b"r2", 1)
    with flags("stale_read"):
        c.observe_read_state("b", b"never-asked", 5)


def test_invented_entry() -> None:
    c = InvariantChecker()
    c.observe_proposal(b"real")
    c.observe_append("a", [E(1, 1, b"real"), E(2, 1, b"ghost"), Entry(1, 3, EntryKind.NOOP)])
    c.observe_commit("a", 3, 1)
    sm = HashChainStateMachine()
    c.observe_apply("a", 1, sm.apply(E(1, 1, b"real")), E(1, 1, b"real"))
    with flags("invented"):
        c.observe_apply("a", 2, sm.apply(E(2, 1, b"ghost")), E(2, 1, b"ghost"))
