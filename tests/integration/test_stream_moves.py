"""Scaling, moves, cancel and peer removal on a local cluster, with a publisher and a pull
consumer running through every change (meta/moves.py, meta/move_driver.py, meta/api_moves.py).

One cluster per module: five `jetraft server -js --cluster` processes tagged az:1, az:1, az:2,
az:2, az:3 (`--tags`). Each scenario runs a load (`Load`): a publisher that records every
acknowledged sequence, and a durable pull consumer that fetches and acks. Afterwards every
acknowledged message must be in the stream exactly once at its acknowledged sequence (nothing
lost, nothing duplicated), the consumer's ack floor never goes backwards and nothing below it
was skipped (redelivery after a leader change is allowed: at-least-once), the
replicas agree by content hash, and servers that left no longer answer for the stream (their
data is gone). Every wait polls a condition against a deadline; processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, Placement, StreamConfig
from nats.js.errors import APIError

from cli.benchlib.launcher import LOOPBACK
from cli.cluster import stable_ports
from tests.cluster_support import ClusterNode, api, running_cluster
from tests.cluster_support import until as poll_until

CLUSTER = "moves"
TAGS = {"m1": "az:1", "m2": "az:1", "m3": "az:2", "m4": "az:2", "m5": "az:3"}
DEADLINE_S = 30.0
PROGRESS_S = 15.0
SCENARIO_TIMEOUT_S = 90.0


class Node(ClusterNode):
    def __init__(self, name: str, tmp: pathlib.Path) -> None:
        super().__init__(name, tmp, CLUSTER, client_port=stable_ports(1), cluster_port=stable_ports(2),
                         extra_args=["--tags", TAGS[name]])

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("moves")
    nodes = {name: Node(name, tmp) for name in TAGS}
    with running_cluster(nodes.values(), lambda: run(wait_registered(nodes))):
        yield nodes


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))  # type: ignore[arg-type]


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = DEADLINE_S) -> Any:
    return await poll_until(check, what, timeout_s)


async def wait_registered(nodes: dict[str, Node]) -> None:
    """A meta leader, and every server's tags registered (placement by tags needs them)."""
    nc = await nats.connect(nodes["m1"].url)
    try:
        async def ready() -> bool:
            info = await api(nc, "$JS.API.INFO", timeout_s=1.0)
            if not info["meta_cluster"]["leader"]:
                return False
            js = nc.jetstream()
            cfg = StreamConfig(name="PROBE", subjects=["probe.x"], num_replicas=1,
                               placement=Placement(tags=["az:2"]))
            await js.add_stream(cfg)
            await js.delete_stream("PROBE")
            return True
        await until(ready, "a meta leader and registered tags")
    finally:
        await nc.close()


async def connect_all(nodes: dict[str, Node]) -> Any:
    return await nats.connect([n.url for n in nodes.values()], reconnect_time_wait=0.1,
                              max_reconnect_attempts=-1, connect_timeout=2)


class Load:
    """A publisher recording acknowledged sequences and a pull consumer recording deliveries."""

    def __init__(self, js: Any, stream: str, subject: str) -> None:
        self.js, self.stream, self.subject = js, stream, subject
        self.acked: dict[int, bytes] = {}
        self.sent = 0
        self.delivered: list[int] = []
        self.ack_floors: list[int] = []
        self.fetch_errors: list[str] = []  # fetches that raised (nats-py drops what they held)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await until(lambda: self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name="worker", ack_policy=AckPolicy.EXPLICIT)), "the consumer")
        self.sub = await self.js.pull_subscribe_bind("worker", stream=self.stream)
        self.tasks = [asyncio.create_task(self._publish()), asyncio.create_task(self._consume())]

    async def _publish(self) -> None:
        while not self.stop.is_set() and self.sent < 100_000:
            payload = b"m-%d" % self.sent
            self.sent += 1
            try:
                ack = await self.js.publish(self.subject, payload, timeout=1.0)
            except Exception:  # noqa: BLE001 - not acknowledged: may or may not be stored
                await asyncio.sleep(0.05)  # back off while a leader changes
                continue
            assert ack.seq not in self.acked, f"seq {ack.seq} acknowledged twice"
            self.acked[ack.seq] = payload
            await asyncio.sleep(0.01)  # a steady, modest rate on a loaded machine

    async def _consume(self) -> None:
        while not self.stop.is_set():
            try:
                msgs = await self.sub.fetch(20, timeout=0.5)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # noqa: BLE001 - a status error: messages it had may be dropped
                self.fetch_errors.append(repr(exc))
                continue
            for msg in msgs:
                self.delivered.append(msg.metadata.sequence.stream)
                try:
                    await msg.ack_sync(timeout=1.0)
                except Exception:  # noqa: BLE001 - redelivered later
                    pass
            try:
                info = await self.js.consumer_info(self.stream, "worker", timeout=1.0)
                self.ack_floors.append(info.ack_floor.stream_seq)
            except Exception:  # noqa: BLE001 - leader change
                pass

    async def caught_up(self, what: str) -> None:
        """Liveness: the consumer's (committed) ack floor reaches every message acknowledged so
        far, within PROGRESS_S - less than the default ack_wait (30 s), so an acknowledgement
        lost in a leader change (the message pinned until its redelivery) fails this."""
        target = max(self.acked)

        async def floor_reached() -> bool:
            info = await self.js.consumer_info(self.stream, "worker", timeout=1.0)
            return info.ack_floor.stream_seq >= target
        await until(floor_reached, f"the consumer's ack floor at {target} {what}", PROGRESS_S)

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def check(self, nc: Any) -> None:
        """Every acknowledged message exactly once at its sequence; progress never went back."""
        assert len(self.acked) > 20, f"too little load got through: {len(self.acked)}"
        info = await self.js.stream_info(self.stream)
        seen: dict[bytes, int] = {}
        for seq in range(1, info.state.last_seq + 1):
            msg = await self.js.get_msg(self.stream, seq)
            assert msg.data not in seen, f"{msg.data!r} stored twice: {seen[msg.data]} and {seq}"
            seen[msg.data] = seq
        for seq, payload in self.acked.items():
            assert seen.get(payload) == seq, f"acked {payload!r} at {seq}, stored at {seen.get(payload)}"
        # at-least-once: a leader change may redeliver what was delivered but not yet acked, but
        # the (AckSync'ed, committed) ack floor never goes back and nothing below it was skipped
        assert self.ack_floors == sorted(self.ack_floors), "ack floor went backwards"
        floor = self.ack_floors[-1] if self.ack_floors else 0
        # liveness: acks that reached the old leader during a handover are forwarded to the new
        # one and its state includes every delivery, so the floor moves (default ack_wait, 30 s:
        # a lost ack would pin the floor below it for longer than the whole scenario)
        assert floor > 0, (f"the consumer made no progress: delivered={len(self.delivered)} "
                           f"floors_seen={len(self.ack_floors)} fetch_errors={self.fetch_errors[-3:]}")
        missing = sorted(set(range(1, floor + 1)) - set(self.delivered))
        # a fetch that raised may have held deliveries this client never saw: then unprovable
        assert not missing or self.fetch_errors, (
            f"the consumer skipped {missing[:10]} (ack floor {floor}, floors {self.ack_floors[-20:]})")


async def settled(nc: Any, stream: str, servers: set[str]) -> dict[str, Any]:
    """Stream info from the leader once the group is exactly `servers`, all current, no move."""
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", timeout_s=1.0)
    cluster = info.get("cluster") or {}
    names = {cluster.get("leader")} | {r["name"] for r in cluster.get("replicas", [])}
    current = all(r["current"] for r in cluster.get("replicas", []))
    return info if names == servers and current and "move" not in cluster else {}


async def placed_on_one(nc: Any, stream: str, allowed: set[str]) -> dict[str, Any]:
    """Settled stream info of an R1 stream placed on one of `allowed`."""
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", timeout_s=1.0)
    leader = (info.get("cluster") or {}).get("leader")
    return await settled(nc, stream, {leader}) if leader in allowed else {}


async def digests_agree(nc: Any, stream: str, servers: set[str]) -> bool:
    found = [await api(nc, f"$JSC.DIGEST.{s}.{stream}", timeout_s=1.0) for s in sorted(servers)]
    return len({(d["digest"], d["last_seq"]) for d in found}) == 1


async def gone(nc: Any, stream: str, servers: set[str]) -> bool:
    """None of `servers` answers for the stream any more (their replica was stopped and deleted)."""
    for s in servers:
        try:
            await nc.request(f"$JSC.DIGEST.{s}.{stream}", b"", timeout=0.3)
            return False
        except Exception:  # noqa: BLE001 - no responders / timeout: gone
            continue
    return True


def _servers(info: dict[str, Any]) -> set[str]:
    c = info["cluster"]
    return {c["leader"]} | {r["name"] for r in c.get("replicas", [])}


# -- scenarios ---------------------------------------------------------------------------------
def test_unsatisfiable_requests_get_nats_errors_and_change_nothing(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        cfg = StreamConfig(name="FIXED", subjects=["fixed.>"], num_replicas=1, placement=Placement(tags=["az:1"]))
        await until(lambda: js.add_stream(cfg), "the stream")
        before = await until(lambda: placed_on_one(nc, "FIXED", {"m1", "m2"}), "placed")
        with pytest.raises(APIError) as exc:
            await js.update_stream(StreamConfig(name="FIXED", subjects=["fixed.>"], num_replicas=1,
                                                placement=Placement(tags=["az:9"])))
        assert exc.value.err_code == 10005
        with pytest.raises(APIError) as exc:  # two az:1 servers only
            await js.update_stream(StreamConfig(name="FIXED", subjects=["fixed.>"], num_replicas=3,
                                                placement=Placement(tags=["az:1"])))
        assert exc.value.err_code == 10005
        reply = await api(nc, "$JS.API.STREAM.CANCEL_MOVE.FIXED")
        assert reply["error"]["err_code"] == 10129
        after = await settled(nc, "FIXED", _servers(before))
        assert after["config"] == before["config"]
        await js.delete_stream("FIXED")
        await nc.close()
    run(scenario())


def test_scale_1_3_1_under_load(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        cfg = StreamConfig(name="SCALE", subjects=["scale.>"], num_replicas=1)
        await until(lambda: js.add_stream(cfg), "the stream")
        load = Load(js, "SCALE", "scale.x")
        await load.start()
        await until(lambda: asyncio.sleep(0, len(load.acked) > 10), "some load")
        first = _servers(await until(lambda: api(nc, "$JS.API.STREAM.INFO.SCALE"), "info"))
        await js.update_stream(StreamConfig(name="SCALE", subjects=["scale.>"], num_replicas=3))
        info = await until(lambda: _r(nc, "SCALE", 3), "three current replicas")
        three = _servers(info)
        assert first <= three
        count = len(load.acked)
        await until(lambda: asyncio.sleep(0, len(load.acked) > count + 10), "load after scale-up")
        await js.update_stream(StreamConfig(name="SCALE", subjects=["scale.>"], num_replicas=1))
        info = await until(lambda: _r(nc, "SCALE", 1), "one replica")
        one = _servers(info)
        await until(lambda: gone(nc, "SCALE", three - one), "the removed replicas' data gone")
        count = len(load.acked)
        await until(lambda: asyncio.sleep(0, len(load.acked) > count + 10), "load after scale-down")
        await load.caught_up("after the scale-down")
        await load.finish()
        await load.check(nc)
        await nc.close()
    run(scenario())


async def _r(nc: Any, stream: str, replicas: int) -> dict[str, Any]:
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", timeout_s=1.0)
    servers = _servers(info) if "cluster" in info and info["cluster"].get("leader") else set()
    if len(servers) == replicas and info["config"]["num_replicas"] == replicas:
        return await settled(nc, stream, servers)
    return {}


def test_move_r2_from_az1_to_az2_under_load(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        cfg = StreamConfig(name="MOVE", subjects=["move.>"], num_replicas=2, placement=Placement(tags=["az:1"]))
        await until(lambda: js.add_stream(cfg), "the stream")
        await until(lambda: settled(nc, "MOVE", {"m1", "m2"}), "placed in az:1")
        load = Load(js, "MOVE", "move.x")
        await load.start()
        await until(lambda: asyncio.sleep(0, len(load.acked) > 10), "some load")
        await js.update_stream(StreamConfig(name="MOVE", subjects=["move.>"], num_replicas=2,
                                            placement=Placement(tags=["az:2"])))
        info = await until(lambda: settled(nc, "MOVE", {"m3", "m4"}), "moved to az:2")
        assert info["config"]["placement"]["tags"] == ["az:2"]
        await until(lambda: gone(nc, "MOVE", {"m1", "m2"}), "the old replicas' data gone")
        count = len(load.acked)
        await until(lambda: asyncio.sleep(0, len(load.acked) > count + 10), "load after the move")
        await load.caught_up("after the move")
        await load.finish()
        await load.check(nc)
        await until(lambda: digests_agree(nc, "MOVE", {"m3", "m4"}), "equal replicas")
        await nc.close()
    run(scenario())


def test_cancelled_move_leaves_config_and_placement_consistent(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        cfg = StreamConfig(name="CANCEL", subjects=["cancel.>"], num_replicas=1, placement=Placement(tags=["az:2"]))
        await until(lambda: js.add_stream(cfg), "the stream")
        before = await until(lambda: placed_on_one(nc, "CANCEL", {"m3", "m4"}), "placed")
        for i in range(50):
            await js.publish("cancel.x", b"c-%d" % i)
        await js.update_stream(StreamConfig(name="CANCEL", subjects=["cancel.>"], num_replicas=1,
                                            placement=Placement(tags=["az:1"])))
        reply = await api(nc, "$JS.API.STREAM.CANCEL_MOVE.CANCEL")
        assert reply.get("success") is True, reply
        info = await until(lambda: _with_tags(nc, "CANCEL", _servers(before), ["az:2"]), "back where it was")
        assert info["state"]["messages"] == 50
        await until(lambda: gone(nc, "CANCEL", {"m1", "m2"}), "no replica left in az:1")
        await nc.close()
    run(scenario())


async def _with_tags(nc: Any, stream: str, servers: set[str], tags: list[str]) -> dict[str, Any]:
    info = await settled(nc, stream, servers)
    return info if info and info["config"]["placement"]["tags"] == tags else {}


def test_peer_remove_places_a_replacement(cluster: dict[str, Node]) -> None:
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: js.add_stream(StreamConfig(name="PEER", subjects=["peer.>"], num_replicas=2)),
                    "the stream")
        info = await until(lambda: _r(nc, "PEER", 2), "two replicas")
        for i in range(30):
            await js.publish("peer.x", b"p-%d" % i)
        victim = sorted(_servers(info))[0]
        reply = await api(nc, "$JS.API.STREAM.PEER.REMOVE.PEER", json.dumps({"peer": victim}).encode())
        assert reply.get("success") is True, reply
        info = await until(lambda: _without(nc, "PEER", victim), "a replacement replica, the victim out")
        assert info["state"]["messages"] == 30
        await until(lambda: gone(nc, "PEER", {victim}), "the victim's data gone")
        bad = await api(nc, "$JS.API.STREAM.PEER.REMOVE.PEER", json.dumps({"peer": victim}).encode())
        assert bad["error"]["err_code"] == 10040
        await nc.close()
    run(scenario())


async def _without(nc: Any, stream: str, victim: str) -> dict[str, Any]:
    info = await _r(nc, stream, 2)
    return info if info and victim not in _servers(info) else {}


def test_stepdowns_with_a_preferred_server_or_placement(cluster: dict[str, Node]) -> None:
    """nats-server's (2.11+) stepdown placement: `preferred` names the next leader; else
    `cluster`/`tags` pick a connected member other than the leader; no fit is 10005 with its
    messages (checked against nats-server 2.15.1), and the leader stays."""
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        cfg = StreamConfig(name="PREF", subjects=["pref.>"], num_replicas=3)
        await until(lambda: js.add_stream(cfg), "the stream")
        info = await until(lambda: _r(nc, "PREF", 3), "three replicas")
        leader = info["cluster"]["leader"]
        target = sorted(_servers(info) - {leader})[0]
        reply = await _stepdown(nc, "$JS.API.STREAM.LEADER.STEPDOWN.PREF", {"placement": {"preferred": target}})
        assert reply.get("success") is True, reply
        await until(lambda: _leader_is(nc, "$JS.API.STREAM.INFO.PREF", target), "the preferred stream leader")
        outsider = sorted(set(cluster) - _servers(info))[0]
        for body, description in [
            ({"placement": {"preferred": outsider}}, f'preferred server "{outsider}" not known'),
            ({"placement": {"preferred": target}}, f'preferred server "{target}" is already leader'),
            ({"placement": {"tags": ["az:9"]}}, "no replacement peer connected"),
            ({"placement": {"cluster": "elsewhere"}}, "no replacement peer connected"),
            ({"placement": {"tags": [TAGS[target]], "cluster": "elsewhere"}}, "no replacement peer connected"),
        ]:
            bad = await _stepdown(nc, "$JS.API.STREAM.LEADER.STEPDOWN.PREF", body)
            assert bad["error"] == {"code": 400, "err_code": 10005, "description": description}, (body, bad)
        bad = await api(nc, "$JS.API.STREAM.LEADER.STEPDOWN.PREF", b"{bad", timeout_s=5.0)
        assert bad["error"]["err_code"] == 10025, bad
        assert await _leader_is(nc, "$JS.API.STREAM.INFO.PREF", target)  # nothing moved
        # by tags: a member in another zone than the leader's
        others = {s for s in _servers(info) if s != target and TAGS[s] != TAGS[target]}
        if others:
            tag = TAGS[sorted(others)[0]]
            reply = await _stepdown(nc, "$JS.API.STREAM.LEADER.STEPDOWN.PREF", {"placement": {"tags": [tag]}})
            assert reply.get("success") is True, reply
            await until(lambda: _leader_tag_is(nc, tag), f"a stream leader tagged {tag}")
        meta = (await api(nc, "$JS.API.INFO"))["meta_cluster"]["leader"]
        bad = await _stepdown(nc, "$JS.API.META.LEADER.STEPDOWN", {"placement": {"preferred": "nobody"}})
        assert bad["error"]["description"] == 'preferred server "nobody" not known', bad
        want = sorted(set(cluster) - {meta})[0]
        reply = await _stepdown(nc, "$JS.API.META.LEADER.STEPDOWN", {"placement": {"preferred": want}})
        assert reply.get("success") is True, reply
        await until(lambda: _meta_leader_is(nc, want), "the preferred meta leader")
        tag = "az:3" if TAGS[want] != "az:3" else "az:1"
        reply = await until(lambda: _stepdown_ok(nc, {"placement": {"tags": [tag]}}), "a meta stepdown by tags")
        await until(lambda: _meta_leader_tagged(nc, tag), f"a meta leader tagged {tag}")
        await until(lambda: _deleted(nc, "PREF"), "the stream deleted by the new meta leader")
        await nc.close()
    run(scenario())


async def _stepdown(nc: Any, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    return await api(nc, subject, json.dumps(body).encode(), timeout_s=5.0)


async def _stepdown_ok(nc: Any, body: dict[str, Any]) -> dict[str, Any]:
    reply = await _stepdown(nc, "$JS.API.META.LEADER.STEPDOWN", body)
    return reply if reply.get("success") else {}


async def _leader_tag_is(nc: Any, tag: str) -> bool:
    leader = (await api(nc, "$JS.API.STREAM.INFO.PREF", timeout_s=1.0)).get("cluster", {}).get("leader")
    return TAGS.get(leader) == tag


async def _meta_leader_tagged(nc: Any, tag: str) -> bool:
    return TAGS.get((await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"]) == tag


def test_stepdown_keeps_delivery_counts_and_acks(cluster: dict[str, Node]) -> None:
    """A leader change right after a delivery (inside the consumer-state flush interval): the
    new leader knows every delivery (redelivered with num_delivered 2, after ack_wait, never as
    new) and every acknowledged message stays acknowledged."""
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: js.add_stream(StreamConfig(name="COUNTS", subjects=["counts.>"], num_replicas=3)),
                    "the stream")
        await until(lambda: _r(nc, "COUNTS", 3), "three replicas")
        for i in range(5):
            await js.publish("counts.x", b"n-%d" % i)
        await until(lambda: js.add_consumer("COUNTS", ConsumerConfig(
            durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=2.0)), "the consumer")
        sub = await js.pull_subscribe_bind("c", stream="COUNTS")
        for msg in await sub.fetch(3, timeout=5.0):
            await msg.ack_sync(timeout=5.0)  # commits the consumer's state: 1-3 acknowledged
        unacked = await sub.fetch(2, timeout=5.0)  # 4 and 5: delivered, not yet committed
        assert [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in unacked] == [(4, 1), (5, 1)]
        reply = await api(nc, "$JS.API.STREAM.LEADER.STEPDOWN.COUNTS", timeout_s=5.0)
        assert reply.get("success") is True, reply
        again: dict[int, int] = {}

        async def redelivered() -> bool:
            for msg in await sub.fetch(5, timeout=1.0):
                again.setdefault(msg.metadata.sequence.stream, msg.metadata.num_delivered)
                await msg.ack_sync(timeout=2.0)
            return set(again) >= {4, 5}
        await until(redelivered, "the unacknowledged messages redelivered")
        assert again == {4: 2, 5: 2}, again
        info = await until(lambda: js.consumer_info("COUNTS", "c", timeout=1.0), "consumer info")
        assert info.ack_floor.stream_seq == 5 and info.num_ack_pending == 0
        await js.delete_stream("COUNTS")
        await nc.close()
    run(scenario())


async def _deleted(nc: Any, stream: str) -> bool:
    """Delete (retried while a new meta leader subscribes); "not found" means an earlier try won."""
    reply = await api(nc, f"$JS.API.STREAM.DELETE.{stream}", timeout_s=1.0)
    return bool(reply.get("success")) or reply.get("error", {}).get("err_code") == 10059


async def _leader_is(nc: Any, subject: str, name: str) -> bool:
    return (await api(nc, subject, timeout_s=1.0)).get("cluster", {}).get("leader") == name


async def _meta_leader_is(nc: Any, name: str) -> bool:
    return (await api(nc, "$JS.API.INFO", timeout_s=1.0))["meta_cluster"]["leader"] == name


def test_admin_cli_lists_scales_and_reports_errors(cluster: dict[str, Node]) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    urls = ",".join(n.url for n in cluster.values())
    runner = CliRunner()
    out = runner.invoke(cli, ["stream", "add", "CLI", "--subjects", "cli.>", "-s", urls])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["stream", "scale", "CLI", "2", "--timeout", "60", "-s", urls])
    assert out.exit_code == 0 and "2 replicas" in out.output, out.output
    out = runner.invoke(cli, ["stream", "ls", "-s", urls])
    assert out.exit_code == 0 and "CLI" in out.output, out.output
    out = runner.invoke(cli, ["stream", "info", "CLI", "-s", urls])
    assert out.exit_code == 0 and "leader" in out.output, out.output
    out = runner.invoke(cli, ["stream", "catchup", "CLI", "--timeout", "60", "-s", urls])
    assert out.exit_code == 0 and "every replica is current" in out.output, out.output
    out = runner.invoke(cli, ["stream", "move", "CLI", "--tags", "az:9", "-s", urls])
    assert out.exit_code == 1 and "no suitable peers for placement (error 10005)" in out.output, out.output
    assert "jetraft servers ls" in out.output, out.output  # the hint
    out = runner.invoke(cli, ["stream", "scale", "CLI", "9", "-s", urls])
    assert out.exit_code == 1 and "maximum replicas is 5 (error 10052)" in out.output, out.output
    out = runner.invoke(cli, ["stream", "info", "NOPE", "-s", urls])
    assert out.exit_code == 1 and "stream not found" in out.output, out.output
    out = runner.invoke(cli, ["stream", "stepdown", "CLI", "--tags", "az:9", "-s", urls])
    assert out.exit_code == 1 and "no replacement peer connected (error 10005)" in out.output, out.output
    out = runner.invoke(cli, ["stream", "stepdown", "CLI", "-s", urls])
    assert out.exit_code == 0 and "leader is now" in out.output, out.output
    out = runner.invoke(cli, ["servers", "ls", "-s", urls])
    assert out.exit_code == 0 and all(name in out.output for name in cluster), out.output
    assert "az:1" in out.output and "az:2" in out.output
    out = runner.invoke(cli, ["stream", "rm", "CLI", "-s", urls])
    assert out.exit_code == 0, out.output


def test_server_remove_of_a_stopped_server_replaces_its_replicas(cluster: dict[str, Node]) -> None:
    """Last in the module: it stops a server for good."""
    async def scenario() -> None:
        nc = await connect_all(cluster)
        js = nc.jetstream()
        await until(lambda: js.add_stream(StreamConfig(name="GONE", subjects=["gone.>"], num_replicas=3)),
                    "the stream")
        info = await until(lambda: _r(nc, "GONE", 3), "three replicas")
        for i in range(40):
            await js.publish("gone.x", b"g-%d" % i)
        meta = (await api(nc, "$JS.API.INFO"))["meta_cluster"]["leader"]
        victim = sorted(_servers(info) - {meta})[0]
        cluster[victim].stop()
        reply = await until(lambda: _remove(nc, victim), "the server removed")
        assert reply.get("success") is True, reply
        info = await until(lambda: _settled_without(nc, "GONE", victim), "GONE re-placed")
        assert info["state"]["messages"] == 40
        meta_info = (await api(nc, "$JS.API.INFO"))["meta_cluster"]
        assert victim not in meta_info["peers"] and meta_info["cluster_size"] == 4
        bad = await api(nc, "$JS.API.SERVER.REMOVE", json.dumps({"peer": victim}).encode())
        assert bad["error"]["err_code"] == 10044
        # four servers left: five replicas is more than there are servers
        with pytest.raises(APIError) as exc:
            await js.update_stream(StreamConfig(name="GONE", subjects=["gone.>"], num_replicas=5))
        assert exc.value.err_code == 10023
        assert (await settled(nc, "GONE", _servers(info)))["config"]["num_replicas"] == 3
        # restarted, the removed server learns it was removed (meta/removal.py): it stops
        # hosting its old replicas and stays out of the meta group, keeping its data on disk
        node = cluster[victim]
        node.start([n.route_url for n in cluster.values()])
        marker = node.store_dir / "raft" / "meta-removed.json"
        await until(lambda: asyncio.sleep(0, marker.exists()), "the removed server marked removed")
        await until(lambda: gone(nc, "GONE", {victim}), "no replica on the removed server")
        assert any((node.store_dir).rglob("*.db")), "its data stays on disk"
        meta_info = (await api(nc, "$JS.API.INFO"))["meta_cluster"]
        assert victim not in meta_info["peers"] and meta_info["cluster_size"] == 4
        plain = await nats.connect(node.url)  # still a NATS server
        await plain.close()
        node.stop()
        node.start([n.route_url for n in cluster.values()])  # the marker holds across restarts
        await until(lambda: asyncio.sleep(0, "meta.stays_removed" in node.log_path.read_text()),
                    "the restarted server staying removed")
        assert await gone(nc, "GONE", {victim})
        assert (await settled(nc, "GONE", _servers(info)))["state"]["messages"] == 40
        await nc.close()
    run(scenario())


async def _remove(nc: Any, victim: str) -> dict[str, Any]:
    reply = await api(nc, "$JS.API.SERVER.REMOVE", json.dumps({"peer": victim}).encode(), timeout_s=10.0)
    return reply if "error" not in reply else {}


async def _settled_without(nc: Any, stream: str, victim: str) -> dict[str, Any]:
    info = await _r(nc, stream, 3)
    return info if info and victim not in _servers(info) else {}
