"""The `$JS.API` request router and the handlers shared by streams and consumers.

How it works: `handle(js, subject, reply, headers, payload)` splits the subject after `$JS.API.`
into tokens and looks the first ones up in `ROUTES` (a table of token prefixes -> handler).
Each handler returns the JSON response as a dict (with nats-server's `type`), or None when it
replied itself (DIRECT.GET sends a raw message). A handler signals a client error by raising
`JsApiException`; the router turns it into `{"type": ..., "error": {code, err_code,
description}}` with the handler's response type, as nats-server does. An unknown subject gets
10003 with the `system_response` type.

Requests are decoded strictly like nats-server: malformed JSON and unknown keys are 10025
(`invalid JSON: json: unknown field "x"`); endpoints without a body accept only nothing or
`{}` (10038). Stream handlers live in api_stream.py, consumer handlers in api_consumer.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from jetstream.errors import ApiError, ErrCode, JsApiException, api_error
from jetstream.headers import REQUIRED_API_LEVEL, parse_headers

TYPE_PREFIX = "io.nats.jetstream.api.v1."
API_LEVEL = 1
NAMES_LIMIT = 1024
LIST_LIMIT = 256

Handler = Callable[[Any, list[str], bytes, "str | None"], Awaitable["dict[str, Any] | None"]]


def response(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"type": TYPE_PREFIX + type_name, **fields}


def error_response(type_name: str, error: ApiError) -> dict[str, Any]:
    return {"type": TYPE_PREFIX + type_name, "error": error.to_json()}


def fail(err_code: ErrCode, **fields: object) -> JsApiException:
    return JsApiException(api_error(err_code, **fields))


# -- request decoding -------------------------------------------------------------------------------
def decode_json(body: bytes, allowed: frozenset[str] | None = None, *, required: bool = False) -> dict[str, Any]:
    """The request object; {} for an empty body (unless `required`)."""
    if not body.strip():
        if required:
            raise fail(ErrCode.BAD_REQUEST)
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(ErrCode.INVALID_JSON, err=_json_error_text(exc)) from None
    if not isinstance(value, dict):
        raise fail(ErrCode.INVALID_JSON, err="json: cannot unmarshal into Go value of type object")
    if allowed is not None:
        check_keys(value, allowed)
    return value


def check_keys(value: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in value:
        if key not in allowed:
            raise fail(ErrCode.INVALID_JSON, err=f'json: unknown field "{key}"')


def _json_error_text(exc: Exception) -> str:
    return f"invalid character in JSON input: {exc}"


def require_empty(body: bytes) -> None:
    """Endpoints without a request body accept nothing, whitespace, or an empty object."""
    text = body.strip()
    if not text:
        return
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise fail(ErrCode.NOT_EMPTY_REQUEST) from None
    if value != {}:
        raise fail(ErrCode.NOT_EMPTY_REQUEST)


def int_field(d: dict[str, Any], key: str, default: int = 0) -> int:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(ErrCode.INVALID_JSON, err=f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type int")
    return value


def str_field(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(ErrCode.INVALID_JSON, err=f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type string")
    return value


def bool_field(d: dict[str, Any], key: str) -> bool:
    value = d.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(ErrCode.INVALID_JSON, err=f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type bool")
    return value


def paging(total: int, offset: int, limit: int) -> tuple[int, int]:
    offset = max(offset, 0)
    return offset, min(offset + limit, total)


# -- routing ----------------------------------------------------------------------------------------
async def handle(js: Any, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
    tokens = subject.split(".")[2:]
    handler, type_name = lookup(tokens)
    if handler is None:
        js.respond(reply, error_response("system_response", api_error(ErrCode.BAD_REQUEST)))
        return
    try:
        _check_api_level(headers)
        body = await handler(js, tokens, payload, reply)
    except JsApiException as exc:
        body = error_response(type_name, exc.error)
    if body is not None:
        js.respond(reply, body)


def _check_api_level(headers: bytes | None) -> None:
    if not headers:
        return
    level = parse_headers(headers).get(REQUIRED_API_LEVEL)
    if level is None:
        return
    if not level.strip().isdigit() or int(level) > API_LEVEL:
        raise fail(ErrCode.REQUIRED_API_LEVEL)


_TABLE: dict[tuple[str, ...], tuple[Handler, str, int]] = {}


def route_table() -> dict[tuple[str, ...], tuple[Handler, str, int]]:
    """Token prefix -> (handler, response type, token count: exact if >= 0, minimum if < 0)."""
    if not _TABLE:
        from jetstream import api_consumer, api_stream  # imported late: they import this module

        _TABLE.update(api_stream.ROUTES)
        _TABLE.update(api_consumer.ROUTES)
        _TABLE[("INFO",)] = (account_info, "account_info_response", 1)
    return _TABLE


def lookup(tokens: list[str]) -> tuple[Handler | None, str]:
    table = route_table()
    for size in (3, 2, 1):
        key = tuple(tokens[:size])
        entry = table.get(key)
        if entry is None:
            continue
        handler, type_name, arity = entry
        if arity >= 0 and len(tokens) != arity:
            return None, "system_response"
        if arity < 0 and len(tokens) < -arity:
            return None, "system_response"
        return handler, type_name
    return None, "system_response"


# -- account info -----------------------------------------------------------------------------------
async def account_info(js: Any, tokens: list[str], body: bytes, reply: str | None) -> dict[str, Any]:
    storage = memory = consumers = 0
    for rt in list(js.streams.values()):
        state = await rt.call(rt.store.state)
        consumers += len(rt.consumers)
        if rt.config.storage.value == "memory":
            memory += state.bytes
        else:
            storage += state.bytes
    limits = {
        "max_memory": -1, "max_storage": -1, "max_streams": -1, "max_consumers": -1,
        "max_ack_pending": -1, "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
        "max_bytes_required": False,
    }
    return response(
        "account_info_response", memory=memory, storage=storage, reserved_memory=0, reserved_storage=0,
        streams=len(js.streams), consumers=consumers, limits=limits,
        api={"level": API_LEVEL, "total": js.api_total, "errors": js.api_errors},
    )
