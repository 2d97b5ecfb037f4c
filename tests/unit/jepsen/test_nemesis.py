"""The nemesis maps each fault window onto process signals and link cuts (fake cluster, real
proxies with nothing behind them), records it, and undoes it."""

from __future__ import annotations

import asyncio

import attrs

from jepsen.db import NodeState
from jepsen.history import History
from jepsen.nemesis import Nemesis
from jepsen.proxy import ClusterNet
from jepsen.schedule import FaultKind, FaultWindow


@attrs.define
class FakeSpec:
    name: str


@attrs.define
class FakeNode:
    spec: FakeSpec
    state: NodeState = NodeState.RUNNING

    def alive(self) -> bool:
        return self.state in (NodeState.RUNNING, NodeState.PAUSED)


@attrs.define
class FakeCluster:
    nodes: list[FakeNode]
    calls: list[tuple[str, int]] = attrs.field(factory=list)

    def index_of(self, name: str) -> int | None:
        return next((i for i, n in enumerate(self.nodes) if n.spec.name == name), None)

    def _set(self, what: str, i: int, state: NodeState) -> None:
        self.calls.append((what, i))
        self.nodes[i].state = state

    def kill(self, i: int) -> None:
        self._set("kill", i, NodeState.KILLED)

    def start(self, i: int) -> None:
        self._set("start", i, NodeState.RUNNING)

    def pause(self, i: int) -> None:
        self._set("pause", i, NodeState.PAUSED)

    def resume(self, i: int) -> None:
        self._set("resume", i, NodeState.RUNNING)

    def wipe(self, i: int) -> None:
        assert self.nodes[i].state is NodeState.KILLED
        self.calls.append(("wipe", i))


def _blocked_pairs(net: ClusterNet) -> set[tuple[int, int]]:
    """(a, b) such that bytes from a to b are blocked."""
    return {(s, d) for (s, d), link in net.links.items() if link.up.blocked}


class LeaderIsN3(Nemesis):
    async def leader_index(self) -> int | None:
        return 2


def run_with_nemesis(scenario, nemesis_cls: type[Nemesis] = Nemesis) -> None:
    async def main() -> None:
        net = await ClusterNet.start([1, 2, 3])
        cluster = FakeCluster([FakeNode(FakeSpec(f"n{i + 1}")) for i in range(3)])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        nemesis = nemesis_cls(cluster, net, History(lambda: loop.time() - t0), "s")
        try:
            await scenario(nemesis, cluster, net)
        finally:
            await net.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_partitions_cut_the_right_links() -> None:
    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net: ClusterNet) -> None:
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.PARTITION_HALVES, (1,)))
        assert applied == {"cut": ["n1|n2", "n2|n3"]}
        assert _blocked_pairs(net) == {(0, 1), (1, 0), (1, 2), (2, 1)}
        net.heal()
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.PARTITION_BRIDGE, (2, 0, 1)))
        assert applied["bridge"] == "n3"
        assert _blocked_pairs(net) == {(0, 1), (1, 0)}  # n1 and n2 only meet through n3
        net.heal()
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.PARTITION_ASYMMETRIC, (0, 2)))
        assert applied == {"blocked": "n1->n3"}
        assert _blocked_pairs(net) == {(0, 2)}
        assert net.links[(2, 0)].down.blocked and not net.links[(2, 0)].up.blocked
        net.heal()
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.LATENCY, (), (("delay_ms", 120),)))
        assert all(link.up.delay_ms == 120 for link in net.links.values())

    run_with_nemesis(scenario)


def test_isolate_leader_uses_the_current_leader() -> None:
    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net: ClusterNet) -> None:
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.PARTITION_LEADER, (0,)))
        assert applied == {"isolated": "n3", "note": "stream leader"}
        assert _blocked_pairs(net) == {(0, 2), (2, 0), (1, 2), (2, 1)}
        window = FaultWindow(0, 1, FaultKind.WIPE, (0,))
        applied = await nemesis.apply(window)
        assert applied == {"wiped": "n3", "note": "stream leader"}
        assert cluster.calls == [("kill", 2), ("wipe", 2)]
        nemesis.undo(window, applied)
        assert cluster.calls[-1] == ("start", 2)

    run_with_nemesis(scenario, LeaderIsN3)


def test_run_applies_undoes_and_records_each_window() -> None:
    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net: ClusterNet) -> None:
        windows = [
            FaultWindow(0.0, 0.05, FaultKind.KILL, (0, 1)),
            FaultWindow(0.1, 0.15, FaultKind.PAUSE, (2,)),
            FaultWindow(0.2, 0.25, FaultKind.PARTITION_HALVES, (0,)),
        ]
        await nemesis.run(windows, asyncio.Event())
        assert cluster.calls == [("kill", 0), ("kill", 1), ("start", 0), ("start", 1), ("pause", 2), ("resume", 2)]
        assert _blocked_pairs(net) == set()  # healed after the partition window
        recorded = [op for op in nemesis.history.ops if op.f == "nemesis"]
        assert [op.value["kind"] for op in recorded] == ["kill", "pause", "partition-halves"]
        assert all(op.complete_s >= op.invoke_s for op in recorded)
        assert recorded[0].result == {"killed": ["n1", "n2"]}

    run_with_nemesis(scenario)


def test_stop_ends_the_current_fault_early_and_heal_all_restores() -> None:
    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net: ClusterNet) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(nemesis.run([FaultWindow(0.0, 30.0, FaultKind.PAUSE, (1,))], stop))
        for _ in range(200):  # wait (bounded) for the pause to be applied
            if cluster.nodes[1].state is NodeState.PAUSED:
                break
            await asyncio.sleep(0.01)
        assert cluster.nodes[1].state is NodeState.PAUSED
        stop.set()
        await asyncio.wait_for(task, 5)
        assert cluster.nodes[1].state is NodeState.RUNNING
        cluster.kill(0)
        net.cut(0, 1)
        nemesis.heal_all()
        assert cluster.nodes[0].state is NodeState.RUNNING and _blocked_pairs(net) == set()

    run_with_nemesis(scenario)


class NoLeader(Nemesis):
    async def leader_index(self) -> int | None:
        return None


def test_isolate_leader_falls_back_to_the_planned_node_without_a_leader() -> None:
    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net: ClusterNet) -> None:
        applied = await nemesis.apply(FaultWindow(0, 1, FaultKind.PARTITION_LEADER, (1,)))
        assert applied["isolated"] == "n2" and "no leader" in applied["note"]
        assert _blocked_pairs(net) == {(0, 1), (1, 0), (1, 2), (2, 1)}

    run_with_nemesis(scenario, NoLeader)
