"""`$JS.API.CONSUMER.*` handlers: create (three subject forms + legacy durable), info, delete,
names, list, pause, reset. (MSG.NEXT is routed straight to the consumer by the service, not through here.)

Create follows nats-server's checks in order: stream exists, `stream_name` matches, the name in
the subject agrees with `durable_name`/`name` (10017/10018/10020), the filter in the subject
agrees with `filter_subject` (10131), the config is valid on its own and for this stream
(jetstream/consumer_config.py), `action` create/update (10148/10149), max_consumers (10026).
Creating an existing consumer with the same config returns it; with a different config the
changeable fields are updated in place (delivery state is kept).
"""

from __future__ import annotations

from typing import Any

import attrs

from jetstream.api import (
    LIST_LIMIT,
    NAMES_LIMIT,
    check_keys,
    decode_json,
    fail,
    int_field,
    paging,
    require_empty,
    response,
    str_field,
)
from jetstream.api_stream import stream_or_fail
from jetstream.config import is_valid_name
from jetstream.consumer_config import ConsumerConfig, DeliverPolicy, check_consumer_for_stream
from jetstream.errors import ApiError, ErrCode, JsApiException, api_error
from natsd.subjects import subject_matches
from jetstream.info import ZERO_TIME, consumer_info_json, parse_rfc3339_ns, rfc3339_ns

FILTER_MISMATCH = "Consumer create request did not match filtered subject from create subject"
CREATE_KEYS = frozenset({"stream_name", "config", "action", "pedantic"})
CONSUMER_CONFIG_KEYS = frozenset(
    "durable_name name description deliver_policy opt_start_seq opt_start_time ack_policy ack_wait "
    "max_deliver backoff filter_subject filter_subjects replay_policy rate_limit_bps sample_freq "
    "max_waiting max_ack_pending flow_control headers_only max_batch max_expires max_bytes "
    "inactive_threshold num_replicas mem_storage metadata pause_until priority_groups priority_policy "
    "priority_timeout deliver_subject deliver_group idle_heartbeat direct".split()
)
# Fields an existing consumer may change (others make the create fail with 10013).
_UPDATABLE = frozenset(
    "description ack_wait max_deliver backoff max_ack_pending max_waiting headers_only max_batch "
    "max_expires max_bytes inactive_threshold metadata sample_freq rate_limit_bps idle_heartbeat "
    "flow_control deliver_subject filter_subject filter_subjects num_replicas pause_until".split()
)


@attrs.frozen
class Counts:
    delivered_consumer_seq: int
    delivered_stream_seq: int
    ack_floor_consumer_seq: int
    ack_floor_stream_seq: int
    num_ack_pending: int
    num_redelivered: int
    num_pending: int


def consumer_or_fail(rt: Any, name: str) -> Any:
    consumer = rt.consumers.get(name)
    if consumer is None:
        raise fail(ErrCode.CONSUMER_NOT_FOUND)
    return consumer


async def consumer_info(js: Any, consumer: Any) -> dict[str, Any]:
    rt, st = consumer.stream, consumer.state
    num_pending = await rt.read(consumer.num_pending)
    counts = Counts(st.consumer_seq, st.cursor, st.ack_floor_consumer, st.ack_floor_stream,
                    len(st.pending), st.num_redelivered, num_pending)
    out = consumer_info_json(rt.name, consumer.name, consumer.created_ns, consumer.config.to_json(), counts,
                             js.clock_ns(), num_waiting=len(consumer.waiting),
                             push_bound=consumer.push_bound())
    pause_state = _pause_fields(js, consumer)
    if pause_state["paused"]:
        out["paused"] = True
        out["pause_remaining"] = pause_state["pause_remaining"]
    return out


def _subject_names(tokens: list[str]) -> tuple[str, str, str, bool]:
    """(stream, name from subject, filter from subject, legacy durable form)."""
    if tokens[1] == "DURABLE":
        return tokens[3], tokens[4], "", True
    name = tokens[3] if len(tokens) > 3 else ""
    return tokens[2], name, ".".join(tokens[4:]), False


def _check_names(d: dict[str, Any], name: str, filt: str, legacy: bool, tokens: list[str]) -> None:
    durable = str_field(d, "durable_name")
    if legacy:
        if not durable:
            raise fail(ErrCode.CONSUMER_DURABLE_NAME_NOT_SET)
        if durable != name:
            raise fail(ErrCode.CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT)
        return
    if not name:
        if durable:
            raise fail(ErrCode.CONSUMER_EPHEMERAL_WITH_DURABLE_NAME)
        return
    if durable and durable != name:
        raise fail(ErrCode.CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT)
    given = str_field(d, "name")
    if given and given != name:
        raise fail(ErrCode.CONSUMER_CREATE, err="consumer name in subject does not match name in request")
    if filt:
        if d.get("filter_subjects"):
            raise JsApiException(ApiError(400, 10137, "consumer create request did not match filtered subject"))
        if str_field(d, "filter_subject") != filt:
            raise JsApiException(ApiError(400, 10131, FILTER_MISMATCH))


def _parse_create(tokens: list[str], body: bytes) -> tuple[str, ConsumerConfig, str, str]:
    req = decode_json(body, CREATE_KEYS, required=True)
    stream, name, filt, legacy = _subject_names(tokens)
    if not is_valid_name(stream) or (name and not is_valid_name(name)):
        raise fail(ErrCode.BAD_REQUEST)
    d = req.get("config")
    if not isinstance(d, dict):
        raise fail(ErrCode.INVALID_JSON, err="consumer config is required")
    check_keys(d, CONSUMER_CONFIG_KEYS)
    body_stream = str_field(req, "stream_name")
    if body_stream and body_stream != stream:
        raise fail(ErrCode.STREAM_MISMATCH)
    _check_names(d, name, filt, legacy, tokens)
    action = str_field(req, "action")
    if action not in ("", "create", "update"):
        raise fail(ErrCode.INVALID_JSON, err=f'json: unknown consumer action "{action}"')
    if not d.get("deliver_subject") and d.get("idle_heartbeat"):  # nats-server checks this first
        raise JsApiException(api_error(ErrCode.CONSUMER_HB_REQUIRES_PUSH))
    d = dict(d)
    if name and not legacy and not d.get("durable_name") and not d.get("name"):
        d["name"] = name
    return stream, ConsumerConfig.from_json(d), name, action


async def create(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    stream, cfg, name, action = _parse_create(tokens, body)
    rt = stream_or_fail(js, stream)
    settle = getattr(js, "reconcile_stream_consumers", None)  # clustered: run the assigned durables
    if settle is not None:
        await settle(rt)
    name = name or cfg.durable_name or cfg.name
    existing = rt.consumers.get(name) if name else None
    others = [c.config for n, c in rt.consumers.items() if n != name]
    # nats-server (2.10+) accepts filters outside the stream's subjects: only the workqueue rules
    # of check_consumer_for_stream apply, so it gets the stream without its subject list.
    check_consumer_for_stream(cfg, attrs.evolve(rt.config, subjects=()), others)
    if cfg.is_push and any(subject_matches(s, cfg.deliver_subject) for s in rt.config.subjects):
        raise JsApiException(ApiError(400, 10081, "consumer deliver subject forms a cycle"))
    if existing is not None:
        if action == "create" and existing.config.to_json() != cfg.to_json():
            raise fail(ErrCode.CONSUMER_ALREADY_EXISTS)
        updated = _updated_config(existing, cfg)
        if updated is not None:
            persist = getattr(js, "persist_consumer_config", None)  # clustered: the meta group first
            if persist is not None:
                await persist(rt, existing, updated)
            _update_in_place(existing, updated)
        return response("consumer_create_response", **await consumer_info(js, existing))
    if action == "update":
        raise fail(ErrCode.CONSUMER_DOES_NOT_EXIST)
    if 0 < rt.config.max_consumers <= len(rt.consumers):
        raise fail(ErrCode.MAXIMUM_CONSUMERS_LIMIT)
    if not name:
        name = js.random_name()
        cfg = attrs.evolve(cfg, name=name)
    consumer = await js.create_consumer(rt, name, cfg)
    return response("consumer_create_response", **await consumer_info(js, consumer))


def _updated_config(consumer: Any, cfg: ConsumerConfig) -> ConsumerConfig | None:
    """The consumer's config after a create that asks for `cfg`; None when nothing changes.
    Raises when a field that cannot be updated differs."""
    old, new = consumer.config.to_json(), cfg.to_json()
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    changed.discard("name")
    if not changed:
        return None
    if not changed <= _UPDATABLE or consumer.config.is_push != cfg.is_push:
        raise fail(ErrCode.CONSUMER_CREATE, err="consumer already exists and the configuration can not be updated")
    return attrs.evolve(cfg, name=consumer.config.name or cfg.name)


def _update_in_place(consumer: Any, cfg: ConsumerConfig) -> None:
    consumer.config = cfg
    consumer.filters = cfg.filters()
    consumer.state.ack_wait_ns = cfg.ack_wait_ns
    consumer.state.max_deliver = cfg.max_deliver
    consumer.dirty = True
    consumer.kick()


async def info(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    require_empty(body)
    rt = stream_or_fail(js, tokens[2])
    return response("consumer_info_response", **await consumer_info(js, consumer_or_fail(rt, tokens[3])))


async def delete(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    require_empty(body)
    rt = stream_or_fail(js, tokens[2])
    await js.delete_consumer(rt, consumer_or_fail(rt, tokens[3]))
    return response("consumer_delete_response", success=True)


async def names(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, frozenset({"offset", "subject"}))
    rt = stream_or_fail(js, tokens[2])
    all_names = sorted(rt.consumers)
    start, end = paging(len(all_names), int_field(d, "offset"), NAMES_LIMIT)
    return response("consumer_names_response", total=len(all_names), offset=start, limit=NAMES_LIMIT,
                    consumers=all_names[start:end])


async def list_(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, frozenset({"offset"}))
    rt = stream_or_fail(js, tokens[2])
    all_names = sorted(rt.consumers)
    start, end = paging(len(all_names), int_field(d, "offset"), LIST_LIMIT)
    infos = [await consumer_info(js, rt.consumers[n]) for n in all_names[start:end] if n in rt.consumers]
    return response("consumer_list_response", total=len(all_names), offset=start, limit=LIST_LIMIT,
                    consumers=infos)


async def pause(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, frozenset({"pause_until"}))
    rt = stream_or_fail(js, tokens[2])
    consumer = consumer_or_fail(rt, tokens[3])
    text = str_field(d, "pause_until")
    until_ns = parse_rfc3339_ns(text) if text else 0
    if until_ns is None:
        raise fail(ErrCode.INVALID_JSON, err=f'parsing time "{text}" as RFC3339 failed')
    consumer.pause(until_ns)
    return response("consumer_pause_response", **_pause_fields(js, consumer, text))


def _pause_fields(js: Any, consumer: Any, requested: str = "") -> dict[str, Any]:
    remaining = consumer.paused_until_ns - js.clock_ns()
    if remaining <= 0:
        return {"paused": False, "pause_until": requested or ZERO_TIME}
    return {"paused": True, "pause_until": rfc3339_ns(consumer.paused_until_ns), "pause_remaining": remaining}


async def reset(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, frozenset({"seq"}))
    rt = stream_or_fail(js, tokens[2])
    consumer = consumer_or_fail(rt, tokens[3])
    seq = int_field(d, "seq")
    cfg = consumer.config
    if seq < 0:
        raise fail(ErrCode.INVALID_JSON, err=f"json: cannot unmarshal number {seq} into Go struct field .seq of type uint64")
    allowed = (DeliverPolicy.ALL, DeliverPolicy.BY_START_SEQUENCE, DeliverPolicy.BY_START_TIME)
    below_start = cfg.deliver_policy is DeliverPolicy.BY_START_SEQUENCE and seq < cfg.opt_start_seq
    if seq and (cfg.deliver_policy not in allowed or below_start):
        raise fail(ErrCode.CONSUMER_INVALID_RESET, err="not allowed")
    reset_seq = consumer.reset(seq)
    return response("consumer_reset_response", **await consumer_info(js, consumer), reset_seq=reset_seq)


ROUTES: dict[tuple[str, ...], tuple[Any, str, int]] = {
    ("CONSUMER", "PAUSE"): (pause, "consumer_pause_response", 4),
    ("CONSUMER", "RESET"): (reset, "consumer_reset_response", 4),
    ("CONSUMER", "CREATE"): (create, "consumer_create_response", -3),
    ("CONSUMER", "DURABLE", "CREATE"): (create, "consumer_create_response", 5),
    ("CONSUMER", "INFO"): (info, "consumer_info_response", 4),
    ("CONSUMER", "DELETE"): (delete, "consumer_delete_response", 4),
    ("CONSUMER", "NAMES"): (names, "consumer_names_response", 3),
    ("CONSUMER", "LIST"): (list_, "consumer_list_response", 3),
}
