"""Raft node ids and addresses derived from the route configuration."""

from __future__ import annotations

import pytest

from meta.topology import derive, host_port_of, parse_raft_peers


def test_every_node_derives_the_same_voters_from_the_same_routes() -> None:
    routes = ("nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6232/", "nats-route://u:p@127.0.0.1:6242")
    tops = [derive("127.0.0.1", port, routes) for port in (6222, 6232, 6242)]
    assert {t.node_id for t in tops} == {"127.0.0.1:6223", "127.0.0.1:6233", "127.0.0.1:6243"}
    assert len({t.voters for t in tops}) == 1
    assert tops[0].peers == {"127.0.0.1:6233": ("127.0.0.1", 6233), "127.0.0.1:6243": ("127.0.0.1", 6243)}


def test_wildcard_listen_host_and_advertise() -> None:
    top = derive("0.0.0.0", 7000, ("nats-route://127.0.0.1:7000",))
    assert top.node_id == "127.0.0.1:7001" and top.peers == {}
    top = derive(None, 7000, (), advertise="10.0.0.5:7100")
    assert top.node_id == "10.0.0.5:7101" and top.raft_host == "10.0.0.5"
    assert derive("127.0.0.1", 7000, (), raft_port=9000).node_id == "127.0.0.1:9000"


def test_bad_route_url() -> None:
    with pytest.raises(ValueError):
        host_port_of("nats-route://nohost")


def test_named_peers_make_server_names_the_node_ids() -> None:
    peers = parse_raft_peers("n1=127.0.0.1:7001, n2=127.0.0.1:9102,n3=localhost:9103")
    tops = [derive("127.0.0.1", 7000 + i, (), server_name=f"n{i}", raft_peers=peers) for i in (1, 2, 3)]
    assert [t.node_id for t in tops] == ["n1", "n2", "n3"]
    assert len({t.voters for t in tops}) == 1 and tops[0].voters == {"n1", "n2", "n3"}
    assert tops[0].peers == {"n2": ("127.0.0.1", 9102), "n3": ("localhost", 9103)}
    assert (tops[0].raft_host, tops[0].raft_port) == ("127.0.0.1", 7001)  # its own entry
    assert (tops[1].raft_host, tops[1].raft_port) == ("127.0.0.1", 9102)


def test_named_peers_ignore_routes_and_default_own_address() -> None:
    """Peer addresses may be proxies: identity does not change with them, and routes add nothing."""
    peers = parse_raft_peers({"a": "127.0.0.1:5000", "b": "127.0.0.1:5001"})
    top = derive("0.0.0.0", 7000, ("nats-route://127.0.0.1:8000",), server_name="c", raft_peers=peers)
    assert top.node_id == "c" and top.peers == {"a": ("127.0.0.1", 5000), "b": ("127.0.0.1", 5001)}
    assert (top.raft_host, top.raft_port) == ("127.0.0.1", 7001)
    moved = derive("0.0.0.0", 7000, (), server_name="c", raft_peers=parse_raft_peers("a=10.0.0.9:1,b=127.0.0.1:5001"))
    assert moved.voters == top.voters


@pytest.mark.parametrize("text", ["n1", "n1=nohost", "=127.0.0.1:1", "n1=127.0.0.1:1,n1=127.0.0.1:2"])
def test_bad_raft_peers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_raft_peers(text)


def test_raft_peers_need_a_server_name() -> None:
    with pytest.raises(ValueError, match="server name"):
        derive("127.0.0.1", 7000, (), raft_peers=parse_raft_peers("a=127.0.0.1:1"))


def test_config_key_and_flag_reach_the_topology(tmp_path) -> None:
    """`cluster { raft_peers = {...} }` in a config file and `--raft_peers` on the command line."""
    from cli.server import _options
    from meta.service import topology_of

    conf = tmp_path / "n2.conf"
    conf.write_text('server_name = "n2"\n[cluster]\nlisten = "127.0.0.1:7200"\n'
                    '[cluster.raft_peers]\nn1 = "127.0.0.1:9101"\nn3 = "127.0.0.1:9103"\n')
    flags = {k: None for k in ("port", "host", "server_name", "logfile", "debug", "trace", "log_json", "jetstream",
                               "store_dir", "max_payload", "max_pending", "max_control_line", "max_connections",
                               "ping_interval", "max_pings_out", "write_deadline", "debug_trace", "config_file")}
    options, unknown = _options({**flags, "config_file": str(conf)})
    assert unknown == []
    top = topology_of(options)
    assert (top.node_id, top.raft_port, top.voters) == ("n2", 7201, {"n1", "n2", "n3"})
    options, _ = _options({**flags, "server_name": "n9", "cluster_listen": "nats://127.0.0.1:7300",
                           "raft_peers": "n9=127.0.0.1:9109,n1=127.0.0.1:9101"})
    top = topology_of(options)
    assert (top.node_id, top.raft_port, top.peers) == ("n9", 9109, {"n1": ("127.0.0.1", 9101)})
