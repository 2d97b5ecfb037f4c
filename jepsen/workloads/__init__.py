"""Workloads: what the clients do during a run, how the run ends, and which checker judges it.

A workload has `setup` (create its stream or bucket once the cluster is ready), `clients` (the
coroutines of its client processes, each bound to one node, running until the stop event), and
`final` (after the nemesis has healed everything: drain and read back). `check` runs the pure
checker on the recorded history.
"""

from __future__ import annotations

from jepsen.workloads.base import RunContext, Workload
from jepsen.workloads.kv import KvWorkload
from jepsen.workloads.queue import QueueWorkload
from jepsen.workloads.set import SetWorkload

WORKLOADS: dict[str, type[Workload]] = {
    "queue": QueueWorkload,
    "kv": KvWorkload,
    "set": SetWorkload,
}

__all__ = ["WORKLOADS", "RunContext", "Workload"]
