"""The cluster simulator: determinism and replay, the CI seed sweep, directed fault scenarios,
and proof that the checks catch a broken driver."""

from __future__ import annotations

import collections
import os
import random
import pathlib
import subprocess
import sys

import pytest

from raft.testing import sweep
from raft.testing.chaos import RunResult, chaos_step, run_seed, settle
from raft.testing.invariants import Violation
from raft.testing.sim import Cluster, SimConfig
from raft.testing.simdisk import CorruptKind
from raft.config import NodeConfig
from raft.core import RaftNode
from raft.types import Entry, HardState, Membership, Message, MessageType, Ready

ROOT = pathlib.Path(__file__).resolve().parents[2]
CI_SEEDS = 500


def test_same_seed_same_trace_hash() -> None:
    a, b = run_seed(11, 120), run_seed(11, 120)
    assert a == b
    assert a.trace_hash != run_seed(12, 120).trace_hash
    assert a.trace_hash != run_seed(11, 121).trace_hash


def _replay_hash(seed: int, hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-m", "raft.testing.sweep", "--seeds", "1", "--start", str(seed), "--steps", "80", "--hashes"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith(f"seed={seed} trace="))
    return line.split()[1]


def test_replay_is_identical_across_processes_and_hash_seeds() -> None:
    """The sweep's replay command reproduces the in-process trace exactly, whatever the
    interpreter's string-hash randomisation (set iteration order must not leak in)."""
    want = f"trace={run_seed(5, 80).trace_hash}"
    assert _replay_hash(5, "1") == want
    assert _replay_hash(5, "4242") == want


def test_sweep_stale_repair_seeds() -> None:
    """A harsher storage model for damaged disks (`--stale-repair`) over a smaller seed set."""
    failures = [r for r in (run_seed(s, sweep.DEFAULT_STEPS, stale_repair=True) for s in range(1000, 1150)) if not r.ok]
    assert not failures, "\n".join(sweep.describe(r, sweep.DEFAULT_STEPS, " --stale-repair") for r in failures)


@pytest.mark.parametrize(
    "args",
    [pytest.param(a, marks=pytest.mark.xfail(reason=why, strict=False)) for a, why in sorted(sweep.OPEN_STORM_BUGS.items())]
    + sorted(sweep.FIXED_STORM_BUGS),
)
def test_open_storm_bug_replays(args: str) -> None:
    """The open core bugs (sweep.OPEN_STORM_BUGS) must pass once fixed (XPASS until they are
    moved to REGRESSION_SEEDS)."""
    argv = args.split()
    seed = int(argv[argv.index("--start") + 1])
    r = run_seed(seed, sweep.DEFAULT_STEPS, stale_repair="--stale-repair" in argv, storm=True)
    assert r.ok, sweep.describe(r, sweep.DEFAULT_STEPS, " " + " ".join(argv[4:]))


def test_sweep_storm_seeds() -> None:
    """About 7x more faults per tick (`--storm`) over a smaller seed set."""
    failures = [r for r in (run_seed(s, sweep.DEFAULT_STEPS, storm=True) for s in range(2000, 2150)) if not r.ok]
    assert not failures, "\n".join(sweep.describe(r, sweep.DEFAULT_STEPS, " --storm") for r in failures)


@pytest.mark.parametrize("seed,stale_repair", sorted(sweep.REGRESSION_SEEDS))
def test_regression_seed(seed: int, stale_repair: bool) -> None:
    """Seeds that once found a core bug (see sweep.REGRESSION_SEEDS) stay green."""
    r = run_seed(seed, sweep.DEFAULT_STEPS, stale_repair=stale_repair)
    assert r.ok, sweep.describe(r, sweep.DEFAULT_STEPS, " --stale-repair" if stale_repair else "")


def test_sweep_ci_seeds() -> None:
    """R2, R3, R5, R7, R8 over the CI seed set (known core-bug seeds run in their own test)."""
    seeds = [s for s in range(CI_SEEDS) if s not in sweep.KNOWN_FAILING]
    failures = [r for r in sweep.sweep(seeds) if not r.ok]
    assert not failures, "\n".join(sweep.describe(r, sweep.DEFAULT_STEPS) for r in failures)


def test_schedules_exercise_every_fault() -> None:
    """The chaos schedule really injects each fault and the core really takes each path."""
    kinds: collections.Counter[str] = collections.Counter()
    for seed in range(40):
        c = Cluster(seed, SimConfig(n_nodes=3 if seed % 2 == 0 else 5))
        rng = random.Random(f"schedule-{seed}")
        for _ in range(200):
            chaos_step(c, rng)
        kinds.update(str(item[1]) for item in c.trace)
    for kind in [
        "partition", "block", "heal", "pause", "crash", "power_loss", "corrupt", "wipe", "add",
        "change", "transfer", "ack", "compact", "read_state", "skew", "raft.became_leader", "raft.snapshot_installed",
        "raft.repair_done",
    ]:
        assert kinds[kind] > 0, f"no {kind} in 40 seeds: {kinds}"


# -- directed scenarios -----------------------------------------------------------------------


def _leader(c: Cluster, max_ticks: int = 300) -> str:
    for _ in range(max_ticks):
        lead = c.leader()
        if lead is not None:
            return lead.node_id
        c.tick()
    raise AssertionError("no leader")


def quiet(n: int, seed: int = 1) -> Cluster:
    return Cluster(seed, SimConfig(n_nodes=n, drop_rate=0.0, duplicate_rate=0.0))


@pytest.mark.parametrize("victims", ["one", "majority", "all"])
def test_power_loss_never_loses_acknowledged_writes(victims: str) -> None:
    """R1/R2: fsync-before-ack means power loss on any number of nodes loses nothing acked."""
    c = quiet(5)
    _leader(c)
    for _ in range(30):
        c.propose()
        c.tick()
    acked = dict(c.checker.acked)
    assert len(acked) > 10
    ids = sorted(c.nodes)
    c.power_loss({"one": ids[:1], "majority": ids[:3], "all": ids}[victims])
    settle(c)
    assert set(acked) <= set(c.checker.acked)
    assert all(n.sm.applied_index >= max(acked) for n in c.live())


def test_minority_corruption_is_detected_and_the_node_neither_votes_nor_leads() -> None:
    """R3: a corrupted node restarts repair-needed; a second corruption of 3 nodes is refused.
    (That it also catches up is test_damaged_follower_catches_up.)"""
    c = quiet(3, seed=2)
    lead = _leader(c)
    for _ in range(20):
        c.propose()
        c.tick()
    victim = next(n for n in sorted(c.nodes) if n != lead)
    assert c.corrupt(victim, CorruptKind.BITFLIP)
    assert not c.corrupt(lead, CorruptKind.BITFLIP)
    c.restart(victim)
    node = c.nodes[victim]
    assert node.raft is not None and node.raft.repair_needed
    c.crash(lead)  # the victim must not stand in: only the third node may lead
    for _ in range(300):
        c.tick()
        assert node.raft.role.value not in ("leader", "candidate")
    c.restart(lead)
    c.run(100)
    assert c.leader() is not None and c.leader().node_id != victim  # type: ignore[union-attr]


class NoRepairCluster(Cluster):
    """A broken restart path: damaged or wiped disks come back as if healthy (no repair flag)."""

    def _new_raft(self, node, loaded, membership, repair):  # type: ignore[no-untyped-def]
        return super()._new_raft(node, loaded, membership, False)


def _wipe_majority_after_full_restart(c: Cluster) -> tuple[str, int, list[str]]:
    lead = _leader(c)
    for _ in range(10):
        c.propose()
        c.tick()
    acked = max(c.checker.acked)
    ids = sorted(c.nodes)
    for node_id in ids:
        c.crash(node_id)
    others = [n for n in ids if n != lead]
    for victim in others:
        assert c.corrupt(victim, None, force=True)
        c.restart(victim)  # the wiped nodes come back first, the intact one later
    return lead, acked, others


def test_majority_wiped_refuses_service_and_never_elects_an_empty_node() -> None:
    """R5: the whole cluster goes down and two of three disks come back wiped. Nobody may lead
    (the wiped nodes are repair-needed and do not vote; the intact node cannot win alone), so
    proposals are refused, and the intact node keeps the acknowledged history."""
    c = quiet(3, seed=6)
    lead, acked, others = _wipe_majority_after_full_restart(c)
    for t in range(600):
        if t == 200:
            c.restart(lead)
        c.tick()
        assert c.leader() is None
        assert not c.propose()
    intact = c.nodes[lead]
    assert intact.raft is not None and intact.raft.last_index >= acked
    assert all(c.nodes[v].raft.repair_needed for v in others)  # type: ignore[union-attr]


def test_without_repair_flag_the_checker_catches_an_empty_leader() -> None:
    """The same R5 scenario with a restart path that forgets the repair flag: two empty nodes
    elect one of themselves and the checker flags it (proof R5's checks can fail)."""
    c = NoRepairCluster(6, SimConfig(n_nodes=3, drop_rate=0.0, duplicate_rate=0.0))
    lead, _, _ = _wipe_majority_after_full_restart(c)
    with pytest.raises(Violation, match="leader_completeness|double_vote"):
        c.run(200)
        c.restart(lead)
        c.run(200)


@pytest.mark.parametrize("kind", [None, CorruptKind.BITFLIP])
def test_damaged_follower_catches_up(kind: CorruptKind | None) -> None:
    """Regression for two core bugs this simulator found (fixed in bf95ca9 and 7205e0d): wipe
    (or bit-flip) a follower's disk under a stable, idle leader; it restarts repair-needed and
    must catch up without waiting for the next client write (R3)."""
    c = quiet(3)
    lead = _leader(c)
    for _ in range(5):
        c.propose()
    c.run(20)
    victim = next(n for n in sorted(c.nodes) if n != lead)
    assert c.corrupt(victim, kind)
    c.restart(victim)
    c.run(300)
    assert c.nodes[victim].sm.applied_index >= 6


def test_repairing_follower_with_a_stale_suffix_does_not_commit_it_from_a_heartbeat() -> None:
    """Regression for a core bug fixed in aa636ab, found by seed 253 (`--stale-repair`; clock
    skew + bit flip): a damaged journal replays to a *past* log
    whose tail was later overwritten. The leader still has the old match index for that node,
    so its heartbeat carries commit 2; committing our own (2, term 1) would break
    committed_changed. The node must only commit what it has matched with this leader."""
    node = RaftNode(
        NodeConfig("n2", "g"),
        random.Random(0),
        hard_state=HardState(1, None, 1),
        snapshot=None,
        entries=[Entry(1, 1), Entry(1, 2)],
        membership=Membership(frozenset({"n1", "n2", "n3"})),
        repair_needed=True,
    )
    node.step(Message(MessageType.HEARTBEAT, "g", "n1", "n2", term=2, commit=2))
    assert node.commit_index == 1


def test_repairing_node_heard_a_deposed_leader_first() -> None:
    """Minimal repro of the bug behind the stale-target storm seeds (fixed a7afa7d): a wiped node finishes
    term discovery and hears the old leader A first (A holds an uncommitted tail), then A is cut
    off and the majority elects a leader with a shorter log. With no further writes, the node
    must still finish repair (R3, R8)."""
    c = Cluster(7, SimConfig(n_nodes=5, drop_rate=0.0, duplicate_rate=0.0, delay_ticks=(1, 1)))
    a = _leader(c)
    for _ in range(3):
        c.propose()
    c.run(10)
    ids = sorted(c.nodes)
    x = next(n for n in ids if n != a)
    rest = [n for n in ids if n not in (a, x)]
    assert c.corrupt(x, None)  # wipe x, keep it down
    c.partition([{a, x}, {x, *rest}])  # a is cut off from the majority; x reaches everyone
    for _ in range(6):
        c.propose()  # a's uncommitted tail
    c.restart(x)
    c.run(4)  # x discovers the term and hears a's heartbeat
    c.partition([{a}, {x, *rest}])  # a is deposed before x got its tail
    c.run(80)
    c.heal()
    c.run(300)
    node = c.nodes[x].raft
    assert node is not None and not node.repair_needed


def test_membership_changes_keep_safety() -> None:
    c = quiet(3, seed=3)
    _leader(c)
    c.run(5)
    new = c.add_member(learner=True)
    assert new is not None
    for _ in range(60):
        c.propose()
        c.tick()
    assert c.promote(new)
    c.run(30)
    lead = c.leader()
    assert lead is not None and lead.raft is not None and new in lead.raft.membership.voters
    victim = next(n for n in sorted(lead.raft.membership.voters) if n not in (lead.node_id, new))
    assert c.remove_member(victim)
    c.run(40)
    assert c.nodes[victim].retired
    settle(c)


def test_leadership_transfer() -> None:
    c = quiet(3, seed=4)
    lead = _leader(c)
    c.run(10)
    to = next(n for n in sorted(c.nodes) if n != lead)
    c.transfer(to)
    for _ in range(100):
        c.tick()
        if c.leader() is not None and c.leader().node_id == to:  # type: ignore[union-attr]
            break
    assert c.leader() is not None and c.leader().node_id == to  # type: ignore[union-attr]


# -- the checks can fail ------------------------------------------------------------------------


class NoFsyncCluster(Cluster):
    """A broken driver: acknowledges and votes without ever fsyncing (nats-server's default)."""

    def _persist(self, node, ready: Ready) -> None:  # type: ignore[no-untyped-def, override]
        super()._persist(node, Ready(**{**_fields(ready), "must_sync": False}))


def _fields(ready: Ready) -> dict[str, object]:
    return {a.name: getattr(ready, a.name) for a in Ready.__attrs_attrs__}


def test_sweep_catches_a_driver_that_acks_before_fsync() -> None:
    """The same schedules against a driver without fsync must find lost acknowledged writes or
    a double vote after power loss: proof the sweep can fail."""
    found = [r for r in (run_seed(s, 200, cluster_cls=NoFsyncCluster) for s in range(60)) if not r.ok]
    assert found, "60 seeds without fsync and no violation: the checks are blind"
    assert all(r.trace_tail for r in found)
    assert {r.invariant for r in found} & {"acked_lost", "double_vote", "committed_changed", "election_safety",
                                           "log_matching", "leader_completeness", "state_machine_safety"}


def test_failure_report_names_seed_and_replay_command(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad = RunResult(seed=77, trace_hash="ab" * 32, ticks=5, proposed=1, acked=0, leaders=1,
                    violation="liveness: boom", invariant="liveness", trace_tail=("(5, 'heal')",))
    monkeypatch.setattr(sweep, "run_seed", lambda seed, steps, **kw: bad if seed == 77 else attrs_ok(seed))
    assert sweep.main(["--seeds", "3", "--start", "76"]) == 1
    out = capsys.readouterr().out
    assert "seed=77 invariant=liveness" in out
    assert "python -m raft.testing.sweep --seeds 1 --start 77 --steps 200" in out
    assert "(5, 'heal')" in out
    assert "3 seeds (76..78)" in out and "seeds/s" in out


def attrs_ok(seed: int) -> RunResult:
    return RunResult(seed=seed, trace_hash="00", ticks=1, proposed=0, acked=0, leaders=0)


def test_violation_is_raised_by_the_checker_not_swallowed() -> None:
    c = quiet(3)
    _leader(c)
    with pytest.raises(Violation):
        c.checker.observe_role("zz", "leader", c.leader().raft.term)  # type: ignore[union-attr]
