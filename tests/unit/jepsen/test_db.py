"""Node launch commands and configs (no process is started here)."""

from __future__ import annotations

import pathlib

from jepsen.db import NodeSpec, jetraft_argv, make_specs, nats_server_config

ROUTES = ["nats-route://127.0.0.1:7001", "nats-route://127.0.0.1:7002"]


def _spec(tmp_path: pathlib.Path) -> NodeSpec:
    return NodeSpec(0, "n1", 4222, 6222, tmp_path / "n1")


def test_jetraft_is_launched_with_nats_server_flag_names(tmp_path: pathlib.Path) -> None:
    argv = jetraft_argv(_spec(tmp_path), ROUTES)
    assert argv[argv.index("server") + 1 :] == [
        "-p", "4222", "-a", "127.0.0.1", "-n", "n1", "-js", "-sd", str(tmp_path / "n1" / "store"),
        "--cluster", "nats://127.0.0.1:6222", "--cluster_name", "jepsen", "--routes", ",".join(ROUTES),
        "--no_implicit_routes", "--no_advertise",
    ]  # fmt: skip


def test_jetraft_raft_peers_name_the_proxies_and_its_own_raft_port(tmp_path: pathlib.Path) -> None:
    spec = NodeSpec(0, "n1", 4222, 6222, tmp_path / "n1", raft_port=6300)
    argv = jetraft_argv(spec, ROUTES, {"n2": 7101, "n3": 7102})
    assert argv[argv.index("--raft_peers") + 1] == "n1=127.0.0.1:6300,n2=127.0.0.1:7101,n3=127.0.0.1:7102"


def test_nats_server_config_routes_through_proxies_and_hides_real_addresses(tmp_path: pathlib.Path) -> None:
    text = nats_server_config(_spec(tmp_path), ROUTES, blackhole_port=9)
    assert 'server_name: "n1"' in text
    assert f'store_dir: "{tmp_path / "n1" / "store"}"' in text
    assert 'listen: "127.0.0.1:6222"' in text
    assert 'advertise: "127.0.0.1:9"' in text  # gossip cannot lead around the proxies
    assert all(f'"{url}"' in text for url in ROUTES)


def test_specs_get_distinct_ports_and_their_own_dirs(tmp_path: pathlib.Path) -> None:
    specs = make_specs(tmp_path, 3)
    ports = [p for s in specs for p in (s.client_port, s.cluster_port, s.raft_port)]
    assert len(set(ports)) == 9
    assert [s.name for s in specs] == ["n1", "n2", "n3"]
    assert all(s.node_dir.is_dir() and s.node_dir.parent == tmp_path for s in specs)
