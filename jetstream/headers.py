# pure-core
"""The NATS/1.0 header block (ADR-4): parse and build.

A block is `NATS/1.0[ <3-digit status>[ <description>]]\\r\\n`, then `Key: Value\\r\\n` lines, then
an empty `\\r\\n`. Keys keep their case and may repeat. Lookups try the exact key first and fall
back to a case-insensitive match, so a client that sends `nats-msg-id` is still deduplicated.

`parse_headers` never raises on client input: a block that does not start with `NATS/1.0` or has
lines without a colon yields a `Headers` with what could be understood (`valid` says whether it
was well formed). The stream only needs a handful of keys, listed here as constants.
"""

from __future__ import annotations

import attrs

HDR_LINE = b"NATS/1.0"
CRLF = b"\r\n"
MAX_HEADER_BYTES = 64 * 1024

MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_SUBJ_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJ_SEQ_SUBJ = "Nats-Expected-Last-Subject-Sequence-Subject"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
ROLLUP = "Nats-Rollup"
MSG_TTL = "Nats-TTL"
REQUIRED_API_LEVEL = "Nats-Required-Api-Level"

ROLLUP_SUBJECT = "sub"
ROLLUP_ALL = "all"


@attrs.frozen
class Headers:
    """A parsed header block: optional status line parts and the ordered (key, value) pairs."""

    items: tuple[tuple[str, str], ...] = ()
    status: int | None = None
    description: str = ""
    valid: bool = True

    def get(self, key: str) -> str | None:
        """First value for `key` (exact match first, then case-insensitive), or None."""
        for k, v in self.items:
            if k == key:
                return v
        lowered = key.lower()
        for k, v in self.items:
            if k.lower() == lowered:
                return v
        return None

    def get_all(self, key: str) -> list[str]:
        lowered = key.lower()
        return [v for k, v in self.items if k.lower() == lowered]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


EMPTY = Headers()


def parse_headers(block: bytes | None) -> Headers:
    """Parse a header block; None or b"" gives an empty `Headers`."""
    if not block:
        return EMPTY
    text = block.decode("utf-8", errors="replace")
    lines = text.split("\r\n")
    status, description, valid = _parse_status_line(lines[0])
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            valid = False
            continue
        items.append((key.strip(), value.strip()))
    return Headers(items=tuple(items), status=status, description=description, valid=valid)


def _parse_status_line(line: str) -> tuple[int | None, str, bool]:
    if not line.startswith("NATS/1.0"):
        return None, "", False
    rest = line[len("NATS/1.0") :].strip()
    if not rest:
        return None, "", True
    code_text, _, description = rest.partition(" ")
    if len(code_text) == 3 and code_text.isdigit():
        return int(code_text), description.strip(), True
    return None, "", False


def encode_headers(
    items: list[tuple[str, str]] | tuple[tuple[str, str], ...],
    status: int | None = None,
    description: str = "",
) -> bytes:
    """Build a header block; an empty block (no status, no items) is still `NATS/1.0\\r\\n\\r\\n`."""
    first = "NATS/1.0"
    if status is not None:
        first += f" {status:03d}"
        if description:
            first += f" {description}"
    lines = [first] + [f"{k}: {v}" for k, v in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def append_headers(block: bytes | None, extra: list[tuple[str, str]]) -> bytes:
    """Return `block` with `extra` pairs added (keeps the original status line and pairs)."""
    parsed = parse_headers(block)
    return encode_headers(list(parsed.items) + list(extra), parsed.status, parsed.description)
