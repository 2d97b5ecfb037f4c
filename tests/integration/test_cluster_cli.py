"""`jetraft cluster up | status | down` as a user runs them (subprocesses), plus its pure parts;
a second `up` on the same directory restarts the cluster with its data."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys

import nats

from cli.cluster import is_our_server, load_state, node_argv, plan_nodes

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60


def jetraft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "cluster", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def test_plan_gives_distinct_ports_and_every_node_all_routes(tmp_path: pathlib.Path) -> None:
    specs = plan_nodes(3, tmp_path, "127.0.0.1", 20000)
    assert [s.client_port for s in specs] == [20000, 20001, 20002]
    assert [s.cluster_port for s in specs] == [20100, 20102, 20104]  # raft ports are +1
    argv = node_argv(specs[1], specs, "c")
    routes = argv[argv.index("--routes") + 1].split(",")
    assert routes == [s.route_url for s in specs]
    assert argv[argv.index("-sd") + 1] == specs[1].store_dir and "-js" in argv
    free = plan_nodes(3, tmp_path, "127.0.0.1", None)
    ports = [p for s in free for p in (s.client_port, s.cluster_port, s.cluster_port + 1)]
    assert len(set(ports)) == len(ports)


def test_up_status_use_down(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "cl"
    started = jetraft("up", "--nodes", "3", "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "meta leader" in started.stdout
        _, specs = load_state(directory)
        assert len(specs) == 3 and all(is_our_server(s.pid) for s in specs)
        status = jetraft("status", "--dir", str(directory))
        assert status.returncode == 0 and status.stdout.count("answering") == 3, status.stdout
        asyncio.run(asyncio.wait_for(_use(",".join(s.url for s in specs)), 30))
    finally:
        stopped = jetraft("down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(is_our_server(s.pid) for s in specs)
    assert not any(os.path.exists(f"/proc/{s.pid}/cmdline") and is_our_server(s.pid) for s in specs)
    restarted = jetraft("up", "--dir", str(directory))  # same ports and names, same data
    try:
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        _, again = load_state(directory)
        assert [(s.client_port, s.cluster_port) for s in again] == [(s.client_port, s.cluster_port) for s in specs]
        asyncio.run(asyncio.wait_for(_still_there(",".join(s.url for s in again)), 30))
    finally:
        assert jetraft("down", "--dir", str(directory)).returncode == 0


async def _use(urls: str) -> None:
    nc = await nats.connect(urls.split(","))
    js = nc.jetstream()
    info = await js.add_stream(name="CLI", subjects=["cli.>"], num_replicas=3)
    assert info.cluster is not None and info.cluster.leader
    ack = await js.publish("cli.x", b"hi", timeout=5)
    assert ack.seq == 1
    reply = json.loads((await nc.request("$JS.API.INFO", b"", timeout=2)).data)
    assert reply["streams"] == 1 and reply["meta_cluster"]["cluster_size"] == 3
    await nc.close()


async def _still_there(urls: str) -> None:
    nc = await nats.connect(urls.split(","))
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # the stream answers once its group has elected a leader again
        try:
            msg = await js.get_msg("CLI", 1)
            break
        except Exception:  # noqa: BLE001 - not elected yet
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)  # polling interval of a condition wait
    assert msg.data == b"hi"
    assert (await js.publish("cli.x", b"again", timeout=5)).seq == 2
    await nc.close()
