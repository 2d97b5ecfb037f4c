"""NATS client helpers for the harness (nats-py, asyncio): connections, JetStream API calls,
whole-stream reads, and the mapping from exceptions to operation outcomes.

Each harness process talks to one node only (no discovered servers, reconnect to the same node
forever), so an operation's node is known and a dead node shows up as failed or unknown
operations rather than as silent failover.

Outcome rule: a timeout or a broken connection means the operation may or may not have happened
(info). No responders, or a definite client-side rejection (bad request, wrong last sequence, not
found), means it did not happen (fail). A 5xx API error is treated as unknown, conservatively.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import nats
import nats.errors
import nats.js.errors

from jepsen.history import OpType

API_PREFIX = "$JS.API"
READ_CONCURRENCY = 64


async def _quiet(_exc: Exception) -> None:
    """Connection errors are expected under faults; operations record them."""


async def connect(url: str, name: str, timeout_s: float = 2.0) -> nats.NATS:
    return await nats.connect(
        servers=[url],
        name=name,
        connect_timeout=timeout_s,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        error_cb=_quiet,
        ping_interval=2,
        max_outstanding_pings=2,
        dont_randomize=True,
    )


class ApiError(RuntimeError):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}/{error.get('err_code')}: {error.get('description')}")
        self.error = error


async def api(nc: nats.NATS, subject: str, body: dict[str, Any] | None = None, timeout_s: float = 2.0) -> dict:
    payload = json.dumps(body).encode() if body is not None else b""
    msg = await nc.request(f"{API_PREFIX}.{subject}", payload, timeout=timeout_s)
    data = json.loads(msg.data)
    if "error" in data:
        raise ApiError(data["error"])
    return data


async def stream_info(nc: nats.NATS, stream: str, timeout_s: float = 2.0) -> dict:
    return await api(nc, f"STREAM.INFO.{stream}", None, timeout_s)


async def stream_leader(nc: nats.NATS, stream: str, timeout_s: float = 2.0) -> str | None:
    try:
        info = await stream_info(nc, stream, timeout_s)
    except Exception:
        return None
    return info.get("cluster", {}).get("leader")


async def stepdown(nc: nats.NATS, stream: str, preferred: str | None = None, timeout_s: float = 2.0) -> dict:
    body = {"placement": {"preferred": preferred}} if preferred else None
    return await api(nc, f"STREAM.LEADER.STEPDOWN.{stream}", body, timeout_s)


async def get_message(nc: nats.NATS, stream: str, seq: int, timeout_s: float) -> dict | None:
    """One message by sequence from the stream leader; None when the sequence does not exist."""
    try:
        data = await api(nc, f"STREAM.MSG.GET.{stream}", {"seq": seq}, timeout_s)
    except ApiError as exc:
        if exc.error.get("code") == 404:
            return None
        raise
    return data["message"]


async def read_stream(nc: nats.NATS, stream: str, last_seq: int, timeout_s: float = 5.0) -> list[dict]:
    """All messages with sequence 1..last_seq (as served by the current stream leader)."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(seq: int) -> dict | None:
        async with gate:
            return await get_message(nc, stream, seq, timeout_s)

    found = await asyncio.gather(*(one(seq) for seq in range(1, last_seq + 1)))
    return [
        {"seq": m["seq"], "subject": m["subject"], "data": base64.b64decode(m.get("data", "")).decode()}
        for m in found
        if m is not None
    ]


def outcome(exc: BaseException) -> OpType:
    """How sure are we that an operation that raised `exc` did not happen?"""
    if isinstance(exc, (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError)):
        return OpType.FAIL
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return OpType.FAIL
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.code or 0
        return OpType.FAIL if 400 <= code < 500 else OpType.INFO
    return OpType.INFO


def describe(exc: BaseException) -> str:
    text = str(exc) or ""
    return f"{type(exc).__name__}: {text}"[:200]
