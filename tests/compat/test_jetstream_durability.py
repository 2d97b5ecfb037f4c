"""Streams, messages and consumer positions survive restarts; acknowledged publishes survive
SIGKILL.

The restart test stops the server gracefully (SIGTERM by PID) and starts a new one on the same
store directory and port; it runs against both servers. The crash test is JetRaft's durability
promise (reliability.md R1 on one node): several nats-py publishers keep publishing with acks
while the server process is SIGKILLed by PID; after a restart every acknowledged message is in
the stream, at the sequence its PubAck named, with the payload that was sent.
"""

from __future__ import annotations

import asyncio
import pathlib

import nats.errors
import pytest
from nats.js.api import ConsumerConfig

from tests.compat.js_support import connect, run, start_js_server, wait_until
from tests.compat.servers import KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_streams_messages_and_consumers_survive_restart(kind: str, tmp_path: pathlib.Path) -> None:
    server = start_js_server(kind, tmp_path / "store", tmp_path)
    try:
        async def before() -> None:
            nc = await connect(server.url)
            js = nc.jetstream()
            await js.add_stream(name="DUR", subjects=["dur.>"])
            for i in range(20):
                await js.publish(f"dur.{i % 2}", b"%d" % i, headers={"Nats-Msg-Id": f"m{i}"})
            psub = await js.pull_subscribe("dur.>", durable="keep", config=ConsumerConfig(ack_wait=30))
            for m in await psub.fetch(8, timeout=2):
                await m.ack_sync()
            kv = await js.create_key_value(bucket="KVD")
            await kv.put("k", b"v1")
            await kv.put("k", b"v2")

        run(before)
        server.restart()

        async def after() -> None:
            nc = await connect(server.url)
            js = nc.jetstream()
            info = await js.stream_info("DUR")
            assert (info.state.messages, info.state.last_seq) == (20, 20)
            assert (await js.get_msg("DUR", 13)).data == b"12"
            dup = await js.publish("dur.0", b"again", headers={"Nats-Msg-Id": "m19"})
            assert dup.duplicate and dup.seq == 20
            cinfo = await js.consumer_info("DUR", "keep")
            assert cinfo.ack_floor.stream_seq == 8 and cinfo.num_pending == 12
            psub = await js.pull_subscribe_bind("keep", "DUR")
            msgs = await psub.fetch(1, timeout=2)
            assert msgs[0].data == b"8" and msgs[0].metadata.sequence.stream == 9
            kv = await js.key_value("KVD")
            assert (await kv.get("k")).value == b"v2"

        run(after)
    finally:
        server.stop()


def test_acknowledged_publishes_survive_sigkill(tmp_path: pathlib.Path) -> None:
    server = start_js_server("jetraft", tmp_path / "store", tmp_path)
    acked: dict[int, bytes] = {}
    ack_count = [0]
    try:
        async def publish_until_killed() -> None:
            nc = await connect(server.url)
            js = nc.jetstream()
            await js.add_stream(name="CRASH", subjects=["crash.*"])
            stop = asyncio.Event()

            async def publisher(pid: int) -> None:
                for i in range(100_000):  # bounded; ends when the server dies
                    payload = b"p%d-%d" % (pid, i)
                    try:
                        ack = await js.publish(f"crash.{pid}", payload, timeout=2)
                    except (nats.errors.Error, OSError, asyncio.TimeoutError):
                        stop.set()
                        return
                    acked[ack.seq] = payload
                    ack_count[0] += 1
                    if stop.is_set():
                        return

            async def killer() -> None:
                async def enough() -> bool:
                    return len(acked) >= 300

                await wait_until(enough, timeout_s=20, what="300 acked publishes")
                assert server.proc is not None
                server.proc.kill()  # SIGKILL by PID, mid-stream
                server.proc.wait(timeout=10)

            await asyncio.gather(killer(), *(publisher(p) for p in range(4)))

        run(publish_until_killed)
        server.proc = None
        server.start()

        async def verify() -> None:
            nc = await connect(server.url)
            js = nc.jetstream()
            info = await js.stream_info("CRASH")
            assert info.state.last_seq >= max(acked)
            for seq, payload in sorted(acked.items()):
                msg = await js.get_msg("CRASH", seq)
                assert msg.data == payload, f"seq {seq}"

        run(verify)
        assert len(acked) >= 300
        assert ack_count[0] == len(acked)  # no sequence was acknowledged twice
    finally:
        server.stop()
