"""The leader replicates in parallel with its own fsync (raft/driver.py sends a leader's APPENDs
before its entries are durable). Safety rests on one core rule: the leader counts itself toward
the commit quorum only up to its stable (persisted) index. These scenarios drive the pure core by
hand on the deterministic harness: the leader's Ready is sent but NOT persisted, then it crashes.
"""

from __future__ import annotations

from raft.config import Role
from raft.core import RaftNode
from raft.testing.scenario import Cluster
from raft.types import Membership, Message, MessageType

ABC = Membership(voters=frozenset("abc"))


def _elected_cluster() -> Cluster:
    c = Cluster(seed=3)
    for name in "abc":
        c.start(name, ABC)
    for _ in range(60):
        c.tick("a")
        if c.leaders() == ["a"]:
            c.drain()
            return c
    raise AssertionError("no leader")


def _follower_round(c: Cluster, name: str, msgs: list[Message]) -> list[Message]:
    """Deliver `msgs` to follower `name`, persist its Ready (as the driver does), return replies."""
    node = c.nodes[name]
    for m in msgs:
        if m.dst == name:
            node.step(m)
    rd = node.ready()
    c.stores[name].persist(rd)
    c.stores[name].apply(rd)
    node.advance(rd)
    return list(rd.messages)


def _send_unpersisted(leader: RaftNode, data: bytes) -> tuple[int, list[Message]]:
    """Propose on the leader and take its Ready WITHOUT persisting it (its fsync is running)."""
    result = leader.propose(data)
    assert result.ok
    rd = leader.ready()
    assert rd.entries and rd.entries[-1].index == result.index
    return result.index, [m for m in rd.messages if m.type is MessageType.APPEND]


def test_two_followers_commit_without_the_leader_and_survive_its_crash() -> None:
    c = _elected_cluster()
    a = c.nodes["a"]
    index, appends = _send_unpersisted(a, b"acked")
    for follower in "bc":
        for reply in _follower_round(c, follower, appends):
            a.step(reply)
    # b and c hold the entry durably: a quorum without a, so it is committed (and may be acked)
    assert a.commit_index == index
    c.crash("a")  # a's own write never finished: its store lacks the entry
    assert all(e.index < index for e in c.stores["a"].entries)
    for _ in range(200):
        c.tick("b")
        c.tick("c")
        if set(c.leaders()) & {"b", "c"}:
            break
    c.drain()
    new_leader = next(n for n in c.leaders() if n in "bc")
    assert b"acked" in c.stores[new_leader].applied_data
    c.restart("a", ABC)
    c.drain()
    for _ in range(10):
        c.tick(new_leader)
        c.drain()
    assert b"acked" in c.stores["a"].applied_data


def test_one_follower_is_not_a_quorum_until_the_leader_persisted() -> None:
    c = _elected_cluster()
    a = c.nodes["a"]
    index, appends = _send_unpersisted(a, b"pending")
    for reply in _follower_round(c, "b", appends):
        a.step(reply)
    assert a.commit_index < index, "a counted an entry it has not persisted toward the quorum"
    a_ready = a.ready()
    assert not any(e.index == index for e in a_ready.committed_entries)


def test_the_leader_commits_once_its_own_write_is_durable() -> None:
    c = _elected_cluster()
    a = c.nodes["a"]
    index, appends = _send_unpersisted(a, b"later")
    held = a.ready()  # the driver's Ready: entries being written while APPENDs are out
    for reply in _follower_round(c, "b", appends):
        a.step(reply)
    assert a.commit_index < index
    c.stores["a"].persist(held)
    a.advance(held)  # the leader's fsync finished
    assert a.commit_index == index and a.role is Role.LEADER
