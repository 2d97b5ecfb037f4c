"""Deterministic simulation of Raft clusters: simulated network and disk, invariant checkers and
a seeded sweep (`python -m raft.testing.sweep`).

- simnet.py      SimNet: seeded delay/reorder/drop/duplicate, partitions, one-way blocks, pauses.
- simdisk.py     SimDisk: written and durable layers per file, torn writes, bit flips,
                 truncation, rolled-back chunks, wipes.
- simstore.py    the Raft storage of one simulated node on SimDisk (chained checksums, a sync
                 watermark) and the repair decision on load.
- statemachine.py  a hash-chain state machine: replicas compare by content.
- invariants.py  InvariantChecker: election safety, double votes, repair nodes never vote or
                 lead, log matching, committed entries never change, commit never regresses,
                 leader completeness, state machine safety, stale reads, acknowledged writes.
- sim.py         Cluster: RaftNodes + driver + faults on one tick clock, trace and trace hash.
- chaos.py       seeded fault schedules and the liveness check after healing (`run_seed`).
- sweep.py       the CLI; a failure prints `seed=N` and the command that replays it exactly.
- scenario.py    (the core's scripted scenario harness, separate from the above).
"""
