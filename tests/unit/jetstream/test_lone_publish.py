"""Lone publishes commit in the client's reader task (StreamRuntime._commit_lone, hooked
through `server.after_read`): no writer task, no task switch; bursts keep the writer's batch
path; acks only after the commit; a failed lone commit answers errors and the writer reloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing

from jetstream.config import StreamConfig
from jetstream.runtime import INLINE_COMMIT_MAX, StreamRuntime
from jetstream.store.sqlite import SqliteStore
from natsd import protocol as p
from natsd.config import ServerOptions
from natsd.server import Server
from tests.unit.jetstream.js_harness import running_js

HOST = "127.0.0.1"


class FakeServer:
    """What the runtime needs of a server: `publish_internal` and `after_read`."""

    def __init__(self) -> None:
        self.after_read: list[Any] | None = None
        self.sent: list[tuple[str, bytes]] = []

    def publish_internal(self, subject: str, reply: Any, headers: Any, payload: bytes) -> None:
        self.sent.append((subject, bytes(payload)))


def _runtime(tmp_path: Path) -> tuple[StreamRuntime, FakeServer]:
    server = FakeServer()
    config = StreamConfig(name="S", subjects=("s.>",))
    rt = StreamRuntime(config, 0, SqliteStore(tmp_path / "m.db"), tmp_path, lambda: 1_000,
                       server.publish_internal)
    return rt, server


def test_a_lone_publish_commits_in_the_read_hook(tmp_path: Path) -> None:
    rt, server = _runtime(tmp_path)
    server.after_read = hooks = []
    rt.enqueue_publish("s.a", "r1", None, b"x")
    assert len(hooks) == 1 and not rt.queue_ready.is_set()
    assert rt.store.state().messages == 0 and server.sent == []  # nothing before the hook
    server.after_read = None
    hooks[0]()
    assert rt.queue == [] and rt.store.state().messages == 1
    assert server.sent == [("r1", b'{"stream":"S","seq":1}')]
    assert rt.queue_ready.is_set()  # once: the writer is asked to size the WAL
    rt.queue_ready = trio.Event()
    server.after_read = hooks = []
    rt.enqueue_publish("s.a", "r2", None, b"x")
    server.after_read = None
    hooks[0]()
    assert server.sent[-1] == ("r2", b'{"stream":"S","seq":2}') and not rt.queue_ready.is_set()
    rt.store.close()


async def test_the_first_lone_commit_has_the_writer_size_the_wal(tmp_path: Path) -> None:
    rt, server = _runtime(tmp_path)
    wal = Path(str(tmp_path / "m.db") + "-wal")
    small = wal.stat().st_size
    server.after_read = hooks = []
    rt.enqueue_publish("s.a", "r1", None, b"x")
    server.after_read = None
    hooks[0]()
    sized: list[int] = []
    real = rt.store.preallocate_wal  # type: ignore[attr-defined]
    done = trio.Event()

    def sizing() -> None:
        real()
        sized.append(wal.stat().st_size)
        trio.from_thread.run_sync(done.set)  # runs in the writer's worker thread

    rt._wal_sizing = sizing
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rt.run_writer)
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert sized[0] > max(small, 4_000_000) and rt._wal_sizing is None
    await rt.close()


def test_a_burst_in_one_read_goes_to_the_writer(tmp_path: Path) -> None:
    rt, server = _runtime(tmp_path)
    server.after_read = hooks = []
    for i in range(INLINE_COMMIT_MAX + 1):
        rt.enqueue_publish("s.a", f"r{i}", None, b"x")
    assert len(hooks) == 1 and rt.queue_ready.is_set()
    hooks[0]()
    assert len(rt.queue) == INLINE_COMMIT_MAX + 1 and rt.store.state().messages == 0
    rt.store.close()


def test_no_hook_outside_a_read_or_while_the_writer_holds_a_batch(tmp_path: Path) -> None:
    rt, server = _runtime(tmp_path)
    rt.enqueue_publish("s.a", "r0", None, b"x")  # after_read None: a timer, a route, ...
    assert rt.queue_ready.is_set()
    rt.queue_ready = trio.Event()
    rt._writer_busy = True  # the writer took a batch: a later publish must not overtake it
    server.after_read = hooks = []
    rt.enqueue_publish("s.a", "r1", None, b"x")
    assert hooks == [] and rt.queue_ready.is_set() and len(rt.queue) == 2
    rt.store.close()


async def test_a_failed_lone_commit_answers_errors_and_the_writer_reloads(tmp_path: Path) -> None:
    rt, server = _runtime(tmp_path)

    def broken(*args: Any) -> None:
        raise OSError("disk gone")

    real = rt.store.store_many
    rt.store.store_many = broken  # type: ignore[method-assign]
    server.after_read = hooks = []
    rt.enqueue_publish("s.a", "r1", None, b"x")
    server.after_read = None
    hooks[0]()
    assert json.loads(server.sent[0][1])["error"]["err_code"] == 10077
    assert rt._stale and rt.queue_ready.is_set()
    rt.store.store_many = real  # type: ignore[method-assign]
    reloads: list[int] = []
    real_reload = rt._reload
    rt._reload = lambda: (reloads.append(1), real_reload())[1]  # type: ignore[method-assign]
    rt.enqueue_publish("s.a", "r2", None, b"y")
    acked = trio.Event()
    rt.publish_many = lambda acks: (server.sent.extend(acks), acked.set())  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rt.run_writer)
        with trio.fail_after(10):
            await acked.wait()
        nursery.cancel_scope.cancel()
    assert reloads == [1] and not rt._stale
    assert server.sent[1] == ("r2", b'{"stream":"S","seq":1}')
    await rt.close()


async def _read_acks(stream: trio.SocketStream, parser: p.Parser, count: int) -> list[Any]:
    out: list[Any] = []
    with trio.fail_after(10):
        while len(out) < count:
            out.extend(op for op in parser.feed(await stream.receive_some(65536)) if isinstance(op, p.Msg))
    return out


async def test_over_a_socket_lone_publishes_skip_the_writer_and_bursts_batch(tmp_path: Path) -> None:
    async with running_js(tmp_path, host=HOST, port=0) as h:
        assert (await h.api("STREAM.CREATE.S", {"name": "S", "subjects": ["s.>"], "storage": "file"})).get("error") is None
        rt = h.js.streams["S"]
        batches: list[int] = []
        real = rt.apply_batch

        async def counting(cmds: list[Any]) -> list[Any]:
            batches.append(len(cmds))
            return await real(cmds)

        rt.apply_batch = counting  # type: ignore[method-assign]
        sized = trio.Event()
        real_sizing = rt._wal_sizing

        def sizing() -> None:
            real_sizing()
            trio.from_thread.run_sync(sized.set)

        rt._wal_sizing = sizing
        async with trio.open_nursery() as nursery:
            port = await nursery.start(h.server.serve)
            stream = await trio.open_tcp_stream(HOST, port)
            parser = p.Parser(server_side=False)
            await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB in.* 1\r\nPING\r\n')
            with trio.fail_after(10):
                while not any(op == p.PONG for op in parser.feed(await stream.receive_some(65536))):
                    pass
            await stream.send_all(b"PUB s.a in.w 2\r\nhi\r\n")  # the first: the writer sizes the WAL
            await _read_acks(stream, parser, 1)
            with trio.fail_after(10):
                await sized.wait()
                async with rt.lock:  # the writer's call (in its worker thread) has returned
                    pass
            await trio.testing.wait_all_tasks_blocked()
            batches.clear()
            for i in range(5):  # one at a time
                await stream.send_all(b"PUB s.a in.%d 2\r\nhi\r\n" % i)
                ack = (await _read_acks(stream, parser, 1))[0]
                assert ack.subject == f"in.{i}" and json.loads(ack.payload) == {"stream": "S", "seq": i + 2}
            assert batches == []  # all five committed by the reader task
            await stream.send_all(b"".join(b"PUB s.a in.%d 2\r\nhi\r\n" % i for i in range(5, 15)))
            acks = await _read_acks(stream, parser, 10)
            assert [json.loads(a.payload)["seq"] for a in acks] == list(range(7, 17))
            assert sum(batches) == 10 and max(batches) > INLINE_COMMIT_MAX
            await stream.aclose()
            nursery.cancel_scope.cancel()
        assert rt.store.state().messages == 16
