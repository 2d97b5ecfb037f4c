# pure-core
"""JetStream API errors: the `{code, err_code, description}` values clients see.

nats-py builds its exception with `**error`, so the JSON form must have exactly these three keys.
`ERRORS` is the table of the err_codes JetRaft uses: the HTTP-like `code` and nats-server's
description text. Texts with a `{placeholder}` are filled by `api_error(...)`; the ones that are
just `{err}` take a free-form detail (e.g. 10052 "max age needs to be >= 100ms").

`ApiError` is a frozen value so a pure state machine can *return* it as a result (a rejected
publish is a normal outcome, not a crash). Code that prefers raising (config parsing) wraps it in
`JsApiException`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class ErrCode(enum.IntEnum):
    BAD_REQUEST = 10003
    CONSUMER_CREATE = 10012
    CONSUMER_NAME_EXIST = 10013
    CONSUMER_NOT_FOUND = 10014
    CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT = 10017
    CONSUMER_DURABLE_NAME_NOT_SET = 10018
    CONSUMER_EPHEMERAL_WITH_DURABLE_NAME = 10020
    INVALID_JSON = 10025
    MAXIMUM_CONSUMERS_LIMIT = 10026
    MAXIMUM_STREAMS_LIMIT = 10027
    MIRROR_WITH_SUBJECTS = 10034
    NO_MESSAGE_FOUND = 10037
    NOT_EMPTY_REQUEST = 10038
    SEQUENCE_NOT_FOUND = 10043
    STREAM_INVALID_CONFIG = 10052
    STREAM_MESSAGE_EXCEEDS_MAXIMUM = 10054
    STREAM_MISMATCH = 10056
    STREAM_MSG_DELETE_FAILED = 10057
    STREAM_NAME_EXIST = 10058
    STREAM_NOT_FOUND = 10059
    STREAM_NOT_MATCH = 10060
    STREAM_SUBJECT_OVERLAP = 10065
    STREAM_WRONG_LAST_MSG_ID = 10070
    STREAM_WRONG_LAST_SEQUENCE = 10071
    STREAM_REPLICAS_NOT_SUPPORTED = 10074
    STREAM_STORE_FAILED = 10077
    CONSUMER_DELIVER_TO_WILDCARDS = 10079
    CONSUMER_PUSH_MAX_WAITING = 10080
    CONSUMER_SMALL_HEARTBEAT = 10083
    CONSUMER_PULL_REQUIRES_ACK = 10084
    CONSUMER_MAX_WAITING_NEGATIVE = 10087
    CONSUMER_HB_REQUIRES_PUSH = 10088
    CONSUMER_FC_REQUIRES_PUSH = 10089
    CONSUMER_FILTER_NOT_SUBSET = 10093
    CONSUMER_INVALID_POLICY = 10094
    STREAM_HEADER_EXCEEDS_MAXIMUM = 10097
    CONSUMER_WQ_REQUIRES_EXPLICIT_ACK = 10098
    CONSUMER_WQ_MULTIPLE_UNFILTERED = 10099
    CONSUMER_WQ_CONSUMER_NOT_UNIQUE = 10100
    CONSUMER_WQ_CONSUMER_NOT_DELIVER_ALL = 10101
    CONSUMER_NAME_TOO_LONG = 10102
    CONSUMER_BAD_DURABLE_NAME = 10103
    CONSUMER_DESCRIPTION_TOO_LONG = 10107
    CONSUMER_FLOW_CONTROL_NEEDS_HEARTBEATS = 10108
    STREAM_SEALED = 10109
    STREAM_PURGE_FAILED = 10110
    STREAM_ROLLUP_FAILED = 10111
    CONSUMER_INVALID_DELIVER_SUBJECT = 10112
    CONSUMER_MAX_REQUEST_BATCH_NEGATIVE = 10114
    CONSUMER_MAX_DELIVER_BACKOFF = 10116
    REPLICAS_COUNT_CANNOT_BE_NEGATIVE = 10133
    CONSUMER_DUPLICATE_FILTER_SUBJECTS = 10136
    CONSUMER_OVERLAPPING_SUBJECT_FILTERS = 10138
    CONSUMER_EMPTY_FILTER = 10139
    CONSUMER_NAME_CONTAINS_PATH_SEPARATORS = 10127
    STREAM_NAME_CONTAINS_PATH_SEPARATORS = 10128
    CONSUMER_ALREADY_EXISTS = 10148
    CONSUMER_DOES_NOT_EXIST = 10149
    STREAM_WRONG_LAST_SEQUENCE_CONSTANT = 10164
    MESSAGE_TTL_INVALID = 10165
    MESSAGE_TTL_DISABLED = 10166
    CONSUMER_ACK_POLICY_INVALID = 10181
    CONSUMER_REPLAY_POLICY_INVALID = 10182
    CONSUMER_ACK_WAIT_NEGATIVE = 10183
    CONSUMER_BACKOFF_NEGATIVE = 10184
    REQUIRED_API_LEVEL = 10185
    STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_INVALID = 10193
    CONSUMER_INVALID_RESET = 10204


# err_code -> (HTTP-like code, nats-server description text; `{name}` = filled in by api_error).
ERRORS: dict[ErrCode, tuple[int, str]] = {
    ErrCode.BAD_REQUEST: (400, "bad request"),
    ErrCode.CONSUMER_CREATE: (500, "{err}"),
    ErrCode.CONSUMER_NAME_EXIST: (400, "consumer name already in use"),
    ErrCode.CONSUMER_NOT_FOUND: (404, "consumer not found"),
    ErrCode.CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT: (
        400,
        "consumer name in subject does not match durable name in request",
    ),
    ErrCode.CONSUMER_DURABLE_NAME_NOT_SET: (
        400,
        "consumer expected to be durable but a durable name was not set",
    ),
    ErrCode.CONSUMER_EPHEMERAL_WITH_DURABLE_NAME: (
        400,
        "consumer expected to be ephemeral but a durable name was set in request",
    ),
    ErrCode.INVALID_JSON: (400, "invalid JSON: {err}"),
    ErrCode.MAXIMUM_CONSUMERS_LIMIT: (400, "maximum consumers limit reached"),
    ErrCode.MAXIMUM_STREAMS_LIMIT: (400, "maximum number of streams reached"),
    ErrCode.MIRROR_WITH_SUBJECTS: (400, "stream mirrors can not contain subjects"),
    ErrCode.NO_MESSAGE_FOUND: (404, "no message found"),
    ErrCode.NOT_EMPTY_REQUEST: (400, "expected an empty request payload"),
    ErrCode.SEQUENCE_NOT_FOUND: (400, "sequence {seq} not found"),
    ErrCode.STREAM_INVALID_CONFIG: (500, "{err}"),
    ErrCode.STREAM_MESSAGE_EXCEEDS_MAXIMUM: (400, "message size exceeds maximum allowed"),
    ErrCode.STREAM_MISMATCH: (400, "stream name in subject does not match request"),
    ErrCode.STREAM_MSG_DELETE_FAILED: (500, "{err}"),
    ErrCode.STREAM_NAME_EXIST: (400, "stream name already in use with a different configuration"),
    ErrCode.STREAM_NOT_FOUND: (404, "stream not found"),
    ErrCode.STREAM_NOT_MATCH: (400, "expected stream does not match"),
    ErrCode.STREAM_SUBJECT_OVERLAP: (400, "subjects overlap with an existing stream"),
    ErrCode.STREAM_WRONG_LAST_MSG_ID: (400, "wrong last msg ID: {id}"),
    ErrCode.STREAM_WRONG_LAST_SEQUENCE: (400, "wrong last sequence: {seq}"),
    ErrCode.STREAM_REPLICAS_NOT_SUPPORTED: (500, "replicas > 1 not supported in non-clustered mode"),
    ErrCode.STREAM_STORE_FAILED: (503, "{err}"),
    ErrCode.CONSUMER_DELIVER_TO_WILDCARDS: (400, "consumer deliver subject has wildcards"),
    ErrCode.CONSUMER_PUSH_MAX_WAITING: (400, "consumer in push mode can not set max waiting"),
    ErrCode.CONSUMER_SMALL_HEARTBEAT: (400, "consumer idle heartbeat needs to be >= 100ms"),
    ErrCode.CONSUMER_PULL_REQUIRES_ACK: (
        400,
        "consumer in pull mode requires explicit ack policy on workqueue stream",
    ),
    ErrCode.CONSUMER_MAX_WAITING_NEGATIVE: (400, "consumer max waiting needs to be positive"),
    ErrCode.CONSUMER_HB_REQUIRES_PUSH: (400, "consumer idle heartbeat requires a push based consumer"),
    ErrCode.CONSUMER_FC_REQUIRES_PUSH: (400, "consumer flow control requires a push based consumer"),
    ErrCode.CONSUMER_FILTER_NOT_SUBSET: (
        400,
        "consumer filter subject is not a valid subset of the interest subjects",
    ),
    ErrCode.CONSUMER_INVALID_POLICY: (400, "{err}"),
    ErrCode.STREAM_HEADER_EXCEEDS_MAXIMUM: (400, "header size exceeds maximum allowed of 64k"),
    ErrCode.CONSUMER_WQ_REQUIRES_EXPLICIT_ACK: (400, "workqueue stream requires explicit ack"),
    ErrCode.CONSUMER_WQ_MULTIPLE_UNFILTERED: (
        400,
        "multiple non-filtered consumers not allowed on workqueue stream",
    ),
    ErrCode.CONSUMER_WQ_CONSUMER_NOT_UNIQUE: (400, "filtered consumer not unique on workqueue stream"),
    ErrCode.CONSUMER_WQ_CONSUMER_NOT_DELIVER_ALL: (400, "consumer must be deliver all on workqueue stream"),
    ErrCode.CONSUMER_NAME_TOO_LONG: (400, "consumer name is too long, maximum allowed is {max}"),
    ErrCode.CONSUMER_BAD_DURABLE_NAME: (400, "durable name can not contain '.', '*', '>'"),
    ErrCode.CONSUMER_DESCRIPTION_TOO_LONG: (400, "consumer description is too long, maximum allowed is {max}"),
    ErrCode.CONSUMER_FLOW_CONTROL_NEEDS_HEARTBEATS: (400, "consumer with flow control also needs heartbeats"),
    ErrCode.STREAM_SEALED: (400, "invalid operation on sealed stream"),
    ErrCode.STREAM_PURGE_FAILED: (500, "{err}"),
    ErrCode.STREAM_ROLLUP_FAILED: (500, "{err}"),
    ErrCode.CONSUMER_INVALID_DELIVER_SUBJECT: (400, "invalid push consumer deliver subject"),
    ErrCode.CONSUMER_MAX_REQUEST_BATCH_NEGATIVE: (400, "consumer max request batch needs to be > 0"),
    ErrCode.CONSUMER_MAX_DELIVER_BACKOFF: (400, "max deliver is required to be > length of backoff values"),
    ErrCode.REPLICAS_COUNT_CANNOT_BE_NEGATIVE: (400, "replicas count cannot be negative"),
    ErrCode.CONSUMER_DUPLICATE_FILTER_SUBJECTS: (
        400,
        "consumer cannot have both FilterSubject and FilterSubjects specified",
    ),
    ErrCode.CONSUMER_OVERLAPPING_SUBJECT_FILTERS: (400, "consumer subject filters cannot overlap"),
    ErrCode.CONSUMER_EMPTY_FILTER: (400, "consumer filter in FilterSubjects cannot be empty"),
    ErrCode.CONSUMER_NAME_CONTAINS_PATH_SEPARATORS: (400, "Consumer name can not contain path separators"),
    ErrCode.STREAM_NAME_CONTAINS_PATH_SEPARATORS: (400, "Stream name can not contain path separators"),
    ErrCode.CONSUMER_ALREADY_EXISTS: (400, "consumer already exists"),
    ErrCode.CONSUMER_DOES_NOT_EXIST: (400, "consumer does not exist"),
    ErrCode.STREAM_WRONG_LAST_SEQUENCE_CONSTANT: (400, "wrong last sequence"),
    ErrCode.MESSAGE_TTL_INVALID: (400, "invalid per-message TTL"),
    ErrCode.MESSAGE_TTL_DISABLED: (400, "per-message TTL is disabled"),
    ErrCode.CONSUMER_ACK_POLICY_INVALID: (400, "consumer ack policy invalid"),
    ErrCode.CONSUMER_REPLAY_POLICY_INVALID: (400, "consumer replay policy invalid"),
    ErrCode.CONSUMER_ACK_WAIT_NEGATIVE: (400, "consumer ack wait needs to be positive"),
    ErrCode.CONSUMER_BACKOFF_NEGATIVE: (400, "consumer backoff needs to be positive"),
    ErrCode.REQUIRED_API_LEVEL: (412, "JetStream minimum api level required"),
    ErrCode.STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_INVALID: (
        400,
        "missing sequence for expected last sequence per subject",
    ),
    ErrCode.CONSUMER_INVALID_RESET: (400, "invalid reset: {err}"),
}


@attrs.frozen
class ApiError:
    """One JetStream API error, exactly as it goes on the wire under `"error"`."""

    code: int
    err_code: int
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "err_code": self.err_code, "description": self.description}


class JsApiException(Exception):
    """Raise-able carrier of an `ApiError` (used by parsers and validators)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(f"{error.err_code}: {error.description}")
        self.error = error


def api_error(err_code: ErrCode, **fields: object) -> ApiError:
    """Build the error for `err_code`, filling `{placeholders}` of its description from `fields`."""
    code, template = ERRORS[err_code]
    return ApiError(code=code, err_code=int(err_code), description=template.format(**fields))


def invalid_config(detail: str) -> ApiError:
    """10052 with nats-server's detail text, e.g. "max age needs to be >= 100ms"."""
    return api_error(ErrCode.STREAM_INVALID_CONFIG, err=detail)


def invalid_policy(detail: str) -> ApiError:
    """10094 (consumer config combination not allowed) with a detail text."""
    return api_error(ErrCode.CONSUMER_INVALID_POLICY, err=detail)


def store_failed(detail: str) -> ApiError:
    """10077, e.g. "maximum messages exceeded" for a discard-new rejection."""
    return api_error(ErrCode.STREAM_STORE_FAILED, err=detail)
