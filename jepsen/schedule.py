# pure-core
"""Fault schedule: which faults happen when, chosen from a seed.

The run alternates quiet gaps and fault windows. Window i uses the i-th enabled family (round
robin, so a short run still exercises every family asked for) and a variant drawn from the seeded
random generator; targets are node indices, also drawn from the seed. Faults that depend on the
live cluster (the current stream leader) are resolved when they start. The last stretch of the run
is left quiet so the system can recover before the final reads; the runner heals everything at
the end regardless.

Families and variants:
- kill: kill -9 one node / a majority / all nodes; restarted when the window ends.
- pause: SIGSTOP one node / a majority; SIGCONT when it ends.
- partition: halves (a random minority cut from the majority), isolate the stream leader (or a
  random node when no leader is known at that moment),
  bridge (the minority nodes can each reach one bridge node only; with 3 nodes: two nodes that
  cannot see each other but both see the third), asymmetric (traffic a -> b dropped, b -> a flows).
- latency: extra delay on every cluster link.
- stepdown: ask the stream leader to step down (instantaneous).
- wipe: kill -9 the stream leader (a planned node when none is known), delete its store, and
  restart it empty when the window ends (disk loss on one node; with R1 streams it loses data,
  which is how the harness proves it can see loss).
- scale: STREAM.UPDATE of the workload's stream to one replica fewer (an R1 stream to R2), back to
  the original count when the window ends (see nemesis_admin.py).
- move: STREAM.PEER.REMOVE of one of the stream's peers (the leader or a follower, drawn from the
  seed; `nodes` holds the planned follower), so the target re-places that replica; on a stream
  with a replica on every server the window scales down by one first to make room, and restores
  the original count when it ends.
The current replica count and peers are looked up when the window starts.
Clock skew is not offered: changing a process's clock needs privileges (CAP_SYS_TIME or
libfaketime) that this harness does not assume.
"""

from __future__ import annotations

import enum
import random
from typing import Any

import attrs

FAMILIES = ("kill", "pause", "partition", "latency", "stepdown", "wipe", "scale", "move")


class FaultKind(enum.Enum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION_HALVES = "partition-halves"
    PARTITION_LEADER = "partition-leader"
    PARTITION_BRIDGE = "partition-bridge"
    PARTITION_ASYMMETRIC = "partition-asymmetric"
    LATENCY = "latency"
    STEPDOWN = "stepdown"
    WIPE = "wipe"
    SCALE = "scale"
    MOVE = "move"


@attrs.frozen
class FaultWindow:
    start_s: float
    end_s: float
    kind: FaultKind
    nodes: tuple[int, ...] = ()  # targets (kill/pause), or the minority side / bridge layout
    detail: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "kind": self.kind.value,
            "nodes": list(self.nodes),
            "detail": dict(self.detail),
        }


@attrs.frozen
class ScheduleConfig:
    time_s: float
    n_nodes: int
    families: tuple[str, ...]
    quiet_min_s: float = 2.0
    quiet_max_s: float = 4.0
    fault_min_s: float = 3.0
    fault_max_s: float = 6.0
    tail_quiet_s: float = 3.0
    latency_ms: tuple[int, int] = (50, 300)

    @classmethod
    def for_run(cls, time_s: float, n_nodes: int, families: tuple[str, ...]) -> ScheduleConfig:
        """Shorter windows for short (CI-sized) runs so each family still gets a turn."""
        if time_s < 40:
            return cls(time_s, n_nodes, families, 1.0, 2.0, 2.5, 4.0, 3.0)
        return cls(time_s, n_nodes, families)


def _majority(n: int) -> int:
    return n // 2 + 1


def _kill_or_pause(rng: random.Random, kind: FaultKind, n: int, allow_all: bool) -> tuple[int, ...]:
    sizes = [1, _majority(n)] + ([n] if allow_all else [])
    size = rng.choice(sizes)
    return tuple(sorted(rng.sample(range(n), size)))


def _partition(rng: random.Random, n: int) -> tuple[FaultKind, tuple[int, ...], tuple[tuple[str, Any], ...]]:
    kind = rng.choice(
        [FaultKind.PARTITION_HALVES, FaultKind.PARTITION_LEADER, FaultKind.PARTITION_BRIDGE,
         FaultKind.PARTITION_ASYMMETRIC]
    )  # fmt: skip
    nodes = list(range(n))
    rng.shuffle(nodes)
    if kind is FaultKind.PARTITION_HALVES:
        return kind, tuple(sorted(nodes[: n - _majority(n)])), ()
    if kind is FaultKind.PARTITION_LEADER:
        return kind, (nodes[0],), ()  # the leader is looked up at the start; nodes[0] if none
    if kind is FaultKind.PARTITION_BRIDGE:
        return kind, tuple(nodes), (("bridge", nodes[0]),)
    return kind, (nodes[0], nodes[1]), (("from", nodes[0]), ("to", nodes[1]))


def _window(rng: random.Random, cfg: ScheduleConfig, family: str, start_s: float, end_s: float) -> FaultWindow:
    n = cfg.n_nodes
    if family == "kill":
        return FaultWindow(start_s, end_s, FaultKind.KILL, _kill_or_pause(rng, FaultKind.KILL, n, True))
    if family == "pause":
        return FaultWindow(start_s, end_s, FaultKind.PAUSE, _kill_or_pause(rng, FaultKind.PAUSE, n, False))
    if family == "partition":
        kind, nodes, detail = _partition(rng, n)
        return FaultWindow(start_s, end_s, kind, nodes, detail)
    if family == "latency":
        delay = rng.randint(*cfg.latency_ms)
        return FaultWindow(start_s, end_s, FaultKind.LATENCY, (), (("delay_ms", delay),))
    if family == "stepdown":
        return FaultWindow(start_s, start_s, FaultKind.STEPDOWN)
    if family == "wipe":
        return FaultWindow(start_s, end_s, FaultKind.WIPE, (rng.randrange(n),))
    if family == "scale":
        return FaultWindow(start_s, end_s, FaultKind.SCALE)
    if family == "move":
        which = rng.choice(["leader", "follower"])
        return FaultWindow(start_s, end_s, FaultKind.MOVE, (rng.randrange(n),), (("peer", which),))
    raise ValueError(f"unknown nemesis family {family!r}; choose from {FAMILIES}")


def plan(seed: int, cfg: ScheduleConfig) -> list[FaultWindow]:
    for family in cfg.families:
        if family not in FAMILIES:
            raise ValueError(f"unknown nemesis family {family!r}; choose from {FAMILIES}")
    if not cfg.families:
        return []
    rng = random.Random(seed)
    windows: list[FaultWindow] = []
    t = rng.uniform(cfg.quiet_min_s, cfg.quiet_max_s)
    last_s = cfg.time_s - cfg.tail_quiet_s
    for i in range(10_000):  # bounded; ends by time
        duration = rng.uniform(cfg.fault_min_s, cfg.fault_max_s)
        if t + duration > last_s:
            break
        family = cfg.families[i % len(cfg.families)]
        window = _window(rng, cfg, family, round(t, 3), round(t + duration, 3))
        windows.append(window)
        t = window.end_s + rng.uniform(cfg.quiet_min_s, cfg.quiet_max_s)
    return windows
