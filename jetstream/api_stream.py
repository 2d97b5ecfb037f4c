"""`$JS.API.STREAM.*` and `$JS.API.DIRECT.GET.*` handlers.

Each handler validates the request like nats-server (name in subject vs body, strict JSON keys,
config rules from jetstream/config.py), then either answers from the store or applies a command
to the stream's state machine through `StreamRuntime.apply` (purge, delete message, config
update), which commits before the response is sent. DIRECT.GET answers with the raw message and
`Nats-Stream/Subject/Sequence/Time-Stamp` headers, or a status line (404/408) with no body.
"""

from __future__ import annotations

import base64
from typing import Any

from jetstream.api import (
    LIST_LIMIT,
    NAMES_LIMIT,
    bool_field,
    check_keys,
    decode_json,
    fail,
    int_field,
    paging,
    require_empty,
    response,
    str_field,
)
from jetstream.config import (
    StreamConfig,
    check_stream_create,
    check_stream_update,
    is_valid_name,
    sealed_adjusted,
    stream_subjects_conflict,
)
from jetstream.errors import ApiError, ErrCode, JsApiException, invalid_config
from jetstream.headers import append_headers, encode_headers
from jetstream.info import rfc3339_ns, stream_info_json, stream_state_json
from jetstream.stream import DeleteMsg, PurgeCmd
from natsd.subjects import is_valid_subject, subjects_overlap

STREAM_CONFIG_KEYS = frozenset(
    "name description subjects retention max_consumers max_msgs max_bytes max_age max_msgs_per_subject "
    "max_msg_size discard storage num_replicas no_ack template_owner duplicate_window placement mirror "
    "sources compression first_seq subject_transform republish allow_rollup_hdrs allow_direct "
    "mirror_direct discard_new_per_subject sealed deny_delete deny_purge metadata consumer_limits "
    "allow_msg_ttl subject_delete_marker_ttl allow_msg_counter allow_atomic allow_msg_schedules "
    "persist_mode allow_batched pedantic".split()
)
INFO_KEYS = frozenset({"deleted_details", "subjects_filter", "offset"})
PURGE_KEYS = frozenset({"filter", "seq", "keep"})
MSG_GET_KEYS = frozenset({"seq", "last_by_subj", "next_by_subj", "batch", "max_bytes", "start_time",
                          "multi_last", "up_to_seq", "up_to_time", "no_hdr"})
NAMES_KEYS = frozenset({"offset", "subject"})
SUBJECTS_LIMIT = 100_000


def stream_or_fail(js: Any, name: str) -> Any:
    rt = js.streams.get(name)
    if rt is None:
        raise fail(ErrCode.STREAM_NOT_FOUND)
    return rt


async def stream_info(js: Any, rt: Any, subjects_filter: str = "", deleted_details: bool = False) -> dict[str, Any]:
    def read() -> tuple[Any, dict[str, int] | None, list[int] | None]:
        subjects = rt.store.subject_counts(subjects_filter) if subjects_filter else None
        deleted = rt.store.deleted_seqs() if deleted_details else None
        return rt.store.state(), subjects, deleted

    state, subjects, deleted = await rt.call(read)
    state_json = stream_state_json(state, len(rt.consumers), subjects, deleted)
    cluster = {"leader": js.server.server_name}
    return stream_info_json(rt.config.to_json(), rt.created_ns, state_json, js.clock_ns(), cluster)


def _parse_config(tokens: list[str], body: bytes) -> StreamConfig:
    d = decode_json(body, STREAM_CONFIG_KEYS, required=True)
    name = tokens[2]
    if "name" in d and d["name"] not in (None, "") and d["name"] != name:
        raise fail(ErrCode.STREAM_MISMATCH)
    d = {**d, "name": name}
    d.pop("pedantic", None)
    _check_capture(d)
    return StreamConfig.from_json(d)


def _check_capture(d: dict[str, Any]) -> None:
    """nats-server's no-ack rules, checked before the generic config rules (same texts)."""
    subjects = d.get("subjects")
    if d.get("no_ack") is True or not isinstance(subjects, list):
        return
    for subject in subjects:
        if subject == ">":
            raise JsApiException(invalid_config("capturing all subjects requires no-ack to be true"))
        if isinstance(subject, str) and is_valid_subject(subject) and subjects_overlap(subject, "$JS.API.>"):
            raise JsApiException(invalid_config("subjects that overlap with jetstream api require no-ack to be true"))


def _check_common(js: Any, cfg: StreamConfig) -> None:
    if cfg.num_replicas > 1:
        raise fail(ErrCode.STREAM_REPLICAS_NOT_SUPPORTED)
    limit = js.storage_limit(cfg)
    if limit > 0 and cfg.max_bytes > limit:
        raise JsApiException(ApiError(500, 10047, "insufficient storage resources available"))
    if stream_subjects_conflict(cfg, js.other_stream_configs(cfg.name)):
        raise fail(ErrCode.STREAM_SUBJECT_OVERLAP)


async def create(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    cfg = _parse_config(tokens, body)
    rt = js.streams.get(cfg.name)
    if rt is not None:
        if rt.config.to_json() != cfg.to_json():
            raise fail(ErrCode.STREAM_NAME_EXIST)
        return response("stream_create_response", **await stream_info(js, rt))
    check_stream_create(cfg)
    _check_common(js, cfg)
    rt = await js.create_stream(cfg)
    return response("stream_create_response", **await stream_info(js, rt), did_create=True)


async def update(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    cfg = _parse_config(tokens, body)
    rt = stream_or_fail(js, cfg.name)
    check_stream_update(rt.config, cfg)
    cfg = sealed_adjusted(cfg)  # sealing: no expiry, discard new, no deletes/purges/rollups
    _check_common(js, cfg)
    await js.update_stream(rt, cfg)
    return response("stream_update_response", **await stream_info(js, rt))


async def info(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, INFO_KEYS)
    rt = stream_or_fail(js, tokens[2])
    subjects_filter = str_field(d, "subjects_filter")
    out = await stream_info(js, rt, subjects_filter, bool_field(d, "deleted_details"))
    total = len(out["state"].get("subjects", {})) if subjects_filter else 0
    limit = SUBJECTS_LIMIT if subjects_filter else 0
    return response("stream_info_response", **out, total=total, offset=0, limit=limit)


async def delete(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    require_empty(body)
    rt = stream_or_fail(js, tokens[2])
    await js.delete_stream(rt)
    return response("stream_delete_response", success=True)


async def purge(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, PURGE_KEYS)
    rt = stream_or_fail(js, tokens[2])
    filt = str_field(d, "filter")
    if filt and not is_valid_subject(filt):
        raise fail(ErrCode.BAD_REQUEST)
    seq, keep = int_field(d, "seq"), int_field(d, "keep")
    result = await rt.apply(PurgeCmd(filter=filt or None, seq=seq or None, keep=keep or None))
    if isinstance(result, ApiError):
        raise JsApiException(result)
    return response("stream_purge_response", **result.to_json())


def _names_matching(js: Any, subject: str) -> list[str]:
    if not subject:
        return sorted(js.streams)
    return sorted(n for n, rt in js.streams.items() if any(subjects_overlap(subject, s) for s in rt.config.subjects))


async def names(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, NAMES_KEYS)
    matched = _names_matching(js, str_field(d, "subject"))
    start, end = paging(len(matched), int_field(d, "offset"), NAMES_LIMIT)
    return response("stream_names_response", total=len(matched), offset=start, limit=NAMES_LIMIT,
                    streams=matched[start:end])


async def list_(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, NAMES_KEYS)
    matched = _names_matching(js, str_field(d, "subject"))
    start, end = paging(len(matched), int_field(d, "offset"), LIST_LIMIT)
    infos = [await stream_info(js, js.streams[n]) for n in matched[start:end] if n in js.streams]
    return response("stream_list_response", total=len(matched), offset=start, limit=LIST_LIMIT, streams=infos)


# -- messages ---------------------------------------------------------------------------------------
def _parse_get(d: dict[str, Any]) -> tuple[int, str, str]:
    check_keys(d, MSG_GET_KEYS)
    seq, last_by, next_by = int_field(d, "seq"), str_field(d, "last_by_subj"), str_field(d, "next_by_subj")
    if seq < 0 or (seq and last_by) or (last_by and next_by) or not (seq or last_by or next_by):
        raise fail(ErrCode.BAD_REQUEST)
    return seq, last_by, next_by


def _load(store: Any, seq: int, last_by: str, next_by: str) -> Any:
    if last_by:
        return store.load_last_by_subject(last_by)
    if next_by:
        return store.load_next(max(seq, 1), next_by)
    return store.load(seq)


async def msg_get(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, required=True)
    rt = stream_or_fail(js, tokens[3])
    seq, last_by, next_by = _parse_get(d)
    msg = await rt.read(_load, seq, last_by, next_by)
    if msg is None:
        raise fail(ErrCode.NO_MESSAGE_FOUND)
    message: dict[str, Any] = {"subject": msg.subject, "seq": msg.seq}
    if msg.hdrs:
        message["hdrs"] = base64.b64encode(msg.hdrs).decode()
    if msg.payload:
        message["data"] = base64.b64encode(msg.payload).decode()
    message["time"] = rfc3339_ns(msg.ts_ns)
    return response("stream_msg_get_response", message=message)


async def msg_delete(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    d = decode_json(body, frozenset({"seq", "no_erase"}), required=True)
    rt = stream_or_fail(js, tokens[3])
    seq = int_field(d, "seq")
    if seq <= 0:
        raise fail(ErrCode.STREAM_MSG_DELETE_FAILED, err="no message found")
    result = await rt.apply(DeleteMsg(seq=seq, no_erase=bool_field(d, "no_erase")))
    if isinstance(result, ApiError):
        if result.err_code == ErrCode.SEQUENCE_NOT_FOUND:  # nats-server's texts for a missing seq
            last_seq = (await rt.call(rt.store.state)).last_seq
            detail = "stream store EOF" if seq > last_seq else "no message found"
            raise fail(ErrCode.STREAM_MSG_DELETE_FAILED, err=detail)
        raise JsApiException(result)
    return response("stream_msg_delete_response", success=True)


async def direct_get(js: Any, tokens: list[str], body: bytes, reply: str | None) -> None:
    """Raw reply: the message with Nats-* headers, or a status (404 not found, 408 bad request)."""
    if not reply:
        return None
    rt = js.streams.get(tokens[2])
    if rt is None or not (rt.config.allow_direct or rt.config.mirror_direct):
        js.respond(reply, response("stream_msg_get_response", error=fail(ErrCode.BAD_REQUEST).error.to_json()))
        return None
    try:
        seq, last_by, next_by = _direct_request(tokens, body)
    except _DirectStatus as status:
        js.server.publish_internal(reply, None, encode_headers([], status.code, status.text), b"")
        return None
    msg = await rt.read(_load, seq, last_by, next_by)
    if msg is None:
        js.server.publish_internal(reply, None, encode_headers([], 404, "Message Not Found"), b"")
        return None
    extra = [("Nats-Stream", rt.name), ("Nats-Subject", msg.subject), ("Nats-Sequence", str(msg.seq)),
             ("Nats-Time-Stamp", rfc3339_ns(msg.ts_ns))]
    js.server.publish_internal(reply, None, append_headers(msg.hdrs, extra), msg.payload)
    return None


class _DirectStatus(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _direct_request(tokens: list[str], body: bytes) -> tuple[int, str, str]:
    if len(tokens) > 3:
        subject = ".".join(tokens[3:])
        if not is_valid_subject(subject):
            raise _DirectStatus(408, "Bad Request")
        return 0, subject, ""
    if not body.strip():
        raise _DirectStatus(408, "Empty Request")
    try:
        d = decode_json(body)
        return _parse_get(d)
    except JsApiException:
        raise _DirectStatus(408, "Bad Request") from None


def _valid_stream_token(tokens: list[str]) -> None:
    if not is_valid_name(tokens[2]):
        raise fail(ErrCode.STREAM_NOT_FOUND)


ROUTES: dict[tuple[str, ...], tuple[Any, str, int]] = {
    ("STREAM", "CREATE"): (create, "stream_create_response", 3),
    ("STREAM", "UPDATE"): (update, "stream_update_response", 3),
    ("STREAM", "INFO"): (info, "stream_info_response", 3),
    ("STREAM", "DELETE"): (delete, "stream_delete_response", 3),
    ("STREAM", "PURGE"): (purge, "stream_purge_response", 3),
    ("STREAM", "NAMES"): (names, "stream_names_response", 2),
    ("STREAM", "LIST"): (list_, "stream_list_response", 2),
    ("STREAM", "MSG", "GET"): (msg_get, "stream_msg_get_response", 4),
    ("STREAM", "MSG", "DELETE"): (msg_delete, "stream_msg_delete_response", 4),
    ("DIRECT", "GET"): (direct_get, "stream_msg_get_response", -3),
}
