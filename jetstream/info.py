# pure-core
"""JSON shapes of StreamInfo, StreamState and ConsumerInfo, and RFC3339 time text.

Clients need every key listed in protocol.md §8.4 (nats-py raises TypeError/KeyError when one is
missing) and jsm.go's schemas need a few more. Timestamps are RFC3339 in UTC ending in `Z` with
nanoseconds (Go's RFC3339Nano: trailing zeros of the fraction dropped); durations are integer ns.
An empty stream's `first_ts`/`last_ts` is Go's zero time `0001-01-01T00:00:00Z`.

Everything here is pure formatting from values: the caller passes the store state, configs as
JSON dicts, and times as integer ns since the Unix epoch (no clock is read).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


def rfc3339_ns(ts_ns: int) -> str:
    """Unix ns -> `2024-05-01T12:00:00.123456789Z` (fraction trimmed like Go's RFC3339Nano)."""
    if ts_ns <= 0:
        return ZERO_TIME if ts_ns == 0 else _format(ts_ns)
    return _format(ts_ns)


def _format(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def parse_rfc3339_ns(text: str) -> int | None:
    """RFC3339 (any offset, up to 9 fraction digits) -> Unix ns; None if malformed.
    Go's zero time maps to 0."""
    if text == ZERO_TIME:
        return 0
    m = _RFC3339_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    offset = m.group(8)
    offset_s = 0
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        offset_s = sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    fraction = (m.group(7) or "").ljust(9, "0")
    whole_s = int((moment - _EPOCH).total_seconds()) - offset_s
    return whole_s * 1_000_000_000 + int(fraction or "0")


def stream_state_json(
    state: Any,
    consumer_count: int,
    subjects: dict[str, int] | None = None,
    deleted: list[int] | None = None,
) -> dict[str, Any]:
    """StreamState from a store `StoreState` (duck-typed: messages, bytes, first/last seq+ts,
    num_subjects, num_deleted)."""
    out: dict[str, Any] = {
        "messages": state.messages,
        "bytes": state.bytes,
        "first_seq": state.first_seq,
        "first_ts": rfc3339_ns(state.first_ts_ns) if state.messages else ZERO_TIME,
        "last_seq": state.last_seq,
        "last_ts": rfc3339_ns(state.last_ts_ns) if state.last_seq else ZERO_TIME,
        "consumer_count": consumer_count,
    }
    if state.num_subjects:
        out["num_subjects"] = state.num_subjects
    if subjects is not None:
        out["subjects"] = subjects
    if state.num_deleted:
        out["num_deleted"] = state.num_deleted
    if deleted is not None:
        out["deleted"] = deleted
    return out


def stream_info_json(
    config: dict[str, Any],
    created_ns: int,
    state: dict[str, Any],
    now_ns: int,
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """StreamInfo: `config` is `StreamConfig.to_json()`, `state` is `stream_state_json(...)`."""
    out: dict[str, Any] = {
        "config": config,
        "created": rfc3339_ns(created_ns),
        "state": state,
        "ts": rfc3339_ns(now_ns),
    }
    if cluster is not None:
        out["cluster"] = cluster
    return out


def seq_info_json(consumer_seq: int, stream_seq: int, last_active_ns: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"consumer_seq": consumer_seq, "stream_seq": stream_seq}
    if last_active_ns:
        out["last_active"] = rfc3339_ns(last_active_ns)
    return out


def consumer_info_json(
    stream_name: str,
    name: str,
    created_ns: int,
    config: dict[str, Any],
    counts: Any,
    now_ns: int,
    num_waiting: int = 0,
    push_bound: bool = False,
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ConsumerInfo. `counts` is a consumer `ConsumerCounts` (delivered/ack floor pairs, pending,
    ack pending, redelivered)."""
    out: dict[str, Any] = {
        "stream_name": stream_name,
        "name": name,
        "created": rfc3339_ns(created_ns),
        "config": config,
        "delivered": seq_info_json(counts.delivered_consumer_seq, counts.delivered_stream_seq),
        "ack_floor": seq_info_json(counts.ack_floor_consumer_seq, counts.ack_floor_stream_seq),
        "num_ack_pending": counts.num_ack_pending,
        "num_redelivered": counts.num_redelivered,
        "num_waiting": num_waiting,
        "num_pending": counts.num_pending,
        "ts": rfc3339_ns(now_ns),
    }
    if push_bound:
        out["push_bound"] = True
    if cluster is not None:
        out["cluster"] = cluster
    return out
