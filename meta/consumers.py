"""Durable consumer assignments through the meta group.

How it works: the stream leader keeps answering `$JS.API.CONSUMER.*` (it holds the consumers'
runtime state, so every check and every response stays what the single server gives), but a
durable consumer exists only once the meta group says so. To create, update or delete one the
stream leader asks the meta leader on `$JSC.CONSUMER.ASSIGN` (`MetaConsumerRegistry.assign` /
`unassign`); the meta leader, after its read-index round, proposes `AssignConsumer` /
`UnassignConsumer` and answers with the committed index. The stream leader then changes the consumer
locally, and its consumer reconciliation (jetstream/cluster_consumers.py) leaves that name alone
until its own meta state applied that index. Every server applies the
assignments; the leader of a stream runs exactly the assigned durables (a new stream leader
starts them from the state replicated in the stream's log), and `DeleteStream` drops them all.

nats-server also meta-assigns ephemeral consumers (each gets its own Raft group). We keep
ephemerals local to the stream leader (no meta entry per `js.subscribe()`; they end with a
stream leader change, as they did before).
"""

from __future__ import annotations

import json
from typing import Any

from jetstream.cluster_consumers import Committed
from jetstream.errors import ApiError, ErrCode, api_error
from meta.assignments import META_GROUP, AssignConsumer, MetaRejected, UnassignConsumer, encode_command

ASSIGN_SUBJECT = "$JSC.CONSUMER.ASSIGN"
ASSIGN_TIMEOUT_S = 4.0  # the meta leader's read barrier, proposal and commit
UNAVAILABLE = ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable")


def encode_request(cmd: AssignConsumer | UnassignConsumer) -> bytes:
    body: dict[str, Any] = {"stream": cmd.stream, "name": cmd.name}
    if isinstance(cmd, AssignConsumer):
        body.update(op="assign", config=cmd.config, created_ns=cmd.created_ns)
    else:
        body["op"] = "unassign"
    return json.dumps(body, separators=(",", ":")).encode()


def decode_request(payload: bytes) -> AssignConsumer | UnassignConsumer | None:
    try:
        d = json.loads(payload)
        if d["op"] == "assign":
            if not isinstance(d["config"], dict):
                return None
            return AssignConsumer(str(d["stream"]), str(d["name"]), d["config"], int(d["created_ns"]))
        if d["op"] == "unassign":
            return UnassignConsumer(str(d["stream"]), str(d["name"]))
    except (ValueError, KeyError, TypeError):
        return None
    return None


async def handle_assign(svc: Any, reply: str | None, payload: bytes) -> None:
    """The meta leader's side (called after its read-index round): propose, and answer with the
    committed index (and the assignment's creation time, which an update keeps)."""
    cmd = decode_request(payload)
    if cmd is None or not reply:
        return
    index, result = await svc.host.propose_result(META_GROUP, encode_command(cmd))
    body: dict[str, Any] = {"index": index}
    if isinstance(result, MetaRejected):
        body["error"] = result.reason
    elif isinstance(cmd, AssignConsumer):
        ca = svc.state.consumers_of(cmd.stream).get(cmd.name)
        body["created_ns"] = cmd.created_ns if ca is None else ca.created_ns
    svc.server.publish_internal(reply, None, None, json.dumps(body).encode())


class MetaConsumerRegistry:
    """What a `ClusteredJetStream` asks about durable consumers (its `consumer_registry`)."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def assigned(self, stream: str) -> dict[str, tuple[dict[str, Any], int]]:
        """name -> (config json, created_ns) of the durables the meta state assigns to `stream`."""
        return {n: (ca.config, ca.created_ns) for n, ca in self.svc.state.consumers_of(stream).items()}

    def applied_index(self) -> int:
        return int(self.svc.state.applied)

    async def assign(self, stream: str, name: str, config: dict[str, Any], created_ns: int) -> Committed | ApiError:
        return await self._ask(AssignConsumer(stream, name, config, created_ns))

    async def unassign(self, stream: str, name: str) -> Committed | ApiError:
        """Committed also when the meta state no longer had it (deleted meanwhile)."""
        return await self._ask(UnassignConsumer(stream, name))

    async def _ask(self, cmd: AssignConsumer | UnassignConsumer) -> Committed | ApiError:
        raw = await self.svc.requester.request(ASSIGN_SUBJECT, encode_request(cmd), ASSIGN_TIMEOUT_S)
        if raw is None:
            return UNAVAILABLE  # no meta leader (or it lost its quorum)
        try:
            d = json.loads(raw)
            index, error, created_ns = int(d["index"]), d.get("error"), int(d.get("created_ns", 0))
        except (ValueError, KeyError, TypeError):
            return UNAVAILABLE
        if error is None or (error == "not_found" and isinstance(cmd, UnassignConsumer)):
            return Committed(index, created_ns)
        if error == "not_found":
            return api_error(ErrCode.STREAM_NOT_FOUND)
        return UNAVAILABLE
