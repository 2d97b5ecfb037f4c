"""After a read whose processing ran after-read callbacks (JetStream's lone commit wrote the
PubAck), the client's reader tries the next read right away instead of waiting for
readability (natsd/client.py EAGER_READS_MAX): a one-at-a-time publisher that answered while
the ack was written is served without the wait; at most EAGER_READS_MAX such reads in a row,
then the reader waits (and yields) again; a read that finds nothing falls back to the wait."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import trio

from natsd import client as client_mod
from natsd import protocol as p
from tests.unit.jetstream.js_harness import running_js

HOST = "127.0.0.1"


async def _until(stream: trio.SocketStream, parser: p.Parser, count: int) -> list[Any]:
    out: list[Any] = []
    with trio.fail_after(10):
        while len(out) < count:
            out.extend(op for op in parser.feed(await stream.receive_some(65536))
                       if isinstance(op, p.Msg) or op == p.PONG)
    return out


async def test_a_publisher_that_answers_during_the_ack_is_read_without_waiting(
        tmp_path: Path, monkeypatch: Any) -> None:
    waits: list[int] = []
    real_wait = client_mod.wait_readable

    async def counting_wait(fd: int) -> None:
        waits.append(fd)
        await real_wait(fd)

    monkeypatch.setattr(client_mod, "wait_readable", counting_wait)
    total = 12
    async with running_js(tmp_path, host=HOST, port=0) as h:
        assert (await h.api("STREAM.CREATE.S", {"name": "S", "subjects": ["s.>"],
                                                "storage": "file"})).get("error") is None
        rt = h.js.streams["S"]
        async with trio.open_nursery() as nursery:
            port = await nursery.start(h.server.serve)
            raw = socket.create_connection((HOST, port))
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
            parser = p.Parser(server_side=False)
            await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB in.* 1\r\nPING\r\n')
            await _until(stream, parser, 1)
            await stream.send_all(b"PUB s.a in.0 2\r\nhi\r\n")  # the first lone commit
            await _until(stream, parser, 1)
            with trio.fail_after(10):  # the writer sizes the WAL after the first lone commit
                while rt._wal_sizing is not None or rt.lock.locked():
                    await trio.sleep(0.001)
            sent = [2]
            real_commit = rt._commit_lone

            def commit_then_answer() -> None:
                real_commit()  # the PubAck is written by now
                if sent[0] < total:  # the publisher's next message arrives before the next read
                    raw.send(b"PUB s.a in.%d 2\r\nhi\r\n" % sent[0])
                    sent[0] += 1

            rt._commit_lone = commit_then_answer  # type: ignore[method-assign]
            waits.clear()
            await stream.send_all(b"PUB s.a in.1 2\r\nhi\r\n")
            acks = await _until(stream, parser, total - 1)
            assert [a.subject for a in acks] == [f"in.{i}" for i in range(1, total)]
            assert [json.loads(a.payload)["seq"] for a in acks] == list(range(2, total + 1))
            # reads 2..11 (the first was already waited for): runs of EAGER_READS_MAX eager
            # reads, each followed by one read that waited (the cap); then an eager read that
            # found nothing and the idle wait
            eager = client_mod.EAGER_READS_MAX
            expected_waits = (total - 2) // (eager + 1) + 1
            assert expected_waits < total - 2
            with trio.fail_after(10):
                while len(waits) < expected_waits:  # the last wait starts once the reader idles
                    await trio.sleep(0)
            assert len(waits) == expected_waits
            assert rt.store.state().messages == total
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_without_callbacks_every_read_waits(tmp_path: Path, monkeypatch: Any) -> None:
    waits: list[int] = []
    real_wait = client_mod.wait_readable

    async def counting_wait(fd: int) -> None:
        waits.append(fd)
        await real_wait(fd)

    monkeypatch.setattr(client_mod, "wait_readable", counting_wait)
    async with running_js(tmp_path, host=HOST, port=0) as h:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(h.server.serve)
            stream = await trio.open_tcp_stream(HOST, port)
            parser = p.Parser(server_side=False)
            await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            await _until(stream, parser, 1)
            waits.clear()
            for _ in range(3):
                await stream.send_all(b"PING\r\n")
                await _until(stream, parser, 1)
            with trio.fail_after(10):
                while len(waits) < 3:
                    await trio.sleep(0)
            assert len(waits) == 3  # one per PING read, and the idle wait after the last
            await stream.aclose()
            nursery.cancel_scope.cancel()
