"""Properties of the in-memory Raft log (raft/log.py) against a plain list-of-terms model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft.log import RaftLog, entry_size_bytes
from raft.types import Entry, EntryKind, Snapshot, SnapshotMeta


def make_log(terms: list[int], snap: int = 0) -> RaftLog:
    """A log holding entries 1..len(terms) with those terms, compacted up to `snap`."""
    meta = SnapshotMeta(index=snap, term=terms[snap - 1] if snap else 0)
    entries = [Entry(term=t, index=i) for i, t in enumerate(terms, 1) if i > snap]
    return RaftLog.restore(Snapshot(meta=meta), entries, commit=0)


def term_lists(min_size: int = 0) -> st.SearchStrategy[list[int]]:
    """Non-decreasing terms >= 1, as in every Raft log."""
    return st.lists(st.integers(0, 2), min_size=min_size, max_size=12).map(
        lambda steps: [1 + sum(steps[: i + 1]) for i in range(len(steps))]
    )


@st.composite
def leader_and_follower(draw):
    """Two logs that agree on a common prefix, then diverge (the leader's suffix has higher
    terms, as after the follower missed some elections)."""
    common = draw(term_lists())
    top = common[-1] if common else 1
    f_tail = [t + top for t in draw(term_lists())]
    l_base = (f_tail[-1] if f_tail else top) + 1
    l_tail = [t + l_base - 1 for t in draw(term_lists())]
    return common + l_tail, common + f_tail, len(common)


@settings(max_examples=150, deadline=None)
@given(leader_and_follower(), st.data())
def test_follower_append_converges_on_the_leader_prefix(logs, data) -> None:
    leader, follower_terms, common = logs
    follower = make_log(follower_terms)
    follower.commit_to(common)  # only the common prefix may be committed
    prev = data.draw(st.integers(0, len(leader)))
    n = data.draw(st.integers(0, len(leader) - prev))
    entries = [Entry(term=leader[i - 1], index=i) for i in range(prev + 1, prev + n + 1)]
    prev_term = leader[prev - 1] if prev else 0
    before = [follower.term(i) for i in range(1, follower.last_index() + 1)]
    got = follower.maybe_append(prev, prev_term, commit=common, entries=entries)
    matched = prev == 0 or (prev <= len(follower_terms) and follower_terms[prev - 1] == prev_term)
    if not matched:
        assert got is None
        assert [follower.term(i) for i in range(1, follower.last_index() + 1)] == before
        return
    assert got == prev + n
    # the follower now agrees with the leader up to prev + n ...
    assert [follower.term(i) for i in range(1, prev + n + 1)] == leader[: prev + n]
    # ... and whatever it kept beyond that is what it had before (no needless truncation)
    for i in range(prev + n + 1, follower.last_index() + 1):
        assert follower.term(i) == before[i - 1]
    # unstable entries start where the log first changed
    changed = [i for i in range(1, follower.last_index() + 1) if i > len(before) or follower.term(i) != before[i - 1]]
    unstable = [e.index for e in follower.unstable_entries()]
    assert unstable == list(range(changed[0], follower.last_index() + 1)) if changed else unstable == []
    assert follower.committed == common  # commit never moves back, nor beyond the leader's


@settings(max_examples=150, deadline=None)
@given(term_lists(min_size=1), st.data())
def test_find_conflict_by_term(terms, data) -> None:
    snap = data.draw(st.integers(0, len(terms)))
    log = make_log(terms, snap)
    index = data.draw(st.integers(snap, len(terms) + 3))
    term = data.draw(st.integers(0, terms[-1] + 1))
    got_index, got_term = log.find_conflict_by_term(index, term)
    assert snap <= got_index <= min(index, len(terms))
    assert got_term == log.term(got_index)
    if got_index > snap:
        assert got_term <= term
    # nothing between the answer and `index` qualifies
    for i in range(got_index + 1, min(index, len(terms)) + 1):
        assert log.term(i) > term


@settings(max_examples=100, deadline=None)
@given(term_lists(min_size=1), st.data())
def test_term_lookup_and_compaction(terms, data) -> None:
    log = make_log(terms)
    log.commit_to(len(terms))
    log.applied_to(len(terms))
    snap = data.draw(st.integers(1, len(terms)))
    log.compact(Snapshot(meta=SnapshotMeta(index=snap, term=terms[snap - 1])))
    assert log.first_index() == snap + 1
    assert log.last_index() == len(terms) and log.last_term() == terms[-1]
    for i in range(0, len(terms) + 2):
        want = terms[i - 1] if snap <= i <= len(terms) and i > 0 else None
        assert log.term(i) == want
    with pytest.raises(AssertionError):
        log.slice(snap, snap + 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=20), st.integers(1, 200))
def test_slice_respects_byte_limit_but_returns_at_least_one(payloads, max_bytes) -> None:
    log = RaftLog()
    log.append([Entry(term=1, index=i, data=d) for i, d in enumerate(payloads, 1)])
    got = log.slice(1, len(payloads) + 1, max_bytes)
    assert got, "never an empty batch when entries are available"
    assert [e.index for e in got] == list(range(1, len(got) + 1))
    if len(got) > 1:
        assert sum(entry_size_bytes(e) for e in got) <= max_bytes
    if len(got) < len(payloads):
        assert sum(entry_size_bytes(e) for e in got) + entry_size_bytes(payloads_entry(payloads, len(got))) > max_bytes


def payloads_entry(payloads: list[bytes], pos: int) -> Entry:
    return Entry(term=1, index=pos + 1, data=payloads[pos])


def test_committed_entries_are_never_truncated() -> None:
    log = make_log([1, 1, 2])
    log.commit_to(2)
    with pytest.raises(AssertionError, match="truncating committed"):
        log.append([Entry(term=3, index=2)])
    log.append([Entry(term=3, index=3)])
    assert [log.term(i) for i in (1, 2, 3)] == [1, 1, 3]


def test_stable_to_ignores_a_replaced_entry() -> None:
    log = RaftLog()
    log.append([Entry(term=1, index=1), Entry(term=1, index=2)])
    log.append([Entry(term=2, index=2)])  # replaced before storage acknowledged (2, 1)
    log.stable_to(2, 1)
    assert [e.index for e in log.unstable_entries()] == [1, 2]
    log.stable_to(2, 2)
    assert log.unstable_entries() == []


def test_config_entries_are_tracked_through_truncation_and_compaction() -> None:
    log = RaftLog()
    log.append([Entry(term=1, index=1, kind=EntryKind.CONFIG, data=b"1"),
                Entry(term=1, index=2), Entry(term=1, index=3, kind=EntryKind.CONFIG, data=b"3")])
    assert log.latest_config_at(3).data == b"3"
    assert log.latest_config_at(2).data == b"1"
    log.append([Entry(term=2, index=3)])
    assert log.latest_config_at(3).data == b"1"
    log.commit_to(3)
    log.applied_to(3)
    log.compact(Snapshot(meta=SnapshotMeta(index=2, term=1)))
    assert log.latest_config_at(3) is None
