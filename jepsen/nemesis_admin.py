"""JetStream admin faults for the nemesis: replica scaling and replica moves, over NATS only.

Both are plain JetStream API requests, the same for every target:
- scale: `$JS.API.STREAM.UPDATE.<stream>` with the stream's full current config (from
  `$JS.API.STREAM.INFO.<stream>`) and only `num_replicas` changed. The window scales the stream
  down by one replica (an R1 stream up to R2) and, when it ends, back to the original count, then
  waits (bounded) until the stream has that many peers again, all current.
- move: `$JS.API.STREAM.PEER.REMOVE.<stream>` with `{"peer": "<server name>"}`, which asks the
  target to replace that server's replica with one on another server. When the stream already
  has a replica on every server (R3 on three nodes) there is nowhere to move it — both
  nats-server ("peer remap failed") and JetRaft ("insufficient resources") refuse — so the window
  first scales the stream down by one, making a spare server, then removes a peer (the stream
  leader or a follower, as planned), and scales back to the original count when it ends. Moves by
  `placement.tags` are not offered: the harness's servers carry no tags.

A target may refuse any of these requests (for example while scaling is not ready); the refusal
is recorded with the window (`ok: false` and the API error) and the run continues. Nothing here
raises for a refusal, a timeout or an unreachable cluster: every step reports what it got.

`Admin` is the narrow interface the nemesis needs (one request to any reachable node); the
functions take it as a parameter so unit tests can stand a fake in for the cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from jepsen import client

REQUEST_TIMEOUT_S = 2.0
SETTLE_DEADLINE_S = 15.0
SHRINK_DEADLINE_S = 10.0
POLL_S = 0.25


class Admin(Protocol):
    async def request(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One `$JS.API.<subject>` request: {"ok": True, "data": ...}, or {"ok": False, "error": ...}."""
        ...

    def now_s(self) -> float: ...


def _error_text(result: dict[str, Any]) -> str:
    err = result.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}/{err.get('err_code')}: {err.get('description')}"
    return str(err)


def brief(result: dict[str, Any]) -> str:
    """'ok', or 'err <code>/<err_code>: <description>' for the run's record."""
    return "ok" if result.get("ok") else f"err {_error_text(result)}"


def unanswered(record: dict[str, Any]) -> bool:
    """The request got no answer at all, so it may or may not have taken effect."""
    return str(record.get("response", "")).startswith("err no answer")


def peers_of(info: dict[str, Any]) -> list[str]:
    """The stream's peers, leader first (when there is one), from a STREAM.INFO response."""
    cluster = info.get("cluster") or {}
    leader = cluster.get("leader")
    others = [r["name"] for r in cluster.get("replicas") or [] if r.get("name")]
    return ([leader] if leader else []) + sorted(others)


def settled(info: dict[str, Any], replicas: int) -> bool:
    """A leader, `replicas` peers in all, every follower current."""
    cluster = info.get("cluster") or {}
    followers = cluster.get("replicas") or []
    return bool(cluster.get("leader")) and len(followers) + 1 == replicas and all(r.get("current") for r in followers)


def scale_target(original: int, n_nodes: int) -> int:
    """One replica fewer; an R1 stream goes to R2 instead (when there is a second server)."""
    if original > 1:
        return original - 1
    return min(2, n_nodes)


async def info(admin: Admin, stream: str) -> dict[str, Any]:
    return await admin.request(f"STREAM.INFO.{stream}", None)


async def update_replicas(admin: Admin, stream: str, replicas: int) -> dict[str, Any]:
    """STREAM.UPDATE with the full current config and num_replicas changed."""
    current = await info(admin, stream)
    if not current.get("ok"):
        return current
    config = dict(current["data"]["config"])
    config["num_replicas"] = replicas
    return await admin.request(f"STREAM.UPDATE.{stream}", config)


async def wait_for(admin: Admin, stream: str, predicate, deadline_s: float) -> tuple[bool, dict[str, Any]]:
    """Poll STREAM.INFO until predicate(info) holds or the deadline passes; (held, last info)."""
    end = admin.now_s() + deadline_s
    last: dict[str, Any] = {}
    while True:
        got = await info(admin, stream)
        if got.get("ok"):
            last = got["data"]
            if predicate(last):
                return True, last
        if admin.now_s() >= end:
            return False, last
        await asyncio.sleep(POLL_S)  # polling interval, bounded by the deadline above


async def scale_start(admin: Admin, stream: str, n_nodes: int) -> dict[str, Any]:
    """Scale the stream away from its current replica count; what was asked and the answer."""
    current = await info(admin, stream)
    if not current.get("ok"):
        return {"ok": False, "response": brief(current), "note": "stream info failed: nothing changed"}
    original = int(current["data"]["config"].get("num_replicas") or 1)
    target = scale_target(original, n_nodes)
    result = await update_replicas(admin, stream, target)
    return {"ok": bool(result.get("ok")), "replicas": f"{original}->{target}", "original": original,
            "response": brief(result), "peers_before": peers_of(current["data"])}  # fmt: skip


async def restore(admin: Admin, stream: str, original: int, record: dict[str, Any]) -> None:
    """Scale back to `original` replicas and wait (bounded) until they are all current."""
    result = await update_replicas(admin, stream, original)
    record["restore"] = brief(result)
    await settle(admin, stream, original, record)


async def settle(admin: Admin, stream: str, replicas: int, record: dict[str, Any]) -> None:
    ok, last = await wait_for(admin, stream, lambda i: settled(i, replicas), SETTLE_DEADLINE_S)
    record["settled"] = ok
    record["peers_after"] = peers_of(last)


async def move_start(admin: Admin, stream: str, n_nodes: int, which: str, planned: str) -> dict[str, Any]:
    """Remove one of the stream's peers so the target re-places that replica.

    which: "leader" removes the current stream leader; "follower" removes `planned` if it is a
    follower, else the first follower by name. With a replica on every server, first scale down
    by one so there is a server to move to (recorded as `scaled`).
    """
    current = await info(admin, stream)
    if not current.get("ok"):
        return {"ok": False, "response": brief(current), "note": "stream info failed: nothing changed"}
    data = current["data"]
    original = int(data["config"].get("num_replicas") or 1)
    record: dict[str, Any] = {"original": original, "peers_before": peers_of(data)}
    if len(peers_of(data)) >= n_nodes and original > 1:
        shrunk = await update_replicas(admin, stream, original - 1)
        record["scaled"] = f"{original}->{original - 1}: {brief(shrunk)}"
        if not shrunk.get("ok"):
            return {**record, "ok": False, "response": "not attempted: no spare server"}
        ok, data = await wait_for(admin, stream, lambda i: settled(i, original - 1), SHRINK_DEADLINE_S)
        if not ok:
            record["note"] = "scale-down not settled before the peer removal"
    peers = peers_of(data)
    followers = peers[1:] if (data.get("cluster") or {}).get("leader") else peers
    if which == "leader" and (data.get("cluster") or {}).get("leader"):
        victim = peers[0]
    elif planned in followers:
        victim = planned
    elif followers:
        victim = followers[0]
    else:
        victim = planned
    result = await admin.request(f"STREAM.PEER.REMOVE.{stream}", {"peer": victim})
    return {**record, "ok": bool(result.get("ok")), "removed": victim, "which": which, "response": brief(result)}


async def move_end(admin: Admin, stream: str, record: dict[str, Any]) -> None:
    """Back to the original replica count (if it was scaled down), then wait until settled."""
    original = record.get("original")
    if original is None:
        return
    if "scaled" in record:
        await restore(admin, stream, original, record)
    else:
        await settle(admin, stream, original, record)


class NatsAdmin:
    """Admin over nats-py against whichever running node answers first.

    An API error is an answer (returned, not retried elsewhere); only an unreachable node or a
    timed-out request moves on to the next node. Requests here are absolute (set the replica count
    to N, remove peer P), so a repeat after a timeout asks for the same end state.
    """

    def __init__(self, cluster: Any, clock_s) -> None:
        self.cluster = cluster
        self._clock_s = clock_s

    def now_s(self) -> float:
        return self._clock_s()

    async def request(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        from jepsen.db import NodeState

        last = "no running node"
        for node in self.cluster.nodes:
            if node.state is not NodeState.RUNNING:
                continue
            try:
                nc = await client.connect(node.spec.client_url, "jepsen-nemesis-admin", REQUEST_TIMEOUT_S)
            except Exception as exc:
                last = client.describe(exc)
                continue
            try:
                data = await client.api(nc, subject, body, REQUEST_TIMEOUT_S)
                return {"ok": True, "data": data, "node": node.spec.name}
            except client.ApiError as exc:
                return {"ok": False, "error": exc.error, "node": node.spec.name}
            except Exception as exc:
                last = client.describe(exc)
            finally:
                await nc.close()
        return {"ok": False, "error": f"no answer: {last}"}
