"""A misbehaving client must not hurt well-behaved ones.

One asyncio task opens connection after connection and abuses each: random garbage, a huge
control line with no end, a declared payload far over the limit, frames cut off mid-way and
abandoned, a payload trickled in pieces and then dropped, a flood of bad subjects. Meanwhile a good
nats-py pair keeps doing request/reply and pub/sub. Every good operation must succeed, and the
server must still be alive and accepting new clients afterwards. Runs against both servers.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import nats

from tests.compat.servers import LOOPBACK, ServerProcess

ROUNDS = 12  # at least this many rounds of every abuse
ROUNDS_MAX = 100  # ...and more until the good client has done GOOD_MIN round trips meanwhile
GOOD_MIN = 50
READ_DEADLINE_S = 2.0


def abuse_payloads(rng: random.Random) -> list[bytes]:
    return [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))),
        b"PUB " + b"x" * 200_000,  # control line far over the limit, never terminated
        b"CONNECT {}\r\nPUB huge 900000000\r\n" + b"y" * 4096,
        b'CONNECT {"verbose":false}\r\nPUB cut 100\r\nonly a part of it',
        b"CONNECT {}\r\nHPUB h 12 40\r\nNATS/1.0\r\n",
        b"CONNECT {}\r\n" + b"SUB bad..subject 1\r\n" * 500,
        b"CONNECT {bad json" + b"}" * 3000,
        b"CONNECT {}\r\nSUB " + b"a." * 3000 + b" 1\r\n",
    ]


async def abuse_once(port: int, payload: bytes, trickle: bool) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await asyncio.wait_for(reader.readline(), READ_DEADLINE_S)  # INFO
        if trickle:
            for start in range(0, min(len(payload), 64), 7):
                writer.write(payload[start : start + 7])
                await writer.drain()
        else:
            writer.write(payload)
            await writer.drain()
        # Read whatever comes back until close, briefly; partial frames leave the server waiting.
        try:
            await asyncio.wait_for(reader.read(1 << 20), 0.05)
        except asyncio.TimeoutError:
            pass
    except (ConnectionError, asyncio.TimeoutError):
        pass  # the server closing on us is the expected reaction
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def abuser(port: int, done: asyncio.Event, served: list[int]) -> int:
    """Abuse ROUNDS rounds, and keep going (up to ROUNDS_MAX) until the good client has made
    GOOD_MIN round trips, so the two always overlap however the machine schedules them."""
    rng = random.Random(7)
    sent = 0
    try:
        for round_no in range(ROUNDS_MAX):
            if round_no >= ROUNDS and served[0] >= GOOD_MIN:
                break
            for payload in abuse_payloads(rng):
                await abuse_once(port, payload, trickle=round_no % 3 == 0)
                sent += 1
    finally:
        done.set()
    return sent


async def good_client(url: str, done: asyncio.Event, served: list[int]) -> int:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    svc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    cli = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    try:

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data[::-1])

        await svc.subscribe("good.svc", cb=respond)
        watcher = await svc.subscribe("good.events")
        await svc.request("good.svc", b"warm-up", timeout=5)  # same connection: SUBs are processed
        ok = 0
        while not done.is_set() and ok < 10_000:
            body = b"ping-%d" % ok
            reply = await cli.request("good.svc", body, timeout=5)
            assert reply.data == body[::-1]
            await cli.publish("good.events", body)
            event = await watcher.next_msg(timeout=5)
            assert event.data == body
            ok += 1
            served[0] = ok
        assert errors == []
        assert svc.is_connected and cli.is_connected
        return ok
    finally:
        await svc.close()
        await cli.close()


async def scenario(server: ServerProcess) -> tuple[int, int]:
    done, served_box = asyncio.Event(), [0]
    abused, served = await asyncio.gather(
        abuser(server.port, done, served_box), good_client(server.url, done, served_box)
    )
    fresh = await nats.connect(server.url, allow_reconnect=False)
    await fresh.flush(timeout=5)
    await fresh.close()
    return abused, served


def test_garbage_client_does_not_disturb_good_clients(server: ServerProcess) -> None:
    abused, served = asyncio.run(asyncio.wait_for(scenario(server), 60))
    assert abused >= ROUNDS * len(abuse_payloads(random.Random(0)))
    assert served >= GOOD_MIN, "the good client made too little progress while the abuser ran"
    assert server.alive()
