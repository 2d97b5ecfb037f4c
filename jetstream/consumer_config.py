# pure-core
"""Consumer configuration: parse the JSON clients send, fill defaults, validate.

Same approach as stream configs (jetstream/config.py): lenient on unknown keys (kept in `extra`
and echoed by `to_json`), 0 means default (ack_wait 30 s, max_ack_pending 1000 when acking,
max_waiting 512 for pull, inactive_threshold 5 s for ephemerals, max_deliver -1), and
nats-server's error codes/texts on invalid combinations. `check_consumer_for_stream` holds the
rules that need the stream (workqueue uniqueness, explicit ack, deliver all).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from jetstream.config import (
    MAX_DESCRIPTION_LEN,
    MAX_NAME_LEN,
    MIN_WINDOW_NS,
    NS_PER_S,
    Retention,
    StreamConfig,
    put_if_set,
    bad_json,
    get_bool,
    get_enum,
    get_int,
    get_str,
    get_str_list,
    has_path_separator,
    is_valid_name,
)
from jetstream.errors import ApiError, ErrCode, JsApiException, api_error, invalid_policy
from jetstream.info import parse_rfc3339_ns, rfc3339_ns
from natsd.subjects import is_valid_subject, subjects_overlap


class DeliverPolicy(enum.Enum):
    ALL = "all"
    LAST = "last"
    NEW = "new"
    BY_START_SEQUENCE = "by_start_sequence"
    BY_START_TIME = "by_start_time"
    LAST_PER_SUBJECT = "last_per_subject"


class AckPolicy(enum.Enum):
    NONE = "none"
    ALL = "all"
    EXPLICIT = "explicit"


class ReplayPolicy(enum.Enum):
    INSTANT = "instant"
    ORIGINAL = "original"


DEFAULT_ACK_WAIT_NS = 30 * NS_PER_S
DEFAULT_MAX_ACK_PENDING = 1000
DEFAULT_MAX_WAITING = 512
DEFAULT_EPHEMERAL_INACTIVE_NS = 5 * NS_PER_S

_CONSUMER_KEYS = frozenset(
    "name durable_name description deliver_policy opt_start_seq opt_start_time ack_policy ack_wait "
    "max_deliver backoff filter_subject filter_subjects replay_policy rate_limit_bps sample_freq "
    "max_waiting max_ack_pending deliver_subject deliver_group flow_control idle_heartbeat "
    "headers_only max_batch max_expires max_bytes inactive_threshold num_replicas mem_storage "
    "metadata".split()
)


@attrs.frozen
class ConsumerConfig:
    name: str = ""
    durable_name: str = ""
    description: str = ""
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    opt_start_seq: int = 0
    opt_start_time_ns: int | None = None
    ack_policy: AckPolicy = AckPolicy.NONE
    ack_wait_ns: int = 0
    max_deliver: int = -1
    backoff_ns: tuple[int, ...] = ()
    filter_subject: str = ""
    filter_subjects: tuple[str, ...] = ()
    replay_policy: ReplayPolicy = ReplayPolicy.INSTANT
    rate_limit_bps: int = 0
    sample_freq: str = ""
    max_waiting: int = 0
    max_ack_pending: int = 0
    deliver_subject: str = ""
    deliver_group: str = ""
    flow_control: bool = False
    idle_heartbeat_ns: int = 0
    headers_only: bool = False
    max_batch: int = 0
    max_expires_ns: int = 0
    max_bytes: int = 0
    inactive_threshold_ns: int = 0
    num_replicas: int = 0
    mem_storage: bool = False
    metadata: dict[str, str] | None = attrs.field(default=None, hash=False)
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def is_push(self) -> bool:
        return bool(self.deliver_subject)

    @property
    def is_durable(self) -> bool:
        return bool(self.durable_name)

    def filters(self) -> tuple[str, ...]:
        """The subject filters in effect; () means the whole stream."""
        if self.filter_subjects:
            return self.filter_subjects
        if self.filter_subject and self.filter_subject != ">":
            return (self.filter_subject,)
        return ()

    @classmethod
    def from_json(cls, d: dict[str, Any], stream: StreamConfig | None = None) -> ConsumerConfig:
        """Parse, fill defaults and validate (raises JsApiException)."""
        if not isinstance(d, dict):
            raise bad_json("consumer configuration must be an object")
        cfg = _fill_consumer_defaults(_parse_consumer_fields(d))
        check_consumer_config(cfg)
        if stream is not None:
            check_consumer_for_stream(cfg, stream, [])
        return cfg

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_if_set(out, "durable_name", self.durable_name)
        put_if_set(out, "name", self.name)
        put_if_set(out, "description", self.description)
        out["deliver_policy"] = self.deliver_policy.value
        put_if_set(out, "opt_start_seq", self.opt_start_seq)
        if self.opt_start_time_ns is not None:
            out["opt_start_time"] = rfc3339_ns(self.opt_start_time_ns)
        out.update(ack_policy=self.ack_policy.value, ack_wait=self.ack_wait_ns, max_deliver=self.max_deliver)
        put_if_set(out, "backoff", list(self.backoff_ns))
        put_if_set(out, "filter_subject", self.filter_subject)
        put_if_set(out, "filter_subjects", list(self.filter_subjects))
        out["replay_policy"] = self.replay_policy.value
        put_if_set(out, "rate_limit_bps", self.rate_limit_bps)
        put_if_set(out, "sample_freq", self.sample_freq)
        put_if_set(out, "max_waiting", self.max_waiting)
        put_if_set(out, "max_ack_pending", self.max_ack_pending)
        for key in ("deliver_subject", "deliver_group", "flow_control", "headers_only", "max_batch"):
            put_if_set(out, key, getattr(self, key))
        put_if_set(out, "idle_heartbeat", self.idle_heartbeat_ns)
        put_if_set(out, "max_expires", self.max_expires_ns)
        put_if_set(out, "max_bytes", self.max_bytes)
        put_if_set(out, "inactive_threshold", self.inactive_threshold_ns)
        out["num_replicas"] = self.num_replicas
        put_if_set(out, "mem_storage", self.mem_storage)
        put_if_set(out, "metadata", self.metadata)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def _get_ns_list(d: dict[str, Any], key: str) -> tuple[int, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_json(f"field {key!r} must be a list of integers")
    return tuple(value)


def _get_time(d: dict[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    parsed = parse_rfc3339_ns(value) if isinstance(value, str) else None
    if parsed is None:
        raise bad_json(f"field {key!r} must be an RFC3339 time")
    return parsed


def _parse_consumer_fields(d: dict[str, Any]) -> ConsumerConfig:
    metadata = d.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_json("field 'metadata' must be an object")
    return ConsumerConfig(
        name=get_str(d, "name"),
        durable_name=get_str(d, "durable_name"),
        description=get_str(d, "description"),
        deliver_policy=get_enum(d, "deliver_policy", DeliverPolicy, DeliverPolicy.ALL),
        opt_start_seq=get_int(d, "opt_start_seq"),
        opt_start_time_ns=_get_time(d, "opt_start_time"),
        ack_policy=get_enum(d, "ack_policy", AckPolicy, AckPolicy.NONE),
        ack_wait_ns=get_int(d, "ack_wait"),
        max_deliver=get_int(d, "max_deliver"),
        backoff_ns=_get_ns_list(d, "backoff"),
        filter_subject=get_str(d, "filter_subject"),
        filter_subjects=get_str_list(d, "filter_subjects"),
        replay_policy=get_enum(d, "replay_policy", ReplayPolicy, ReplayPolicy.INSTANT),
        rate_limit_bps=get_int(d, "rate_limit_bps"),
        sample_freq=get_str(d, "sample_freq"),
        max_waiting=get_int(d, "max_waiting"),
        max_ack_pending=get_int(d, "max_ack_pending"),
        deliver_subject=get_str(d, "deliver_subject"),
        deliver_group=get_str(d, "deliver_group"),
        flow_control=get_bool(d, "flow_control"),
        idle_heartbeat_ns=get_int(d, "idle_heartbeat"),
        headers_only=get_bool(d, "headers_only"),
        max_batch=get_int(d, "max_batch"),
        max_expires_ns=get_int(d, "max_expires"),
        max_bytes=get_int(d, "max_bytes"),
        inactive_threshold_ns=get_int(d, "inactive_threshold"),
        num_replicas=get_int(d, "num_replicas"),
        mem_storage=get_bool(d, "mem_storage"),
        metadata=dict(metadata) if metadata else None,
        extra={k: v for k, v in d.items() if k not in _CONSUMER_KEYS},
    )


def _fill_consumer_defaults(cfg: ConsumerConfig) -> ConsumerConfig:
    acks = cfg.ack_policy is not AckPolicy.NONE
    ack_wait = cfg.ack_wait_ns
    if cfg.backoff_ns and ack_wait == 0:
        ack_wait = cfg.backoff_ns[0]
    if ack_wait == 0:
        ack_wait = DEFAULT_ACK_WAIT_NS
    max_ack_pending = cfg.max_ack_pending
    if max_ack_pending == 0 and acks:
        max_ack_pending = DEFAULT_MAX_ACK_PENDING
    max_waiting = cfg.max_waiting
    if not cfg.is_push and max_waiting == 0:
        max_waiting = DEFAULT_MAX_WAITING
    inactive = cfg.inactive_threshold_ns
    if not cfg.durable_name and inactive == 0:
        inactive = DEFAULT_EPHEMERAL_INACTIVE_NS
    return attrs.evolve(
        cfg,
        name=cfg.name or cfg.durable_name,
        ack_wait_ns=ack_wait,
        max_deliver=-1 if cfg.max_deliver == 0 else cfg.max_deliver,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
        inactive_threshold_ns=inactive,
    )


def check_consumer_config(cfg: ConsumerConfig) -> None:
    """nats-server's consumer config rules that need no stream context (raises JsApiException)."""
    for check in (_check_consumer_names, _check_consumer_timers, _check_push_pull,
                  _check_deliver_policy, _check_filters):
        error = check(cfg)
        if error is not None:
            raise JsApiException(error)


def _check_consumer_names(cfg: ConsumerConfig) -> ApiError | None:
    for name in (cfg.durable_name, cfg.name):
        if not name:
            continue
        if has_path_separator(name):
            return api_error(ErrCode.CONSUMER_NAME_CONTAINS_PATH_SEPARATORS)
        if not is_valid_name(name):
            return api_error(ErrCode.CONSUMER_BAD_DURABLE_NAME)
        if len(name) > MAX_NAME_LEN:
            return api_error(ErrCode.CONSUMER_NAME_TOO_LONG, max=MAX_NAME_LEN)
    if len(cfg.description) > MAX_DESCRIPTION_LEN:
        return api_error(ErrCode.CONSUMER_DESCRIPTION_TOO_LONG, max=MAX_DESCRIPTION_LEN)
    return None


def _check_consumer_timers(cfg: ConsumerConfig) -> ApiError | None:
    if cfg.ack_wait_ns < 0:
        return api_error(ErrCode.CONSUMER_ACK_WAIT_NEGATIVE)
    if any(b <= 0 for b in cfg.backoff_ns):
        return api_error(ErrCode.CONSUMER_BACKOFF_NEGATIVE)
    if cfg.backoff_ns and cfg.max_deliver != -1 and cfg.max_deliver <= len(cfg.backoff_ns):
        return api_error(ErrCode.CONSUMER_MAX_DELIVER_BACKOFF)
    if 0 < cfg.idle_heartbeat_ns < MIN_WINDOW_NS:
        return api_error(ErrCode.CONSUMER_SMALL_HEARTBEAT)
    if cfg.max_batch < 0:
        return api_error(ErrCode.CONSUMER_MAX_REQUEST_BATCH_NEGATIVE)
    return None


def _check_push_pull(cfg: ConsumerConfig) -> ApiError | None:
    if cfg.is_push:
        if not is_valid_subject(cfg.deliver_subject):
            return api_error(ErrCode.CONSUMER_INVALID_DELIVER_SUBJECT)
        if any(t in ("*", ">") for t in cfg.deliver_subject.split(".")):
            return api_error(ErrCode.CONSUMER_DELIVER_TO_WILDCARDS)
        if cfg.max_waiting > 0:
            return api_error(ErrCode.CONSUMER_PUSH_MAX_WAITING)
        if cfg.flow_control and cfg.idle_heartbeat_ns <= 0:
            return api_error(ErrCode.CONSUMER_FLOW_CONTROL_NEEDS_HEARTBEATS)
        return None
    if cfg.max_waiting < 0:
        return api_error(ErrCode.CONSUMER_MAX_WAITING_NEGATIVE)
    if cfg.flow_control:
        return api_error(ErrCode.CONSUMER_FC_REQUIRES_PUSH)
    return None


def _check_deliver_policy(cfg: ConsumerConfig) -> ApiError | None:
    policy = cfg.deliver_policy
    name = policy.value.replace("_", " ")
    if policy is DeliverPolicy.BY_START_SEQUENCE:
        if cfg.opt_start_seq <= 0:
            return invalid_policy(
                "consumer delivery policy is deliver by start sequence, but optional start sequence is not set"
            )
    elif cfg.opt_start_seq > 0:
        return invalid_policy(f"consumer delivery policy is deliver {name}, but optional start sequence is also set")
    if policy is DeliverPolicy.BY_START_TIME:
        if cfg.opt_start_time_ns is None:
            return invalid_policy(
                "consumer delivery policy is deliver by start time, but optional start time is not set"
            )
    elif cfg.opt_start_time_ns is not None:
        return invalid_policy(f"consumer delivery policy is deliver {name}, but optional start time is also set")
    return None


def _check_filters(cfg: ConsumerConfig) -> ApiError | None:
    if cfg.filter_subject and cfg.filter_subjects:
        return api_error(ErrCode.CONSUMER_DUPLICATE_FILTER_SUBJECTS)
    if any(not f for f in cfg.filter_subjects):
        return api_error(ErrCode.CONSUMER_EMPTY_FILTER)
    filters = cfg.filters()
    for f in filters:
        if not is_valid_subject(f):
            return invalid_policy(f"consumer filter subject is not valid: {f}")
    for i, a in enumerate(filters):
        if any(subjects_overlap(a, b) for b in filters[i + 1 :]):
            return api_error(ErrCode.CONSUMER_OVERLAPPING_SUBJECT_FILTERS)
    return None


def check_consumer_for_stream(
    cfg: ConsumerConfig, stream: StreamConfig, others: list[ConsumerConfig]
) -> None:
    """Rules that depend on the stream (workqueue, filters inside the stream's subjects)."""
    for f in cfg.filters():
        if stream.subjects and not any(subjects_overlap(f, s) for s in stream.subjects):
            raise JsApiException(
                api_error(ErrCode.CONSUMER_FILTER_NOT_SUBSET)
            )
    if stream.retention is not Retention.WORKQUEUE:
        return
    if not cfg.is_push and cfg.ack_policy is not AckPolicy.EXPLICIT:
        raise JsApiException(api_error(ErrCode.CONSUMER_PULL_REQUIRES_ACK))
    if cfg.ack_policy is not AckPolicy.EXPLICIT:
        raise JsApiException(api_error(ErrCode.CONSUMER_WQ_REQUIRES_EXPLICIT_ACK))
    if cfg.deliver_policy is not DeliverPolicy.ALL:
        raise JsApiException(api_error(ErrCode.CONSUMER_WQ_CONSUMER_NOT_DELIVER_ALL))
    _check_workqueue_unique(cfg, others)


def _check_workqueue_unique(cfg: ConsumerConfig, others: list[ConsumerConfig]) -> None:
    mine = cfg.filters()
    for other in others:
        theirs = other.filters()
        if not mine and not theirs:
            raise JsApiException(api_error(ErrCode.CONSUMER_WQ_MULTIPLE_UNFILTERED))
        if not mine or not theirs or any(subjects_overlap(a, b) for a in mine for b in theirs):
            raise JsApiException(api_error(ErrCode.CONSUMER_WQ_CONSUMER_NOT_UNIQUE))
