"""Scale and move faults (nemesis_admin.py, and the nemesis around them) against a fake JetStream
API: which requests are sent with which bodies, how refusals are recorded, and that each window
ends back at the original replica count."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from jepsen import nemesis_admin
from jepsen.history import History
from jepsen.nemesis import Nemesis
from jepsen.schedule import FaultKind, FaultWindow, ScheduleConfig, plan
from tests.unit.jepsen.test_nemesis import FakeCluster, FakeNode, FakeSpec, run_with_nemesis

CONFIG = {"name": "s", "subjects": ["s"], "num_replicas": 3, "storage": "file", "max_age": 0}


@attrs.define
class FakeAdmin:
    """One stream on `servers`; replica changes take effect at once (placement: first free by name)."""

    servers: list[str]
    peers: list[str]  # leader first
    config: dict[str, Any] = attrs.field(factory=lambda: dict(CONFIG))
    refuse: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # API verb -> error
    sent: list[tuple[str, Any]] = attrs.field(factory=list)
    clock: float = 0.0
    tick_s: float = 0.1  # each look at the clock advances it

    def now_s(self) -> float:
        self.clock += self.tick_s
        return self.clock

    async def request(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        self.sent.append((subject, body))
        verb = ".".join(subject.split(".")[:-1])
        if verb in self.refuse:
            return {"ok": False, "error": self.refuse[verb]}
        if verb == "STREAM.INFO":
            replicas = [{"name": p, "current": True} for p in self.peers[1:]]
            return {"ok": True, "data": {"config": dict(self.config),
                                         "cluster": {"leader": self.peers[0], "replicas": replicas}}}  # fmt: skip
        if verb == "STREAM.UPDATE":
            r = body["num_replicas"]
            if r > len(self.servers):
                return {"ok": False, "error": {"code": 503, "err_code": 10023, "description": "insufficient resources"}}
            self.config = dict(body)
            self.peers = self.peers[:r] + [s for s in self.servers if s not in self.peers][: r - len(self.peers[:r])]
            return {"ok": True, "data": {"config": dict(body)}}
        if verb == "STREAM.PEER.REMOVE":
            spare = [s for s in self.servers if s not in self.peers and s != body["peer"]]
            if body["peer"] not in self.peers or not spare:
                return {"ok": False, "error": {"code": 503, "err_code": 10075, "description": "peer remap failed"}}
            rest = [p for p in self.peers if p != body["peer"]]
            self.peers = rest + [spare[0]]
            return {"ok": True, "data": {"success": True}}
        raise AssertionError(subject)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_scale_sends_the_full_config_with_one_replica_fewer_then_restores() -> None:
    admin = FakeAdmin(["n1", "n2", "n3"], ["n2", "n1", "n3"])
    record = run(nemesis_admin.scale_start(admin, "s", 3))
    assert record == {"ok": True, "replicas": "3->2", "original": 3, "response": "ok",
                      "peers_before": ["n2", "n1", "n3"]}  # fmt: skip
    updates = [body for subject, body in admin.sent if subject == "STREAM.UPDATE.s"]
    assert updates == [{**CONFIG, "num_replicas": 2}]  # every other field as STREAM.INFO gave it
    assert len(admin.peers) == 2
    run(nemesis_admin.restore(admin, "s", record["original"], record))
    assert admin.config["num_replicas"] == 3 and len(admin.peers) == 3
    assert record["restore"] == "ok" and record["settled"] is True and sorted(record["peers_after"]) == ["n1", "n2", "n3"]


def test_an_r1_stream_is_scaled_up_instead() -> None:
    assert nemesis_admin.scale_target(1, 3) == 2
    assert nemesis_admin.scale_target(3, 3) == 2
    assert nemesis_admin.scale_target(5, 5) == 4


def test_a_refused_scale_is_recorded_and_nothing_is_restored() -> None:
    error = {"code": 500, "err_code": 10049, "description": "replicas change not supported"}
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2", "n3"], refuse={"STREAM.UPDATE": error})
    record = run(nemesis_admin.scale_start(admin, "s", 3))
    assert record["ok"] is False
    assert record["response"] == "err 500/10049: replicas change not supported"


def test_no_answer_at_all_is_recorded_not_raised() -> None:
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2", "n3"], refuse={"STREAM.INFO": "no answer: timeout"})
    assert run(nemesis_admin.scale_start(admin, "s", 3))["ok"] is False
    record = run(nemesis_admin.move_start(admin, "s", 3, "leader", "n2"))
    assert record["ok"] is False and "nothing changed" in record["note"]
    assert [s for s, _ in admin.sent] == ["STREAM.INFO.s", "STREAM.INFO.s"]  # no update, no removal


def test_move_on_a_full_cluster_makes_room_first_and_moves_the_leader() -> None:
    admin = FakeAdmin(["n1", "n2", "n3"], ["n2", "n1", "n3"])
    record = run(nemesis_admin.move_start(admin, "s", 3, "leader", "n3"))
    assert record["scaled"] == "3->2: ok"
    assert record["removed"] == "n2" and record["ok"] is True and record["response"] == "ok"
    assert ("STREAM.PEER.REMOVE.s", {"peer": "n2"}) in admin.sent
    assert "n2" not in admin.peers and len(admin.peers) == 2  # replaced on the spare server
    run(nemesis_admin.move_end(admin, "s", record))
    assert admin.config["num_replicas"] == 3 and record["settled"] is True and record["restore"] == "ok"


def test_move_of_a_follower_prefers_the_planned_node() -> None:
    admin = FakeAdmin(["n1", "n2", "n3", "n4"], ["n1", "n2", "n3"])  # a spare already: no scaling
    record = run(nemesis_admin.move_start(admin, "s", 4, "follower", "n3"))
    assert "scaled" not in record and record["removed"] == "n3" and admin.peers == ["n1", "n2", "n4"]
    run(nemesis_admin.move_end(admin, "s", record))
    assert [s for s, _ in admin.sent].count("STREAM.UPDATE.s") == 0 and record["settled"] is True
    admin = FakeAdmin(["n1", "n2", "n3", "n4"], ["n1", "n2", "n3"])
    record = run(nemesis_admin.move_start(admin, "s", 4, "follower", "n1"))  # planned node is the leader
    assert record["removed"] == "n2"


def test_a_refused_peer_removal_is_recorded_and_the_scale_down_undone() -> None:
    error = {"code": 503, "err_code": 10023, "description": "insufficient resources"}
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2", "n3"], refuse={"STREAM.PEER.REMOVE": error})
    record = run(nemesis_admin.move_start(admin, "s", 3, "follower", "n2"))
    assert record["ok"] is False and record["response"] == "err 503/10023: insufficient resources"
    run(nemesis_admin.move_end(admin, "s", record))
    assert admin.config["num_replicas"] == 3 and len(admin.peers) == 3


class SilentUpdate(FakeAdmin):
    """Applies STREAM.UPDATE but the answer is lost (a timeout on every node)."""

    async def request(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        result = await super().request(subject, body)
        if subject.startswith("STREAM.UPDATE") and self.config["num_replicas"] == 2:
            return {"ok": False, "error": "no answer: TimeoutError: nats: timeout"}
        return result


def test_a_scale_without_an_answer_is_still_restored() -> None:
    admin = SilentUpdate(["n1", "n2", "n3"], ["n1", "n2", "n3"])

    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net) -> None:
        nemesis.admin = admin
        await nemesis.run([FaultWindow(0.0, 0.05, FaultKind.SCALE)], asyncio.Event())
        [op] = [op for op in nemesis.history.ops if op.f == "nemesis"]
        assert op.result["ok"] is False and op.result["response"].startswith("err no answer")
        assert op.result["restore"] == "ok" and op.result["settled"] is True
        assert admin.config["num_replicas"] == 3 and len(admin.peers) == 3

    run_with_nemesis(scenario)


def test_a_refused_scale_is_not_followed_by_a_restore() -> None:
    error = {"code": 500, "err_code": 10049, "description": "replicas change not supported"}
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2", "n3"], refuse={"STREAM.UPDATE": error})

    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net) -> None:
        nemesis.admin = admin
        await nemesis.run([FaultWindow(0.0, 0.05, FaultKind.SCALE)], asyncio.Event())
        [op] = [op for op in nemesis.history.ops if op.f == "nemesis"]
        assert op.result["ok"] is False and "restore" not in op.result
        assert [s for s, _ in admin.sent].count("STREAM.UPDATE.s") == 1

    run_with_nemesis(scenario)


def test_settling_gives_up_at_its_deadline() -> None:
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2"], tick_s=4.0)  # stuck short of 3 replicas
    admin.refuse["STREAM.UPDATE"] = {"code": 500, "err_code": 10000, "description": "down"}
    record = {"original": 3, "scaled": "3->2: ok"}
    run(nemesis_admin.move_end(admin, "s", record))
    assert record["settled"] is False and record["restore"].startswith("err") and record["peers_after"] == ["n1", "n2"]


def test_the_nemesis_records_scale_and_move_windows_with_their_answers() -> None:
    admin = FakeAdmin(["n1", "n2", "n3"], ["n1", "n2", "n3"])

    async def scenario(nemesis: Nemesis, cluster: FakeCluster, net) -> None:
        nemesis.admin = admin
        windows = [FaultWindow(0.0, 0.05, FaultKind.SCALE), FaultWindow(0.1, 0.15, FaultKind.MOVE, (1,),
                   (("peer", "follower"),))]  # fmt: skip
        await nemesis.run(windows, asyncio.Event())
        recorded = [op for op in nemesis.history.ops if op.f == "nemesis"]
        assert [op.value["kind"] for op in recorded] == ["scale", "move"]
        assert recorded[0].result["replicas"] == "3->2" and recorded[0].result["restore"] == "ok"
        assert recorded[1].result["removed"] == "n2" and recorded[1].result["response"] == "ok"
        assert all(op.result["settled"] for op in recorded)
        assert admin.config["num_replicas"] == 3 and len(admin.peers) == 3
        assert cluster.calls == []  # no process was touched

    run_with_nemesis(scenario)


def test_the_nemesis_builds_a_nats_admin_by_default() -> None:
    cluster = FakeCluster([FakeNode(FakeSpec("n1"))])
    nemesis = Nemesis(cluster, None, History(lambda: 0.0), "s")
    assert isinstance(nemesis.admin, nemesis_admin.NatsAdmin)


def test_schedule_plans_scale_and_move_windows() -> None:
    for seed in range(10):
        windows = plan(seed, ScheduleConfig.for_run(30, 3, ("scale", "move")))
        assert windows[0].kind is FaultKind.SCALE and windows[1].kind is FaultKind.MOVE
        assert dict(windows[1].detail)["peer"] in ("leader", "follower") and 0 <= windows[1].nodes[0] < 3
        assert windows[0].start_s < windows[0].end_s
