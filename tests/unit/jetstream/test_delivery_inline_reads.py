"""Pull delivery from a SQLite stream reads runs of new messages on the event loop (bounded by
INLINE_READ_BYTES_MAX, pending count from the store's counters) and falls back to the worker
thread when the count needs rows (a gap in the stream). Either way every message arrives once,
in order, with the ack subject's pending count that nats-server gives."""

from __future__ import annotations

from pathlib import Path

from jetstream.delivery import INLINE_READ_BYTES_MAX
from tests.unit.jetstream.js_harness import Harness, Msg, running_js

FILE = {"storage": "file"}


async def _stream_with(h: Harness, payloads: list[bytes]) -> None:
    resp = await h.api("STREAM.CREATE.R", {"name": "R", "subjects": ["r.>"], **FILE})
    assert "error" not in resp, resp
    for i, payload in enumerate(payloads):
        ack = (await h.request(f"r.{i}", payload)).json()
        assert ack["seq"] == i + 1, ack


async def _pull_all(h: Harness, count: int, batch: int = 0) -> list[Msg]:
    cfg = {"durable_name": "c", "ack_policy": "explicit"}
    assert "error" not in await h.api("CONSUMER.CREATE.R.c", {"stream_name": "R", "config": cfg})
    inbox = h.inbox()
    got: list[Msg] = []
    while len(got) < count:
        size = min(batch or count, count - len(got))
        h.publish("$JS.API.CONSUMER.MSG.NEXT.R.c", b'{"batch": %d, "expires": 5000000000}' % size, inbox.subject)
        got += [await inbox.next() for _ in range(size)]
    return got


def _spy_reads(h: Harness) -> list[tuple[str, int]]:
    """Record each delivery read of the stream R: ("inline", messages), ("thread", messages)
    or ("count", 0) for a pending count in the thread."""
    rt = h.js.streams["R"]
    seen: list[tuple[str, int]] = []
    inline, thread = rt.read_inline, rt.read

    async def read_inline(fn, *args):  # type: ignore[no-untyped-def]
        out = await inline(fn, *args)
        seen.append(("inline", len(out[0])))
        return out

    async def read(fn, *args):  # type: ignore[no-untyped-def]
        out = await thread(fn, *args)
        if getattr(fn, "__name__", "") == "_load":
            seen.append(("thread", len(out[0])))
        elif getattr(fn, "__name__", "") == "_count_after":
            seen.append(("count", 0))
        return out

    rt.read_inline, rt.read = read_inline, read
    return seen


def _tokens(msg: Msg) -> tuple[int, int]:
    """(stream seq, pending) from the ack subject."""
    assert msg.reply is not None
    parts = msg.reply.split(".")
    return int(parts[5]), int(parts[8])


async def test_big_messages_split_the_inline_run_and_keep_order_and_pending(tmp_path: Path) -> None:
    big = b"x" * (INLINE_READ_BYTES_MAX // 2 + 1)  # two of them pass the cap
    payloads = [big, big, big, b"a", b"b"]
    async with running_js(tmp_path) as h:
        await _stream_with(h, payloads)
        reads = _spy_reads(h)
        got = await _pull_all(h, len(payloads))
        assert [m.payload for m in got] == payloads
        assert [_tokens(m) for m in got] == [(1, 4), (2, 3), (3, 2), (4, 1), (5, 0)]
        assert reads[:2] == [("inline", 2), ("inline", 3)]


async def test_a_gap_in_the_stream_counts_pending_in_the_thread(tmp_path: Path) -> None:
    async with running_js(tmp_path) as h:
        await _stream_with(h, [b"%d" % i for i in range(8)])
        for seq in (3, 6):
            resp = await h.api("STREAM.MSG.DELETE.R", {"seq": seq})
            assert resp.get("success"), resp
        reads = _spy_reads(h)
        got = await _pull_all(h, 6, batch=2)  # each run ends before a gap: the count needs rows
        assert [_tokens(m) for m in got] == [(1, 5), (2, 4), (4, 3), (5, 2), (7, 1), (8, 0)]
        assert reads[:2] == [("inline", 2), ("count", 0)]
