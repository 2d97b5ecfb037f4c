# pure-core
"""Who the Raft peers are: node ids and Raft addresses derived from the route configuration.

How it works: the Raft transport (raft/transport/tcp.py) listens on its own port, by default the
cluster (route) port + 1 (`raft_port_offset`). A server's Raft node id is its Raft address,
`host:port`, so every server derives the same voter set from the same `--routes` list without
any discovery round: each route URL `nats-route://H:P` names the peer `H:(P+1)`. A route URL
that points at ourselves is dropped. The local host is the advertise host, else the cluster
listen host, with the wildcard `0.0.0.0` (and an empty host) read as 127.0.0.1.

The cost of this choice: every server must be given the routes of all the others (gossip does
not add Raft voters), and moving a server to another address makes it a different voter.
`jetraft cluster up` writes the full list for every node.
"""

from __future__ import annotations

import attrs

RAFT_PORT_OFFSET = 1
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@attrs.frozen
class Topology:
    node_id: str
    raft_host: str
    raft_port: int
    peers: dict[str, tuple[str, int]] = attrs.field(eq=False)  # other node id -> raft address

    @property
    def voters(self) -> frozenset[str]:
        return frozenset({self.node_id, *self.peers})


def host_port_of(url: str) -> tuple[str, int]:
    """`nats-route://user:pw@H:P/` or `H:P` -> (H, P). Raises ValueError."""
    text = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"not a route URL: {url!r}")
    return _local(host), int(port)


def _local(host: str) -> str:
    return "127.0.0.1" if host in _WILDCARDS else host


def node_id_of(host: str, raft_port: int) -> str:
    return f"{host}:{raft_port}"


def derive(
    cluster_host: str | None,
    cluster_port: int,
    routes: tuple[str, ...],
    *,
    advertise: str = "",
    raft_port: int | None = None,
    offset: int = RAFT_PORT_OFFSET,
) -> Topology:
    if advertise:
        host, adv_port = host_port_of(advertise)
        own_cluster_port = adv_port
    else:
        host, own_cluster_port = _local(cluster_host or ""), cluster_port
    own_raft_port = raft_port if raft_port is not None else own_cluster_port + offset
    me = node_id_of(host, own_raft_port)
    peers: dict[str, tuple[str, int]] = {}
    for url in routes:
        peer_host, peer_port = host_port_of(url)
        peer_id = node_id_of(peer_host, peer_port + offset)
        if peer_id != me and (peer_host, peer_port) != (host, own_cluster_port):
            peers[peer_id] = (peer_host, peer_port + offset)
    return Topology(me, host, own_raft_port, peers)
