# pure-core
"""Who the Raft peers are: node ids and Raft addresses, from `raft_peers` or from the routes.

How it works: the Raft transport (raft/transport/tcp.py) listens on its own port. There are two
ways to say who the voters are, and every server of a cluster must use the same one:

- Named (`--raft_peers n1=H:P,n2=H:P,...`, config `cluster { raft_peers = { n1 = "H:P" } }`):
  a server's Raft node id is its server name (`-n`), so it survives an address change, and each
  peer's Raft address is given separately from its identity (a proxy may sit in front of it:
  jepsen/db.py points every peer at a fault-injecting proxy this way). The server's own entry,
  if present, is the address it listens on; without it, it listens on the cluster port + 1.
- Derived (the default, no `raft_peers`): the Raft port is the cluster (route) port + 1
  (`raft_port_offset`) and a node id is the Raft address `host:port`, so every server derives the
  same voter set from the same `--routes` list without any discovery round: each route URL
  `nats-route://H:P` names the peer `H:(P+1)`. A route URL that points at ourselves is dropped.
  The local host is the advertise host, else the cluster listen host, with the wildcard `0.0.0.0`
  (and an empty host) read as 127.0.0.1. Moving a server to another address makes it a different
  voter; `jetraft cluster up` writes the full list for every node. A server given fewer routes
  (one seed) joins through the meta leader (below).

Joining (meta/service.py): a server's configured voters are only its *bootstrap* membership, used
until the first membership-change entry reaches its meta log (the log, which every restart
replays, takes precedence from then on). A server given seeds bootstraps with itself and the
seeds as voters; a server given no route at all (`seedless`) bootstraps as a learner of its own
group, so it never elects itself alone: it waits for a meta leader to reach it (as a voter of that
leader's bootstrap set, or by admitting it: learner, then voter). A route that names only this
server itself makes an explicit one-server cluster (voters = {self}). In derived mode a node id
is its Raft address, so any server can reach a newly admitted peer (`address_of`); named mode
(`raft_peers`) stays a static list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from raft.types import Membership

RAFT_PORT_OFFSET = 1
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@attrs.frozen
class Topology:
    node_id: str
    raft_host: str
    raft_port: int
    peers: dict[str, tuple[str, int]] = attrs.field(eq=False)  # other node id -> raft address
    seedless: bool = False  # no route and no raft peer configured at all
    named: bool = False  # node ids are server names (raft_peers), not Raft addresses

    @property
    def voters(self) -> frozenset[str]:
        return frozenset({self.node_id, *self.peers})

    def bootstrap_membership(self) -> Membership:
        """The meta group's membership before any change entry: the configured voters, or,
        for a seedless server, itself as a learner (it never elects itself alone)."""
        if self.seedless:
            return Membership(learners=frozenset({self.node_id}))
        return Membership(voters=self.voters)

    def address_of(self, node_id: str) -> tuple[str, int] | None:
        """A peer's Raft address: configured, or (derived mode) read from its node id."""
        if node_id in self.peers:
            return self.peers[node_id]
        if self.named or node_id == self.node_id:
            return None
        host, _, port = node_id.rpartition(":")
        return (host, int(port)) if host and port.isdigit() else None


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


def parse_raft_peers(value: str | Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`"n1=H:P,n2=H:P"`, a mapping or pairs -> sorted (name, "H:P") pairs. Raises ValueError."""
    if isinstance(value, str):
        pairs = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, address = item.partition("=")
            if not sep:
                raise ValueError(f"raft peer {item!r} is not name=host:port")
            pairs.append((name.strip(), address.strip()))
    else:
        pairs = list(value.items() if isinstance(value, Mapping) else value)
    names = [str(name) for name, _ in pairs]
    if len(set(names)) != len(names) or any(not name for name in names):
        raise ValueError(f"raft peer names must be non-empty and unique: {names}")
    for _, address in pairs:
        host_port_of(str(address))  # validates
    return tuple(sorted((str(name), str(address)) for name, address in pairs))


def derive(
    cluster_host: str | None,
    cluster_port: int,
    routes: tuple[str, ...],
    *,
    advertise: str = "",
    raft_port: int | None = None,
    offset: int = RAFT_PORT_OFFSET,
    server_name: str = "",
    raft_peers: tuple[tuple[str, str], ...] = (),
) -> Topology:
    if advertise:
        host, own_cluster_port = host_port_of(advertise)
    else:
        host, own_cluster_port = _local(cluster_host or ""), cluster_port
    own_raft_port = raft_port if raft_port is not None else own_cluster_port + offset
    if raft_peers:
        return _named(server_name, (host, own_raft_port), raft_peers)
    seedless = not routes
    me = node_id_of(host, own_raft_port)
    peers: dict[str, tuple[str, int]] = {}
    for url in routes:
        peer_host, peer_port = host_port_of(url)
        peer_id = node_id_of(peer_host, peer_port + offset)
        if peer_id != me and (peer_host, peer_port) != (host, own_cluster_port):
            peers[peer_id] = (peer_host, peer_port + offset)
    return Topology(me, host, own_raft_port, peers, seedless=seedless)


def _named(server_name: str, default_own: tuple[str, int], raft_peers: tuple[tuple[str, str], ...]) -> Topology:
    """Node ids are server names; addresses come from the `raft_peers` pairs."""
    if not server_name:
        raise ValueError("raft_peers needs a server name (-n/--server_name): it is the Raft node id")
    addresses = {name: host_port_of(address) for name, address in raft_peers}
    own_host, own_port = addresses.pop(server_name, default_own)
    return Topology(server_name, own_host, own_port, addresses, named=True)
