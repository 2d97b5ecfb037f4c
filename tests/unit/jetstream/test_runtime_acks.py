"""The single-server publish path: a batch shares one commit and its PubAcks (formatted on a
fast path for plain acks) are byte-for-byte the JSON the general path produces."""

from __future__ import annotations

import json

import trio

from jetstream.config import StreamConfig
from jetstream.runtime import StreamRuntime
from jetstream.store.sqlite import SqliteStore


async def test_batch_acks_match_json_and_share_one_commit(tmp_path) -> None:
    config = StreamConfig(name="ORDERS", subjects=("o.>",))
    store = SqliteStore(tmp_path / "m.db")
    sent: list[tuple[str, bytes]] = []
    all_acked = trio.Event()

    def publish(reply: str, subject: object, hdrs: object, payload: bytes) -> None:
        sent.append((reply, bytes(payload)))
        if len(sent) == 6:
            all_acked.set()

    rt = StreamRuntime(config, 0, store, tmp_path, lambda: 1_000, publish)
    dup = b"NATS/1.0\r\nNats-Msg-Id: one\r\n\r\n"
    for i in range(5):
        rt.enqueue_publish("o.a", f"r{i}", dup if i in (1, 3) else None, b"x")
    rt.enqueue_publish("bad..subject", "r5", b"NATS/1.0\r\nNats-Expected-Stream: OTHER\r\n\r\n", b"x")
    commits = []
    real_begin = store._begin

    def begin() -> None:
        if store._depth == 0:
            commits.append(1)  # an outermost transaction: one COMMIT, one fsync
        real_begin()

    store._begin = begin  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rt.run_writer)
        with trio.fail_after(10):
            await all_acked.wait()
        nursery.cancel_scope.cancel()
    bodies = {reply: json.loads(body) for reply, body in sent}
    assert [bodies[f"r{i}"]["seq"] for i in range(5)] == [1, 2, 3, 2, 4]
    assert bodies["r3"].get("duplicate") is True and "duplicate" not in bodies["r0"]
    assert bodies["r5"]["error"]["err_code"] == 10060
    assert sent[0][1] == b'{"stream":"ORDERS","seq":1}'
    assert len(commits) == 1  # one transaction (one fsync) for the whole batch
    await rt.close()


async def test_every_ack_follows_its_commit_inline_or_in_a_thread(tmp_path) -> None:
    """One-at-a-time publishes commit on the event loop (small batch), bursts in a worker
    thread; either way a PubAck is only sent once its message is committed (another connection
    sees it) and the store is touched by one thread at a time."""
    from jetstream import runtime

    config = StreamConfig(name="S", subjects=("s",))
    store = SqliteStore(tmp_path / "m.db")
    other = SqliteStore(tmp_path / "m.db")
    acked: list[int] = []
    visible: list[bool] = []
    ack_event = trio.Event()

    def publish(reply: str, subject: object, hdrs: object, payload: bytes) -> None:
        nonlocal ack_event
        seq = json.loads(payload)["seq"]
        visible.append(other.load(seq) is not None)
        acked.append(seq)
        ack_event.set()

    rt = StreamRuntime(config, 0, store, tmp_path, lambda: 1_000, publish)
    threaded: list[int] = []
    real_run_sync = trio.to_thread.run_sync

    async def counting_run_sync(fn, *args, **kw):  # type: ignore[no-untyped-def]
        threaded.append(1)
        return await real_run_sync(fn, *args, **kw)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rt.run_writer)
        with trio.fail_after(10):
            for i in range(3):  # one at a time: inline commits
                ack_event = trio.Event()
                rt.enqueue_publish("s", f"r{i}", None, b"x")
                await ack_event.wait()
            assert threaded == []
            trio.to_thread.run_sync = counting_run_sync  # type: ignore[assignment]
            try:
                for i in range(runtime.INLINE_COMMIT_MAX + 3):  # a burst: one threaded commit
                    rt.enqueue_publish("s", f"b{i}", None, b"y")
                while len(acked) < 3 + runtime.INLINE_COMMIT_MAX + 3:
                    ack_event = trio.Event()
                    await ack_event.wait()
            finally:
                trio.to_thread.run_sync = real_run_sync  # type: ignore[assignment]
        nursery.cancel_scope.cancel()
    assert acked == list(range(1, 3 + runtime.INLINE_COMMIT_MAX + 4))
    assert all(visible)
    assert len(threaded) == 1
    other.close()
    await rt.close()
