"""The meta leader's `$JS.API` handlers: stream create/update/delete/names/list, account info,
meta leader stepdown, and "stream not found" for streams the cluster does not have.

How it works: the meta leader receives every `$JS.API.>` request (routed from any server) and
`is_mine` decides which it answers; requests about an existing stream belong to that stream's
leader and are left alone. CREATE validates like the single server (same parser and rules),
checks subject overlap against the committed assignments, places the replicas
(meta/placement.py), proposes `CreateStream` and, once committed, waits (bounded) until the new
stream's leader answers STREAM.INFO, so the reply carries real cluster state and a client can
publish right away. UPDATE proposes the new config; the stream leader carries it into the
stream's log. DELETE proposes `DeleteStream`: the only way a stream's data goes away.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from jetstream import api
from jetstream.api import error_response, fail, require_empty, response
from jetstream.api_stream import NAMES_KEYS, _parse_config
from jetstream.cluster import transfer_leadership
from jetstream.config import StreamConfig, check_stream_create, check_stream_update
from jetstream.errors import ApiError, ErrCode, JsApiException, api_error
from jetstream.info import ZERO_TIME, stream_info_json
from meta.assignments import (
    META_GROUP,
    CreateStream,
    DeleteStream,
    MetaRejected,
    StreamAssignment,
    UpdateStream,
)
from meta import api_moves
from meta.placement import PlacementError, place
from natsd.subjects import subjects_overlap

INSUFFICIENT_RESOURCES = api_moves.INSUFFICIENT_RESOURCES
NO_PEERS = api_moves.NO_PEERS
CREATE_WAIT_S = 10.0
INFO_REQUEST_S = 0.5
LIST_INFO_S = 1.0
DELETE_SETTLE_S = 3.0
DELETE_POLL_S = 0.01

_META_OPS = {("INFO",), ("STREAM", "CREATE"), ("STREAM", "UPDATE"), ("STREAM", "DELETE"),
             ("STREAM", "NAMES"), ("STREAM", "LIST"), ("META", "LEADER"), *api_moves.HANDLERS}


def stream_of(tokens: list[str]) -> str | None:
    """The stream a `$JS.API` request is about (tokens after `$JS.API.`), if any."""
    if len(tokens) < 3:
        return None
    if tokens[0] == "STREAM" and tokens[1] in ("MSG", "LEADER") and len(tokens) >= 4:
        return tokens[3]
    if tokens[0] == "CONSUMER" and tokens[1] in ("DURABLE", "MSG", "LEADER") and len(tokens) >= 4:
        return tokens[3]
    if tokens[0] in ("STREAM", "DIRECT", "CONSUMER"):
        return tokens[2]
    return None


def is_mine(svc: Any, subject: str) -> bool:
    tokens = subject.split(".")[2:]
    if tuple(tokens[:2]) in _META_OPS or tuple(tokens[:1]) in _META_OPS:
        return True
    if tokens[:3] == ["CONSUMER", "MSG", "NEXT"]:
        return False  # a pull request: only a stream leader answers it
    name = stream_of(tokens)
    if name is None:
        return api.lookup(tokens)[0] is None  # unknown subjects get "bad request"
    return name not in svc.state.streams


async def handle(svc: Any, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
    tokens = subject.split(".")[2:]
    handler = _HANDLERS.get(tuple(tokens[:2])) or _HANDLERS.get(tuple(tokens[:1]))
    type_name = _type_of(tokens)
    try:
        if handler is None:
            if stream_of(tokens) is None:
                raise fail(ErrCode.BAD_REQUEST)
            raise fail(ErrCode.STREAM_NOT_FOUND)
        body = await handler(svc, tokens, payload)
    except JsApiException as exc:
        body = error_response(type_name, exc.error)
    svc.js.respond(reply, body)


def _type_of(tokens: list[str]) -> str:
    if tokens[:3] == ["META", "LEADER", "STEPDOWN"]:
        return "meta_leader_stepdown_response"
    if tokens[:3] == ["STREAM", "LEADER", "STEPDOWN"]:
        return "stream_leader_stepdown_response"
    if tuple(tokens[:2]) in api_moves.TYPE_NAMES:
        return api_moves.TYPE_NAMES[tuple(tokens[:2])]
    return api.lookup(tokens)[1]


# -- handlers ---------------------------------------------------------------------------------
async def create(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    cfg = _parse_config(tokens, body)
    old = svc.state.streams.get(cfg.name)
    if old is not None:
        if old.config_text() != _text(cfg):
            raise fail(ErrCode.STREAM_NAME_EXIST)
        return response("stream_create_response", **await stream_info(svc, old))
    check_stream_create(cfg)
    if svc.state.overlaps(cfg.name, list(cfg.subjects)):
        raise fail(ErrCode.STREAM_SUBJECT_OVERLAP)
    peers = _place(svc, cfg)
    result = await svc.propose(CreateStream(cfg.name, cfg.to_json(), peers, svc.js.clock_ns()))
    _raise_rejected(result)
    sa = svc.state.streams[cfg.name]
    info = await stream_info(svc, sa, wait_s=CREATE_WAIT_S)
    return response("stream_create_response", **info, did_create=True)


def _place(svc: Any, cfg: StreamConfig) -> tuple[str, ...]:
    placement = cfg.to_json().get("placement") or {}
    replicas = max(cfg.num_replicas, 1)
    voters = svc.meta_voters()
    if replicas > len(voters):
        raise JsApiException(INSUFFICIENT_RESOURCES)
    connected = set(svc.host.transport.connected_peers()) | {svc.node_id}
    peers = place(cfg.name, replicas, sorted(voters), svc.state.servers, svc.state.load(),
                  cluster=str(placement.get("cluster") or ""), tags=list(placement.get("tags") or ()),
                  offline=voters - connected)
    if isinstance(peers, PlacementError):
        raise JsApiException(NO_PEERS)
    return peers


def _raise_rejected(result: Any) -> None:
    if not isinstance(result, MetaRejected):
        return
    errors = {"exists": api_error(ErrCode.STREAM_NAME_EXIST),
              "not_found": api_error(ErrCode.STREAM_NOT_FOUND),
              "subject_overlap": api_error(ErrCode.STREAM_SUBJECT_OVERLAP),
              "moving": api_moves.move_in_progress("").error}
    raise JsApiException(errors.get(result.reason, api_error(ErrCode.BAD_REQUEST)))


async def update(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    cfg = _parse_config(tokens, body)
    old = svc.state.streams.get(cfg.name)
    if old is None:
        raise fail(ErrCode.STREAM_NOT_FOUND)
    old_cfg = StreamConfig.from_json(old.config)
    check_stream_update(old_cfg, cfg)
    if svc.state.overlaps(cfg.name, list(cfg.subjects)):
        raise fail(ErrCode.STREAM_SUBJECT_OVERLAP)
    peers = await api_moves.desired_peers(svc, old, old_cfg, cfg)  # scale or move (meta/api_moves.py)
    _raise_rejected(await svc.propose(UpdateStream(cfg.name, cfg.to_json(), peers)))
    sa = svc.state.streams[cfg.name]
    info = await stream_info(svc, sa, wait_s=CREATE_WAIT_S, want_config=cfg.to_json())
    return response("stream_update_response", **info)


async def delete(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    require_empty(body)
    if tokens[2] not in svc.state.streams:
        raise fail(ErrCode.STREAM_NOT_FOUND)
    sa = svc.state.streams[tokens[2]]
    _raise_rejected(await svc.propose(DeleteStream(tokens[2])))
    await _replicas_stopped(svc, sa)
    return response("stream_delete_response", success=True)


async def _replicas_stopped(svc: Any, sa: StreamAssignment) -> bool:
    """After a committed delete, wait (bounded) until every replica of the stream stopped, as
    seen from here: the group is gone locally and no other server still subscribes to a
    replica's `$JSC.DIGEST.<server>.<stream>` (a replica drops that last, after its leader
    subscriptions and its data, and before telling the routes). Then no server answers requests
    about the stream any more and its data is gone from every reachable server (nats-server also answers a delete once the stream is gone); a replica
    that is unreachable does not hold the reply longer than DELETE_SETTLE_S."""
    others = [svc.peer_name(p) for p in sa.hosts() if p != svc.node_id]
    with trio.move_on_after(DELETE_SETTLE_S):
        while sa.group in svc.js.by_group or sa.group in svc.js.stopping or any(
                svc.js.others_subscribe(f"$JSC.DIGEST.{name}.{sa.name}") for name in others):
            await trio.sleep(DELETE_POLL_S)  # replicas stop when they apply the delete
        return True
    svc.log.warning("meta.delete_not_settled", stream=sa.name, group=sa.group)
    return False


def _matching(svc: Any, body: bytes) -> list[StreamAssignment]:
    d = api.decode_json(body, NAMES_KEYS)
    subject = api.str_field(d, "subject")
    streams = sorted(svc.state.streams.values(), key=lambda sa: sa.name)
    if subject:
        streams = [sa for sa in streams if any(subjects_overlap(subject, s) for s in sa.subjects())]
    return streams


async def names(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    found = [sa.name for sa in _matching(svc, body)]
    return response("stream_names_response", total=len(found), offset=0, limit=api.NAMES_LIMIT,
                    streams=found[:api.NAMES_LIMIT])


async def list_(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    found = _matching(svc, body)[:api.LIST_LIMIT]
    infos: list[dict[str, Any]] = [{} for _ in found]

    async def one(i: int, sa: StreamAssignment) -> None:
        infos[i] = await stream_info(svc, sa, wait_s=LIST_INFO_S)

    async with trio.open_nursery() as nursery:
        for i, sa in enumerate(found):
            nursery.start_soon(one, i, sa)
    return response("stream_list_response", total=len(found), offset=0, limit=api.LIST_LIMIT, streams=infos)


async def account_info(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    limits = {"max_memory": -1, "max_storage": -1, "max_streams": -1, "max_consumers": -1,
              "max_ack_pending": -1, "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
              "max_bytes_required": False}
    return response("account_info_response", memory=0, storage=0, reserved_memory=0, reserved_storage=0,
                    streams=len(svc.state.streams), consumers=sum(len(c) for c in svc.state.consumers.values()), limits=limits,
                    api={"level": api.API_LEVEL, "total": svc.js.api_total, "errors": svc.js.api_errors},
                    meta_cluster=meta_cluster_info(svc))


async def meta_stepdown(svc: Any, tokens: list[str], body: bytes) -> dict[str, Any]:
    if tokens[:3] != ["META", "LEADER", "STEPDOWN"]:
        raise fail(ErrCode.BAD_REQUEST)
    placement = api_moves.stepdown_placement(body)
    node = svc.host.node(META_GROUP)
    progress = getattr(node, "_progress", {})
    members = sorted(svc.meta_voters(), key=lambda p: (-(progress[p].match if p in progress else -1), p))
    target = api_moves.choose_leader(svc, members, svc.node_id, placement)
    if isinstance(target, ApiError):
        raise JsApiException(target)
    if not await transfer_leadership(svc.host, META_GROUP, svc.node_id, to=target):
        raise JsApiException(api_moves.TRANSFER_FAILED)
    return response("meta_leader_stepdown_response", success=True)


def meta_cluster_info(svc: Any) -> dict[str, Any]:
    node = svc.host.node(META_GROUP)
    leader = node.leader_id
    return {"name": svc.cluster_name, "leader": svc.peer_name(leader) if leader else "",
            "peers": sorted(svc.peer_name(p) for p in svc.meta_voters()), "cluster_size": len(svc.meta_voters())}


# -- stream info from the stream's leader -----------------------------------------------------
async def stream_info(svc: Any, sa: StreamAssignment, *, wait_s: float = INFO_REQUEST_S,
                      want_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the stream leader; without an answer by the deadline, a placeholder from the meta
    state (no messages known, no leader)."""
    with trio.move_on_after(wait_s):
        while True:  # bounded by the deadline
            raw = await svc.requester.request(f"$JS.API.STREAM.INFO.{sa.name}", b"", INFO_REQUEST_S)
            info = _parse_info(raw)
            if info is not None and (want_config is None or info.get("config") == want_config):
                return info
            await trio.sleep(0.05)  # the stream is electing a leader or applying its config
    state = {"messages": 0, "bytes": 0, "first_seq": 0, "first_ts": ZERO_TIME, "last_seq": 0,
             "last_ts": ZERO_TIME, "consumer_count": 0}
    cluster = {"name": svc.cluster_name, "leader": "", "raft_group": sa.group}
    return stream_info_json(sa.config, sa.created_ns, state, svc.js.clock_ns(), cluster)


def _parse_info(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(info, dict) or "error" in info:
        return None
    info.pop("type", None)
    return info


def _text(cfg: StreamConfig) -> str:
    return json.dumps(cfg.to_json(), sort_keys=True, separators=(",", ":"))


_HANDLERS = {
    ("INFO",): account_info,
    ("STREAM", "CREATE"): create,
    ("STREAM", "UPDATE"): update,
    ("STREAM", "DELETE"): delete,
    ("STREAM", "NAMES"): names,
    ("STREAM", "LIST"): list_,
    ("META", "LEADER"): meta_stepdown,
    **api_moves.HANDLERS,
}

__all__ = ["handle", "is_mine", "stream_of"]
