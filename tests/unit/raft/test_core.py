"""Focused unit tests of RaftNode behaviour that scenarios do not show well: Ready contents and
must_sync, restart state, election timeout range, refusals, snapshot chunk verification."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft import membership as ms
from raft.chunks import ChunkAssembler, checksum
from raft.config import NodeConfig, RefuseReason, Role
from raft.core import RaftNode
from raft.testing.scenario import Cluster
from raft.types import (
    ConfigChange,
    ConfigChangeType,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

ABC = Membership(voters=frozenset("abc"))


def node(name: str = "a", *, membership: Membership = ABC, seed: int = 0, **kw) -> RaftNode:
    cfg = NodeConfig(node_id=name, group="g", **kw.pop("cfg", {}))
    return RaftNode(cfg, random.Random(seed), hard_state=kw.pop("hard_state", HardState()),
                    snapshot=kw.pop("snapshot", None), entries=kw.pop("entries", ()),
                    membership=membership, **kw)


def drain(n: RaftNode):
    rd = n.ready()
    n.advance(rd)
    return rd


def cluster3() -> Cluster:
    c = Cluster(seed=1)
    for name in "abc":
        c.start(name, ABC)
    for _ in range(40):
        c.tick("a")
        if c.leaders() == ["a"]:
            return c
    raise AssertionError("no leader")


@pytest.mark.parametrize("seed", range(20))
def test_election_timeout_is_randomized_in_range(seed: int) -> None:
    n = node(seed=seed, cfg={"election_ticks": 7})
    for ticks in range(1, 15):
        n.tick()
        if n.role is not Role.FOLLOWER:
            assert 7 <= ticks < 14
            return
    raise AssertionError("never campaigned")


def test_vote_must_be_persisted_before_it_is_sent() -> None:
    n = node("b")
    n.step(Message(MessageType.VOTE, "g", "a", "b", term=1, index=0, log_term=0))
    rd = n.ready()
    assert rd.hard_state == HardState(term=1, vote="a", commit=0)
    assert rd.must_sync
    assert [m.type for m in rd.messages] == [MessageType.VOTE_RESP] and not rd.messages[0].reject
    n.advance(rd)
    assert not n.has_ready()
    # a second candidate in the same term is refused
    n.step(Message(MessageType.VOTE, "g", "c", "b", term=1, index=5, log_term=1))
    assert drain(n).messages[0].reject


def test_pre_vote_changes_no_term_and_no_vote() -> None:
    n = node("b")
    n.step(Message(MessageType.PRE_VOTE, "g", "a", "b", term=1, index=0, log_term=0))
    rd = drain(n)
    assert rd.hard_state is None and not rd.must_sync
    assert rd.messages[0].type is MessageType.PRE_VOTE_RESP and rd.messages[0].term == 1
    assert n.term == 0 and n.vote is None


def test_commit_only_changes_need_no_sync_but_are_reported() -> None:
    c = cluster3()
    b = c.nodes["b"]
    c.nodes["a"].propose(b"x")
    c.process_readies()
    # deliver a's APPEND to b: entries arrive, must sync
    m = c.queue.pop(next(i for i, m in enumerate(c.queue) if m.dst == "b"))
    b.step(m)
    rd = b.ready()
    assert rd.entries and rd.must_sync
    b.advance(rd)
    # a later commit-only change: reported, no fsync needed (a commit index can be re-learned)
    b.step(Message(MessageType.HEARTBEAT, "g", "a", "b", term=b.term, commit=2))
    rd = b.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 2 and not rd.must_sync
    assert [e.data for e in rd.committed_entries] == [b"x"]


def test_follower_overwrite_starts_ready_entries_at_the_conflict() -> None:
    entries = [Entry(term=1, index=1), Entry(term=1, index=2), Entry(term=1, index=3)]
    n = node("b", hard_state=HardState(term=1, commit=1), entries=entries)
    n.step(Message(MessageType.APPEND, "g", "a", "b", term=2, index=1, log_term=1,
                   entries=(Entry(term=2, index=2),), commit=1))
    rd = n.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 2)]
    assert n.last_index == 2


def test_restart_takes_membership_from_the_latest_config_entry() -> None:
    new = Membership(voters=frozenset("abcd"))
    data = ms.encode_config(ConfigChange(ConfigChangeType.ADD_VOTER, "d"), new)
    entries = [Entry(term=1, index=1), Entry(term=1, index=2, kind=EntryKind.CONFIG, data=data)]
    n = node("d", hard_state=HardState(term=1, commit=1), entries=entries)
    assert n.membership == new  # uncommitted, still in force
    snap = Snapshot(meta=SnapshotMeta(index=5, term=1, membership=new), data=b"s")
    m = node("d", hard_state=HardState(term=1, commit=5), snapshot=snap, applied=5)
    assert m.membership == new and m.role is Role.FOLLOWER and m.applied_index == 5
    fresh = node("d")
    assert fresh.membership == ABC and fresh.role is Role.LEARNER


def test_new_leader_refuses_config_change_until_its_term_commits() -> None:
    solo = node("a", membership=Membership(voters=frozenset("ab")))
    for _ in range(30):
        solo.tick()
    assert solo.role is Role.PRE_CANDIDATE
    solo.step(Message(MessageType.PRE_VOTE_RESP, "g", "b", "a", term=1))
    solo.step(Message(MessageType.VOTE_RESP, "g", "b", "a", term=1))
    assert solo.role is Role.LEADER and solo.last_index == 1  # its NOOP
    change = ConfigChange(ConfigChangeType.ADD_VOTER, "c")
    res = solo.propose_config_change(change)
    assert not res.ok and res.reason is RefuseReason.NOT_READY
    solo.step(Message(MessageType.APPEND_RESP, "g", "b", "a", term=1, index=1))
    assert solo.commit_index == 0  # "a" itself has not persisted its NOOP yet
    solo.advance(solo.ready())  # the driver persisted it
    assert solo.commit_index == 1
    res = solo.propose_config_change(change)
    assert res.ok and res.index == 2
    assert solo.membership.voters == frozenset("abc")
    again = solo.propose_config_change(ConfigChange(ConfigChangeType.ADD_VOTER, "d"))
    assert not again.ok and again.reason is RefuseReason.CONFIG_PENDING


def test_compact_keeps_snapshot_with_membership_and_serves_entries_after() -> None:
    c = cluster3()
    a = c.nodes["a"]
    for i in range(5):
        a.propose(b"%d" % i)
        c.drain()
    a.compact(4, b"state")
    assert a.snapshot_meta.index == 4 and a.snapshot_meta.membership == ABC
    assert a.first_index == 5
    assert [e.index for e in a.entries(5, a.last_index + 1)] == [5, 6]
    a.compact(3, b"older")  # ignored: already compacted beyond
    assert a.snapshot_meta.index == 4
    with pytest.raises(AssertionError):
        a.compact(a.last_index + 1, b"future")


def test_chunk_assembler_rejects_bad_checksum_and_out_of_order_chunks() -> None:
    meta = SnapshotMeta(index=9, term=2)
    data = b"0123456789abcdef"

    def chunk(off: int, n: int, last: bool, crc: int | None = None) -> Message:
        return Message(MessageType.SNAPSHOT, "g", "a", "b", term=2,
                       snapshot=Snapshot(meta=meta, data=data[off:off + n]), chunk_offset=off,
                       chunk_last=last, chunk_checksum=checksum(data) if crc is None else crc)

    asm = ChunkAssembler()
    assert asm.add(chunk(0, 8, False)).next_offset == 8
    assert asm.add(chunk(12, 4, True)).next_offset == 8  # gap: tell the leader where we are
    assert asm.add(chunk(4, 4, False)).next_offset == 8  # duplicate: same answer
    bad = asm.add(chunk(8, 8, True, crc=123))
    assert bad.reject and bad.snapshot is None and bad.next_offset == 0
    assert asm.add(chunk(8, 8, True)).next_offset == 0  # nothing in progress any more
    asm.add(chunk(0, 8, False))
    done = asm.add(chunk(8, 8, True))
    assert done.snapshot == Snapshot(meta=meta, data=data)


def test_follower_forwards_read_index_and_drops_it_without_leader() -> None:
    lonely = node("b")
    lonely.read_index(b"r")
    assert not lonely.has_ready()
    c = cluster3()
    c.nodes["b"].read_index(b"r1")
    c.drain()
    assert [(r.context, r.index) for r in c.stores["b"].read_states] == [(b"r1", 1)]


def test_events_carry_term_and_leader() -> None:
    c = cluster3()
    rd_events = c.stores["a"].events
    assert "raft.became_leader" in rd_events
    n = node("a", membership=Membership(voters=frozenset("a")))
    n.tick()
    for _ in range(30):
        n.tick()
    rd = n.ready()
    led = [e for e in rd.events if e.name == "raft.became_leader"]
    assert led and dict(led[0].fields)["term"] == 1 and dict(led[0].fields)["leader"] == "a"


def test_messages_for_another_node_are_a_bug() -> None:
    n = node("a")
    with pytest.raises(AssertionError):
        n.step(Message(MessageType.HEARTBEAT, "g", "b", "c", term=1))
    with pytest.raises(AssertionError):
        n.step(Message(MessageType.HEARTBEAT, "other", "b", "a", term=1))


def test_replication_is_batched_and_bounded() -> None:
    c = Cluster(seed=2, config={"max_entries_per_msg": 4, "max_inflight_msgs": 2})
    for name in "abc":
        c.start(name, ABC)
    c.tick("a", 40)
    assert c.leaders() == ["a"]
    a = c.nodes["a"]
    for i in range(20):
        assert a.propose(b"%d" % i).ok
    c.process_readies()
    appends = [m for m in c.queue if m.type is MessageType.APPEND and m.dst == "b"]
    assert len(appends) == 2  # bounded by inflight
    assert all(1 <= len(m.entries) <= 4 for m in appends)
    c.drain()
    assert c.nodes["b"].commit_index == a.last_index == 21


def test_applied_beyond_the_persisted_commit_counts_as_committed() -> None:
    """Commit-only hard-state changes are not fsynced, so after a crash the state machine may be
    ahead of the stored commit index; nothing it applied is handed out again."""
    entries = [Entry(term=1, index=i, data=b"%d" % i) for i in (1, 2, 3, 4)]
    n = node("b", hard_state=HardState(term=1, commit=1), entries=entries, applied=3)
    assert n.commit_index == 3 and n.applied_index == 3
    assert n.ready().committed_entries == ()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 40), st.integers(0, 2**32))
def test_chunked_snapshot_survives_loss_duplication_and_reordering(data, chunk_bytes, seed) -> None:
    """Leader and follower over a lossy, duplicating, reordering link: the follower installs
    exactly the leader's snapshot, or nothing yet; never anything else. Once the link is
    healthy again, it gets there."""
    rnd = random.Random(seed)
    c = Cluster(seed=3, config={"snapshot_chunk_bytes": chunk_bytes})
    for name in "ab":
        c.start(name, Membership(voters=frozenset("ab")))
    c.tick("a", 40)
    a = c.nodes["a"]
    a.propose(data)
    c.drain()
    c.crash("b")
    a.propose(b"more")
    c.process_readies()
    c.drain()
    state = c.stores["a"].snapshot_data()  # what the harness's state machine snapshots
    a.compact(a.applied_index, state)
    c.stores["b"] = type(c.stores["b"])()  # b comes back empty (not wiped: a new replica)
    c.start("b", Membership(voters=frozenset("ab")))
    for _ in range(400):
        c.process_readies()
        if c.queue:
            m = c.queue.pop(rnd.randrange(len(c.queue)))
            if rnd.random() < 0.2:
                continue
            if rnd.random() < 0.2:
                c.queue.append(m)
            c.nodes[m.dst].step(m)
        else:
            a.tick()
        snap = c.stores["b"].snapshot
        assert snap is None or (snap.data == state and snap.meta == a.snapshot_meta)
    c.tick_all(30)  # lossless from here on
    assert c.stores["b"].snapshot is not None and c.nodes["b"].commit_index == a.commit_index
    assert c.stores["b"].applied_data == [data, b"more"]


def test_reject_hints_skip_a_whole_divergent_term_at_once() -> None:
    """Follower: 1..50 term 1 then 51..100 term 2 (from a deposed leader). Leader of term 3:
    1..50 term 1 then 51..100 term 3. With hints, one rejection finds the match point."""
    common = [Entry(term=1, index=i) for i in range(1, 51)]
    f_entries = common + [Entry(term=2, index=i) for i in range(51, 101)]
    l_entries = common + [Entry(term=3, index=i) for i in range(51, 101)]
    m = Membership(voters=frozenset("ab"))
    f = node("b", membership=m, hard_state=HardState(term=2, commit=50), entries=f_entries)
    lead = node("a", membership=m, hard_state=HardState(term=3, vote="a", commit=50),
                entries=l_entries)
    for _ in range(30):
        lead.tick()
    lead.step(Message(MessageType.PRE_VOTE_RESP, "g", "b", "a", term=4))
    lead.step(Message(MessageType.VOTE_RESP, "g", "b", "a", term=4))
    assert lead.role is Role.LEADER
    rejects = 0
    for _ in range(20):
        for msg in drain(lead).messages:
            f.step(msg)
        replies = drain(f).messages
        rejects += sum(1 for r in replies if r.type is MessageType.APPEND_RESP and r.reject)
        for r in replies:
            lead.step(r)
    assert rejects == 1
    assert f.last_index == 101 and f.commit_index == 101
    assert [e.term for e in f.entries(51, 52)] == [3]
