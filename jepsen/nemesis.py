"""Nemesis: applies the seeded fault schedule (schedule.py) to the live cluster, then heals.

For each window it waits for the window's start (relative to the run clock), applies the fault
(kill -9 / SIGSTOP of nodes through db.Cluster, link cuts and delays through proxy.ClusterNet, or
a stream leader stepdown, replica scaling or a replica move through the JetStream API, see
nemesis_admin.py), waits for the window's end, and undoes it: killed nodes are restarted, paused
ones continued, the network healed, the stream scaled back to its original replica count (and
waited for, bounded). A target that refuses an admin request has the refusal recorded with the
window (`ok: false`, the API error) and the run goes on. Each window is recorded in
the history as a `nemesis` op spanning the time the fault was really in force, with what was done
(which nodes, which links), so checkers and plots can line anomalies up with faults. `heal_all`
is the safety net run at the end whatever happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import structlog

from jepsen import client, nemesis_admin
from jepsen.db import Cluster, NodeState
from jepsen.history import NEMESIS_PROCESS, History, OpType
from jepsen.proxy import ClusterNet
from jepsen.schedule import FaultKind, FaultWindow

log = structlog.get_logger("jepsen.nemesis")
ADMIN_TIMEOUT_S = 1.5
LEADER_LOOKUPS = 2


@attrs.define
class Nemesis:
    cluster: Cluster
    net: ClusterNet
    history: History
    stream: str
    on_change: Callable[[str], None] = lambda _text: None
    current: str = "none"
    admin: Any = None  # nemesis_admin.Admin; NatsAdmin over the cluster unless given

    def __attrs_post_init__(self) -> None:
        if self.admin is None:
            self.admin = nemesis_admin.NatsAdmin(self.cluster, self.history.now_s)

    def _names(self, nodes: list[int] | tuple[int, ...]) -> list[str]:
        return [self.cluster.nodes[i].spec.name for i in nodes]

    async def _admin_call(self, fn) -> Any:
        """Run fn(nc) against the first running node that answers; None if none does."""
        for node in self.cluster.nodes:
            if node.state is not NodeState.RUNNING:
                continue
            try:
                nc = await client.connect(node.spec.client_url, "jepsen-nemesis", ADMIN_TIMEOUT_S)
            except Exception:
                continue
            try:
                return await fn(nc)
            except Exception:
                continue
            finally:
                await nc.close()
        return None

    async def leader_index(self) -> int | None:
        name = await self._admin_call(lambda nc: client.stream_leader(nc, self.stream, ADMIN_TIMEOUT_S))
        return self.cluster.index_of(name) if name else None

    async def apply(self, window: FaultWindow) -> dict[str, Any]:
        kind = window.kind
        if kind is FaultKind.KILL:
            for i in window.nodes:
                self.cluster.kill(i)
            return {"killed": self._names(window.nodes)}
        if kind is FaultKind.PAUSE:
            for i in window.nodes:
                self.cluster.pause(i)
            return {"paused": self._names(window.nodes)}
        if kind is FaultKind.PARTITION_HALVES:
            rest = [i for i in range(len(self.cluster.nodes)) if i not in window.nodes]
            return {"cut": self._cut_names(self.net.partition([list(window.nodes), rest]))}
        if kind is FaultKind.PARTITION_LEADER:
            return await self._isolate_leader(window.nodes[0] if window.nodes else 0)
        if kind is FaultKind.PARTITION_BRIDGE:
            return {"bridge": self._names(window.nodes[:1])[0], "cut": self._cut_names(self._bridge(window.nodes))}
        if kind is FaultKind.PARTITION_ASYMMETRIC:
            a, b = window.nodes
            self.net.block(a, b)
            return {"blocked": f"{self._names([a])[0]}->{self._names([b])[0]}"}
        if kind is FaultKind.LATENCY:
            delay_ms = dict(window.detail)["delay_ms"]
            self.net.set_delay_ms(delay_ms)
            return {"delay_ms": delay_ms}
        if kind is FaultKind.WIPE:
            target, note = await self._leader_or(window.nodes[0])
            self.cluster.kill(target)
            self.cluster.wipe(target)
            return {"wiped": self._names([target])[0], "note": note}
        if kind is FaultKind.SCALE:
            return await nemesis_admin.scale_start(self.admin, self.stream, len(self.cluster.nodes))
        if kind is FaultKind.MOVE:
            which = dict(window.detail).get("peer", "follower")
            planned = self._names(window.nodes[:1])[0] if window.nodes else ""
            return await nemesis_admin.move_start(self.admin, self.stream, len(self.cluster.nodes), which, planned)
        if kind is FaultKind.STEPDOWN:
            done = await self._admin_call(lambda nc: client.stepdown(nc, self.stream, None, ADMIN_TIMEOUT_S))
            return {"stepdown": bool(done and done.get("success"))}
        raise ValueError(f"unhandled fault {kind}")

    def _cut_names(self, pairs: list[tuple[int, int]]) -> list[str]:
        return [f"{self._names([a])[0]}|{self._names([b])[0]}" for a, b in pairs]

    def _bridge(self, order: tuple[int, ...]) -> list[tuple[int, int]]:
        """order[0] is the bridge; the others split in two sides that only meet through it."""
        others = list(order[1:])
        side_a, side_b = others[: len(others) // 2], others[len(others) // 2 :]
        for a in side_a:
            for b in side_b:
                self.net.cut(a, b)
        return [(a, b) for a in side_a for b in side_b]

    async def _leader_or(self, fallback: int) -> tuple[int, str]:
        """The stream leader's index, or `fallback` when no leader is known right now."""
        for _ in range(LEADER_LOOKUPS):
            leader = await self.leader_index()
            if leader is not None:
                return leader, "stream leader"
        return fallback, "no leader known: planned node"

    async def _isolate_leader(self, fallback: int) -> dict[str, Any]:
        isolated, note = await self._leader_or(fallback)
        rest = [i for i in range(len(self.cluster.nodes)) if i != isolated]
        self.net.partition([[isolated], rest])
        return {"isolated": self._names([isolated])[0], "note": note}

    async def undo_async(self, window: FaultWindow, applied: dict[str, Any]) -> None:
        """undo, plus the admin faults' way back (adds what it got to `applied`)."""
        if window.kind is FaultKind.SCALE:
            if "original" in applied and (applied.get("ok") or nemesis_admin.unanswered(applied)):
                await nemesis_admin.restore(self.admin, self.stream, applied["original"], applied)
        elif window.kind is FaultKind.MOVE:
            await nemesis_admin.move_end(self.admin, self.stream, applied)
        else:
            self.undo(window, applied)

    def undo(self, window: FaultWindow, applied: dict[str, Any]) -> None:
        if window.kind in (FaultKind.STEPDOWN, FaultKind.SCALE, FaultKind.MOVE):
            return  # nothing held in force by processes or links (admin faults: see undo_async)
        if window.kind is FaultKind.KILL:
            for i in window.nodes:
                self.cluster.start(i)
        elif window.kind is FaultKind.WIPE:
            self.cluster.start(self.cluster.index_of(applied["wiped"]))
        elif window.kind is FaultKind.PAUSE:
            for i in window.nodes:
                self.cluster.resume(i)
        else:
            self.net.heal()

    async def run(self, windows: list[FaultWindow], stop: asyncio.Event) -> None:
        for window in windows:
            if not await self._wait_until(window.start_s, stop):
                return
            started_s = self.history.now_s()
            applied = await self.apply(window)
            self.current = f"{window.kind.value} {applied}"
            self.on_change(self.current)
            log.info("nemesis.start", kind=window.kind.value, **{k: str(v) for k, v in applied.items()})
            await self._wait_until(window.end_s, stop)
            await self.undo_async(window, applied)
            self.current = "none"
            self.on_change(self.current)
            self.history.record(
                NEMESIS_PROCESS, "nemesis", OpType.INFO, started_s, window.to_json(), applied
            )
            log.info("nemesis.stop", kind=window.kind.value)

    async def _wait_until(self, t_s: float, stop: asyncio.Event) -> bool:
        """Wait until the run clock reaches t_s; False if the run is stopping first."""
        delay_s = t_s - self.history.now_s()
        if delay_s <= 0:
            return not stop.is_set()
        try:
            await asyncio.wait_for(stop.wait(), delay_s)
            return False
        except asyncio.TimeoutError:
            return True

    def heal_all(self) -> None:
        self.net.heal()
        for i, node in enumerate(self.cluster.nodes):
            if node.state is NodeState.PAUSED:
                self.cluster.resume(i)
            if not node.alive():
                self.cluster.start(i)
