"""The meta and stream state machines on the Raft core, in the deterministic simulator.

`AppCluster` is the simulator's cluster (raft/testing/sim.py) whose proposals are real commands:
meta commands (stream create/update/delete, server registration, durable consumer
assignments; meta/assignments.py) and stream-group entries (batches of publishes with dedup ids,
purges, deletes, expiry, removal of acked messages of interest/workqueue streams, consumer
state; jetstream/cluster_codec.py). Every replica applies its committed entries to its own
`MetaState` and `StreamStateMachine` over a memory store, exactly as the servers do, and after
every applied entry its content hash (meta digest + store content digest) is compared with the
hash any other replica had at the same index: a difference is a `Violation`. The chaos schedule
(crashes, power loss, corruption, partitions, membership changes, transfers) is the simulator's
own. Log compaction is off here, so a lagging replica always catches up from the log.
"""

from __future__ import annotations

import hashlib
import random

from jetstream.cluster_codec import SaveConsumer, decode_batch, encode_batch, sub_index
from jetstream.config import StreamConfig
from jetstream.store.memory import MemoryStore
from jetstream.stream import DeleteMsg, Expire, Publish, PurgeCmd, RemoveAcked, StreamStateMachine
from meta.assignments import (
    AssignConsumer,
    CreateStream,
    DeleteStream,
    MetaState,
    RegisterServer,
    UnassignConsumer,
    UpdateStream,
    decode_command,
    encode_command,
)
from raft.testing.chaos import run_seed
from raft.testing.invariants import Violation
from raft.testing.sim import Cluster, SimNode
from raft.types import EntryKind, Ready

SEEDS = 60
STEPS = 150
STREAM_CONFIG = StreamConfig.from_json(
    {"name": "S", "subjects": ["s.>"], "max_msgs": 40, "max_msgs_per_subject": 12,
     "duplicate_window": 2_000_000_000, "max_age": 60_000_000_000}
)


class AppReplica:
    def __init__(self) -> None:
        self.meta = MetaState()
        self.stream = StreamStateMachine(STREAM_CONFIG, MemoryStore())
        self.skip_first_publish = False  # a deliberately broken replica (the check's own test)

    def apply(self, index: int, data: bytes) -> None:
        if data[:1] == b"M":
            self.meta.apply(decode_command(data[1:]), index)
            return
        cmds = decode_batch(data[1:])
        if self.skip_first_publish and len(cmds) > 1 and isinstance(cmds[0], Publish):
            cmds = cmds[1:]
        for k, cmd in enumerate(cmds):
            if isinstance(cmd, SaveConsumer):
                self.stream.store.save_consumer(cmd.name, cmd.blob)
            else:
                self.stream.apply(cmd, sub_index(index, k))

    def content_hash(self) -> str:
        return hashlib.sha256((self.meta.digest() + self.stream.store.content_digest()).encode()).hexdigest()


def command_for(seed: int, n: int) -> bytes:
    """The n-th proposal of a run: deterministic in (seed, n)."""
    rng = random.Random(f"app-{seed}-{n}")
    if rng.random() < 0.25:
        name = rng.choice("ABC")
        subjects = [rng.choice(["a", "b", "a.*", "c.>"])]
        cmd = rng.choice([
            CreateStream(name, {"name": name, "subjects": subjects}, ("n1", "n2", "n3"), n),
            UpdateStream(name, {"name": name, "subjects": subjects}),
            DeleteStream(name),
            RegisterServer(rng.choice(["n1", "n2", "n3"]), f"server-{n}", "c", ()),
            AssignConsumer(name, rng.choice(["C", "D"]), {"durable_name": "C", "n": n}, n),
            UnassignConsumer(name, rng.choice(["C", "D"])),
        ])
        return b"M" + encode_command(cmd)
    cmds: list = []
    for i in range(rng.randint(1, 4)):
        ts_ns = n * 1_000_000 + i
        roll = rng.random()
        if roll < 0.75:
            hdr = b"NATS/1.0\r\nNats-Msg-Id: id%d\r\n\r\n" % rng.randint(0, 20) if rng.random() < 0.4 else None
            cmds.append(Publish(f"s.{rng.randint(0, 4)}", b"x" * rng.randint(0, 30), ts_ns, hdr))
        elif roll < 0.85:
            cmds.append(DeleteMsg(rng.randint(1, 60)))
        elif roll < 0.9:
            cmds.append(PurgeCmd(filter=rng.choice([None, "s.1"]), keep=rng.choice([None, 3])))
        elif roll < 0.93:
            cmds.append(Expire(ts_ns + rng.randint(0, 10**11)))
        elif roll < 0.97:  # interest/workqueue removal of acked messages, decided by the leader
            cmds.append(RemoveAcked(tuple(rng.sample(range(1, 60), rng.randint(1, 5)))))
        else:
            cmds.append(SaveConsumer("C", b"state-%d" % n))
    return b"S" + encode_batch(cmds)


class AppCluster(Cluster):
    """The simulator with the JetStream meta and stream state machines applied on every node."""

    def _apps(self) -> dict[str, AppReplica]:
        apps = self.__dict__.get("_app_replicas")
        if apps is None:
            apps = self.__dict__["_app_replicas"] = {}
            self.__dict__["_hash_at"] = {}
        return apps

    def _start(self, node: SimNode, membership, *rest) -> None:  # type: ignore[no-untyped-def]
        self._apps()[node.node_id] = AppReplica()  # replays its committed log from index 1
        super()._start(node, membership, *rest)

    def propose(self, data: bytes | None = None) -> bool:
        return super().propose(data if data is not None else command_for(self.seed, self.proposed))

    def _maybe_compact(self, node: SimNode) -> None:
        return  # no snapshots: replicas rebuild the application state from the log

    def _apply(self, node: SimNode, ready: Ready) -> None:
        super()._apply(node, ready)
        app = self._apps()[node.node_id]
        hash_at: dict[int, str] = self.__dict__["_hash_at"]
        for e in ready.committed_entries:
            if e.kind is not EntryKind.NORMAL or not e.data[:1] in (b"M", b"S"):
                continue
            app.apply(e.index, e.data)
            digest = app.content_hash()
            seen = hash_at.setdefault(e.index, digest)
            if seen != digest:
                raise Violation("app_content", f"{node.node_id} differs from another replica at index {e.index}")


def test_replicas_agree_by_content_over_many_seeds() -> None:
    failures = []
    applied_somewhere = 0
    for seed in range(SEEDS):
        result = run_seed(seed, STEPS, cluster_cls=AppCluster)
        applied_somewhere += result.acked
        if not result.ok:
            failures.append((seed, result.invariant, result.violation))
    assert not failures, failures
    assert applied_somewhere > SEEDS * 10  # the runs did real work


def test_a_diverging_replica_is_caught() -> None:
    """The check can fail: a replica whose state machine skips one publish of a batch."""

    class Broken(AppCluster):
        def _start(self, node: SimNode, membership, *rest) -> None:  # type: ignore[no-untyped-def]
            super()._start(node, membership, *rest)
            self._apps()[node.node_id].skip_first_publish = node.node_id == "n2"

    results = [run_seed(seed, STEPS, cluster_cls=Broken) for seed in range(4)]
    assert any(r.invariant == "app_content" for r in results), [r.invariant for r in results]
