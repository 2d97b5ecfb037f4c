"""Run many seeded chaos schedules: `python -m raft.testing.sweep --seeds 1000 [--start S] [--steps N]`.

Each seed builds a fresh simulated cluster (raft/testing/chaos.py), injects a seeded fault
schedule for `--steps` ticks, heals, and checks liveness; invariants are checked after every step.
A failure prints `seed=N`, the violated invariant, the trace hash and the exact command that
replays it (same seed and steps give the same trace, byte for byte). The summary line reports
seeds per second.

KNOWN_FAILING lists default-mode seeds that fail because of a reported bug in the Raft core (never
a bug of the simulator). They still run and print, but do not make the exit status non-zero, and
CI leaves them out of its default set (currently empty: the core fixed every one found).
OPEN_STORM_BUGS are open core bugs found with `--storm`; tests/sim replays them as expected
failures; once fixed they move to FIXED_STORM_BUGS, replayed in CI.
REGRESSION_SEEDS found fixed bugs and run in CI.

Modes: `--stale-repair` hands a damaged node its whole past log instead of its committed prefix;
`--storm` injects about 7x more faults per tick; `--membership` runs the membership schedule
(4 voters, membership changes left on a minority, frequent wipes, and restarts told the committed
config before the latest: the class of tests/sim/test_repair_gaps.py gap 2). A replay needs the
same flags (printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

from raft.testing.chaos import RunResult, run_seed

DEFAULT_STEPS = 200

# seed -> reason. Only for core bugs written up in the raft/testing report (see docstring).
# History: seeds 29, 136, 239, 299, 355 (and 953, 1322 in a longer hunt) failed on earlier cores
# because a leader never re-sent entries to a follower whose disk had been wiped: it ignored the
# follower's rejections as stale (fixed in bf95ca9), and an idle leader never noticed the
# regression at all (fixed in 7205e0d). tests/sim/test_sim.py::test_damaged_follower_catches_up
# is the minimal repro.
KNOWN_FAILING: dict[int, str] = {}

# Open core bugs found with `--storm` (not in CI's default set; replay with the flags shown).
STALE_REPAIR_TARGET = (
    "core: a repairing node takes its catch-up target from the first leader it hears after term "
    "discovery; if that leader's log had an uncommitted tail which a later leader dropped, the "
    "target is never reached on an idle cluster and the node stays repair-needed (never votes); "
    "minimal repro tests/sim/test_sim.py::test_repairing_node_heard_a_deposed_leader_first"
)
STALE_DISCOVERY_CONFIG = (
    "core: term discovery counts answers against the config in the repairing node's own log; if "
    "members were removed since, it never gathers enough answers, and as it ignores appends "
    "while discovering it never learns the newer config: repair-needed forever"
)
OPEN_STORM_BUGS: dict[str, str] = {}
# Storm bugs since fixed: replayed in CI as regressions (tests/sim/test_sim.py).
FIXED_STORM_BUGS: dict[str, str] = {
    "--seeds 1 --start 5159 --stale-repair --storm": STALE_REPAIR_TARGET + " (fixed a7afa7d)",
    "--seeds 1 --start 110635 --stale-repair --storm": STALE_REPAIR_TARGET + " (fixed a7afa7d)",
    "--seeds 1 --start 101107 --storm": STALE_DISCOVERY_CONFIG + " (fixed 05d0ea5)",
}

# `--membership` seeds (the class of tests/sim/test_repair_gaps.py gap 2) that fail because of
# an open core bug; tests/sim/test_repair_gaps.py leaves them out of its seed set.
WIPED_VOTE_FOR_REMOVED = (
    "core: a node wiped after voting for a candidate whose removal then committed votes again in "
    "that term: clearing repair waits for every voter of the configs it knows, and the removed "
    "(retired) candidate is in none of them (double_vote; no second leader: the candidate is gone)"
)
KNOWN_MEMBERSHIP_FAILING: dict[tuple[int, bool], str] = {  # (seed, stale_repair) -> bug
    (727, False): WIPED_VOTE_FOR_REMOVED,
    (20233, True): WIPED_VOTE_FOR_REMOVED,
    (20809, True): WIPED_VOTE_FOR_REMOVED,
}

# (seed, stale_repair) -> the bug it found with the current schedules; all fixed, all run in CI
# (tests/sim/test_sim.py). Earlier finds (above) no longer replay the same schedule; their
# directed repro is test_damaged_follower_catches_up.
REGRESSION_SEEDS: dict[tuple[int, bool], str] = {
    (253, True): "core: repairing follower committed its stale suffix from a heartbeat (fixed aa636ab)",
    (21555, False): "core: wiped node voted twice in one term after repair (fixed aa636ab)",
    (337, False): "sim: a wiped node was told the initial config and its repair term discovery waited "
    "forever on removed voters; it is now told the latest committed config, as meta would",
    (50683, True): "sim: same as 337, when no node was up to ask",
    (41254, False): "sim: catch-up check used a node's uncommitted config that the new leader dropped",
    (41402, False): "sim: a restarted node was given a config-less new member's empty membership",
}


def sweep(seeds: Iterable[int], steps: int = DEFAULT_STEPS) -> list[RunResult]:
    return [run_seed(seed, steps) for seed in seeds]


def describe(r: RunResult, steps: int, extra: str = "") -> str:
    if "--membership" in extra:
        known = KNOWN_MEMBERSHIP_FAILING.get((r.seed, "--stale-repair" in extra))
    else:
        known = KNOWN_FAILING.get(r.seed)
    tag = f" (KNOWN: {known})" if known else ""
    tail = "".join(f"\n    {line}" for line in r.trace_tail)
    return (
        f"seed={r.seed} invariant={r.invariant}{tag}\n  {r.violation}\n  trace={r.trace_hash}\n"
        f"  replay: python -m raft.testing.sweep --seeds 1 --start {r.seed} --steps {steps}{extra}\n"
        f"  last events (tick, event, ...):{tail}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raft.testing.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100, help="how many seeds")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="chaos ticks per seed")
    p.add_argument("--hashes", action="store_true", help="print every seed's trace hash")
    p.add_argument("--tail", type=int, default=40, help="trace events shown for a failure")
    p.add_argument("--storm", action="store_true", help="about 7x more faults per tick")
    p.add_argument(
        "--membership",
        action="store_true",
        help="membership schedule: 4 voters, changes left on a minority, wipes, lagging restart config",
    )
    p.add_argument(
        "--stale-repair",
        action="store_true",
        help="damaged stores hand the core their whole past log, not just its committed prefix",
    )
    args = p.parse_args(argv)
    t0, cpu0 = time.perf_counter(), time.process_time()
    unexpected = known = 0
    for seed in range(args.start, args.start + args.seeds):
        r = run_seed(
            seed, args.steps, stale_repair=args.stale_repair, storm=args.storm, tail=args.tail,
            membership=args.membership,
        )
        if args.hashes:
            print(f"seed={seed} trace={r.trace_hash} ok={r.ok} acked={r.acked} ticks={r.ticks}")
        if not r.ok:
            flags = (
                (" --stale-repair" if args.stale_repair else "")
                + (" --storm" if args.storm else "")
                + (" --membership" if args.membership else "")
            )
            print(describe(r, args.steps, flags), flush=True)
            if args.membership and (seed, args.stale_repair) in KNOWN_MEMBERSHIP_FAILING:
                known += 1
            elif not args.membership and seed in KNOWN_FAILING:
                known += 1
            else:
                unexpected += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rate = args.seeds / elapsed if elapsed > 0 else float("inf")
    print(
        f"{args.seeds} seeds ({args.start}..{args.start + args.seeds - 1}), steps={args.steps}: "
        f"{unexpected} failed, {known} known failures, {elapsed:.1f}s wall ({cpu:.1f}s cpu), "
        f"{rate:.1f} seeds/s"
    )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
