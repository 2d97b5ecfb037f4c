"""Interest retention on a replicated stream: messages nobody is interested in leave every replica.

How it works: the single server removes a message of an interest stream as it stores it when
no consumer wants its subject (jetstream/stream.py). A replica cannot decide that: consumers
run only on the stream leader, and every replica must apply the same thing. So replicas store
every publish ("someone is interested", jetstream/cluster_stream.py), and the leader runs
`sweep_uninterested`: after each commit it looks at the messages stored since its last look
and proposes `RemoveAcked` (a stream-group command, applied by every replica) for those no
consumer needs. Acked messages are removed the same way by the consumers themselves
(jetstream/delivery.py `_flush_removals`).

A message is kept when a running consumer needs it (`needs`: wanted and not yet acked), when a
durable's state saved in the stream's store wants its subject (a durable that is assigned but
not started yet on this leader, e.g. right after a takeover), and no sweep happens while an
assigned durable is not running or one is being created or deleted. The sweep starts at the
last sequence when this server took over: what a previous leader left unswept stays (kept,
never lost).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from jetstream.config import Retention
from jetstream.consumer_config import ConsumerConfig
from jetstream.runtime import StreamClosed
from jetstream.stream import RemoveAcked
from natsd.subjects import subject_matches

SWEEP_MAX = 4096  # messages looked at per pass
IDLE_CHECK_S = 1.0  # without commits, leadership is re-checked this often


async def sweep_uninterested(js: Any, rt: Any) -> None:
    """The leader's task for an interest stream (ends when it stops leading, or when a later
    takeover started another one)."""
    token = js.interest_sweepers[rt.group] = object()
    try:
        swept = await rt.read(lambda store: store.state().last_seq)
        while (rt.leading and not rt.closed and rt.config.retention is Retention.INTEREST
               and js.interest_sweepers.get(rt.group) is token):
            changed = rt.changed
            last = await rt.read(lambda store: store.state().last_seq)
            if last > swept and _ready(js, rt):
                swept = await _sweep(js, rt, swept, min(last, swept + SWEEP_MAX))
                continue
            with trio.move_on_after(IDLE_CHECK_S):
                await changed.wait()
    except StreamClosed:
        return
    finally:
        if js.interest_sweepers.get(rt.group) is token:
            del js.interest_sweepers[rt.group]


def _ready(js: Any, rt: Any) -> bool:
    ac = js.assigned_consumers
    if any(stream == rt.name for stream, _ in ac.pending):
        return False
    if ac.registry is None:
        return True
    return all(name in rt.consumers for name in ac.registry.assigned(rt.name))


async def _sweep(js: Any, rt: Any, after: int, upto: int) -> int:
    def read(store: Any) -> tuple[list[tuple[int, str]], list[bytes | None]]:
        rows = [(seq, msg.subject) for seq in range(after + 1, upto + 1) if (msg := store.load(seq)) is not None]
        saved = [store.load_consumer(n) for n in store.consumer_names() if n not in rt.consumers]
        return rows, saved

    rows, saved = await rt.read(read)
    saved_filters = [_filters(blob) for blob in saved]
    consumers = list(rt.consumers.values())
    remove = tuple(
        seq for seq, subject in rows
        if not any(c.needs(seq, subject) for c in consumers)
        and not any(_wanted(f, subject) for f in saved_filters)
    )
    if remove and rt.leading and _ready(js, rt) and list(rt.consumers.values()) == consumers:
        await rt.apply(RemoveAcked(remove))
    elif remove:
        return after  # the consumers changed meanwhile: look again
    return upto


def _filters(blob: bytes | None) -> list[str] | None:
    """The subjects a saved durable wants ([] = everything); None if unreadable (kept: all)."""
    try:
        return list(ConsumerConfig.from_json(json.loads(blob or b"")["config"]).filters())
    except Exception:  # noqa: BLE001 - an unreadable state keeps every message
        return None


def _wanted(filters: list[str] | None, subject: str) -> bool:
    return not filters or any(subject_matches(f, subject) for f in filters)
