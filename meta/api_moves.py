"""The meta leader's handlers for scaling, moves and peer removal.

How it works: a STREAM.UPDATE that changes `num_replicas` or `placement` gets a new desired peer
set here (`desired_peers`): the current peers that still qualify are kept (the stream's leader
first, so a scale-down rarely needs a leadership transfer), topped up with the least loaded
qualifying servers (meta/placement.py). The meta leader commits it with the config in one
`UpdateStream`; the stream's leader then walks the Raft membership there (meta/move_driver.py).
Unsatisfiable requests get nats-server's errors and change nothing: more replicas than servers
is "insufficient resources" (10023), no (or too few) servers with the cluster/tags is "no
suitable peers for placement" (10005), a second change while one is in flight is 10124, a move
and a scale in one update is 10123.

`$JS.API.STREAM.CANCEL_MOVE.<stream>` (and nats-server's `$JS.API.ACCOUNT.STREAM.CANCEL_MOVE.
<account>.<stream>`) commits the config and peers from before the move; the group walks back,
so config, tags and actual placement agree again. `$JS.API.STREAM.PEER.REMOVE.<stream>` with
`{"peer": "<server name>"}` replaces that server's replica with a newly placed one.

`$JS.API.SERVER.REMOVE` with `{"peer": "<server name>"}` takes a (stopped) server out of the
meta group (a single-server Raft change of `_meta_`; placement only considers the meta group's
voters afterwards) and re-places every replica it held, like a peer removal per stream. Meta
and stream leader stepdowns accept nats-server's `{"placement": {"preferred": "<server>"}}` or
`{"placement": {"cluster": ..., "tags": [...]}}` (`choose_leader`).
"""

from __future__ import annotations

import json
from typing import Any

from jetstream import api
from jetstream.api import fail, response
from jetstream.config import StreamConfig
from jetstream.errors import ApiError, ErrCode, JsApiException
import trio

from meta.assignments import META_GROUP, StreamAssignment, UpdateStream
from meta.moves import keep_and_add
from meta.placement import PlacementError, place, qualified, stepdown_target
from raft.types import ConfigChange, ConfigChangeType

INSUFFICIENT_RESOURCES = ApiError(code=503, err_code=10023, description="insufficient resources")
NO_PEERS = ApiError(code=400, err_code=10005, description="no suitable peers for placement")
MOVE_AND_SCALE = ApiError(code=400, err_code=10123, description="can not move and scale a stream in a single update")
MOVE_NOT_IN_PROGRESS = ApiError(code=400, err_code=10129, description="stream move not in progress")
PEER_NOT_MEMBER = ApiError(code=400, err_code=10040, description="peer not a member")
TRANSFER_FAILED = ApiError(code=500, err_code=10041, description="leadership transfer did not complete")
SERVER_NOT_MEMBER = ApiError(code=400, err_code=10044, description="server is not a member of the cluster")
PEER_KEYS = frozenset({"peer"})
SERVER_KEYS = frozenset({"peer", "peer_id"})
SERVER_REMOVE_WAIT_S = 6.0


def move_in_progress(detail: str) -> JsApiException:
    return JsApiException(ApiError(code=400, err_code=10124, description=f"stream move already in progress: {detail}"))


def placement_of(config: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    p = config.get("placement") or {}
    return str(p.get("cluster") or ""), tuple(sorted(p.get("tags") or ()))


async def desired_peers(svc: Any, sa: StreamAssignment, old: StreamConfig,
                        new: StreamConfig) -> tuple[str, ...] | None:
    """The new desired peers for an update, or None when it moves and scales nothing."""
    old_r, new_r = max(old.num_replicas, 1), max(new.num_replicas, 1)
    old_p, new_p = placement_of(old.to_json()), placement_of(new.to_json())
    if old_r == new_r and old_p == new_p:
        return None
    if sa.moving:
        raise move_in_progress(sa.name)
    if old_r != new_r and old_p != new_p:
        raise JsApiException(MOVE_AND_SCALE)
    current = await _leader_first(svc, sa)
    return choose_peers(svc, sa.name, current, new_r, new_p)


def choose_peers(svc: Any, name: str, current: list[str], replicas: int,
                 placement: tuple[str, tuple[str, ...]], exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    candidates = sorted(set(svc.meta_voters()) - exclude)
    if replicas > len(candidates):
        raise JsApiException(INSUFFICIENT_RESOURCES)
    cluster, tags = placement
    fit = qualified(candidates, svc.state.servers, cluster=cluster, tags=tags)
    if len(fit) < replicas:
        raise JsApiException(NO_PEERS)
    connected = set(svc.host.transport.connected_peers()) | {svc.node_id}
    ranked = place(name, len(fit), fit, svc.state.servers, svc.state.load(), cluster=cluster, tags=tags,
                   offline=set(fit) - connected)
    if isinstance(ranked, PlacementError):
        raise JsApiException(NO_PEERS)
    peers = keep_and_add([p for p in current if p not in exclude], fit, replicas, ranked)
    if peers is None:
        raise JsApiException(NO_PEERS)
    return peers


async def _leader_first(svc: Any, sa: StreamAssignment) -> list[str]:
    """The stream's peers, its current leader (as the stream info names it) first."""
    from meta.api import stream_info  # the info helper lives with the other handlers

    info = await stream_info(svc, sa)
    leader_name = (info.get("cluster") or {}).get("leader") or ""
    by_name = {svc.peer_name(p): p for p in sa.peers}
    leader = by_name.get(leader_name)
    return ([leader] if leader else []) + [p for p in sa.peers if p != leader]


def node_of(svc: Any, server_name: str) -> str | None:
    for node_id in svc.meta_voters():
        if svc.peer_name(node_id) == server_name or node_id == server_name:
            return str(node_id)
    return None


async def cancel_move(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    name = tokens[-1]
    sa = svc.state.streams.get(name)
    if sa is None:
        raise fail(ErrCode.STREAM_NOT_FOUND)
    if not sa.moving or sa.prior_config is None:
        raise JsApiException(MOVE_NOT_IN_PROGRESS)
    result = await svc.propose(UpdateStream(name, sa.prior_config, None, cancel=True))
    if getattr(result, "reason", None):
        raise JsApiException(MOVE_NOT_IN_PROGRESS)
    return response("account_stream_cancel_move_response", success=True)


async def peer_remove(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    name = tokens[3]
    sa = svc.state.streams.get(name)
    if sa is None:
        raise fail(ErrCode.STREAM_NOT_FOUND)
    d = api.decode_json(body, PEER_KEYS)
    peer = node_of(svc, api.str_field(d, "peer"))
    if peer is None or peer not in sa.peers:
        raise JsApiException(PEER_NOT_MEMBER)
    if sa.moving:
        raise move_in_progress(name)
    current = [p for p in sa.peers if p != peer]
    peers = choose_peers(svc, name, current, len(sa.peers), placement_of(sa.config), exclude=frozenset({peer}))
    result = await svc.propose(UpdateStream(name, sa.config, peers))
    if getattr(result, "reason", None) == "moving":
        raise move_in_progress(name)
    return response("stream_remove_peer_response", success=True)


async def server_remove(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    if tokens[:2] != ["SERVER", "REMOVE"] or len(tokens) != 2:
        raise fail(ErrCode.BAD_REQUEST)
    d = api.decode_json(body, SERVER_KEYS)
    node = node_of(svc, api.str_field(d, "peer") or api.str_field(d, "peer_id"))
    if node is None:
        raise JsApiException(SERVER_NOT_MEMBER)
    if node == svc.node_id:
        raise JsApiException(ApiError(code=400, err_code=10044,
                                      description="the meta leader can not remove itself: step it down first"))
    with trio.move_on_after(SERVER_REMOVE_WAIT_S):
        await svc.host.propose_config_change(META_GROUP, ConfigChange(ConfigChangeType.REMOVE, node))
    if node in svc.meta_voters():
        raise JsApiException(ApiError(code=503, err_code=10008, description="JetStream system temporarily unavailable"))
    for sa in sorted(svc.state.streams.values(), key=lambda a: a.name):
        if node in sa.peers and not sa.moving:
            await _replace(svc, sa, node)
    return response("server_remove_response", success=True)


async def _replace(svc: Any, sa: StreamAssignment, node: str) -> None:
    """Re-place one stream's replica from a removed server (best effort: a stream with no
    qualifying spare server keeps its peers and runs degraded)."""
    try:
        peers = choose_peers(svc, sa.name, [p for p in sa.peers if p != node], len(sa.peers),
                             placement_of(sa.config), exclude=frozenset({node}))
    except JsApiException:
        svc.log.warning("meta.server_remove_no_replacement", stream=sa.name, server=node)
        return
    await svc.propose(UpdateStream(sa.name, sa.config, peers))


def stepdown_placement(body: bytes) -> dict[str, Any]:
    """The `placement` of a stepdown request ({} for none); bad JSON is 10025."""
    d = api.decode_json(body)
    placement = d.get("placement") or {}
    if not isinstance(placement, dict):
        raise fail(ErrCode.INVALID_JSON, err="json: cannot unmarshal into Go struct field of type Placement")
    return placement


def choose_leader(svc: Any, members: list[str], leader: str, placement: dict[str, Any]) -> str | ApiError | None:
    """The member a stepdown with `placement` hands leadership to: None when the request names
    no placement (any member will do), an ApiError (10005 with nats-server's message) when
    nothing fits (meta/placement.py `stepdown_target`)."""
    preferred = str(placement.get("preferred") or "")
    cluster = str(placement.get("cluster") or "")
    tags = tuple(str(t) for t in placement.get("tags") or ())
    if not (preferred or cluster or tags):
        return None
    connected = set(svc.host.transport.connected_peers()) | {svc.node_id}
    names = {m: svc.peer_name(m) for m in members}
    found = stepdown_target(members, leader, names, svc.state.servers, connected,
                            preferred=preferred, cluster=cluster, tags=tags)
    if isinstance(found, PlacementError):
        return ApiError(code=400, err_code=10005, description=found.reason)
    return found


def stepdown_chooser(svc: Any) -> Any:
    """`choose_leader` for the stream leaders (jetstream/cluster.py `stepdown_chooser`)."""
    return lambda members, leader, placement: choose_leader(svc, members, leader, placement)


TYPE_NAMES = {("STREAM", "CANCEL_MOVE"): "account_stream_cancel_move_response",
              ("ACCOUNT", "STREAM"): "account_stream_cancel_move_response",
              ("STREAM", "PEER"): "stream_remove_peer_response",
              ("SERVER", "REMOVE"): "server_remove_response"}


async def account_stream(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    """`$JS.API.ACCOUNT.STREAM.CANCEL_MOVE.<account>.<stream>` (nats-server's subject)."""
    if len(tokens) == 5 and tokens[2] == "CANCEL_MOVE":
        return await cancel_move(svc, tokens, body)
    raise fail(ErrCode.BAD_REQUEST)


async def stream_peer(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    if len(tokens) == 4 and tokens[2] == "REMOVE":
        return await peer_remove(svc, tokens, body)
    raise fail(ErrCode.BAD_REQUEST)


HANDLERS = {("STREAM", "CANCEL_MOVE"): cancel_move, ("ACCOUNT", "STREAM"): account_stream,
            ("STREAM", "PEER"): stream_peer, ("SERVER", "REMOVE"): server_remove}
