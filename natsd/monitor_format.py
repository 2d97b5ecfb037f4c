# pure-core
"""Value formats of nats-server's monitoring JSON: times, uptimes, durations, query options.

How it works: nats-server is written in Go and its monitoring JSON shows Go's formats. Times are
RFC 3339 in UTC with nanoseconds (`2026-11-26T08:22:32.612374309Z`), uptimes and idle times are
its own compact `1d2h3m4s` form, configured durations are integer nanoseconds, and round-trip
times are Go duration strings (`1.574585ms`). Query options (`?subs=1`, `?streams=true`) are
booleans written as 1/true/yes. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import datetime

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def rfc3339(time_s: float) -> str:
    """Seconds since the epoch -> `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC)."""
    whole = int(time_s // 1)
    nanos = int(round((time_s - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    moment = _EPOCH + datetime.timedelta(seconds=whole)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def uptime(seconds: float) -> str:
    """nats-server's uptime form: `0s`, `59s`, `1m0s`, `1h2m3s`, `2d0h0m1s`."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m{secs}s"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def go_duration(seconds: float) -> str:
    """A Go duration string for small values: `0s`, `850ns`, `12.5µs`, `1.574585ms`, `2.5s`."""
    nanos = int(round(seconds * 1e9))
    if nanos == 0:
        return "0s"
    if nanos < 1_000:
        return f"{nanos}ns"
    if nanos < 1_000_000:
        return _trim(nanos / 1e3) + "µs"
    if nanos < 1_000_000_000:
        return _trim(nanos / 1e6) + "ms"
    return _trim(nanos / 1e9) + "s"


def _trim(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def nanos(seconds: float) -> int:
    return int(round(seconds * 1e9))


def flag(query: dict[str, str], name: str) -> bool:
    """A boolean query option: present as 1/true/yes/on (or present with no value)."""
    value = query.get(name)
    if value is None:
        return False
    return value.strip().lower() in ("", "1", "true", "yes", "on")


def number(query: dict[str, str], name: str, default: int, lo: int = 0, hi: int = 1 << 31) -> int:
    """An integer query option, clamped to [lo, hi]; unparsable values give `default`."""
    try:
        value = int(query.get(name, default))
    except ValueError:
        return default
    return min(max(value, lo), hi)
