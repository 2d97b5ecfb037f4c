"""Raft node ids and addresses derived from the route configuration."""

from __future__ import annotations

import pytest

from meta.topology import derive, host_port_of


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
