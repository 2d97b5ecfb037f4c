# pure-core
"""Stream and consumer configurations: parse the JSON clients send, fill defaults, validate.

Parsing is lenient the way JetRaft promises (protocol.md §3.1, §8.3): unknown keys are ignored
on input but kept in `extra` so `to_json()` hands them back (placement, mirror, sources,
republish, ...), `0`/`-1` mean "default/unlimited", and a wrong JSON type gives 10025.
Validation follows nats-server's rules and texts (10052 "max age needs to be >= 100ms", names,
subjects valid and not overlapping); it raises `JsApiException` carrying the `ApiError`.

`StreamConfig.from_json(d)` returns a config with defaults filled (duplicate_window 2 min,
clamped to max_age; subjects [name]; limits -1); `to_json()` produces what nats-server returns.
Durations are integer nanoseconds. Configs hold dicts in `extra`/`metadata`, so do not hash them.
ConsumerConfig follows the same pattern in jetstream/consumer_config.py.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from jetstream.errors import ApiError, ErrCode, JsApiException, api_error, invalid_config
from natsd.subjects import is_subset, is_valid_subject, subjects_overlap

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MIN_WINDOW_NS = 100 * NS_PER_MS
DEFAULT_DUPLICATE_WINDOW_NS = 120 * NS_PER_S
MAX_NAME_LEN = 255
MAX_DESCRIPTION_LEN = 4096
MAX_REPLICAS = 5
JS_API_PATTERN = "$JS.API.>"
RESERVED_PATTERNS = ("$JS.>", "$JSC.>", "$NRG.>", "$SYS.>")
_BAD_NAME_CHARS = frozenset(" \t\r\n\f.*>")
_PATH_SEPARATORS = frozenset("/\\")


class Retention(enum.Enum):
    LIMITS = "limits"
    INTEREST = "interest"
    WORKQUEUE = "workqueue"


class Discard(enum.Enum):
    OLD = "old"
    NEW = "new"


class Storage(enum.Enum):
    FILE = "file"
    MEMORY = "memory"


def bad_json(detail: str) -> JsApiException:
    return JsApiException(api_error(ErrCode.INVALID_JSON, err=detail))


def get_int(d: dict[str, Any], key: str, default: int = 0) -> int:
    """An integer field; null/absent gives `default`, a non-integer raises 10025."""
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad_json(f"field {key!r} must be an integer")
    return value


def get_bool(d: dict[str, Any], key: str) -> bool:
    value = d.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_json(f"field {key!r} must be a boolean")
    return value


def get_str(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_json(f"field {key!r} must be a string")
    return value


def get_enum(d: dict[str, Any], key: str, enum_cls: type[enum.Enum], default: enum.Enum) -> Any:
    value = d.get(key)
    if value is None or value == "":
        return default
    try:
        return enum_cls(value)
    except ValueError:
        raise bad_json(f"invalid value {value!r} for {key!r}") from None


def get_str_list(d: dict[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad_json(f"field {key!r} must be a list of strings")
    return tuple(value)


def unlimited(value: int) -> int:
    """0 and negatives mean unlimited, reported as -1."""
    return -1 if value <= 0 else value


def is_valid_name(name: str) -> bool:
    """Stream/consumer name rule: non-empty, no whitespace, '.', '*' or '>'."""
    return bool(name) and not any(c in _BAD_NAME_CHARS for c in name)


def has_path_separator(name: str) -> bool:
    return any(c in _PATH_SEPARATORS for c in name)


_STREAM_KEYS = frozenset(
    "name description subjects retention max_consumers max_msgs max_bytes max_age "
    "max_msgs_per_subject max_msg_size discard discard_new_per_subject storage num_replicas no_ack "
    "duplicate_window sealed deny_delete deny_purge allow_rollup_hdrs allow_direct mirror_direct "
    "first_seq metadata allow_msg_ttl subject_delete_marker_ttl mirror sources".split()
)


# Request-only or always-emitted keys that `extra` must not carry back.
_NOT_ECHOED = frozenset({"pedantic", "compression", "consumer_limits"})


@attrs.frozen
class StreamConfig:
    name: str
    subjects: tuple[str, ...] = ()
    description: str = ""
    retention: Retention = Retention.LIMITS
    max_consumers: int = -1
    max_msgs: int = -1
    max_bytes: int = -1
    max_age_ns: int = 0
    max_msgs_per_subject: int = -1
    max_msg_size: int = -1
    discard: Discard = Discard.OLD
    discard_new_per_subject: bool = False
    storage: Storage = Storage.FILE
    num_replicas: int = 1
    no_ack: bool = False
    duplicate_window_ns: int = DEFAULT_DUPLICATE_WINDOW_NS
    sealed: bool = False
    deny_delete: bool = False
    deny_purge: bool = False
    allow_rollup_hdrs: bool = False
    allow_direct: bool = False
    mirror_direct: bool = False
    first_seq: int = 0
    allow_msg_ttl: bool = False
    subject_delete_marker_ttl_ns: int = 0
    metadata: dict[str, str] | None = attrs.field(default=None, hash=False)
    mirror: dict[str, Any] | None = attrs.field(default=None, hash=False)
    sources: list[dict[str, Any]] | None = attrs.field(default=None, hash=False)
    # Keys we do not interpret (placement, republish, compression, ...), echoed back by to_json.
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamConfig:
        """Parse, fill defaults and validate a StreamConfig JSON object (raises JsApiException)."""
        if not isinstance(d, dict):
            raise bad_json("stream configuration must be an object")
        raw = _parse_stream_fields(d)
        cfg = _fill_stream_defaults(raw)
        check_stream_config(cfg)
        return cfg

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["subjects"] = list(self.subjects)
        out.update(
            retention=self.retention.value,
            max_consumers=self.max_consumers,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_age=self.max_age_ns,
            max_msgs_per_subject=self.max_msgs_per_subject,
            max_msg_size=self.max_msg_size,
            discard=self.discard.value,
            storage=self.storage.value,
            num_replicas=self.num_replicas,
            duplicate_window=self.duplicate_window_ns,
            compression="none",
            allow_direct=self.allow_direct,
            mirror_direct=self.mirror_direct,
            sealed=self.sealed,
            deny_delete=self.deny_delete,
            deny_purge=self.deny_purge,
            allow_rollup_hdrs=self.allow_rollup_hdrs,
            consumer_limits={},
        )
        put_if_set(out, "discard_new_per_subject", self.discard_new_per_subject)
        put_if_set(out, "no_ack", self.no_ack)
        put_if_set(out, "first_seq", self.first_seq)
        put_if_set(out, "allow_msg_ttl", self.allow_msg_ttl)
        put_if_set(out, "subject_delete_marker_ttl", self.subject_delete_marker_ttl_ns)
        put_if_set(out, "metadata", self.metadata)
        put_if_set(out, "mirror", self.mirror)
        put_if_set(out, "sources", self.sources)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def is_limits(self) -> bool:
        return self.retention is Retention.LIMITS


def put_if_set(out: dict[str, Any], key: str, value: Any) -> None:
    if value:
        out[key] = value


def _parse_stream_fields(d: dict[str, Any]) -> StreamConfig:
    metadata = d.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_json("field 'metadata' must be an object")
    sources = d.get("sources")
    if sources is not None and not isinstance(sources, list):
        raise bad_json("field 'sources' must be a list")
    return StreamConfig(
        name=get_str(d, "name"),
        subjects=get_str_list(d, "subjects"),
        description=get_str(d, "description"),
        retention=get_enum(d, "retention", Retention, Retention.LIMITS),
        max_consumers=get_int(d, "max_consumers"),
        max_msgs=get_int(d, "max_msgs"),
        max_bytes=get_int(d, "max_bytes"),
        max_age_ns=get_int(d, "max_age"),
        max_msgs_per_subject=get_int(d, "max_msgs_per_subject"),
        max_msg_size=get_int(d, "max_msg_size"),
        discard=get_enum(d, "discard", Discard, Discard.OLD),
        discard_new_per_subject=get_bool(d, "discard_new_per_subject"),
        storage=get_enum(d, "storage", Storage, Storage.FILE),
        num_replicas=get_int(d, "num_replicas"),
        no_ack=get_bool(d, "no_ack"),
        duplicate_window_ns=get_int(d, "duplicate_window"),
        sealed=get_bool(d, "sealed"),
        deny_delete=get_bool(d, "deny_delete"),
        deny_purge=get_bool(d, "deny_purge"),
        allow_rollup_hdrs=get_bool(d, "allow_rollup_hdrs"),
        allow_direct=get_bool(d, "allow_direct"),
        mirror_direct=get_bool(d, "mirror_direct"),
        first_seq=get_int(d, "first_seq"),
        allow_msg_ttl=get_bool(d, "allow_msg_ttl"),
        subject_delete_marker_ttl_ns=get_int(d, "subject_delete_marker_ttl"),
        metadata=dict(metadata) if metadata else None,
        mirror=d.get("mirror") or None,
        sources=list(sources) if sources else None,
        extra={k: v for k, v in d.items() if k not in _STREAM_KEYS and k not in _NOT_ECHOED},
    )


def _fill_stream_defaults(cfg: StreamConfig) -> StreamConfig:
    """The defaults nats-server fills before validating (0/-1 = unlimited, window from max_age)."""
    dup = cfg.duplicate_window_ns
    if dup == 0 and cfg.mirror is None:
        dup = DEFAULT_DUPLICATE_WINDOW_NS
        if 0 < cfg.max_age_ns < dup:
            dup = cfg.max_age_ns
    subjects = cfg.subjects
    if not subjects and cfg.mirror is None and not cfg.sources:
        subjects = (cfg.name,)
    return attrs.evolve(
        cfg,
        subjects=subjects,
        num_replicas=cfg.num_replicas or 1,
        max_msgs=unlimited(cfg.max_msgs),
        max_bytes=unlimited(cfg.max_bytes),
        max_msgs_per_subject=unlimited(cfg.max_msgs_per_subject),
        max_msg_size=unlimited(cfg.max_msg_size),
        max_consumers=unlimited(cfg.max_consumers),
        duplicate_window_ns=dup,
    )


def check_stream_config(cfg: StreamConfig) -> None:
    """nats-server's stream config rules, in its order; raises JsApiException on the first."""
    _check_stream_name(cfg)
    error = _first_stream_error(cfg)
    if error is not None:
        raise JsApiException(error)


def _check_stream_name(cfg: StreamConfig) -> None:
    if not is_valid_name(cfg.name):
        raise JsApiException(invalid_config("stream name is required and can not contain '.', '*', '>'"))
    if has_path_separator(cfg.name):
        raise JsApiException(api_error(ErrCode.STREAM_NAME_CONTAINS_PATH_SEPARATORS))
    if len(cfg.name) > MAX_NAME_LEN:
        raise JsApiException(invalid_config(f"stream name is too long, maximum allowed is {MAX_NAME_LEN}"))
    if len(cfg.description) > MAX_DESCRIPTION_LEN:
        detail = f"stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}"
        raise JsApiException(invalid_config(detail))


def _first_stream_error(cfg: StreamConfig) -> ApiError | None:
    if cfg.num_replicas > MAX_REPLICAS:
        return invalid_config(f"maximum replicas is {MAX_REPLICAS}")
    if cfg.num_replicas < 0:
        return api_error(ErrCode.REPLICAS_COUNT_CANNOT_BE_NEGATIVE)
    for check in (_check_windows, _check_policies, _check_subjects):
        error = check(cfg)
        if error is not None:
            return error
    return None


def _check_windows(cfg: StreamConfig) -> ApiError | None:
    if cfg.max_age_ns < 0:
        return invalid_config("max age can not be negative")
    if 0 < cfg.max_age_ns < MIN_WINDOW_NS:
        return invalid_config("max age needs to be >= 100ms")
    if cfg.duplicate_window_ns < 0:
        return invalid_config("duplicates window can not be negative")
    if cfg.max_age_ns != 0 and cfg.duplicate_window_ns > cfg.max_age_ns:
        return invalid_config("duplicates window can not be larger then max age")
    if 0 < cfg.duplicate_window_ns < MIN_WINDOW_NS:
        return invalid_config("duplicates window needs to be >= 100ms")
    return None


def _check_policies(cfg: StreamConfig) -> ApiError | None:
    if cfg.deny_purge and cfg.allow_rollup_hdrs:
        return invalid_config("roll-ups require the purge permission")
    if cfg.discard_new_per_subject:
        if cfg.discard is not Discard.NEW:
            return invalid_config("discard new per subject requires discard new policy to be set")
        if cfg.max_msgs_per_subject <= 0:
            return invalid_config("discard new per subject requires max msgs per subject > 0")
    if cfg.max_msg_size > 2**31 - 1:
        return invalid_config("max message size can not be larger than 2147483647")
    return None


def _check_subjects(cfg: StreamConfig) -> ApiError | None:
    if cfg.mirror is not None and cfg.subjects:
        return api_error(ErrCode.MIRROR_WITH_SUBJECTS)
    seen: set[str] = set()
    for subject in cfg.subjects:
        if subject in seen:
            return invalid_config("duplicate subjects detected")
        if is_valid_subject(subject) and is_subset(subject, JS_API_PATTERN):
            return invalid_config("subjects overlap with jetstream api")
        if not is_valid_subject(subject):
            return invalid_config("invalid subject")
        seen.add(subject)
    if not cfg.subjects and cfg.mirror is None and not cfg.sources:
        return invalid_config("stream needs at least one configured subject or be a source/mirror")
    for a in cfg.subjects:
        for b in cfg.subjects:
            if a != b and subjects_overlap(a, b):
                return invalid_config(f'subject "{a}" overlaps with "{b}"')
    return None


def check_stream_update(old: StreamConfig, new: StreamConfig) -> None:
    """Rules for STREAM.UPDATE on top of `check_stream_config` (raises JsApiException)."""
    rules = (
        (new.name != old.name, "stream configuration name must match original"),
        (new.max_consumers != old.max_consumers, "stream configuration update can not change MaxConsumers"),
        (new.storage != old.storage, "stream configuration update can not change storage type"),
        (new.retention != old.retention, "stream configuration update can not change retention policy"),
        (old.sealed and not new.sealed, "stream configuration update can not unseal a sealed stream"),
        (old.deny_delete and not new.deny_delete, "stream configuration update can not cancel deny message deletes"),
        (old.deny_purge and not new.deny_purge, "stream configuration update can not cancel deny purge"),
    )
    for broken, text in rules:
        if broken:
            raise JsApiException(invalid_config(text))


def check_stream_create(cfg: StreamConfig) -> None:
    if cfg.sealed:
        raise JsApiException(invalid_config("stream configuration for create can not be sealed"))


def sealed_adjusted(cfg: StreamConfig) -> StreamConfig:
    """What nats-server does to a config being sealed: no expiry, discard new, no deletes."""
    if not cfg.sealed:
        return cfg
    return attrs.evolve(
        cfg, max_age_ns=0, discard=Discard.NEW, deny_delete=True, deny_purge=True, allow_rollup_hdrs=False
    )


def stream_subjects_conflict(cfg: StreamConfig, other_streams: list[StreamConfig]) -> bool:
    """True when `cfg`'s subjects overlap another stream's (→ 10065 at the API layer)."""
    for other in other_streams:
        if other.name == cfg.name:
            continue
        for a in cfg.subjects:
            if any(subjects_overlap(a, b) for b in other.subjects):
                return True
    return False

