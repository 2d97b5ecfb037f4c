"""Key-Value and Object Store through nats-py, against JetRaft and nats-server.

KV and object store are client conventions on top of streams (protocol.md §7): these tests
exercise rollups, per-subject limits, expected-last-subject-sequence, direct and non-direct
gets, last-per-subject ordered consumers with heartbeats and flow control, and chunked objects
read back by an ordered consumer that stops when the ack subject's pending token reaches 0.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import nats.js.errors
import pytest

from tests.compat.js_support import connect, js_server, run
from tests.compat.servers import KINDS, ServerProcess


@pytest.fixture(scope="module", params=KINDS)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with js_server(request.param, tmp_path_factory.mktemp(f"kv-{request.param}")) as proc:
        yield proc


def test_kv_put_get_create_update_delete_purge(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="CFG", history=5)
        r1 = await kv.put("color", b"red")
        entry = await kv.get("color")
        assert (entry.value, entry.revision, entry.key) == (b"red", r1, "color")
        r2 = await kv.update("color", b"blue", last=r1)
        assert r2 == r1 + 1 and (await kv.get("color")).value == b"blue"
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.update("color", b"green", last=r1)
        assert (await kv.get("color")).value == b"blue"  # the failed update changed nothing
        created = await kv.create("size", b"L")
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create("size", b"XL")
        assert (await kv.get("size")).revision == created
        await kv.delete("size")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("size")
        assert await kv.create("size", b"S") > created  # create over a delete marker works
        old = await kv.get("color", revision=r1)
        assert old.value == b"red"
        await kv.purge("color")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("color")
        assert await kv.history("color") and len(await kv.history("color")) == 1
        status = await kv.status()
        assert status.bucket == "CFG" and status.history == 5

    run(scenario)


def test_kv_history_keys_and_watch(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="HIST", history=3)
        for i in range(5):
            await kv.put("k1", b"v%d" % i)
        await kv.put("k2", b"x")
        await kv.put("dir.k3", b"y")
        history = await kv.history("k1")
        assert [e.value for e in history] == [b"v2", b"v3", b"v4"]  # history=3 keeps the newest 3
        assert sorted(await kv.keys()) == ["dir.k3", "k1", "k2"]
        watcher = await kv.watchall()
        initial = []
        for _ in range(10):  # bounded: 3 keys, then the None marker
            entry = await watcher.updates(timeout=2)
            if entry is None:
                break
            initial.append((entry.key, entry.value))
        assert sorted(initial) == [("dir.k3", b"y"), ("k1", b"v4"), ("k2", b"x")]
        await kv.put("k2", b"changed")
        await kv.delete("k1")
        update = await watcher.updates(timeout=2)
        assert (update.key, update.value) == ("k2", b"changed")
        deleted = await watcher.updates(timeout=2)
        assert deleted.key == "k1" and deleted.operation == "DEL"
        await watcher.stop()
        only_dir = await kv.watch("dir.*")
        first = await only_dir.updates(timeout=2)
        assert first.key == "dir.k3"

    run(scenario)


def test_object_store_5mb_put_get_info_list_delete(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        obs = await js.create_object_store("FILES")
        data = os.urandom(5 * 1024 * 1024)
        info = await obs.put("big.bin", data)
        assert info.size == len(data) and info.chunks == 40
        small = await obs.put("small.txt", b"hello")
        assert small.size == 5
        result = await obs.get("big.bin")
        assert hashlib.sha256(result.data).digest() == hashlib.sha256(data).digest()
        got = await obs.get_info("big.bin")
        assert got.size == len(data) and got.digest == info.digest
        assert sorted(o.name for o in await obs.list()) == ["big.bin", "small.txt"]
        await obs.delete("big.bin")
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await obs.get("big.bin")
        assert (await obs.get("small.txt")).data == b"hello"
        stream = await js.stream_info("OBJ_FILES")
        assert stream.state.messages == 3  # small: chunk + meta; big: only its "deleted" meta

    run(scenario)


def test_direct_kv_purge_deletes_seal_and_bucket_delete(srv: ServerProcess) -> None:
    async def scenario() -> None:
        nc = await connect(srv.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="DIRECT", history=10, direct=True)
        await kv.put("a", b"1")
        await kv.put("a", b"2")
        await kv.delete("a")
        await kv.put("b", b"x")
        assert (await kv.get("b")).value == b"x"  # DIRECT.GET.<stream>.<subject>
        watcher = await kv.watch("a", include_history=True)
        history = []
        for _ in range(10):  # bounded: 3 entries then the None marker
            entry = await watcher.updates(timeout=2)
            if entry is None:
                break
            history.append((entry.value, entry.operation))
        assert history == [(b"1", None), (b"2", None), (b"", "DEL")]
        await kv.purge_deletes(olderthan=-1)
        info = await js.stream_info("KV_DIRECT", subjects_filter="$KV.DIRECT.>")
        assert info.state.subjects == {"$KV.DIRECT.b": 1} and info.state.messages == 1
        assert (await js.get_msg("KV_DIRECT", seq=4, direct=True)).data == b"x"
        obs = await js.create_object_store("SEAL")
        await obs.put("f", b"data" * 1000)
        await obs.seal()
        assert (await js.stream_info("OBJ_SEAL")).config.sealed
        with pytest.raises(nats.js.errors.BadRequestError):
            await obs.put("g", b"x")
        assert (await obs.get("f")).data == b"data" * 1000
        await js.delete_key_value("DIRECT")
        names = [s.config.name for s in await js.streams_info()]
        assert "KV_DIRECT" not in names and "OBJ_SEAL" in names

    run(scenario)
