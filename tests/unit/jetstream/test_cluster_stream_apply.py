"""ReplicatedStream's apply path (jetstream/cluster_stream.py): an entry applied in bulk (runs of
stream commands through the state machine's apply_batch, consumer commands one by one) leaves
the same store and returns the same results as applying its commands one at a time; and the
leader's own publish batches are applied without decoding the entry again, to the same effect."""

from __future__ import annotations

import json
import pathlib

import pytest
import trio

import jetstream.cluster_stream as cluster_stream
from jetstream.cluster_codec import SaveConsumer, encode_batch, sub_index
from jetstream.cluster_stream import ReplicatedStream, open_replica_store, stream_group_config
from jetstream.config import StreamConfig
from jetstream.stream import DeleteMsg, Publish
from raft.config import Role
from raft.driver import RaftHost
from raft.storage import MemoryLogStore
from raft.transport import MemoryNetwork
from raft.types import Entry, EntryKind, Membership

CONFIG = StreamConfig(name="S", subjects=("s.>",))
DUP = b"NATS/1.0\r\nNats-Msg-Id: one\r\n\r\n"


def replica(path: pathlib.Path, host: RaftHost | None = None, publish=lambda *a: None) -> ReplicatedStream:
    path.mkdir(parents=True, exist_ok=True)
    store = open_replica_store(CONFIG, path)
    return ReplicatedStream(CONFIG, 0, store, path, lambda: 1_000, publish,
                            host=host, group="G", peers=("n1",), assigned_text="")  # type: ignore[arg-type]


async def one_node_leader(path: pathlib.Path, publish=lambda *a: None) -> tuple[RaftHost, ReplicatedStream, list[Entry]]:
    """A one-voter group whose apply callback also records the entries it applies."""
    host = RaftHost("n1", MemoryLogStore(), MemoryNetwork().endpoint("n1"), tick_interval_s=0.05,
                    store_offload=False)
    leader = replica(path, host, publish)
    entries: list[Entry] = []

    def apply(entry: Entry) -> object:
        entries.append(entry)
        return leader.apply_entry(entry)

    await host.add_group("G", stream_group_config("n1", "G"), Membership(frozenset({"n1"})),
                         apply, leader.restore_snapshot)
    return host, leader, entries


async def until_leader(host: RaftHost) -> None:
    with trio.fail_after(30):
        while host.node("G").role is not Role.LEADER or not host.node("G").commit_index:
            await trio.sleep(0.05)


def mixed_commands() -> list:
    return [
        Publish("s.a", b"1", 10, None, "r1"),
        Publish("s.b", b"2", 11, None, "r2"),
        SaveConsumer("C", b"state-1"),
        Publish("s.a", b"3", 12, DUP, "r3"),
        Publish("s.a", b"4", 13, DUP, "r4"),  # duplicate msg id
        Publish("s.c", b"5", 9, None, None),  # older timestamp than the last
        DeleteMsg(2, False),
        Publish("s.d", b"6", 14, None, "r6"),
        Publish("s.e", b"7", 15, None, "r7"),
    ]


def one_by_one(rs: ReplicatedStream, cmds: list, entry_index: int) -> list:
    with rs.store.batch():
        return [rs._apply_one(cmd, sub_index(entry_index, k)) for k, cmd in enumerate(cmds)]


async def test_bulk_apply_matches_one_by_one(tmp_path: pathlib.Path) -> None:
    bulk, single = replica(tmp_path / "bulk"), replica(tmp_path / "single")
    cmds = mixed_commands()
    results = await bulk.apply_entry(Entry(1, 5, EntryKind.NORMAL, encode_batch(cmds)))
    expected = one_by_one(single, cmds, 5)
    assert results == expected
    assert bulk.store.snapshot() == single.store.snapshot()
    assert bulk.store.load_consumer("C") == b"state-1"
    # the same entry again (a replay after a restart) changes nothing
    await bulk.apply_entry(Entry(1, 5, EntryKind.NORMAL, encode_batch(cmds)))
    assert bulk.store.snapshot() == single.store.snapshot()
    await bulk.close()
    await single.close()


async def test_leader_applies_its_own_publishes_without_decoding(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, leader, entries = await one_node_leader(tmp_path / "leader")
    publishes = [Publish("s.a", b"x%d" % i, 100 + i, DUP if i == 3 else None, f"r{i}") for i in range(6)]
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        await until_leader(host)
        decoded: list[bytes] = []
        real_decode = cluster_stream.decode_batch

        def counting_decode(data: bytes) -> list:
            decoded.append(data)
            return real_decode(data)

        monkeypatch.setattr(cluster_stream, "decode_batch", counting_decode)
        results = await leader.apply_batch(publishes)
        assert decoded == []  # the leader's own entry: the proposed commands were applied
        assert leader.proposed == {}
        mixed = await leader.apply_batch([Publish("s.z", b"z", 200, None, "rz"), DeleteMsg(1, False)])
        assert len(decoded) == 1  # not only publishes: decoded like any other entry
        nursery.cancel_scope.cancel()
    follower = replica(tmp_path / "follower")
    follower_results = [await follower.apply_entry(e) for e in entries]
    assert follower_results[-2:] == [results, mixed]
    assert [r.seq for r in results] == [1, 2, 3, 4, 5, 6]
    assert follower.store.snapshot() == leader.store.snapshot()
    await leader.close()
    await follower.close()


async def test_writer_acks_every_publish_once_after_commit(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock
) -> None:
    acks: list[tuple[str, bytes]] = []
    host, leader, entries = await one_node_leader(
        tmp_path / "leader", lambda subject, reply, hdrs, payload: acks.append((subject, bytes(payload))))
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        await until_leader(host)
        nursery.start_soon(leader.run_writer)
        for i in range(40):
            leader.enqueue_publish("s.a", f"r{i}", DUP if i == 7 else None, b"x")
            if i % 9 == 0:
                await trio.sleep(0.01)  # several entries
        with trio.fail_after(30):
            while len(acks) < 40:
                await trio.sleep(0.01)
        await trio.sleep(1)  # a second ack would come within this
        nursery.cancel_scope.cancel()
    assert sorted(subject for subject, _ in acks) == sorted(f"r{i}" for i in range(40))
    seqs = {subject: json.loads(body)["seq"] for subject, body in acks}
    assert [seqs[f"r{i}"] for i in range(40)] == list(range(1, 41))
    assert len([e for e in entries if e.kind is EntryKind.NORMAL]) > 2
    assert leader.proposed == {}
    await leader.close()
