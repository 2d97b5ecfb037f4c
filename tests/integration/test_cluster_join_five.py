"""`jetraft cluster up --nodes 5` as a user runs it: five processes, a five-voter meta group,
an R5 stream that keeps accepting publishes with two of its five servers SIGKILLed, and
`cluster down` stopping exactly the recorded PIDs. Every wait polls a condition against a
deadline."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import nats

from cli.cluster import is_our_server, load_state
from tests.cluster_support import api, until

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 90
DEADLINE_S = 30.0


def jetraft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "cluster", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


async def scenario(urls: list[str], kill: Any) -> None:
    nc = await nats.connect(urls)
    try:
        async def five_voters() -> dict[str, Any]:
            meta = (await api(nc, "$JS.API.INFO"))["meta_cluster"]
            return meta if meta["cluster_size"] == 5 and len(meta["peers"]) == 5 else {}
        await until(five_voters, "a five-voter meta group", DEADLINE_S)
        body = json.dumps({"name": "FIVE", "subjects": ["five.>"], "num_replicas": 5}).encode()
        created = await until(lambda: api(nc, "$JS.API.STREAM.CREATE.FIVE", body, 10.0), "R5 created", DEADLINE_S)
        assert "error" not in created, created
        assert len(created["cluster"]["replicas"]) == 4
        js = nc.jetstream()
        for i in range(10):
            assert (await js.publish("five.a", b"%d" % i)).seq == i + 1
        leader = created["cluster"]["leader"]
        victims = [r["name"] for r in created["cluster"]["replicas"]][:2]  # two followers: 3 of 5 remain
        kill(victims)
        for i in range(10, 20):
            ack = await until(lambda: js.publish("five.a", b"%d" % i, timeout=2.0), f"publish {i}", DEADLINE_S)
            assert ack.seq == i + 1
        async def victims_shown_down() -> dict[str, Any]:
            info = await api(nc, "$JS.API.STREAM.INFO.FIVE")
            down = {r["name"] for r in info["cluster"]["replicas"] if r.get("offline") or not r["current"]}
            return info if down == set(victims) else {}
        info = await until(victims_shown_down, "stream info shows the two killed replicas down", DEADLINE_S)
        assert info["state"]["messages"] == 20 and info["cluster"]["leader"] == leader
    finally:
        await nc.close()


def test_up_five_nodes_r5_survives_two_kills(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "five"
    started = jetraft("up", "--nodes", "5", "--dir", str(directory))
    specs: list[Any] = []
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        _, specs = load_state(directory)
        assert len(specs) == 5 and all(is_our_server(s.pid) for s in specs)
        by_name = {s.name: s for s in specs}

        def kill(names: list[str]) -> None:
            for name in names:
                os.kill(by_name[name].pid, signal.SIGKILL)
        asyncio.run(asyncio.wait_for(scenario([s.url for s in specs], kill), 120))
    finally:
        stopped = jetraft("down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(os.path.exists(f"/proc/{s.pid}/cmdline") and is_our_server(s.pid) for s in specs)
